/* Private to cache/: the `local` embedder's word stream, for the verifier.
 *
 * sg__embed_local_words() runs the embedder's own normalisation (case
 * folding, contractions, the variant table, stemming, band lookup) and hands
 * each resulting word to a callback instead of hashing it into a vector, so
 * the verifier (cache/verify.c) compares two prompts word by word exactly as
 * the embedder saw them, without a second copy of the tokenizer.
 */
#ifndef SEMGATE_EMBED_INT_H
#define SEMGATE_EMBED_INT_H

#include <stddef.h>

#include "semgate/embed_local.h"

/* How informative a word is, from the embedder's hand-written bands. The
 * values are the embedder's enum band (checked there), plus NUMBER. */
enum sg__word_kind {
	SG__WORD_RARE = 0,  /* in no list: rare in general English */
	SG__WORD_STOP,      /* function words */
	SG__WORD_PRONOUN,   /* personal pronouns */
	SG__WORD_MODAL,     /* modal verbs */
	SG__WORD_NEGATION,  /* not, no, never, nor, without */
	SG__WORD_QUESTION,  /* what, how, why... */
	SG__WORD_COMMON,    /* template words and vague nouns */
	SG__WORD_FAMILIAR,  /* everyday content words */
	SG__WORD_NUMBER,    /* a token with a digit */
	SG__WORD__LAST
};

typedef struct sg__embed_word {
	const char *w;  /* normalised (lowercase, stemmed) bytes; borrowed for the call */
	size_t n;       /* their length (<= 48) */
	int kind;       /* enum sg__word_kind */
	float weight;   /* the embedder's weight for it (rare word = 1) */
	int index;      /* 0 for the first word of the text, then 1, 2... */
} sg__embed_word_t;

typedef void (*sg__embed_word_cb)(void *ud, const sg__embed_word_t *word);

/* Call cb for every word of text[0..len), in order. Thread-safe like
 * sg_embed_local_embed(); len is not checked against max_bytes (the caller
 * caps it). A NULL text with len 0 is fine. */
void sg__embed_local_words(const sg_embed_local_t *e, const char *text, size_t len,
                           sg__embed_word_cb cb, void *ud);

/* --- the kinds behind include/semgate/embed.h (cache/embedder.c dispatches) --- */

struct uv_loop_s;
struct sg_embedder_config;
struct sg_embedder;

/* The `model` kind (cache/embed_model.c): the model in dir, threads and
 * batching from cfg. */
int sg__embed_model_new(struct sg_embedder **out, struct uv_loop_s *loop,
                        const struct sg_embedder_config *cfg, const char *dir, char *err,
                        size_t errlen);

/* The `static` kind (cache/embed_static.c): the table in path. */
int sg__embed_static_new(struct sg_embedder **out, const char *path, char *err, size_t errlen);

#endif
