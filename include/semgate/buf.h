/* semgate: growable byte buffers with a hard cap (curl's dynbuf).
 *
 * Appending past the cap fails with SG_ETOOBIG and leaves the buffer as it
 * was, so a caller can turn it into a clean 413/431 instead of an abort.
 * The data is always NUL-terminated (one byte beyond len, not counted).
 */
#ifndef SEMGATE_BUF_H
#define SEMGATE_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "semgate/common.h"

typedef struct sg_buf {
	char *data; /* owned; NULL until the first append */
	size_t len; /* bytes in use */
	size_t cap; /* bytes allocated (excluding the NUL) */
	size_t max; /* hard cap on len; 0 means SIZE_MAX */
} sg_buf_t;

/** Initialise an empty buffer that may grow to max bytes (0: unlimited). */
void sg_buf_init(sg_buf_t *b, size_t max);
/** Free the data; the buffer is empty and usable again afterwards. */
void sg_buf_free(sg_buf_t *b);
/** Forget the contents, keep the allocation. */
static inline void sg_buf_reset(sg_buf_t *b) { b->len = 0; if (b->data) b->data[0] = '\0'; }
/** Make room for n more bytes. SG_ETOOBIG past the cap, SG_ENOMEM. */
int sg_buf_reserve(sg_buf_t *b, size_t n);
/** Append n bytes. SG_ETOOBIG past the cap (buffer unchanged), SG_ENOMEM. */
int sg_buf_append(sg_buf_t *b, const void *p, size_t n);
/** Append a NUL-terminated string. */
int sg_buf_puts(sg_buf_t *b, const char *s);
/** Append formatted text. */
int sg_buf_printf(sg_buf_t *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int sg_buf_vprintf(sg_buf_t *b, const char *fmt, va_list ap);
/** Append s as a JSON string literal, quotes included, escaped byte for byte
 * as jansson's encoder does (", \\, \b, \f, \n, \r, \t; other controls as
 * \u00XX; UTF-8 and '/' as they are). */
int sg_buf_json_str(sg_buf_t *b, const char *s, size_t n);
/** Drop the first n bytes (n <= len), moving the rest to the front. */
void sg_buf_consume(sg_buf_t *b, size_t n);
/** Take the data out: the caller frees it with free(); the buffer is left empty. */
char *sg_buf_steal(sg_buf_t *b, size_t *len);

#endif
