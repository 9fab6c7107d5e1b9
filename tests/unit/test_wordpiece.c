/* Unit tests for the WordPiece tokenizer (semgate/wordpiece.h): the rules on a
 * small vocabulary written here, and every malformed file refused with a
 * message. Parity with Hugging Face `tokenizers` over thousands of texts is
 * tests/unit/wordpiece_parity.py's job.
 *
 * Files go to a fresh directory under $TMPDIR, removed at the end. */
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "semgate/wordpiece.h"

static char root[256];

/* [PAD] [UNK] [CLS] [SEP] [MASK] at 0 and 100..103, as in BERT. */
static const char *const vocab[] = {
	"a", "b", "ab", "##a", "##b", "##c", "un", "unaff", "##aff", "##able", "hello", "world",
	",", "!", "?", ".", "[", "]", "sep", "the", "##s", "cafe", "café", "Café", "naive", "日",
	"本", "##本", "の", "e", "i", "##\xcc\x87" /* ##U+0307 */, "x", "##x", "hel", "##lo",
	"\xe1\x84\x92" /* U+1112, Hangul jamo */, "##\xe1\x85\xa1", "##\xe1\x86\xab",
	"\xe2\x88\x91" /* U+2211 */, "\xef\xbf\xbd" /* U+FFFD */, "é", "##é",
};

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void path_of(char *out, size_t size, const char *name)
{
	snprintf(out, size, "%s/%s", root, name);
}

static void write_file(const char *name, const char *data, size_t len)
{
	char p[512];
	FILE *f;

	path_of(p, sizeof(p), name);
	f = fopen(p, "wb");
	if (f == NULL || fwrite(data, 1, len, f) != len) {
		perror(p);
		exit(1);
	}
	fclose(f);
}

static void write_str(const char *name, const char *s)
{
	write_file(name, s, strlen(s));
}

/* The test vocabulary as vocab.txt lines, id = line. */
static void write_vocab(const char *name)
{
	char buf[8192];
	size_t n = 0;

	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "[PAD]\n");
	for (int i = 1; i < 100; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "[unused%d]\n", i);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
	for (size_t i = 0; i < SG_ARRAY_SIZE(vocab); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s\n", vocab[i]);
	write_file(name, buf, n);
}

/* The same as tokenizer.json's model.vocab members. */
static size_t vocab_json(char *buf, size_t size)
{
	size_t n = 0;

	n += (size_t)snprintf(buf + n, size - n, "\"[PAD]\": 0");
	for (int i = 1; i < 100; i++)
		n += (size_t)snprintf(buf + n, size - n, ", \"[unused%d]\": %d", i, i);
	n += (size_t)snprintf(buf + n, size - n,
	                      ", \"[UNK]\": 100, \"[CLS]\": 101, \"[SEP]\": 102, \"[MASK]\": 103");
	for (size_t i = 0; i < SG_ARRAY_SIZE(vocab); i++)
		n += (size_t)snprintf(buf + n, size - n, ", \"%s\": %zu", vocab[i], 104 + i);
	return n;
}

static const char *const bert_normalizer =
	"{\"type\": \"BertNormalizer\", \"clean_text\": true, \"handle_chinese_chars\": true, "
	"\"strip_accents\": null, \"lowercase\": true}";
static const char *const template_post =
	"{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"[CLS]\", "
	"\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": "
	"{\"id\": \"[SEP]\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {\"[CLS]\": "
	"{\"id\": \"[CLS]\", \"ids\": [101], \"tokens\": [\"[CLS]\"]}, \"[SEP]\": {\"id\": "
	"\"[SEP]\", \"ids\": [102], \"tokens\": [\"[SEP]\"]}}}";
static const char *const bert_added =
	"[{\"id\": 0, \"content\": \"[PAD]\", \"single_word\": false, \"lstrip\": false, "
	"\"rstrip\": false, \"normalized\": false, \"special\": true}, "
	"{\"id\": 100, \"content\": \"[UNK]\", \"single_word\": false, \"lstrip\": false, "
	"\"rstrip\": false, \"normalized\": false, \"special\": true}, "
	"{\"id\": 101, \"content\": \"[CLS]\", \"single_word\": false, \"lstrip\": false, "
	"\"rstrip\": false, \"normalized\": false, \"special\": true}, "
	"{\"id\": 102, \"content\": \"[SEP]\", \"single_word\": false, \"lstrip\": false, "
	"\"rstrip\": false, \"normalized\": false, \"special\": true}, "
	"{\"id\": 103, \"content\": \"[MASK]\", \"single_word\": false, \"lstrip\": false, "
	"\"rstrip\": false, \"normalized\": false, \"special\": true}]";

/* A tokenizer.json with these parts (NULL: BERT's; "-": left out). model is
 * the start of the model object, before its vocab. */
