/* Growable, capped byte buffers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/buf.h"

void sg_buf_init(sg_buf_t *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max ? max : (size_t)-1 / 2;
}

void sg_buf_free(sg_buf_t *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

int sg_buf_reserve(sg_buf_t *b, size_t n)
{
	if (n > b->max || b->len > b->max - n)
		return SG_ETOOBIG;
	size_t need = b->len + n;
	if (need <= b->cap && b->data != NULL)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > b->max / 2 ? b->max : cap * 2;
	char *p = realloc(b->data, cap + 1);
	if (p == NULL)
		return SG_ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int sg_buf_append(sg_buf_t *b, const void *p, size_t n)
{
	int rc = sg_buf_reserve(b, n);
	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int sg_buf_puts(sg_buf_t *b, const char *s)
{
	return sg_buf_append(b, s, strlen(s));
}

int sg_buf_vprintf(sg_buf_t *b, const char *fmt, va_list ap)
{
	va_list cp;
	va_copy(cp, ap);
	int n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		return SG_EINVAL;
	int rc = sg_buf_reserve(b, (size_t)n);
	if (rc)
		return rc;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int sg_buf_printf(sg_buf_t *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = sg_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

int sg_buf_json_str(sg_buf_t *b, const char *s, size_t n)
{
	/* jansson's encoder escapes exactly these, this way: cache keys
	 * (cache/key.c) depend on writing what json_dumps writes */
	static const char hex[] = "0123456789ABCDEF";
	/* Worst case every byte becomes \u00XX. */
	int rc = sg_buf_reserve(b, n * 6 + 2);
	if (rc)
		return rc;
	char *o = b->data + b->len;
	*o++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"': *o++ = '\\'; *o++ = '"'; break;
		case '\\': *o++ = '\\'; *o++ = '\\'; break;
		case '\b': *o++ = '\\'; *o++ = 'b'; break;
		case '\f': *o++ = '\\'; *o++ = 'f'; break;
		case '\n': *o++ = '\\'; *o++ = 'n'; break;
		case '\r': *o++ = '\\'; *o++ = 'r'; break;
		case '\t': *o++ = '\\'; *o++ = 't'; break;
		default:
			if (c < 0x20) {
				memcpy(o, "\\u00", 4);
				o[4] = hex[c >> 4];
				o[5] = hex[c & 15];
				o += 6;
			} else {
				*o++ = (char)c;
			}
		}
	}
	*o++ = '"';
	b->len = (size_t)(o - b->data);
	b->data[b->len] = '\0';
	return 0;
}

void sg_buf_consume(sg_buf_t *b, size_t n)
{
	if (n >= b->len) {
		sg_buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

char *sg_buf_steal(sg_buf_t *b, size_t *len)
{
	char *p = b->data;
	if (len)
		*len = b->len;
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	return p;
}
