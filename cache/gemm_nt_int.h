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
 * next to its arithmetic. The halves are packed in panels of 48 columns (for
 * each 48 rows of W, for each k, those 48 weights: gemm_nt.c), which lets
 * that kernel keep a block of y in registers. Products then differ from the
 * float kernel's by the halves' rounding (a relative 2^-11 a weight; on
 * MiniLM-L6 the embeddings stay within cosine 0.9999995 of float arithmetic). */

/* uint16_t values the packed halves of W [N, K] take (0 for an empty W). */
size_t sg__gemm_nt_half_len(int N, int K);

/* Pack W [N, K] as halves into out (half_len values): 0, or -1 without
 * AVX-512 or when a weight is beyond the half range (|w| > 65504, or not
 * finite). */
int sg__gemm_nt_half(const float *w, int N, int K, uint16_t *out);

/* sg__gemm_nt with W packed so: 0, or -1 without AVX-512 (or ldy < N). With
 * bias (N values) y = bias + x W^T instead, whatever y held. */
int sg__gemm_nt_h(const float *x, int M, int K, const uint16_t *w, int N, float *y, int ldy,
                  const float *bias);

/* The same product on Intel AMX tiles (cache/gemm_amx.c), for CPUs that have
 * AMX-BF16 (and a kernel that grants the tile state): every float split into
 * two bfloat16s, three tile products per block, a relative error of about
 * 2^-16 a product (finer than the half-float weights above), at several
 * times float FMA's multiply-adds per cycle. W is packed once into the
 * tiles' layout (4 bytes a weight, private; the encoder does it when its
 * first batch needs it); x is converted SG_AMX_MC rows
 * at a time into a scratch buffer of the caller's (one per thread). N and K
 * must be multiples of 32. */
#define SG_AMX_MC 128

/* 1 when this process can use AMX-BF16 (asks the kernel once). */
int sg__gemm_amx_ok(void);

/* uint16_t values a packed W [N, K] takes, or 0 for a shape without AMX. */
size_t sg__gemm_amx_packed_len(int N, int K);

/* uint16_t values of the scratch for inputs of K columns, or 0. */
size_t sg__gemm_amx_scratch_len(int K);

/* Pack W [N, K] into out (packed_len values): 0, or -1 without AMX, for a
 * shape without AMX, or when a weight is not finite or beyond 3e38. */
int sg__gemm_amx_pack(const float *w, int N, int K, uint16_t *out);

/* y += x W^T with a packed W: 0, or -1 without AMX (nothing done). With
 * bias (N values) y = bias + x W^T instead, whatever y held. */
int sg__gemm_amx(const float *x, int M, int K, const uint16_t *wp, int N, float *y, int ldy,
                 uint16_t *scratch, const float *bias);

#endif
