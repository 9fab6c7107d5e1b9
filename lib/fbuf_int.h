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

static inline void sg__fbuf_u64(sg__fbuf_t *o, uint64_t v)
{
	char t[20];
	size_t i = sizeof(t);
	do
		t[--i] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	sg__fbuf_mem(o, t + i, sizeof(t) - i);
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
