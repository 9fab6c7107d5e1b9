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

#include <stddef.h>
#include <stdint.h>

/* 2: AVX-512, 1: AVX2 + FMA, 0: neither (sg__gemm_nt refuses). */
int sg__gemm_nt_level(void);

/* 0, or -1 when this CPU has no kernel (the caller uses sgemm). */
int sg__gemm_nt(const float *x, int M, int K, const float *w, int N, float *y, int ldy);

/* W as IEEE half floats, for the AVX-512 kernel: half the bytes to read,
 * which is what bounds a prompt or two on a machine whose memory is slow
 * next to its arithmetic. Products then differ from the float kernel's by the
 * halves' rounding (a relative 2^-11 a weight; on MiniLM-L6 the embeddings
 * stay within cosine 0.9999995 of float arithmetic). */

/* out[n] = w[n] as halves: 0, or -1 without AVX-512 or when a weight is
 * beyond the half range (|w| > 65504, or not finite). */
int sg__gemm_nt_half(const float *w, size_t n, uint16_t *out);

/* sg__gemm_nt with such a W: 0, or -1 without AVX-512. */
int sg__gemm_nt_h(const float *x, int M, int K, const uint16_t *w, int N, float *y, int ldy);

#endif
