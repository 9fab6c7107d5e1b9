/* semgate --distill-static: a static token-embedding table from a sentence
 * encoder, by Model2Vec's recipe (Tulkens and van Dongen, MinishLab, 2024):
 *
 *   1. every token of the vocabulary goes through the model on its own,
 *      as ids [SEP] t [CLS], and its sentence embedding (the model's
 *      pooling, normalised) is the token's vector; [unused*] and the special
 *      tokens ([PAD], [UNK], [CLS], [SEP], [MASK]: any "[...]") stay zero.
 *      The special tokens are swapped on purpose, as Model2Vec does: with
 *      all-MiniLM-L6-v2 this gives clearly better tables than [CLS] t [SEP]
 *      (bench/QUALITY.md); the encoder runs any ids it is given;
 *   2. PCA to N dimensions: centre, covariance (hidden x hidden), its
 *      eigenvectors (LAPACK dsyevd), project on the N largest;
 *   3. SIF weighting: token vectors are scaled by a / (a + p(t)), with p(t)
 *      estimated by Zipf's law from t's rank in the vocabulary order (BERT's
 *      WordPiece vocabulary is roughly in frequency order after the special
 *      and [unused] tokens), so that frequent tokens weigh less in a sum;
 *      a = 3e-4, the best of the values measured over both dev sets
 *      (bench/QUALITY.md, "Static (distilled) embedder").
 *
 * The `static` embedder (cache/embed_static.c) then embeds a text as the
 * normalised sum of its tokens' rows. Everything runs on one thread
 * (OpenBLAS in the caller's thread): the ~30,000 tokens of a 6-layer model
 * take about 25 s of CPU.
 *
 * The output is built in a staging directory beside OUT, loaded back with
 * the static embedder itself (so a table that is written is a table that
 * loads), and only then renamed to OUT. Any failure or SIGINT / SIGTERM
 * removes the staging directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>

#include "semgate/common.h"
#include "semgate/embed.h"
#include "semgate/encoder.h"
#include "semgate/wordpiece.h"
#include "embed_int.h" /* sg__embed_static_new: the output is loaded back */
#include "distill.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this writer copies floats as they are in memory"
#endif

#define RECIPE "semgate-static/2" /* changes with any step of the recipe (1: [CLS] t [SEP], a = 1e-4) */
#define TABLE_FILE "embeddings.safetensors" /* what cache/embed_static.c reads */
#define TABLE_TENSOR "embeddings"
#define BATCH 64
#define DEFAULT_DIM 256
#define DEFAULT_SIF 3e-4
#define MIN_DIM 16 /* the static embedder's bounds */
#define MAX_DIM 4096
#define MAX_COPY (64u << 20) /* a tokenizer file */

/* The tokenizer files the static embedder reads, copied from the model. */
static const char *const tokenizer_files[] = {
	"tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
};

static const char usage[] =
	"usage: semgate --distill-static MODEL_DIR OUT [--dim N] [--sif A] [--force]\n"
	"  MODEL_DIR  a BERT-family sentence encoder (e.g. models/all-minilm-l6-v2)\n"
	"  OUT        the table directory to write (e.g. models/static-minilm)\n"
	"  --dim N    dimensions kept by PCA (16..the model's; default 256)\n"
	"  --sif A    SIF weight a / (a + p(token)) (default 3e-4; 0: no weighting)\n"
	"  --force    replace an existing table directory OUT\n";

/* OpenBLAS's own knob (cblas.h of libopenblas-dev has it; declared here so
 * that a generic cblas.h also builds). */
void openblas_set_num_threads(int num_threads);

/* LAPACK (Debian's liblapack, linked for FAISS): eigenvalues and vectors of
 * a symmetric matrix, divide and conquer. Fortran passes the lengths of the
 * character arguments as hidden trailing arguments; gfortran-built LAPACK
 * expects them, so they are passed. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                    double *w, double *work, const int *lwork, int *iwork, const int *liwork,
                    int *info, size_t jobz_len, size_t uplo_len);

typedef struct distill {
	const char *model_dir;  /* the encoder's directory (argv) */
	const char *out;        /* the table directory to make (argv) */
	int dim;                /* dimensions after PCA */
	double sif;             /* SIF coefficient; 0: none */
	int force;              /* replace an existing OUT */
	char stage[PATH_MAX];   /* <OUT>.partial-<pid>/, removed at the end */
	char table[PATH_MAX + 8]; /* <stage>/table: becomes OUT */
	int staged;             /* stage exists and is ours to remove */
	sg_encoder_t *model;
	int vocab;              /* the tokenizer's tokens: the table's rows */
	int hidden;             /* the model's dimension */
	int n;                  /* tokens distilled (the rest stay zero) */
	int32_t *ids;           /* [n] their ids, in vocabulary order */
	float *x;               /* [n, hidden] their vectors; centred by pca() */
	float *proj;            /* [hidden, dim] the principal axes */
	double kept_variance;   /* share of the variance the axes keep */
	float *rows;            /* [vocab, dim] the table */
	char err[1024];         /* why it failed */
} distill_t;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int fail(distill_t *d, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(distill_t *d, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->err, sizeof(d->err), fmt, ap);
	va_end(ap);
	return rc;
}

