/* qqp: cache quality of the `local` embedder on labelled question pairs.
 *
 * Runs the cache-replay protocol of shared/data/README.md in-process, without
 * the server: every distinct `a` goes into a flat (exact) index, every `b`
 * is a top-1 lookup among all of them, and a lookup counts as a hit at
 * threshold t when its cosine score is >= t. A hit is correct when the `a`
 * it returned and `b` are in the same cluster (the transitive closure of the
 * label-1 pairs, over exact texts).
 *
 *   build/qqp [options] [../shared/data/qqp-dev.jsonl]
 *
 * Options set the embedder's knobs (see semgate/embed.h) and the thresholds:
 *   --dim N --word W --bigram W --char W --char-min N --char-max N
 *   --stop W --qword W --pronoun W --modal W --number W --qtype W
 *   --no-stem
 *   --thresholds FROM:TO:STEP   (default 0.70:0.98:0.02)
 *   --min-precision P           (the summary line; default 0.90)
 *   --dump-false T              (print false hits scoring >= T to stderr)
 *   --dump-pos LO:HI            (print correct hits on duplicates scoring in
 *                                [LO, HI) to stderr: what almost matched)
 *   --min-rate R                (the second summary line; default 0.20)
 * The two summary lines are printed for the whole file, then for each half
 * of it (pairs split by bit 7 of the FNV-1a hash of their `a`; the index
 * still holds every `a`): a tuning gain should show on both halves.
 *
 * The second stage (semgate/verify.h) replaces the cosine by the verifier's
 * score of (b, returned a, cosine) before the threshold:
 *   --verify                    (top-1 from the index, then verified)
 *   --rerank K                  (top-K from the index, each verified, the
 *                                best verified score wins; implies --verify)
 *   --v-sub W --v-extra W --v-number W --v-negation W --v-qtype W
 *   --v-antonym W --v-order W --v-context W
 *                               (the verifier's knobs; 0 = default,
 *                                negative = off)
 *   --dump-evidence FILE        (per candidate verified: cosine, verified
 *                                score, evidence, correct or not; TSV)
 * With the verifier, --dump-false prints the evidence of each false hit too.
 *
 * External sentence vectors (what a model would add, measured before it is
 * built in; bench/qqp_learned.sh makes such files):
 *   --ext FILE --ext-dim N      (records: u32 LE length, text, N float32)
 *   --ext-weight W              (scores become (1 - W) cos_local + W cos_ext,
 *                                by concatenating the scaled vectors)
 * A missing data file is not an error: the tool says so and exits 0.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "semgate/embed_local.h"
#include "semgate/index.h"
#include "semgate/verify.h"

#define MAX_THRESHOLDS 200
#define MAX_RERANK 32

/* ---- interned texts with union-find ------------------------------------- */

typedef struct texts {
	char **str;       /* owned texts by id */
	size_t *parent;   /* union-find parent by id */
	size_t n, cap;    /* ids in use, room */
	size_t *slots;    /* hash table of id + 1 (0 = empty) */
	size_t mask;      /* slots size - 1 */
} texts_t;

static uint64_t str_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

static int texts_grow_table(texts_t *t)
{
	size_t cap = (t->mask + 1) * 2, *slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return SG_ENOMEM;
	for (size_t id = 0; id < t->n; id++) {
		size_t i = str_hash(t->str[id]) & (cap - 1);
		while (slots[i])
			i = (i + 1) & (cap - 1);
		slots[i] = id + 1;
	}
	free(t->slots);
	t->slots = slots;
	t->mask = cap - 1;
	return 0;
}

/* The id of text s, adding a copy of it if new; SIZE_MAX when out of memory. */
static size_t texts_intern(texts_t *t, const char *s)
{
	size_t i;

	if ((t->n + 1) * 2 > t->mask + 1 && texts_grow_table(t) != 0)
		return SIZE_MAX;
	for (i = str_hash(s) & t->mask; t->slots[i]; i = (i + 1) & t->mask)
		if (strcmp(t->str[t->slots[i] - 1], s) == 0)
			return t->slots[i] - 1;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 1024;
		char **str = realloc(t->str, cap * sizeof(*str));
		if (str == NULL)
			return SIZE_MAX;
		t->str = str;
		size_t *parent = realloc(t->parent, cap * sizeof(*parent));
		if (parent == NULL)
			return SIZE_MAX;
		t->parent = parent;
		t->cap = cap;
	}
	if ((t->str[t->n] = strdup(s)) == NULL)
		return SIZE_MAX;
	t->parent[t->n] = t->n;
	t->slots[i] = t->n + 1;
	return t->n++;
}

