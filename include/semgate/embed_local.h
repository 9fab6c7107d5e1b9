/* semgate: the built-in `local` embedder.
 *
 * Turns a prompt into an L2-normalised vector of `dim` floats so that
 * paraphrases land close together under cosine similarity, with no network,
 * no model files and no corpus statistics at run time: a few microseconds a
 * prompt, deterministic across runs and machines.
 *
 * How (details in cache/embed_local.c):
 *   1. normalise: ASCII case folding, punctuation as separators (operator
 *      symbols such as "++", "#", "==", "$" kept as words), contractions
 *      expanded ("don't" -> "do not"), a small table of generic English
 *      variants ("bought" -> "buy", "quickly" -> "fast"), light stemming;
 *   2. weight each word by how informative it is in general English: a
 *      hand-written table of common words in bands (function words,
 *      pronouns, modals, question words, template words, everyday words)
 *      weighs them below words outside the table, which are rare in general
 *      English; sublinear term frequency (1 + ln tf);
 *   3. hash word unigrams, bigrams of neighbouring content words, character
 *      n-grams of content words and one "kind of question" feature (why /
 *      how / what / yes-no...) into `dim` signed buckets;
 *   4. L2-normalise.
 *
 * An embedder is read-only after creation: any number of threads may call
 * sg_embed_local_embed() on it concurrently.
 */
#ifndef SEMGATE_EMBED_LOCAL_H
#define SEMGATE_EMBED_LOCAL_H

#include <stddef.h>

#include "semgate/common.h"

typedef struct sg_embed_local sg_embed_local_t;

/**
 * Knobs. Zero-initialise and set what you need: every 0 field means "the
 * default", which is what the quality measurements in bench/QUALITY.md used;
 * a negative weight switches that feature family off. Any change to a knob
 * changes sg_embed_local_id().
 */
typedef struct sg_embed_local_opts {
	int dim;               /* output dimension, [16, 4096]; default 384 */
	float word_weight;     /* scale of word unigram features; default 1 */
	float bigram_weight;   /* scale of content-word bigrams; default 0.2 */
	float char_weight;     /* scale of a word's char n-grams (all of them
				  together); default 0.5 */
	int char_min;          /* shortest char n-gram; default 3 */
	int char_max;          /* longest char n-gram; default 5 (max 8) */
	float stop_weight;     /* weight of function words; default 0.2 */
	float qword_weight;    /* weight of question words (what, how...);
				  default 0.3 */
	float pronoun_weight;  /* weight of pronouns (I, your...); default 0.4 */
	float modal_weight;    /* weight of modals (can, should...); default 0.2 */
	float number_weight;   /* weight of tokens with digits; default 1.2 */
	float qtype_weight;    /* weight of the question-kind feature (first
				  word: why/how/what/who/when/where/yes-no);
				  default 0.3 */
	int no_stem;           /* 1: no stemming or variant table */
	size_t max_bytes;      /* longest text accepted; default 65536 */
} sg_embed_local_opts_t;

/** Default output dimension. */
#define SG_EMBED_LOCAL_DEFAULT_DIM 384

/**
 * Create an embedder. opts may be NULL for all defaults; it is copied.
 * On success *out is owned by the caller: free with sg_embed_local_free().
 * Errors: SG_EINVAL (a knob out of range), SG_ENOMEM.
 */
int sg_embed_local_new(sg_embed_local_t **out, const sg_embed_local_opts_t *opts);

/** Free an embedder. NULL is a no-op. */
void sg_embed_local_free(sg_embed_local_t *e);

/** The output dimension (the number of floats sg_embed_local_embed writes). */
int sg_embed_local_dim(const sg_embed_local_t *e);

/**
 * Embed len bytes of text (any bytes: invalid UTF-8 and NULs are fine; the
 * text need not be NUL-terminated) into out, which the caller provides with
 * room for sg_embed_local_dim() floats. The result always has unit L2 norm
 * and no NaN: a text with no words (empty, only punctuation) still gets a
 * deterministic vector of its own. Thread-safe.
 * Errors: SG_ETOOBIG (len > max_bytes; out untouched: such prompts should not
 * be matched semantically), SG_EINVAL (NULL text with len > 0).
 */
int sg_embed_local_embed(const sg_embed_local_t *e, const char *text, size_t len,
			 float *out);

/**
 * A stable identity for the vectors this embedder produces, e.g.
 * "local/2:d384:w1:b0.2:c0.5:n3-5:s0.2:q0.3:qt0.3:p0.4:m0.2:num1.2:stem".
 * It changes whenever
 * the algorithm version, the dimension or any knob changes, so a cache can
 * refuse vectors made by another embedder. Borrowed: valid until
 * sg_embed_local_free().
 */
const char *sg_embed_local_id(const sg_embed_local_t *e);

#endif
