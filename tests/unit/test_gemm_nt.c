/* Unit tests: the encoder's short-input product (cache/gemm_nt.c), float and
 * half-float weights, against a double-precision reference, at shapes that
 * exercise every edge of the blocking: rows not a multiple of 4 (MR) or 8 (the
 * half kernel's rows), K not a multiple of 16 (the masked tail), N not a
 * multiple of 4 (the last block of W) or 48 (the half kernel's panels).
 * Without AVX-512 the half path must refuse (-1), and is otherwise skipped.
 * The AMX kernel (cache/gemm_amx.c) likewise where the CPU has AMX-BF16: its
 * split of each float into two bfloat16s must keep every output within
 * 2^-15 of the products' magnitude (bfloat16 weights alone would be ~2^-9),
 * across its blocking (16-row blocks, pairs of them, SG_AMX_MC-row chunks),
 * with a row stride wider than N and rows past M untouched. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "gemm_nt_int.h"

static float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f; /* [-1, 1) */
}

/* IEEE half to float, for the reference (normal and subnormal halves). */
static float half_value(uint16_t h)
{
	int e = (h >> 10) & 31, f = h & 1023;
	float v = e == 0 ? ldexpf((float)f, -24) : ldexpf((float)(f | 1024), e - 25);
	return h & 0x8000 ? -v : v;
}

/* The conversion: nearest half (within half an ulp: 2^-11 relative for
 * normal halves), and refusal of what a half cannot hold. W [37, 1] packs
 * into one panel of 48: the 37 weights, then zeros. */
static void test_to_half(void)
{
	float w[37];
	uint16_t h[48];
	unsigned s = 7;
	for (int i = 0; i < 37; i++)
		w[i] = frand(&s) * (i % 5 == 0 ? 1000.0f : 1.0f);
	w[3] = 65504.0f;  /* the largest half */
	w[4] = -65504.0f;
	w[5] = 0.0f;
	w[6] = 1e-6f;     /* a subnormal half */
	CHECK(sg__gemm_nt_half_len(37, 1) == 48 && sg__gemm_nt_half_len(48, 3) == 144 &&
	      sg__gemm_nt_half_len(49, 2) == 192 && sg__gemm_nt_half_len(0, 5) == 0);
	for (int i = 0; i < 48; i++)
		h[i] = 0xffff;
	CHECK(sg__gemm_nt_half(w, 37, 1, h) == 0);
	int bad = 0, pad = 0;
	for (int i = 0; i < 37; i++) {
		float back = half_value(h[i]);
		float tol = fabsf(w[i]) * 0x1p-11f + 0x1p-25f;
		bad += fabsf(back - w[i]) > tol;
	}
	for (int i = 37; i < 48; i++)
		pad += h[i] != 0;
	CHECK_MSG(bad == 0, "%d weights not rounded to their nearest half", bad);
	CHECK_MSG(pad == 0, "%d columns past N not zero", pad);
	CHECK(h[3] == 0x7bff && h[4] == 0xfbff && h[5] == 0);
	float over[20] = {0};
	over[19] = 65520.0f; /* rounds to infinity: refused, even in the last columns */
	CHECK(sg__gemm_nt_half(over, 20, 1, h) == -1);
	over[19] = NAN;
	CHECK(sg__gemm_nt_half(over, 20, 1, h) == -1);
	over[19] = INFINITY;
	CHECK(sg__gemm_nt_half(over, 20, 1, h) == -1);
	over[19] = 1.0f;
	CHECK(sg__gemm_nt_half(over, 20, 1, h) == 0);
}

/* The half that the packed W holds for W[n][k]. */
static float packed_half(const uint16_t *wp, int K, int n, int k)
{
	return half_value(wp[((size_t)(n / 48) * K + k) * 48 + n % 48]);
}