/* The id of text s, SIZE_MAX when absent. */
static size_t texts_lookup(const texts_t *t, const char *s)
{
	if (t->slots == NULL)
		return SIZE_MAX;
	for (size_t i = str_hash(s) & t->mask; t->slots[i]; i = (i + 1) & t->mask)
		if (strcmp(t->str[t->slots[i] - 1], s) == 0)
			return t->slots[i] - 1;
	return SIZE_MAX;
}

static size_t texts_find(texts_t *t, size_t x)
{
	while (t->parent[x] != x) {
		t->parent[x] = t->parent[t->parent[x]]; /* path halving */
		x = t->parent[x];
	}
	return x;
}

static void texts_union(texts_t *t, size_t x, size_t y)
{
	x = texts_find(t, x);
	y = texts_find(t, y);
	if (x != y)
		t->parent[x] = y;
}

static void texts_free(texts_t *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->str[i]);
	free(t->str);
	free(t->parent);
	free(t->slots);
}

/* ---- the data ------------------------------------------------------------- */

typedef struct pair {
	size_t a, b; /* text ids */
	int label;   /* 1 = duplicates */
} pair_t;

static int load_pairs(const char *path, texts_t *t, pair_t **out, size_t *n_out)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t line_cap = 0, n = 0, cap = 0;
	pair_t *pairs = NULL;
	ssize_t got;
	int rc = 0;

	if (f == NULL)
		return SG_EIO;
	while ((got = getline(&line, &line_cap, f)) > 0) {
		json_error_t jerr;
		json_t *o = json_loadb(line, (size_t)got, 0, &jerr);
		const char *a = json_string_value(json_object_get(o, "a"));
		const char *b = json_string_value(json_object_get(o, "b"));
		json_t *label = json_object_get(o, "label");
		if (a == NULL || b == NULL || !json_is_integer(label)) {
			fprintf(stderr, "qqp: %s: skipping a malformed line\n", path);
			json_decref(o);
			continue;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			pair_t *p = realloc(pairs, cap * sizeof(*p));
			if (p == NULL) {
				json_decref(o);
				rc = SG_ENOMEM;
				goto out;
			}
			pairs = p;
		}
		pairs[n].a = texts_intern(t, a);
		pairs[n].b = texts_intern(t, b);
		pairs[n].label = json_integer_value(label) == 1;
		json_decref(o);
		if (pairs[n].a == SIZE_MAX || pairs[n].b == SIZE_MAX) {
			rc = SG_ENOMEM;
			goto out;
		}
		if (pairs[n].label)
			texts_union(t, pairs[n].a, pairs[n].b);
		n++;
	}
	*out = pairs;
	*n_out = n;
	pairs = NULL;
out:
	free(pairs);
	free(line);
	fclose(f);
	return rc;
}

/* ---- options -------------------------------------------------------------- */

typedef struct tool_opts {
	sg_embed_local_opts_t embed;  /* embedder knobs */
	sg_verify_opts_t verify;      /* verifier knobs */
	int use_verify;               /* 1: score with the verifier */
	int rerank;                   /* candidates verified per lookup (>= 1) */
	double th[MAX_THRESHOLDS];    /* thresholds */
	int n_th;                     /* how many */
	double min_prec;              /* summary: best rate at this precision */
	double min_rate;              /* summary: best precision at this rate */
	double dump[3];               /* --dump-false T, --dump-pos LO:HI */
	const char *evidence_path;    /* --dump-evidence FILE or NULL */
	const char *path;             /* the data file */
	const char *ext_path;  /* external sentence vectors by text */
	int ext_dim;
	double ext_weight;
} tool_opts_t;

