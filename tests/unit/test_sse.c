/* Unit tests: the server-sent events reader (lib/sse.c). */
#include <stdlib.h>

#include "check.h"
#include "semgate/sse.h"

/* What a feed produced: "D<data>|" per event, "C<text>|" per comment. */
static int collect(void *ud, enum sg_sse_kind kind, const char *p, size_t n)
{
	sg_buf_t *b = ud;
	sg_buf_append(b, kind == SG_SSE_DATA ? "D" : "C", 1);
	sg_buf_append(b, p, n);
	sg_buf_append(b, "|", 1);
	return 0;
}

/* Feed text split at every position (and byte by byte): always want. */
static void expect_events(const char *text, const char *want, int finish)
{
	size_t n = strlen(text);
	for (size_t cut = 0; cut <= n + 1; cut++) {
		sg_sse_t s;
		sg_buf_t got;
		sg_sse_init(&s, 1 << 20);
		sg_buf_init(&got, 0);
		if (cut == n + 1) { /* byte by byte */
			for (size_t i = 0; i < n; i++)
				CHECK(sg_sse_feed(&s, text + i, 1, collect, &got) == 0);
		} else {
			CHECK(sg_sse_feed(&s, text, cut, collect, &got) == 0);
			CHECK(sg_sse_feed(&s, text + cut, n - cut, collect, &got) == 0);
		}
		if (finish)
			CHECK(sg_sse_finish(&s, collect, &got) == 0);
		const char *g = got.data ? got.data : "";
		CHECK_MSG(strcmp(g, want) == 0, "%s split at %zu: got \"%s\", want \"%s\"", text, cut,
		          g, want);
		sg_buf_free(&got);
		sg_sse_free(&s);
	}
}

static void test_line_ends_and_fields(void)
{
	expect_events("data: {\"a\":1}\n\ndata: [DONE]\n\n", "D{\"a\":1}|D[DONE]|", 0);
	expect_events("data: x\r\n\r\ndata: y\r\rdata:z\n\n", "Dx|Dy|Dz|", 0);
	/* data lines of one event are joined; other fields are ignored */
	expect_events("event: e\nid: 7\ndata: {\"a\":\ndata: 1}\nretry: 9\n\n", "D{\"a\":\n1}|", 0);
	/* a comment, a line with no field name, an event with no data */
	expect_events(": keepalive\nno field here\n\nevent: only\n\n", "C keepalive|", 0);
	/* "data" alone is an empty data line; "data:" with no space too */
	expect_events("data\n\ndata:\n\n", "D|D|", 0);
}

/* Issue 9, defect 5: the marker inside another event's JSON is not an event. */
static void test_done_inside_json_is_not_done(void)
{
	expect_events("data: {\"content\":\"data: [DONE]\\n\\n\"}\n\n",
	              "D{\"content\":\"data: [DONE]\\n\\n\"}|", 0);
	/* and an event cut off before its blank line is never delivered by a feed */
	expect_events("data: {\"a\":1}\ndata: [DONE]", "", 0);
}

static void test_finish(void)
{
	/* lenient: the last event's lines complete, the blank line missing */
	expect_events("data: {\"a\":1}\n\ndata: [DONE]\n", "D{\"a\":1}|D[DONE]|", 1);
	/* a last line without its end is read as a line (the relay then judges
	 * what it holds: "[DO" is neither JSON nor [DONE]) */
	expect_events("data: {\"a\":1}\n\ndata: [DO", "D{\"a\":1}|D[DO|", 1);
	expect_events("data: [DONE]", "D[DONE]|", 1);
}

/* An event's name, for the providers (Anthropic's streams say what an event
 * is with it). */
typedef struct named {
	sg_buf_t got; /* "name=data|" per event */
	sg_sse_t s;   /* the reader, whose event the callback reads */
} named_t;

static int names(void *ud, enum sg_sse_kind kind, const char *p, size_t n)
{
	named_t *t = ud;
	sg_buf_append(&t->got, t->s.event, strlen(t->s.event));
	sg_buf_append(&t->got, "=", 1);
	sg_buf_append(&t->got, p, n);
	sg_buf_append(&t->got, "|", 1);
	return 0;
}

static void test_event_names(void)
{
	named_t t;
	const char *in = "event: message_start\ndata: {}\n\ndata: x\n\nevent: ping\n\n"
	                 "event: delta\ndata: y\n\n";
	sg_buf_init(&t.got, 0);
	sg_sse_init(&t.s, 1024);
	CHECK(sg_sse_feed(&t.s, in, strlen(in), names, &t) == 0);
	CHECK_STR(t.got.data, "message_start={}|=x|delta=y|");
	sg_sse_free(&t.s);
	sg_buf_free(&t.got);
}

static void test_caps(void)
{
	sg_sse_t s;
	sg_buf_t got;
	char big[300];
	memset(big, 'x', sizeof(big));
	sg_sse_init(&s, 256);
	sg_buf_init(&got, 0);
	CHECK(sg_sse_feed(&s, "data: ", 6, collect, &got) == 0);
	CHECK(sg_sse_feed(&s, big, sizeof(big), collect, &got) == SG_ETOOBIG);
	sg_sse_free(&s);
	/* an event of many short lines over the cap */
	sg_sse_init(&s, 256);
	int rc = 0;
	for (int i = 0; i < 100 && rc == 0; i++)
		rc = sg_sse_feed(&s, "data: 0123456789\n", 17, collect, &got);
	CHECK(rc == SG_ETOOBIG);
	CHECK(got.len == 0);
	sg_sse_free(&s);
	/* a line that arrives in one piece is held to the same cap */
	char line[310];
	line[0] = ':';
	memset(line + 1, 'c', 300);
	line[301] = '\n';
	sg_sse_init(&s, 256);
	CHECK(sg_sse_feed(&s, line, 302, collect, &got) == SG_ETOOBIG);
	CHECK(got.len == 0);
	sg_sse_free(&s);
	sg_buf_free(&got);
}

static int stop_at_second(void *ud, enum sg_sse_kind kind, const char *p, size_t n)
{
	int *count = ud;
	return ++*count == 2 ? SG_ECANCELED : 0;
}

static void test_callback_stops(void)
{
	sg_sse_t s;
	int count = 0;
	sg_sse_init(&s, 1024);
	CHECK(sg_sse_feed(&s, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 27, stop_at_second, &count) ==
	      SG_ECANCELED);
	CHECK(count == 2);
	sg_sse_free(&s);
}

int main(void)
{
	test_line_ends_and_fields();
	test_done_inside_json_is_not_done();
	test_finish();
	test_event_names();
	test_caps();
	test_callback_stops();
	CHECK_DONE();
}
