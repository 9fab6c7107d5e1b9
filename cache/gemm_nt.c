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

/* The AVX-512 kernel, W of floats. */
__attribute__((target("avx512f,avx512dq"))) static void kernel_avx512(const float *x, int M, int K,
                                                             const float *w, int N, float *y,
                                                             int ldy)
{
	int K16 = K & ~15;
	__mmask16 tail = (__mmask16)((1u << (K - K16)) - 1);
	for (int n = 0; n < N; n += 4) {
		int nc = N - n < 4 ? N - n : 4;
		const float *w0 = w + (size_t)n * K;
		const float *w1 = nc > 1 ? w0 + K : w0, *w2 = nc > 2 ? w0 + 2 * (size_t)K : w0;
		const float *w3 = nc > 3 ? w0 + 3 * (size_t)K : w0;
		/* the next block of W, fetched while this one is used the first time:
		 * W is the operand that comes from memory */
		const float *nw = N - n > 4 ? w0 + 4 * (size_t)K : NULL;
		int nrows = nw ? (N - n - 4 < 4 ? N - n - 4 : 4) : 0;
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
				if (m == 0) /* one 64-byte line per row at a time */
					for (int r = 0; r < nrows; r++)
						_mm_prefetch((const char *)(nw + (size_t)r * K + k), _MM_HINT_T0);
				__m512 b0 = _mm512_loadu_ps(w0 + k), b1 = _mm512_loadu_ps(w1 + k);
				__m512 b2 = _mm512_loadu_ps(w2 + k), b3 = _mm512_loadu_ps(w3 + k);
				for (int r = 0; r < MR; r++) {
					__m512 a = _mm512_loadu_ps(xr[r] + k);
					acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
					acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
					acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
					acc[r][3] = _mm512_fmadd_ps(a, b3, acc[r][3]);
				}
			}
			if (tail) {
				__m512 b0 = _mm512_maskz_loadu_ps(tail, w0 + K16);
				__m512 b1 = _mm512_maskz_loadu_ps(tail, w1 + K16);
				__m512 b2 = _mm512_maskz_loadu_ps(tail, w2 + K16);
				__m512 b3 = _mm512_maskz_loadu_ps(tail, w3 + K16);
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

/*
 * Half-float weights (sg__gemm_nt_half) in panels of HP columns: for each
 * block of HP rows of W (output columns), for each k, those HP weights as
 * halves, contiguous (96 bytes), columns past N zero. The kernel keeps an
 * HR x HP block of y in 24 registers and adds, for each k, x's HR values
 * (broadcast) times the panel's HP weights (widened as they load,
 * vcvtph2ps): no sums across a register, 24 FMAs to 3 loads of W and 8 of x,
 * and W read as one sequential stream, prefetched HPF rows of the panel
 * ahead. On the 2-vCPU Xeon VM (one 512-bit FMA a cycle, ~104 GFLOP/s)
 * this reached 90-97 GFLOP/s in cache and ~90 on MiniLM's weights streamed
 * from memory, against 52-65 for the dot-product kernel above on halves
 * (bench/RESULTS.md).
 */
#define HP 48
#define HR 8
#define HPF 16

/* Floats to halves (round to nearest even) into out, 16 at a time; -1 when
 * one is beyond the half range (|v| > 65504) or not finite. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline int
put_halves(const float *v16, uint16_t *out)
{
	const __m512 big = _mm512_set1_ps(65504.0f);
	__m512 v = _mm512_loadu_ps(v16);
	/* |v| <= 65504 is false for NaN too */
	if (_mm512_cmp_ps_mask(_mm512_abs_ps(v), big, _CMP_LE_OQ) != 0xffff)
		return -1;
	_mm256_storeu_si256((__m256i *)(void *)out,
	                    _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	return 0;
}

__attribute__((target("avx512f,avx512dq"))) static int pack_half_avx512(const float *w, int N,
                                                                        int K, uint16_t *out)
{
	for (int p = 0; p < N; p += HP)
		for (int k = 0; k < K; k++, out += HP) {
			float t[HP];
			for (int c = 0; c < HP; c++)
				t[c] = p + c < N ? w[(size_t)(p + c) * K + k] : 0.0f;
			for (int v = 0; v < HP; v += 16)
				if (put_halves(t + v, out + v) != 0)
					return -1;
		}
	return 0;
}

__attribute__((target("avx512f,avx512dq"), always_inline)) static inline __m512
load_h(const uint16_t *p)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

__attribute__((target("avx512f,avx512dq"))) static void
kernel_avx512_h(const float *x, int M, int K, const uint16_t *wp, int N, float *y, int ldy,
                const float *bias)
{
	for (int p = 0; p < N; p += HP) {
		const uint16_t *panel = wp + (size_t)(p / HP) * K * HP;
		int nc = N - p < HP ? N - p : HP;
		for (int m = 0; m < M; m += HR) {
			int mc = M - m < HR ? M - m : HR;
			const float *xr[HR];
			__m512 acc[HR][3];
			for (int r = 0; r < HR; r++) {
				xr[r] = x + (size_t)(m + (r < mc ? r : 0)) * K;
				acc[r][0] = acc[r][1] = acc[r][2] = _mm512_setzero_ps();
			}
			const uint16_t *q = panel;
			for (int k = 0; k < K; k++, q += HP) {
				if (m == 0 && (k & 1) == 0) { /* two rows of the panel: 3 lines */
					const char *f = (const char *)(const void *)(q + HPF * HP);
					_mm_prefetch(f, _MM_HINT_T0);
					_mm_prefetch(f + 64, _MM_HINT_T0);
					_mm_prefetch(f + 128, _MM_HINT_T0);
				}
				__m512 w0 = load_h(q), w1 = load_h(q + 16), w2 = load_h(q + 32);
				for (int r = 0; r < HR; r++) {
					__m512 a = _mm512_set1_ps(xr[r][k]);
					acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
					acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
					acc[r][2] = _mm512_fmadd_ps(a, w2, acc[r][2]);
				}
			}
			for (int r = 0; r < mc; r++) {
				float *yr = y + (size_t)(m + r) * ldy + p;
				/* y = bias + the product, or y += the product */
				const float *src = bias ? bias + p : yr;
				for (int v = 0; v < 3 && nc > 16 * v; v++) {
					int c = nc - 16 * v;
					__mmask16 mk = c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << c) - 1);
					_mm512_mask_storeu_ps(yr + 16 * v, mk,
					                      _mm512_add_ps(_mm512_maskz_loadu_ps(mk, src + 16 * v),
					                                    acc[r][v]));
				}
			}
		}
	}
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

size_t sg__gemm_nt_half_len(int N, int K)
{
	if (N <= 0 || K <= 0)
		return 0;
	return (size_t)((N + HP - 1) / HP) * HP * (size_t)K;
}

int sg__gemm_nt_half(const float *w, int N, int K, uint16_t *out)
{
	if (sg__gemm_nt_level() != 2 || sg__gemm_nt_half_len(N, K) == 0)
		return -1;
	return pack_half_avx512(w, N, K, out);
}

int sg__gemm_nt_h(const float *x, int M, int K, const uint16_t *w, int N, float *y, int ldy,
                  const float *bias)
{
	if (sg__gemm_nt_level() != 2 || M <= 0 || N <= 0 || K <= 0 || ldy < N)
		return -1;
	kernel_avx512_h(x, M, K, w, N, y, ldy, bias);
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

size_t sg__gemm_nt_half_len(int N, int K)
{
	return 0;
}

int sg__gemm_nt_half(const float *w, int N, int K, uint16_t *out)
{
	return -1;
}

int sg__gemm_nt_h(const float *x, int M, int K, const uint16_t *w, int N, float *y, int ldy,
                  const float *bias)
{
	return -1;
}

#endif
