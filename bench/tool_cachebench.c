/* cachebench: the semantic cache at scale, in-process.
 *
 *   build/cachebench --path DIR --entries N [--index auto|flat|hnsw] [--dim 128]
 *                    [--queries 2000] [--m 32] [--ef 64] [--seed 1]
 *                    [--search walk|faiss|all] [--rounds R]
 *                    [--emit-queries FILE] [--stall S]
 *                    [--embedder local|model] [--model-path DIR] [--blas-threads T]
 *                    [--prompts FILE]
 *
 * 1. writes N synthetic FAQ-style entries (one scope, as the server keys
 *    them; see sentence()) straight into a fresh store: embedded with the
 *    local embedder (--embedder model: the model embedder's encoder,
 *    cache/encoder.c, on the model in --model-path, in batches of 32 on T
 *    OpenBLAS threads, stored under the id the server's `model` embedder
 *    gives that model with default settings), ~300-byte answers;
 * 2. opens the cache, which builds the index from the stored vectors, and
 *    closes it (writing the index checkpoint);
 * 3. opens it again: the start-to-ready time of a restart;
 * 4. runs queries (a stored prompt with one word dropped: never an exact hit)
 *    through key + embed + search, timing each, and compares the top hit with
 *    an exhaustive search over all vectors (recall@1); --search picks how
 *    HNSW graphs are searched (semgate's walk, the default, or FAISS's own
 *    search), `all` times both in R interleaved rounds (default 3) of the
 *    same queries, for a ratio from one run;
 * 5. prints bytes per entry on disk and the process's RSS;
 * with --emit-queries, also writes 10,000 paraphrased queries (one a line)
 * for a load test through the server (bench/bench_cache.sh);
 * with --prompts FILE (one prompt a line, e.g. real questions), the first
 *    entries are that file's lines (up to N) and the rest synthetic, and every
 *    query, timed or emitted, is one of the file's prompts with its first
 *    word dropped: lookups over an index of N entries with the token counts
 *    of real text (the synthetic pseudo-words split into more WordPiece
 *    tokens than English words do, which is what a model embedder's cost
 *    follows);
 * with --stall S, 6. plays the event loop for S seconds across a checkpoint:
 *    after N/64 + 1 new entries (enough to make the index's checkpoint due),
 *    back-to-back exact lookups of stored prompts with a miss stored every
 *    50th turn, hit counts flushed every 20 ms and sg_cache_maintain
 *    (checkpoint) on a 250 ms tick, as the server's timers run them; prints
 *    the longest turn (what the loop could not answer meanwhile), exact-hit
 *    percentiles and the longest sg_cache_maintain() call.
 * Everything it writes is under DIR (removed first).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "semgate/cache.h"
#include "semgate/embed_local.h"
#include "semgate/encoder.h"

/* OpenBLAS's own knob (declared here to keep cblas.h out of this file). */
void openblas_set_num_threads(int num_threads);

/* The embedder the entries and queries are embedded with: the local one (the
 * default) or a model's encoder (--embedder model). */
static sg_embed_local_t *g_local;
static sg_encoder_t *g_model;
static sg_encoder_ws_t *g_ws;

static const char *embedder_id(void)
{
	return g_model ? sg_encoder_id(g_model) : sg_embed_local_id(g_local);
}

static void embed_one(const char *text, size_t len, float *out)
{
	if (g_model == NULL) {
		sg_embed_local_embed(g_local, text, len, out);
	} else if (sg_encoder_embed(g_model, g_ws, &text, &len, 1, out) != 0) {
		fprintf(stderr, "cachebench: embedding failed\n");
		exit(1);
	}
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* A pseudo-word from syllables: w is its rank (small = common). */
static void word(char *out, size_t cap, uint64_t w)
{
	static const char *const syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "de",
	                                  "pa", "zu", "ho", "gri", "sto", "len", "mar"};
	size_t n = 0;
	out[0] = '\0';
	do {
		const char *s = syl[w % 16];
		size_t l = strlen(s);
		if (n + l + 1 >= cap)
			break;
		memcpy(out + n, s, l + 1);
		n += l;
		w /= 16;
	} while (w);
}

