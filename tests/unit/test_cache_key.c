/* Unit tests: cache keys (scope, prompt, bypass, canonical form). */
#include <jansson.h>

#include "check.h"
#include "semgate/cache_key.h"
#include "key_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const sg_cache_key_opts_t defaults = {SG_EMBED_LAST_USER, 0, 1.0, NULL};

/* Key of a JSON request text; returns 0 on success. */
static int key_of(sg_cache_key_t *k, const char *json, enum sg_cache_kind kind, const char *ns,
                  const sg_cache_key_opts_t *opts)
{
	json_t *root = json_loads(json, 0, NULL);
	int rc;
	if (root == NULL)
		return -100;
	rc = sg_cache_key_build(k, root, kind, ns, "m", opts ? opts : &defaults);
	json_decref(root);
	return rc;
}

static void test_canonical(void)
{
	sg_cache_key_t a, b;
	sg_cache_key_init(&a);
	sg_cache_key_init(&b);
	CHECK(key_of(&a, "{\"model\":\"m\",\"temperature\":0.5,\"max_tokens\":10,"
	                 "\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"}]}",
	             SG_CACHE_CHAT, "default", NULL) == 0);
	CHECK(key_of(&b, "{ \"messages\" : [ {\"content\":\"Hi there\", \"role\":\"user\"} ],"
	                 "\"max_tokens\":10.0,  \"temperature\":0.50, \"model\":\"m\","
	                 "\"stream\":true, \"user\":\"u1\"}",
	             SG_CACHE_CHAT, "default", NULL) == 0);
	CHECK(a.bypass == NULL && b.bypass == NULL);
	CHECK_STR(a.prompt.data, "Hi there");
	CHECK(a.scope_hash == b.scope_hash);
	CHECK(a.exact_hash == b.exact_hash);
	CHECK_STR(a.scope.data, b.scope.data);
	sg_cache_key_free(&a);
	sg_cache_key_free(&b);
}

static void test_scope_separates(void)
{
	static const char *const variants[] = {
		"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"temperature\":0.2,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"seed\":1,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
		"\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"response_format\":{\"type\":\"json_object\"},"
		"\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
		"{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"who is X?\"},"
		"{\"role\":\"assistant\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"q\"}]}",
	};
	uint64_t hashes[SG_ARRAY_SIZE(variants)];
	sg_cache_key_t k;
	sg_cache_key_init(&k);
	for (size_t i = 0; i < SG_ARRAY_SIZE(variants); i++) {
		CHECK(key_of(&k, variants[i], SG_CACHE_CHAT, "default", NULL) == 0);
		CHECK(k.bypass == NULL);
		CHECK_STR(k.prompt.data, "q");
		hashes[i] = k.scope_hash;
		for (size_t j = 0; j < i; j++)
			CHECK(hashes[j] != hashes[i]);
	}
	/* namespaces and endpoints separate too */
	CHECK(key_of(&k, variants[0], SG_CACHE_CHAT, "tenant-b", NULL) == 0);
	CHECK(k.scope_hash != hashes[0]);
	sg_cache_key_free(&k);
}

