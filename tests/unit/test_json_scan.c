/* Unit tests for the hot-path JSON scanner (lib/json_scan.c): fixed cases,
 * then a differential test against jansson on mutated documents. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "semgate/json_scan.h"

static int scan(const char *s)
{
	return sg_json_scan(s, strlen(s), NULL, 0);
}

static void test_validity(void)
{
	static const char *const good[] = {
		"{}", "[]", " {} ", "\n[\t]\r\n", "[1]", "[-0]", "[0.5e+3]", "[1E-2]", "[-12.25]",
		"[true,false,null]", "{\"a\":1}", "{\"a\":{\"b\":[1,{\"c\":\"d\"}]},\"e\":[]}",
		"[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]", "[\"\\u00e9\\uD83D\\uDE00\"]",
		"[\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"]", "{\"\":\"\"}", "[[[[[]]]]]",
		"{\"a\" : 1 , \"b\" : [ 2 , 3 ] }", "[9223372036854775807]", "[-9223372036854775808]",
		"[1.5e308]", "[1e-400]", "[0.000000000000000000000000000001]",
	};
	static const char *const bad[] = {
		"", " ", "1", "\"s\"", "true", "null", "{", "[", "}", "]", "{]", "[}", "[1,]", "[,1]",
		"{\"a\":1,}", "{\"a\"}", "{\"a\":}", "{a:1}", "{'a':1}", "[01]", "[1.]", "[.5]",
		"[1e]", "[-]", "[+1]", "[tru]", "[nul]", "[True]", "{} {}", "{}x", "[1 2]",
		"[\"\\x\"]", "[\"\\u12\"]", "[\"\\u0000\"]", "[\"\\uD800\"]", "[\"\\uDC00\"]",
		"[\"\\uD800\\u0041\"]", "[\"a\nb\"]", "[\"\x01\"]", "[\"\xc0\xaf\"]",
		"[\"\xe0\x80\xaf\"]", "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]", "[\"\x80\"]",
		"[\"\xc3\"]", "[\"unterminated]", "[1]]", "{\"a\":1}}", "[\xef\xbb\xbf]",
		/* numbers jansson cannot hold */
		"[9223372036854775808]", "[-9223372036854775809]", "[1e309]", "[-1E+400]",
		"{\"usage\":{\"total_tokens\":99999999999999999999}}",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (scan(good[i]) != 0)
			CHECK_MSG(0, "valid JSON refused: %s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (scan(bad[i]) != SG_EINVAL)
			CHECK_MSG(0, "invalid JSON accepted: %s", bad[i]);
	/* embedded NUL bytes are not JSON text */
	CHECK(sg_json_scan("[1]\0", 4, NULL, 0) == SG_EINVAL);
	CHECK(sg_json_scan("[\"a\0b\"]", 7, NULL, 0) == SG_EINVAL);

	/* the depth limit, as jansson's */
	size_t n = SG_JSON_MAX_DEPTH + 1;
	char *deep = malloc(2 * n + 1);
	memset(deep, '[', n);
	memset(deep + n, ']', n);
	CHECK(sg_json_scan(deep, 2 * n, NULL, 0) == SG_EINVAL);
	CHECK(sg_json_scan(deep + 1, 2 * n - 2, NULL, 0) == 0);
	free(deep);
	/* a scalar counts as a level, as in jansson: 2048 arrays around a 1 is
	 * too deep, 2047 are not */
	for (size_t k = SG_JSON_MAX_DEPTH - 1; k <= SG_JSON_MAX_DEPTH; k++) {
		char *t = malloc(2 * k + 1);
		memset(t, '[', k);
		t[k] = '1';
		memset(t + k + 1, ']', k);
		json_t *j = json_loadb(t, 2 * k + 1, 0, NULL);
		int rc = sg_json_scan(t, 2 * k + 1, NULL, 0);
		CHECK((j != NULL) == (rc == 0));
		CHECK((k < SG_JSON_MAX_DEPTH) == (rc == 0));
		json_decref(j);
		free(t);
	}
}

static int span_is(sg_json_field_t *f, const char *want)
{
	return f->found && f->value.len == strlen(want) && memcmp(f->value.base, want, f->value.len) == 0;
}

