/* Unit tests for the vector index (index/index.c). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "semgate/buf.h"
#include "semgate/index.h"
#include "index_blob.h"

/*
 * FAISS 1.7.3's read_index leaks the half-built index when it throws on
 * truncated data (raw new without RAII); test_corrupt reaches that path on
 * purpose, past our checksum. Tell LeakSanitizer it is known.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:faiss::read_index\n";
}

/* Deterministic xorshift so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static double rng_uniform(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (double)(rng_state >> 11) / 9007199254740992.0;
}

static void random_unit(float *v, int dim)
{
	double norm = 0;
	for (int i = 0; i < dim; i++) {
		/* Box-Muller: isotropic directions */
		double u = rng_uniform() + 1e-12, w = rng_uniform();
		v[i] = (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * w));
		norm += (double)v[i] * v[i];
	}
	norm = sqrt(norm);
	for (int i = 0; i < dim; i++)
		v[i] = (float)(v[i] / norm);
}

static float *random_set(size_t n, int dim)
{
	float *v = malloc(n * (size_t)dim * sizeof(float));
	for (size_t i = 0; i < n; i++)
		random_unit(v + i * dim, dim);
	return v;
}

static void test_flat_basic(void)
{
	enum { DIM = 16, N = 200 };
	float *vecs = random_set(N, DIM);
	sg_index_t *ix;
	int64_t ids[5];
	float scores[5];
	int n;

	CHECK_RC(sg_index_new(&ix, 0, SG_INDEX_FLAT, NULL), SG_EINVAL);
	CHECK_RC(sg_index_new(&ix, DIM, SG_INDEX_FLAT, NULL), 0);

	/* empty index: no results, no error */
	CHECK_RC(sg_index_search(ix, vecs, 1, ids, scores, &n), 0);
	CHECK(n == 0);

	for (int i = 0; i < N; i++)
		CHECK_RC(sg_index_add(ix, 1000 + i, vecs + i * DIM), 0);
	CHECK(sg_index_count(ix) == N);
	CHECK_RC(sg_index_add(ix, 1000, vecs), SG_EEXIST);
	CHECK_RC(sg_index_add(ix, -1, vecs), SG_EINVAL);
	CHECK(sg_index_count(ix) == N);

	/* every vector finds itself first, with cosine 1, scores descending */
	for (int i = 0; i < N; i++) {
		CHECK_RC(sg_index_search(ix, vecs + i * DIM, 5, ids, scores, &n), 0);
		CHECK(n == 5);
		CHECK(ids[0] == 1000 + i);
		CHECK(fabsf(scores[0] - 1.0f) < 1e-4f);
		for (int j = 1; j < n; j++)
			CHECK(scores[j] <= scores[j - 1]);
	}
	CHECK_RC(sg_index_search(ix, vecs, 0, ids, scores, &n), SG_EINVAL);

	/* removal: gone from results, a second removal is not found, re-add works */
	CHECK_RC(sg_index_remove(ix, 1007), 0);
	CHECK_RC(sg_index_remove(ix, 1007), SG_ENOTFOUND);
	CHECK(sg_index_count(ix) == N - 1);
	CHECK_RC(sg_index_search(ix, vecs + 7 * DIM, 5, ids, scores, &n), 0);
	for (int j = 0; j < n; j++)
		CHECK(ids[j] != 1007);
	CHECK_RC(sg_index_search(ix, vecs + 8 * DIM, 1, ids, NULL, &n), 0);
	CHECK(n == 1 && ids[0] == 1008); /* ids after the hole still map right */
	CHECK_RC(sg_index_add(ix, 1007, vecs + 7 * DIM), 0);
	CHECK_RC(sg_index_search(ix, vecs + 7 * DIM, 1, ids, scores, &n), 0);
	CHECK(n == 1 && ids[0] == 1007);

	/* k larger than the index: everything, once */
	{
		sg_index_t *small;
		int64_t many[8];
		CHECK_RC(sg_index_new(&small, DIM, SG_INDEX_FLAT, NULL), 0);
		int64_t bids[3] = {1, 2, 3};
		CHECK_RC(sg_index_add_batch(small, 3, bids, vecs), 0);
		int64_t dup[2] = {9, 9};
		CHECK_RC(sg_index_add_batch(small, 2, dup, vecs), SG_EEXIST);
		CHECK(sg_index_count(small) == 3);
		CHECK_RC(sg_index_search(small, vecs, 8, many, NULL, &n), 0);
		CHECK(n == 3);
		sg_index_free(small);
	}
	sg_index_free(ix);
	free(vecs);
}

