/* The `static` embedder: a table of token vectors distilled from a sentence
 * encoder (Model2Vec's recipe; `semgate --distill-static`, src/cli/distill.c),
 * so that a prompt is embedded in microseconds, in line on the loop, with
 * the semantics the encoder put into each token.
 *
 * The table is a directory:
 *   embeddings.safetensors   F32 tensor "embeddings" [rows, dim]: row i is
 *                            token i's vector (zero for tokens never used)
 *   tokenizer.json | vocab.txt (+ tokenizer_config.json)
 *                            the source model's WordPiece tokenizer
 * A text's vector is the sum of its tokens' rows (no [CLS] / [SEP], the
 * first MAX_TOKENS tokens), L2-normalised: the mean of the rows has the same
 * direction. The rows carry their own weight (the distiller scaled them by
 * token rarity), so frequent tokens count less without any work here.
 *
 * The table is used in place from a read-only mapping of the file, shared by
 * every process that maps it; it is checked once at load (dtype, shape,
 * every value finite). After loading nothing is written but two counters, so
 * any thread may embed; a call allocates nothing (a 2 KiB stack buffer of
 * token ids; the vector is summed in req->out).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "semgate/embed.h"
#include "semgate/hash.h"
#include "semgate/wordpiece.h"
#include "embed_int.h"
#include "safetensors_int.h"

#define TABLE_FILE "embeddings.safetensors"
#define TABLE_TENSOR "embeddings"
#define MAX_TOKENS 512        /* tokens of a text that count; the rest is cut */
#define MIN_DIM 16
#define MAX_DIM 4096
#define MAX_ROWS (1 << 24)    /* far above any WordPiece vocabulary */
#define MAX_SMALL_FILE (64u << 20) /* tokenizer files */

typedef struct static_embedder {
	sg_embedder_t base;
	sg_wordpiece_t *tok;      /* the source model's tokenizer */
	const float *table;       /* [rows, dim]: into the mapping, or `owned` */
	float *owned;             /* an aligned copy when the file's data is not */
	int rows;                 /* table rows (>= the tokenizer's vocabulary) */
	float *empty;             /* dim floats: the vector of a text without tokens */
	uint8_t *map;             /* the mapped table file */
	size_t map_len;           /* its size */
	uint64_t embedded;        /* texts embedded (atomic) */
	uint64_t failures;        /* texts refused (atomic) */
} static_embedder_t;

/* --- embedding ---------------------------------------------------------------- */

/* acc += row, eight at a time: written so that -O2 (GCC's "very cheap"
 * vectoriser, which skips loops of unknown length) still makes it SIMD; the
 * sum is most of an embedding's time after the tokenizer. */
static void add_row(float *restrict acc, const float *restrict row, int dim)
{
	int j = 0;
	for (; j + 8 <= dim; j += 8)
		for (int k = 0; k < 8; k++)
			acc[j + k] += row[j + k];
	for (; j < dim; j++)
		acc[j] += row[j];
}

static int static_start(sg_embedder_t *e, sg_embed_req_t *req, const char *text, size_t len)
{
	static_embedder_t *se = (static_embedder_t *)e;
	int32_t ids[MAX_TOKENS];
	int dim = se->base.dim, n;
	float *out = req->out;
	double ss = 0;

	n = sg_wordpiece_tokens(se->tok, text, len, ids, MAX_TOKENS);
	if (n < 0) {
		__atomic_fetch_add(&se->failures, 1, __ATOMIC_RELAXED);
		return n;
	}
	memset(out, 0, sizeof(float) * (size_t)dim);
	for (int i = 0; i < n; i++) {
		/* the load checked that every id the tokenizer makes has a row */
		assert(ids[i] >= 0 && ids[i] < se->rows);
		add_row(out, se->table + (size_t)ids[i] * (size_t)dim, dim);
	}
	for (int j = 0; j < dim; j++)
		ss += (double)out[j] * out[j];
	if (ss > 0 && isfinite(ss)) {
		float inv = (float)(1.0 / sqrt(ss));
		for (int j = 0; j < dim; j++)
			out[j] *= inv;
	} else {
		/* no tokens, or only tokens without a vector ([UNK], [CLS]...) */
		memcpy(out, se->empty, sizeof(float) * (size_t)dim);
	}
	__atomic_fetch_add(&se->embedded, 1, __ATOMIC_RELAXED);
	return 0;
}