static void test_fields(void)
{
	const char *reply =
		"{\"id\":\"x\",\"choices\":[{\"message\":{\"usage\":1}}],"
		"\"usage\": {\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42} }";
	sg_json_field_t f[3] = {{"usage", 0, {0}}, {"choices", 0, {0}}, {"missing", 0, {0}}};
	long long v;

	CHECK(sg_json_scan(reply, strlen(reply), f, 3) == 0);
	CHECK(span_is(&f[0], "{\"prompt_tokens\":12,\"completion_tokens\":30,\"total_tokens\":42}"));
	CHECK(span_is(&f[1], "[{\"message\":{\"usage\":1}}]")); /* the nested "usage" is not it */
	CHECK(!f[2].found);
	CHECK(sg_json_array_nonempty(f[1].value));

	sg_json_field_t u[2] = {{"total_tokens", 0, {0}}, {"prompt_tokens", 0, {0}}};
	CHECK(sg_json_scan(f[0].value.base, f[0].value.len, u, 2) == 0);
	CHECK(sg_json_integer(u[0].value, &v) == 0 && v == 42);
	CHECK(sg_json_integer(u[1].value, &v) == 0 && v == 12);

	/* last duplicate wins; escaped keys match; scalars and empties have spans */
	const char *dup = "{\"a\":1,\"\\u0061\":[ ],\"b\":\"s\",\"a\":{}}";
	sg_json_field_t d[2] = {{"a", 0, {0}}, {"b", 0, {0}}};
	CHECK(sg_json_scan(dup, strlen(dup), d, 2) == 0);
	CHECK(span_is(&d[0], "{}"));
	CHECK(span_is(&d[1], "\"s\""));
	const char *esc = "{\"us\\u0061ge\":7}";
	sg_json_field_t e[1] = {{"usage", 0, {0}}};
	CHECK(sg_json_scan(esc, strlen(esc), e, 1) == 0 && span_is(&e[0], "7"));
	/* a top-level array has no members */
	sg_json_field_t a[1] = {{"usage", 0, {0}}};
	CHECK(sg_json_scan("[{\"usage\":1}]", 13, a, 1) == 0 && !a[0].found);

	/* integers */
	static const struct {
		const char *s;
		int ok;
		long long v;
	} ints[] = {{"0", 1, 0}, {"-7", 1, -7}, {"9223372036854775807", 1, 9223372036854775807LL},
		    {"9223372036854775808", 0, 0}, {"1.0", 0, 0}, {"1e3", 0, 0}, {"\"3\"", 0, 0},
		    {"01", 0, 0}, {"-", 0, 0}, {"", 0, 0}, {"null", 0, 0}};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		sg_iovec_t sp = {(char *)ints[i].s, strlen(ints[i].s)};
		int rc = sg_json_integer(sp, &v);
		CHECK_MSG((rc == 0) == ints[i].ok && (!ints[i].ok || v == ints[i].v), "integer %s",
		          ints[i].s);
	}
	CHECK(!sg_json_array_nonempty((sg_iovec_t){"[ ]", 3}));
	CHECK(!sg_json_array_nonempty((sg_iovec_t){"{}", 2}));
	CHECK(sg_json_array_nonempty((sg_iovec_t){"[0]", 3}));
}

/* Deterministic xorshift so failures reproduce. */
static uint64_t rng = 0x2545F4914F6CDD1DULL;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/*
 * Mutated documents: the scanner must call valid exactly what jansson calls
 * valid (numbers out of jansson's range aside), and find the same members.
 */
