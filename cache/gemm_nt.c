/* y[M, N] += x[M, K] W[N, K]^T for a few rows of x: see gemm_nt_int.h. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gemm_nt_int.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/*
 * The loop order: a block of 4 rows of W (4 K floats each: 6 KiB for K 384,
 * 24 KiB for 1536, in L1 or L2) against every block of MR rows of x (x is
 * small and stays in cache), so that W, the big operand, is read from memory
 * once; while the first block of x runs against a block of W, the next block
 * of W is prefetched (1.25-1.46x at batch 1 on MiniLM: bench/RESULTS.md). Each output element is a dot product along K, accumulated 16 (8) at a
 * time in a vector register and summed across the register at the end.
 */
#define MR 4

/* The sums of four registers at once: halves added, then horizontal adds
 * that interleave the four (a quarter of the shuffles of four reductions). */
__attribute__((target("avx512f,avx512dq"))) static void hsum4_512(const __m512 v[4], float out[4])
{
	__m256 a = _mm256_add_ps(_mm512_castps512_ps256(v[0]), _mm512_extractf32x8_ps(v[0], 1));
	__m256 b = _mm256_add_ps(_mm512_castps512_ps256(v[1]), _mm512_extractf32x8_ps(v[1], 1));
	__m256 c = _mm256_add_ps(_mm512_castps512_ps256(v[2]), _mm512_extractf32x8_ps(v[2], 1));
	__m256 d = _mm256_add_ps(_mm512_castps512_ps256(v[3]), _mm512_extractf32x8_ps(v[3], 1));
	__m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
	_mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

/* 16 weights from W at element i, as floats: W is floats, or halves widened
 * as they load (vcvtph2ps). */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline __m512
load_w(const void *w, size_t i, int half)
{
	if (half)
		return _mm512_cvtph_ps(
			_mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)w + i)));
	return _mm512_loadu_ps((const float *)w + i);
}

/* The AVX-512 kernel, W of floats (half 0) or IEEE half floats (half 1,
 * sg__gemm_nt_half). Inlined into the two below with half a constant, so
 * each is compiled for its own type. For a prompt or two W is nearly all
 * the memory traffic (42 MB of floats a text for MiniLM-L6): halves are half
 * the bytes, where memory is what bounds the product. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
kernel_avx512_any(const float *x, int M, int K, const void *w, int half, int N, float *y, int ldy)
{
	const size_t elt = half ? sizeof(uint16_t) : sizeof(float);
	const char *wb = w;
	int K16 = K & ~15;
	__mmask16 tail = (__mmask16)((1u << (K - K16)) - 1);
	for (int n = 0; n < N; n += 4) {
		int nc = N - n < 4 ? N - n : 4;
		const char *w0 = wb + (size_t)n * K * elt;
		const char *w1 = nc > 1 ? w0 + K * elt : w0, *w2 = nc > 2 ? w0 + 2 * K * elt : w0;
		const char *w3 = nc > 3 ? w0 + 3 * K * elt : w0;
		/* the next block of W, fetched while this one is used the first time:
		 * W is the operand that comes from memory */
		const char *nw = N - n > 4 ? w0 + 4 * K * elt : NULL;
		int nrows = nw ? (N - n - 4 < 4 ? N - n - 4 : 4) : 0;
		/* the rows' last K % 16 weights, zero-padded to a whole vector */
		_Alignas(64) char tw[4][64];
		if (tail) {
			memset(tw, 0, sizeof(tw));
			for (int c = 0; c < 4; c++)
				memcpy(tw[c], (c == 0 ? w0 : c == 1 ? w1 : c == 2 ? w2 : w3) + K16 * elt,
				       (size_t)(K - K16) * elt);
		}
		for (int m = 0; m < M; m += MR) {
			int mc = M - m < MR ? M - m : MR;
			__m512 acc[MR][4];
			const float *xr[MR];
			for (int r = 0; r < MR; r++) {
				xr[r] = x + (size_t)(m + (r < mc ? r : 0)) * K;
				for (int c = 0; c < 4; c++)
					acc[r][c] = _mm512_setzero_ps();
			}
			for (int k = 0; k < K16; k += 16) {
				if (m == 0 && (k * elt) % 64 == 0) /* one 64-byte line per row at a time */
					for (int r = 0; r < nrows; r++)
						_mm_prefetch(nw + ((size_t)r * K + k) * elt, _MM_HINT_T0);
				__m512 b0 = load_w(w0, k, half), b1 = load_w(w1, k, half);
				__m512 b2 = load_w(w2, k, half), b3 = load_w(w3, k, half);
				for (int r = 0; r < MR; r++) {
					__m512 a = _mm512_loadu_ps(xr[r] + k);
					acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
					acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
					acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
					acc[r][3] = _mm512_fmadd_ps(a, b3, acc[r][3]);
				}
			}
			if (tail) {
				__m512 b0 = load_w(tw[0], 0, half), b1 = load_w(tw[1], 0, half);
				__m512 b2 = load_w(tw[2], 0, half), b3 = load_w(tw[3], 0, half);
				for (int r = 0; r < MR; r++) {
					__m512 a = _mm512_maskz_loadu_ps(tail, xr[r] + K16);
					acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
					acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
					acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
					acc[r][3] = _mm512_fmadd_ps(a, b3, acc[r][3]);
				}
			}
			for (int r = 0; r < mc; r++) {
				float s[4];
				hsum4_512(acc[r], s);
				for (int c = 0; c < nc; c++)
					y[(size_t)(m + r) * ldy + n + c] += s[c];
			}
		}
	}
}