static void write_json(const char *name, const char *model, const char *normalizer,
                       const char *pre, const char *post, const char *added, const char *vocab_members)
{
	static char buf[65536];
	char members[16384];
	size_t n = 0;

	if (vocab_members == NULL) {
		vocab_json(members, sizeof(members));
		vocab_members = members;
	}
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{\"version\": \"1.0\", \"truncation\": null");
	if (!added || strcmp(added, "-") != 0)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ", \"added_tokens\": %s",
		                      added ? added : bert_added);
	if (!normalizer || strcmp(normalizer, "-") != 0)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ", \"normalizer\": %s",
		                      normalizer ? normalizer : bert_normalizer);
	if (!pre || strcmp(pre, "-") != 0)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ", \"pre_tokenizer\": %s",
		                      pre ? pre : "{\"type\": \"BertPreTokenizer\"}");
	if (!post || strcmp(post, "-") != 0)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ", \"post_processor\": %s",
		                      post ? post : template_post);
	if (!model || strcmp(model, "-") != 0)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ", \"model\": %s \"vocab\": {%s}}",
		                      model ? model : "{\"type\": \"WordPiece\", \"unk_token\": "
		                      "\"[UNK]\", \"continuing_subword_prefix\": \"##\", "
		                      "\"max_input_chars_per_word\": 100,", vocab_members);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "}");
	if (n >= sizeof(buf)) {
		fprintf(stderr, "write_json: too long\n");
		exit(1);
	}
	write_file(name, buf, n);
}

static sg_wordpiece_t *load_vocab(const sg_wordpiece_opts_t *o)
{
	char p[512], err[256] = "";
	sg_wordpiece_t *t = NULL;
	path_of(p, sizeof(p), "vocab.txt");
	CHECK_RC(sg_wordpiece_load_vocab(&t, p, o, err, sizeof(err)), 0);
	if (t == NULL)
		fprintf(stderr, "  %s\n", err);
	return t;
}

/* Encode (max_len 64) and compare with the tokens named in want, a
 * space-separated list without [CLS] and [SEP]. */
static void expect_n(const sg_wordpiece_t *t, const char *text, size_t len, const char *want)
{
	int32_t ids[64];
	char got[1024] = "", w[1024];
	int n = sg_wordpiece_encode(t, text, len, ids, 64);
	size_t at = 0;

	if (n < 2) {
		CHECK_MSG(0, "encode %.40s: %d", text, n);
		return;
	}
	CHECK(ids[0] == sg_wordpiece_id(t, "[CLS]") && ids[n - 1] == sg_wordpiece_id(t, "[SEP]"));
	for (int i = 1; i < n - 1; i++)
		at += (size_t)snprintf(got + at, sizeof(got) - at, "%s%s", i > 1 ? " " : "",
		                       sg_wordpiece_token(t, ids[i]));
	snprintf(w, sizeof(w), "%s", want);
	CHECK_MSG(strcmp(got, w) == 0, "text \"%.60s\": got \"%s\", want \"%s\"", text, got, want);
}

static void expect(const sg_wordpiece_t *t, const char *text, const char *want)
{
	expect_n(t, text, strlen(text), want);
}

static void test_defaults(void)
{
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	CHECK(o.lowercase == 1 && o.strip_accents == -1 && o.clean_text == 1 &&
	      o.handle_chinese == 1 && o.max_chars_per_word == 100);
	CHECK_STR(o.unk, "[UNK]");
	CHECK_STR(o.cls, "[CLS]");
	CHECK_STR(o.sep, "[SEP]");
	CHECK_STR(o.pad, "[PAD]");
	CHECK_STR(o.prefix, "##");
}

static void test_lookups(void)
{
	sg_wordpiece_t *t = load_vocab(NULL);
	if (t == NULL)
		return;
	CHECK(sg_wordpiece_vocab_size(t) == 104 + (int)SG_ARRAY_SIZE(vocab));
	CHECK(sg_wordpiece_id(t, "[PAD]") == 0);
	CHECK(sg_wordpiece_id(t, "[UNK]") == 100);
	CHECK(sg_wordpiece_id(t, "[CLS]") == 101);
	CHECK(sg_wordpiece_id(t, "a") == 104);
	CHECK(sg_wordpiece_id(t, "##a") == 107);
	CHECK(sg_wordpiece_id(t, "zzz") == -1);
	CHECK(sg_wordpiece_id(t, "") == -1);
	CHECK_STR(sg_wordpiece_token(t, 102), "[SEP]");
	CHECK_STR(sg_wordpiece_token(t, 104), "a");
	CHECK(sg_wordpiece_token(t, -1) == NULL);
	CHECK(sg_wordpiece_token(t, sg_wordpiece_vocab_size(t)) == NULL);
	CHECK(sg_wordpiece_opts(t)->lowercase == 1);
	sg_wordpiece_free(t);
	sg_wordpiece_free(NULL);
}