/* --- 1. the tokens through the model ------------------------------------------ */

/* Special and placeholder tokens ([PAD], [unused17]...) get no vector: the
 * embedder's sum then ignores them, as Model2Vec drops them. */
static int is_special(const char *tok)
{
	size_t n = strlen(tok);
	return n >= 3 && tok[0] == '[' && tok[n - 1] == ']';
}

static int embed_tokens(distill_t *d)
{
	const sg_wordpiece_t *tok = sg_encoder_tokenizer(d->model);
	int32_t cls = sg_wordpiece_id(tok, sg_wordpiece_opts(tok)->cls);
	int32_t sep = sg_wordpiece_id(tok, sg_wordpiece_opts(tok)->sep);
	int32_t seqs[BATCH][3];
	const int32_t *rows[BATCH];
	int lens[BATCH];
	sg_encoder_ws_t *ws = NULL;
	int rc = 0;

	if (cls < 0 || sep < 0)
		return fail(d, SG_EINVAL, "%s: the tokenizer has no %s or %s token", d->model_dir,
		            sg_wordpiece_opts(tok)->cls, sg_wordpiece_opts(tok)->sep);
	if (sg_encoder_max_tokens(d->model) < 3)
		return fail(d, SG_EINVAL, "%s: the model takes fewer than 3 tokens", d->model_dir);
	d->ids = malloc(sizeof(*d->ids) * (size_t)d->vocab);
	for (int32_t id = 0; d->ids && id < d->vocab; id++) {
		const char *t = sg_wordpiece_token(tok, id);
		if (t && !is_special(t))
			d->ids[d->n++] = id;
	}
	if (d->ids == NULL)
		return fail(d, SG_ENOMEM, "out of memory");
	if (d->n <= d->dim)
		return fail(d, SG_EINVAL, "%s: %d ordinary tokens, not enough for %d dimensions",
		            d->model_dir, d->n, d->dim);
	d->x = malloc(sizeof(float) * (size_t)d->n * (size_t)d->hidden);
	ws = sg_encoder_ws_new(d->model, BATCH);
	if (d->x == NULL || ws == NULL) {
		rc = fail(d, SG_ENOMEM, "out of memory");
		goto out;
	}
	/* [SEP] t [CLS]: see the top of the file */
	for (int i = 0; i < BATCH; i++) {
		seqs[i][0] = sep;
		seqs[i][2] = cls;
		rows[i] = seqs[i];
		lens[i] = 3;
	}
	uint64_t t0 = sg_now_us(), last = t0;
	for (int b = 0; b < d->n; b += BATCH) {
		int nb = SG_MIN(BATCH, d->n - b);
		if (interrupted) {
			rc = fail(d, SG_ECANCELED, "interrupted");
			goto out;
		}
		for (int i = 0; i < nb; i++)
			seqs[i][1] = d->ids[b + i];
		if ((rc = sg_encoder_embed_ids(d->model, ws, rows, lens, nb,
		                               d->x + (size_t)b * d->hidden))) {
			rc = fail(d, rc, "%s: embedding tokens %d..%d: %s", d->model_dir, b, b + nb - 1,
			          sg_strerror(rc));
			goto out;
		}
		if (sg_now_us() - last > 5000000u) {
			last = sg_now_us();
			fprintf(stderr, "  %d of %d tokens (%.0f s)\n", b + nb, d->n,
			        (double)(last - t0) / 1e6);
		}
	}
	fprintf(stderr, "  %d tokens through the model in %.1f s\n", d->n,
	        (double)(sg_now_us() - t0) / 1e6);
out:
	sg_encoder_ws_free(ws);
	return rc;
}

