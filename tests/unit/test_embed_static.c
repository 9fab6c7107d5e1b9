/* Unit tests for the `static` embedder (cache/embed_static.c): tables and
 * vocabularies written here, byte by byte, into a temporary directory. */
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "semgate/config.h"
#include "semgate/embed.h"
#include "embed_int.h"

#define DIM 16
#define NVOCAB 13

static char root[256]; /* the test's temporary directory */

/* The tiny vocabulary: ids are line numbers. */
static const char *const vocab[NVOCAB] = {
	"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world",
	"cat",   "dog",   "the",   "##s",   "?",     "[unused0]",
};
enum { T_HELLO = 5, T_WORLD, T_CAT, T_DOG, T_THE, T_S, T_QUESTION };

/* The table: specials zero, the rest a fixed pattern. Column DIM - 1 is
 * tiny everywhere, so it is the axis of least energy: the vector of a text
 * without tokens. */
static float table[NVOCAB][DIM];

static void fill_table(void)
{
	memset(table, 0, sizeof(table));
	for (int id = T_HELLO; id <= T_QUESTION; id++)
		for (int j = 0; j < DIM; j++)
			table[id][j] = j == DIM - 1 ? 0.001f : sinf((float)(id * 7 + j * 3)) + 0.1f * id;
}

static void path_of(char *out, size_t n, const char *dir, const char *file)
{
	snprintf(out, n, "%s/%s/%s", root, dir, file);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	CHECK_MSG(f != NULL, "cannot write %s", path);
	if (f) {
		CHECK(fwrite(data, 1, n, f) == n);
		fclose(f);
	}
}

static void write_text(const char *dir, const char *file, const char *text)
{
	char p[512];
	path_of(p, sizeof(p), dir, file);
	write_bytes(p, text, strlen(text));
}

/* A safetensors file: one tensor `name` of `dtype` and `shape` (JSON),
 * data_offsets [0, nbytes], then `data`. pad: spaces after the JSON so the
 * header's length is pad modulo 8 (8: a multiple of 8, aligned floats). */
static void write_st(const char *dir, const char *name, const char *dtype, const char *shape,
                     const void *data, size_t nbytes, int pad)
{
	char header[1024], p[512];
	int n = snprintf(header, sizeof(header),
	                 "{\"__metadata__\":{\"source\":\"model/1:tiny\"},"
	                 "\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[0,%zu]}}",
	                 name, dtype, shape, nbytes);
	while (n % 8 != pad % 8)
		header[n++] = ' ';
	size_t total = 8 + (size_t)n + nbytes;
	unsigned char *buf = malloc(total);
	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(buf + 8, header, (size_t)n);
	memcpy(buf + 8 + n, data, nbytes);
	path_of(p, sizeof(p), dir, "embeddings.safetensors");
	write_bytes(p, buf, total);
	free(buf);
}

static void write_vocab(const char *dir, int n)
{
	char text[512] = "";
	for (int i = 0; i < n; i++) {
		strcat(text, vocab[i]);
		strcat(text, "\n");
	}
	write_text(dir, "vocab.txt", text);
	write_text(dir, "tokenizer_config.json", "{\"do_lower_case\": true}");
}

/* The vocabulary as a Hugging Face tokenizer.json (BERT's pipeline);
 * lowercase: the normaliser's setting. */
static void write_tokenizer_json(const char *dir, int lowercase)
{
	char buf[8192], special[1024] = "";
	size_t n = 0;

	for (int i = 0; i <= 4; i++)
		snprintf(special + strlen(special), sizeof(special) - strlen(special),
		         "%s{\"id\": %d, \"content\": \"%s\", \"single_word\": false, "
		         "\"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
		         "\"special\": true}", i ? ", " : "", i, vocab[i]);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n,
		"{\"version\": \"1.0\", \"truncation\": null, \"added_tokens\": [%s], "
		"\"normalizer\": {\"type\": \"BertNormalizer\", \"clean_text\": true, "
		"\"handle_chinese_chars\": true, \"strip_accents\": null, \"lowercase\": %s}, "
		"\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, "
		"\"post_processor\": {\"type\": \"BertProcessing\", \"sep\": [\"[SEP]\", 3], "
		"\"cls\": [\"[CLS]\", 2]}, "
		"\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", "
		"\"continuing_subword_prefix\": \"##\", \"max_input_chars_per_word\": 100, "
		"\"vocab\": {", special, lowercase ? "true" : "false");
	for (int i = 0; i < NVOCAB; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s\"%s\": %d", i ? ", " : "",
		                      vocab[i], i);
	snprintf(buf + n, sizeof(buf) - n, "}}}");
	write_text(dir, "tokenizer.json", buf);
}