static void test_greedy(void)
{
	sg_wordpiece_t *t = load_vocab(NULL);
	char w[128];
	if (t == NULL)
		return;
	expect(t, "ab", "ab");                      /* a whole token */
	expect(t, "abab", "ab ##a ##b");            /* longest first, then ## pieces */
	expect(t, "abc", "ab ##c");
	expect(t, "unaffable", "unaff ##able");     /* "unaff" beats "un" ##aff */
	expect(t, "unaffaffable", "unaff ##aff ##able");
	expect(t, "abd", "[UNK]");                  /* one piece missing: the whole word */
	expect(t, "aba abd ab", "ab ##a [UNK] ab");
	expect(t, "ca", "[UNK]");                   /* "##c" only continues */
	expect(t, "hello world", "hello world");
	expect(t, "hello", "hello");                /* a whole word before hel ##lo */
	/* 100 characters are one word, 101 are [UNK] */
	memset(w, 'x', 100);
	w[100] = '\0';
	{
		int32_t ids[128];
		int n = sg_wordpiece_tokens(t, w, 100, ids, 128);
		CHECK(n == 100 && ids[0] == sg_wordpiece_id(t, "x") && ids[99] == sg_wordpiece_id(t, "##x"));
	}
	w[100] = 'x';
	w[101] = '\0';
	expect(t, w, "[UNK]");
	sg_wordpiece_free(t);

	/* the limit counts characters, not bytes: 100 é (cased) are é ##é ... */
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	char e[256];
	int32_t ids[128];
	o.lowercase = 0;
	t = load_vocab(&o);
	if (t == NULL)
		return;
	for (int i = 0; i < 101; i++)
		memcpy(e + 2 * i, "\xc3\xa9", 2);
	CHECK(sg_wordpiece_tokens(t, e, 200, ids, 128) == 100);
	CHECK(ids[0] == sg_wordpiece_id(t, "é") && ids[99] == sg_wordpiece_id(t, "##é"));
	CHECK(sg_wordpiece_tokens(t, e, 202, ids, 128) == 1);
	CHECK(ids[0] == sg_wordpiece_id(t, "[UNK]"));
	sg_wordpiece_free(t);
}

static void test_punctuation_and_space(void)
{
	sg_wordpiece_t *t = load_vocab(NULL);
	if (t == NULL)
		return;
	expect(t, "hello,world!", "hello , world !");
	expect(t, "a.b?", "a . b ?");
	expect(t, "  \t\nhello \r\n world  ", "hello world");
	expect(t, "hello\xc2\xa0world\xe3\x80\x80" "a", "hello world a"); /* U+00A0, U+3000 */
	expect(t, "hello\xe2\x80\xa8world", "hello world");             /* U+2028 */
	expect(t, "?!", "? !");
	expect(t, "", "");
	expect(t, "   ", "");
	expect(t, "\xe2\x88\x91", "\xe2\x88\x91"); /* a math symbol is not punctuation */
	expect(t, "a\xe2\x88\x91", "[UNK]");      /* ... so it sticks to its word */
	sg_wordpiece_free(t);
}

static void test_normaliser(void)
{
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	sg_wordpiece_t *t = load_vocab(NULL);
	if (t == NULL)
		return;
	/* uncased: lower case, accents stripped */
	expect(t, "HELLO World", "hello world");
	expect(t, "Café", "cafe");
	expect(t, "NAI\xcc\x88VE", "naive");       /* I + combining diaeresis */
	expect(t, "na\xc3\xafve", "naive");        /* precomposed ï */
	/* control and zero-width characters vanish, inside a word too */
	expect(t, "hel\x01lo", "hello");
	expect(t, "hel\xe2\x80\x8blo", "hello");   /* U+200B */
	expect(t, "hel\xc2\xadlo", "hello");       /* soft hyphen */
	expect(t, "\xef\xbb\xbfhello", "hello");   /* BOM */
	expect_n(t, "hel\0lo", 6, "hello");
	/* CJK ideographs are words of their own; kana are not */
	expect(t, "日本", "日 本");
	expect(t, "の本", "の 本");
	expect(t, "のの", "[UNK]");               /* no "##の" */
	/* Hangul: NFD splits a syllable into jamo */
	expect(t, "\xed\x95\x9c", "\xe1\x84\x92 ##\xe1\x85\xa1 ##\xe1\x86\xab");
	/* İ: NFD gives I + U+0307, which is stripped */
	expect(t, "\xc4\xb0", "i");
	sg_wordpiece_free(t);

	/* lower case without stripping: İ is "i" + U+0307 (Rust's full mapping) */
	o.strip_accents = 0;
	t = load_vocab(&o);
	if (t == NULL)
		return;
	expect(t, "\xc4\xb0", "i ##\xcc\x87");
	expect(t, "Café", "café");
	sg_wordpiece_free(t);

	/* cased */
	o = sg_wordpiece_opts_default();
	o.lowercase = 0;
	t = load_vocab(&o);
	if (t == NULL)
		return;
	expect(t, "Café hello", "Café hello");
	expect(t, "HELLO", "[UNK]");
	sg_wordpiece_free(t);

	/* no clean_text: U+FFFD is a character, a control character too */
	o = sg_wordpiece_opts_default();
	o.clean_text = 0;
	t = load_vocab(&o);
	if (t == NULL)
		return;
	expect(t, "\xef\xbf\xbd", "\xef\xbf\xbd");
	expect(t, "hel\x01lo", "[UNK]");
	sg_wordpiece_free(t);

	/* no handle_chinese: ideographs make one word */
	o = sg_wordpiece_opts_default();
	o.handle_chinese = 0;
	t = load_vocab(&o);
	if (t == NULL)
		return;
	expect(t, "日本", "日 ##本");
	sg_wordpiece_free(t);
}