static void static_stats(const sg_embedder_t *e, sg_embed_stats_t *out)
{
	const static_embedder_t *se = (const static_embedder_t *)e;
	memset(out, 0, sizeof(*out));
	out->embedded = __atomic_load_n(&se->embedded, __ATOMIC_RELAXED);
	out->failures = __atomic_load_n(&se->failures, __ATOMIC_RELAXED);
}

static void static_free(sg_embedder_t *e)
{
	static_embedder_t *se = (static_embedder_t *)e;
	if (se == NULL)
		return;
	sg_wordpiece_free(se->tok);
	free(se->owned);
	free(se->empty);
	if (se->map)
		munmap(se->map, se->map_len);
	free(se);
}

static const sg_embedder_ops_t static_ops = {
	"static", static_start, NULL, static_stats, NULL, static_free,
};

/* --- loading -------------------------------------------------------------------- */

static int is_file(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Mix a small file's bytes into *hash (the identity covers the tokenizer:
 * the same table under another vocabulary means other vectors). */
static int hash_file(const char *path, uint64_t *hash, char *err, size_t errlen)
{
	struct stat sb;
	char *buf = NULL;
	FILE *f = fopen(path, "rb");
	int rc = 0;

	if (f == NULL || fstat(fileno(f), &sb) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = SG_EIO;
		goto out;
	}
	if (sb.st_size > (off_t)MAX_SMALL_FILE) {
		snprintf(err, errlen, "%s: larger than %u MiB", path, MAX_SMALL_FILE >> 20);
		rc = SG_ECORRUPT;
		goto out;
	}
	if ((buf = malloc((size_t)sb.st_size + 1)) == NULL) {
		rc = SG_ENOMEM;
		goto out;
	}
	if (fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
		snprintf(err, errlen, "%s: read error", path);
		rc = SG_EIO;
		goto out;
	}
	*hash = sg_hash64(buf, (size_t)sb.st_size, *hash);
out:
	free(buf);
	if (f)
		fclose(f);
	return rc;
}

/* The tokenizer the table was distilled with: tokenizer.json, or vocab.txt
 * with the settings of tokenizer_config.json (as the encoder reads them). */
static int load_tokenizer(static_embedder_t *se, const char *dir, uint64_t *hash, char *err,
                          size_t errlen)
{
	char p[4096];
	int rc;

	snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
	if (is_file(p)) {
		if ((rc = sg_wordpiece_load_json(&se->tok, p, err, errlen)))
			return rc;
		return hash_file(p, hash, err, errlen);
	}
	snprintf(p, sizeof(p), "%s/vocab.txt", dir);
	if (!is_file(p)) {
		snprintf(err, errlen, "%s: no tokenizer.json or vocab.txt (the tokenizer of the "
		         "model the table was distilled from)", dir);
		return SG_EIO;
	}
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
	if (is_file(p)) {
		json_error_t jerr;
		json_t *tc = json_load_file(p, JSON_REJECT_DUPLICATES, &jerr), *v;
		if (!json_is_object(tc)) {
			snprintf(err, errlen, "%s: line %d: %s", p, jerr.line,
			         tc ? "not a JSON object" : jerr.text);
			json_decref(tc);
			return SG_ECORRUPT;
		}
		if ((v = json_object_get(tc, "do_lower_case")) && json_is_boolean(v))
			o.lowercase = json_is_true(v);
		if ((v = json_object_get(tc, "strip_accents")) && json_is_boolean(v))
			o.strip_accents = json_is_true(v);
		if ((v = json_object_get(tc, "tokenize_chinese_chars")) && json_is_boolean(v))
			o.handle_chinese = json_is_true(v);
		json_decref(tc);
		if ((rc = hash_file(p, hash, err, errlen)))
			return rc;
	}
	snprintf(p, sizeof(p), "%s/vocab.txt", dir);
	if ((rc = sg_wordpiece_load_vocab(&se->tok, p, &o, err, errlen)))
		return rc;
	return hash_file(p, hash, err, errlen);
}