__attribute__((target("avx512f,avx512dq"))) static void kernel_avx512(const float *x, int M, int K,
                                                             const float *w, int N, float *y,
                                                             int ldy)
{
	kernel_avx512_any(x, M, K, w, 0, N, y, ldy);
}

__attribute__((target("avx512f,avx512dq"))) static void
kernel_avx512_h(const float *x, int M, int K, const uint16_t *w, int N, float *y, int ldy)
{
	kernel_avx512_any(x, M, K, w, 1, N, y, ldy);
}

/* Floats to halves (round to nearest even); -1 when one is beyond the half
 * range (|v| > 65504) or not finite, out then unspecified. */
__attribute__((target("avx512f,avx512dq"))) static int to_half_avx512(const float *w, size_t n,
                                                                      uint16_t *out)
{
	const __m512 big = _mm512_set1_ps(65504.0f);
	for (size_t i = 0; i < n; i += 16) {
		size_t c = n - i < 16 ? n - i : 16;
		__m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << c) - 1), w + i);
		/* |v| <= 65504 is false for NaN too */
		if (_mm512_cmp_ps_mask(_mm512_abs_ps(v), big, _CMP_LE_OQ) != 0xffff)
			return -1;
		__m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		if (c == 16) {
			_mm256_storeu_si256((__m256i *)(void *)(out + i), h);
		} else {
			uint16_t t[16];
			_mm256_storeu_si256((__m256i *)(void *)t, h);
			memcpy(out + i, t, c * sizeof(uint16_t));
		}
	}
	return 0;
}

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void kernel_avx2(const float *x, int M, int K,
                                                            const float *w, int N, float *y,
                                                            int ldy)
{
	int K8 = K & ~7;
	for (int n = 0; n < N; n += 4) {
		int nc = N - n < 4 ? N - n : 4;
		const float *w0 = w + (size_t)n * K;
		const float *w1 = nc > 1 ? w0 + K : w0, *w2 = nc > 2 ? w0 + 2 * (size_t)K : w0;
		const float *w3 = nc > 3 ? w0 + 3 * (size_t)K : w0;
		const float *nw = N - n > 4 ? w0 + 4 * (size_t)K : NULL; /* as kernel_avx512 */
		int nrows = nw ? (N - n - 4 < 4 ? N - n - 4 : 4) : 0;
		for (int m = 0; m < M; m += MR) {
			int mc = M - m < MR ? M - m : MR;
			__m256 acc[MR][4];
			const float *xr[MR];
			for (int r = 0; r < MR; r++) {
				xr[r] = x + (size_t)(m + (r < mc ? r : 0)) * K;
				for (int c = 0; c < 4; c++)
					acc[r][c] = _mm256_setzero_ps();
			}
			for (int k = 0; k < K8; k += 8) {
				if (m == 0 && (k & 15) == 0) /* one 64-byte line per row per 16 floats */
					for (int r = 0; r < nrows; r++)
						_mm_prefetch((const char *)(nw + (size_t)r * K + k), _MM_HINT_T0);
				__m256 b0 = _mm256_loadu_ps(w0 + k), b1 = _mm256_loadu_ps(w1 + k);
				__m256 b2 = _mm256_loadu_ps(w2 + k), b3 = _mm256_loadu_ps(w3 + k);
				for (int r = 0; r < MR; r++) {
					__m256 a = _mm256_loadu_ps(xr[r] + k);
					acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
					acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
					acc[r][2] = _mm256_fmadd_ps(a, b2, acc[r][2]);
					acc[r][3] = _mm256_fmadd_ps(a, b3, acc[r][3]);
				}
			}
			for (int r = 0; r < mc; r++)
				for (int c = 0; c < nc; c++) {
					float s = hsum256(acc[r][c]);
					const float *wc = c == 0 ? w0 : c == 1 ? w1 : c == 2 ? w2 : w3;
					for (int k = K8; k < K; k++)
						s += xr[r][k] * wc[k];
					y[(size_t)(m + r) * ldy + n + c] += s;
				}
		}
	}
}

int sg__gemm_nt_level(void)
{
	static int level = -1;
	if (level < 0) {
		__builtin_cpu_init();
		level = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? 2
		        : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
		                                                                         : 0;
	}
	return level;
}

int sg__gemm_nt(const float *x, int M, int K, const float *w, int N, float *y, int ldy)
{
	switch (sg__gemm_nt_level()) {
	case 2:
		kernel_avx512(x, M, K, w, N, y, ldy);
		return 0;
	case 1:
		kernel_avx2(x, M, K, w, N, y, ldy);
		return 0;
	default:
		return -1;
	}
}

int sg__gemm_nt_half(const float *w, size_t n, uint16_t *out)
{
	return sg__gemm_nt_level() == 2 ? to_half_avx512(w, n, out) : -1;
}

int sg__gemm_nt_h(const float *x, int M, int K, const uint16_t *w, int N, float *y, int ldy)
{
	if (sg__gemm_nt_level() != 2)
		return -1;
	kernel_avx512_h(x, M, K, w, N, y, ldy);
	return 0;
}

#else

int sg__gemm_nt_level(void)
{
	return 0;
}

int sg__gemm_nt(const float *x, int M, int K, const float *w, int N, float *y, int ldy)
{
	return -1;
}

int sg__gemm_nt_half(const float *w, size_t n, uint16_t *out)
{
	return -1;
}

int sg__gemm_nt_h(const float *x, int M, int K, const uint16_t *w, int N, float *y, int ldy)
{
	return -1;
}

#endif