/* strip_accents reorders the marks it keeps by combining class (canonical
 * order): here U+1D165 (class 216) and U+1D16D (226), spacing marks, which
 * survive stripping; 80 of them outgrow the on-stack buffer. */
static void test_mark_order(void)
{
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	char p[512], err[256], text[1024];
	int32_t ids[128];
	sg_wordpiece_t *t = NULL;
	size_t n = 0;
	int k;

	write_str("marks.txt", "[UNK]\n[CLS]\n[SEP]\nq\n##q\n##\xf0\x9d\x85\xa5\n##\xf0\x9d\x85\xad\n"
	          "##\xcc\x81\n");
	path_of(p, sizeof(p), "marks.txt");
	o.max_chars_per_word = 1000;
	CHECK_RC(sg_wordpiece_load_vocab(&t, p, &o, err, sizeof(err)), 0);
	if (t == NULL)
		return;
	text[n++] = 'q';
	for (int i = 0; i < 40; i++) {
		memcpy(text + n, "\xf0\x9d\x85\xad\xcc\x81\xf0\x9d\x85\xa5", 10); /* 226, 230 (Mn), 216 */
		n += 10;
	}
	text[n++] = 'q';
	k = sg_wordpiece_tokens(t, text, n, ids, 128);
	CHECK(k == 82);
	if (k == 82) {
		CHECK(ids[0] == 3 && ids[81] == 4);
		for (int i = 1; i <= 40; i++)
			CHECK_MSG(ids[i] == 5 && ids[40 + i] == 6, "mark %d: %d %d", i, ids[i], ids[40 + i]);
	}
	sg_wordpiece_free(t);
	/* without stripping, no NFD: the marks stay where they are, U+0301 too */
	o.strip_accents = 0;
	o.lowercase = 0;
	CHECK_RC(sg_wordpiece_load_vocab(&t, p, &o, err, sizeof(err)), 0);
	if (t == NULL)
		return;
	k = sg_wordpiece_tokens(t, text, 1 + 10, ids, 128);
	CHECK(k == 4 && ids[0] == 3 && ids[1] == 6 && ids[2] == 7 && ids[3] == 5);
	sg_wordpiece_free(t);
}

static void test_invalid_utf8(void)
{
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	sg_wordpiece_t *t = load_vocab(NULL);
	if (t == NULL)
		return;
	/* read as U+FFFD, which clean_text drops */
	expect(t, "a\xff" "b", "ab");
	expect(t, "hel\xc3lo", "hello");           /* a truncated sequence */
	expect(t, "hel\xed\xa0\x80lo", "hello");   /* an encoded surrogate */
	expect(t, "hel\xe2\x82", "hel");           /* cut at the end */
	expect(t, "\xc0\xaf\xf8\x88\x80\x80\x80", "");
	expect(t, "\xe2[SEP]", "[SEP]");
	sg_wordpiece_free(t);
	/* kept when clean_text is off: one U+FFFD per maximal bad subpart */
	o.clean_text = 0;
	t = load_vocab(&o);
	if (t == NULL)
		return;
	expect(t, "\xff", "\xef\xbf\xbd");
	expect(t, "\xe2\x82 \xf0\x9f\x98 \xc3", "\xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd");
	expect(t, "\xff\xfe", "[UNK]");            /* two of them: one word, no "##\ufffd" */
	sg_wordpiece_free(t);
}

static void test_added_tokens(void)
{
	sg_wordpiece_t *t = load_vocab(NULL);
	if (t == NULL)
		return;
	/* special tokens in the raw text are matched as they are */
	expect(t, "hello [SEP] world", "hello [SEP] world");
	expect(t, "a[MASK]b", "a [MASK] b");
	expect(t, "[CLS][SEP][UNK][PAD]", "[CLS] [SEP] [UNK] [PAD]");
	expect(t, "[[SEP]]", "[ [SEP] ]");
	/* ... and only so: after normalisation they are punctuation and words */
	expect(t, "[sep]", "[ sep ]");
	expect(t, "[SEP", "[ sep");
	expect(t, "[unused1]", "[ [UNK] ]");      /* in the vocabulary, not an added token */
	sg_wordpiece_free(t);
}

