/* Unit tests for the `local` embedder (cache/embed_local.c). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "semgate/embed_local.h"

#define MAX_DIM 4096

/* Finite, unit norm. */
static int is_unit(const float *v, int dim)
{
	double n = 0;
	for (int i = 0; i < dim; i++) {
		if (!isfinite(v[i]))
			return 0;
		n += (double)v[i] * v[i];
	}
	return fabs(n - 1) < 1e-4;
}

static double cosine(const float *a, const float *b, int dim)
{
	double d = 0;
	for (int i = 0; i < dim; i++)
		d += (double)a[i] * b[i];
	return d;
}

/* Cosine between the embeddings of two NUL-terminated texts. */
static double sim(const sg_embed_local_t *e, const char *x, const char *y)
{
	static float a[MAX_DIM], b[MAX_DIM];
	int dim = sg_embed_local_dim(e);
	CHECK_RC(sg_embed_local_embed(e, x, strlen(x), a), 0);
	CHECK_RC(sg_embed_local_embed(e, y, strlen(y), b), 0);
	return cosine(a, b, dim);
}

static void test_options(void)
{
	sg_embed_local_t *a, *b, *c;
	char id_a[256];

	CHECK_RC(sg_embed_local_new(&a, NULL), 0);
	CHECK(sg_embed_local_dim(a) == SG_EMBED_LOCAL_DEFAULT_DIM);
	snprintf(id_a, sizeof(id_a), "%s", sg_embed_local_id(a));
	CHECK(strncmp(id_a, "local/", 6) == 0);

	/* the same options give the same id; any change gives another */
	CHECK_RC(sg_embed_local_new(&b, &(sg_embed_local_opts_t){0}), 0);
	CHECK(strcmp(sg_embed_local_id(b), id_a) == 0);
	sg_embed_local_free(b);
	CHECK_RC(sg_embed_local_new(&b, &(sg_embed_local_opts_t){.dim = 256}), 0);
	CHECK(sg_embed_local_dim(b) == 256);
	CHECK(strcmp(sg_embed_local_id(b), id_a) != 0);
	CHECK_RC(sg_embed_local_new(&c, &(sg_embed_local_opts_t){.bigram_weight = 0.9f}), 0);
	CHECK(strcmp(sg_embed_local_id(c), id_a) != 0);
	CHECK(strcmp(sg_embed_local_id(c), sg_embed_local_id(b)) != 0);
	sg_embed_local_free(c);
	CHECK_RC(sg_embed_local_new(&c, &(sg_embed_local_opts_t){.no_stem = 1}), 0);
	CHECK(strcmp(sg_embed_local_id(c), id_a) != 0);
	sg_embed_local_free(c);

	/* out of range */
	CHECK_RC(sg_embed_local_new(&c, &(sg_embed_local_opts_t){.dim = 8}), SG_EINVAL);
	CHECK_RC(sg_embed_local_new(&c, &(sg_embed_local_opts_t){.dim = 5000}), SG_EINVAL);
	CHECK_RC(sg_embed_local_new(&c, &(sg_embed_local_opts_t){.char_min = 4,
								    .char_max = 3}), SG_EINVAL);
	CHECK_RC(sg_embed_local_new(&c, &(sg_embed_local_opts_t){.char_weight = NAN}),
		 SG_EINVAL);

	sg_embed_local_free(a);
	sg_embed_local_free(b);
	sg_embed_local_free(NULL);
}

/* Any bytes give a finite unit vector, deterministically. */
static void test_robust(void)
{
	static const char *const texts[] = {
		"", " ", "???", "!!!", "the", "what is it?", "a an the of",
		"\xff\xfe\xfd", "caf\xc3\xa9 \xe2\x80\x99s", "\xe2\x80\x99",
		"it\xe2\x80\x99s", "don't", "'", "''''", "x'", "'x", "C++ vs C#",
		"$$$ %%% ===", "1234567890",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"==================================================================",
	};
	sg_embed_local_t *e;
	float v[MAX_DIM], w[MAX_DIM];
	int dim;

	CHECK_RC(sg_embed_local_new(&e, NULL), 0);
	dim = sg_embed_local_dim(e);
	for (size_t i = 0; i < SG_ARRAY_SIZE(texts); i++) {
		CHECK_RC(sg_embed_local_embed(e, texts[i], strlen(texts[i]), v), 0);
		CHECK(is_unit(v, dim));
		CHECK_RC(sg_embed_local_embed(e, texts[i], strlen(texts[i]), w), 0);
		CHECK(memcmp(v, w, (size_t)dim * sizeof(float)) == 0);
	}
	/* texts with no words still differ from each other */
	CHECK(sim(e, "???", "!!!") < 0.99);

	/* NULs are bytes like any other; NULL is fine for an empty text */
	CHECK_RC(sg_embed_local_embed(e, "a\0b\0c", 5, v), 0);
	CHECK(is_unit(v, dim));
	CHECK_RC(sg_embed_local_embed(e, NULL, 0, v), 0);
	CHECK(is_unit(v, dim));
	CHECK_RC(sg_embed_local_embed(e, NULL, 1, v), SG_EINVAL);

	/* random bytes up to the cap, then a clean refusal */
	{
		size_t cap = 65536;
		unsigned char *big = malloc(1 << 20);
		uint32_t x = 12345;
		for (size_t i = 0; i < (1 << 20); i++) {
			x = x * 1103515245u + 12345u;
			big[i] = (unsigned char)(x >> 16);
		}
		CHECK_RC(sg_embed_local_embed(e, (char *)big, cap, v), 0);
		CHECK(is_unit(v, dim));
		memset(w, 0, sizeof(w));
		CHECK_RC(sg_embed_local_embed(e, (char *)big, cap + 1, w), SG_ETOOBIG);
		CHECK(w[0] == 0); /* untouched */
		CHECK_RC(sg_embed_local_embed(e, (char *)big, 1 << 20, w), SG_ETOOBIG);
		/* a long text of words: tf table overflow is fine */
		for (size_t i = 0; i < cap; i++)
			big[i] = (unsigned char)((i % 7 == 6) ? ' ' : 'a' + (big[i] % 26));
		CHECK_RC(sg_embed_local_embed(e, (char *)big, cap, v), 0);
		CHECK(is_unit(v, dim));
		free(big);
	}
	sg_embed_local_free(e);
}

