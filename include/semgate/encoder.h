/* semgate: a BERT-family sentence encoder in C on OpenBLAS.
 *
 * Loads a model directory in the layout of the Hugging Face hub and
 * sentence-transformers:
 *   config.json                 architecture (BertModel family), sizes
 *   model.safetensors           weights: F32, F16 or BF16 tensors
 *   tokenizer.json | vocab.txt  WordPiece vocabulary and normaliser
 *   tokenizer_config.json       do_lower_case, model_max_length (optional)
 *   modules.json                the sentence-transformers pipeline (optional)
 *   1_Pooling/config.json       pooling mode: mean or CLS (optional: mean)
 *   sentence_bert_config.json   max_seq_length, do_lower_case (optional)
 *   config_sentence_transformers.json  prompts: a "query" prompt is the
 *                               prefix of every text (E5's "query: ")
 * and turns texts into L2-normalised vectors: embeddings + LayerNorm, then
 * per layer self-attention over each text's own tokens (the padding mask),
 * dense + residual + LayerNorm, GELU (exact, erf) feed-forward + residual +
 * LayerNorm; pooling; normalisation. Matrix products are OpenBLAS sgemm over
 * all the batch's tokens at once.
 *
 * Anything outside the supported family, a missing or mistyped tensor, a
 * truncated or hostile file is refused at load with a message naming the file
 * and the problem. F32 weights are used in place from a read-only mapping of
 * the file (shared by every process that maps it); F16 and BF16 are widened
 * to F32 once at load.
 *
 * Threads: a loaded model is read-only; each thread embeds with its own
 * workspace (sg_encoder_ws_t).
 */
#ifndef SEMGATE_ENCODER_H
#define SEMGATE_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "semgate/common.h"
#include "semgate/wordpiece.h"

typedef struct sg_encoder sg_encoder_t;
typedef struct sg_encoder_ws sg_encoder_ws_t;

/** Load options: zero-initialise; every 0 / NULL means "from the model". */
typedef struct sg_encoder_opts {
	int max_tokens;     /* tokens per text incl. [CLS] and [SEP]; 0: the model's
	                     * max_seq_length (else 512), capped at its position table */
	const char *prefix; /* text put before every input; NULL: the model's query
	                     * prompt if it has one, "" for none */
	int skip_hash;      /* 1: do not hash the weights (identity without it; for
	                     * tools that never store vectors) */
} sg_encoder_opts_t;

/**
 * Load the model in directory dir. On failure returns SG_E* with a message in
 * err naming the file and the problem:
 *   SG_EIO       a file cannot be read
 *   SG_ECORRUPT  a file is malformed or truncated
 *   SG_EINVAL    a supported file describes an unsupported model (another
 *                architecture, activation, pooling, tokenizer, dtype...)
 *   SG_ENOMEM
 */
int sg_encoder_load(sg_encoder_t **out, const char *dir, const sg_encoder_opts_t *opts, char *err,
                  size_t errlen);

/** Free. NULL is a no-op. Every workspace must be freed first. */
void sg_encoder_free(sg_encoder_t *m);

/** Output dimension (the hidden size). */
int sg_encoder_dim(const sg_encoder_t *m);

/** Tokens per text, [CLS] and [SEP] included. */
int sg_encoder_max_tokens(const sg_encoder_t *m);

/** The tokenizer (borrowed). */
const sg_wordpiece_t *sg_encoder_tokenizer(const sg_encoder_t *m);

/**
 * Identity of the vectors: "model/1:<name>:<weights hash>:<settings>", where
 * the hash covers the weights file and the settings cover pooling, prefix,
 * max tokens and normalisation. Borrowed.
 */
const char *sg_encoder_id(const sg_encoder_t *m);

/** A one-line description for logs (name, layers, hidden size, dtype, pooling). */
const char *sg_encoder_describe(const sg_encoder_t *m);

/**
 * The ids a text is embedded as: the model's prefix and the text, tokenised,
 * with [CLS] and [SEP], cut at max_tokens (ids has room for that many).
 * Returns the count (>= 2) or SG_E*. Thread-safe.
 */
int sg_encoder_tokenize(const sg_encoder_t *m, const char *text, size_t len, int32_t *ids);

/** A workspace for one thread, sized for up to max_batch texts. NULL on ENOMEM. */
sg_encoder_ws_t *sg_encoder_ws_new(const sg_encoder_t *m, int max_batch);
void sg_encoder_ws_free(sg_encoder_ws_t *ws);

/**
 * Embed n texts (n <= the workspace's max_batch) into out (n * dim floats,
 * row i for text i), each unit-length. Texts are bytes (any; invalid UTF-8 is
 * read as U+FFFD); lens[i] is text i's length. Returns 0 or SG_EINVAL /
 * SG_ENOMEM.
 */
int sg_encoder_embed(const sg_encoder_t *m, sg_encoder_ws_t *ws, const char *const *texts,
                   const size_t *lens, int n, float *out);

/**
 * Embed n texts given as token ids (each starting with [CLS] and ending with
 * [SEP], at most max_tokens long). Same contract as sg_encoder_embed. For
 * tests and distillation.
 */
int sg_encoder_embed_ids(const sg_encoder_t *m, sg_encoder_ws_t *ws, const int32_t *const *ids,
                       const int *lens, int n, float *out);

/**
 * Make sure OpenBLAS runs the kernels of this CPU. Its DYNAMIC_ARCH build
 * picks them from the CPU model number and, on a virtual CPU it does not
 * recognise, falls back to Prescott (SSE3): three times slower on an AVX-512
 * machine. It reads OPENBLAS_CORETYPE only when it loads, so when the choice
 * is a fallback and the CPU has AVX2 or AVX-512, this sets the variable and
 * executes the program again (argv as main got it; once: the variable stops
 * the loop). Returns only when nothing needs fixing or the exec failed.
 * Call first thing in main(), before any thread starts.
 */
void sg_encoder_fix_blas(char **argv);

/** OpenBLAS's kernel family in use (e.g. "SkylakeX"). */
const char *sg_encoder_blas_core(void);

#endif
