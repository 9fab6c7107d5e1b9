/* embedbench: the model embedder's encoder alone, in-process (no server).
 *
 *   build/embedbench --model DIR --texts FILE [--limit N] [--threads T]
 *                    [--batch B[,B...]] [--warmup W] [--rounds R]
 *                    [--probe TEXT] [--probe-reps K] [--sorted]
 *
 * Loads the model in DIR (sg_encoder_load), reads texts from FILE (one a line;
 * the first N), sets OpenBLAS to T threads (openblas_set_num_threads) and, for
 * each batch size B, embeds all N texts with sg_encoder_embed in consecutive
 * groups of B (the file's order; --sorted: longest first, as
 * sentence-transformers' encode orders them) with one workspace, the way an
 * embedding thread of the server does: the whole text -> vector path,
 * tokenisation included. W texts are embedded first, untimed. With R rounds,
 * the batch sizes are run R times interleaved and each figure is the median.
 *
 * Prints one JSON line per batch size:
 *   texts/s by the wall clock and by CPU time (getrusage: every thread of the
 *   process, OpenBLAS's included), CPU ms per text, and the percentiles of one
 *   call's wall time (per text at batch 1, per batch above).
 * With --probe TEXT: also the p50 of embedding TEXT alone (batch 1) over K
 * calls, with its token count ([CLS] and [SEP] included), on the same threads.
 *
 * SEMGATE_GEMM_NT_ROWS in the environment is read by the encoder (see
 * cache/encoder.c): the row count below which it uses its own kernel.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "semgate/encoder.h"

/* OpenBLAS's own knob (declared here to keep cblas.h out of this file). */
void openblas_set_num_threads(int num_threads);

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return sorted[i < n ? i : n - 1];
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static const char **g_texts;
static size_t *g_lens;

static int cmp_len_desc(const void *a, const void *b)
{
	size_t x = g_lens[*(const int *)a], y = g_lens[*(const int *)b];
	return x > y ? -1 : x < y ? 1 : *(const int *)a - *(const int *)b;
}

typedef struct {
	double wall, cpu, p50, p90, p99, mean;
} run_t;

/* Embeds the n texts of order[] in groups of b; per-call wall times in lat. */
static int run(const sg_encoder_t *m, sg_encoder_ws_t *ws, const int *order, int n, int b,
               float *out, double *lat, run_t *r)
{
	const char *t[256];
	size_t l[256];
	int calls = 0;
	double c0 = cpu_s(), w0 = now_s();
	for (int i = 0; i < n; i += b) {
		int k = n - i < b ? n - i : b;
		for (int j = 0; j < k; j++) {
			t[j] = g_texts[order[i + j]];
			l[j] = g_lens[order[i + j]];
		}
		double s = now_s();
		if (sg_encoder_embed(m, ws, t, l, k, out) != 0)
			return -1;
		lat[calls++] = now_s() - s;
	}
	r->wall = now_s() - w0;
	r->cpu = cpu_s() - c0;
	r->mean = r->wall / calls;
	qsort(lat, (size_t)calls, sizeof(double), cmp_d);
	r->p50 = pct(lat, (size_t)calls, 0.50);
	r->p90 = pct(lat, (size_t)calls, 0.90);
	r->p99 = pct(lat, (size_t)calls, 0.99);
	return 0;
}