/* Zipf-like rank in [0, vocab): common words far more often. */
static uint64_t zipf(uint64_t vocab)
{
	double u = (double)(rnd() >> 11) / 9007199254740992.0;
	return (uint64_t)(pow((double)vocab, u)) - 1;
}

/*
 * A synthetic FAQ-style question: a few very common words, several words of
 * one topic (a topic is 12 words drawn once from a 30,000-word vocabulary;
 * about 50 questions share a topic, as FAQ and RAG traffic clusters), and an
 * occasional rare word, shuffled.
 */
static long ntopics = 1;

static void sentence(char *out, size_t cap)
{
	uint64_t picks[16];
	int n = 0;
	uint64_t topic = rnd() % (uint64_t)ntopics;
	int common = 2 + (int)(rnd() % 3), topical = 3 + (int)(rnd() % 4), rare = (int)(rnd() % 3);
	char w[64];
	size_t len = 0;

	for (int i = 0; i < common; i++)
		picks[n++] = rnd() % 50;
	for (int i = 0; i < topical; i++) {
		/* the topic's j-th word: a fixed function of (topic, j) */
		uint64_t save = rng_state, j = rnd() % 12;
		rng_state = topic * 1000003u + j * 7919u + 17u;
		picks[n++] = 50 + rnd() % 29950;
		rng_state = save;
	}
	for (int i = 0; i < rare && n < 16; i++)
		picks[n++] = zipf(30000);
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(rnd() % (uint64_t)(i + 1));
		uint64_t t = picks[i];
		picks[i] = picks[j];
		picks[j] = t;
	}
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		word(w, sizeof(w), picks[i]);
		int k = snprintf(out + len, cap - len, "%s%s", i ? " " : "", w);
		if (k < 0 || (size_t)k >= cap - len)
			break;
		len += (size_t)k;
	}
	if (len + 1 < cap) {
		out[len++] = '?';
		out[len] = '\0';
	}
}

/* Up to n lines of path (empty ones skipped, the line end dropped) in place
 * of prompts[0..]: how many, or -1 when it cannot be read. */
static long load_prompts(const char *path, char **prompts, long n)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long k = 0;
	if (f == NULL)
		return -1;
	while (k < n && (len = getline(&line, &cap, f)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		free(prompts[k]);
		if ((prompts[k] = strdup(line)) == NULL)
			break;
		k++;
	}
	free(line);
	fclose(f);
	return k;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			kb = atol(line + 6);
	if (f)
		fclose(f);
	return kb;
}

/* The store's secret, under which the server derives scope and exact ids
 * (sg_store_hash_key): keys built without it would land in a scope the
 * server never searches. */
static sg_hash_key_t g_hkey;

static int key_for(sg_cache_key_t *k, const char *prompt)
{
	json_t *req = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "m", "messages", "role", "user",
	                        "content", prompt);
	sg_cache_key_opts_t ko = {SG_EMBED_LAST_USER, 0, 1.0, &g_hkey};
	int rc = sg_cache_key_build(k, req, SG_CACHE_CHAT, "default", "m", &ko);
	json_decref(req);
	return rc ? rc : k->bypass ? SG_EINVAL : 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * 6. The loop's view of a checkpoint: see the top of this file. Turns are
 * timed with the monotonic clock; the first maintain call is made at once,
 * so the checkpoint starts at the beginning of the window.
 */