/* The model the table came from, as the distiller recorded it (for the log
 * line only; "" when absent). */
static void source_of(const uint8_t *map, size_t len, char *out, size_t n)
{
	uint64_t hlen = 0;
	json_t *root;
	const char *s;

	out[0] = '\0';
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | map[i];
	if (hlen > len - 8) /* parsed already: cannot happen */
		return;
	root = json_loadb((const char *)map + 8, (size_t)hlen, 0, NULL);
	s = json_string_value(json_object_get(json_object_get(root, "__metadata__"), "source"));
	if (s)
		snprintf(out, n, "%s", s);
	json_decref(root);
}

/* Map, parse and check the table; sets table, rows, dim. */
static int load_table(static_embedder_t *se, const char *path, char *err, size_t errlen)
{
	sg_st_t st = {0};
	const sg_st_tensor_t *t;
	int rc = 0;

	if ((rc = sg__st_map(path, &se->map, &se->map_len, &st, err, errlen)))
		return rc;
	if ((t = sg__st_find(&st, TABLE_TENSOR)) == NULL) {
		snprintf(err, errlen, "%s: no tensor \"" TABLE_TENSOR "\" (not a table made by "
		         "semgate --distill-static?)", path);
		rc = SG_ECORRUPT;
		goto out;
	}
	if (t->dtype != SG_ST_F32) {
		snprintf(err, errlen, "%s: tensor \"" TABLE_TENSOR "\" is %s, want F32", path,
		         t->dtype_name);
		rc = SG_EINVAL;
		goto out;
	}
	if (t->rank != 2 || t->shape[0] < 1 || t->shape[0] > MAX_ROWS || t->shape[1] < MIN_DIM ||
	    t->shape[1] > MAX_DIM) {
		snprintf(err, errlen,
		         "%s: tensor \"" TABLE_TENSOR "\" must be [tokens, dim] with 1..%d tokens "
		         "and dim in %d..%d (rank %d%s)",
		         path, MAX_ROWS, MIN_DIM, MAX_DIM, t->rank,
		         t->rank == 2 ? ", a size out of range" : "");
		rc = SG_EINVAL;
		goto out;
	}
	se->rows = (int)t->shape[0];
	se->base.dim = (int)t->shape[1];
	/* safetensors does not promise alignment: a header whose length is not a
	 * multiple of 4 leaves the floats unaligned, so use a copy then */
	if ((uintptr_t)t->data % _Alignof(float) != 0) {
		if ((se->owned = malloc((size_t)t->nbytes)) == NULL) {
			rc = SG_ENOMEM;
			goto out;
		}
		memcpy(se->owned, t->data, (size_t)t->nbytes);
		se->table = se->owned;
	} else {
		se->table = (const float *)t->data;
	}
out:
	sg__st_free(&st);
	return rc;
}

/*
 * Check every value and choose the vector of a text without tokens: the unit
 * axis along which the rows have the least energy, so that an empty prompt
 * is as far as a fixed vector can be from every real one (a cache must not
 * answer "" with the answer to a question).
 */