/* --- 2. PCA ------------------------------------------------------------------- */

static int pca(distill_t *d)
{
	int H = d->hidden, n = d->n, lwork = -1, liwork = -1, info = 0, iw = 0;
	double *mean = calloc((size_t)H, sizeof(double)), *cov = NULL, *eig = NULL, *work = NULL;
	float *c32 = malloc(sizeof(float) * (size_t)H * (size_t)H);
	int *iwork = NULL;
	double wq = 0, total = 0, kept = 0;
	int rc = 0;

	cov = malloc(sizeof(double) * (size_t)H * (size_t)H);
	eig = malloc(sizeof(double) * (size_t)H);
	d->proj = malloc(sizeof(float) * (size_t)H * (size_t)d->dim);
	if (mean == NULL || c32 == NULL || cov == NULL || eig == NULL || d->proj == NULL) {
		rc = fail(d, SG_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++)
		for (int j = 0; j < H; j++)
			mean[j] += d->x[(size_t)i * H + j];
	for (int j = 0; j < H; j++)
		mean[j] /= n;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < H; j++)
			d->x[(size_t)i * H + j] -= (float)mean[j];
	/* covariance = Xc^T Xc / (n - 1): the upper triangle, then mirrored */
	cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, H, n, 1.0f / (float)(n - 1), d->x, H,
	            0.0f, c32, H);
	for (int i = 0; i < H; i++)
		for (int j = i; j < H; j++)
			cov[(size_t)i * H + j] = cov[(size_t)j * H + i] = c32[(size_t)i * H + j];

	/* the workspace query, then the decomposition (eigenvalues ascending,
	 * eigenvector k in column k: cov[k * H ...] as LAPACK is column-major
	 * and the matrix is symmetric) */
	dsyevd_("V", "U", &H, cov, &H, eig, &wq, &lwork, &iw, &liwork, &info, 1, 1);
	if (info != 0) {
		rc = fail(d, SG_EINVAL, "LAPACK dsyevd workspace query failed (info %d)", info);
		goto out;
	}
	lwork = (int)wq;
	liwork = iw;
	work = malloc(sizeof(double) * (size_t)lwork);
	iwork = malloc(sizeof(int) * (size_t)liwork);
	if (work == NULL || iwork == NULL) {
		rc = fail(d, SG_ENOMEM, "out of memory");
		goto out;
	}
	dsyevd_("V", "U", &H, cov, &H, eig, work, &lwork, iwork, &liwork, &info, 1, 1);
	if (info != 0) {
		rc = fail(d, SG_EINVAL, "LAPACK dsyevd failed (info %d): the model's token vectors "
		          "have no usable covariance", info);
		goto out;
	}
	for (int k = 0; k < H; k++)
		total += eig[k] > 0 ? eig[k] : 0;
	for (int c = 0; c < d->dim; c++) {
		const double *v = cov + (size_t)(H - 1 - c) * H; /* the c-th largest */
		int big = 0;
		for (int j = 1; j < H; j++)
			if (fabs(v[j]) > fabs(v[big]))
				big = j;
		/* an eigenvector's sign is arbitrary: fix it (largest entry
		 * positive) so that two LAPACKs write the same table */
		double s = v[big] < 0 ? -1.0 : 1.0;
		for (int j = 0; j < H; j++)
			d->proj[(size_t)j * d->dim + c] = (float)(s * v[j]);
		kept += eig[H - 1 - c] > 0 ? eig[H - 1 - c] : 0;
	}
	d->kept_variance = total > 0 ? kept / total : 0;
out:
	free(mean);
	free(c32);
	free(cov);
	free(eig);
	free(work);
	free(iwork);
	return rc;
}

/* --- 3. projection and weighting --------------------------------------------- */

static int make_rows(distill_t *d)
{
	float *y = malloc(sizeof(float) * (size_t)d->n * (size_t)d->dim);
	double z = 0;

	d->rows = calloc((size_t)d->vocab * (size_t)d->dim, sizeof(float));
	if (y == NULL || d->rows == NULL) {
		free(y);
		return fail(d, SG_ENOMEM, "out of memory");
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->n, d->dim, d->hidden, 1.0f, d->x,
	            d->hidden, d->proj, d->dim, 0.0f, y, d->dim);
	/* Zipf: p(rank r) = (1 / (r + 2)) / z over the distilled tokens in
	 * vocabulary order (Model2Vec's estimate; rank 0 gets 1/2, not 1, so the
	 * first token is not an outlier) */
	for (int r = 0; r < d->n; r++)
		z += 1.0 / (r + 2.0);
	for (int r = 0; r < d->n; r++) {
		double w = d->sif > 0 ? d->sif / (d->sif + 1.0 / (r + 2.0) / z) : 1.0;
		float *dst = d->rows + (size_t)d->ids[r] * d->dim;
		const float *src = y + (size_t)r * d->dim;
		for (int j = 0; j < d->dim; j++)
			dst[j] = (float)(src[j] * w);
	}
	free(y);
	return 0;
}