/* HNSW's top-1 must agree with exact search on random data. */
static void test_hnsw_recall(void)
{
	enum { DIM = 32, N = 20000, Q = 500 };
	float *base = random_set(N, DIM), *queries = random_set(Q, DIM);
	int64_t *ids = malloc(N * sizeof(*ids));
	sg_index_t *flat, *hnsw;
	int agree = 0;

	for (int i = 0; i < N; i++)
		ids[i] = i;
	CHECK_RC(sg_index_new(&flat, DIM, SG_INDEX_FLAT, NULL), 0);
	CHECK_RC(sg_index_new(&hnsw, DIM, SG_INDEX_HNSW, NULL), 0);
	CHECK_RC(sg_index_add_batch(flat, N, ids, base), 0);
	CHECK_RC(sg_index_add_batch(hnsw, N, ids, base), 0);
	for (int q = 0; q < Q; q++) {
		int64_t a, b;
		int na, nb;
		CHECK_RC(sg_index_search(flat, queries + q * DIM, 1, &a, NULL, &na), 0);
		CHECK_RC(sg_index_search(hnsw, queries + q * DIM, 1, &b, NULL, &nb), 0);
		agree += na == 1 && nb == 1 && a == b;
	}
	printf("hnsw recall@1 vs flat: %.3f (%d vectors, dim %d, %d queries)\n",
	       (double)agree / Q, N, DIM, Q);
	CHECK((double)agree / Q >= 0.95);
	sg_index_free(flat);
	sg_index_free(hnsw);
	free(ids);
	free(base);
	free(queries);
}

/*
 * semgate walks HNSW graphs itself (index/hnsw_search.cpp). On one graph
 * (serialised once, loaded twice) it must agree with FAISS's own search,
 * report exact inner products best first without duplicates, keep recall
 * against exact search, and give every thread the same answers at once.
 * DIM 20 is not a multiple of 8: the kernel's tail runs.
 */
enum { WALK_DIM = 20, WALK_N = 6000, WALK_Q = 300, WALK_K = 8 };

struct walk_job {
	const sg_index_t *ix;
	const float *queries;
	const int64_t *want; /* WALK_Q x WALK_K ids from one thread */
	int mismatches;
};

static void *walk_thread(void *arg)
{
	struct walk_job *j = arg;
	for (int round = 0; round < 3; round++)
		for (int q = 0; q < WALK_Q; q++) {
			int64_t got[WALK_K];
			int n;
			if (sg_index_search(j->ix, j->queries + q * WALK_DIM, WALK_K, got, NULL,
					    &n) != 0 || n != WALK_K ||
			    memcmp(got, j->want + q * WALK_K, sizeof(got)) != 0)
				j->mismatches++;
		}
	return NULL;
}

