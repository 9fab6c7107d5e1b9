/* Private to the index module and its tests: semgate's single-query walk of
 * a FAISS HNSW graph (index/hnsw_search.cpp explains why it exists). */
#ifndef SEMGATE_HNSW_WALK_H
#define SEMGATE_HNSW_WALK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Search fx (an IndexIDMap2 over an inner-product IndexHNSWFlat) for the k
 * (1..1024) vectors nearest to query, visiting the graph with breadth ef.
 * Fills labels (the ids given at add) and sims (inner products), best first;
 * returns how
 * many were found (< k only when the graph holds fewer), or -1 when fx is not
 * such an index, in which case the caller searches with FAISS. Only reads
 * fx: concurrent calls are safe while nothing modifies it.
 * Per-thread scratch of 1 byte per stored vector stays allocated for the
 * thread's life.
 */
int sg__hnsw_search(const void *fx, const float *query, int k, int ef, int64_t *labels,
		    float *sims);

/*
 * Check once that an HNSW graph read from a checkpoint is one a search can
 * walk: every level, offset, link and the entry point within bounds and
 * consistent with each other and with the vectors stored (a checksum catches
 * damage, not a file made to pass it). 0 when it is (or fx is not an HNSW
 * index: nothing to check), -1 when it is not.
 */
int sg__hnsw_check(const void *fx);

#ifdef __cplusplus
}

/* The inner products of q with x[0..3] (d floats each) into out[0..3]; the
 * SIMD kernel beside the one FAISS uses, in faiss_kernels.cpp. */
void sg__ip4(const float *q, const float *const *x, size_t d, float *out);
#endif

#endif
