/* Private to src/: appending text to a fixed buffer without printf.
 *
 * glibc's snprintf costs one to two thousand instructions a call; a proxied
 * request formatted its status line, headers, request id and upstream URL
 * with a dozen of them, about a tenth of its instructions. These do the same
 * with memcpy. Like snprintf they truncate at the capacity and keep the text
 * NUL-terminated; sg__fbuf_full() tells whether anything was cut.
 */
#ifndef SEMGATE_FBUF_INT_H
#define SEMGATE_FBUF_INT_H

#include <stdint.h>
#include <string.h>

typedef struct sg__fbuf {
	char *buf;  /* the caller's buffer */
	size_t len; /* bytes written, always < cap when cap > 0 */
	size_t cap; /* its size, terminating NUL included */
	int cut;    /* 1 once something did not fit */
} sg__fbuf_t;

static inline void sg__fbuf_init(sg__fbuf_t *o, char *buf, size_t cap)
{
	o->buf = buf;
	o->len = 0;
	o->cap = cap;
	o->cut = cap == 0;
	if (cap)
		buf[0] = '\0';
}

static inline void sg__fbuf_mem(sg__fbuf_t *o, const char *s, size_t n)
{
	if (o->cap == 0)
		return;
	size_t room = o->cap - 1 - o->len;
	if (n > room) {
		n = room;
		o->cut = 1;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

static inline void sg__fbuf_str(sg__fbuf_t *o, const char *s)
{
	sg__fbuf_mem(o, s, strlen(s));
}

/* Decimal digits of v (1 to 20). */
static inline int sg__u64_digits(uint64_t v)
{
	static const uint64_t pow10[20] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull,
	                                   1000000ull, 10000000ull, 100000000ull, 1000000000ull,
	                                   10000000000ull, 100000000000ull, 1000000000000ull,
	                                   10000000000000ull, 100000000000000ull,
	                                   1000000000000000ull, 10000000000000000ull,
	                                   100000000000000000ull, 1000000000000000000ull,
	                                   10000000000000000000ull};
	/* 1 + floor(log10 v) from the bit length: log10(2) ~ 1233/4096, then one
	 * compare (the table's entry) corrects it */
	int t = ((64 - __builtin_clzll(v | 1)) * 1233) >> 12;
	return t + ((v | 1) >= pow10[t]);
}

/* v in decimal at w, two digits a division; returns the end. w needs 20 bytes. */
static inline char *sg__put_u64(char *w, uint64_t v)
{
	static const char pairs[201] = "00010203040506070809101112131415161718192021222324"
	                               "25262728293031323334353637383940414243444546474849"
	                               "50515253545556575859606162636465666768697071727374"
	                               "75767778798081828384858687888990919293949596979899";
	int n = sg__u64_digits(v);
	char *end = w + n;
	for (; n >= 2 && v > UINT32_MAX; n -= 2) { /* the last two digits, then the two before */
		uint64_t q = v / 100;
		memcpy(w + n - 2, pairs + 2 * (v - q * 100), 2);
		v = q;
	}
	uint32_t u = (uint32_t)v; /* 32-bit divisions from here: cheaper */
	for (; n >= 2; n -= 2) {
		uint32_t q = u / 100;
		memcpy(w + n - 2, pairs + 2 * (u - q * 100), 2);
		u = q;
	}
	if (n)
		w[0] = (char)('0' + u);
	return end;
}

static inline void sg__fbuf_u64(sg__fbuf_t *o, uint64_t v)
{
	char t[20];
	sg__fbuf_mem(o, t, (size_t)(sg__put_u64(t, v) - t));
}

/* v in lowercase hex, zero-padded to width digits (at most 16). */
static inline void sg__fbuf_hex(sg__fbuf_t *o, uint64_t v, int width)
{
	char t[16];
	for (int i = width - 1; i >= 0; i--, v >>= 4)
		t[i] = "0123456789abcdef"[v & 15];
	sg__fbuf_mem(o, t, (size_t)width);
}

static inline int sg__fbuf_full(const sg__fbuf_t *o)
{
	return o->cut;
}

#endif