static void test_hnsw_walk(void)
{
	float *base = random_set(WALK_N, WALK_DIM), *queries = random_set(WALK_Q, WALK_DIM);
	int64_t *ids = malloc(WALK_N * sizeof(*ids)), *want = malloc(WALK_Q * WALK_K * sizeof(*want));
	sg_index_t *built, *walk, *faiss, *flat;
	sg_buf_t blob;
	int top_agree = 0, walk_exact = 0, faiss_exact = 0;

	for (int i = 0; i < WALK_N; i++)
		ids[i] = 7 * i + 1;
	CHECK_RC(sg_index_new(&built, WALK_DIM, SG_INDEX_HNSW, NULL), 0);
	CHECK_RC(sg_index_add_batch(built, WALK_N, ids, base), 0);
	sg_buf_init(&blob, 0);
	CHECK_RC(sg_index_serialize(built, &blob), 0);
	CHECK_RC(sg_index_new(&walk, WALK_DIM, SG_INDEX_HNSW, NULL), 0);
	CHECK_RC(sg_index_load(walk, blob.data, blob.len), 0);
	CHECK_RC(sg_index_new(&faiss, WALK_DIM, SG_INDEX_HNSW,
			      &(sg_index_opts_t){.hnsw_search = SG_INDEX_SEARCH_FAISS}), 0);
	CHECK_RC(sg_index_load(faiss, blob.data, blob.len), 0);
	CHECK_RC(sg_index_new(&flat, WALK_DIM, SG_INDEX_FLAT, NULL), 0);
	CHECK_RC(sg_index_add_batch(flat, WALK_N, ids, base), 0);

	for (int q = 0; q < WALK_Q; q++) {
		const float *qv = queries + q * WALK_DIM;
		int64_t a[WALK_K], b[WALK_K], e[1];
		float sa[WALK_K], sb[WALK_K];
		int na, nb, ne;
		CHECK_RC(sg_index_search(walk, qv, WALK_K, a, sa, &na), 0);
		CHECK_RC(sg_index_search(faiss, qv, WALK_K, b, sb, &nb), 0);
		CHECK_RC(sg_index_search(flat, qv, 1, e, NULL, &ne), 0);
		CHECK(na == WALK_K && nb == WALK_K && ne == 1);
		memcpy(want + q * WALK_K, a, sizeof(a));
		top_agree += a[0] == b[0];
		walk_exact += a[0] == e[0];
		faiss_exact += b[0] == e[0];
		for (int i = 0; i < na; i++) {
			/* the id maps back to its vector, and the score is its inner product */
			CHECK(a[i] >= 1 && (a[i] - 1) % 7 == 0 && (a[i] - 1) / 7 < WALK_N);
			const float *v = base + (a[i] - 1) / 7 * WALK_DIM;
			double dot = 0;
			for (int d = 0; d < WALK_DIM; d++)
				dot += (double)qv[d] * v[d];
			CHECK(fabs(dot - sa[i]) < 1e-5);
			if (i > 0)
				CHECK(sa[i] <= sa[i - 1]);
			for (int j = 0; j < i; j++)
				CHECK(a[i] != a[j]);
		}
	}
	printf("hnsw walk: top-1 agrees with FAISS's search %.3f; recall@1 walk %.3f, FAISS %.3f\n",
	       (double)top_agree / WALK_Q, (double)walk_exact / WALK_Q,
	       (double)faiss_exact / WALK_Q);
	CHECK((double)top_agree / WALK_Q >= 0.95);
	CHECK((double)walk_exact / WALK_Q >= 0.95);
	CHECK(walk_exact + WALK_Q / 50 >= faiss_exact); /* no worse than FAISS's search */

	/* four threads at once: per-thread scratch, same answers as alone */
	pthread_t th[4];
	struct walk_job jobs[4];
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct walk_job){walk, queries, want, 0};
		CHECK(pthread_create(&th[i], NULL, walk_thread, &jobs[i]) == 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(jobs[i].mismatches == 0);
	}

	/* a graph wider than the walk gathers (2*M > 256 links at level 0) goes
	 * to FAISS's own search, with the same answers */
	sg_index_t *wide;
	int64_t top;
	int nt;
	CHECK_RC(sg_index_new(&wide, WALK_DIM, SG_INDEX_HNSW, &(sg_index_opts_t){.hnsw_m = 150}), 0);
	CHECK_RC(sg_index_add_batch(wide, 400, ids, base), 0);
	for (int i = 0; i < 400; i += 37) {
		CHECK_RC(sg_index_search(wide, base + i * WALK_DIM, 1, &top, NULL, &nt), 0);
		CHECK(nt == 1 && top == ids[i]);
	}
	sg_index_free(wide);

	/* fewer vectors than asked for: all of them, then -1s never leak out */
	sg_index_t *tiny;
	int64_t out[16];
	int n;
	CHECK_RC(sg_index_new(&tiny, WALK_DIM, SG_INDEX_HNSW, NULL), 0);
	CHECK_RC(sg_index_add_batch(tiny, 5, ids, base), 0);
	CHECK_RC(sg_index_search(tiny, base, 16, out, NULL, &n), 0);
	CHECK(n == 5 && out[0] == ids[0]);
	for (int i = 0; i < n; i++)
		CHECK(out[i] >= 0);
	sg_index_free(tiny);

	sg_buf_free(&blob);
	sg_index_free(built);
	sg_index_free(walk);
	sg_index_free(faiss);
	sg_index_free(flat);
	free(ids);
	free(want);
	free(base);
	free(queries);
}

