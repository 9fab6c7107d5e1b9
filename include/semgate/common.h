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

/** Error codes: all negative, 0 is success. */
enum {
	SG_OK = 0,
	SG_ENOMEM = -1,     /* out of memory */
	SG_EINVAL = -2,     /* invalid argument or input */
	SG_EIO = -3,        /* I/O error (errno-level) */
	SG_ENOTFOUND = -4,  /* no such thing */
	SG_ETOOBIG = -5,    /* a size limit was hit */
	SG_ETIMEDOUT = -6,  /* a timeout expired */
	SG_ECONNECT = -7,   /* could not connect */
	SG_EUPSTREAM = -8,  /* upstream transfer failed after connecting */
	SG_ECORRUPT = -9,   /* stored data is corrupt or truncated */
	SG_EMISMATCH = -10, /* stored data was made by something incompatible */
	SG_EINDEX = -11,    /* vector index (FAISS) error */
	SG_ESTORE = -12,    /* key-value store (LMDB) error */
	SG_ECANCELED = -13, /* operation canceled */
	SG_EFULL = -14,     /* a capacity is exhausted */
	SG_EEXIST = -15,    /* already exists */
	SG__ELAST = -16     /* sentinel: one past the last code */
};

/** Text for an SG_E* code; a static string, never NULL. */
const char *sg_strerror(int err);

/** Monotonic time in microseconds (CLOCK_MONOTONIC). */
uint64_t sg_now_us(void);

#define SG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SG_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