/* Meaning-free differences vanish; meaning is kept. */
static void test_semantics(void)
{
	sg_embed_local_t *e;

	CHECK_RC(sg_embed_local_new(&e, NULL), 0);

	/* normalisation: case, punctuation, contractions */
	CHECK(sim(e, "How do I lose weight?", "how do i lose weight") > 0.999);
	CHECK(sim(e, "Why don't cats swim?", "Why do not cats swim?") > 0.999);
	CHECK(sim(e, "Why don\xe2\x80\x99t cats swim?", "Why don't cats swim?") > 0.999);

	/* paraphrases beat lookalikes beat unrelated */
	double para = sim(e, "How can I lose weight quickly?",
			  "How do I lose weight fast?");
	double other = sim(e, "How can I lose weight quickly?",
			   "How can I gain weight quickly?");
	double unrelated = sim(e, "How can I lose weight quickly?",
			       "What is the capital of France?");
	printf("paraphrase %.3f, lookalike %.3f, unrelated %.3f\n", para, other,
	       unrelated);
	CHECK(para > 0.9);
	CHECK(para > other);
	CHECK(other > unrelated);
	CHECK(unrelated < 0.3);

	/* inflection */
	CHECK(sim(e, "best programming languages to learn",
		  "best programming language to learning") > 0.95);
	/* a differing number matters */
	CHECK(sim(e, "Is the iPhone 6 waterproof?", "Is the iPhone 7 waterproof?") < 0.9);
	/* so does a differing symbol */
	CHECK(sim(e, "Is C++ hard to learn?", "Is C# hard to learn?") < 0.95);
	/* and the kind of question */
	CHECK(sim(e, "Why is the sky blue?", "Is the sky blue?") <
	      sim(e, "Why is the sky blue?", "Why is sky blue?"));
	/* a capitalised acronym is not the function word it spells, unless
	 * the whole text is in capitals */
	CHECK(sim(e, "Is it safe to travel to the US?", "Is it safe to travel to the USA?") >
	      0.999);
	CHECK(sim(e, "What is IT?", "What is it?") < 0.9);
	CHECK(sim(e, "WHAT IS IT?", "What is it?") > 0.999);
	/* word order, through bigrams */
	CHECK(sim(e, "convert python code to java", "convert java code to python") < 0.999);
	sg_embed_local_free(e);
}

/* Concurrent embeds on one embedder agree with a single thread. */
#define N_THREADS 4
#define N_TEXTS 64

static const sg_embed_local_t *shared_e;
static float expected[N_TEXTS][SG_EMBED_LOCAL_DEFAULT_DIM];
static char texts[N_TEXTS][64];

static void *embed_worker(void *arg)
{
	float v[SG_EMBED_LOCAL_DEFAULT_DIM];
	long bad = 0;
	(void)arg;
	for (int round = 0; round < 200; round++)
		for (int i = 0; i < N_TEXTS; i++) {
			if (sg_embed_local_embed(shared_e, texts[i], strlen(texts[i]), v) != 0 ||
			    memcmp(v, expected[i], sizeof(v)) != 0)
				bad++;
		}
	return (void *)bad;
}

static void test_threads(void)
{
	sg_embed_local_t *e;
	pthread_t th[N_THREADS];

	CHECK_RC(sg_embed_local_new(&e, NULL), 0);
	shared_e = e;
	for (int i = 0; i < N_TEXTS; i++) {
		snprintf(texts[i], sizeof(texts[i]), "What is question number %d about %s?",
			 i, i % 2 ? "cats" : "the history of Rome");
		CHECK_RC(sg_embed_local_embed(e, texts[i], strlen(texts[i]), expected[i]), 0);
	}
	for (int t = 0; t < N_THREADS; t++)
		CHECK(pthread_create(&th[t], NULL, embed_worker, NULL) == 0);
	for (int t = 0; t < N_THREADS; t++) {
		void *bad;
		pthread_join(th[t], &bad);
		CHECK(bad == NULL);
	}
	sg_embed_local_free(e);
}

int main(void)
{
	test_options();
	test_robust();
	test_semantics();
	test_threads();
	CHECK_DONE();
}
