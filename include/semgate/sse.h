/* semgate: a server-sent events reader (the WHATWG "event stream" format).
 *
 * An upstream's stream is parsed here once, and only whole events reach the
 * client and the cache: lines end with CRLF, LF or CR (in any mix, split
 * anywhere across reads), a line starting with ':' is a comment, `data`
 * lines of one event are joined with '\n', a blank line ends the event, an
 * `event` field names it (sg_sse_t.event, for the providers whose streams
 * say what an event is that way), and lines of other fields (`id`, `retry`,
 * or a line with no field name at all) are read and ignored. So `data: [DONE]` counts only as an event of
 * its own, never as bytes inside another event's JSON.
 *
 * Pure (no I/O); the reader owns two growable buffers, each capped at the
 * max_event bytes given to sg_sse_init().
 */
#ifndef SEMGATE_SSE_H
#define SEMGATE_SSE_H

#include <stddef.h>

#include "semgate/buf.h"

/** What a callback receives. */
enum sg_sse_kind {
	SG_SSE_DATA,    /* an event's data (its data lines joined by '\n') */
	SG_SSE_COMMENT  /* a comment line's text, without the ':' */
};

/**
 * Called for each complete event (with at least one data line) and each
 * comment. p[0..n) is borrowed until the callback returns and is followed by
 * a NUL for an event's data. During an event's callback the reader's `event`
 * holds its name ("" when it had none). A non-zero return stops the feed and
 * is returned by it.
 */
typedef int (*sg_sse_cb)(void *ud, enum sg_sse_kind kind, const char *p, size_t n);

/** A reader. Fields are private. */
typedef struct sg_sse {
	sg_buf_t line;   /* the line being read */
	sg_buf_t data;   /* the data of the event being read */
	int has_data;    /* the event has a data line (possibly empty) */
	int after_cr;    /* the last byte was CR: a LF right after it ends nothing */
	char event[64];  /* the `event` field of the event being read (truncated), or "" */
} sg_sse_t;

/** Prepare s; events and lines longer than max_event bytes are refused. */
void sg_sse_init(sg_sse_t *s, size_t max_event);
/** Forget a partial event (to read another stream). */
void sg_sse_reset(sg_sse_t *s);
/** Release s's buffers. */
void sg_sse_free(sg_sse_t *s);

/**
 * Read n bytes of the stream, calling cb for what completes. Returns 0,
 * SG_ETOOBIG (a line or an event beyond max_event: the stream cannot be
 * read further), or the callback's non-zero return.
 */
int sg_sse_feed(sg_sse_t *s, const char *p, size_t n, sg_sse_cb cb, void *ud);

/**
 * The stream ended. A last line without its end is read as a line, and an
 * event without its closing blank line is delivered (a lenient reading of
 * servers that end with "data: [DONE]\n" or less). Returns 0, SG_ETOOBIG or
 * cb's non-zero return. The reader is reset.
 */
int sg_sse_finish(sg_sse_t *s, sg_sse_cb cb, void *ud);

#endif
