/* y[M, N] += x[M, K] W[N, K]^T on AMX tiles: see gemm_nt_int.h.
 *
 * Each float is split into two bfloat16s, hi = bf16(v) and lo = bf16(v - hi),
 * which together carry 16 bits of its 24-bit significand. A product is then
 * xh*wh + xh*wl + xl*wh (xl*wl, 2^-16 of it, is dropped): three TDPBF16PS,
 * each a 16 x 16 x 32 block of multiply-adds accumulated in float. The error
 * is about 2^-16 of each product, against 2^-11 for the half-float weights of
 * the AVX-512 kernel, at several times the multiply-adds per cycle of float
 * FMA.
 *
 * The tiles (palette 1, all 16 rows of 64 bytes):
 *   0, 1  C: 16 rows x 16 columns of float, columns n0..n0+15 and n0+16..+31
 *   2, 3  A: 16 rows of x, 32 values of K each, hi and lo
 *   4, 5  B: W's columns n0..n0+15 for those 32 values of K, hi and lo, in the
 *         pair layout TDPBF16PS reads (row r: for each column c the pair
 *         W[c][2r], W[c][2r + 1])
 *   6, 7  B for columns n0+16..n0+31
 * W is packed at load in that order: for each 32 columns, for each 32 values
 * of K, the four B tiles (4 KiB), so that a block of columns reads W as one
 * sequential stream. x is converted SG_AMX_MC rows at a time into the
 * caller's scratch; for each block of 32 columns (its W, K/8 KiB, stays in
 * L2) the chunk's rows run against it 32 rows x 16 columns at a time (tiles
 * 2-5 hold two blocks of x, 6-7 the column block's W: W, the operand that
 * comes from memory, is loaded once for both), and a last block of 16 rows
 * or fewer as 16 x 32 (the layout above).
 *
 * Tile loads cost about what a TDPBF16PS does, and a load into a tile that
 * queued products still read waits for them (tiles are not renamed): with 8
 * tiles the split needs about one load per product however it is blocked, so
 * this runs at ~1.3x OpenBLAS's float sgemm on a Sapphire Rapids VM, not at
 * the tiles' arithmetic rate (bench/RESULTS.md).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gemm_nt_int.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && \
	(__GNUC__ >= 11 || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TILE_ELEMS 512 /* bf16 values in one tile: 16 rows x 64 bytes */

typedef struct {
	uint8_t palette, start_row;
	uint8_t reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
} tilecfg_t;

static int amx_state = -1; /* -1 unknown, 0 no, 1 yes */

static void amx_probe(void)
{
	/* CPUID by hand: compilers differ in which feature names their
	 * __builtin_cpu_supports knows (clang 14 has no "amx-tile") */
	unsigned a, b, c, d, a1 = 0, b1, c1, d1;
	__builtin_cpu_init();
	int ok = __builtin_cpu_supports("avx512f") && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
	         (d >> 24 & 1) /* AMX-TILE */ && (d >> 22 & 1) /* AMX-BF16 */ &&
	         a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) &&
	         (a1 >> 5 & 1) /* AVX512-BF16 */;
	/* Linux hands out the tile registers' state only on request (5.16 and
	 * later): ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA (18), for the process. */
	if (ok && syscall(SYS_arch_prctl, 0x1023, 18) != 0)
		ok = 0;
	amx_state = ok;
}

int sg__gemm_amx_ok(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, amx_probe);
	return amx_state == 1;
}

size_t sg__gemm_amx_packed_len(int N, int K)
{
	if (N <= 0 || K <= 0 || N % 32 || K % 32)
		return 0;
	return (size_t)N * (size_t)K * 2;
}

size_t sg__gemm_amx_scratch_len(int K)
{
	return K > 0 && K % 32 == 0 ? (size_t)SG_AMX_MC * (size_t)K * 2 : 0;
}

/* 16 floats to bf16 hi and lo parts (round to nearest even both times). */
__attribute__((target("avx512f,avx512bf16"), always_inline)) static inline void
split16(__m512 v, __m256i *hi, __m256i *lo)
{
	__m256i h = (__m256i)_mm512_cvtneps_pbh(v);
	__m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
	*hi = h;
	*lo = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, hf));
}