/* Tombstones are filtered, survive rebuilds, and tombstoned ids can be reused. */
static void test_hnsw_remove(void)
{
	enum { DIM = 16, N = 400 };
	float *vecs = random_set(N, DIM);
	int64_t ids[N], out[10];
	sg_index_t *ix;
	int n;

	for (int i = 0; i < N; i++)
		ids[i] = i;
	CHECK_RC(sg_index_new(&ix, DIM, SG_INDEX_HNSW,
			      &(sg_index_opts_t){.hnsw_ef_search = 128}), 0);
	CHECK_RC(sg_index_add_batch(ix, N, ids, vecs), 0);
	/* remove 20%: below the 25% rebuild mark, so these are tombstones */
	for (int i = 0; i < N; i += 5)
		CHECK_RC(sg_index_remove(ix, i), 0);
	CHECK(sg_index_count(ix) == N - N / 5);
	CHECK_RC(sg_index_remove(ix, 0), SG_ENOTFOUND);
	for (int i = 0; i < N; i++) {
		CHECK_RC(sg_index_search(ix, vecs + i * DIM, 10, out, NULL, &n), 0);
		CHECK(n == 10);
		for (int j = 0; j < n; j++)
			CHECK(out[j] % 5 != 0);
		if (i % 5)
			CHECK(out[0] == i);
	}
	/* reusing a tombstoned id must not revive the old vector */
	CHECK_RC(sg_index_add(ix, 0, vecs + 1 * DIM), 0);
	CHECK_RC(sg_index_search(ix, vecs, 10, out, NULL, &n), 0);
	for (int j = 0; j < n; j++)
		CHECK(out[j] != 0 || j > 0); /* id 0 now holds vector 1's data */
	/* push tombstones past the ratio: rebuild, results stay right */
	for (int i = 1; i < N; i += 2)
		if (i % 5)
			CHECK_RC(sg_index_remove(ix, i), 0);
	for (int i = 2; i < N; i += 2) {
		if (i % 5 == 0)
			continue;
		CHECK_RC(sg_index_search(ix, vecs + i * DIM, 1, out, NULL, &n), 0);
		CHECK(n == 1 && out[0] == i);
	}
	sg_index_free(ix);
	free(vecs);
}

static void round_trip(sg_index_type_t type)
{
	enum { DIM = 24, N = 1000 };
	float *vecs = random_set(N, DIM);
	int64_t ids[N];
	sg_index_t *a, *b, *other;
	sg_buf_t blob;

	for (int i = 0; i < N; i++)
		ids[i] = 5 * i + 3;
	CHECK_RC(sg_index_new(&a, DIM, type, NULL), 0);
	CHECK_RC(sg_index_add_batch(a, N, ids, vecs), 0);
	for (int i = 0; i < N; i += 10)
		CHECK_RC(sg_index_remove(a, ids[i]), 0);

	sg_buf_init(&blob, 0);
	CHECK_RC(sg_index_serialize(a, &blob), 0);
	CHECK_RC(sg_index_new(&b, DIM, type, NULL), 0);
	CHECK_RC(sg_index_load(b, blob.data, blob.len), 0);
	CHECK(sg_index_count(b) == sg_index_count(a));
	for (int i = 0; i < N; i++) {
		int64_t ra[5], rb[5];
		float sa[5], sb[5];
		int na, nb;
		CHECK_RC(sg_index_search(a, vecs + i * DIM, 5, ra, sa, &na), 0);
		CHECK_RC(sg_index_search(b, vecs + i * DIM, 5, rb, sb, &nb), 0);
		CHECK(na == nb && memcmp(ra, rb, (size_t)na * sizeof(*ra)) == 0);
		CHECK(na == nb && memcmp(sa, sb, (size_t)na * sizeof(*sa)) == 0);
	}
	/* the loaded index is fully usable: removed ids can come back */
	CHECK_RC(sg_index_add(b, ids[0], vecs), 0);
	CHECK_RC(sg_index_add(b, ids[1], vecs), SG_EEXIST);

	/* a blob of another dimension is refused as a mismatch */
	CHECK_RC(sg_index_new(&other, DIM + 1, type, NULL), 0);
	CHECK_RC(sg_index_load(other, blob.data, blob.len), SG_EMISMATCH);
	sg_index_free(other);

	/* a too-small cap is a clean error that leaves the buffer as it was */
	{
		sg_buf_t capped;
		sg_buf_init(&capped, 100);
		CHECK_RC(sg_index_serialize(a, &capped), SG_ETOOBIG);
		CHECK(capped.len == 0);
		sg_buf_free(&capped);
	}
	sg_buf_free(&blob);
	sg_index_free(a);
	sg_index_free(b);
	free(vecs);
}