/* A fresh table directory `dir` with the standard table and vocabulary. */
static void make_dir(const char *dir)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", root, dir);
	mkdir(p, 0755);
	write_vocab(dir, NVOCAB);
	write_st(dir, "embeddings", "F32", "[13,16]", table, sizeof(table), 0);
}

static sg_embedder_t *load(const char *dir, char *err, size_t errlen, int *rc)
{
	char p[512];
	sg_embedder_t *e = (sg_embedder_t *)0x1; /* must be reset on failure */
	snprintf(p, sizeof(p), "%s/%s", root, dir);
	*rc = sg__embed_static_new(&e, p, err, errlen);
	CHECK((*rc == 0) == (e != NULL));
	return e;
}

static int embed(sg_embedder_t *e, const char *text, size_t len, float *out)
{
	sg_embed_req_t req = {.out = out};
	return sg_embed_start(e, &req, text, len);
}

static int embed_str(sg_embedder_t *e, const char *text, float *out)
{
	return embed(e, text, strlen(text), out);
}

/* The normalised sum of table rows (ids; -1 ends). */
static void expected(const int *ids, float *out)
{
	double ss = 0;
	memset(out, 0, sizeof(float) * DIM);
	for (; *ids >= 0; ids++)
		for (int j = 0; j < DIM; j++)
			out[j] += table[*ids][j];
	for (int j = 0; j < DIM; j++)
		ss += (double)out[j] * out[j];
	for (int j = 0; j < DIM; j++)
		out[j] = (float)(out[j] / sqrt(ss));
}

static int near(const float *a, const float *b)
{
	for (int j = 0; j < DIM; j++)
		if (fabsf(a[j] - b[j]) > 1e-5f)
			return 0;
	return 1;
}

static int is_unit(const float *v)
{
	double ss = 0;
	for (int j = 0; j < DIM; j++) {
		if (!isfinite(v[j]))
			return 0;
		ss += (double)v[j] * v[j];
	}
	return fabs(ss - 1) < 1e-5;
}

/* --- vectors ----------------------------------------------------------------- */