static void test_truncation(void)
{
	sg_wordpiece_t *t = load_vocab(NULL);
	int32_t ids[16];
	if (t == NULL)
		return;
	int32_t cls = sg_wordpiece_id(t, "[CLS]"), sep = sg_wordpiece_id(t, "[SEP]");
	int32_t a = sg_wordpiece_id(t, "a"), b = sg_wordpiece_id(t, "b");

	/* max_len counts [CLS] and [SEP]: the tail is cut */
	CHECK(sg_wordpiece_encode(t, "a b a b a", 9, ids, 4) == 4);
	CHECK(ids[0] == cls && ids[1] == a && ids[2] == b && ids[3] == sep);
	CHECK(sg_wordpiece_encode(t, "a b a b a", 9, ids, 2) == 2);
	CHECK(ids[0] == cls && ids[1] == sep);
	CHECK(sg_wordpiece_encode(t, "a b", 3, ids, 16) == 4);
	CHECK(sg_wordpiece_encode(t, "", 0, ids, 2) == 2);
	CHECK(sg_wordpiece_encode(t, NULL, 0, ids, 2) == 2);
	/* inside a word: its first pieces are kept... */
	CHECK(sg_wordpiece_encode(t, "abab", 4, ids, 3) == 3);
	CHECK(ids[1] == sg_wordpiece_id(t, "ab") && ids[2] == sep);
	/* ... unless the word turns out to be [UNK] after the cut */
	CHECK(sg_wordpiece_encode(t, "ababd", 5, ids, 3) == 3);
	CHECK(ids[1] == sg_wordpiece_id(t, "[UNK]"));
	/* added tokens count like the others */
	CHECK(sg_wordpiece_encode(t, "[SEP][SEP][SEP]", 15, ids, 4) == 4);
	CHECK(ids[1] == sep && ids[2] == sep && ids[3] == sep);
	/* without the special tokens */
	CHECK(sg_wordpiece_tokens(t, "a b a", 5, ids, 2) == 2);
	CHECK(ids[0] == a && ids[1] == b);
	CHECK(sg_wordpiece_tokens(t, "a b a", 5, ids, 0) == 0);
	CHECK(sg_wordpiece_tokens(t, "a b a", 5, NULL, 0) == 0);
	/* bad arguments */
	CHECK_RC(sg_wordpiece_encode(t, "a", 1, ids, 1), SG_EINVAL);
	CHECK_RC(sg_wordpiece_encode(t, "a", 1, NULL, 4), SG_EINVAL);
	CHECK_RC(sg_wordpiece_encode(NULL, "a", 1, ids, 4), SG_EINVAL);
	CHECK_RC(sg_wordpiece_encode(t, NULL, 1, ids, 4), SG_EINVAL);
	CHECK_RC(sg_wordpiece_tokens(t, "a", 1, ids, -1), SG_EINVAL);
	sg_wordpiece_free(t);
}

/* Long texts: cut at max_len; one enormous word is a single [UNK]. */
static void test_long_text(void)
{
	sg_wordpiece_t *t = load_vocab(NULL);
	size_t n = 16u << 20;
	char *s = malloc(n);
	int32_t ids[8];
	if (t == NULL || s == NULL) {
		free(s);
		sg_wordpiece_free(t);
		return;
	}
	for (size_t i = 0; i < n; i++)
		s[i] = i % 3 == 2 ? ' ' : 'a';
	CHECK(sg_wordpiece_encode(t, s, n, ids, 8) == 8);
	CHECK(ids[1] == sg_wordpiece_id(t, "a") && ids[2] == sg_wordpiece_id(t, "##a"));
	/* one word of 16 MiB is one [UNK], counted without being kept */
	memset(s, 'a', n);
	CHECK(sg_wordpiece_encode(t, s, n, ids, 8) == 3);
	CHECK(ids[1] == sg_wordpiece_id(t, "[UNK]"));
	free(s);
	sg_wordpiece_free(t);
}