__attribute__((target("avx512f,avx512bf16"))) static int pack(const float *w, int N, int K,
                                                              uint16_t *out)
{
	const __m512 big = _mm512_set1_ps(3.0e38f);
	for (int n0 = 0; n0 < N; n0 += 32)
		for (int k0 = 0; k0 < K; k0 += 32, out += 4 * TILE_ELEMS)
			for (int half = 0; half < 2; half++) {
				uint16_t *hi = out + 2 * half * TILE_ELEMS, *lo = hi + TILE_ELEMS;
				for (int c = 0; c < 16; c++) {
					const float *row = w + (size_t)(n0 + 16 * half + c) * K + k0;
					__m512 a = _mm512_loadu_ps(row), b = _mm512_loadu_ps(row + 16);
					/* |v| <= 3e38 is false for NaN and inf */
					if (_mm512_cmp_ps_mask(_mm512_abs_ps(a), big, _CMP_LE_OQ) != 0xffff ||
					    _mm512_cmp_ps_mask(_mm512_abs_ps(b), big, _CMP_LE_OQ) != 0xffff)
						return -1;
					__m256i ah, al, bh, bl;
					split16(a, &ah, &al);
					split16(b, &bh, &bl);
					uint16_t th[32], tl[32];
					_mm256_storeu_si256((__m256i *)(void *)th, ah);
					_mm256_storeu_si256((__m256i *)(void *)(th + 16), bh);
					_mm256_storeu_si256((__m256i *)(void *)tl, al);
					_mm256_storeu_si256((__m256i *)(void *)(tl + 16), bl);
					/* row r of the tile, column c: the pair (k0 + 2r, k0 + 2r + 1) */
					for (int r = 0; r < 16; r++) {
						hi[r * 32 + 2 * c] = th[2 * r];
						hi[r * 32 + 2 * c + 1] = th[2 * r + 1];
						lo[r * 32 + 2 * c] = tl[2 * r];
						lo[r * 32 + 2 * c + 1] = tl[2 * r + 1];
					}
				}
			}
	return 0;
}

int sg__gemm_amx_pack(const float *w, int N, int K, uint16_t *out)
{
	if (!sg__gemm_amx_ok() || sg__gemm_amx_packed_len(N, K) == 0)
		return -1;
	return pack(w, N, K, out);
}

/* Rows m0..m0+mc-1 of x (mc <= SG_AMX_MC) as A tiles: for each 16 rows, for
 * each 32 values of K, the hi tile then the lo tile; rows past mc are zero. */
__attribute__((target("avx512f,avx512bf16"))) static void convert_a(const float *x, int K, int mc,
                                                                   uint16_t *a)
{
	int kb = K / 32;
	for (int mb = 0; mb < mc; mb += 16)
		for (int r = 0; r < 16; r++) {
			const float *row = x + (size_t)(mb + r) * K;
			for (int b = 0; b < kb; b++) {
				uint16_t *hi = a + ((size_t)(mb / 16) * kb + b) * 2 * TILE_ELEMS + r * 32;
				uint16_t *lo = hi + TILE_ELEMS;
				if (mb + r >= mc) {
					memset(hi, 0, 64);
					memset(lo, 0, 64);
					continue;
				}
				__m256i h0, l0, h1, l1;
				split16(_mm512_loadu_ps(row + 32 * b), &h0, &l0);
				split16(_mm512_loadu_ps(row + 32 * b + 16), &h1, &l1);
				_mm256_storeu_si256((__m256i *)(void *)hi, h0);
				_mm256_storeu_si256((__m256i *)(void *)(hi + 16), h1);
				_mm256_storeu_si256((__m256i *)(void *)lo, l0);
				_mm256_storeu_si256((__m256i *)(void *)(lo + 16), l1);
			}
		}
}

/* y[rows, 16] = src + c[rows, 16] (rows of the tile's 16 that are in x),
 * src the bias's 16 values (the same for every row) or y itself. */
__attribute__((target("avx512f"), always_inline)) static inline void
add_tile(float *y, int ldy, const float (*c)[16], int rows, const float *bias)
{
	for (int r = 0; r < rows; r++, y += ldy)
		_mm512_storeu_ps(y, _mm512_add_ps(_mm512_loadu_ps(bias ? bias : y), _mm512_load_ps(c[r])));
}