static void test_vectors(void)
{
	char err[1024];
	float v[DIM], want[DIM], empty[DIM] = {0};
	sg_embed_stats_t st;
	int rc;

	make_dir("ok");
	sg_embedder_t *e = load("ok", err, sizeof(err), &rc);
	CHECK_MSG(rc == 0, "load: %s", err);
	if (e == NULL)
		return;
	CHECK_STR(sg_embed_kind(e), "static");
	CHECK(sg_embed_dim(e) == DIM);
	CHECK(strncmp(sg_embed_id(e), "static/1:", 9) == 0);
	CHECK_CONTAINS(sg_embed_id(e), ":d16:");
	CHECK_CONTAINS(e->describe, "13 tokens x 16 dimensions");
	CHECK_CONTAINS(e->describe, "model/1:tiny"); /* the source, from the metadata */

	/* the normalised mean (= sum) of the tokens' rows, in line */
	CHECK_RC(embed_str(e, "hello world", v), 0);
	expected((int[]){T_HELLO, T_WORLD, -1}, want);
	CHECK(near(v, want));
	CHECK(is_unit(v));
	/* lower-cased; tokens without a row ([UNK] for "," and "!") add nothing */
	CHECK_RC(embed_str(e, "  Hello, WORLD!", v), 0);
	CHECK(near(v, want));
	/* a repeated token: its own direction */
	CHECK_RC(embed_str(e, "hello hello hello", v), 0);
	expected((int[]){T_HELLO, -1}, want);
	CHECK(near(v, want));
	/* word pieces: "cats" is cat ##s */
	CHECK_RC(embed_str(e, "cats?", v), 0);
	expected((int[]){T_CAT, T_S, T_QUESTION, -1}, want);
	CHECK(near(v, want));

	/* no token with a vector: the fixed unit vector on the least-used axis */
	empty[DIM - 1] = 1.0f;
	static const char *const nothing[] = {"", "   ", "zebra", "!!!", "\xff\xfe", "[PAD]"};
	for (size_t i = 0; i < SG_ARRAY_SIZE(nothing); i++) {
		CHECK_RC(embed_str(e, nothing[i], v), 0);
		CHECK_MSG(memcmp(v, empty, sizeof(v)) == 0, "text \"%s\"", nothing[i]);
	}
	CHECK_RC(embed(e, NULL, 0, v), 0);
	CHECK(memcmp(v, empty, sizeof(v)) == 0);
	/* NUL bytes are read (and dropped, as BERT's normaliser does), not an end */
	CHECK_RC(embed(e, "cat\0 dog", 8, v), 0);
	expected((int[]){T_CAT, T_DOG, -1}, want);
	CHECK(near(v, want));

	CHECK_RC(embed(e, NULL, 3, v), SG_EINVAL);
	sg_embed_stats(e, &st);
	CHECK(st.failures == 1);
	CHECK(st.embedded == 12);
	CHECK(st.batches == 0 && st.queue_depth == 0);
	sg_embed_free(e);
}

/* Only the first 512 tokens count: the work per text is bounded. */
static void test_token_cap(void)
{
	char err[1024];
	float v[DIM], want[DIM];
	size_t n = 600 * 6 + 16;
	char *text = malloc(n);
	int rc;

	sg_embedder_t *e = load("ok", err, sizeof(err), &rc);
	if (e == NULL || text == NULL)
		goto out;
	text[0] = '\0';
	for (int i = 0; i < 600; i++)
		strcat(text, "hello ");
	strcat(text, "world");
	CHECK_RC(embed_str(e, text, v), 0);
	expected((int[]){T_HELLO, -1}, want); /* "world" is token 601 */
	CHECK(near(v, want));
	memcpy(text, "world", 5); /* now the first token */
	CHECK_RC(embed_str(e, text, v), 0);
	CHECK(!near(v, want));
	CHECK(is_unit(v));
out:
	free(text);
	sg_embed_free(e);
}

/* --- identity and determinism ------------------------------------------------- */

