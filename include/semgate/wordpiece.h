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
 * Before all that, added tokens ("[SEP]", "[MASK]", ...) found in the raw text
 * are cut out and stand for their ids; the text around them is normalised
 * piece by piece. Unicode data come from utf8proc, except where the reference
 * is frozen at an older Unicode version (see cache/wordpiece.c). Input is
 * bytes: invalid UTF-8 is read as U+FFFD, one per maximal ill-formed subpart
 * as Python decodes it (and so dropped by clean_text).
 *
 * Limits: files up to 64 MiB, 1M tokens of up to 1024 bytes, 1024 added
 * tokens, max_chars_per_word up to 1024.
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
 * settings (NULL: defaults), as the reference's BertWordPieceTokenizer reads
 * it: lines end in LF or CRLF, trailing whitespace is trimmed, a token listed
 * twice has the later id; unk, sep, cls, pad and "[MASK]", when in the
 * vocabulary, are added tokens (matched in the raw text). On success *out
 * is the caller's, freed with sg_wordpiece_free(). On error returns SG_E*
 * and writes a message that names the file and the problem into err (errlen
 * bytes; err may be NULL).
 * Errors: SG_EIO (cannot read), SG_ECORRUPT (empty vocabulary, a missing
 * [UNK]/[CLS]/[SEP], a line not UTF-8 or with a NUL, too large), SG_EINVAL
 * (bad settings), SG_ENOMEM.
 */
int sg_wordpiece_load_vocab(sg_wordpiece_t **out, const char *path, const sg_wordpiece_opts_t *opts,
                            char *err, size_t errlen);

/**
 * Load from a Hugging Face tokenizer.json: its model must be "WordPiece" (ids
 * numbering its vocab from 0), its normalizer "BertNormalizer", "Lowercase"
 * or null (or a Sequence of one of them), its pre_tokenizer
 * "BertPreTokenizer" (or a Sequence of it, or of WhitespaceSplit and
 * Punctuation), its post-processor "TemplateProcessing" ([special] $A
 * [special]) or "BertProcessing"; its added_tokens must be in the vocab
 * with the same ids, not single_word, not normalized. The settings come from
 * the file; its truncation and padding are ignored (the caller's max_len
 * rules). Anything else is refused with SG_EINVAL and a message. Ownership
 * and messages as sg_wordpiece_load_vocab.
 * Errors as sg_wordpiece_load_vocab (SG_ECORRUPT also for JSON that does not
 * parse or has the wrong shape), plus SG_EINVAL (unsupported tokenizer).
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
 * the number of ids written (>= 2), or SG_EINVAL (max_len < 2, NULL args;
 * text may be NULL when len is 0), or SG_ENOMEM (a run of thousands of
 * combining marks found no memory). Work is bounded by the text's length; it
 * stops reading once max_len is reached. Thread-safe; uses about 13 KiB of
 * stack and allocates nothing in the usual case.
 */
int sg_wordpiece_encode(const sg_wordpiece_t *t, const char *text, size_t len, int32_t *ids,
                        int max_len);

/**
 * As sg_wordpiece_encode without the special tokens and without a cap other
 * than max_ids (for tests and for distillation). Returns the count (the
 * first max_ids tokens of the text), or SG_EINVAL / SG_ENOMEM as above.
 */
int sg_wordpiece_tokens(const sg_wordpiece_t *t, const char *text, size_t len, int32_t *ids,
                        int max_ids);

#endif