static void usage(void)
{
	fprintf(stderr,
		"usage: qqp [--dim N] [--word W] [--bigram W] [--char W]\n"
		"           [--char-min N] [--char-max N] [--stop W] [--qword W]\n"
		"           [--pronoun W] [--modal W] [--number W] [--qtype W]\n"
		"           [--no-stem] [--thresholds FROM:TO:STEP]\n"
		"           [--min-precision P] [--min-rate R] [--dump-false T]\n"
		"           [--dump-pos LO:HI] [--verify] [--rerank K] [--v-sub W]\n"
		"           [--v-extra W] [--v-number W] [--v-negation W] [--v-qtype W]\n"
		"           [--v-antonym W] [--v-order W] [--v-context W]\n"
		"           [--dump-evidence FILE]\n"
		"           [--ext FILE --ext-dim N --ext-weight W] [qqp-dev.jsonl]\n");
}

static int parse_args(int argc, char **argv, tool_opts_t *t)
{
	double from = 0.70, to = 0.98, step = 0.02;
	sg_embed_local_opts_t *o = &t->embed;
	sg_verify_opts_t *v = &t->verify;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(arg, "--no-stem") == 0) {
			o->no_stem = 1;
			continue;
		}
		if (strcmp(arg, "--verify") == 0) {
			t->use_verify = 1;
			continue;
		}
		if (arg[0] != '-') {
			t->path = arg;
			continue;
		}
		if (val == NULL) {
			usage();
			return -1;
		}
		i++;
		if (strcmp(arg, "--dim") == 0)
			o->dim = atoi(val);
		else if (strcmp(arg, "--word") == 0)
			o->word_weight = strtof(val, NULL);
		else if (strcmp(arg, "--bigram") == 0)
			o->bigram_weight = strtof(val, NULL);
		else if (strcmp(arg, "--char") == 0)
			o->char_weight = strtof(val, NULL);
		else if (strcmp(arg, "--char-min") == 0)
			o->char_min = atoi(val);
		else if (strcmp(arg, "--char-max") == 0)
			o->char_max = atoi(val);
		else if (strcmp(arg, "--stop") == 0)
			o->stop_weight = strtof(val, NULL);
		else if (strcmp(arg, "--qword") == 0)
			o->qword_weight = strtof(val, NULL);
		else if (strcmp(arg, "--pronoun") == 0)
			o->pronoun_weight = strtof(val, NULL);
		else if (strcmp(arg, "--modal") == 0)
			o->modal_weight = strtof(val, NULL);
		else if (strcmp(arg, "--qtype") == 0)
			o->qtype_weight = strtof(val, NULL);
		else if (strcmp(arg, "--number") == 0)
			o->number_weight = strtof(val, NULL);
		else if (strcmp(arg, "--min-precision") == 0)
			t->min_prec = strtod(val, NULL);
		else if (strcmp(arg, "--min-rate") == 0)
			t->min_rate = strtod(val, NULL);
		else if (strcmp(arg, "--rerank") == 0) {
			t->rerank = atoi(val);
			t->use_verify = 1;
			if (t->rerank < 1 || t->rerank > MAX_RERANK) {
				usage();
				return -1;
			}
		} else if (strcmp(arg, "--v-sub") == 0)
			v->substitution = strtof(val, NULL);
		else if (strcmp(arg, "--v-extra") == 0)
			v->extra = strtof(val, NULL);
		else if (strcmp(arg, "--v-number") == 0)
			v->number = strtof(val, NULL);
		else if (strcmp(arg, "--v-negation") == 0)
			v->negation = strtof(val, NULL);
		else if (strcmp(arg, "--v-qtype") == 0)
			v->qtype = strtof(val, NULL);
		else if (strcmp(arg, "--v-antonym") == 0)
			v->antonym = strtof(val, NULL);
		else if (strcmp(arg, "--v-order") == 0)
			v->order = strtof(val, NULL);
		else if (strcmp(arg, "--v-context") == 0)
			v->context = strtof(val, NULL);
		else if (strcmp(arg, "--ext") == 0)
			t->ext_path = val;
		else if (strcmp(arg, "--ext-dim") == 0)
			t->ext_dim = atoi(val);
		else if (strcmp(arg, "--ext-weight") == 0)
			t->ext_weight = strtod(val, NULL);
		else if (strcmp(arg, "--dump-evidence") == 0)
			t->evidence_path = val;
		else if (strcmp(arg, "--dump-false") == 0)
			t->dump[0] = strtod(val, NULL);
		else if (strcmp(arg, "--dump-pos") == 0) {
			if (sscanf(val, "%lf:%lf", &t->dump[1], &t->dump[2]) != 2) {
				usage();
				return -1;
			}
		}
		else if (strcmp(arg, "--thresholds") == 0) {
			if (sscanf(val, "%lf:%lf:%lf", &from, &to, &step) != 3 ||
			    step <= 0 || to < from) {
				usage();
				return -1;
			}
		} else {
			usage();
			return -1;
		}
	}
	if (t->ext_path && (t->ext_dim < 1 || t->ext_dim > 4096 || t->ext_weight < 0 ||
			    t->ext_weight > 1)) {
		usage();
		return -1;
	}
	t->n_th = 0;
	for (double x = from; x <= to + step / 2 && t->n_th < MAX_THRESHOLDS; x += step)
		t->th[t->n_th++] = x;
	return 0;
}