static void test_against_jansson(void)
{
	static const char *const seeds[] = {
		"{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\","
		"\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Paris "
		"\\u00e9 \xe2\x82\xac\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,"
		"\"completion_tokens\":3,\"total_tokens\":12}}",
		"[1, -2.5e3, true, false, null, \"\\ud83d\\ude00\", {\"a\": [[]], \"b\": {}}]",
		"{\"usage\": null, \"choices\": [], \"x\": {\"usage\": {\"total_tokens\": 1}}}",
	};
	static const char specials[] = "{}[],:\"\\ \t\n0123456789-+.eEtrufalsn\x01\x7f\x80\xc3\xe2\xff";
	int iterations = 20000, compared = 0, valid = 0, loads_agree = 0;
	char buf[512];

	for (int it = 0; it < iterations; it++) {
		const char *seed = seeds[rnd() % 3];
		size_t n = strlen(seed);
		memcpy(buf, seed, n);
		int edits = 1 + (int)(rnd() % 3);
		for (int e = 0; e < edits && n > 0; e++) {
			size_t at = rnd() % n;
			char c = specials[rnd() % (sizeof(specials) - 1)];
			switch (rnd() % 4) {
			case 0: buf[at] = c; break;                                    /* replace */
			case 1: memmove(buf + at, buf + at + 1, n - at - 1); n--; break; /* delete */
			case 2:                                                       /* insert */
				if (n + 1 < sizeof(buf)) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = c;
					n++;
				}
				break;
			default: n = at; break; /* truncate */
			}
		}
		json_error_t jerr, lerr, aerr;
		/* the loader: jansson's tree (DECODE_ANY), or jansson's own error */
		json_t *any = json_loadb(buf, n, JSON_DECODE_ANY, &aerr);
		json_t *mine = sg_json_load(buf, n, &lerr);
		if ((any == NULL) != (mine == NULL) || (any && !json_equal(any, mine)) ||
		    (!any && strcmp(aerr.text, lerr.text) != 0))
			CHECK_MSG(0, "sg_json_load differs from json_loadb on: %.*s", (int)n, buf);
		else
			loads_agree++;
		json_decref(any);
		json_decref(mine);
		json_t *root = json_loadb(buf, n, 0, &jerr);
		sg_json_field_t f[2] = {{"usage", 0, {0}}, {"choices", 0, {0}}};
		int rc = sg_json_scan(buf, n, f, 2);
		compared++;
		if ((root != NULL) != (rc == 0)) {
			CHECK_MSG(0, "jansson %s, scanner %s: %.*s (%s)", root ? "valid" : "invalid",
			          rc == 0 ? "valid" : "invalid", (int)n, buf, root ? "" : jerr.text);
			json_decref(root);
			continue;
		}
		if (root == NULL)
			continue;
		valid++;
		for (int k = 0; k < 2; k++) {
			json_t *member = json_is_object(root) ? json_object_get(root, f[k].key) : NULL;
			CHECK((member != NULL) == f[k].found);
			if (member && f[k].found) {
				json_t *again = json_loadb(f[k].value.base, f[k].value.len,
				                           JSON_DECODE_ANY, NULL);
				CHECK(again != NULL && json_equal(again, member));
				json_decref(again);
			}
		}
		json_decref(root);
	}
	printf("json_scan vs jansson: %d mutated documents compared, %d valid; sg_json_load agreed "
	       "with json_loadb on %d of %d\n", compared, valid, loads_agree, iterations);
	CHECK(loads_agree == iterations);
	CHECK(compared == iterations && valid > 100);
}

/* The loader on what mutations rarely reach: long strings, escapes, numbers. */
static void test_load(void)
{
	static const char *const docs[] = {
		"{\"a\":\"\\u00e9\\ud83d\\ude00\\n\\\"\\/\",\"\\u0062\":[1,-2,3.5,1e2,-0.0,true,null]}",
		"[9223372036854775807, -9223372036854775808]",
		"[9223372036854775808]", /* too big for jansson: its error */
		"[1e999]",               /* real overflow: its error */
		"[1e-999]",              /* underflow is 0.0 */
		"\"just a string\"", "42", "null", /* not containers: jansson's path */
		"{\"k\":1,\"k\":2}",      /* last wins */
		"{\"\\u0000\":1}",        /* refused by both */
	};
	/* nesting at jansson's limit and one past it, through objects and arrays */
	for (size_t k = SG_JSON_MAX_DEPTH - 1; k <= SG_JSON_MAX_DEPTH; k++) {
		char *t = malloc(6 * k + 2), *w = t;
		for (size_t d = 0; d < k; d++)
			w += d % 2 ? sprintf(w, "{\"k\":") : sprintf(w, "[");
		*w++ = '1';
		for (size_t d = k; d-- > 0;)
			*w++ = d % 2 ? '}' : ']';
		json_error_t e1, e2;
		json_t *a = json_loadb(t, (size_t)(w - t), JSON_DECODE_ANY, &e1);
		json_t *b = sg_json_load(t, (size_t)(w - t), &e2);
		CHECK((a == NULL) == (k == SG_JSON_MAX_DEPTH));
		CHECK((a == NULL) == (b == NULL) && (a == NULL || json_equal(a, b)));
		json_decref(a);
		json_decref(b);
		free(t);
	}
	char big[2000];
	int n = snprintf(big, sizeof(big), "{\"%0300d\\n\":\"", 0);
	for (int i = 0; i < 500; i++)
		n += snprintf(big + n, sizeof(big) - (size_t)n, "\\t");
	snprintf(big + n, sizeof(big) - (size_t)n, "\"}");
	for (size_t i = 0; i <= sizeof(docs) / sizeof(docs[0]); i++) {
		const char *d = i < sizeof(docs) / sizeof(docs[0]) ? docs[i] : big;
		json_error_t e1, e2;
		json_t *a = json_loadb(d, strlen(d), JSON_DECODE_ANY, &e1);
		json_t *b = sg_json_load(d, strlen(d), &e2);
		CHECK_MSG((a == NULL) == (b == NULL) && (a == NULL || json_equal(a, b)) &&
		          (a != NULL || strcmp(e1.text, e2.text) == 0), "load %s", d);
		json_decref(a);
		json_decref(b);
	}
}

int main(void)
{
	test_load();
	test_validity();
	test_fields();
	test_against_jansson();
	CHECK_DONE();
}
