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
	if (v < 10) { /* the commonest by far (a reset in 0 s, an age of 0, a count of 1) */
		*w = (char)('0' + v);
		return w + 1;
	}
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

/* A number's decimal digits held as words, to be written at more than one
 * place (sg__put_dec) without formatting it again or copying bytes just
 * written (a wider load of narrower stores stalls on the store buffer). */
typedef struct sg__dec {
	uint64_t w[3]; /* ASCII, the first digit in the lowest byte: w[0] the leading
	                * digits (lead of them), then whole words of 8 */
	uint8_t n;     /* digits */
	uint8_t lead;  /* digits in w[0] (1..8) */
	uint8_t words; /* words in use (1..3) */
} sg__dec_t;

/* x < 1e8 as 8 ASCII digits, leading zeros included, the first in the
 * lowest byte: split in halves, quarters and digits by multiplications in
 * the lanes of one register, not a division per digit pair. */
static inline uint64_t sg__ascii8(uint32_t x)
{
	_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "digits stored as words");
	uint64_t hi = x / 10000, v = hi | (uint64_t)(x - (uint32_t)hi * 10000) << 32;
	/* /100 in each 32-bit lane (exact below 10^4) -> 16-bit lanes of two digits */
	uint64_t q = ((v * 10486) >> 20) & 0x0000007F0000007Full;
	v = q | (v - q * 100) << 16;
	/* /10 in each 16-bit lane (exact below 100) -> bytes of one digit */
	q = ((v * 103) >> 10) & 0x000F000F000F000Full;
	return (q | (v - q * 10) << 8) | 0x3030303030303030ull;
}

static inline void sg__dec(sg__dec_t *d, uint64_t v)
{
	int n = sg__u64_digits(v), words = (n + 7) / 8, lead = n - 8 * (words - 1);
	uint64_t chunk[3];
	for (int i = words - 1; i > 0; i--) { /* the last 8 digits, then the 8 before */
		uint64_t q = v / 100000000;
		chunk[i] = v - q * 100000000;
		v = q;
	}
	chunk[0] = v;
	d->w[0] = sg__ascii8((uint32_t)chunk[0]) >> (8 * (8 - lead)); /* no leading zeros */
	for (int i = 1; i < words; i++)
		d->w[i] = sg__ascii8((uint32_t)chunk[i]);
	d->n = (uint8_t)n;
	d->lead = (uint8_t)lead;
	d->words = (uint8_t)words;
}

/* d's digits at w; returns their end. Writes whole words: up to 7 bytes past
 * the end may be overwritten (w needs d->n + 7 bytes). */
static inline char *sg__put_dec(char *w, const sg__dec_t *d)
{
	/* (three stores, not a loop: GCC makes a loop of copies one memcpy of a
	 * variable size, a slow rep movsb) */
	memcpy(w, &d->w[0], 8);
	if (d->words > 1)
		memcpy(w + d->lead, &d->w[1], 8);
	if (d->words > 2)
		memcpy(w + d->lead + 8, &d->w[2], 8);
	return w + d->n;
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
