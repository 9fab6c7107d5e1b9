/* Fuzz target: the server-sent events reader (lib/sse.c), which every
 * upstream stream goes through before a byte of it reaches a client. Input:
 * one byte choosing a cap, two bytes choosing where the stream is split,
 * then the stream. Checked:
 *   - the events do not depend on how the stream is split across reads;
 *   - an event's data holds no CR, a comment no CR or LF, nothing exceeds
 *     the cap (and past the cap the reader refuses, never overflows);
 *   - events written back the way the proxy relays them ("data:" per line,
 *     a blank line after) read back as the same events. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "semgate/sse.h"

typedef struct seen {
	sg_buf_t log;  /* kind byte, 4 length bytes, then the bytes, per callback */
	size_t cap;    /* the reader's max_event */
} seen_t;

static int record(void *ud, enum sg_sse_kind kind, const char *p, size_t n)
{
	seen_t *s = ud;
	uint32_t len = (uint32_t)n;
	char k = kind == SG_SSE_DATA ? 'D' : 'C';

	FUZZ_CHECK(n <= s->cap, "a %c of %zu bytes past the cap %zu", k, n, s->cap);
	FUZZ_CHECK(memchr(p, '\r', n) == NULL, "a %c with a CR", k);
	if (kind == SG_SSE_COMMENT)
		FUZZ_CHECK(memchr(p, '\n', n) == NULL, "a comment with a LF");
	sg_buf_append(&s->log, &k, 1);
	sg_buf_append(&s->log, (const char *)&len, 4);
	sg_buf_append(&s->log, p, n);
	return 0;
}

/* Read text whole (split at cut), with finish; rc of the feeds into *rc. */
static void read_all(const char *text, size_t n, size_t cut, size_t cap, seen_t *out, int *rc)
{
	sg_sse_t r;
	sg_sse_init(&r, cap);
	sg_buf_init(&out->log, 0);
	out->cap = cap;
	*rc = sg_sse_feed(&r, text, cut, record, out);
	if (*rc == 0)
		*rc = sg_sse_feed(&r, text + cut, n - cut, record, out);
	if (*rc == 0)
		*rc = sg_sse_finish(&r, record, out);
	sg_sse_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_input_t in = {data, size};
	static const size_t caps[] = {16, 64, 1024, 1 << 20};
	size_t cap = caps[fuzz_u8(&in) & 3];
	size_t cut = fuzz_u16(&in);
	const char *text = (const char *)in.p;
	size_t n = in.n;
	seen_t whole, split;
	int rc1, rc2;

	if (cut > n)
		cut = n;
	read_all(text, n, n, cap, &whole, &rc1);
	read_all(text, n, cut, cap, &split, &rc2);
	FUZZ_CHECK(rc1 == rc2, "whole: %d, split at %zu: %d", rc1, cut, rc2);
	if (rc1 == 0) {
		FUZZ_CHECK(whole.log.len == split.log.len &&
			   (whole.log.len == 0 || memcmp(whole.log.data, split.log.data,
							 whole.log.len) == 0),
			   "events differ when split at %zu", cut);
		/* Round trip: write the events as the relay does, read them back. */
		sg_buf_t out;
		sg_buf_init(&out, 0);
		for (size_t i = 0; i < whole.log.len;) {
			char k = whole.log.data[i];
			uint32_t len;
			memcpy(&len, whole.log.data + i + 1, 4);
			const char *d = whole.log.data + i + 5;
			if (k == 'C') {
				sg_buf_append(&out, ":", 1);
				sg_buf_append(&out, d, len);
				sg_buf_append(&out, "\n\n", 2);
			} else {
				size_t left = len;
				for (;;) {
					const char *nl = memchr(d, '\n', left);
					size_t line = nl ? (size_t)(nl - d) : left;
					sg_buf_append(&out, "data: ", 6);
					sg_buf_append(&out, d, line);
					sg_buf_append(&out, "\n", 1);
					if (!nl)
						break;
					d += line + 1;
					left -= line + 1;
				}
				sg_buf_append(&out, "\n", 1);
			}
			i += 5 + len;
		}
		seen_t again;
		int rc3;
		/* the relay never writes more than it read, so a large cap suffices */
		read_all(out.data ? out.data : "", out.len, out.len, 1 << 21, &again, &rc3);
		FUZZ_CHECK(rc3 == 0, "reading back the relayed events: %d", rc3);
		FUZZ_CHECK(again.log.len == whole.log.len &&
			   (whole.log.len == 0 ||
			    memcmp(again.log.data, whole.log.data, whole.log.len) == 0),
			   "relayed events read back differently");
		sg_buf_free(&again.log);
		sg_buf_free(&out);
	}
	sg_buf_free(&whole.log);
	sg_buf_free(&split.log);
	return 0;
}