static void test_identity(void)
{
	char err[1024], id[512], json_id[512] = "", p[512];
	float v[DIM], w[DIM], want[DIM];
	int rc;
	sg_embedder_t *a = load("ok", err, sizeof(err), &rc), *b, *c;

	if (a == NULL)
		return;
	snprintf(id, sizeof(id), "%s", sg_embed_id(a));
	/* the same files: the same id and the same bytes */
	b = load("ok", err, sizeof(err), &rc);
	CHECK(b && strcmp(sg_embed_id(b), id) == 0);
	CHECK_RC(embed_str(a, "the cat and the dog", v), 0);
	CHECK_RC(embed_str(b, "the cat and the dog", w), 0);
	CHECK(memcmp(v, w, sizeof(v)) == 0);
	sg_embed_free(b);

	/* the directory's name is not part of it: a moved table serves its cache */
	make_dir("ok-copy");
	b = load("ok-copy", err, sizeof(err), &rc);
	CHECK(b && strcmp(sg_embed_id(b), id) == 0);
	sg_embed_free(b);

	/* one value changed: another id */
	make_dir("changed");
	table[T_DOG][3] += 0.5f;
	write_st("changed", "embeddings", "F32", "[13,16]", table, sizeof(table), 0);
	fill_table();
	c = load("changed", err, sizeof(err), &rc);
	CHECK(c && strcmp(sg_embed_id(c), id) != 0);
	sg_embed_free(c);

	/* another dimension: another id, naming it */
	{
		static float wide[NVOCAB][32];
		for (int i = T_HELLO; i < NVOCAB; i++)
			for (int j = 0; j < 32; j++)
				wide[i][j] = (float)(i + j);
		make_dir("wide");
		write_st("wide", "embeddings", "F32", "[13,32]", wide, sizeof(wide), 0);
		c = load("wide", err, sizeof(err), &rc);
		CHECK_MSG(c != NULL, "%s", err);
		CHECK(c && sg_embed_dim(c) == 32 && strstr(sg_embed_id(c), ":d32:") != NULL);
		sg_embed_free(c);
	}

	/* the same table under another tokenizer: other vectors, another id */
	make_dir("retok");
	write_text("retok", "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nworld\nhello\ncat\n"
	                                 "dog\nthe\n##s\n?\n[unused0]\n");
	c = load("retok", err, sizeof(err), &rc);
	CHECK(c && strcmp(sg_embed_id(c), id) != 0);
	sg_embed_free(c);
	/* ... and so are its settings */
	make_dir("cased");
	write_text("cased", "tokenizer_config.json", "{\"do_lower_case\": false}");
	c = load("cased", err, sizeof(err), &rc);
	CHECK(c && strcmp(sg_embed_id(c), id) != 0);
	sg_embed_free(c);

	/* a tokenizer.json instead of vocab.txt: the same tokens, the same
	 * vectors; its contents are part of the identity too */
	make_dir("json");
	write_tokenizer_json("json", 1);
	path_of(p, sizeof(p), "json", "vocab.txt");
	unlink(p);
	c = load("json", err, sizeof(err), &rc);
	CHECK_MSG(c != NULL, "%s", err);
	if (c) {
		CHECK_RC(embed_str(c, "the cat and the dog", w), 0);
		CHECK(memcmp(v, w, sizeof(v)) == 0);
		snprintf(json_id, sizeof(json_id), "%s", sg_embed_id(c));
	}
	sg_embed_free(c);
	write_tokenizer_json("json", 0);
	c = load("json", err, sizeof(err), &rc);
	CHECK(c && strcmp(sg_embed_id(c), json_id) != 0);
	if (c) { /* cased now: "Hello" is not "hello" */
		CHECK_RC(embed_str(c, "Hello world", w), 0);
		expected((int[]){T_WORLD, -1}, want);
		CHECK(near(w, want));
	}
	sg_embed_free(c);

	/* a header whose length leaves the floats unaligned: copied, same vectors */
	make_dir("unaligned");
	write_st("unaligned", "embeddings", "F32", "[13,16]", table, sizeof(table), 2);
	c = load("unaligned", err, sizeof(err), &rc);
	CHECK_MSG(c != NULL, "%s", err);
	if (c) {
		CHECK_RC(embed_str(c, "the cat and the dog", w), 0);
		CHECK(memcmp(v, w, sizeof(v)) == 0);
	}
	sg_embed_free(c);
	sg_embed_free(a);
}

typedef struct worker_arg {
	sg_embedder_t *e;
	int mismatches;
} worker_arg_t;

static const char *const thread_texts[] = {
	"hello world", "the cats", "dog?", "", "world hello the cat", "zebra dogs",
};

static void *worker(void *p)
{
	worker_arg_t *a = p;
	float ref[SG_ARRAY_SIZE(thread_texts)][DIM], v[DIM];

	for (size_t i = 0; i < SG_ARRAY_SIZE(thread_texts); i++)
		embed_str(a->e, thread_texts[i], ref[i]);
	for (int r = 0; r < 2000; r++)
		for (size_t i = 0; i < SG_ARRAY_SIZE(thread_texts); i++)
			if (embed_str(a->e, thread_texts[i], v) != 0 || memcmp(v, ref[i], sizeof(v)))
				a->mismatches++;
	return NULL;
}

