/* Server-sent events: see include/semgate/sse.h. */
#include <string.h>

#include "semgate/common.h"

#include "semgate/sse.h"

void sg_sse_init(sg_sse_t *s, size_t max_event)
{
	sg_buf_init(&s->line, max_event);
	sg_buf_init(&s->data, max_event);
	s->has_data = 0;
	s->after_cr = 0;
	s->event[0] = '\0';
}

void sg_sse_reset(sg_sse_t *s)
{
	sg_buf_reset(&s->line);
	sg_buf_reset(&s->data);
	s->has_data = 0;
	s->after_cr = 0;
	s->event[0] = '\0';
}

void sg_sse_free(sg_sse_t *s)
{
	sg_buf_free(&s->line);
	sg_buf_free(&s->data);
	s->has_data = 0;
	s->after_cr = 0;
}

/* The event is complete: hand its data over and start the next. */
static int dispatch(sg_sse_t *s, sg_sse_cb cb, void *ud)
{
	int rc = 0;
	if (s->has_data)
		rc = cb(ud, SG_SSE_DATA, s->data.data ? s->data.data : "", s->data.len);
	sg_buf_reset(&s->data);
	s->has_data = 0;
	s->event[0] = '\0';
	return rc;
}

/* One whole line (without its end). */
static int line(sg_sse_t *s, const char *l, size_t n, sg_sse_cb cb, void *ud)
{
	if (n == 0)
		return dispatch(s, cb, ud);
	if (l[0] == ':')
		return cb(ud, SG_SSE_COMMENT, l + 1, n - 1);
	const char *colon = memchr(l, ':', n);
	size_t name_len = colon ? (size_t)(colon - l) : n;
	const char *v = colon ? colon + 1 : l + n;
	size_t vlen = colon ? n - name_len - 1 : 0;
	if (vlen && v[0] == ' ') {
		v++;
		vlen--;
	}
	if (name_len == 5 && memcmp(l, "event", 5) == 0) {
		vlen = SG_MIN(vlen, sizeof(s->event) - 1);
		memcpy(s->event, v, vlen);
		s->event[vlen] = '\0';
		return 0;
	}
	if (name_len != 4 || memcmp(l, "data", 4) != 0)
		return 0; /* id, retry, or no field at all: nothing anyone here needs */
	if (s->has_data && sg_buf_append(&s->data, "\n", 1))
		return SG_ETOOBIG;
	if (vlen && sg_buf_append(&s->data, v, vlen))
		return SG_ETOOBIG;
	s->has_data = 1;
	return 0;
}

int sg_sse_feed(sg_sse_t *s, const char *p, size_t n, sg_sse_cb cb, void *ud)
{
	const char *end = p + n;
	int rc;

	while (p < end) {
		if (s->after_cr) {
			s->after_cr = 0;
			if (*p == '\n') { /* the LF of a CRLF */
				p++;
				continue;
			}
		}
		const char *q = p;
		while (q < end && *q != '\n' && *q != '\r')
			q++;
		if (q == end) { /* no line end yet: keep the piece */
			if (sg_buf_append(&s->line, p, (size_t)(end - p)))
				return SG_ETOOBIG;
			return 0;
		}
		s->after_cr = *q == '\r';
		if (s->line.len) {
			if (sg_buf_append(&s->line, p, (size_t)(q - p)))
				return SG_ETOOBIG;
			rc = line(s, s->line.data, s->line.len, cb, ud);
			sg_buf_reset(&s->line);
		} else {
			/* a line read in one piece obeys the same cap as one that was not */
			if (s->line.max && (size_t)(q - p) > s->line.max)
				return SG_ETOOBIG;
			rc = line(s, p, (size_t)(q - p), cb, ud);
		}
		if (rc)
			return rc;
		p = q + 1;
	}
	return 0;
}

int sg_sse_finish(sg_sse_t *s, sg_sse_cb cb, void *ud)
{
	int rc = 0;
	if (s->line.len)
		rc = line(s, s->line.data, s->line.len, cb, ud);
	if (rc == 0)
		rc = dispatch(s, cb, ud);
	sg_sse_reset(s);
	return rc;
}
