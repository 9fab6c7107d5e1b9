/* semgate: shared types and error codes.
 *
 * Every function that can fail returns int: 0 on success or a negative SG_E*
 * code; sg_strerror() turns a code into text. Each library's own errors
 * (CURLcode, MDB_*, FAISS, errno) are translated once, in its wrapper.
 */
#ifndef SEMGATE_COMMON_H
#define SEMGATE_COMMON_H

#include <stddef.h>
#include <stdint.h>

/** A borrowed slice of bytes: valid only as long as whatever it points into. */
typedef struct sg_iovec {
	const char *base; /* first byte, not NUL-terminated */
	size_t len;       /* number of bytes */
} sg_iovec_t;

#define SG_IOV(s) ((sg_iovec_t){(s), sizeof(s) - 1})

/**
 * Error codes: all negative, 0 is success. One list, X(name, value, text):
 * the enum and sg_strerror()'s table are both made from it.
 */
#define SG_ERRORS(X)                                                                  \
	X(ENOMEM, -1, "out of memory")                                                \
	X(EINVAL, -2, "invalid argument")              /* invalid argument or input */ \
	X(EIO, -3, "I/O error")                        /* errno-level */               \
	X(ENOTFOUND, -4, "not found")                                                  \
	X(ETOOBIG, -5, "size limit exceeded")                                          \
	X(ETIMEDOUT, -6, "timed out")                                                  \
	X(ECONNECT, -7, "could not connect")                                           \
	X(EUPSTREAM, -8, "upstream transfer failed")   /* after connecting */          \
	X(ECORRUPT, -9, "data is corrupt or truncated")                                \
	X(EMISMATCH, -10, "incompatible stored data")  /* made by something else */    \
	X(EINDEX, -11, "vector index error")           /* FAISS */                     \
	X(ESTORE, -12, "store error")                  /* LMDB */                      \
	X(ECANCELED, -13, "canceled")                                                  \
	X(EFULL, -14, "capacity exhausted")                                            \
	X(EEXIST, -15, "already exists")

enum {
	SG_OK = 0,
#define SG__ERROR_ENUM(name, value, text) SG_##name = value,
	SG_ERRORS(SG__ERROR_ENUM)
#undef SG__ERROR_ENUM
	SG__ELAST = -16 /* sentinel: one past the last code */
};

/** Text for an SG_E* code; a static string, never NULL. */
const char *sg_strerror(int err);

/** Monotonic time in microseconds (CLOCK_MONOTONIC). */
uint64_t sg_now_us(void);

/** Wall-clock time in microseconds since the epoch (CLOCK_REALTIME, not
 * time()'s coarse clock, which lags it by up to a tick). */
int64_t sg_wall_us(void);

/** The wall-clock time of a monotonic reading (sg_now_us()'s), from an
 * offset between the two clocks read again once a second (per thread): a
 * second clock read saved where a monotonic one is at hand. A step of the
 * wall clock shows within that second. */
int64_t sg_wall_at_us(uint64_t mono_us);

#define SG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SG_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
