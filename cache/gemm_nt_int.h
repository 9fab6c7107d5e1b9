/* The encoder's product for short inputs (private to cache/encoder.c).
 *
 * y[M, N] += x[M, K] W[N, K]^T with x and y row-major, W in its file layout
 * (the weights mapped read-only from model.safetensors, untouched). For the
 * few rows of one or two short prompts, OpenBLAS's sgemm spends most of its
 * time packing W (megabytes) for a handful of rows of arithmetic; this reads
 * W once, in place, and computes dot products along K in AVX-512 or AVX2
 * registers. The encoder uses it below a row count where sgemm's packing has
 * paid off (see encoder.c), and OpenBLAS above it or without AVX2.
 */
#ifndef SEMGATE_GEMM_NT_INT_H
#define SEMGATE_GEMM_NT_INT_H

/* 2: AVX-512, 1: AVX2 + FMA, 0: neither (sg__gemm_nt refuses). */
int sg__gemm_nt_level(void);

/* 0, or -1 when this CPU has no kernel (the caller uses sgemm). */
int sg__gemm_nt(const float *x, int M, int K, const float *w, int N, float *y, int ldy);

#endif