/* ---- external sentence vectors ---------------------------------------------- */

/*
 * --ext FILE: sentence vectors computed elsewhere (a model, word vectors),
 * to measure what they would add to the embedder before building them in.
 * FILE holds records of: u32 little-endian byte length, the text's bytes,
 * ext_dim float32 (L2-normalised). Returns the vectors by text id (n_texts
 * rows, zero for texts without a record, counted in *missing), or NULL.
 */
static float *load_ext(const char *path, int edim, texts_t *t, size_t *missing)
{
	size_t n_texts = t->n, row = (size_t)edim * sizeof(float);
	float *vecs = calloc(n_texts, row), *v = malloc(row);
	unsigned char *have = calloc(n_texts, 1);
	char *buf = malloc(1 << 16);
	FILE *f = fopen(path, "rb");
	unsigned char hdr[4];
	int ok = vecs && v && have && buf && f;

	while (ok && fread(hdr, 1, 4, f) == 4) {
		uint32_t len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
		if (len >= (1 << 16) || fread(buf, 1, len, f) != len ||
		    fread(v, sizeof(float), (size_t)edim, f) != (size_t)edim) {
			fprintf(stderr, "qqp: %s: truncated record or wrong --ext-dim\n", path);
			ok = 0;
			break;
		}
		buf[len] = '\0';
		size_t id = texts_lookup(t, buf);
		if (id != SIZE_MAX) {
			memcpy(vecs + id * (size_t)edim, v, row);
			have[id] = 1;
		}
	}
	if (ok && ferror(f))
		ok = 0;
	*missing = 0;
	for (size_t i = 0; ok && i < n_texts; i++)
		*missing += !have[i];
	if (f == NULL)
		fprintf(stderr, "qqp: %s: %s\n", path, strerror(errno));
	if (f)
		fclose(f);
	free(buf);
	free(have);
	free(v);
	if (!ok) {
		free(vecs);
		return NULL;
	}
	return vecs;
}

/* [sqrt(1 - w) lex, sqrt(w) ext]: the cosine of two such vectors is
 * (1 - w) cos_lex + w cos_ext. */
static void mix_ext(float *out, const float *lex, int dim, const float *ext, int edim,
		    double w)
{
	float a = (float)sqrt(1 - w), b = (float)sqrt(w);

	for (int i = 0; i < dim; i++)
		out[i] = a * lex[i];
	for (int i = 0; i < edim; i++)
		out[dim + i] = b * ext[i];
}

/* Replace *vecs (n rows of dim) by their mixes with the external vectors of
 * the texts text_ids[0..n). */
static int mix_all(float **vecs, size_t n, int dim, const float *ext, int edim, double w,
		   const size_t *text_ids)
{
	size_t nd = (size_t)dim + (size_t)edim;
	float *out = malloc(n * nd * sizeof(float));

	if (out == NULL)
		return SG_ENOMEM;
	for (size_t i = 0; i < n; i++)
		mix_ext(out + i * nd, *vecs + i * (size_t)dim, dim,
			ext + text_ids[i] * (size_t)edim, edim, w);
	free(*vecs);
	*vecs = out;
	return 0;
}