__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bf16"))) static void
kernel_amx(const float *x, int M, int K, const uint16_t *wp, int N, float *y, int ldy,
           uint16_t *scratch, const float *bias)
{
	tilecfg_t cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.palette = 1;
	for (int t = 0; t < 8; t++) {
		cfg.rows[t] = 16;
		cfg.colsb[t] = 64;
	}
	_tile_loadconfig(&cfg);
	const int kb = K / 32;
	const size_t astep = (size_t)kb * 2 * TILE_ELEMS; /* one 16-row block of A */
	_Alignas(64) float c[2][16][16];
	for (int m0 = 0; m0 < M; m0 += SG_AMX_MC) {
		int mc = M - m0 < SG_AMX_MC ? M - m0 : SG_AMX_MC;
		convert_a(x + (size_t)m0 * K, K, mc, scratch);
		float *yc = y + (size_t)m0 * ldy;
		for (int n0 = 0; n0 < N; n0 += 32) {
			const uint16_t *bw = wp + (size_t)(n0 / 32) * kb * 4 * TILE_ELEMS;
			int mb = 0;
			/* 32 rows x 16 columns at a time: W, the operand that comes from
			 * memory, loaded once for two blocks of x (the A tiles, in cache) */
			for (; mc - mb > 16; mb += 32) {
				int rows1 = mc - mb - 16 < 16 ? mc - mb - 16 : 16;
				for (int h = 0; h < 2; h++) {
					const uint16_t *a = scratch + (size_t)(mb / 16) * astep;
					const uint16_t *b = bw + 2 * h * TILE_ELEMS;
					_tile_zero(0);
					_tile_zero(1);
					for (int k = 0; k < kb; k++, a += 2 * TILE_ELEMS, b += 4 * TILE_ELEMS) {
						_tile_loadd(6, b, 64);
						_tile_loadd(7, b + TILE_ELEMS, 64);
						_tile_loadd(2, a, 64);
						_tile_loadd(3, a + TILE_ELEMS, 64);
						_tile_loadd(4, a + astep, 64);
						_tile_loadd(5, a + astep + TILE_ELEMS, 64);
						_tile_dpbf16ps(0, 2, 6);
						_tile_dpbf16ps(1, 4, 6);
						_tile_dpbf16ps(0, 2, 7);
						_tile_dpbf16ps(1, 4, 7);
						_tile_dpbf16ps(0, 3, 6);
						_tile_dpbf16ps(1, 5, 6);
					}
					_tile_stored(0, c[0], 64);
					_tile_stored(1, c[1], 64);
					const float *bh = bias ? bias + n0 + 16 * h : NULL;
					add_tile(yc + (size_t)mb * ldy + n0 + 16 * h, ldy, c[0], 16, bh);
					add_tile(yc + (size_t)(mb + 16) * ldy + n0 + 16 * h, ldy, c[1], rows1, bh);
				}
			}
			if (mb < mc) { /* a last block of 16 rows or fewer: 16 x 32 */
				const uint16_t *a = scratch + (size_t)(mb / 16) * astep;
				const uint16_t *b = bw;
				_tile_zero(0);
				_tile_zero(1);
				for (int k = 0; k < kb; k++, a += 2 * TILE_ELEMS, b += 4 * TILE_ELEMS) {
					_tile_loadd(2, a, 64);
					_tile_loadd(3, a + TILE_ELEMS, 64);
					_tile_loadd(4, b, 64);
					_tile_loadd(5, b + TILE_ELEMS, 64);
					_tile_loadd(6, b + 2 * TILE_ELEMS, 64);
					_tile_loadd(7, b + 3 * TILE_ELEMS, 64);
					_tile_dpbf16ps(0, 2, 4);
					_tile_dpbf16ps(1, 2, 6);
					_tile_dpbf16ps(0, 2, 5);
					_tile_dpbf16ps(1, 2, 7);
					_tile_dpbf16ps(0, 3, 4);
					_tile_dpbf16ps(1, 3, 6);
				}
				_tile_stored(0, c[0], 64);
				_tile_stored(1, c[1], 64);
				int rows = mc - mb;
				add_tile(yc + (size_t)mb * ldy + n0, ldy, c[0], rows, bias ? bias + n0 : NULL);
				add_tile(yc + (size_t)mb * ldy + n0 + 16, ldy, c[1], rows,
				         bias ? bias + n0 + 16 : NULL);
			}
		}
	}
	_tile_release();
}

int sg__gemm_amx(const float *x, int M, int K, const uint16_t *wp, int N, float *y, int ldy,
                 uint16_t *scratch, const float *bias)
{
	if (!sg__gemm_amx_ok() || sg__gemm_amx_packed_len(N, K) == 0 || M <= 0 || ldy < N ||
	    scratch == NULL)
		return -1;
	kernel_amx(x, M, K, wp, N, y, ldy, scratch, bias);
	return 0;
}

#else

int sg__gemm_amx_ok(void)
{
	return 0;
}

size_t sg__gemm_amx_packed_len(int N, int K)
{
	(void)N, (void)K;
	return 0;
}

size_t sg__gemm_amx_scratch_len(int K)
{
	(void)K;
	return 0;
}

int sg__gemm_amx_pack(const float *w, int N, int K, uint16_t *out)
{
	(void)w, (void)N, (void)K, (void)out;
	return -1;
}

int sg__gemm_amx(const float *x, int M, int K, const uint16_t *wp, int N, float *y, int ldy,
                 uint16_t *scratch, const float *bias)
{
	(void)x, (void)M, (void)K, (void)wp, (void)N, (void)y, (void)ldy, (void)scratch, (void)bias;
	return -1;
}

#endif