static void test_json(void)
{
	char p[512], err[256];
	sg_wordpiece_t *t = NULL;

	path_of(p, sizeof(p), "tokenizer.json");
	write_json("tokenizer.json", NULL, NULL, NULL, NULL, NULL, NULL);
	CHECK_RC(sg_wordpiece_load_json(&t, p, err, sizeof(err)), 0);
	if (t == NULL) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	CHECK(sg_wordpiece_vocab_size(t) == 104 + (int)SG_ARRAY_SIZE(vocab));
	CHECK(sg_wordpiece_opts(t)->lowercase == 1 && sg_wordpiece_opts(t)->strip_accents == -1);
	expect(t, "Hello [SEP] WORLD unaffable Café 日本", "hello [SEP] world unaff ##able cafe 日 本");
	sg_wordpiece_free(t);

	/* BertProcessing, a Sequence normaliser, the pre-tokeniser as a
	 * Sequence, no added tokens (so "[SEP]" is text) */
	write_json("tokenizer.json", NULL,
	           "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"BertNormalizer\", "
	           "\"clean_text\": true, \"handle_chinese_chars\": true, \"strip_accents\": false, "
	           "\"lowercase\": false}]}",
	           "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"WhitespaceSplit\"}, "
	           "{\"type\": \"Punctuation\", \"behavior\": \"Isolated\"}]}",
	           "{\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 102], \"cls\": [\"[CLS]\", 101]}",
	           "-", NULL);
	CHECK_RC(sg_wordpiece_load_json(&t, p, err, sizeof(err)), 0);
	if (t) {
		CHECK(sg_wordpiece_opts(t)->lowercase == 0 && sg_wordpiece_opts(t)->strip_accents == 0);
		expect(t, "Café [SEP]", "Café [ [UNK] ]");
		sg_wordpiece_free(t);
	}
	/* no normaliser at all */
	write_json("tokenizer.json", NULL, "null", NULL, NULL, NULL, NULL);
	CHECK_RC(sg_wordpiece_load_json(&t, p, err, sizeof(err)), 0);
	if (t) {
		CHECK(sg_wordpiece_opts(t)->clean_text == 0 && sg_wordpiece_opts(t)->lowercase == 0);
		expect(t, "Hello\x01", "[UNK]");
		sg_wordpiece_free(t);
	}
	/* another prefix and word limit; [MASK] with lstrip/rstrip (which change
	 * no id) the only added token */
	{
		char members[16384];
		size_t n = vocab_json(members, sizeof(members));
		snprintf(members + n, sizeof(members) - n, ", \"@@b\": %zu", 104 + SG_ARRAY_SIZE(vocab));
		write_json("tokenizer.json", "{\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", "
		           "\"continuing_subword_prefix\": \"@@\", \"max_input_chars_per_word\": 3,",
		           NULL, NULL, NULL,
		           "[{\"id\": 103, \"content\": \"[MASK]\", \"lstrip\": true, \"rstrip\": true, "
		           "\"normalized\": false, \"special\": true, \"single_word\": false}]", members);
	}
	CHECK_RC(sg_wordpiece_load_json(&t, p, err, sizeof(err)), 0);
	if (t) {
		CHECK_STR(sg_wordpiece_opts(t)->prefix, "@@");
		expect(t, "abb ab abbb", "ab @@b ab [UNK]");
		expect(t, "a [MASK] b [SEP]", "a [MASK] b [ sep ]");
		sg_wordpiece_free(t);
	}
}

/* Each malformed tokenizer.json or vocab.txt: the code, and a message naming
 * the file and the problem. */
static void refused_json(const char *what, int want, const char *needle)
{
	char p[512], err[512] = "";
	sg_wordpiece_t *t = (sg_wordpiece_t *)1;

	path_of(p, sizeof(p), "bad.json");
	CHECK_RC(sg_wordpiece_load_json(&t, p, err, sizeof(err)), want);
	CHECK(t == NULL);
	CHECK_MSG(strstr(err, p) != NULL && strstr(err, needle) != NULL,
	          "%s: message \"%s\" lacks the path or \"%s\"", what, err, needle);
}

static void refused_vocab(const char *what, const sg_wordpiece_opts_t *o, int want,
                          const char *needle)
{
	char p[512], err[512] = "";
	sg_wordpiece_t *t = (sg_wordpiece_t *)1;

	path_of(p, sizeof(p), "bad.txt");
	CHECK_RC(sg_wordpiece_load_vocab(&t, p, o, err, sizeof(err)), want);
	CHECK(t == NULL);
	CHECK_MSG(strstr(err, p) != NULL && strstr(err, needle) != NULL,
	          "%s: message \"%s\" lacks the path or \"%s\"", what, err, needle);
}

static void test_bad_vocab(void)
{
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	char *big;

	refused_vocab("missing", NULL, SG_EIO, "No such file");
	{
		char p[512];
		path_of(p, sizeof(p), "bad.txt");
		mkdir(p, 0700);
		refused_vocab("a directory", NULL, SG_EIO, "not a regular file");
		rmdir(p);
	}
	write_str("bad.txt", "");
	refused_vocab("empty", NULL, SG_ECORRUPT, "empty vocabulary");
	write_str("bad.txt", "[CLS]\n[SEP]\na\n");
	refused_vocab("no [UNK]", NULL, SG_ECORRUPT, "no [UNK] token");
	write_str("bad.txt", "[UNK]\n[SEP]\na\n");
	refused_vocab("no [CLS]", NULL, SG_ECORRUPT, "no [CLS] token");
	write_str("bad.txt", "[UNK]\n[CLS]\na");
	refused_vocab("no [SEP]", NULL, SG_ECORRUPT, "no [SEP] token");
	write_str("bad.txt", "[UNK]\n[CLS]\n[SEP]\na\xff\n");
	refused_vocab("not UTF-8", NULL, SG_ECORRUPT, "line 4: not UTF-8");
	write_file("bad.txt", "[UNK]\n[CLS]\n[SEP]\na\0b\n", 22);
	refused_vocab("NUL", NULL, SG_ECORRUPT, "line 4: NUL byte");
	big = malloc(2000);
	if (big) {
		memcpy(big, "[UNK]\n[CLS]\n[SEP]\n", 18);
		memset(big + 18, 'x', 1500);
		write_file("bad.txt", big, 1518);
		refused_vocab("long token", NULL, SG_ECORRUPT, "line 4: token longer than");
		free(big);
	}
	/* bad settings */
	write_str("bad.txt", "[UNK]\n[CLS]\n[SEP]\n");
	o.max_chars_per_word = 5000;
	refused_vocab("max_chars", &o, SG_EINVAL, "max_chars_per_word 5000");
	o = sg_wordpiece_opts_default();
	o.unk[0] = '\0';
	refused_vocab("empty unk", &o, SG_EINVAL, "special token");
	o = sg_wordpiece_opts_default();
	memset(o.sep, 'x', sizeof(o.sep));
	refused_vocab("unterminated sep", &o, SG_EINVAL, "NUL-terminated");
	o = sg_wordpiece_opts_default();
	o.strip_accents = 7;
	refused_vocab("strip_accents", &o, SG_EINVAL, "strip_accents");
	/* CRLF lines and trailing spaces are trimmed, a last line needs no \n,
	 * a later duplicate wins (as in the reference) */
	write_str("bad.txt", "[UNK] \r\n[CLS]\r\n[SEP]\t\nx\nx");
	{
		char p[512], err[256];
		sg_wordpiece_t *t = NULL;
		path_of(p, sizeof(p), "bad.txt");
		CHECK_RC(sg_wordpiece_load_vocab(&t, p, NULL, err, sizeof(err)), 0);
		CHECK(sg_wordpiece_vocab_size(t) == 5);
		CHECK(sg_wordpiece_id(t, "[UNK]") == 0 && sg_wordpiece_id(t, "[SEP]") == 2);
		CHECK(sg_wordpiece_id(t, "x") == 4);
		CHECK_STR(sg_wordpiece_token(t, 3), "x");
		sg_wordpiece_free(t);
	}
	CHECK_RC(sg_wordpiece_load_vocab(NULL, "x", NULL, NULL, 0), SG_EINVAL);
}