/* y = x W^T + y0 from both kernels against doubles, at one shape. */
static void one_shape(int M, int K, int N)
{
	/* y's rows have 5 more columns than the product, -0.0 (adding the +0.0
	 * of a zero-padded weight column would make them +0.0), as is the row
	 * after the last: both kernels must leave them so */
	int ldy = N + 5;
	size_t ny = (size_t)(M + 1) * ldy;
	float *x = malloc(sizeof(float) * (size_t)M * K), *w = malloc(sizeof(float) * (size_t)N * K);
	float *y = malloc(sizeof(float) * ny), *yh = malloc(sizeof(float) * ny);
	uint16_t *wh = malloc(sizeof(uint16_t) * sg__gemm_nt_half_len(N, K));
	unsigned s = (unsigned)(M * 131 + K * 7 + N);
	for (int i = 0; i < M * K; i++)
		x[i] = frand(&s);
	for (int i = 0; i < N * K; i++)
		w[i] = frand(&s) * 0.3f;
	for (size_t i = 0; i < ny; i++) /* the product is added to what is there */
		y[i] = yh[i] = (int)(i / ldy) < M && (int)(i % ldy) < N ? (float)i : -0.0f;
	CHECK(sg__gemm_nt(x, M, K, w, N, y, ldy) == 0);
	CHECK(sg__gemm_nt_half(w, N, K, wh) == 0);
	CHECK(sg__gemm_nt_h(x, M, K, wh, N, yh, ldy, NULL) == 0);
	/* with a bias: y = bias + product, whatever y held (NaN here) */
	float *yb = malloc(sizeof(float) * ny), *bias = malloc(sizeof(float) * (size_t)N);
	for (int n = 0; n < N; n++)
		bias[n] = frand(&s) * 4.0f;
	for (size_t i = 0; i < ny; i++)
		yb[i] = (int)(i / ldy) < M && (int)(i % ldy) < N ? NAN : -0.0f;
	CHECK(sg__gemm_nt_h(x, M, K, wh, N, yb, ldy, bias) == 0);
	int bad = 0, badh = 0, badb = 0, differ = 0, touched = 0;
	for (int m = 0; m <= M; m++)
		for (int n = 0; n < ldy; n++) {
			size_t at = (size_t)m * ldy + n;
			if (m == M || n >= N) {
				touched += y[at] != 0 || !signbit(y[at]) || yh[at] != 0 || !signbit(yh[at]) ||
				           yb[at] != 0 || !signbit(yb[at]);
				continue;
			}
			double ref = (double)at, refh = ref, mag = 0;
			for (int k = 0; k < K; k++) {
				ref += (double)x[m * K + k] * w[n * K + k];
				refh += (double)x[m * K + k] * packed_half(wh, K, n, k);
				mag += fabs((double)x[m * K + k] * w[n * K + k]);
			}
			double tol = 1e-5 * (mag + fabs(ref)) + 1e-6;
			bad += fabs(y[at] - ref) > tol;
			badh += fabs(yh[at] - refh) > tol;
			badb += !(fabs(yb[at] - (refh - (double)at + bias[n])) <= 1e-5 * (mag + 4) + 1e-6);
			differ += yh[at] != y[at];
		}
	CHECK_MSG(bad == 0, "M %d K %d N %d: %d of %d outputs off (float weights)", M, K, N, bad,
	          M * N);
	CHECK_MSG(badh == 0, "M %d K %d N %d: %d of %d outputs off (half weights)", M, K, N, badh,
	          M * N);
	CHECK_MSG(badb == 0, "M %d K %d N %d: %d of %d outputs off (half weights, with a bias)", M,
	          K, N, badb, M * N);
	CHECK_MSG(touched == 0, "M %d K %d N %d: %d values outside the product changed", M, K, N,
	          touched);
	free(yb);
	free(bias);
	/* the halves are what the half kernel multiplies by, not the floats */
	CHECK_MSG(differ > 0, "M %d K %d N %d: the half kernel gave the float kernel's sums", M, K,
	          N);
	free(x);
	free(w);
	free(y);
	free(yh);
	free(wh);
}

/* y = x W^T + y0 on AMX tiles against doubles, y with a stride of N + 16
 * and a guard row after the last, both -0.0: they must stay so (adding the
 * +0.0 that a zero-padded row of x gives would make them +0.0). */