static int check_values(static_embedder_t *se, const char *path, char *err, size_t errlen)
{
	int dim = se->base.dim, least = 0;
	double *energy = calloc((size_t)dim, sizeof(double)), total = 0;

	se->empty = calloc((size_t)dim, sizeof(float));
	if (energy == NULL || se->empty == NULL) {
		free(energy);
		return SG_ENOMEM;
	}
	for (int r = 0; r < se->rows; r++) {
		const float *row = se->table + (size_t)r * (size_t)dim;
		for (int j = 0; j < dim; j++) {
			if (!isfinite(row[j])) {
				snprintf(err, errlen, "%s: tensor \"" TABLE_TENSOR "\": row %d has a "
				         "value that is not finite (NaN or infinity)", path, r);
				free(energy);
				return SG_ECORRUPT;
			}
			energy[j] += (double)row[j] * row[j];
		}
	}
	for (int j = 0; j < dim; j++) {
		total += energy[j];
		if (energy[j] < energy[least])
			least = j;
	}
	free(energy);
	if (!(total > 0) || !isfinite(total)) {
		snprintf(err, errlen, "%s: tensor \"" TABLE_TENSOR "\": %s", path,
		         total > 0 ? "values too large" : "every vector is zero");
		return SG_ECORRUPT;
	}
	se->empty[least] = 1.0f;
	return 0;
}

/* The directory's own name ("models/static-minilm/" -> "static-minilm"). */
static const char *base_name(const char *path, int *len)
{
	size_t end = strlen(path), start;

	while (end > 1 && path[end - 1] == '/')
		end--;
	start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	*len = (int)(end - start);
	return path + start;
}

int sg__embed_static_new(sg_embedder_t **out, const char *path, char *err, size_t errlen)
{
	static_embedder_t *se;
	struct stat sb;
	char table[4096], source[256], tmp[1];
	uint64_t hash;
	int rc;

	*out = NULL;
	if (err == NULL || errlen == 0) {
		err = tmp;
		errlen = sizeof(tmp);
	}
	err[0] = '\0';
	if (path == NULL || path[0] == '\0') {
		snprintf(err, errlen, "no table directory given");
		return SG_EINVAL;
	}
	if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "%s: %s (a directory made by semgate --distill-static)", path,
		         stat(path, &sb) ? strerror(errno) : "not a directory");
		return SG_EIO;
	}
	if ((se = calloc(1, sizeof(*se))) == NULL)
		return SG_ENOMEM;
	se->base.ops = &static_ops;
	snprintf(table, sizeof(table), "%s/" TABLE_FILE, path);
	if ((rc = load_table(se, table, err, errlen)))
		goto fail;
	hash = sg_hash64(se->map, se->map_len, 0x57a71c);
	if ((rc = load_tokenizer(se, path, &hash, err, errlen)))
		goto fail;
	if (sg_wordpiece_vocab_size(se->tok) > se->rows) {
		snprintf(err, errlen,
		         "%s: the table has %d rows but the tokenizer has %d tokens (made from "
		         "another model?)", table, se->rows, sg_wordpiece_vocab_size(se->tok));
		rc = SG_EINVAL;
		goto fail;
	}
	if ((rc = check_values(se, table, err, errlen)))
		goto fail;
	/* The check read every page. Hand them back (they stay in the page
	 * cache): the process then holds only the rows its prompts use. */
	if (se->owned == NULL)
		madvise(se->map, se->map_len, MADV_DONTNEED);

	int name_len;
	const char *name = base_name(path, &name_len);
	source_of(se->map, se->map_len, source, sizeof(source));
	/* the contents, not the directory's name: a table moved elsewhere still
	 * serves the cache it made */
	snprintf(se->base.id, sizeof(se->base.id), "static/1:%016llx:d%d:t%d",
	         (unsigned long long)hash, se->base.dim, MAX_TOKENS);
	snprintf(se->base.describe, sizeof(se->base.describe),
	         "static (distilled) %.*s: %d tokens x %d dimensions%s%.120s",
	         SG_MIN(name_len, 64), name, se->rows, se->base.dim, source[0] ? ", from " : "",
	         source);
	*out = &se->base;
	return 0;
fail:
	if (err[0] == '\0')
		snprintf(err, errlen, "%s: %s", path, sg_strerror(rc));
	static_free(&se->base);
	return rc;
}