/* ---- the second stage ------------------------------------------------------ */

/*
 * Verify each lookup's top-k candidates (k = t->rerank) and keep the best
 * verified score: hit[i] and scores[i] become the winner and its score,
 * cosine[i] its cosine. *verify_us gets the time spent in the verifier,
 * *n_verify the pairs it scored.
 */
static int verify_lookups(const tool_opts_t *o, const sg_index_t *ix, texts_t *t,
			  const pair_t *pairs, size_t n_pairs, const size_t *a_of_slot,
			  const float *bvecs, int64_t *hit, float *scores, float *cosine,
			  sg_verify_evidence_t *evidence, uint64_t *verify_us,
			  size_t *n_verify, FILE *dump)
{
	sg_verify_t *v = NULL;
	int k = o->rerank, rc;
	int64_t *ids = malloc(n_pairs * (size_t)k * sizeof(*ids));
	float *cos = malloc(n_pairs * (size_t)k * sizeof(*cos));

	*verify_us = 0;
	*n_verify = 0;
	if (ids == NULL || cos == NULL) {
		rc = SG_ENOMEM;
		goto out;
	}
	if ((rc = sg_verify_new(&v, &o->verify)) != 0)
		goto out;
	if ((rc = sg_index_search_batch(ix, n_pairs, bvecs, k, ids, cos)) != 0)
		goto out;
	uint64_t t0 = sg_now_us();
	for (size_t i = 0; i < n_pairs; i++) {
		const char *b = t->str[pairs[i].b];
		size_t blen = strlen(b);
		float best = -1;
		hit[i] = -1;
		for (int j = 0; j < k; j++) {
			int64_t id = ids[i * (size_t)k + (size_t)j];
			sg_verify_evidence_t ev;
			if (id < 0)
				continue;
			const char *a = t->str[a_of_slot[id]];
			float s = sg_verify_explain(v, b, blen, a, strlen(a),
						    cos[i * (size_t)k + (size_t)j], &ev);
			(*n_verify)++;
			if (dump) {
				size_t ai = a_of_slot[id];
				int ok = texts_find(t, ai) == texts_find(t, pairs[i].b);
				fprintf(dump, "%zu\t%d\t%d\t%d\t%d\t%.4f\t%.4f\t%.2f\t%.2f"
					"\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n",
					i, j, pairs[i].label, ok, ai == pairs[i].a,
					ev.cosine, ev.score, ev.miss_a, ev.miss_b,
					ev.number, ev.negation, ev.qtype, ev.antonym,
					ev.order, ev.context, ev.covered);
			}
			if (s > best) { /* ties keep the nearer vector */
				best = s;
				hit[i] = id;
				scores[i] = s;
				cosine[i] = ev.cosine;
				evidence[i] = ev;
			}
		}
	}
	*verify_us = sg_now_us() - t0;
out:
	sg_verify_free(v);
	free(cos);
	free(ids);
	return rc;
}

static void print_evidence(FILE *f, const sg_verify_evidence_t *ev)
{
	fprintf(f, "  cos %.3f -> %.3f  miss %.2f/%.2f%s%s%s%s%s%s%s\n", ev->cosine,
		ev->score, ev->miss_a, ev->miss_b, ev->number ? " number" : "",
		ev->negation ? " negation" : "", ev->qtype ? " qtype" : "",
		ev->antonym ? " antonym" : "", ev->order ? " order" : "",
		ev->context ? " context" : "", ev->covered ? " covered" : "");
}

/* Figures at threshold th over all pairs (half < 0) or over the pairs whose
 * a hashes to that half (half 0 or 1; the index still holds every a). */
typedef struct score {
	size_t hits;     /* lookups scoring >= th */
	double prec;     /* correct hits / hits */
	double pos_rate; /* correct hits on label-1 pairs / label-1 pairs */
	double neg_rate; /* false hits on label-0 pairs / label-0 pairs */
} score_t;