static void amx_shape(int M, int K, int N)
{
	int ldy = N + 16;
	float *x = malloc(sizeof(float) * (size_t)M * K), *w = malloc(sizeof(float) * (size_t)N * K);
	float *y = malloc(sizeof(float) * (size_t)(M + 1) * ldy);
	uint16_t *wp = malloc(sizeof(uint16_t) * sg__gemm_amx_packed_len(N, K));
	uint16_t *scratch = malloc(sizeof(uint16_t) * sg__gemm_amx_scratch_len(K));
	unsigned s = (unsigned)(M * 977 + K * 13 + N);
	for (int i = 0; i < M * K; i++)
		x[i] = frand(&s) * (i % 7 == 0 ? 8.0f : 1.0f);
	for (int i = 0; i < N * K; i++)
		w[i] = frand(&s) * 0.3f;
	for (int i = 0; i < (M + 1) * ldy; i++)
		y[i] = i / ldy < M && i % ldy < N ? (float)(i % 1000) : -0.0f;
	CHECK(sg__gemm_amx_pack(w, N, K, wp) == 0);
	CHECK(sg__gemm_amx(x, M, K, wp, N, y, ldy, scratch, NULL) == 0);
	/* with a bias: y = bias + product, whatever y held (NaN here) */
	float *yb = malloc(sizeof(float) * (size_t)(M + 1) * ldy), *bias = malloc(sizeof(float) * N);
	for (int n = 0; n < N; n++)
		bias[n] = frand(&s) * 4.0f;
	for (int i = 0; i < (M + 1) * ldy; i++)
		yb[i] = i / ldy < M && i % ldy < N ? NAN : -0.0f;
	CHECK(sg__gemm_amx(x, M, K, wp, N, yb, ldy, scratch, bias) == 0);
	int bad = 0, badb = 0, touched = 0;
	double worst = 0;
	for (int m = 0; m <= M; m++)
		for (int n = 0; n < ldy; n++) {
			double ref = (m * ldy + n) % 1000, mag = 0;
			for (int k = 0; m < M && n < N && k < K; k++) {
				ref += (double)x[m * K + k] * w[n * K + k];
				mag += fabs((double)x[m * K + k] * w[n * K + k]);
			}
			double err = fabs(y[m * ldy + n] - ref);
			if (m == M || n >= N) {
				touched += y[m * ldy + n] != 0 || !signbit(y[m * ldy + n]) ||
				           yb[m * ldy + n] != 0 || !signbit(yb[m * ldy + n]);
				continue;
			}
			bad += err > 0x1p-15 * mag + 1e-4;
			double refb = ref - (double)((m * ldy + n) % 1000) + bias[n];
			badb += !(fabs(yb[m * ldy + n] - refb) <= 0x1p-15 * mag + 1e-4);
			worst = fmax(worst, err / mag);
		}
	CHECK_MSG(bad == 0, "AMX M %d K %d N %d: %d of %d outputs off (worst %.3g of the magnitude)",
	          M, K, N, bad, M * N, worst);
	CHECK_MSG(badb == 0, "AMX M %d K %d N %d: %d of %d outputs off with a bias", M, K, N, badb,
	          M * N);
	CHECK_MSG(touched == 0, "AMX M %d K %d N %d: %d values outside the product changed", M, K, N,
	          touched);
	free(yb);
	free(bias);
	free(x);
	free(w);
	free(y);
	free(wp);
	free(scratch);
}

static void test_amx(void)
{
	float w[64 * 64] = {0};
	uint16_t out[64 * 64 * 2];
	if (!sg__gemm_amx_ok()) {
		CHECK(sg__gemm_amx_pack(w, 32, 32, out) == -1);
		CHECK(sg__gemm_amx(w, 1, 32, out, 32, w, 32, out, NULL) == -1);
		printf("no AMX-BF16 here: the AMX kernel refuses (its products not tested here)\n");
		return;
	}
	/* shapes it does not take, and weights it cannot split */
	CHECK(sg__gemm_amx_packed_len(48, 32) == 0 && sg__gemm_amx_packed_len(32, 48) == 0);
	CHECK(sg__gemm_amx_pack(w, 48, 32, out) == -1 && sg__gemm_amx_pack(w, 32, 48, out) == -1);
	CHECK(sg__gemm_amx_pack(w, 32, 64, out) == 0);
	w[64 * 31 + 63] = NAN; /* the last weight */
	CHECK(sg__gemm_amx_pack(w, 32, 64, out) == -1);
	w[64 * 31 + 63] = INFINITY;
	CHECK(sg__gemm_amx_pack(w, 32, 64, out) == -1);
	w[64 * 31 + 63] = 1.0f;
	CHECK(sg__gemm_amx(w, 1, 64, out, 32, w, 16, out, NULL) == -1); /* a stride under N */
	static const int Ms[] = {1, 15, 16, 17, 31, 32, 33, 48, 127, SG_AMX_MC, SG_AMX_MC + 1, 300};
	static const int Ks[] = {32, 64, 384};
	static const int Ns[] = {32, 64, 96};
	for (size_t a = 0; a < SG_ARRAY_SIZE(Ms); a++)
		for (size_t b = 0; b < SG_ARRAY_SIZE(Ks); b++)
			for (size_t c = 0; c < SG_ARRAY_SIZE(Ns); c++)
				amx_shape(Ms[a], Ks[b], Ns[c]);
}

int main(void)
{
	test_amx();
	if (sg__gemm_nt_level() != 2) {
		float w[1] = {1};
		uint16_t h[1];
		CHECK(sg__gemm_nt_half(w, 1, 1, h) == -1);
		CHECK(sg__gemm_nt_h(w, 1, 1, h, 1, w, 1, NULL) == -1);
		printf("no AVX-512: the half-float kernel refuses (its products not tested here)\n");
		CHECK_DONE();
	}
	test_to_half();
	static const int Ms[] = {1, 3, 4, 5, 8, 9, 16, 17};
	static const int Ks[] = {1, 16, 20, 33, 384};
	static const int Ns[] = {1, 3, 4, 9, 12, 16, 17, 47, 48, 49, 100};
	for (size_t a = 0; a < SG_ARRAY_SIZE(Ms); a++)
		for (size_t b = 0; b < SG_ARRAY_SIZE(Ks); b++)
			for (size_t c = 0; c < SG_ARRAY_SIZE(Ns); c++)
				one_shape(Ms[a], Ks[b], Ns[c]);
	CHECK_DONE();
}