static void test_bypass(void)
{
	sg_cache_key_t k;
	sg_cache_key_init(&k);
	CHECK(key_of(&k, "{\"model\":\"m\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(k.bypass, "n > 1");
	CHECK(key_of(&k, "{\"model\":\"m\",\"temperature\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK(k.bypass != NULL);
	CHECK(key_of(&k, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
	                 "{\"role\":\"assistant\",\"tool_calls\":[]},{\"role\":\"tool\",\"content\":\"42\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(k.bypass, "tool-call continuation");
	CHECK(key_of(&k, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(k.bypass, "empty prompt");
	CHECK(key_of(&k, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", SG_CACHE_COMPLETIONS, "d", NULL) == 0);
	CHECK_STR(k.bypass, "batched prompts");
	sg_cache_key_free(&k);
}

static void test_modes_and_parts(void)
{
	const char *conv = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
	                   "{\"role\":\"user\",\"content\":\"first\"},{\"role\":\"assistant\",\"content\":\"ans\"},"
	                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"how old\"},"
	                   "{\"type\":\"text\",\"text\":\"is he?\"}]}]}";
	const char *other = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
	                    "{\"role\":\"user\",\"content\":\"other\"},{\"role\":\"assistant\",\"content\":\"ans\"},"
	                    "{\"role\":\"user\",\"content\":\"how old\\nis he?\"}]}";
	sg_cache_key_opts_t last_msg = {SG_EMBED_LAST_MESSAGE, 0, 1.0, NULL};
	sg_cache_key_opts_t turns = {SG_EMBED_LAST_TURNS, 2, 1.0, NULL};
	sg_cache_key_t a, b;
	sg_cache_key_init(&a);
	sg_cache_key_init(&b);
	CHECK(key_of(&a, conv, SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK(key_of(&b, other, SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(a.prompt.data, "how old\nis he?");
	CHECK_STR(b.prompt.data, "how old\nis he?");
	CHECK(a.scope_hash != b.scope_hash); /* different history */
	CHECK(key_of(&a, conv, SG_CACHE_CHAT, "d", &last_msg) == 0);
	CHECK(key_of(&b, other, SG_CACHE_CHAT, "d", &last_msg) == 0);
	CHECK(a.scope_hash == b.scope_hash); /* history ignored, system kept */
	CHECK(key_of(&a, conv, SG_CACHE_CHAT, "d", &turns) == 0);
	CHECK_STR(a.prompt.data, "assistant: ans\nuser: how old\nis he?");
	sg_cache_key_free(&a);
	sg_cache_key_free(&b);
}

/* ---- the canonical dump against jansson's, on random documents ---------- */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* What keys were built from before the canonical dump existed: a copy with
 * integral reals made integers, dumped by jansson with sorted keys. */
static json_t *ref_canon(json_t *v)
{
	json_t *out, *item;
	const char *key;
	size_t i;

	switch (json_typeof(v)) {
	case JSON_REAL: {
		double d = json_real_value(v);
		if (d == floor(d) && fabs(d) < 9e15)
			return json_integer((json_int_t)d);
		return json_real(d);
	}
	case JSON_OBJECT:
		out = json_object();
		json_object_foreach(v, key, item)
			json_object_set_new(out, key, ref_canon(item));
		return out;
	case JSON_ARRAY:
		out = json_array();
		json_array_foreach(v, i, item)
			json_array_append_new(out, ref_canon(item));
		return out;
	default:
		return json_incref(v);
	}
}

static void random_text(char *out, size_t cap)
{
	static const char *const pieces[] = {"a", "Z", "key", " ", "\"", "\\", "/", "\n", "\t",
	                                     "\b", "\f", "\r", "\x01", "\x1f", "\x7f", "\xc3\xa9",
	                                     "\xe2\x82\xac", "\xf0\x9f\x98\x80", "0", "temperature"};
	size_t n = 0, parts = rnd() % 6;
	out[0] = '\0';
	for (size_t i = 0; i < parts; i++) {
		const char *p = pieces[rnd() % (sizeof(pieces) / sizeof(pieces[0]))];
		size_t l = strlen(p);
		if (n + l + 1 > cap)
			break;
		memcpy(out + n, p, l + 1);
		n += l;
	}
}

static json_t *random_json(int depth)
{
	char text[64];
	switch (rnd() % (depth > 4 ? 6 : 8)) {
	case 0: return json_integer((json_int_t)(rnd() % 2000) - 1000);
	case 1: { /* reals: integral, fractional, huge, tiny */
		static const double r[] = {1.0, -0.0, 0.5, 0.7, 1e-7, 123456.789, 9e15, 8.9e15,
		                           1e300, -2.5, 3.0000000000000004, 0.1};
		return json_real(r[rnd() % (sizeof(r) / sizeof(r[0]))]);
	}
	case 2: random_text(text, sizeof(text)); return json_string(text);
	case 3: return json_true();
	case 4: return json_false();
	case 5: return json_null();
	case 6: {
		json_t *a = json_array();
		for (int i = (int)(rnd() % 4); i > 0; i--)
			json_array_append_new(a, random_json(depth + 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		for (int i = (int)(rnd() % 5); i > 0; i--) {
			random_text(text, sizeof(text));
			json_object_set_new(o, text, random_json(depth + 1));
		}
		return o;
	}
	}
}

static void test_canon_dump_matches_jansson(void)
{
	int same = 0, n = 3000;
	for (int i = 0; i < n; i++) {
		json_t *doc = random_json(0), *ref = ref_canon(doc);
		char *want = json_dumps(ref, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
		sg_buf_t got;
		sg_buf_init(&got, 0);
		int rc = sg__key_canon_dump(&got, doc);
		if (rc == 0 && want && got.len == strlen(want) && memcmp(got.data, want, got.len) == 0)
			same++;
		else if (n - same <= 3)
			fprintf(stderr, "canon dump differs:\n  jansson %s\n  semgate %.*s\n", want,
			        (int)got.len, got.data);
		free(want);
		sg_buf_free(&got);
		json_decref(doc);
		json_decref(ref);
	}
	printf("canonical dump: %d of %d random documents byte-identical to jansson's\n", same, n);
	CHECK(same == n);
}

/* SipHash-2-4 against the reference's vectors (key 00..0f, messages 00..n-1). */
static void test_siphash_vectors(void)
{
	sg_hash_key_t k = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
	uint8_t m[64];
	for (int i = 0; i < 64; i++)
		m[i] = (uint8_t)i;
	CHECK(sg_siphash(&k, m, 0) == 0x726fdb47dd0e0e31ULL);
	CHECK(sg_siphash(&k, m, 1) == 0x74f839c593dc67fdULL);
	CHECK(sg_siphash(&k, m, 8) == 0x93f5f5799a932462ULL);
	CHECK(sg_siphash(&k, m, 15) == 0xa129ca6149be45e5ULL);
	CHECK(sg_siphash(&k, m, 63) == 0x958a324ceb064572ULL);
}

/* Ids under two secrets are unrelated: a collision found under one (or
 * without one) says nothing about another store's. */
static void test_ids_depend_on_secret(void)
{
	sg_hash_key_t a = {1, 2}, b = {3, 4};
	uint64_t sa, ea, sb, eb, s0, e0;
	sg_cache_key_ids(&a, "scope", 5, "prompt", 6, &sa, &ea);
	sg_cache_key_ids(&b, "scope", 5, "prompt", 6, &sb, &eb);
	sg_cache_key_ids(NULL, "scope", 5, "prompt", 6, &s0, &e0);
	CHECK(sa != sb && ea != eb && sa != s0 && ea != e0);
	uint64_t s2, e2;
	sg_cache_key_ids(&a, "scope2", 6, "prompt", 6, &s2, &e2);
	CHECK(e2 != ea); /* same prompt, other scope */
}

int main(void)
{
	test_siphash_vectors();
	test_ids_depend_on_secret();
	test_canon_dump_matches_jansson();
	test_canonical();
	test_scope_separates();
	test_bypass();
	test_modes_and_parts();
	CHECK_DONE();
}