/* --- output ------------------------------------------------------------------- */

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* embeddings.safetensors: the 8-byte header length, the header (padded with
 * spaces to a multiple of 8, so that the floats are aligned in a mapping),
 * the rows. */
static int write_table(distill_t *d)
{
	char path[PATH_MAX + 32], num[32];
	size_t nbytes = sizeof(float) * (size_t)d->vocab * (size_t)d->dim;
	json_t *h = json_object(), *meta = json_object(), *t = json_object();
	char *hdr = NULL;
	int fd = -1, rc = 0;

	if (h == NULL || meta == NULL || t == NULL)
		goto nomem;
	json_object_set_new(meta, "format", json_string(RECIPE));
	json_object_set_new(meta, "source", json_string(sg_encoder_id(d->model)));
	json_object_set_new(meta, "source_describe", json_string(sg_encoder_describe(d->model)));
	snprintf(num, sizeof(num), "%d", d->dim);
	json_object_set_new(meta, "dim", json_string(num));
	snprintf(num, sizeof(num), "%d", d->n);
	json_object_set_new(meta, "tokens_distilled", json_string(num));
	snprintf(num, sizeof(num), "%g", d->sif);
	json_object_set_new(meta, "sif", json_string(num));
	snprintf(num, sizeof(num), "%.4f", d->kept_variance);
	json_object_set_new(meta, "pca_variance_kept", json_string(num));
	json_object_set_new(meta, "recipe", json_string(
		"each token alone as [SEP] t [CLS] through the model (its pooling, normalised); "
		"special and [unused] tokens zero; PCA; SIF a/(a+p), p by Zipf on the rank"));
	json_object_set_new(t, "dtype", json_string("F32"));
	json_object_set_new(t, "shape", json_pack("[II]", (json_int_t)d->vocab, (json_int_t)d->dim));
	json_object_set_new(t, "data_offsets", json_pack("[II]", (json_int_t)0, (json_int_t)nbytes));
	json_object_set_new(h, "__metadata__", meta);
	meta = NULL;
	json_object_set_new(h, TABLE_TENSOR, t);
	t = NULL;
	if ((hdr = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
		goto nomem;
	size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
	char *tmp = realloc(hdr, padded + 1);
	if (tmp == NULL)
		goto nomem;
	hdr = tmp;
	memset(hdr + hlen, ' ', padded - hlen);
	uint8_t len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));

	snprintf(path, sizeof(path), "%s/" TABLE_FILE, d->table);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0 ||
	    write_all(fd, len8, 8) || write_all(fd, hdr, padded) ||
	    write_all(fd, d->rows, nbytes) || fsync(fd) != 0) {
		rc = fail(d, SG_EIO, "%s: %s", path, strerror(errno));
		goto out;
	}
	goto out;
nomem:
	rc = fail(d, SG_ENOMEM, "out of memory");
out:
	if (fd >= 0 && close(fd) != 0 && rc == 0)
		rc = fail(d, SG_EIO, "%s: %s", path, strerror(errno));
	free(hdr);
	json_decref(h);
	json_decref(meta);
	json_decref(t);
	return rc;
}