/* Any number of threads at once, with the single-thread result. */
static void test_threads(void)
{
	char err[1024];
	pthread_t th[4];
	worker_arg_t args[4];
	sg_embed_stats_t st;
	float v[DIM];
	int rc;
	sg_embedder_t *e = load("ok", err, sizeof(err), &rc);

	if (e == NULL)
		return;
	for (int i = 0; i < 4; i++) {
		args[i] = (worker_arg_t){e, 0};
		pthread_create(&th[i], NULL, worker, &args[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(args[i].mismatches == 0);
	}
	embed_str(e, "hello world", v);
	worker_arg_t one = {e, 0};
	worker(&one);
	CHECK(one.mismatches == 0);
	sg_embed_stats(e, &st);
	CHECK(st.embedded == 5 * (2000 + 1) * SG_ARRAY_SIZE(thread_texts) + 1);
	sg_embed_free(e);
}

/* --- refusals ------------------------------------------------------------------- */

/* dir fails to load with want, and the message names `file` and says `what`. */
static void refused(const char *dir, int want, const char *file, const char *what)
{
	char err[1024] = "";
	int rc;
	sg_embedder_t *e = load(dir, err, sizeof(err), &rc);

	CHECK_MSG(rc == want, "%s: rc %d (%s), want %d; %s", dir, rc, sg_strerror(rc), want, err);
	CHECK_MSG(e == NULL, "%s: an embedder came back", dir);
	CHECK_MSG(strstr(err, file) != NULL, "%s: \"%s\" does not name %s", dir, err, file);
	CHECK_MSG(strstr(err, what) != NULL, "%s: \"%s\" does not say \"%s\"", dir, err, what);
	sg_embed_free(e);
}

static void test_malformed(void)
{
	char p[512];
	float bad[NVOCAB][DIM];

	refused("missing", SG_EIO, "missing", "No such file");
	make_dir("file-not-dir");
	path_of(p, sizeof(p), "file-not-dir", "embeddings.safetensors");
	{
		char err[1024];
		sg_embedder_t *e;
		CHECK_RC(sg__embed_static_new(&e, p, err, sizeof(err)), SG_EIO);
		CHECK_CONTAINS(err, "not a directory");
	}

	make_dir("no-table");
	path_of(p, sizeof(p), "no-table", "embeddings.safetensors");
	unlink(p);
	refused("no-table", SG_EIO, "embeddings.safetensors", "No such file");

	make_dir("truncated");
	path_of(p, sizeof(p), "truncated", "embeddings.safetensors");
	CHECK(truncate(p, 8 + 100) == 0); /* inside the header */
	refused("truncated", SG_ECORRUPT, "embeddings.safetensors", "truncated");
	make_dir("truncated-data");
	path_of(p, sizeof(p), "truncated-data", "embeddings.safetensors");
	{
		struct stat sb;
		stat(p, &sb);
		CHECK(truncate(p, sb.st_size - 4) == 0); /* the last float */
	}
	refused("truncated-data", SG_ECORRUPT, "embeddings.safetensors", "data_offsets");

	make_dir("garbage");
	path_of(p, sizeof(p), "garbage", "embeddings.safetensors");
	write_bytes(p, "\x10\0\0\0\0\0\0\0{not json at all", 8 + 16);
	refused("garbage", SG_ECORRUPT, "embeddings.safetensors", "JSON");

	make_dir("f16");
	write_st("f16", "embeddings", "F16", "[13,16]", table, sizeof(table) / 2, 0);
	refused("f16", SG_EINVAL, "embeddings.safetensors", "F16, want F32");

	make_dir("rank1");
	write_st("rank1", "embeddings", "F32", "[208]", table, sizeof(table), 0);
	refused("rank1", SG_EINVAL, "embeddings.safetensors", "[tokens, dim]");
	make_dir("rank3");
	write_st("rank3", "embeddings", "F32", "[13,4,4]", table, sizeof(table), 0);
	refused("rank3", SG_EINVAL, "embeddings.safetensors", "[tokens, dim]");
	make_dir("dim8");
	write_st("dim8", "embeddings", "F32", "[26,8]", table, sizeof(table), 0);
	refused("dim8", SG_EINVAL, "embeddings.safetensors", "dim in 16..4096");

	make_dir("other-name");
	write_st("other-name", "weights", "F32", "[13,16]", table, sizeof(table), 0);
	refused("other-name", SG_ECORRUPT, "embeddings.safetensors", "no tensor \"embeddings\"");

	/* the tokenizer has tokens the table has no row for */
	make_dir("short");
	write_st("short", "embeddings", "F32", "[12,16]", table, sizeof(float) * 12 * DIM, 0);
	refused("short", SG_EINVAL, "embeddings.safetensors", "12 rows but the tokenizer has 13");
	/* the reverse is fine: rows no token uses */
	make_dir("long");
	write_vocab("long", NVOCAB - 1);
	{
		char err[1024];
		int rc;
		sg_embedder_t *e = load("long", err, sizeof(err), &rc);
		CHECK_MSG(rc == 0, "%s", err);
		sg_embed_free(e);
	}

	memcpy(bad, table, sizeof(bad));
	bad[T_CAT][5] = NAN;
	make_dir("nan");
	write_st("nan", "embeddings", "F32", "[13,16]", bad, sizeof(bad), 0);
	refused("nan", SG_ECORRUPT, "embeddings.safetensors", "row 7 has a value that is not finite");
	memcpy(bad, table, sizeof(bad));
	bad[NVOCAB - 1][DIM - 1] = -INFINITY;
	make_dir("inf");
	write_st("inf", "embeddings", "F32", "[13,16]", bad, sizeof(bad), 0);
	refused("inf", SG_ECORRUPT, "embeddings.safetensors", "not finite");
	memset(bad, 0, sizeof(bad));
	make_dir("zeros");
	write_st("zeros", "embeddings", "F32", "[13,16]", bad, sizeof(bad), 0);
	refused("zeros", SG_ECORRUPT, "embeddings.safetensors", "every vector is zero");

	make_dir("no-tokenizer");
	path_of(p, sizeof(p), "no-tokenizer", "vocab.txt");
	unlink(p);
	refused("no-tokenizer", SG_EIO, "no-tokenizer", "no tokenizer.json or vocab.txt");
	make_dir("bad-tokenizer-config");
	write_text("bad-tokenizer-config", "tokenizer_config.json", "{\"do_lower_case\": tru");
	refused("bad-tokenizer-config", SG_ECORRUPT, "tokenizer_config.json", "line 1");
	make_dir("bad-tokenizer-json");
	write_text("bad-tokenizer-json", "tokenizer.json", "{\"model\": {\"type\": \"BPE\"}}");
	refused("bad-tokenizer-json", SG_EINVAL, "tokenizer.json", "");
	make_dir("empty-vocab");
	write_text("empty-vocab", "vocab.txt", "");
	refused("empty-vocab", SG_ECORRUPT, "vocab.txt", "");
}

/* --- through the embedder interface's dispatch -------------------------------- */

static void test_config(void)
{
	sg_embedder_config_t cfg = {0};
	sg_embedder_t *e = NULL;
	char err[1200], desc[512], dir[512];

	snprintf(dir, sizeof(dir), "%s/ok", root);
	cfg.provider = "static";
	cfg.static_path = dir;
	CHECK_RC(sg_embed_new(&e, NULL, &cfg, err, sizeof(err)), 0);
	CHECK(e && strcmp(sg_embed_kind(e), "static") == 0);
	sg_embed_free(e);
	CHECK_RC(sg_embed_check(&cfg, err, sizeof(err), desc, sizeof(desc)), 0);
	CHECK_CONTAINS(desc, "static (distilled) ok: 13 tokens x 16 dimensions");

	snprintf(dir, sizeof(dir), "%s/nan", root);
	CHECK_RC(sg_embed_new(&e, NULL, &cfg, err, sizeof(err)), SG_ECORRUPT);
	CHECK(e == NULL);
	CHECK_CONTAINS(err, "cache.embedder (static): ");
	CHECK_CONTAINS(err, "nan/embeddings.safetensors");
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	remove(path);
	return 0;
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(root, sizeof(root), "%s/sg_static_test_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	fill_table();
	test_vectors();
	test_token_cap();
	test_identity();
	test_threads();
	test_malformed();
	test_config();
	nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	CHECK_DONE();
}
