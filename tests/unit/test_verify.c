/* Unit tests for the cache's second stage (semgate/verify.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "semgate/verify.h"

static sg_verify_t *v;

static float score(const char *a, const char *b, float cosine)
{
	float s = sg_verify_score(v, a, strlen(a), b, strlen(b), cosine);
	/* symmetric, whichever side is the cached prompt */
	CHECK(s == sg_verify_score(v, b, strlen(b), a, strlen(a), cosine));
	CHECK(s >= 0 && s <= 1);
	return s;
}

static void test_identical_keeps_cosine(void)
{
	const char *q = "How do I learn Python?";
	CHECK(score(q, q, 0.93f) == 0.93f);
	CHECK(score(q, q, 1.0f) == 1.0f);
	CHECK(score("", "", 0.5f) == 0.5f);
	/* clamped into [0, 1] */
	CHECK(score(q, q, 1.5f) == 1.0f);
	CHECK(score(q, q, -0.2f) == 0.0f);
}

static void test_paraphrases_not_penalised(void)
{
	/* the same words after normalisation: contractions, variants, case */
	CHECK(score("What's the best way to lose weight quickly?",
		    "what is the best way to lose weight fast", 0.9f) == 0.9f);
	/* inflections and template words */
	CHECK(score("How do I learn programming?", "How do I learn to program?", 0.9f) ==
	      0.9f);
	/* a typo in a long word */
	CHECK(score("How do I recieve payments on PayPal?",
		    "How do I receive payments on PayPal?", 0.95f) == 0.95f);
	/* spelled-out and written numbers */
	CHECK(score("What are three habits of productive people?",
		    "What are 3 habits of productive people?", 0.9f) == 0.9f);
	/* the asker's person is generic; someone else's is not */
	CHECK(score("How do I delete my account?", "How do you delete your account?", 0.9f) ==
	      0.9f);
	CHECK(score("How do I delete my account?", "How do I delete his account?", 0.9f) <
	      0.9f);
	/* word order under "or": the same choice */
	CHECK(score("Which is better, Java or Python?", "Which is better, Python or Java?",
		    0.99f) == 0.99f);
}

static void test_evidence_lowers(void)
{
	float c = 0.95f;

	CHECK(score("Is the iPhone 6 waterproof?", "Is the iPhone 7 waterproof?", c) < c);
	CHECK(score("How do I buy bitcoin in 2016?", "How do I buy bitcoin?", c) < c);
	CHECK(score("Why is Python slow?", "Why is Python not slow?", c) < c);
	CHECK(score("Why don't cats like water?", "Why do cats like water?", c) < c);
	CHECK(score("Why do cats purr?", "How do cats purr?", c) < c);
	CHECK(score("What is the best laptop for students?",
		    "What is the worst laptop for students?", c) < c);
	CHECK(score("Why do Russians dislike Poles?", "Why do Poles dislike Russians?", c) < c);
	/* a different rare word on each side is worse than an extra one */
	float sub = score("What is the longest river in Germany?",
			  "What is the longest river in Finland?", c);
	float extra = score("What is the longest river in Germany?",
			    "What is the longest river?", c);
	CHECK(sub < extra && extra < c);
}

static void test_context(void)
{
	sg_verify_evidence_t ev;
	const char *a = "What type of insect is this?", *b = "What type of insect is that?";
	float c = 0.98f;

	/* pointing at content the text does not hold: a picture, a program */
	CHECK(sg_verify_explain(v, a, strlen(a), b, strlen(b), c, &ev) < c);
	CHECK(ev.context == 1 && ev.covered == 0);
	CHECK(score("What does this symbol mean?", "What does this symbol stand for?", c) < c);
	CHECK(score("What is the output of the following program?",
		    "What will be the output of the following program?", c) < c);
	/* the identical text is still served */
	CHECK(score(a, a, c) == c);
	/* "this year" and "is it true that" point at nothing */
	CHECK(score("What are your goals for this year?", "What are your goals this year?", c) ==
	      c);
	CHECK(score("Is it true that cats like water?", "Is it true that cats like water",
		    c) == c);
}

