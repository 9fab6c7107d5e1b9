// FAISS kernels semgate links in place of Debian's.
//
// Debian builds FAISS for the x86-64 baseline (SSE2), and there FAISS 1.7.3's
// inner-product kernel, which every flat search and every HNSW hop runs, is a
// scalar loop (fvec_inner_product_ref; the SIMD variants need SSE3/AVX2 at
// compile time). This file defines the same two symbols with a kernel chosen
// at run time for the CPU (AVX2+FMA, else a portable 8-lane loop the compiler
// vectorises); the build links a copy of libfaiss.a in which FAISS's two are
// weak (objcopy --weaken-symbol, top CMakeLists.txt), so these win. Cosine search over
// normalised vectors is this one dot product; results differ from the scalar
// loop only in the order of the additions.
//
// It also lets the loop thread run searches without OpenMP's worker threads:
// a parallel region per single-query search costs more than it saves, and
// idle workers spin.

#include <cstddef>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif


namespace {

float ip_portable(const float *x, const float *y, size_t d)
{
	float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	size_t i = 0;
	for (; i + 8 <= d; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += x[i + j] * y[i + j];
	float r = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
	for (; i < d; i++)
		r += x[i] * y[i];
	return r;
}

void ip4_portable(const float *q, const float *const *x, size_t d, float *out)
{
	for (int j = 0; j < 4; j++)
		out[j] = ip_portable(q, x[j], d);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float ip_avx2(const float *x, const float *y, size_t d)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= d; i += 16) {
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
		a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
	}
	for (; i + 8 <= d; i += 8)
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
	a0 = _mm256_add_ps(a0, a1);
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
	float r = _mm_cvtss_f32(s);
	for (; i < d; i++)
		r += x[i] * y[i];
	return r;
}

// One query against four vectors: the same sums, with the query loaded once
// and four independent accumulators (semgate's HNSW walk scores neighbours
// four at a time).
__attribute__((target("avx2,fma"))) void ip4_avx2(const float *q, const float *const *x,
						    size_t d, float *out)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	__m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
	size_t i = 0;
	for (; i + 8 <= d; i += 8) {
		__m256 qv = _mm256_loadu_ps(q + i);
		a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x[0] + i), a0);
		a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x[1] + i), a1);
		a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x[2] + i), a2);
		a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x[3] + i), a3);
	}
	// horizontal sums of the four accumulators, all at once
	__m256 s01 = _mm256_hadd_ps(a0, a1), s23 = _mm256_hadd_ps(a2, a3);
	__m256 s = _mm256_hadd_ps(s01, s23);
	__m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
	_mm_storeu_ps(out, r);
	for (; i < d; i++)
		for (int j = 0; j < 4; j++)
			out[j] += q[i] * x[j][i];
}
#endif

using ip_fn = float (*)(const float *, const float *, size_t);
using ip4_fn = void (*)(const float *, const float *const *, size_t, float *);

struct kernels {
	ip_fn one;
	ip4_fn four;
};

kernels pick()
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return {ip_avx2, ip4_avx2};
#endif
	return {ip_portable, ip4_portable};
}

// Chosen on first use, for the CPU it runs on (so no static-initialisation
// order to rely on; idempotent, so a race is benign).
kernels kernel;

inline const kernels &chosen()
{
	if (kernel.one == nullptr)
		kernel = pick();
	return kernel;
}

inline float ip(const float *x, const float *y, size_t d)
{
	return chosen().one(x, y, d);
}

} // namespace

namespace faiss {

float fvec_inner_product_ref(const float *x, const float *y, size_t d)
{
	return ip(x, y, d);
}

float fvec_inner_product(const float *x, const float *y, size_t d)
{
	return ip(x, y, d);
}

} // namespace faiss

void sg__ip4(const float *q, const float *const *x, size_t d, float *out)
{
	chosen().four(q, x, d, out);
}

extern "C" void sg_index_set_threads(int n)
{
	omp_set_num_threads(n > 0 ? n : 1);
}