static void test_bad_json(void)
{
	char members[16384];
	size_t n;

	refused_json("missing", SG_EIO, "No such file");
	write_str("bad.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0");
	refused_json("truncated", SG_ECORRUPT, "line 1");
	write_str("bad.json", "[1, 2]");
	refused_json("an array", SG_ECORRUPT, "not a JSON object");
	write_str("bad.json", "");
	refused_json("empty", SG_ECORRUPT, "line");
	{
		/* nesting deeper than jansson's parser allows */
		char deep[6001];
		memset(deep, '[', 6000);
		deep[6000] = '\0';
		write_file("bad.json", deep, 6000);
		refused_json("deep", SG_ECORRUPT, "line 1");
	}
	write_json("bad.json", "-", NULL, NULL, NULL, NULL, NULL);
	refused_json("no model", SG_ECORRUPT, "model: missing");
	write_json("bad.json", "{\"type\": \"BPE\", \"merges\": [],", NULL, NULL, NULL, NULL, NULL);
	refused_json("BPE", SG_EINVAL, "\"BPE\" is not supported");
	write_json("bad.json", "{\"type\": \"Unigram\",", NULL, NULL, NULL, NULL, NULL);
	refused_json("Unigram", SG_EINVAL, "\"Unigram\" is not supported");
	write_json("bad.json", "{\"unk_token\": \"[UNK]\", \"continuing_subword_prefix\": \"##\", "
	           "\"max_input_chars_per_word\": 100,", NULL, NULL, NULL, NULL, NULL);
	refused_json("untyped model", SG_EINVAL, "model.type");
	write_json("bad.json", "{\"type\": \"WordPiece\", \"continuing_subword_prefix\": \"##\", "
	           "\"max_input_chars_per_word\": 100,", NULL, NULL, NULL, NULL, NULL);
	refused_json("no unk_token", SG_ECORRUPT, "model.unk_token: missing");
	write_json("bad.json", "{\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", "
	           "\"continuing_subword_prefix\": \"##\", \"max_input_chars_per_word\": -1,",
	           NULL, NULL, NULL, NULL, NULL);
	refused_json("max chars", SG_EINVAL, "max_input_chars_per_word");
	write_json("bad.json", "{\"type\": \"WordPiece\", \"unk_token\": \"[NOPE]\", "
	           "\"continuing_subword_prefix\": \"##\", \"max_input_chars_per_word\": 100,",
	           NULL, NULL, NULL, NULL, NULL);
	refused_json("unk not in vocab", SG_ECORRUPT, "no [NOPE] token");
	write_json("bad.json", NULL, NULL, NULL, NULL, NULL, "");
	refused_json("empty vocab", SG_ECORRUPT, "empty vocabulary");
	n = vocab_json(members, sizeof(members));
	snprintf(members + n, sizeof(members) - n, ", \"zz\": 100000");
	write_json("bad.json", NULL, NULL, NULL, NULL, NULL, members);
	refused_json("id out of range", SG_ECORRUPT, "\"zz\": id 100000 is outside");
	snprintf(members + n, sizeof(members) - n, ", \"zz\": 5");
	write_json("bad.json", NULL, NULL, NULL, NULL, NULL, members);
	refused_json("id twice", SG_ECORRUPT, "is given twice");
	snprintf(members + n, sizeof(members) - n, ", \"zz\": \"x\"");
	write_json("bad.json", NULL, NULL, NULL, NULL, NULL, members);
	refused_json("id not a number", SG_ECORRUPT, "not an integer");
	snprintf(members + n, sizeof(members) - n, ", \"a\": %zu", 104 + SG_ARRAY_SIZE(vocab));
	write_json("bad.json", NULL, NULL, NULL, NULL, NULL, members);
	refused_json("key twice", SG_ECORRUPT, "duplicate");
	write_json("bad.json", NULL, "{\"type\": \"NFKC\"}", NULL, NULL, NULL, NULL);
	refused_json("NFKC", SG_EINVAL, "\"NFKC\" is not supported");
	write_json("bad.json", NULL, "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFD\"}, "
	           "{\"type\": \"Lowercase\"}]}", NULL, NULL, NULL, NULL);
	refused_json("normaliser sequence", SG_EINVAL, "Sequence of 2");
	write_json("bad.json", NULL, "{\"type\": \"BertNormalizer\", \"handle_chinese_chars\": true, "
	           "\"lowercase\": true}", NULL, NULL, NULL, NULL);
	refused_json("no clean_text", SG_ECORRUPT, "normalizer.clean_text: missing");
	write_json("bad.json", NULL, "{\"type\": \"BertNormalizer\", \"clean_text\": 1, "
	           "\"handle_chinese_chars\": true, \"lowercase\": true}", NULL, NULL, NULL, NULL);
	refused_json("clean_text not bool", SG_ECORRUPT, "not a boolean");
	write_json("bad.json", NULL, "7", NULL, NULL, NULL, NULL);
	refused_json("normaliser not an object", SG_ECORRUPT, "normalizer");
	write_json("bad.json", NULL, NULL, "{\"type\": \"Whitespace\"}", NULL, NULL, NULL);
	refused_json("Whitespace", SG_EINVAL, "\"Whitespace\" is not supported");
	write_json("bad.json", NULL, NULL, "null", NULL, NULL, NULL);
	refused_json("no pre-tokenizer", SG_EINVAL, "pre_tokenizer: none");
	write_json("bad.json", NULL, NULL, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
	           "\"WhitespaceSplit\"}, {\"type\": \"Punctuation\", \"behavior\": \"Removed\"}]}",
	           NULL, NULL, NULL);
	refused_json("punctuation removed", SG_EINVAL, "Sequence is not supported");
	write_json("bad.json", NULL, NULL, NULL, "{\"type\": \"RobertaProcessing\"}", NULL, NULL);
	refused_json("Roberta", SG_EINVAL, "\"RobertaProcessing\" is not supported");
	write_json("bad.json", NULL, NULL, NULL, "null", NULL, NULL);
	refused_json("no post-processor", SG_EINVAL, "post_processor: none");
	write_json("bad.json", NULL, NULL, NULL, "{\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", "
	           "5000], \"cls\": [\"[CLS]\", 101]}", NULL, NULL);
	refused_json("sep id", SG_ECORRUPT, "sep id 5000");
	write_json("bad.json", NULL, NULL, NULL, "{\"type\": \"TemplateProcessing\", \"single\": "
	           "[{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {}}",
	           NULL, NULL);
	refused_json("template", SG_EINVAL, "not the template");
	write_json("bad.json", NULL, NULL, NULL, NULL,
	           "[{\"id\": 103, \"content\": \"[MASK]\", \"single_word\": true, \"lstrip\": false, "
	           "\"rstrip\": false, \"normalized\": false, \"special\": true}]", NULL);
	refused_json("single_word", SG_EINVAL, "is single_word");
	write_json("bad.json", NULL, NULL, NULL, NULL,
	           "[{\"id\": 114, \"content\": \"hello\", \"special\": false}]", NULL);
	refused_json("normalized", SG_EINVAL, "is normalized");
	write_json("bad.json", NULL, NULL, NULL, NULL,
	           "[{\"id\": 7, \"content\": \"[MASK]\", \"normalized\": false}]", NULL);
	refused_json("added id", SG_EINVAL, "is not that token");
	write_json("bad.json", NULL, NULL, NULL, NULL,
	           "[{\"id\": 5000, \"content\": \"[NEW]\", \"normalized\": false}]", NULL);
	refused_json("added not in vocab", SG_EINVAL, "is not that token");
	write_json("bad.json", NULL, NULL, NULL, NULL, "{}", NULL);
	refused_json("added not an array", SG_ECORRUPT, "added_tokens: not an array");
	CHECK_RC(sg_wordpiece_load_json(NULL, "x", NULL, 0), SG_EINVAL);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(root, sizeof(root), "%s/sg_wordpiece_test_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	write_vocab("vocab.txt");
	test_defaults();
	test_lookups();
	test_greedy();
	test_punctuation_and_space();
	test_normaliser();
	test_mark_order();
	test_invalid_utf8();
	test_added_tokens();
	test_truncation();
	test_long_text();
	test_json();
	test_bad_vocab();
	test_bad_json();
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	CHECK_DONE();
}