/* Damaged blobs give SG_ECORRUPT and leave the target index untouched. */
static void test_corrupt(void)
{
	enum { DIM = 8, N = 50 };
	float *vecs = random_set(N, DIM);
	int64_t ids[N], out;
	sg_index_t *a, *b;
	sg_buf_t blob;
	struct sg__index_blob_header hdr;
	char *copy;
	int n;

	for (int i = 0; i < N; i++)
		ids[i] = i;
	CHECK_RC(sg_index_new(&a, DIM, SG_INDEX_FLAT, NULL), 0);
	CHECK_RC(sg_index_add_batch(a, N, ids, vecs), 0);
	sg_buf_init(&blob, 0);
	CHECK_RC(sg_index_serialize(a, &blob), 0);
	CHECK_RC(sg_index_new(&b, DIM, SG_INDEX_FLAT, NULL), 0);
	CHECK_RC(sg_index_add(b, 77, vecs), 0);

	/* every truncation */
	for (size_t len = 0; len < blob.len; len++)
		CHECK_RC(sg_index_load(b, blob.data, len), SG_ECORRUPT);
	/* a flipped byte anywhere */
	copy = malloc(blob.len);
	for (size_t i = 0; i < blob.len; i += 7) {
		memcpy(copy, blob.data, blob.len);
		copy[i] ^= 0x5a;
		CHECK_RC(sg_index_load(b, copy, blob.len), SG_ECORRUPT);
	}
	/* garbage */
	for (size_t i = 0; i < blob.len; i++)
		copy[i] = (char)(rng_uniform() * 256);
	CHECK_RC(sg_index_load(b, copy, blob.len), SG_ECORRUPT);

	/*
	 * Truncated FAISS data behind a valid header and checksum: this reaches
	 * faiss_read_index, whose C++ exception must come back as an error code.
	 */
	memcpy(&hdr, blob.data, sizeof(hdr));
	for (size_t cut = 1; cut < hdr.faiss_len; cut += 13) {
		size_t flen = hdr.faiss_len - cut;
		struct sg__index_blob_header h2 = hdr;
		h2.faiss_len = flen;
		h2.checksum = 0;
		h2.checksum = sg__index_checksum(sg__index_checksum(
			SG__INDEX_CHECKSUM_SEED, &h2, sizeof(h2)),
			blob.data + sizeof(hdr), flen);
		memcpy(copy, &h2, sizeof(h2));
		memcpy(copy + sizeof(h2), blob.data + sizeof(hdr), flen);
		CHECK_RC(sg_index_load(b, copy, sizeof(h2) + flen), SG_ECORRUPT);
	}
	{
		char msg[256];
		sg_index_errmsg(b, msg, sizeof(msg));
		CHECK(msg[0] != '\0'); /* FAISS said why */
	}

	/* b survived all of it unchanged */
	CHECK(sg_index_count(b) == 1);
	CHECK_RC(sg_index_search(b, vecs + 3 * DIM, 1, &out, NULL, &n), 0);
	CHECK(n == 1 && out == 77);

	free(copy);
	sg_buf_free(&blob);
	sg_index_free(a);
	sg_index_free(b);
	free(vecs);
}

int main(void)
{
	test_flat_basic();
	test_hnsw_recall();
	test_hnsw_remove();
	test_hnsw_walk();
	round_trip(SG_INDEX_FLAT);
	round_trip(SG_INDEX_HNSW);
	test_corrupt();
	CHECK_DONE();
}