int main(int argc, char **argv)
{
	sg_encoder_fix_blas(argv);

	const char *model = NULL, *texts = NULL, *batches = "1,32", *probe = NULL;
	long limit = 1000, threads = 1, warmup = 32, rounds = 1, probe_reps = 1000;
	int sorted = 0;
	char err[1024];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--sorted")) {
			sorted = 1;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "embedbench: %s needs a value\n", argv[i]);
			return 2;
		}
		if (!strcmp(argv[i], "--model")) model = argv[++i];
		else if (!strcmp(argv[i], "--texts")) texts = argv[++i];
		else if (!strcmp(argv[i], "--limit")) limit = atol(argv[++i]);
		else if (!strcmp(argv[i], "--threads")) threads = atol(argv[++i]);
		else if (!strcmp(argv[i], "--batch")) batches = argv[++i];
		else if (!strcmp(argv[i], "--warmup")) warmup = atol(argv[++i]);
		else if (!strcmp(argv[i], "--rounds")) rounds = atol(argv[++i]);
		else if (!strcmp(argv[i], "--probe")) probe = argv[++i];
		else if (!strcmp(argv[i], "--probe-reps")) probe_reps = atol(argv[++i]);
		else {
			fprintf(stderr, "embedbench: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (model == NULL || texts == NULL || limit < 1 || threads < 1 || rounds < 1) {
		fprintf(stderr, "usage: embedbench --model DIR --texts FILE [--limit N] [--threads T] "
		                "[--batch B[,B...]] [--warmup W] [--rounds R] [--sorted]\n"
		                "                  [--probe TEXT] [--probe-reps K]\n");
		return 2;
	}

	/* the texts */
	FILE *f = fopen(texts, "r");
	if (f == NULL) {
		fprintf(stderr, "embedbench: cannot read %s\n", texts);
		return 1;
	}
	g_texts = calloc((size_t)limit, sizeof(*g_texts));
	g_lens = calloc((size_t)limit, sizeof(*g_lens));
	int n = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	while (n < limit && (got = getline(&line, &cap, f)) > 0) {
		while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
			line[--got] = '\0';
		g_texts[n] = strdup(line);
		g_lens[n] = (size_t)got;
		n++;
	}
	free(line);
	fclose(f);
	if (n == 0) {
		fprintf(stderr, "embedbench: no texts in %s\n", texts);
		return 1;
	}
	int *order = malloc(sizeof(int) * (size_t)n);
	for (int i = 0; i < n; i++)
		order[i] = i;
	if (sorted)
		qsort(order, (size_t)n, sizeof(int), cmp_len_desc);

	/* the batch sizes */
	int bs[32], nb = 0, maxb = 1;
	for (const char *p = batches; *p && nb < 32;) {
		int b = atoi(p);
		if (b < 1 || b > 256) {
			fprintf(stderr, "embedbench: batch sizes are 1..256\n");
			return 2;
		}
		bs[nb++] = b;
		maxb = b > maxb ? b : maxb;
		p = strchr(p, ',');
		if (p == NULL)
			break;
		p++;
	}

	sg_encoder_t *m;
	sg_encoder_opts_t mo = {0, NULL, 1};
	double l0 = now_s();
	if (sg_encoder_load(&m, model, &mo, err, sizeof(err)) != 0) {
		fprintf(stderr, "embedbench: %s\n", err);
		return 1;
	}
	double load_s = now_s() - l0;
	openblas_set_num_threads((int)threads);
	sg_encoder_ws_t *ws = sg_encoder_ws_new(m, maxb);
	int dim = sg_encoder_dim(m);
	float *out = malloc(sizeof(float) * (size_t)dim * (size_t)maxb);
	double *lat = malloc(sizeof(double) * (size_t)n);
	double *acc = malloc(sizeof(double) * (size_t)rounds * 7 * (size_t)nb);
	if (ws == NULL || out == NULL || lat == NULL || acc == NULL)
		return 1;
	long tokens = 0;
	int32_t *ids = malloc(sizeof(int32_t) * (size_t)sg_encoder_max_tokens(m));
	for (int i = 0; i < n; i++)
		tokens += sg_encoder_tokenize(m, g_texts[i], g_lens[i], ids);
	const char *rows_env = getenv("SEMGATE_GEMM_NT_ROWS");
	fprintf(stderr, "embedbench: %s (%s), loaded in %.0f ms; %d texts, %.1f tokens on average; "
	                "OpenBLAS %s x %ld threads; SEMGATE_GEMM_NT_ROWS=%s\n",
	        sg_encoder_describe(m), sg_encoder_id(m), load_s * 1000, n, (double)tokens / n,
	        sg_encoder_blas_core(), threads, rows_env ? rows_env : "(default)");

	/* warm-up: the first W texts, one by one and in the largest batch */
	for (int i = 0; i < warmup && i < n; i++) {
		const char *t = g_texts[i];
		size_t l = g_lens[i];
		sg_encoder_embed(m, ws, &t, &l, 1, out);
	}
	if (maxb > 1) {
		run_t r;
		int k = n < maxb * 2 ? n : maxb * 2;
		run(m, ws, order, k, maxb, out, lat, &r);
	}

	for (long rd = 0; rd < rounds; rd++)
		for (int bi = 0; bi < nb; bi++) {
			run_t r;
			if (run(m, ws, order, n, bs[bi], out, lat, &r) != 0) {
				fprintf(stderr, "embedbench: embedding failed\n");
				return 1;
			}
			double *a = acc + ((size_t)bi * (size_t)rounds + (size_t)rd) * 7;
			a[0] = n / r.wall;
			a[1] = n / r.cpu;
			a[2] = r.cpu * 1000 / n;
			a[3] = r.p50 * 1000;
			a[4] = r.p90 * 1000;
			a[5] = r.p99 * 1000;
			a[6] = r.mean * 1000;
		}
	for (int bi = 0; bi < nb; bi++) {
		double med[7], col[1024];
		for (int c = 0; c < 7; c++) {
			for (long rd = 0; rd < rounds && rd < 1024; rd++)
				col[rd] = acc[((size_t)bi * (size_t)rounds + (size_t)rd) * 7 + (size_t)c];
			med[c] = median(col, (int)(rounds < 1024 ? rounds : 1024));
		}
		printf("{\"engine\":\"semgate\",\"threads\":%ld,\"batch\":%d,\"texts\":%d,\"sorted\":%d,"
		       "\"gemm_nt_rows\":\"%s\",\"rounds\":%ld,\"texts_per_s\":%.1f,"
		       "\"texts_per_cpu_s\":%.1f,\"cpu_ms_per_text\":%.3f,\"call_p50_ms\":%.3f,"
		       "\"call_p90_ms\":%.3f,\"call_p99_ms\":%.3f,\"call_mean_ms\":%.3f}\n",
		       threads, bs[bi], n, sorted, rows_env ? rows_env : "", rounds, med[0], med[1],
		       med[2], med[3], med[4], med[5], med[6]);
	}

	if (probe) {
		size_t pl = strlen(probe);
		int k = sg_encoder_tokenize(m, probe, pl, ids);
		double *pr = malloc(sizeof(double) * (size_t)(probe_reps > 0 ? probe_reps : 1));
		for (int i = 0; i < 20; i++)
			sg_encoder_embed(m, ws, &probe, &pl, 1, out);
		double c0 = cpu_s();
		for (long i = 0; i < probe_reps; i++) {
			double s = now_s();
			sg_encoder_embed(m, ws, &probe, &pl, 1, out);
			pr[i] = now_s() - s;
		}
		double c = cpu_s() - c0;
		qsort(pr, (size_t)probe_reps, sizeof(double), cmp_d);
		printf("{\"engine\":\"semgate\",\"probe_chars\":%zu,\"ids\":%d,\"threads\":%ld,\"reps\":%ld,"
		       "\"p50_us\":%.1f,\"p90_us\":%.1f,\"cpu_us_per_call\":%.1f}\n",
		       pl, k, threads, probe_reps, pct(pr, (size_t)probe_reps, 0.5) * 1e6,
		       pct(pr, (size_t)probe_reps, 0.9) * 1e6, c * 1e6 / (double)probe_reps);
		free(pr);
	}
	fflush(stdout);

	free(ids);
	free(acc);
	free(lat);
	free(out);
	free(order);
	sg_encoder_ws_free(ws);
	sg_encoder_free(m);
	for (int i = 0; i < n; i++)
		free((void *)g_texts[i]);
	free(g_texts);
	free(g_lens);
	return 0;
}