static int stall_run(sg_cache_t *c, sg_cache_key_t *key, char **prompts,
                     long entries, long dim, double seconds)
{
	size_t cap = 1 << 20, n = 0, nstored = 0;
	uint64_t *lat = malloc(cap * sizeof(uint64_t)), maint_max = 0, maint_total = 0, turn_max = 0;
	float *v = malloc((size_t)dim * sizeof(float));
	char prompt[600];
	long extra = entries / 64 + 1, nmaint = 0;
	static const char answer[] = "{\"id\":\"chatcmpl-x\",\"object\":\"chat.completion\","
	                             "\"choices\":[]}";

	if (lat == NULL || v == NULL)
		return 1;
	for (long i = 0; i < extra; i++) {
		snprintf(prompt, sizeof(prompt), "stall bench extra %ld %s", i, prompts[i % entries]);
		if (key_for(key, prompt) != 0)
			return 1;
		embed_one(key->prompt.data, key->prompt.len, v);
		if (sg_cache_store(c, key, v, "default", "m", (sg_iovec_t){answer, sizeof(answer) - 1},
		                   20, 60, (int64_t)time(NULL), 0, NULL) != 0)
			return 1;
	}
	double t_end = now_s() + seconds, next_tick = 0, next_flush = 0;
	for (long turn = 0; now_s() < t_end; turn++) {
		uint64_t t0 = sg_now_us();
		if (now_s() >= next_tick) {
			uint64_t m0 = sg_now_us();
			if (sg_cache_maintain(c, (int64_t)time(NULL), 1) != 0)
				fprintf(stderr, "cachebench: maintain failed\n");
			uint64_t md = sg_now_us() - m0;
			maint_max = md > maint_max ? md : maint_max;
			maint_total += md;
			nmaint++;
			next_tick = now_s() + 0.25;
		} else if (now_s() >= next_flush) {
			sg_cache_flush_hits(c); /* the server's hits timer */
			next_flush = now_s() + 0.02;
		}
		sg_cache_hit_t hit;
		if (turn % 50 == 49) {
			/* a miss: stored, as the server stores an upstream answer */
			snprintf(prompt, sizeof(prompt), "stall bench miss %ld %s", turn,
			         prompts[rnd() % (uint64_t)entries]);
			if (key_for(key, prompt) != 0)
				return 1;
			embed_one(key->prompt.data, key->prompt.len, v);
			if (sg_cache_store(c, key, v, "default", "m",
			                   (sg_iovec_t){answer, sizeof(answer) - 1}, 20, 60,
			                   (int64_t)time(NULL), 0, NULL) == 0)
				nstored++;
		} else {
			if (key_for(key, prompts[rnd() % (uint64_t)entries]) != 0)
				return 1;
			if (sg_cache_lookup_exact(c, key, (int64_t)time(NULL), &hit) != 0) {
				fprintf(stderr, "cachebench: an exact lookup missed\n");
				return 1;
			}
			sg_cache_hit_free(&hit);
		}
		uint64_t d = sg_now_us() - t0;
		turn_max = d > turn_max ? d : turn_max;
		if (n < cap && turn % 50 != 49)
			lat[n++] = d;
	}
	qsort(lat, n, sizeof(uint64_t), cmp_u64);
	printf("loop across a checkpoint (%.1f s, %ld entries + %ld new, a miss stored every 50th "
	       "turn): longest turn %.1f ms; exact hits %zu: p50 %llu us, p99 %llu us, p99.9 %llu "
	       "us, max %llu us; sg_cache_maintain: %ld calls, longest %.1f ms, total %.1f ms; "
	       "misses stored %zu\n",
	       seconds, entries, extra, turn_max / 1000.0, n,
	       (unsigned long long)(n ? lat[n / 2] : 0), (unsigned long long)(n ? lat[n * 99 / 100] : 0),
	       (unsigned long long)(n ? lat[n * 999 / 1000] : 0),
	       (unsigned long long)(n ? lat[n - 1] : 0), nmaint, maint_max / 1000.0,
	       maint_total / 1000.0, nstored);
	free(lat);
	free(v);
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *index = "auto", *emit = NULL, *search = "walk";
	const char *embedder = "local", *model_path = "models/all-minilm-l6-v2", *prompts_file = NULL;
	long entries = 100000, queries = 2000, dim = 128, m = 32, ef = 64, seed = 1, rounds = 0;
	long blas_threads = 0;
	double stall = 0;
	char err[1024], cmd[1200], prompt[512], answer[512];

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--path")) path = argv[i + 1];
		else if (!strcmp(argv[i], "--entries")) entries = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--queries")) queries = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--index")) index = argv[i + 1];
		else if (!strcmp(argv[i], "--dim")) dim = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--m")) m = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--ef")) ef = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--seed")) seed = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--emit-queries")) emit = argv[i + 1];
		else if (!strcmp(argv[i], "--search")) search = argv[i + 1];
		else if (!strcmp(argv[i], "--rounds")) rounds = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--stall")) stall = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--embedder")) embedder = argv[i + 1];
		else if (!strcmp(argv[i], "--model-path")) model_path = argv[i + 1];
		else if (!strcmp(argv[i], "--blas-threads")) blas_threads = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--prompts")) prompts_file = argv[i + 1];
		else {
			fprintf(stderr, "cachebench: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	int use_model = !strcmp(embedder, "model");
	if (path == NULL || entries < 1 || queries < 1 || (!use_model && strcmp(embedder, "local"))) {
		fprintf(stderr, "usage: cachebench --path DIR --entries N [--index auto|flat|hnsw] "
		                "[--dim D] [--queries Q] [--m M] [--ef EF] [--seed S]\n"
		                "                  [--search walk|faiss|all] [--rounds R] "
		                "[--emit-queries FILE] [--stall S]\n"
		                "                  [--embedder local|model] [--model-path DIR] "
		                "[--blas-threads T] [--prompts FILE]\n");
		return 2;
	}
	rng_state = (uint64_t)seed;
	ntopics = entries / 50 > 0 ? entries / 50 : 1;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		return 1;

	if (use_model) {
		/* as the server loads it (cache.embedder defaults): the same id */
		sg_encoder_opts_t mo = {0, NULL, 0};
		sg_encoder_fix_blas(argv); /* (re-executes at most once, before any thread) */
		if (sg_encoder_load(&g_model, model_path, &mo, err, sizeof(err)) != 0) {
			fprintf(stderr, "cachebench: %s\n", err);
			return 1;
		}
		if (blas_threads > 0)
			openblas_set_num_threads((int)blas_threads);
		g_ws = sg_encoder_ws_new(g_model, 32);
		if (g_ws == NULL)
			return 1;
		dim = sg_encoder_dim(g_model);
		fprintf(stderr, "cachebench: model %s, OpenBLAS %s\n", sg_encoder_describe(g_model),
		        sg_encoder_blas_core());
	} else {
		sg_embed_local_opts_t eo = {0};
		eo.dim = (int)dim;
		if (sg_embed_local_new(&g_local, &eo) != 0)
			return 1;
		dim = sg_embed_local_dim(g_local);
	}
	float *vecs = malloc((size_t)entries * (size_t)dim * sizeof(float));
	char **prompts = calloc((size_t)entries, sizeof(char *));
	sg_cache_key_t key;
	sg_cache_key_init(&key);

	/* 1. populate */
	sg_store_t *st;
	sg_store_opts_t so = {0, (size_t)64 << 30, embedder_id(), (uint32_t)dim, 0, 0};
	if (!vecs || !prompts || sg_store_open(&st, path, &so, err, sizeof(err)) != 0) {
		fprintf(stderr, "cachebench: %s\n", err);
		return 1;
	}
	sg_store_hash_key(st, &g_hkey);
	double t0 = now_s(), t_embed = 0;
	for (long i = 0; i < entries; i++) {
		sentence(prompt, sizeof(prompt));
		prompts[i] = strdup(prompt);
	}
	/* the queries' pool: the file's prompts when given, else every entry */
	long qpool = entries;
	if (prompts_file) {
		long k = load_prompts(prompts_file, prompts, entries);
		if (k <= 0) {
			fprintf(stderr, "cachebench: no prompts in %s\n", prompts_file);
			return 1;
		}
		qpool = k;
		fprintf(stderr, "cachebench: %ld entries from %s, %ld synthetic\n", k, prompts_file,
		        entries - k);
	}
	if (use_model) {
		/* the model's vectors first, in batches of 32 (what the server's
		 * embedding threads do with concurrent requests) */
		char *btext[32];
		size_t blen[32];
		double next_report = now_s() + 30;
		for (long i = 0; i < entries; i += 32) {
			int nb = entries - i < 32 ? (int)(entries - i) : 32;
			for (int j = 0; j < nb; j++) {
				if (key_for(&key, prompts[i + j]) != 0)
					return 1;
				btext[j] = malloc(key.prompt.len + 1);
				memcpy(btext[j], key.prompt.data, key.prompt.len);
				blen[j] = key.prompt.len;
			}
			if (sg_encoder_embed(g_model, g_ws, (const char *const *)btext, blen, nb,
			                     vecs + (size_t)i * (size_t)dim) != 0) {
				fprintf(stderr, "cachebench: embedding failed\n");
				return 1;
			}
			for (int j = 0; j < nb; j++)
				free(btext[j]);
			if (now_s() >= next_report) {
				fprintf(stderr, "cachebench: embedded %ld of %ld (%.0f/s)\n", i + nb,
				        entries, (i + nb) / (now_s() - t0));
				next_report = now_s() + 30;
			}
		}
		t_embed = now_s() - t0;
	}
	for (long i = 0; i < entries; i++) {
		if (key_for(&key, prompts[i]) != 0)
			return 1;
		float *v = vecs + (size_t)i * (size_t)dim;
		if (!use_model)
			embed_one(key.prompt.data, key.prompt.len, v);
		int n = snprintf(answer, sizeof(answer),
		                 "{\"id\":\"chatcmpl-%ld\",\"object\":\"chat.completion\",\"created\":0,"
		                 "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
		                 "\"assistant\",\"content\":\"answer %ld\"},\"finish_reason\":\"stop\"}],"
		                 "\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":60,"
		                 "\"total_tokens\":80}}", i, i);
		sg_entry_in_t in = {{"default", 7}, {"m", 1}, {key.scope.data, key.scope.len},
		                    {key.prompt.data, key.prompt.len}, {answer, (size_t)n},
		                    key.scope_hash, key.exact_hash, (int64_t)time(NULL), 0, 20, 60};
		uint64_t id;
		if (sg_store_put(st, &in, v, &id) != 0) {
			fprintf(stderr, "cachebench: put failed: %s\n", sg_store_last_error(st));
			return 1;
		}
	}
	double t_fill = now_s() - t0;
	sg_store_sync(st);
	sg_store_close(st);

	/* 2. cold build, 3. restart from the checkpoint */
	sg_cache_opts_t co = {
		.path = path, .embedder_id = embedder_id(), .dim = (int)dim,
		.index_type = strcmp(index, "flat") == 0 ? SG_INDEX_FLAT : SG_INDEX_HNSW,
		.auto_hnsw = strcmp(index, "auto") == 0, .hnsw_min_entries = 512,
		.index_opts = {(int)m, (int)ef, 0.25,
		               !strcmp(search, "faiss") ? SG_INDEX_SEARCH_FAISS : SG_INDEX_SEARCH_WALK},
		.max_map_size = (size_t)64 << 30,
	};
	sg_cache_t *c;
	t0 = now_s();
	if (sg_cache_open(&c, &co, (int64_t)time(NULL), err, sizeof(err)) != 0) {
		fprintf(stderr, "cachebench: %s\n", err);
		return 1;
	}
	double t_build = now_s() - t0;
	t0 = now_s();
	sg_cache_close(c);
	double t_ckpt = now_s() - t0;
	t0 = now_s();
	if (sg_cache_open(&c, &co, (int64_t)time(NULL), err, sizeof(err)) != 0) {
		fprintf(stderr, "cachebench: %s\n", err);
		return 1;
	}
	double t_ready = now_s() - t0;
	sg_index_set_threads(1);

	/* Paraphrased queries for a load test through the server (one a line). */
	if (emit) {
		FILE *f = fopen(emit, "w");
		for (long i = 0; f && i < 10000; i++) {
			const char *p = prompts[rnd() % (uint64_t)qpool];
			const char *sp = strchr(p, ' ');
			fprintf(f, "%s\n", sp ? sp + 1 : p);
		}
		if (f == NULL || fclose(f) != 0) {
			fprintf(stderr, "cachebench: cannot write %s\n", emit);
			return 1;
		}
	}

	/*
	 * 4. queries: a stored prompt with one word dropped (a paraphrase, never
	 * byte-identical). Each search mode times all of them back to back, as a
	 * server runs them, reopening the cache (from its checkpoint) in that
	 * mode; with several modes, rounds interleave them. The exhaustive top-1
	 * of each query comes last (scanning every vector between timed lookups
	 * would flush the CPU caches and time that instead).
	 */
	static const char *const mode_names[] = {"walk", "faiss"};
	int modes[2], n_modes = 0;
	for (int m_ = 0; m_ < 2; m_++)
		if (!strcmp(search, "all") || !strcmp(search, mode_names[m_]))
			modes[n_modes++] = m_;
	if (n_modes == 0) {
		fprintf(stderr, "cachebench: --search walk|faiss|all\n");
		return 2;
	}
	if (rounds < 1)
		rounds = n_modes > 1 ? 3 : 1;
	char **qtext = calloc((size_t)queries, sizeof(char *));
	float *qv = malloc((size_t)queries * (size_t)dim * sizeof(float));
	uint64_t *lat = malloc((size_t)n_modes * (size_t)rounds * (size_t)queries * sizeof(uint64_t));
	long *got = malloc((size_t)n_modes * (size_t)queries * sizeof(long));
	float *got_s = malloc((size_t)n_modes * (size_t)queries * sizeof(float));
	uint64_t search_us[2] = {0, 0};
	if (!qtext || !qv || !lat || !got || !got_s)
		return 1;
	for (long i = 0; i < queries; i++) {
		const char *p = prompts[rnd() % (uint64_t)qpool];
		const char *sp = strchr(p, ' ');
		qtext[i] = strdup(sp ? sp + 1 : p);
	}
	for (long r = 0; r < rounds; r++)
		for (int mi = 0; mi < n_modes; mi++) {
			sg_cache_close(c);
			co.index_opts.hnsw_search =
				modes[mi] == 0 ? SG_INDEX_SEARCH_WALK : SG_INDEX_SEARCH_FAISS;
			if (sg_cache_open(&c, &co, (int64_t)time(NULL), err, sizeof(err)) != 0) {
				fprintf(stderr, "cachebench: %s\n", err);
				return 1;
			}
			uint64_t *l = lat + ((size_t)mi * (size_t)rounds + (size_t)r) * (size_t)queries;
			for (long i = 0; i < queries; i++) {
				float *q = qv + (size_t)i * (size_t)dim;
				sg_cache_hit_t hit;
				float best;
				uint64_t s0 = sg_now_us();
				key_for(&key, qtext[i]);
				embed_one(key.prompt.data, key.prompt.len, q);
				uint64_t s1 = sg_now_us();
				int rc = sg_cache_lookup_semantic(c, &key, q, 0.0f, (int64_t)time(NULL),
				                                  &hit, &best);
				l[i] = sg_now_us() - s0;
				search_us[mi] += sg_now_us() - s1;
				size_t gi = (size_t)mi * (size_t)queries + (size_t)i;
				if (r == 0)
					got[gi] = -1;
				if (rc == 0) {
					if (r == 0) { /* ids are 1.. in insertion order */
						got[gi] = (long)hit.entry.m.id - 1;
						got_s[gi] = hit.similarity;
					}
					sg_cache_hit_free(&hit);
				}
			}
		}
	long agree[2] = {0, 0}, answered[2] = {0, 0};
	long close_total = 0, close_agree[2] = {0, 0};
	for (long i = 0; i < queries; i++) {
		const float *q = qv + (size_t)i * (size_t)dim;
		long top = -1;
		float top_s = -2;
		for (long j = 0; j < entries; j++) {
			const float *v = vecs + (size_t)j * (size_t)dim;
			float sdot = 0;
			for (long d = 0; d < dim; d++)
				sdot += q[d] * v[d];
			if (sdot > top_s) {
				top_s = sdot;
				top = j;
			}
		}
		close_total += top_s >= 0.9f;
		for (int mi = 0; mi < n_modes; mi++) {
			size_t gi = (size_t)mi * (size_t)queries + (size_t)i;
			/* equal scores count as agreeing */
			int ok = got[gi] >= 0 && (got[gi] == top || fabsf(got_s[gi] - top_s) < 1e-6f);
			answered[mi] += got[gi] >= 0;
			agree[mi] += ok;
			close_agree[mi] += ok && top_s >= 0.9f;
		}
	}
	for (int mi = 0; mi < n_modes; mi++)
		qsort(lat + (size_t)mi * (size_t)rounds * (size_t)queries,
		      (size_t)rounds * (size_t)queries, sizeof(uint64_t), cmp_u64);

	/* 5. sizes */
	sg_cache_stats_t cs;
	sg_cache_stats(c, &cs);
	struct stat sb;
	snprintf(cmd, sizeof(cmd), "%s/data.mdb", path);
	long long file = stat(cmd, &sb) == 0 ? (long long)sb.st_size : -1;

	printf("entries %ld, dim %ld, index %s (m %ld, ef %ld), embedder %s\n", entries, dim, index,
	       m, ef, embedder_id());
	printf("populate (embed + LMDB put): %.1f s (%.0f entries/s)", t_fill, entries / t_fill);
	if (use_model)
		printf(", of which embedding in batches of 32: %.1f s (%.0f texts/s)", t_embed,
		       entries / t_embed);
	printf("\n");
	printf("first open, index built from stored vectors: %.2f s; close with checkpoint: %.2f s\n",
	       t_build, t_ckpt);
	printf("restart to ready (checkpoint load): %.2f s\n", t_ready);
	long nq = queries * rounds;
	uint64_t p50_faiss = 0;
	for (int mi = 0; mi < n_modes; mi++)
		if (modes[mi] == 1)
			p50_faiss = lat[(size_t)mi * (size_t)nq + (size_t)nq / 2];
	for (int mi = 0; mi < n_modes; mi++) {
		const uint64_t *l = lat + (size_t)mi * (size_t)nq;
		printf("lookup (key + embed + search + read entry), search %s, %ld queries x %ld: "
		       "p50 %llu us, p90 %llu us, p99 %llu us, max %llu us",
		       mode_names[modes[mi]], queries, rounds, (unsigned long long)l[nq / 2],
		       (unsigned long long)l[nq * 9 / 10], (unsigned long long)l[nq * 99 / 100],
		       (unsigned long long)l[nq - 1]);
		if (p50_faiss && modes[mi] != 1)
			printf(" (p50 %.2fx FAISS's search)", (double)l[nq / 2] / (double)p50_faiss);
		printf("\n  of which search + entry read: %.0f us on average; recall@1 vs exhaustive "
		       "search: %.4f (%ld of %ld answered); where the true top-1 is >= 0.90: %.4f "
		       "(%ld queries)\n",
		       (double)search_us[mi] / (double)nq, (double)agree[mi] / (double)queries,
		       answered[mi], queries,
		       close_total ? (double)close_agree[mi] / (double)close_total : 0.0, close_total);
	}
	printf("disk: %.1f MB data.mdb, %.0f bytes per entry (vector %ld B); RSS %.1f MB; "
	       "hnsw scopes %llu\n",
	       (double)file / 1e6, (double)file / (double)entries, dim * 4, rss_kb() / 1024.0,
	       (unsigned long long)cs.hnsw_scopes);
	if (stall > 0 && stall_run(c, &key, prompts, entries, dim, stall) != 0)
		return 1;
	sg_cache_close(c);
	sg_cache_key_free(&key);
	for (long i = 0; i < entries; i++)
		free(prompts[i]);
	free(prompts);
	free(vecs);
	free(lat);
	free(qv);
	free(got);
	free(got_s);
	for (long i = 0; i < queries; i++)
		free(qtext[i]);
	free(qtext);
	sg_embed_local_free(g_local);
	sg_encoder_ws_free(g_ws);
	sg_encoder_free(g_model);
	return 0;
}
