/* semgate: the cache's second stage, a pairwise verifier.
 *
 * The vector search proposes the cached prompts nearest to a query; the
 * verifier then reads the two texts themselves and turns the cosine into the
 * final similarity that is compared with cache.threshold (GPTCache's
 * "similarity evaluation" step). A hashed bag of features loses evidence
 * that is plain when two texts are side by side:
 *   - a rare word on each side that the other lacks ("in Germany" / "in
 *     Finland"): a substitution, the strongest sign of a different question;
 *   - rare words on one side only ("books on business" / "books on starting
 *     a business"): the rarest unmatched word counts;
 *   - different numbers ("iPhone 6" / "iPhone 7"), a negation on one side only;
 *   - a different kind of question (why / how / what / who / when / where /
 *     yes-no);
 *   - opposites across the pair (best / worst, before / after, buy / sell);
 *   - two shared content words in the opposite order ("Russians dislike
 *     Poles" / "Poles dislike Russians");
 *   - a text that points at content it does not hold ("What is this
 *     symbol?", "What is the output of the following program?"): two such
 *     prompts may be about different pictures or programs whatever their
 *     words, so they are served only on an exact match (identical texts
 *     skip the verifier's evidence).
 * Each piece of evidence found subtracts a fixed amount from the cosine;
 * with none, the score is the cosine, so thresholds keep their meaning.
 *
 * Words are compared after the `local` embedder's normalisation (case,
 * contractions, variants, stemming) and weighed by its hand-written
 * general-English bands; nothing is learned from data.
 *
 * A verifier is read-only after creation: any number of threads may call
 * sg_verify_score() on it concurrently. Nothing is allocated per call; work
 * is linear in the (capped) input plus a quadratic word match over at most
 * SG_VERIFY_MAX_WORDS words a side.
 */
#ifndef SEMGATE_VERIFY_H
#define SEMGATE_VERIFY_H

#include <stddef.h>

#include "semgate/common.h"

typedef struct sg_verify sg_verify_t;

/** Words of each text examined; the rest of a longer text is ignored. */
#define SG_VERIFY_MAX_WORDS 96
/** Bytes of each text examined (a longer text is cut at a word boundary). */
#define SG_VERIFY_MAX_BYTES 2048

/**
 * Knobs: how much each kind of evidence moves the score. Zero-initialise:
 * every 0 field means "the default" (the values measured in
 * bench/QUALITY.md); a negative value switches that evidence off.
 */
typedef struct sg_verify_opts {
	float substitution; /* per unit of the lighter side's rarest unmatched
			       word, when both sides have one */
	float extra;        /* per unit of the rarest word only one side has */
	float number;       /* the numbers differ */
	float negation;     /* a negation on one side only */
	float qtype;        /* different kinds of question */
	float antonym;      /* opposites across the pair */
	float order;        /* two shared content words swapped */
	float context;      /* either text points at content it does not hold
			       ("this picture", "the following code") */
} sg_verify_opts_t;

/**
 * What the verifier found in one pair (sg_verify_explain()), for logs and
 * tuning. Weights are the embedder's: 1 for a rare word, less for common ones.
 */
typedef struct sg_verify_evidence {
	float cosine;        /* the input cosine */
	float score;         /* the final score (what sg_verify_score returns) */
	float miss_a;        /* weight of a's rarest word missing from b (0: none) */
	float miss_b;        /* weight of b's rarest word missing from a */
	int number;          /* 1: a number on one side only or different numbers */
	int negation;        /* 1: a negation on one side only */
	int qtype;           /* 1: different kinds of question */
	int antonym;         /* 1: opposites across the pair */
	int order;           /* 1: two shared content words in opposite orders */
	int context;         /* 1: either text points at content it does not hold */
	int covered;         /* 1: nothing but template words unmatched, and no
				other evidence */
} sg_verify_evidence_t;

/**
 * Create a verifier. opts may be NULL for the defaults; it is copied.
 * On success *out is owned by the caller: free with sg_verify_free().
 * Errors: SG_EINVAL (a non-finite knob), SG_ENOMEM.
 */
int sg_verify_new(sg_verify_t **out, const sg_verify_opts_t *opts);

/** Free a verifier. NULL is a no-op. */
void sg_verify_free(sg_verify_t *v);

/**
 * The final similarity in [0, 1] of prompts a and b (any bytes, not
 * NUL-terminated, borrowed for the call; NULL is fine with a length of 0),
 * given the cosine of their vectors. Symmetric in a and b. Equals the cosine
 * (clamped to [0, 1]) when the texts carry no evidence, is never above it,
 * and is monotone in the cosine for a fixed pair of texts. Deterministic and thread-safe; a few
 * microseconds for question-length texts.
 */
float sg_verify_score(const sg_verify_t *v, const char *a, size_t alen, const char *b,
                      size_t blen, float cosine);

/** sg_verify_score() that also reports its evidence in *ev. */
float sg_verify_explain(const sg_verify_t *v, const char *a, size_t alen, const char *b,
                        size_t blen, float cosine, sg_verify_evidence_t *ev);

#endif