static score_t score_at(texts_t *t, const pair_t *pairs,
			size_t n_pairs, const size_t *a_of_slot, const int64_t *hit,
			const float *scores, double th, int half)
{
	size_t hits = 0, correct = 0, pos_correct = 0, neg_false = 0, n_pos = 0, n_neg = 0;
	score_t sc;

	for (size_t i = 0; i < n_pairs; i++) {
		if (half >= 0 && (int)((str_hash(t->str[pairs[i].a]) >> 7) & 1) != half)
			continue;
		*(pairs[i].label ? &n_pos : &n_neg) += 1;
		if (hit[i] < 0 || scores[i] < th - 1e-6)
			continue;
		size_t a = a_of_slot[hit[i]];
		int ok = texts_find(t, a) == texts_find(t, pairs[i].b);
		hits++;
		correct += ok;
		if (pairs[i].label)
			pos_correct += ok;
		else
			neg_false += !ok;
	}
	sc.hits = hits;
	sc.prec = hits ? (double)correct / (double)hits : 0;
	sc.pos_rate = n_pos ? (double)pos_correct / (double)n_pos : 0;
	sc.neg_rate = n_neg ? (double)neg_false / (double)n_neg : 0;
	return sc;
}

/* ---- main ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
	tool_opts_t o = {.rerank = 1, .min_prec = 0.90, .min_rate = 0.20,
			 .dump = {2, 2, 2}, .path = "../shared/data/qqp-dev.jsonl"};
	int dim, rc, status = 1;
	texts_t t = {0};
	pair_t *pairs = NULL;
	size_t n_pairs = 0, n_a = 0, n_pos = 0, n_neg = 0, n_embeds = 0, n_verify = 0;
	size_t *a_of_slot = NULL, *slot_of_text = NULL;
	sg_embed_local_t *e = NULL;
	sg_index_t *ix = NULL;
	float *avecs = NULL, *bvecs = NULL, *scores = NULL, *cosine = NULL;
	sg_verify_evidence_t *evidence = NULL;
	int64_t *ids = NULL, *hit = NULL;
	uint64_t t0, embed_us = 0, verify_us = 0;

	if (parse_args(argc, argv, &o) != 0)
		return 2;
	if ((rc = sg_embed_local_new(&e, &o.embed)) != 0) {
		fprintf(stderr, "qqp: embedder: %s\n", sg_strerror(rc));
		return 2;
	}
	dim = sg_embed_local_dim(e);
	if ((rc = load_pairs(o.path, &t, &pairs, &n_pairs)) != 0) {
		if (rc == SG_EIO && errno == ENOENT) {
			printf("qqp: %s not found; nothing to measure\n", o.path);
			status = 0;
		} else {
			fprintf(stderr, "qqp: %s: %s\n", o.path, sg_strerror(rc));
		}
		goto out;
	}

	/* distinct a texts, numbered by first appearance: the index ids */
	slot_of_text = malloc(t.n * sizeof(*slot_of_text));
	a_of_slot = malloc(t.n * sizeof(*a_of_slot));
	if (slot_of_text == NULL || a_of_slot == NULL)
		goto oom;
	for (size_t i = 0; i < t.n; i++)
		slot_of_text[i] = SIZE_MAX;
	for (size_t i = 0; i < n_pairs; i++)
		if (slot_of_text[pairs[i].a] == SIZE_MAX) {
			slot_of_text[pairs[i].a] = n_a;
			a_of_slot[n_a++] = pairs[i].a;
		}

	avecs = malloc(n_a * (size_t)dim * sizeof(float));
	bvecs = malloc(n_pairs * (size_t)dim * sizeof(float));
	ids = malloc((n_a > n_pairs ? n_a : n_pairs) * sizeof(*ids));
	hit = malloc(n_pairs * sizeof(*hit));
	scores = malloc(n_pairs * sizeof(*scores));
	cosine = malloc(n_pairs * sizeof(*cosine));
	evidence = calloc(n_pairs, sizeof(*evidence));
	if (!avecs || !bvecs || !ids || !hit || !scores || !cosine || !evidence)
		goto oom;

	t0 = sg_now_us();
	for (size_t s = 0; s < n_a; s++) {
		const char *txt = t.str[a_of_slot[s]];
		if ((rc = sg_embed_local_embed(e, txt, strlen(txt),
					       avecs + s * (size_t)dim)) != 0)
			goto embed_fail;
		ids[s] = (int64_t)s;
	}
	for (size_t i = 0; i < n_pairs; i++) {
		const char *txt = t.str[pairs[i].b];
		if ((rc = sg_embed_local_embed(e, txt, strlen(txt),
					       bvecs + i * (size_t)dim)) != 0)
			goto embed_fail;
	}
	embed_us = sg_now_us() - t0;
	n_embeds = n_a + n_pairs;

	if (o.ext_path) {
		size_t missing = 0;
		float *ext = load_ext(o.ext_path, o.ext_dim, &t, &missing);
		if (ext == NULL)
			goto out;
		if (missing)
			fprintf(stderr, "qqp: %s: no vector for %zu of %zu texts (zero)\n",
				o.ext_path, missing, t.n);
		size_t *b_ids = malloc(n_pairs * sizeof(*b_ids));
		rc = b_ids ? 0 : SG_ENOMEM;
		for (size_t i = 0; b_ids && i < n_pairs; i++)
			b_ids[i] = pairs[i].b;
		if (rc == 0)
			rc = mix_all(&avecs, n_a, dim, ext, o.ext_dim, o.ext_weight, a_of_slot);
		if (rc == 0)
			rc = mix_all(&bvecs, n_pairs, dim, ext, o.ext_dim, o.ext_weight, b_ids);
		free(b_ids);
		free(ext);
		if (rc)
			goto oom;
		dim += o.ext_dim;
	}
	if ((rc = sg_index_new(&ix, dim, SG_INDEX_FLAT, NULL)) != 0 ||
	    (rc = sg_index_add_batch(ix, n_a, ids, avecs)) != 0 ||
	    (rc = sg_index_search_batch(ix, n_pairs, bvecs, 1, hit, scores)) != 0) {
		fprintf(stderr, "qqp: index: %s\n", sg_strerror(rc));
		goto out;
	}
	memcpy(cosine, scores, n_pairs * sizeof(*cosine));
	if (o.use_verify) {
		FILE *dump = NULL;
		if (o.evidence_path && (dump = fopen(o.evidence_path, "w")) == NULL) {
			fprintf(stderr, "qqp: %s: %s\n", o.evidence_path, strerror(errno));
			goto out;
		}
		if (dump)
			fprintf(dump, "pair\trank\tlabel\tcorrect\town\tcosine\tscore"
				      "\tmiss_a\tmiss_b\tnumber\tnegation\tqtype"
				      "\tantonym\torder\tcontext\tcovered\n");
		rc = verify_lookups(&o, ix, &t, pairs, n_pairs, a_of_slot, bvecs, hit,
				    scores, cosine, evidence, &verify_us, &n_verify, dump);
		if (dump)
			fclose(dump);
		if (rc != 0) {
			fprintf(stderr, "qqp: verify: %s\n", sg_strerror(rc));
			goto out;
		}
	}

	for (size_t i = 0; i < n_pairs; i++)
		*(pairs[i].label ? &n_pos : &n_neg) += 1;
	printf("embedder   %s\n", sg_embed_local_id(e));
	if (o.ext_path)
		printf("external   %s (dimension %d), weight %.2f\n", o.ext_path, o.ext_dim,
		       o.ext_weight);
	printf("data       %s: %zu pairs (%zu label 1, %zu label 0), %zu distinct a\n",
	       o.path, n_pairs, n_pos, n_neg, n_a);
	printf("embed      %.2f us per text (%zu texts, 1 thread)\n", (double)embed_us /
	       (double)n_embeds, n_embeds);
	if (o.use_verify) {
		sg_verify_opts_t vo = o.verify;
		printf("verify     top-%d, knobs sub %g extra %g number %g negation %g "
		       "qtype %g antonym %g order %g context %g (0 = default)\n",
		       o.rerank, vo.substitution, vo.extra, vo.number, vo.negation,
		       vo.qtype, vo.antonym, vo.order, vo.context);
		printf("verify     %.2f us per pair (%zu pairs, 1 thread)\n",
		       n_verify ? (double)verify_us / (double)n_verify : 0.0, n_verify);
	}
	printf("\n| threshold | hits | precision | positive hit rate "
	       "| negative false-hit rate |\n");
	printf("|---|---|---|---|---|\n");

	for (size_t i = 0; i < n_pairs && o.dump[0] <= 1; i++) {
		if (hit[i] < 0 || scores[i] < o.dump[0])
			continue;
		size_t a = a_of_slot[hit[i]];
		if (texts_find(&t, a) != texts_find(&t, pairs[i].b)) {
			fprintf(stderr, "FALSE %.3f label %d\n  b: %s\n  hit: %s\n",
				scores[i], pairs[i].label, t.str[pairs[i].b],
				t.str[a]);
			if (o.use_verify)
				print_evidence(stderr, &evidence[i]);
		}
	}

	if (o.dump[1] <= 1) {
		/* correct top-1 on duplicates scoring in [lo, hi) */
		double lo = o.dump[1], hi = o.dump[2];
		for (size_t i = 0; i < n_pairs; i++) {
			if (!pairs[i].label || hit[i] < 0 || scores[i] < lo ||
			    scores[i] >= hi)
				continue;
			size_t a = a_of_slot[hit[i]];
			if (texts_find(&t, a) == texts_find(&t, pairs[i].b)) {
				fprintf(stderr, "POS %.3f\n  b: %s\n  hit: %s\n",
					scores[i], t.str[pairs[i].b], t.str[a]);
				if (o.use_verify)
					print_evidence(stderr, &evidence[i]);
			}
		}
	}

	/* enough decimals to tell the thresholds apart */
	int decimals = 2;
	if (o.n_th > 1 && o.th[1] - o.th[0] < 0.0099)
		decimals = 3;

	for (int k = 0; k < o.n_th; k++) {
		score_t sc = score_at(&t, pairs, n_pairs, a_of_slot, hit, scores,
				      o.th[k], -1);
		printf("| %.*f | %zu | %.3f | %.3f | %.3f |\n", decimals, o.th[k], sc.hits,
		       sc.prec, sc.pos_rate, sc.neg_rate);
	}
	/* the summary on the whole file, then on each half (split by a hash of
	 * a): a gain from tuning should show on both */
	for (int half = -1; half <= 1; half++) {
		double best_rate = -1, best_th = 0, best_prec = 0;
		double rate_prec = -1, rate_th = 0, rate_rate = 0;
		const char *name = half < 0 ? "" : half == 0 ? "half 0: " : "half 1: ";
		for (int k = 0; k < o.n_th; k++) {
			score_t sc = score_at(&t, pairs, n_pairs, a_of_slot, hit,
					      scores, o.th[k], half);
			if (sc.hits && sc.prec >= o.min_prec && sc.pos_rate > best_rate) {
				best_rate = sc.pos_rate;
				best_th = o.th[k];
				best_prec = sc.prec;
			}
			if (sc.hits && sc.pos_rate >= o.min_rate && sc.prec > rate_prec) {
				rate_prec = sc.prec;
				rate_th = o.th[k];
				rate_rate = sc.pos_rate;
			}
		}
		printf("\n");
		if (best_rate >= 0)
			printf("%sbest: threshold %.*f: precision %.3f at positive hit rate "
			       "%.3f\n", name, decimals, best_th, best_prec, best_rate);
		else
			printf("%sbest: no threshold reaches precision %.2f\n", name,
			       o.min_prec);
		if (rate_prec >= 0)
			printf("%sat rate >= %.2f: threshold %.*f: precision %.3f at positive "
			       "hit rate %.3f\n", name, o.min_rate, decimals, rate_th,
			       rate_prec, rate_rate);
		else
			printf("%sat rate >= %.2f: no threshold reaches it\n", name,
			       o.min_rate);
	}
	status = 0;
	goto out;

embed_fail:
	fprintf(stderr, "qqp: embed: %s\n", sg_strerror(rc));
	goto out;
oom:
	fprintf(stderr, "qqp: out of memory\n");
out:
	sg_index_free(ix);
	sg_embed_local_free(e);
	free(evidence);
	free(cosine);
	free(scores);
	free(hit);
	free(ids);
	free(bvecs);
	free(avecs);
	free(a_of_slot);
	free(slot_of_text);
	free(pairs);
	texts_free(&t);
	return status;
}