static void test_explain(void)
{
	sg_verify_evidence_t ev;
	const char *a = "Why is the iPhone 6 not popular?", *b = "How is the iPhone 7 popular?";
	float s = sg_verify_explain(v, a, strlen(a), b, strlen(b), 0.9f, &ev);

	CHECK(s == ev.score && s < 0.9f);
	CHECK(ev.cosine == 0.9f);
	CHECK(ev.number == 1 && ev.negation == 1 && ev.qtype == 1);
	CHECK(ev.covered == 0);
}

static void test_monotone_in_cosine(void)
{
	const char *a = "What is the capital of France?", *b = "What is the capital of Spain?";
	float prev = -1;
	for (int i = 0; i <= 100; i++) {
		float s = score(a, b, (float)i / 100);
		CHECK(s >= prev);
		prev = s;
	}
}

static void test_garbage_is_safe(void)
{
	static const char bad_utf8[] = "\xff\xfe\xc3\x28\xe2\x82\x28\xf0\x90\x28 \xe2\x80\x99s";
	static const char with_nul[] = "what\0is\0this";
	size_t big = 4u << 20;
	char *huge = malloc(big);
	unsigned seed = 12345;
	float s;

	CHECK(huge != NULL);
	if (huge == NULL)
		return;
	for (size_t i = 0; i < big; i++) {
		seed = seed * 1103515245u + 12345u;
		huge[i] = (char)(seed >> 16);
	}
	s = sg_verify_score(v, huge, big, "What is this?", 13, 0.8f);
	CHECK(s >= 0 && s <= 0.8f);
	s = sg_verify_score(v, huge, big, huge + 1, big - 1, 0.8f);
	CHECK(s >= 0 && s <= 0.8f);
	memset(huge, 'a', big); /* one endless word */
	s = sg_verify_score(v, huge, big, huge, big - 7, 0.7f);
	CHECK(s >= 0 && s <= 0.7f);
	memset(huge, ' ', big);
	s = sg_verify_score(v, huge, big, "?", 1, 0.7f);
	CHECK(s >= 0 && s <= 0.7f);
	free(huge);

	s = sg_verify_score(v, bad_utf8, sizeof(bad_utf8) - 1, "don't", 5, 0.6f);
	CHECK(s >= 0 && s <= 0.6f);
	s = sg_verify_score(v, with_nul, sizeof(with_nul) - 1, "what is this", 12, 0.9f);
	CHECK(s >= 0 && s <= 0.9f);
	CHECK(sg_verify_score(v, NULL, 0, "a b c", 5, 0.5f) <= 0.5f);
	CHECK(sg_verify_score(v, NULL, 0, NULL, 0, 0.5f) == 0.5f);
	CHECK(sg_verify_score(v, "x", 1, "y", 1, NAN) == 0);
	CHECK(sg_verify_score(v, "x", 1, "y", 1, INFINITY) == 0);
}

static void test_options(void)
{
	sg_verify_t *w = NULL;
	sg_verify_opts_t o = {0};
	const char *a = "Is the iPhone 6 waterproof?", *b = "Is the iPhone 7 waterproof?";

	/* everything switched off: the score is the cosine */
	o.substitution = o.extra = o.number = o.negation = -1;
	o.qtype = o.antonym = o.order = o.context = -1;
	CHECK(sg_verify_new(&w, &o) == 0);
	CHECK(sg_verify_score(w, a, strlen(a), b, strlen(b), 0.9f) == 0.9f);
	sg_verify_free(w);

	o.number = NAN;
	CHECK(sg_verify_new(&w, &o) == SG_EINVAL);
	sg_verify_free(NULL);
}

int main(void)
{
	if (sg_verify_new(&v, NULL) != 0) {
		fprintf(stderr, "sg_verify_new failed\n");
		return 1;
	}
	test_identical_keeps_cosine();
	test_paraphrases_not_penalised();
	test_evidence_lowers();
	test_explain();
	test_context();
	test_monotone_in_cosine();
	test_garbage_is_safe();
	test_options();
	sg_verify_free(v);
	CHECK_DONE();
}