/* Copy MODEL_DIR/name into the table directory, if the model has it. */
static int copy_file(distill_t *d, const char *name)
{
	char src[PATH_MAX + 64], dst[PATH_MAX + 64];
	struct stat sb;
	char *buf = NULL;
	int in = -1, out = -1, rc = 0;

	snprintf(src, sizeof(src), "%s/%s", d->model_dir, name);
	snprintf(dst, sizeof(dst), "%s/%s", d->table, name);
	if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : fail(d, SG_EIO, "%s: %s", src, strerror(errno));
	if (fstat(in, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size > (off_t)MAX_COPY) {
		rc = fail(d, SG_EIO, "%s: not a regular file of at most %u MiB", src, MAX_COPY >> 20);
		goto out;
	}
	if ((buf = malloc((size_t)sb.st_size + 1)) == NULL) {
		rc = fail(d, SG_ENOMEM, "out of memory");
		goto out;
	}
	ssize_t got = 0, r;
	while (got < sb.st_size && (r = read(in, buf + got, (size_t)(sb.st_size - got))) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = fail(d, SG_EIO, "%s: %s", src, strerror(errno));
			goto out;
		}
		got += r;
	}
	if ((out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0 ||
	    write_all(out, buf, (size_t)got) || fsync(out) != 0 || close(out) != 0) {
		out = -1;
		rc = fail(d, SG_EIO, "%s: %s", dst, strerror(errno));
		goto out;
	}
	out = -1;
out:
	if (out >= 0)
		close(out);
	close(in);
	free(buf);
	return rc;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		fprintf(stderr, "semgate: warning: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

/* rm -rf that never follows a symbolic link nor leaves the file system. */
static void remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* --force replaces a table directory, not whatever OUT happens to name. */
static int replaceable(distill_t *d)
{
	char p[PATH_MAX + 32];
	struct stat sb;

	if (lstat(d->out, &sb) != 0)
		return errno == ENOENT ? 0 : fail(d, SG_EIO, "%s: %s", d->out, strerror(errno));
	if (!d->force)
		return fail(d, SG_EEXIST, "%s exists (pass --force to replace it)", d->out);
	snprintf(p, sizeof(p), "%s/" TABLE_FILE, d->out);
	if (!S_ISDIR(sb.st_mode) || lstat(p, &sb) != 0)
		return fail(d, SG_EEXIST, "%s exists and is not a table directory (no " TABLE_FILE
		            "): not replacing it", d->out);
	return 0;
}

/* Rename the checked table to OUT; an old OUT swaps into the staging
 * directory in the same rename (or, where the file system cannot, moves
 * aside first) and goes with it. */
static int install(distill_t *d)
{
	char old[PATH_MAX + 16];
	int rc;

	if (renameat2(AT_FDCWD, d->table, AT_FDCWD, d->out, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EEXIST && errno != ENOTEMPTY && errno != EINVAL && errno != ENOSYS)
		return fail(d, SG_EIO, "cannot rename %s to %s: %s", d->table, d->out, strerror(errno));
	if ((rc = replaceable(d)))
		return rc;
	if (renameat2(AT_FDCWD, d->table, AT_FDCWD, d->out, RENAME_EXCHANGE) == 0)
		return 0;
	snprintf(old, sizeof(old), "%s/old", d->stage);
	if (access(d->out, F_OK) == 0 && rename(d->out, old) != 0)
		return fail(d, SG_EIO, "cannot move %s aside: %s", d->out, strerror(errno));
	if (rename(d->table, d->out) != 0) {
		int e = errno;
		if (access(old, F_OK) == 0 && rename(old, d->out) != 0) {
			fprintf(stderr, "semgate: cannot put %s back (%s): the old table is left in %s\n",
			        d->out, strerror(errno), old);
			d->staged = 0; /* it holds the only copy of the old table now */
		}
		return fail(d, SG_EIO, "cannot rename %s to %s: %s", d->table, d->out, strerror(e));
	}
	return 0;
}

/* --- the command ---------------------------------------------------------------- */

static int distill(distill_t *d)
{
	sg_encoder_opts_t mo = {.prefix = ""}; /* a token alone: no query prompt */
	sg_embedder_t *check = NULL;
	char why[1024];
	int rc;
	uint64_t t0 = sg_now_us();

	if ((rc = replaceable(d)))
		return rc;
	if ((rc = sg_encoder_load(&d->model, d->model_dir, &mo, why, sizeof(why))))
		return fail(d, rc, "%s", why);
	d->hidden = sg_encoder_dim(d->model);
	d->vocab = sg_wordpiece_vocab_size(sg_encoder_tokenizer(d->model));
	if (d->dim > d->hidden)
		return fail(d, SG_EINVAL, "--dim %d: the model has only %d dimensions", d->dim,
		            d->hidden);
	fprintf(stderr, "distilling %s (%s) into %s: %d dimensions, SIF %g\n", d->model_dir,
	        sg_encoder_describe(d->model), d->out, d->dim, d->sif);

	/* one thread: the batches are small, and set-up shares the machine */
	openblas_set_num_threads(1);
	if ((rc = embed_tokens(d)) || (rc = pca(d)) || (rc = make_rows(d)))
		return rc;
	fprintf(stderr, "  PCA to %d dimensions keeps %.1f%% of the variance\n", d->dim,
	        100 * d->kept_variance);

	if (interrupted)
		return fail(d, SG_ECANCELED, "interrupted");
	if ((size_t)snprintf(d->stage, sizeof(d->stage), "%s.partial-%ld", d->out,
	                     (long)getpid()) >= sizeof(d->stage))
		return fail(d, SG_EINVAL, "%s: path too long", d->out);
	snprintf(d->table, sizeof(d->table), "%s/table", d->stage);
	if (mkdir(d->stage, 0755) != 0)
		return fail(d, SG_EIO, "cannot create %s: %s", d->stage, strerror(errno));
	d->staged = 1;
	if (mkdir(d->table, 0755) != 0)
		return fail(d, SG_EIO, "cannot create %s: %s", d->table, strerror(errno));
	if ((rc = write_table(d)))
		return rc;
	for (size_t i = 0; i < SG_ARRAY_SIZE(tokenizer_files); i++)
		if ((rc = copy_file(d, tokenizer_files[i])))
			return rc;
	if ((rc = sg__embed_static_new(&check, d->table, why, sizeof(why))))
		return fail(d, rc, "the table written does not load: %s", why);
	sg_embed_free(check);
	if (interrupted)
		return fail(d, SG_ECANCELED, "interrupted");
	if ((rc = install(d)))
		return rc;
	fprintf(stderr, "distilled in %.1f s\n", (double)(sg_now_us() - t0) / 1e6);
	printf("static table %s ready (%d tokens x %d dimensions from %s)\n", d->out, d->vocab,
	       d->dim, sg_encoder_id(d->model));
	fflush(stdout);
	return 0;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

int sg_distill_main(int argc, char **argv)
{
	distill_t *d = calloc(1, sizeof(*d));
	struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
	int code = 2;

	if (d == NULL) {
		fprintf(stderr, "semgate: out of memory\n");
		return 1;
	}
	d->dim = DEFAULT_DIM;
	d->sif = DEFAULT_SIF;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage, stdout);
			code = 0;
			goto out;
		}
		if (strcmp(a, "--dim") == 0 && i + 1 < argc) {
			if (parse_int(argv[++i], MIN_DIM, MAX_DIM, &d->dim)) {
				fprintf(stderr, "semgate: --distill-static: --dim must be an integer in "
				        "%d..%d\n%s", MIN_DIM, MAX_DIM, usage);
				goto out;
			}
		} else if (strcmp(a, "--sif") == 0 && i + 1 < argc) {
			char *end;
			d->sif = strtod(argv[++i], &end);
			if (end == argv[i] || *end || !(d->sif >= 0 && d->sif < 1)) {
				fprintf(stderr, "semgate: --distill-static: --sif must be a number in "
				        "[0, 1)\n%s", usage);
				goto out;
			}
		} else if (strcmp(a, "--force") == 0) {
			d->force = 1;
		} else if (a[0] != '-' && d->model_dir == NULL) {
			d->model_dir = a;
		} else if (a[0] != '-' && d->out == NULL) {
			d->out = a;
		} else {
			fprintf(stderr, "semgate: --distill-static: unknown or incomplete option '%s'\n%s",
			        a, usage);
			goto out;
		}
	}
	if (d->model_dir == NULL || d->out == NULL) {
		fprintf(stderr, "semgate: --distill-static: which model, and where to?\n%s", usage);
		goto out;
	}
	/* "models/static-minilm/" names the same directory as without the slash,
	 * and the staging directory goes beside it, not inside */
	char *trimmed = strdup(d->out);
	if (trimmed == NULL) {
		fprintf(stderr, "semgate: out of memory\n");
		code = 1;
		goto out;
	}
	for (size_t n = strlen(trimmed); n > 1 && trimmed[n - 1] == '/'; n--)
		trimmed[n - 1] = '\0';
	d->out = trimmed;

	interrupted = 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	code = distill(d) == 0 ? 0 : 1;
	if (code)
		fprintf(stderr, "semgate: distill-static %s: %s\n", d->model_dir, d->err);
	if (d->staged)
		remove_tree(d->stage);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	free(trimmed);
out:
	sg_encoder_free(d->model);
	free(d->ids);
	free(d->x);
	free(d->proj);
	free(d->rows);
	free(d);
	return code;
}
