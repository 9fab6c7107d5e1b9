/* semgate: the WordPiece tokenizer of BERT-family models.
 *
 * Matches Hugging Face `tokenizers` (BertNormalizer + BertPreTokenizer +
 * WordPiece, the "fast" tokenizer of tokenizer.json) token for token:
 *   1. normalise: clean_text (drop NUL, U+FFFD and control characters, any
 *      whitespace becomes a space), handle_chinese_chars (CJK ideographs
 *      become words of their own), strip_accents (NFD, then drop combining
 *      marks; defaults to `lowercase`), lowercase;
 *   2. pre-tokenise: split on whitespace, every punctuation character is a
 *      word of its own (ASCII symbols and Unicode category P*);
 *   3. WordPiece: greedy longest match from the vocabulary, continuation
 *      pieces prefixed "##"; a word longer than max_input_chars_per_word
 *      characters, or with a piece the vocabulary lacks, is one [UNK];
 *   4. post-process: [CLS] tokens [SEP], truncated to a maximum length that
 *      includes the two special tokens.
 * Unicode tables come from utf8proc. Input is bytes: invalid UTF-8 sequences
 * are read as U+FFFD (and so dropped by clean_text).
 *
 * A tokenizer is read-only after loading: any number of threads may encode
 * with it at once.
 */
#ifndef SEMGATE_WORDPIECE_H
#define SEMGATE_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "semgate/common.h"

typedef struct sg_wordpiece sg_wordpiece_t;

/** Normaliser and model settings. A zeroed struct is not valid: start from
 * sg_wordpiece_opts_default(). */
typedef struct sg_wordpiece_opts {
	int lowercase;        /* 1: lower-case (uncased models) */
	int strip_accents;    /* 1, 0, or -1: follow lowercase */
	int clean_text;       /* 1: drop control characters, unify whitespace */
	int handle_chinese;   /* 1: CJK ideographs become words of their own */
	int max_chars_per_word; /* longer words become [UNK]; 100 in BERT */
	char unk[32], cls[32], sep[32], pad[32]; /* special tokens' texts */
	char prefix[16];      /* continuation prefix, "##" */
} sg_wordpiece_opts_t;

/** BERT's defaults: uncased, strip accents with lowercase, clean text, CJK,
 * 100 chars per word, [UNK] [CLS] [SEP] [PAD], "##". */
sg_wordpiece_opts_t sg_wordpiece_opts_default(void);

/**
 * Load from a vocab.txt (one token per line, id = line number) with the given
 * settings (NULL: defaults). On error returns SG_E* and writes a message that
 * names the file and the problem into err (errlen bytes).
 * Errors: SG_EIO (cannot read), SG_ECORRUPT (empty vocabulary, a missing
 * special token, too large), SG_ENOMEM.
 */
int sg_wordpiece_load_vocab(sg_wordpiece_t **out, const char *path, const sg_wordpiece_opts_t *opts,
                            char *err, size_t errlen);

/**
 * Load from a Hugging Face tokenizer.json: its model must be "WordPiece", its
 * normalizer "BertNormalizer" (or null / a Sequence of it), its
 * pre_tokenizer "BertPreTokenizer" (or equivalent), its post-processor
 * "TemplateProcessing" or "BertProcessing" with [CLS] ... [SEP]. The settings
 * come from the file; anything else is refused with SG_EINVAL and a message.
 * Errors as sg_wordpiece_load_vocab, plus SG_EINVAL (unsupported tokenizer).
 */
int sg_wordpiece_load_json(sg_wordpiece_t **out, const char *path, char *err, size_t errlen);

/** Free. NULL is a no-op. */
void sg_wordpiece_free(sg_wordpiece_t *t);

/** Number of tokens in the vocabulary (ids are 0 .. size-1). */
int sg_wordpiece_vocab_size(const sg_wordpiece_t *t);

/** Id of a token's text, or -1. */
int32_t sg_wordpiece_id(const sg_wordpiece_t *t, const char *token);

/** Text of an id (borrowed), or NULL. */
const char *sg_wordpiece_token(const sg_wordpiece_t *t, int32_t id);

/** The settings in use. */
const sg_wordpiece_opts_t *sg_wordpiece_opts(const sg_wordpiece_t *t);

/**
 * Encode len bytes of text into at most max_len ids (max_len >= 2):
 * [CLS], the text's tokens (truncated from the end to fit), [SEP]. Returns
 * the number of ids written (>= 2), or SG_EINVAL (max_len < 2, NULL args).
 * Work is bounded by the text's length; it stops early once max_len is
 * reached. Thread-safe.
 */
int sg_wordpiece_encode(const sg_wordpiece_t *t, const char *text, size_t len, int32_t *ids,
                        int max_len);

/**
 * As sg_wordpiece_encode without the special tokens and without a cap other
 * than max_ids (for tests and for distillation). Returns the count.
 */
int sg_wordpiece_tokens(const sg_wordpiece_t *t, const char *text, size_t len, int32_t *ids,
                        int max_ids);

#endif
