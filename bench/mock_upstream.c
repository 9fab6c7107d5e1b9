/*
 * mock-upstream: an OpenAI-compatible HTTP/1.1 server, the upstream provider
 * of semgate's integration tests and benchmarks.
 *
 *   mock-upstream [--host 127.0.0.1] --port N   (port 0 = pick a free port)
 *                 [--latency-ms N] [--stream-chunks N] [--stream-interval-ms N]
 *                 [--require-key KEY] [--fail-status CODE] [--embed-dim N]
 *                 [--quiet]
 *
 * On start it prints one line, "listening on HOST:PORT", and flushes stdout.
 * SIGTERM and SIGINT exit 0. With --quiet nothing else is printed; without
 * it, parse errors and injected faults are logged to stderr (never one line
 * per request: a harness that does not drain stderr must not stall us).
 *
 * Endpoints: POST /v1/chat/completions, POST /v1/completions,
 * POST /v1/embeddings, GET /v1/models, GET /mock/stats, POST /mock/reset;
 * and chat in two other providers' formats: Anthropic's POST /v1/messages
 * (key in x-api-key, anthropic-version required) and Gemini's POST
 * /v1beta/models/MODEL:generateContent and :streamGenerateContent?alt=sse
 * (key in x-goog-api-key or ?key=). Their requests are checked about as
 * strictly as those providers do (roles alternate, max_tokens present,
 * tool_result answers a tool_use; unknown Gemini fields refused), so a
 * request semgate translated wrongly fails here first.
 * Answers are deterministic: "mock answer to: <prompt>", where the prompt is
 * the last user message (text parts of an array content joined by a space)
 * or the completion prompt (one choice per prompt of an array). Embeddings are
 * a hashed bag of lower-cased words, L2-normalised. --latency-ms and
 * --require-key apply to the /v1/ endpoints only, never to /mock/ ones.
 *
 * Fault markers in the prompt (last user message, first completion prompt,
 * first embedding input), combinable: [[status=CODE]] [[status=CODE:text]]
 * [[retry-after=S]] [[reset]] [[latency=MS]] [[slow-headers=MS]] [[cut=N]]
 * [[garbage]] [[huge=N]] [[tool=NAME]] (the reply is a call of tool NAME
 * with arguments {"q":"<prompt>"}, in the request's format; chat only).
 * Each format answers injected statuses in its own error shape. A request
 * that is a stream and fails, resets or
 * gets garbage is not counted as a stream; a stream ended by [[cut]] counts
 * as "streams_cut", not "streams_aborted".
 *
 * Hostile-upstream markers (issue 9), combinable with the above. Streams:
 * in the OpenAI format (chat and completions) unless said otherwise.
 *   [[clean-end]]  a stream cut by [[cut=N]] still ends its HTTP response
 *                  properly (the zero-size chunk; the connection stays open):
 *                  only the missing events tell that it was cut. Any format.
 *   [[done-in-content]]  every answer starts with the text
 *                  "A stream of server-sent events ends with:\n\ndata: [DONE]\n\n"
 *                  (an answer explaining SSE; streamed, it is a content piece
 *                  of its own, the first one, so the bytes
 *                  data: [DONE]\n\n stand contiguous inside a JSON string,
 *                  newlines escaped). With [[cut=N]] [[clean-end]]: a stream
 *                  that holds "data: [DONE]" yet was cut.
 *   [[no-finish]]  streamed: the finish chunk (finish_reason "stop") is not
 *                  sent, so no chunk carries a finish_reason, but [DONE] is;
 *                  not streamed: "finish_reason":null.
 *   [[sse=KIND]]   streamed only; several may be given. The junk of garbage,
 *                  nofield and huge-line is sent in addition to the stream's
 *                  own events, right after its first content piece (chat:
 *                  after the role chunk and the first piece), so a reader
 *                  that drops it still gets the whole answer:
 *       garbage    a whole event "data: this is not json {\n\n"
 *       nofield    a line without a field name nor a colon, then a blank
 *                  line: "this line has no field name\n\n"
 *       huge-line  "data: " + 2 MiB of 'x' (not JSON, no newline) + "\n\n"
 *       comment    every event starts with a comment line ": keepalive\n"
 *                  (valid SSE)
 *       multiline  every JSON event is split over two data: lines after the
 *                  comma before "choices": data: {"id":...,\ndata: "choices":...}
 *                  (valid SSE: a reader joins data lines with "\n")
 *       crlf       every line ends with CRLF (valid SSE)
 *       cr         every line ends with a lone CR (valid SSE)
 *       noblank    the last event, data: [DONE], ends with one line end
 *                  instead of two: the stream ends without its blank line
 *   [[body=KIND]]  non-streamed OpenAI chat/completions reply, status 200
 *                  (a streamed request is not affected):
 *       choices-null       the completion with "choices":[null]
 *       choices-empty      the completion with "choices":[]
 *       no-message         the completion with "choices":[{"index":0}]
 *       error-and-choices  the valid completion with an "error" object first:
 *                          {"error":{"message":"mock error beside choices",
 *                          "type":"server_error","code":null},"id":...}
 *       array              the body is [] (JSON, not an object)
 *       string             the body is a JSON string: "mock answer to: ..."
 *   [[ok-status=CODE]]  a successful reply (any API and format, streamed or
 *                  not) is sent with status CODE (200-299), e.g. 201 or 206,
 *                  its body unchanged.
 *   [[no-done]]    streamed: every event is sent (the finish chunk, the usage
 *                  chunk if asked for) except the final data: [DONE]; the HTTP
 *                  reply then ends properly (the zero-size chunk; the
 *                  connection stays open). Counted as completed, not cut.
 *   [[no-done=close]]  the same, but the stream is not chunked: no
 *                  Content-Length, Connection: close, and it ends when the
 *                  mock closes the connection.
 *
 * Design: one thread, one loop. llhttp parses requests as bytes arrive; each
 * complete request becomes a reply. A reply that can go out at once is
 * serialised straight into the connection's output buffer, flushed once per
 * read with uv_try_write (uv_write only when the socket is full). A reply that
 * must wait (a delay, a stream, an earlier reply still waiting) is queued, so
 * pipelined requests are answered in order. A client EOF while a reply waits
 * counts as a disconnect: the connection is closed and its streams aborted.
 */

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <llhttp.h>
#include <uv.h>

#define READ_BUF_SIZE	(256 * 1024)
#define MAX_URL		8192
#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_BODY	((size_t)256 * 1024 * 1024)
#define MAX_HUGE	((uint64_t)128 * 1024 * 1024)
#define MAX_DELAY_MS	((uint64_t)3600 * 1000)
#define MAX_QUEUE	1024			/* queued replies before reads stop */
#define HIGH_WATER	((size_t)8 * 1024 * 1024) /* unsent bytes before reads stop */
#define LINGER_MS	2000			/* drain input this long after the last reply */
#define KEEP_SPARE	((size_t)1024 * 1024)	/* larger idle buffers are freed */
#define MAX_EMBED_DIM	65536
#define MAX_CHUNKS	100000

#define container_of(ptr, type, field) \
	((type *)((char *)(ptr) - offsetof(type, field)))

/* A growable byte buffer. A failed append sets `oom` and later appends are
 * no-ops, so a caller checks once at the end (like sds/dynbuf). */
struct buf {
	char *base;		/* heap memory or NULL */
	size_t len;		/* bytes in use */
	size_t cap;		/* bytes allocated */
	int oom;		/* an append failed since the last buf_clear() */
};

enum api { API_CHAT, API_TEXT, API_EMBED };

/* Whose wire format a chat request and its reply use. */
enum fmt { FMT_OPENAI, FMT_ANTHROPIC, FMT_GEMINI };

/* A streamed reply; one allocation holding offsets, model and answer text. */
struct stream {
	enum api api;		/* API_CHAT or API_TEXT */
	enum fmt fmt;		/* wire format of the events */
	uint64_t id;		/* the n of "chatcmpl-mock-<n>" */
	uint64_t created;	/* unix time */
	int chunked;		/* HTTP/1.1 chunked framing, else close-delimited */
	int include_usage;	/* stream_options.include_usage */
	uint64_t chunks;	/* content pieces per answer */
	int64_t cut;		/* events to send before cutting, or -1 */
	uint64_t next;		/* index of the next event */
	int started;		/* response head sent */
	int64_t retry_after;	/* Retry-After seconds, or -1 */
	uint64_t prompt_tokens;	/* usage */
	uint64_t completion_tokens; /* usage */
	size_t n_answers;	/* one per prompt */
	size_t *off;		/* n_answers + 1 offsets into text */
	const char *model;	/* model name (not NUL-terminated) */
	size_t model_len;	/* bytes of model */
	const char *text;	/* answers, concatenated (a tool call's arguments) */
	const char *tool;	/* [[tool=NAME]]: NAME (not NUL-terminated), or NULL */
	size_t tool_len;	/* bytes of tool */
	int status;		/* [[ok-status=CODE]], or 0 for 200 */
	int clean_end;		/* [[clean-end]]: a cut ends the HTTP reply properly */
	int no_finish;		/* [[no-finish]]: no finish chunk */
	int no_done;		/* [[no-done]]: 1, [[no-done=close]]: 2, else 0 */
	unsigned sse;		/* [[sse=KIND]]: SSE_* bits */
	size_t pre;		/* [[done-in-content]]: bytes of the first piece of an answer */
};

/* [[sse=KIND]] bits. */
enum {
	SSE_GARBAGE = 1,
	SSE_NOFIELD = 2,
	SSE_HUGE_LINE = 4,
	SSE_COMMENT = 8,
	SSE_MULTILINE = 16,
	SSE_CRLF = 32,
	SSE_CR = 64,
	SSE_NOBLANK = 128
};

#define HUGE_LINE	((size_t)2 * 1024 * 1024)	/* [[sse=huge-line]] bytes of 'x' */
#define DONE_TEXT	"A stream of server-sent events ends with:\n\ndata: [DONE]\n\n"

/* [[body=KIND]]: a 200 that is not a chat completion. */
enum {
	BODY_ANSWER,		/* the real answer */
	BODY_CHOICES_NULL,
	BODY_CHOICES_EMPTY,
	BODY_NO_MESSAGE,
	BODY_ERROR_AND_CHOICES,
	BODY_ARRAY,
	BODY_STRING
};

enum {
	RF_CLOSE = 1,		/* close the connection after this reply */
	RF_RESET = 2,		/* send nothing: reset the connection */
	RF_CUT = 4,		/* send only half of the body, then close */
	RF_HEAD = 8		/* HEAD request: no body */
};

/* A reply as the router describes it, before it is serialised or queued. */
struct reply {
	int status;		/* HTTP status */
	const char *ctype;	/* Content-Type */
	struct buf *body;	/* the server's scratch body buffer */
	int64_t retry_after;	/* Retry-After seconds, or -1 */
	uint64_t delay_ms;	/* wait before sending anything */
	unsigned flags;		/* RF_* */
	struct stream *stream;	/* streamed reply (owned), or NULL */
};

/* A reply waiting in a connection's queue. */
struct req {
	struct req *next;	/* next queued reply */
	unsigned flags;		/* RF_* */
	uint64_t delay_ms;	/* still to wait before the reply starts */
	struct buf resp;	/* serialised reply, if not streamed */
	struct stream *stream;	/* streamed reply, or NULL */
};

/* What a connection's output is doing; one setter: conn_set_state(). */
enum conn_state {
	CONN_READING,		/* no reply waiting */
	CONN_DELAYING,		/* the first queued reply waits for its delay */
	CONN_STREAMING,		/* a stream waits between two events */
	CONN_DRAINING,		/* last reply out: shutdown, then linger */
	CONN_CLOSING,		/* uv_close() called, waiting for close callbacks */
	CONN_STATE_LAST
};

enum {
	CF_INPUT_DONE = 1,	/* the parser takes no more requests */
	CF_READ_PAUSED = 2,	/* reads stopped for back-pressure */
	CF_PEER_EOF = 4,	/* the client sent FIN */
	CF_SHUTDOWN = 8		/* uv_shutdown() issued */
};

enum hstate { HS_NONE, HS_FIELD, HS_VALUE };

struct mock;

struct conn {
	struct mock *m;		/* the server */
	struct conn *prev;	/* in m->conns */
	struct conn *next;	/* in m->conns */
	uv_tcp_t tcp;		/* the socket */
	uv_timer_t timer;	/* delays, stream pacing, lingering */
	uv_shutdown_t shutdown;	/* graceful close */
	llhttp_t parser;	/* request parser */
	enum conn_state state;	/* see enum */
	unsigned flags;		/* CF_* */
	int handles_open;	/* freed when both handles are closed */
	struct buf url;		/* URL of the request being parsed */
	struct buf hdrs;	/* its headers: "name\0value\0"..., lower-case names */
	struct buf body;	/* its body */
	enum hstate hstate;	/* where the header callbacks are */
	size_t val_start;	/* offset in hdrs of the current value */
	int keep_alive;		/* from llhttp_should_keep_alive() */
	int err_status;		/* status for a parse error we raised (413...) */
	struct req *head;	/* queued replies, oldest first */
	struct req *tail;	/* newest queued reply */
	unsigned queued;	/* length of the queue */
	struct buf out;		/* bytes not yet handed to the socket */
};

/* A uv_write that owns the memory it writes. */
struct wreq {
	uv_write_t req;		/* req.data is the connection */
	char *mem;		/* freed when the write ends */
};

struct stats {
	uint64_t requests;	/* every request except /mock/ */
	uint64_t chat;		/* POST /v1/chat/completions */
	uint64_t completions;	/* POST /v1/completions */
	uint64_t embeddings;	/* POST /v1/embeddings */
	uint64_t messages;	/* POST /v1/messages (Anthropic) */
	uint64_t gemini;	/* POST /v1beta/models/...:*generateContent */
	uint64_t streams_started; /* streamed replies accepted */
	uint64_t streams_completed; /* ... that sent the final zero chunk */
	uint64_t streams_aborted; /* ... whose client went away first */
	uint64_t streams_cut;	/* ... cut by [[cut=N]] */
};

struct mock {
	uv_loop_t *loop;	/* the one loop */
	uv_tcp_t listener;	/* listening socket */
	uv_signal_t sigterm;	/* exits */
	uv_signal_t sigint;	/* exits */
	const char *host;	/* --host */
	int port;		/* --port, then the bound port */
	uint64_t latency_ms;	/* --latency-ms */
	uint64_t stream_chunks;	/* --stream-chunks */
	uint64_t stream_interval_ms; /* --stream-interval-ms */
	const char *require_key; /* --require-key, or NULL */
	int fail_status;	/* --fail-status, or 0 */
	unsigned embed_dim;	/* --embed-dim */
	int quiet;		/* --quiet */
	struct stats st;	/* counters since start or reset */
	uint64_t next_id;	/* completion ids */
	int has_last_auth;	/* last_auth is set (else null) */
	struct buf last_auth;	/* Authorization of the last request */
	int has_last_model;	/* last_model is set (else null) */
	struct buf last_model;	/* model of the last POST */
	struct buf last_hdrs;	/* headers of the last POST, as conn.hdrs */
	struct buf body;	/* scratch: reply body, stream event */
	struct buf prompt;	/* scratch: chat prompt */
	struct buf ans;		/* scratch: answers, concatenated */
	struct buf offs;	/* scratch: size_t offsets into ans */
	struct buf tmp;		/* scratch: anything short-lived */
	struct conn *conns;	/* open connections */
	char rbuf[READ_BUF_SIZE]; /* shared read buffer: parsing is synchronous */
};

static void conn_close(struct conn *c, int reset);
static void conn_pump(struct conn *c);

/* ---- buffers -------------------------------------------------------------- */

static int buf_grow(struct buf *b, size_t extra)
{
	size_t want;
	char *p;

	if (b->oom)
		return -1;
	if (extra <= b->cap - b->len)
		return 0;
	if (extra > SIZE_MAX / 4 - b->len)
		goto fail;
	want = b->cap ? b->cap : 256;
	while (want < b->len + extra)
		want *= 2;
	p = realloc(b->base, want);
	if (p == NULL)
		goto fail;
	b->base = p;
	b->cap = want;
	return 0;
fail:
	b->oom = 1;
	return -1;
}

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0 || buf_grow(b, n) != 0)
		return;
	memcpy(b->base + b->len, p, n);
	b->len += n;
}

static void buf_addc(struct buf *b, char ch)
{
	buf_add(b, &ch, 1);
}

static void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_add_u64(struct buf *b, uint64_t v)
{
	char tmp[24], *p = tmp + sizeof(tmp);

	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	buf_add(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

static void buf_addf(struct buf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void buf_clear(struct buf *b)
{
	b->len = 0;
	b->oom = 0;
}

static void buf_free(struct buf *b)
{
	free(b->base);
	memset(b, 0, sizeof(*b));
}

/* Empty the buffer, giving back its memory if it grew big (64 MB bodies). */
static void buf_trim(struct buf *b)
{
	if (b->cap > KEEP_SPARE)
		buf_free(b);
	buf_clear(b);
}

/* Length of a valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

/* Append s as JSON string content (no quotes); invalid UTF-8 becomes U+FFFD. */
static void buf_add_jraw(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s, *end = p + n, *run;
	char esc[6] = { '\\', 'u', '0', '0', 0, 0 };
	size_t k;

	while (p < end) {
		run = p;
		while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
			p++;
		buf_add(b, run, (size_t)(p - run));
		if (p == end)
			break;
		if (*p >= 0x80) {
			k = utf8_len(p, (size_t)(end - p));
			if (k == 0) {
				buf_adds(b, "\\ufffd");
				k = 1;
			} else {
				buf_add(b, p, k);
			}
			p += k;
			continue;
		}
		switch (*p) {
		case '"': buf_adds(b, "\\\""); break;
		case '\\': buf_adds(b, "\\\\"); break;
		case '\n': buf_adds(b, "\\n"); break;
		case '\r': buf_adds(b, "\\r"); break;
		case '\t': buf_adds(b, "\\t"); break;
		default:
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 15];
			buf_add(b, esc, 6);
		}
		p++;
	}
}

static void buf_add_jstr(struct buf *b, const char *s, size_t n)
{
	buf_addc(b, '"');
	buf_add_jraw(b, s, n);
	buf_addc(b, '"');
}

/* Parse a decimal number of at most `max`; 0 on success. */
static int parse_num(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 19)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

static uint64_t ceil4(size_t n)
{
	return ((uint64_t)n + 3) / 4;
}

/* ---- HTTP output ---------------------------------------------------------- */

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 206: return "Partial Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return status < 400 ? "OK" : "Error";
	}
}

/* Response head; framing is a Content-Length, or chunked, or neither (close
 * delimited) when clen is SIZE_MAX. */
static void put_head(struct buf *o, int status, const char *ctype, size_t clen,
		     int chunked, int64_t retry_after, int keep_alive)
{
	buf_adds(o, "HTTP/1.1 ");
	buf_add_u64(o, (uint64_t)status);
	buf_addc(o, ' ');
	buf_adds(o, reason(status));
	buf_adds(o, "\r\nContent-Type: ");
	buf_adds(o, ctype);
	if (chunked) {
		buf_adds(o, "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked");
	} else if (clen != SIZE_MAX) {
		buf_adds(o, "\r\nContent-Length: ");
		buf_add_u64(o, clen);
	}
	if (retry_after >= 0) {
		buf_adds(o, "\r\nRetry-After: ");
		buf_add_u64(o, (uint64_t)retry_after);
	}
	buf_adds(o, keep_alive ? "\r\nConnection: keep-alive\r\n\r\n"
			       : "\r\nConnection: close\r\n\r\n");
}

static void put_reply(struct buf *o, const struct reply *r)
{
	size_t n = r->body->len;

	put_head(o, r->status, r->ctype, n, 0, r->retry_after,
		 !(r->flags & RF_CLOSE));
	if (r->flags & RF_HEAD)
		return;
	if (r->flags & RF_CUT)
		n /= 2;
	buf_add(o, r->body->base, n);
}

/* An OpenAI error body; `code` is a raw JSON token ("\"not_found\"", "500"). */
static void error_reply(struct reply *r, int status, const char *type,
			const char *code, const char *msg, size_t msg_len)
{
	struct buf *b = r->body;

	r->status = status;
	r->ctype = "application/json";
	buf_clear(b);
	buf_adds(b, "{\"error\":{\"message\":");
	buf_add_jstr(b, msg, msg_len);
	buf_adds(b, ",\"type\":\"");
	buf_adds(b, type);
	buf_adds(b, "\",\"code\":");
	buf_adds(b, code);
	buf_adds(b, "}}");
}

static void injected_error(struct reply *r, int status)
{
	char msg[48], code[16];
	const char *type = status == 429 ? "rate_limit_error" :
			   status >= 400 && status < 500 ? "invalid_request_error" :
			   "server_error";

	snprintf(msg, sizeof(msg), "mock injected %d", status);
	snprintf(code, sizeof(code), "%d", status);
	error_reply(r, status, type, code, msg, strlen(msg));
}

static void bad_request(struct reply *r, const char *msg)
{
	error_reply(r, 400, "invalid_request_error", "null", msg, strlen(msg));
}

/* ---- embeddings ----------------------------------------------------------- */

static int is_word_byte(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || ch >= 0x80;
}

/* Hashed bag of lower-cased words: FNV-1a picks a bucket and a sign. Texts
 * sharing words point the same way; the result has unit length. */
static void embed_text(const char *s, size_t n, float *v, unsigned dim)
{
	double norm = 0;
	size_t i = 0;
	unsigned d;
	uint64_t h;
	unsigned char ch;

	memset(v, 0, dim * sizeof(*v));
	while (i < n) {
		while (i < n && !is_word_byte((unsigned char)s[i]))
			i++;
		if (i == n)
			break;
		h = 14695981039346656037ULL;
		while (i < n && is_word_byte((unsigned char)s[i])) {
			ch = (unsigned char)s[i++];
			if (ch >= 'A' && ch <= 'Z')
				ch += 'a' - 'A';
			h = (h ^ ch) * 1099511628211ULL;
		}
		v[(h >> 1) % dim] += (h & 1) ? -1.0f : 1.0f;
	}
	for (d = 0; d < dim; d++)
		norm += (double)v[d] * v[d];
	if (norm == 0) {
		v[0] = 1.0f;	/* no words: still a unit vector */
		return;
	}
	norm = sqrt(norm);
	for (d = 0; d < dim; d++)
		v[d] = (float)(v[d] / norm);
}

/* |x| <= 1: "0.123457" style, cheaper than printf. */
static void buf_add_unit_float(struct buf *b, float x)
{
	char tmp[12], *p = tmp;
	long q = lround(fabs((double)x) * 1e6);
	int i;

	if (x < 0 && q != 0)
		*p++ = '-';
	*p++ = (char)('0' + q / 1000000);
	*p++ = '.';
	for (i = 5; i >= 0; i--)
		p[i] = (char)('0' + q % 10), q /= 10;
	buf_add(b, tmp, (size_t)(p + 6 - tmp));
}

/* encoding_format "base64": little-endian float32s, as OpenAI sends them. */
static void buf_add_base64_floats(struct buf *b, const float *v, unsigned dim)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char in[3];
	size_t total = (size_t)dim * 4, i, k;
	uint32_t u;
	char q[4];

	buf_addc(b, '"');
	for (i = 0; i < total; i += 3) {
		for (k = 0; k < 3; k++) {
			if (i + k < total) {
				memcpy(&u, &v[(i + k) / 4], 4);
				in[k] = (unsigned char)(u >> (8 * ((i + k) % 4)));
			} else {
				in[k] = 0;
			}
		}
		q[0] = tab[in[0] >> 2];
		q[1] = tab[((in[0] & 3) << 4) | (in[1] >> 4)];
		q[2] = i + 1 < total ? tab[((in[1] & 15) << 2) | (in[2] >> 6)] : '=';
		q[3] = i + 2 < total ? tab[in[2] & 63] : '=';
		buf_add(b, q, 4);
	}
	buf_addc(b, '"');
}

/* ---- fault markers -------------------------------------------------------- */

struct faults {
	int status;		/* injected status, or 0 */
	int status_text;	/* plain-text body instead of JSON */
	int64_t retry_after;	/* seconds, or -1 */
	int reset;		/* reset the connection */
	uint64_t delay_ms;	/* latency + slow-headers */
	int64_t cut;		/* events (or half body), or -1 */
	int garbage;		/* non-JSON 200 body */
	int64_t huge;		/* answer length, or -1 */
	const char *tool;	/* [[tool=NAME]]: NAME, in the prompt, or NULL */
	size_t tool_len;	/* bytes of tool */
	int clean_end;		/* [[clean-end]] */
	int done_in_content;	/* [[done-in-content]] */
	int no_finish;		/* [[no-finish]] */
	int no_done;		/* [[no-done]]: 1, [[no-done=close]]: 2 */
	unsigned sse;		/* [[sse=KIND]]: SSE_* bits */
	int body;		/* [[body=KIND]]: BODY_* */
	int ok_status;		/* [[ok-status=CODE]], or 0 */
};

static const char *const sse_kinds[] = {
	"garbage", "nofield", "huge-line", "comment", "multiline", "crlf", "cr", "noblank", NULL
};

static const char *const body_kinds[] = {
	"answer", "choices-null", "choices-empty", "no-message", "error-and-choices", "array",
	"string", NULL
};

/* Index of s (n bytes) in a NULL-terminated list of names, or -1. */
static int name_index(const char *const *names, const char *s, size_t n)
{
	int i;

	for (i = 0; names[i] != NULL; i++)
		if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
			return i;
	return -1;
}

static int marker_num(const char *s, size_t n, const char *key, uint64_t max,
		      uint64_t *out)
{
	size_t k = strlen(key);

	return n > k && memcmp(s, key, k) == 0 && parse_num(s + k, n - k, max, out) == 0;
}

static void parse_faults(const char *s, size_t n, struct faults *f)
{
	const char *in, *end;
	size_t i = 0, len;
	uint64_t v;

	memset(f, 0, sizeof(*f));
	f->retry_after = f->cut = f->huge = -1;
	while (i + 4 <= n) {
		if (s[i] != '[' || s[i + 1] != '[') {
			i++;
			continue;
		}
		in = s + i + 2;
		for (end = in; end + 1 < s + n && !(end[0] == ']' && end[1] == ']'); end++)
			;
		if (end + 1 >= s + n)
			break;
		len = (size_t)(end - in);
		if (len == 5 && memcmp(in, "reset", 5) == 0)
			f->reset = 1;
		else if (len == 7 && memcmp(in, "garbage", 7) == 0)
			f->garbage = 1;
		else if (len > 5 && marker_num(in, len - 5, "status=", 599, &v) &&
			 memcmp(end - 5, ":text", 5) == 0 && v >= 200)
			f->status = (int)v, f->status_text = 1;
		else if (marker_num(in, len, "status=", 599, &v) && v >= 200)
			f->status = (int)v, f->status_text = 0;
		else if (marker_num(in, len, "retry-after=", 1000000000, &v))
			f->retry_after = (int64_t)v;
		else if (marker_num(in, len, "latency=", MAX_DELAY_MS, &v) ||
			 marker_num(in, len, "slow-headers=", MAX_DELAY_MS, &v))
			f->delay_ms += v;
		else if (marker_num(in, len, "cut=", 1000000000, &v))
			f->cut = (int64_t)v;
		else if (marker_num(in, len, "huge=", MAX_HUGE, &v))
			f->huge = (int64_t)v;
		else if (len == 9 && memcmp(in, "clean-end", 9) == 0)
			f->clean_end = 1;
		else if (len == 15 && memcmp(in, "done-in-content", 15) == 0)
			f->done_in_content = 1;
		else if (len == 9 && memcmp(in, "no-finish", 9) == 0)
			f->no_finish = 1;
		else if (len == 7 && memcmp(in, "no-done", 7) == 0)
			f->no_done = 1;
		else if (len == 13 && memcmp(in, "no-done=close", 13) == 0)
			f->no_done = 2;
		else if (len > 4 && memcmp(in, "sse=", 4) == 0 &&
			 name_index(sse_kinds, in + 4, len - 4) >= 0)
			f->sse |= 1u << name_index(sse_kinds, in + 4, len - 4);
		else if (len > 5 && memcmp(in, "body=", 5) == 0 &&
			 name_index(body_kinds, in + 5, len - 5) >= 0)
			f->body = name_index(body_kinds, in + 5, len - 5);
		else if (marker_num(in, len, "ok-status=", 299, &v) && v >= 200)
			f->ok_status = (int)v;
		else if (len > 5 && len <= 5 + 64 && memcmp(in, "tool=", 5) == 0 &&
			 strspn(in + 5, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				"0123456789_-") >= len - 5)
			f->tool = in + 5, f->tool_len = len - 5;
		else {
			i++;	/* not a marker: "[[x [[reset]]" still resets */
			continue;
		}
		i = (size_t)(end + 2 - s);
	}
}

/* ---- requests ------------------------------------------------------------- */

/* Value of a header of the request being handled, or NULL. */
static const char *hdr_get(const struct buf *h, const char *name, size_t *len)
{
	const char *p = h->base, *end = p != NULL ? p + h->len : NULL, *nul, *val;

	while (p != NULL && p < end) {
		nul = memchr(p, '\0', (size_t)(end - p));
		if (nul == NULL)
			break;
		val = nul + 1;
		nul = val < end ? memchr(val, '\0', (size_t)(end - val)) : NULL;
		if (nul == NULL)
			break;
		if (strcmp(p, name) == 0) {
			*len = (size_t)(nul - val);
			return val;
		}
		p = nul + 1;
	}
	return NULL;
}

static int authorized(const struct conn *c)
{
	const char *key = c->m->require_key, *v;
	size_t n;

	if (key == NULL)
		return 1;
	v = hdr_get(&c->hdrs, "authorization", &n);
	return v != NULL && n == 7 + strlen(key) && memcmp(v, "Bearer ", 7) == 0 &&
	       memcmp(v + 7, key, n - 7) == 0;
}

/* Bytes of content_text(content) without building it. */
static size_t content_len(const json_t *content)
{
	const json_t *part, *text;
	size_t i, n = 0, parts = 0;

	if (json_is_string(content))
		return json_string_length(content);
	json_array_foreach(content, i, part) {
		text = json_is_string(part) ? part : json_object_get(part, "text");
		if (json_is_string(text))
			n += json_string_length(text) + (parts++ > 0);
	}
	return n;
}

/* Text of a message content: a string, or the text parts of an array. */
static void content_text(const json_t *content, struct buf *out)
{
	const json_t *part, *text;
	size_t i, start = out->len;

	if (json_is_string(content)) {
		buf_add(out, json_string_value(content), json_string_length(content));
		return;
	}
	if (!json_is_array(content))
		return;
	json_array_foreach(content, i, part) {
		text = json_is_string(part) ? part : json_object_get(part, "text");
		if (!json_is_string(text))
			continue;
		if (out->len > start)
			buf_addc(out, ' ');
		buf_add(out, json_string_value(text), json_string_length(text));
	}
}

static void answers_begin(struct mock *m)
{
	size_t zero = 0;

	buf_clear(&m->ans);
	buf_clear(&m->offs);
	buf_add(&m->offs, &zero, sizeof(zero));
}

static void answers_add(struct mock *m, const char *prompt, size_t len, int64_t huge,
			int done_in_content)
{
	if (done_in_content)
		buf_adds(&m->ans, DONE_TEXT);
	if (huge >= 0) {
		if (m->ans.len + (size_t)huge > MAX_HUGE)
			m->ans.oom = 1;	/* [[huge]] times many prompts */
		if (buf_grow(&m->ans, (size_t)huge) == 0) {
			memset(m->ans.base + m->ans.len, 'x', (size_t)huge);
			m->ans.len += (size_t)huge;
		}
	} else {
		buf_adds(&m->ans, "mock answer to: ");
		buf_add(&m->ans, prompt, len);
	}
	buf_add(&m->offs, &m->ans.len, sizeof(m->ans.len));
}

static void put_usage(struct buf *b, uint64_t pt, uint64_t ct)
{
	buf_adds(b, "\"usage\":{\"prompt_tokens\":");
	buf_add_u64(b, pt);
	buf_adds(b, ",\"completion_tokens\":");
	buf_add_u64(b, ct);
	buf_adds(b, ",\"total_tokens\":");
	buf_add_u64(b, pt + ct);
	buf_addc(b, '}');
}

/* A complete (non-streamed) chat.completion or text_completion. */
static void completion_body(struct mock *m, enum api api, struct buf *b,
			    const char *model, size_t model_len, uint64_t pt, uint64_t ct,
			    const char *tool, size_t tool_len, int kind, int no_finish)
{
	const size_t *off = (const size_t *)m->offs.base;
	size_t n = m->offs.len / sizeof(size_t) - 1, i;
	const char *fin = no_finish ? "null" : tool != NULL ? "\"tool_calls\"" : "\"stop\"";

	if (kind == BODY_ARRAY) {
		buf_adds(b, "[]");
		return;
	}
	if (kind == BODY_STRING) {
		buf_add_jstr(b, m->ans.base, off[1]);
		return;
	}
	if (kind == BODY_ERROR_AND_CHOICES)
		buf_adds(b, "{\"error\":{\"message\":\"mock error beside choices\","
			 "\"type\":\"server_error\",\"code\":null},\"id\":");
	else
		buf_adds(b, "{\"id\":");
	buf_adds(b, api == API_CHAT ? "\"chatcmpl-mock-" : "\"cmpl-mock-");
	buf_add_u64(b, m->next_id++);
	buf_adds(b, api == API_CHAT ? "\",\"object\":\"chat.completion\",\"created\":"
				    : "\",\"object\":\"text_completion\",\"created\":");
	buf_add_u64(b, (uint64_t)time(NULL));
	buf_adds(b, ",\"model\":");
	buf_add_jstr(b, model, model_len);
	buf_adds(b, ",\"choices\":[");
	if (kind == BODY_CHOICES_NULL)
		buf_adds(b, "null");
	else if (kind == BODY_NO_MESSAGE)
		buf_adds(b, "{\"index\":0}");
	for (i = 0; i < n && kind != BODY_CHOICES_NULL && kind != BODY_CHOICES_EMPTY &&
		    kind != BODY_NO_MESSAGE; i++) {
		if (i > 0)
			buf_addc(b, ',');
		if (api == API_CHAT && tool != NULL) {
			buf_adds(b, "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
				 "null,\"tool_calls\":[{\"id\":\"call_mock_");
			buf_add_u64(b, m->next_id - 1);
			buf_adds(b, "\",\"type\":\"function\",\"function\":{\"name\":");
			buf_add_jstr(b, tool, tool_len);
			buf_adds(b, ",\"arguments\":");
			buf_add_jstr(b, m->ans.base + off[i], off[i + 1] - off[i]);
			buf_adds(b, "}}]},\"finish_reason\":");
			buf_adds(b, fin);
			buf_addc(b, '}');
		} else if (api == API_CHAT) {
			buf_adds(b, "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
			buf_add_jstr(b, m->ans.base + off[i], off[i + 1] - off[i]);
			buf_adds(b, "},\"finish_reason\":");
			buf_adds(b, fin);
			buf_addc(b, '}');
		} else {
			buf_adds(b, "{\"text\":");
			buf_add_jstr(b, m->ans.base + off[i], off[i + 1] - off[i]);
			buf_adds(b, ",\"index\":");
			buf_add_u64(b, i);
			buf_adds(b, ",\"logprobs\":null,\"finish_reason\":");
			buf_adds(b, fin);
			buf_addc(b, '}');
		}
	}
	buf_adds(b, "],");
	put_usage(b, pt, ct);
	buf_addc(b, '}');
}

static struct stream *stream_new(struct mock *m, enum api api, const char *model,
				 size_t model_len, uint64_t pt, uint64_t ct,
				 const char *tool, size_t tool_len)
{
	size_t n = m->offs.len / sizeof(size_t) - 1;
	size_t offs_size = (n + 1) * sizeof(size_t);
	struct stream *s;
	char *p;

	s = calloc(1, sizeof(*s) + offs_size + model_len + m->ans.len + tool_len);
	if (s == NULL)
		return NULL;
	s->off = (size_t *)(s + 1);
	memcpy(s->off, m->offs.base, offs_size);
	p = (char *)s->off + offs_size;
	memcpy(p, model, model_len);
	s->model = p;
	s->model_len = model_len;
	p += model_len;
	if (m->ans.len > 0)
		memcpy(p, m->ans.base, m->ans.len);
	s->text = p;
	if (tool != NULL) {
		p += m->ans.len;
		memcpy(p, tool, tool_len);
		s->tool = p;
		s->tool_len = tool_len;
	}
	s->api = api;
	s->n_answers = n;
	s->id = m->next_id++;
	s->created = (uint64_t)time(NULL);
	s->chunks = m->stream_chunks;
	s->cut = -1;
	s->retry_after = -1;
	s->prompt_tokens = pt;
	s->completion_tokens = ct;
	return s;
}

/* An API request as read from its JSON body (borrowed from it or m->prompt). */
struct call {
	enum api api;		/* which endpoint */
	const char *model;	/* "model", or "mock-model" */
	size_t model_len;	/* bytes of model */
	const json_t *texts;	/* prompt/input: string or array; NULL for chat */
	const char *prompt;	/* the text whose fault markers apply */
	size_t prompt_len;	/* bytes of prompt */
	uint64_t prompt_tokens;	/* usage */
	enum fmt fmt;		/* wire format (chat) */
	int stream;		/* Gemini: the URL asks for a stream */
	const char *tool;	/* [[tool=NAME]]: NAME, or NULL */
	size_t tool_len;	/* bytes of tool */
};

static size_t texts_count(const json_t *texts)
{
	return json_is_array(texts) ? json_array_size(texts) : 1;
}

static const json_t *texts_at(const json_t *texts, size_t i)
{
	return json_is_array(texts) ? json_array_get(texts, i) : texts;
}

/* Chat: the prompt is the last user message. NULL, or what is wrong. */
static const char *read_chat(struct mock *m, const json_t *root, struct call *a)
{
	const json_t *msgs = json_object_get(root, "messages"), *msg, *role;
	size_t i, last_user = SIZE_MAX;

	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return "'messages' must be a non-empty array.";
	json_array_foreach(msgs, i, msg) {
		if (!json_is_object(msg))
			return "Each message must be an object.";
		a->prompt_tokens += ceil4(content_len(json_object_get(msg, "content"))) + 3;
		role = json_object_get(msg, "role");
		if (json_is_string(role) && strcmp(json_string_value(role), "user") == 0)
			last_user = i;
	}
	buf_clear(&m->prompt);
	if (last_user != SIZE_MAX)
		content_text(json_object_get(json_array_get(msgs, last_user), "content"),
			     &m->prompt);
	a->prompt = m->prompt.base ? m->prompt.base : "";
	a->prompt_len = m->prompt.len;
	return NULL;
}

/* Completions' "prompt", embeddings' "input": a string or a non-empty array
 * of strings; the first one is the prompt. NULL, or what is wrong. */
static const char *read_texts(const json_t *root, struct call *a)
{
	const char *what = a->api == API_TEXT ?
		"'prompt' must be a string or a non-empty array of strings." :
		"'input' must be a string or a non-empty array of strings.";
	const json_t *v = json_object_get(root, a->api == API_TEXT ? "prompt" : "input");
	const json_t *t;
	size_t i;

	if (!json_is_string(v) && (!json_is_array(v) || json_array_size(v) == 0))
		return what;
	for (i = 0; i < texts_count(v); i++) {
		t = texts_at(v, i);
		if (!json_is_string(t))
			return what;
		a->prompt_tokens += ceil4(json_string_length(t));
	}
	a->texts = v;
	a->prompt = json_string_value(texts_at(v, 0));
	a->prompt_len = json_string_length(texts_at(v, 0));
	return NULL;
}

/* The embeddings list. NULL, or what is wrong with the request. */
static const char *embeddings_body(struct mock *m, const struct call *a,
				   const json_t *root, struct buf *b)
{
	const json_t *v = json_object_get(root, "dimensions");
	const char *fmt = json_string_value(json_object_get(root, "encoding_format"));
	uint64_t dim = m->embed_dim;
	size_t i, k, n = texts_count(a->texts);
	float *vec;

	if (v != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > MAX_EMBED_DIM)
			return "'dimensions' must be an integer in [1, 65536].";
		dim = (uint64_t)json_integer_value(v);
	}
	if (json_object_get(root, "encoding_format") != NULL &&
	    (fmt == NULL || (strcmp(fmt, "float") != 0 && strcmp(fmt, "base64") != 0)))
		return "'encoding_format' must be \"float\" or \"base64\".";
	if ((uint64_t)n * dim > MAX_HUGE / 16)
		return "Too many inputs for this many dimensions.";
	buf_clear(&m->tmp);
	if (buf_grow(&m->tmp, dim * sizeof(float)) != 0) {
		b->oom = 1;
		return NULL;
	}
	vec = (float *)m->tmp.base;
	buf_adds(b, "{\"object\":\"list\",\"data\":[");
	for (i = 0; i < n; i++) {
		v = texts_at(a->texts, i);
		embed_text(json_string_value(v), json_string_length(v), vec, (unsigned)dim);
		buf_adds(b, i ? ",{\"object\":\"embedding\",\"index\":"
			      : "{\"object\":\"embedding\",\"index\":");
		buf_add_u64(b, i);
		buf_adds(b, ",\"embedding\":");
		if (fmt != NULL && strcmp(fmt, "base64") == 0) {
			buf_add_base64_floats(b, vec, (unsigned)dim);
		} else {
			buf_addc(b, '[');
			for (k = 0; k < dim; k++) {
				if (k > 0)
					buf_addc(b, ',');
				buf_add_unit_float(b, vec[k]);
			}
			buf_addc(b, ']');
		}
		buf_addc(b, '}');
	}
	buf_adds(b, "],\"model\":");
	buf_add_jstr(b, a->model, a->model_len);
	buf_adds(b, ",\"usage\":{\"prompt_tokens\":");
	buf_add_u64(b, a->prompt_tokens);
	buf_adds(b, ",\"total_tokens\":");
	buf_add_u64(b, a->prompt_tokens);
	buf_adds(b, "}}");
	return NULL;
}

/* ---- Anthropic's and Gemini's formats -------------------------------------- */

static const char *anthropic_error_type(int status)
{
	switch (status) {
	case 400: return "invalid_request_error";
	case 401: return "authentication_error";
	case 403: return "permission_error";
	case 404: return "not_found_error";
	case 413: return "request_too_large";
	case 429: return "rate_limit_error";
	case 529: return "overloaded_error";
	default: return status < 500 ? "invalid_request_error" : "api_error";
	}
}

static const char *gemini_status(int status)
{
	switch (status) {
	case 400: return "INVALID_ARGUMENT";
	case 401: return "UNAUTHENTICATED";
	case 403: return "PERMISSION_DENIED";
	case 404: return "NOT_FOUND";
	case 429: return "RESOURCE_EXHAUSTED";
	case 503: return "UNAVAILABLE";
	case 504: return "DEADLINE_EXCEEDED";
	default: return status < 500 ? "FAILED_PRECONDITION" : "INTERNAL";
	}
}

/* An error body in the request's format. */
static void fmt_error(struct reply *r, enum fmt fmt, int status, const char *msg)
{
	struct buf *b = r->body;

	if (fmt == FMT_OPENAI) {
		error_reply(r, status, status == 401 ? "invalid_request_error" :
			    status == 429 ? "rate_limit_error" :
			    status < 500 ? "invalid_request_error" : "server_error",
			    "null", msg, strlen(msg));
		return;
	}
	r->status = status;
	r->ctype = "application/json";
	buf_clear(b);
	if (fmt == FMT_ANTHROPIC) {
		buf_adds(b, "{\"type\":\"error\",\"error\":{\"type\":\"");
		buf_adds(b, anthropic_error_type(status));
		buf_adds(b, "\",\"message\":");
		buf_add_jstr(b, msg, strlen(msg));
		buf_adds(b, "},\"request_id\":\"req_mock\"}");
	} else {
		buf_adds(b, "{\"error\":{\"code\":");
		buf_add_u64(b, (uint64_t)status);
		buf_adds(b, ",\"message\":");
		buf_add_jstr(b, msg, strlen(msg));
		buf_adds(b, ",\"status\":\"");
		buf_adds(b, gemini_status(status));
		buf_adds(b, "\"}}");
	}
}

static int key_is(const char *v, size_t n, const char *key)
{
	return v != NULL && n == strlen(key) && memcmp(v, key, n) == 0;
}

/* --require-key, as each provider takes the key. */
static int authorized_as(const struct conn *c, enum fmt fmt)
{
	const char *key = c->m->require_key, *v, *q;
	size_t n;

	if (key == NULL || fmt == FMT_OPENAI)
		return authorized(c);
	if (fmt == FMT_ANTHROPIC) {
		v = hdr_get(&c->hdrs, "x-api-key", &n);
		return key_is(v, n, key);
	}
	v = hdr_get(&c->hdrs, "x-goog-api-key", &n);
	if (v != NULL)
		return key_is(v, n, key);
	q = strchr(c->url.base, '?');
	while (q != NULL) {
		q++;
		if (strncmp(q, "key=", 4) == 0)
			return key_is(q + 4, strcspn(q + 4, "&#"), key);
		q = strchr(q, '&');
	}
	return 0;
}

/* The tool_use ids of an Anthropic message: does it have this one? */
static int has_tool_use(const json_t *msg, const char *id)
{
	const json_t *blk;
	size_t i;

	json_array_foreach(json_object_get(msg, "content"), i, blk) {
		if (json_is_string(json_object_get(blk, "id")) &&
		    strcmp(json_string_value(json_object_get(blk, "id")), id) == 0)
			return 1;
	}
	return 0;
}

static int has_text(const json_t *content)
{
	const json_t *part;
	size_t i;

	if (json_is_string(content))
		return 1;
	json_array_foreach(content, i, part)
		if (json_is_string(json_object_get(part, "text")))
			return 1;
	return 0;
}

static const char *anthropic_block_error(const json_t *blk, const char *role,
					 const json_t *prev)
{
	const char *type = json_string_value(json_object_get(blk, "type"));
	const json_t *src = json_object_get(blk, "source");
	const char *st = json_string_value(json_object_get(src, "type"));
	const json_t *v;

	if (type == NULL)
		return "messages: content block: Field required: type";
	if (strcmp(type, "text") == 0) {
		v = json_object_get(blk, "text");
		if (!json_is_string(v))
			return "messages: text block: Field required: text";
		if (json_string_length(v) == 0)
			return "messages: text content blocks must be non-empty";
	} else if (strcmp(type, "image") == 0 || strcmp(type, "document") == 0) {
		if (st == NULL)
			return "messages: image source: Field required: type";
		if (strcmp(st, "base64") == 0) {
			if (!json_is_string(json_object_get(src, "media_type")) ||
			    !json_is_string(json_object_get(src, "data")))
				return "messages: base64 source needs media_type and data";
		} else if (strcmp(st, "url") == 0) {
			if (!json_is_string(json_object_get(src, "url")))
				return "messages: url source needs url";
		} else {
			return "messages: unknown image source type";
		}
	} else if (strcmp(type, "tool_use") == 0) {
		if (strcmp(role, "assistant") != 0)
			return "messages: tool_use blocks are only allowed in assistant messages";
		if (!json_is_string(json_object_get(blk, "id")) ||
		    !json_is_string(json_object_get(blk, "name")) ||
		    !json_is_object(json_object_get(blk, "input")))
			return "messages: tool_use needs id, name and an input object";
	} else if (strcmp(type, "tool_result") == 0) {
		v = json_object_get(blk, "tool_use_id");
		if (strcmp(role, "user") != 0)
			return "messages: tool_result blocks are only allowed in user messages";
		if (!json_is_string(v))
			return "messages: tool_result: Field required: tool_use_id";
		if (prev == NULL || !has_tool_use(prev, json_string_value(v)))
			return "messages: unexpected `tool_use_id` found in `tool_result` blocks: "
			       "each tool_result must answer a tool_use of the previous message";
	} else if (strcmp(type, "thinking") != 0 && strcmp(type, "redacted_thinking") != 0) {
		return "messages: unknown content block type";
	}
	return NULL;
}

/* Anthropic's Messages request. NULL, or what is wrong. */
static const char *read_anthropic(struct mock *m, const json_t *root, struct call *a)
{
	const json_t *msgs = json_object_get(root, "messages"), *msg, *content, *blk;
	const json_t *sys = json_object_get(root, "system"), *prev = NULL, *v;
	const char *role, *prev_role = NULL, *err;
	size_t i, k, last_user = SIZE_MAX;

	v = json_object_get(root, "max_tokens");
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		return "max_tokens: Field required";
	if (sys != NULL && !json_is_string(sys) && !json_is_array(sys))
		return "system: Input should be a valid string or a list of text blocks";
	a->prompt_tokens += ceil4(content_len(sys));
	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return "messages: at least one message is required";
	json_array_foreach(msgs, i, msg) {
		role = json_string_value(json_object_get(msg, "role"));
		content = json_object_get(msg, "content");
		if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
			return "messages: role: Input should be 'user' or 'assistant'";
		if (prev_role != NULL && strcmp(prev_role, role) == 0)
			return "messages: roles must alternate between \"user\" and \"assistant\"";
		if (json_is_array(content)) {
			if (json_array_size(content) == 0)
				return "messages: all messages must have non-empty content";
			json_array_foreach(content, k, blk)
				if ((err = anthropic_block_error(blk, role, prev)) != NULL)
					return err;
		} else if (!json_is_string(content)) {
			return "messages: content: Input should be a valid string or list";
		}
		a->prompt_tokens += ceil4(content_len(content)) + 3;
		if (strcmp(role, "user") == 0 && has_text(content))
			last_user = i;
		prev_role = role;
		prev = msg;
	}
	v = json_object_get(root, "tools");
	json_array_foreach(v, i, blk)
		if (!json_is_string(json_object_get(blk, "name")) ||
		    !json_is_object(json_object_get(blk, "input_schema")))
			return "tools: each tool needs a name and an input_schema object";
	v = json_object_get(root, "tool_choice");
	if (v != NULL) {
		role = json_string_value(json_object_get(v, "type"));
		if (role == NULL || (strcmp(role, "auto") && strcmp(role, "any") &&
				     strcmp(role, "tool") && strcmp(role, "none")))
			return "tool_choice: type must be auto, any, tool or none";
		if (strcmp(role, "tool") == 0 && !json_is_string(json_object_get(v, "name")))
			return "tool_choice: Field required: name";
	}
	v = json_object_get(root, "stop_sequences");
	json_array_foreach(v, i, blk)
		if (!json_is_string(blk))
			return "stop_sequences: Input should be a list of strings";
	buf_clear(&m->prompt);
	if (last_user != SIZE_MAX)
		content_text(json_object_get(json_array_get(msgs, last_user), "content"),
			     &m->prompt);
	a->prompt = m->prompt.base ? m->prompt.base : "";
	a->prompt_len = m->prompt.len;
	return NULL;
}

/* Gemini refuses fields it does not know; so do we. */
static const char *unknown_field(const json_t *obj, const char *const *known)
{
	static char msg[200];
	const char *key;
	const json_t *v;
	size_t i;

	json_object_foreach((json_t *)obj, key, v) {
		for (i = 0; known[i] != NULL && strcmp(known[i], key) != 0; i++)
			;
		if (known[i] == NULL) {
			snprintf(msg, sizeof(msg), "Invalid JSON payload received. Unknown name "
				 "\"%.64s\": Cannot find field.", key);
			return msg;
		}
	}
	return NULL;
}

/* OpenAPI-subset schemas: keywords Gemini refuses in "parameters". */
static const char *schema_error(const json_t *v)
{
	const char *key, *err;
	const json_t *val;
	size_t i;

	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, val) {
			if (strcmp(key, "additionalProperties") == 0 || strcmp(key, "$schema") == 0)
				return "Invalid JSON payload received. Unknown name "
				       "\"additionalProperties\" or \"$schema\" in parameters";
			if ((err = schema_error(val)) != NULL)
				return err;
		}
	}
	json_array_foreach(v, i, val)
		if ((err = schema_error(val)) != NULL)
			return err;
	return NULL;
}

static const char *gemini_part_error(const json_t *part)
{
	static const char *const known[] = {
		"text", "inlineData", "inline_data", "fileData", "file_data", "functionCall",
		"function_call", "functionResponse", "function_response", "executableCode",
		"codeExecutionResult", "thought", "thoughtSignature", "thought_signature",
		"videoMetadata", NULL
	};
	const json_t *v;
	const char *err;
	int data = 0;

	if (!json_is_object(part))
		return "contents.parts: each part must be an object";
	if ((err = unknown_field(part, known)) != NULL)
		return err;
	if ((v = json_object_get(part, "text")) != NULL) {
		data++;
		if (!json_is_string(v))
			return "contents.parts.text: must be a string";
	}
	if ((v = json_object_get(part, "inlineData")) != NULL ||
	    (v = json_object_get(part, "inline_data")) != NULL) {
		data++;
		if ((!json_is_string(json_object_get(v, "mimeType")) &&
		     !json_is_string(json_object_get(v, "mime_type"))) ||
		    !json_is_string(json_object_get(v, "data")))
			return "contents.parts.inline_data: needs mime_type and data";
	}
	if ((v = json_object_get(part, "fileData")) != NULL ||
	    (v = json_object_get(part, "file_data")) != NULL) {
		data++;
		if (!json_is_string(json_object_get(v, "fileUri")) &&
		    !json_is_string(json_object_get(v, "file_uri")))
			return "contents.parts.file_data: needs file_uri";
	}
	if ((v = json_object_get(part, "functionCall")) != NULL ||
	    (v = json_object_get(part, "function_call")) != NULL) {
		data++;
		if (!json_is_string(json_object_get(v, "name")) ||
		    (json_object_get(v, "args") != NULL && !json_is_object(json_object_get(v, "args"))))
			return "contents.parts.function_call: needs a name and an args object";
	}
	if ((v = json_object_get(part, "functionResponse")) != NULL ||
	    (v = json_object_get(part, "function_response")) != NULL) {
		data++;
		if (!json_is_string(json_object_get(v, "name")) ||
		    !json_is_object(json_object_get(v, "response")))
			return "contents.parts.function_response: needs a name and a response object";
	}
	if (json_object_get(part, "executableCode") || json_object_get(part, "codeExecutionResult"))
		data++;
	if (data != 1)
		return "contents.parts: a part must have exactly one of text, inline_data, "
		       "file_data, function_call, function_response";
	return NULL;
}

/* Gemini's GenerateContentRequest. NULL, or what is wrong. */
static const char *read_gemini(struct mock *m, const json_t *root, struct call *a)
{
	static const char *const fields[] = {
		"contents", "systemInstruction", "system_instruction", "tools", "toolConfig",
		"tool_config", "generationConfig", "generation_config", "safetySettings",
		"safety_settings", "cachedContent", "cached_content", NULL
	};
	static const char *const gen_fields[] = {
		"temperature", "topP", "top_p", "topK", "top_k", "maxOutputTokens",
		"max_output_tokens", "stopSequences", "stop_sequences", "candidateCount",
		"candidate_count", "responseMimeType", "response_mime_type", "responseSchema",
		"response_schema", "responseJsonSchema", "response_json_schema", "presencePenalty",
		"presence_penalty", "frequencyPenalty", "frequency_penalty", "seed",
		"responseLogprobs", "response_logprobs", "logprobs", "thinkingConfig",
		"thinking_config", "responseModalities", "response_modalities", NULL
	};
	const json_t *contents = json_object_get(root, "contents"), *c, *parts, *part, *v, *t;
	const char *role, *err;
	size_t i, k, last_user = SIZE_MAX;

	if ((err = unknown_field(root, fields)) != NULL)
		return err;
	v = json_object_get(root, "generationConfig");
	if (v == NULL)
		v = json_object_get(root, "generation_config");
	if (v != NULL && (!json_is_object(v) || (err = unknown_field(v, gen_fields)) != NULL))
		return err ? err : "generation_config: must be an object";
	if (!json_is_array(contents) || json_array_size(contents) == 0)
		return "* GenerateContentRequest.contents: contents is not specified";
	json_array_foreach(contents, i, c) {
		role = json_string_value(json_object_get(c, "role"));
		parts = json_object_get(c, "parts");
		if (json_object_get(c, "role") != NULL &&
		    (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "model") != 0)))
			return "Please use a valid role: user, model.";
		if (!json_is_array(parts) || json_array_size(parts) == 0)
			return "* GenerateContentRequest.contents.parts: contents.parts must not be empty.";
		json_array_foreach(parts, k, part)
			if ((err = gemini_part_error(part)) != NULL)
				return err;
		a->prompt_tokens += ceil4(content_len(parts)) + 3;
		if ((role == NULL || strcmp(role, "user") == 0) && has_text(parts))
			last_user = i;
	}
	v = json_object_get(root, "systemInstruction");
	if (v == NULL)
		v = json_object_get(root, "system_instruction");
	if (v != NULL && !json_is_array(json_object_get(v, "parts")))
		return "system_instruction: parts must be a list";
	a->prompt_tokens += ceil4(content_len(json_object_get(v, "parts")));
	json_array_foreach(json_object_get(root, "tools"), i, t) {
		v = json_object_get(t, "functionDeclarations");
		if (v == NULL)
			v = json_object_get(t, "function_declarations");
		json_array_foreach(v, k, part) {
			if (!json_is_string(json_object_get(part, "name")))
				return "tools.function_declarations: name is required";
			if ((err = schema_error(json_object_get(part, "parameters"))) != NULL)
				return err;
		}
	}
	buf_clear(&m->prompt);
	if (last_user != SIZE_MAX)
		content_text(json_object_get(json_array_get(contents, last_user), "parts"),
			     &m->prompt);
	a->prompt = m->prompt.base ? m->prompt.base : "";
	a->prompt_len = m->prompt.len;
	return NULL;
}

static void anthropic_body(struct mock *m, const struct call *a, struct buf *b, uint64_t ct)
{
	const size_t *off = (const size_t *)m->offs.base;
	uint64_t id = m->next_id++;

	buf_adds(b, "{\"id\":\"msg_mock_");
	buf_add_u64(b, id);
	buf_adds(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
	buf_add_jstr(b, a->model, a->model_len);
	if (a->tool != NULL) {
		buf_adds(b, ",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_mock_");
		buf_add_u64(b, id);
		buf_adds(b, "\",\"name\":");
		buf_add_jstr(b, a->tool, a->tool_len);
		buf_adds(b, ",\"input\":");
		buf_add(b, m->ans.base, off[1]);	/* a JSON object */
		buf_adds(b, "}],\"stop_reason\":\"tool_use\"");
	} else {
		buf_adds(b, ",\"content\":[{\"type\":\"text\",\"text\":");
		buf_add_jstr(b, m->ans.base, off[1]);
		buf_adds(b, "}],\"stop_reason\":\"end_turn\"");
	}
	buf_adds(b, ",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
	buf_add_u64(b, a->prompt_tokens);
	buf_adds(b, ",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
		 "\"output_tokens\":");
	buf_add_u64(b, ct);
	buf_adds(b, "}}");
}

static void gemini_usage(struct buf *b, uint64_t pt, uint64_t ct, int final)
{
	buf_adds(b, "\"usageMetadata\":{\"promptTokenCount\":");
	buf_add_u64(b, pt);
	if (final) {
		buf_adds(b, ",\"candidatesTokenCount\":");
		buf_add_u64(b, ct);
	}
	buf_adds(b, ",\"totalTokenCount\":");
	buf_add_u64(b, final ? pt + ct : pt);
	buf_addc(b, '}');
}

/* One GenerateContentResponse: a text piece or the tool call; final ones
 * carry the finishReason. */
static void gemini_response(struct buf *b, const char *tool, size_t tool_len,
			    const char *text, size_t len, int final, uint64_t pt,
			    uint64_t ct, const char *model, size_t model_len, uint64_t id)
{
	buf_adds(b, "{\"candidates\":[{\"content\":{\"parts\":[");
	if (tool != NULL) {
		buf_adds(b, "{\"functionCall\":{\"name\":");
		buf_add_jstr(b, tool, tool_len);
		buf_adds(b, ",\"args\":");
		buf_add(b, text, len);
		buf_adds(b, "}}");
	} else {
		buf_adds(b, "{\"text\":");
		buf_add_jstr(b, text, len);
		buf_addc(b, '}');
	}
	buf_adds(b, "],\"role\":\"model\"}");
	if (final)
		buf_adds(b, ",\"finishReason\":\"STOP\"");
	buf_adds(b, ",\"index\":0}],");
	gemini_usage(b, pt, ct, final);
	buf_adds(b, ",\"modelVersion\":");
	buf_add_jstr(b, model, model_len);
	buf_adds(b, ",\"responseId\":\"mock-");
	buf_add_u64(b, id);
	buf_adds(b, "\"}");
}

static void gemini_body(struct mock *m, const struct call *a, struct buf *b, uint64_t ct)
{
	const size_t *off = (const size_t *)m->offs.base;

	gemini_response(b, a->tool, a->tool_len, m->ans.base, off[1], 1, a->prompt_tokens, ct,
			a->model, a->model_len, m->next_id++);
}

/* A chat or text completion: complete in r->body, or as r->stream. */
static void completion_reply(struct conn *c, struct reply *r, const struct call *a,
			     const json_t *root, const struct faults *f)
{
	struct mock *m = c->m;
	const json_t *t;
	const size_t *off;
	uint64_t ct = 0;
	size_t i;

	answers_begin(m);
	if (a->tool != NULL) {
		/* The answer is the call's arguments: {"q":"<prompt>"}. */
		buf_adds(&m->ans, "{\"q\":");
		buf_add_jstr(&m->ans, a->prompt, a->prompt_len);
		buf_addc(&m->ans, '}');
		buf_add(&m->offs, &m->ans.len, sizeof(m->ans.len));
	} else if (a->texts == NULL) {
		answers_add(m, a->prompt, a->prompt_len, f->huge, f->done_in_content);
	} else {
		for (i = 0; i < texts_count(a->texts); i++) {
			t = texts_at(a->texts, i);
			answers_add(m, json_string_value(t), json_string_length(t), f->huge,
				    f->done_in_content);
		}
	}
	if (m->ans.oom || m->offs.oom) {
		r->body->oom = 1;
		return;
	}
	off = (const size_t *)m->offs.base;
	for (i = 0; i + 1 < m->offs.len / sizeof(size_t); i++)
		ct += ceil4(off[i + 1] - off[i]);
	if (a->fmt == FMT_GEMINI ? !a->stream
				 : !json_is_true(json_object_get(root, "stream"))) {
		if (a->fmt == FMT_ANTHROPIC)
			anthropic_body(m, a, r->body, ct);
		else if (a->fmt == FMT_GEMINI)
			gemini_body(m, a, r->body, ct);
		else
			completion_body(m, a->api, r->body, a->model, a->model_len,
					a->prompt_tokens, ct, a->tool, a->tool_len, f->body,
					f->no_finish);
		return;
	}
	r->stream = stream_new(m, a->api, a->model, a->model_len, a->prompt_tokens, ct,
			       a->tool, a->tool_len);
	if (r->stream == NULL) {
		r->body->oom = 1;
		return;
	}
	r->stream->fmt = a->fmt;
	r->stream->include_usage = json_is_true(json_object_get(
		json_object_get(root, "stream_options"), "include_usage"));
	r->stream->retry_after = r->retry_after;
	r->stream->clean_end = f->clean_end;
	if (a->fmt == FMT_OPENAI) {
		r->stream->no_finish = f->no_finish;
		r->stream->no_done = f->no_done;
		r->stream->sse = f->sse;
		if (f->done_in_content && a->tool == NULL)
			r->stream->pre = sizeof(DONE_TEXT) - 1;
	}
	/* HTTP/1.0 has no chunked encoding: the stream ends with the connection. */
	r->stream->chunked = llhttp_get_http_major(&c->parser) == 1 &&
			     llhttp_get_http_minor(&c->parser) >= 1 &&
			     r->stream->no_done != 2;
	if (!r->stream->chunked)
		r->flags |= RF_CLOSE;
	m->st.streams_started++;
}

/* POST /v1/chat/completions, /v1/completions, /v1/embeddings; chat in
 * another format (fmt): /v1/messages, or Gemini's, whose model and stream
 * come from the URL (url_model, NULL otherwise). */
static void api_request(struct conn *c, struct reply *r, enum api api, enum fmt fmt,
			const char *url_model, size_t url_model_len, int stream)
{
	struct mock *m = c->m;
	struct call a = { api, "mock-model", 10, NULL, "", 0, 0, fmt, stream, NULL, 0 };
	const char *err;
	json_error_t jerr;
	struct faults f;
	json_t *root, *model;
	char msg[320];
	size_t n;

	if (fmt == FMT_ANTHROPIC)
		m->st.messages++;
	else if (fmt == FMT_GEMINI)
		m->st.gemini++;
	else if (api == API_CHAT)
		m->st.chat++;
	else if (api == API_TEXT)
		m->st.completions++;
	else
		m->st.embeddings++;
	root = json_loadb(c->body.base ? c->body.base : "", c->body.len, 0, &jerr);
	model = json_object_get(root, "model");
	if (url_model != NULL) {
		a.model = url_model;
		a.model_len = url_model_len;
	} else if (json_is_string(model)) {
		a.model = json_string_value(model);
		a.model_len = json_string_length(model);
	}
	if (url_model != NULL || json_is_string(model)) {
		buf_clear(&m->last_model);
		buf_add(&m->last_model, a.model, a.model_len);
		m->has_last_model = 1;
	}
	if (fmt == FMT_ANTHROPIC && !authorized_as(c, fmt)) {
		fmt_error(r, fmt, 401, "invalid x-api-key");
		goto out;
	} else if (fmt == FMT_GEMINI && !authorized_as(c, fmt)) {
		fmt_error(r, fmt, 400, "API key not valid. Please pass a valid API key.");
		goto out;
	} else if (!authorized(c) && fmt == FMT_OPENAI) {
		error_reply(r, 401, "invalid_request_error", "\"invalid_api_key\"",
			    "Incorrect API key provided.", 27);
		goto out;
	}
	if (fmt == FMT_ANTHROPIC && hdr_get(&c->hdrs, "anthropic-version", &n) == NULL) {
		fmt_error(r, fmt, 400, "anthropic-version: header is required");
		goto out;
	}
	if (root == NULL) {
		snprintf(msg, sizeof(msg), "We could not parse the JSON body of your "
			 "request: %s (line %d, column %d)", jerr.text, jerr.line,
			 jerr.column);
		fmt_error(r, fmt, 400, msg);
		goto out;
	}
	if (!json_is_object(root))
		err = "The request body must be a JSON object.";
	else if (fmt == FMT_ANTHROPIC)
		err = read_anthropic(m, root, &a);
	else if (fmt == FMT_GEMINI)
		err = read_gemini(m, root, &a);
	else
		err = api == API_CHAT ? read_chat(m, root, &a) : read_texts(root, &a);
	if (err != NULL) {
		fmt_error(r, fmt, 400, err);
		goto out;
	}

	parse_faults(a.prompt, a.prompt_len, &f);
	if (!m->quiet && (f.status || f.reset || f.delay_ms || f.cut >= 0 ||
			  f.garbage || f.huge >= 0 || f.retry_after >= 0))
		fprintf(stderr, "mock-upstream: fault: status=%d reset=%d delay=%" PRIu64
			" cut=%" PRId64 " garbage=%d huge=%" PRId64 "\n", f.status,
			f.reset, f.delay_ms, f.cut, f.garbage, f.huge);
	if (!m->quiet && (f.clean_end || f.done_in_content || f.no_finish || f.no_done ||
			  f.sse || f.body || f.ok_status))
		fprintf(stderr, "mock-upstream: fault: clean-end=%d done-in-content=%d "
			"no-finish=%d no-done=%d sse=%#x body=%s ok-status=%d\n", f.clean_end,
			f.done_in_content, f.no_finish, f.no_done, f.sse, body_kinds[f.body],
			f.ok_status);
	r->delay_ms += f.delay_ms;
	r->retry_after = f.retry_after;
	if (f.reset) {
		r->flags |= RF_RESET | RF_CLOSE;
	} else if (f.status && f.status_text) {
		r->status = f.status;
		r->ctype = "text/plain";
		buf_adds(r->body, "mock plain failure");
	} else if ((f.status || m->fail_status) && fmt != FMT_OPENAI) {
		snprintf(msg, sizeof(msg), "mock injected %d", f.status ? f.status : m->fail_status);
		fmt_error(r, fmt, f.status ? f.status : m->fail_status, msg);
	} else if (f.status || m->fail_status) {
		injected_error(r, f.status ? f.status : m->fail_status);
	} else if (f.garbage) {
		buf_adds(r->body, "this is not json {");
	} else if (api == API_EMBED) {
		err = embeddings_body(m, &a, root, r->body);
		if (err != NULL)
			bad_request(r, err);
	} else {
		if (api == API_CHAT && f.tool != NULL) {
			a.tool = f.tool;
			a.tool_len = f.tool_len;
		}
		completion_reply(c, r, &a, root, &f);
	}
	if (f.ok_status && r->status == 200 && r->stream != NULL)
		r->stream->status = f.ok_status;
	else if (f.ok_status && r->status == 200 && !f.garbage && !f.status)
		r->status = f.ok_status;
	if (f.cut >= 0 && r->stream != NULL)
		r->stream->cut = f.cut;
	else if (f.cut >= 0)
		r->flags |= RF_CUT | RF_CLOSE;
out:
	json_decref(root);
}

static void stats_reply(struct mock *m, struct buf *b)
{
	const char *p, *q, *end = m->last_hdrs.base;
	const char *val, *qval;
	int first = 1;

	buf_addf(b, "{\"requests\":%" PRIu64 ",\"chat\":%" PRIu64 ",\"completions\":%"
		 PRIu64 ",\"embeddings\":%" PRIu64, m->st.requests, m->st.chat,
		 m->st.completions, m->st.embeddings);
	buf_addf(b, ",\"messages\":%" PRIu64 ",\"gemini\":%" PRIu64, m->st.messages,
		 m->st.gemini);
	buf_addf(b, ",\"streams_started\":%" PRIu64 ",\"streams_completed\":%" PRIu64
		 ",\"streams_aborted\":%" PRIu64 ",\"streams_cut\":%" PRIu64,
		 m->st.streams_started, m->st.streams_completed,
		 m->st.streams_aborted, m->st.streams_cut);
	buf_adds(b, ",\"last_authorization\":");
	if (m->has_last_auth)
		buf_add_jstr(b, m->last_auth.base, m->last_auth.len);
	else
		buf_adds(b, "null");
	buf_adds(b, ",\"last_model\":");
	if (m->has_last_model)
		buf_add_jstr(b, m->last_model.base, m->last_model.len);
	else
		buf_adds(b, "null");
	/* Repeated headers are merged with ", ", where the first one appears. */
	buf_adds(b, ",\"last_headers\":{");
	if (end != NULL)
		end += m->last_hdrs.len;
	for (p = m->last_hdrs.base; p != NULL && p < end; p = val + strlen(val) + 1) {
		val = p + strlen(p) + 1;
		for (q = m->last_hdrs.base; q < p; q = qval + strlen(qval) + 1) {
			qval = q + strlen(q) + 1;
			if (strcmp(q, p) == 0)
				break;
		}
		if (q < p)
			continue;
		if (!first)
			buf_addc(b, ',');
		first = 0;
		buf_add_jstr(b, p, strlen(p));
		buf_adds(b, ":\"");
		buf_add_jraw(b, val, strlen(val));
		for (q = val + strlen(val) + 1; q < end; q = qval + strlen(qval) + 1) {
			qval = q + strlen(q) + 1;
			if (strcmp(q, p) == 0) {
				buf_adds(b, ", ");
				buf_add_jraw(b, qval, strlen(qval));
			}
		}
		buf_addc(b, '"');
	}
	buf_adds(b, "}}");
}

/* Decide the reply to the request just parsed. */
static void route(struct conn *c, struct reply *r)
{
	struct mock *m = c->m;
	const char *path = c->url.base, *auth;
	size_t plen = strcspn(path, "?#"), auth_len;
	int method = llhttp_get_method(&c->parser);
	int get = method == HTTP_GET || method == HTTP_HEAD, post = method == HTTP_POST;
	const char *colon;
	char msg[160];

	if (method == HTTP_HEAD)
		r->flags |= RF_HEAD;
#define IS(s) (plen == sizeof(s) - 1 && memcmp(path, s, plen) == 0)
	if (IS("/mock/stats") && get) {
		stats_reply(m, r->body);
		return;
	}
	if (IS("/mock/reset") && post) {
		memset(&m->st, 0, sizeof(m->st));
		m->has_last_auth = m->has_last_model = 0;
		buf_clear(&m->last_hdrs);
		buf_adds(r->body, "{\"ok\":true}");
		return;
	}

	if (strncmp(path, "/mock/", 6) != 0) {
		/* What the tests ask about: what semgate sent us. */
		m->st.requests++;
		auth = hdr_get(&c->hdrs, "authorization", &auth_len);
		m->has_last_auth = auth != NULL;
		buf_clear(&m->last_auth);
		if (auth != NULL)
			buf_add(&m->last_auth, auth, auth_len);
		if (post) {
			m->has_last_model = 0;	/* api_request() sets it */
			buf_clear(&m->last_hdrs);
			buf_add(&m->last_hdrs, c->hdrs.base, c->hdrs.len);
		}
	}
	if (strncmp(path, "/v1/", 4) == 0 || strncmp(path, "/v1beta/", 8) == 0)
		r->delay_ms = m->latency_ms;
	if (IS("/v1/chat/completions") && post) {
		api_request(c, r, API_CHAT, FMT_OPENAI, NULL, 0, 0);
	} else if (IS("/v1/completions") && post) {
		api_request(c, r, API_TEXT, FMT_OPENAI, NULL, 0, 0);
	} else if (IS("/v1/embeddings") && post) {
		api_request(c, r, API_EMBED, FMT_OPENAI, NULL, 0, 0);
	} else if (IS("/v1/messages") && post) {
		api_request(c, r, API_CHAT, FMT_ANTHROPIC, NULL, 0, 0);
	} else if (plen > 15 && memcmp(path, "/v1beta/models/", 15) == 0 && post &&
		   (colon = memchr(path + 15, ':', plen - 15)) != NULL &&
		   colon > path + 15 &&
		   ((size_t)(path + plen - colon) == 16 &&
		    memcmp(colon, ":generateContent", 16) == 0)) {
		api_request(c, r, API_CHAT, FMT_GEMINI, path + 15, (size_t)(colon - path - 15), 0);
	} else if (plen > 15 && memcmp(path, "/v1beta/models/", 15) == 0 && post &&
		   (colon = memchr(path + 15, ':', plen - 15)) != NULL &&
		   colon > path + 15 &&
		   (size_t)(path + plen - colon) == 22 &&
		   memcmp(colon, ":streamGenerateContent", 22) == 0) {
		/* Without alt=sse Gemini streams one JSON array: not mocked. */
		if (strstr(path + plen, "alt=sse") == NULL)
			fmt_error(r, FMT_GEMINI, 400, "mock: only alt=sse streams are supported");
		else
			api_request(c, r, API_CHAT, FMT_GEMINI, path + 15,
				    (size_t)(colon - path - 15), 1);
	} else if (strncmp(path, "/v1/", 4) == 0 && !authorized(c)) {
		error_reply(r, 401, "invalid_request_error", "\"invalid_api_key\"",
			    "Incorrect API key provided.", 27);
	} else if (IS("/v1/models") && get) {
		buf_adds(r->body, "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\","
			 "\"object\":\"model\",\"created\":0,\"owned_by\":\"mock\"}]}");
	} else {
		snprintf(msg, sizeof(msg), "Invalid URL (%s %.*s)",
			 llhttp_method_name((llhttp_method_t)method),
			 plen > 100 ? 100 : (int)plen, path);
		error_reply(r, 404, "invalid_request_error", "\"not_found\"", msg,
			    strlen(msg));
	}
#undef IS
}

/* ---- connections ---------------------------------------------------------- */

static void conn_set_state(struct conn *c, enum conn_state s)
{
	if (c->state == CONN_CLOSING)
		return;		/* final */
	c->state = s;
}

static void req_free(struct req *q)
{
	buf_free(&q->resp);
	free(q->stream);
	free(q);
}

static void on_close(uv_handle_t *h)
{
	struct conn *c = h->data;

	if (--c->handles_open > 0)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->m->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	buf_free(&c->url);
	buf_free(&c->hdrs);
	buf_free(&c->body);
	buf_free(&c->out);
	free(c);
}

/* Close now (reset: with an RST); unfinished streams count as aborted. */
static void conn_close(struct conn *c, int reset)
{
	struct req *q;

	if (c->state == CONN_CLOSING)
		return;
	conn_set_state(c, CONN_CLOSING);
	while ((q = c->head) != NULL) {
		c->head = q->next;
		if (q->stream != NULL)
			c->m->st.streams_aborted++;
		req_free(q);
	}
	c->tail = NULL;
	c->queued = 0;
	uv_close((uv_handle_t *)&c->timer, on_close);
	if (!reset || uv_tcp_close_reset(&c->tcp, on_close) != 0)
		uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_backpressure(struct conn *c)
{
	int full = c->queued >= MAX_QUEUE || c->tcp.write_queue_size >= HIGH_WATER;

	if (c->state == CONN_CLOSING || (c->flags & CF_PEER_EOF))
		return;
	if (full && c->state != CONN_DRAINING && !(c->flags & CF_READ_PAUSED)) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->flags |= CF_READ_PAUSED;
	} else if ((!full || c->state == CONN_DRAINING) && (c->flags & CF_READ_PAUSED)) {
		c->flags &= ~CF_READ_PAUSED;
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
			conn_close(c, 0);
	}
}

static void on_write(uv_write_t *req, int status)
{
	struct wreq *w = container_of(req, struct wreq, req);
	struct conn *c = req->data;

	free(w->mem);
	free(w);
	if (status < 0)
		conn_close(c, 0);
	else
		conn_backpressure(c);
}

static void on_timer(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *c = req->data;

	if (c->state == CONN_CLOSING)
		return;
	if (status < 0 || (c->flags & CF_PEER_EOF)) {
		conn_close(c, 0);
		return;
	}
	/* Linger: read and drop what the client still sends, so that closing
	 * with unread input does not reset away the reply we just sent. */
	uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
	conn_backpressure(c);
}

/* Hand c->out to the socket: uv_try_write first, uv_write for the rest. */
static void conn_flush(struct conn *c)
{
	struct wreq *w;
	uv_buf_t b;
	int n = 0;

	if (c->state == CONN_CLOSING)
		return;
	if (c->out.oom) {
		conn_close(c, 0);
		return;
	}
	if (c->out.len > 0) {
		b = uv_buf_init(c->out.base, (unsigned)c->out.len);
		n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (n == UV_EAGAIN || n == UV_ENOSYS)
			n = 0;
		if (n < 0) {
			conn_close(c, 0);
			return;
		}
		if ((size_t)n == c->out.len) {
			buf_trim(&c->out);
		} else {
			w = malloc(sizeof(*w));
			if (w == NULL) {
				conn_close(c, 0);
				return;
			}
			w->mem = c->out.base;
			w->req.data = c;
			b = uv_buf_init(c->out.base + n, (unsigned)(c->out.len - (size_t)n));
			memset(&c->out, 0, sizeof(c->out));	/* w owns the memory */
			if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
				free(w->mem);
				free(w);
				conn_close(c, 0);
				return;
			}
		}
	}
	if (c->state == CONN_DRAINING && !(c->flags & CF_SHUTDOWN)) {
		c->flags |= CF_SHUTDOWN;
		c->shutdown.data = c;
		if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
			conn_close(c, 0);
	}
}

/* One SSE event of a stream, "data: ...\n\n", into b. */
enum ev_kind { EV_DATA, EV_DONE, EV_END };

static void chunk_prefix(struct buf *b, const struct stream *s)
{
	int chat = s->api == API_CHAT;

	buf_adds(b, chat ? "data: {\"id\":\"chatcmpl-mock-" : "data: {\"id\":\"cmpl-mock-");
	buf_add_u64(b, s->id);
	buf_adds(b, chat ? "\",\"object\":\"chat.completion.chunk\",\"created\":"
			 : "\",\"object\":\"text_completion\",\"created\":");
	buf_add_u64(b, s->created);
	buf_adds(b, ",\"model\":");
	buf_add_jstr(b, s->model, s->model_len);
	buf_adds(b, ",\"choices\":");
}

static size_t utf8_boundary(const char *s, size_t len, size_t pos)
{
	while (pos < len && ((unsigned char)s[pos] & 0xc0) == 0x80)
		pos++;
	return pos;
}

static enum ev_kind stream_event(const struct stream *s, uint64_t idx, struct buf *b)
{
	uint64_t per = s->chunks + (s->pre > 0);	/* pieces of an answer */
	uint64_t role = s->api == API_CHAT, pieces = s->n_answers * per, a, k;
	uint64_t fin = s->no_finish ? 0 : s->n_answers;
	const char *text;
	size_t len, from, to;

	if (idx >= role + pieces + fin + (s->include_usage ? 1 : 0))
		idx -= role + pieces + fin + (s->include_usage ? 1 : 0);
	else
		goto data;
	if (idx == 0 && !s->no_done) {
		buf_adds(b, "data: [DONE]\n\n");
		return EV_DONE;
	}
	return EV_END;
data:
	chunk_prefix(b, s);
	if (idx < role) {
		buf_adds(b, "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
			 "\"finish_reason\":null}]");
	} else if ((idx -= role) < pieces) {
		a = idx / per;
		k = idx % per;
		text = s->text + s->off[a];
		len = s->off[a + 1] - s->off[a];
		if (s->pre > 0 && k == 0) {
			from = 0;	/* [[done-in-content]]: a piece of its own */
			to = s->pre;
		} else {
			if (s->pre > 0) {
				k--;
				text += s->pre;	/* every answer starts with it */
				len -= s->pre;
			}
			from = utf8_boundary(text, len, (size_t)(len * k / s->chunks));
			to = utf8_boundary(text, len, (size_t)(len * (k + 1) / s->chunks));
		}
		if (s->api == API_CHAT && s->tool != NULL) {
			buf_adds(b, "[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,");
			if (k == 0) {
				buf_adds(b, "\"id\":\"call_mock_");
				buf_add_u64(b, s->id);
				buf_adds(b, "\",\"type\":\"function\",\"function\":{\"name\":");
				buf_add_jstr(b, s->tool, s->tool_len);
				buf_adds(b, ",\"arguments\":");
			} else {
				buf_adds(b, "\"function\":{\"arguments\":");
			}
			buf_add_jstr(b, text + from, to - from);
			buf_adds(b, "}}]},\"finish_reason\":null}]");
		} else if (s->api == API_CHAT) {
			buf_adds(b, "[{\"index\":0,\"delta\":{\"content\":");
			buf_add_jstr(b, text + from, to - from);
			buf_adds(b, "},\"finish_reason\":null}]");
		} else {
			buf_adds(b, "[{\"text\":");
			buf_add_jstr(b, text + from, to - from);
			buf_adds(b, ",\"index\":");
			buf_add_u64(b, a);
			buf_adds(b, ",\"logprobs\":null,\"finish_reason\":null}]");
		}
	} else if ((idx -= pieces) < fin) {
		if (s->api == API_CHAT) {
			buf_adds(b, s->tool ? "[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]"
					    : "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]");
		} else {
			buf_adds(b, "[{\"text\":\"\",\"index\":");
			buf_add_u64(b, idx);
			buf_adds(b, ",\"logprobs\":null,\"finish_reason\":\"stop\"}]");
		}
	} else {
		buf_adds(b, "[],");
		put_usage(b, s->prompt_tokens, s->completion_tokens);
		buf_adds(b, "}\n\n");
		return EV_DATA;
	}
	buf_adds(b, s->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
	return EV_DATA;
}

/* Bytes [from, to) of answer a's piece k, on UTF-8 boundaries. */
static void piece_range(const struct stream *s, uint64_t a, uint64_t k, size_t *from,
			size_t *to)
{
	const char *text = s->text + s->off[a];
	size_t len = s->off[a + 1] - s->off[a];

	*from = utf8_boundary(text, len, (size_t)(len * k / s->chunks));
	*to = utf8_boundary(text, len, (size_t)(len * (k + 1) / s->chunks));
}

/* Anthropic: message_start, content_block_start, ping, the pieces as
 * content_block_delta, content_block_stop, message_delta, message_stop (the
 * last, never sent by a cut stream). */
static enum ev_kind anthropic_event(const struct stream *s, uint64_t idx, struct buf *b)
{
	size_t from, to;

	if (idx == 0) {
		buf_adds(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
			 "{\"id\":\"msg_mock_");
		buf_add_u64(b, s->id);
		buf_adds(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
		buf_add_jstr(b, s->model, s->model_len);
		buf_adds(b, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
			 "\"usage\":{\"input_tokens\":");
		buf_add_u64(b, s->prompt_tokens);
		buf_adds(b, ",\"output_tokens\":1}}}\n\n");
	} else if (idx == 1 && s->tool != NULL) {
		buf_adds(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
			 "\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_mock_");
		buf_add_u64(b, s->id);
		buf_adds(b, "\",\"name\":");
		buf_add_jstr(b, s->tool, s->tool_len);
		buf_adds(b, ",\"input\":{}}}\n\n");
	} else if (idx == 1) {
		buf_adds(b, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
			 "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
	} else if (idx == 2) {
		buf_adds(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
	} else if ((idx -= 3) < s->chunks) {
		piece_range(s, 0, idx, &from, &to);
		buf_adds(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
			 "\"index\":0,\"delta\":");
		buf_adds(b, s->tool ? "{\"type\":\"input_json_delta\",\"partial_json\":"
				    : "{\"type\":\"text_delta\",\"text\":");
		buf_add_jstr(b, s->text + from, to - from);
		buf_adds(b, "}}\n\n");
	} else if ((idx -= s->chunks) == 0) {
		buf_adds(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
			 "\"index\":0}\n\n");
	} else if (idx == 1) {
		buf_adds(b, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
			 "{\"stop_reason\":\"");
		buf_adds(b, s->tool ? "tool_use" : "end_turn");
		buf_adds(b, "\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
		buf_add_u64(b, s->completion_tokens);
		buf_adds(b, "}}\n\n");
	} else if (idx == 2) {
		buf_adds(b, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
		return EV_DONE;
	} else {
		return EV_END;
	}
	return EV_DATA;
}

/* Gemini (alt=sse): one GenerateContentResponse per piece, the last with the
 * finishReason (never sent by a cut stream); a tool call comes whole. */
static enum ev_kind gemini_event(const struct stream *s, uint64_t idx, struct buf *b)
{
	uint64_t n = s->tool ? 1 : s->chunks;
	size_t from = 0, to = s->off[1];

	if (idx >= n)
		return EV_END;
	if (s->tool == NULL)
		piece_range(s, 0, idx, &from, &to);
	buf_adds(b, "data: ");
	gemini_response(b, s->tool, s->tool_len, s->text + from, to - from, idx + 1 == n,
			s->prompt_tokens, s->completion_tokens, s->model, s->model_len, s->id);
	buf_adds(b, "\r\n\r\n");
	return idx + 1 == n ? EV_DONE : EV_DATA;
}

/* [[sse=KIND]]: rewrite event idx of an OpenAI stream, in m->body, as the
 * hostile upstream sends it (m->tmp is the scratch). */
static void sse_mangle(struct mock *m, const struct stream *s, uint64_t idx, enum ev_kind ev)
{
	static const char choices[] = ",\"choices\":";
	struct buf *b = &m->body, *t = &m->tmp;
	const char *p = NULL, *run, *end;
	uint64_t first_piece = s->api == API_CHAT;	/* after the role chunk */

	buf_clear(t);
	if (s->sse & SSE_COMMENT)
		buf_adds(t, ": keepalive\n");
	if ((s->sse & SSE_MULTILINE) && ev == EV_DATA)
		p = memmem(b->base, b->len, choices, sizeof(choices) - 1);
	if (p != NULL) {
		buf_add(t, b->base, (size_t)(p + 1 - b->base));	/* through the comma */
		buf_adds(t, "\ndata: ");
		buf_add(t, p + 1, (size_t)(b->base + b->len - p - 1));
	} else {
		buf_add(t, b->base, b->len);
	}
	if (ev == EV_DONE && (s->sse & SSE_NOBLANK) && t->len > 0)
		t->len--;	/* "data: [DONE]\n": no blank line */
	if (ev == EV_DATA && idx == first_piece) {
		if (s->sse & SSE_GARBAGE)
			buf_adds(t, "data: this is not json {\n\n");
		if (s->sse & SSE_NOFIELD)
			buf_adds(t, "this line has no field name\n\n");
		if ((s->sse & SSE_HUGE_LINE) && buf_grow(t, HUGE_LINE + 8) == 0) {
			buf_adds(t, "data: ");
			memset(t->base + t->len, 'x', HUGE_LINE);
			t->len += HUGE_LINE;
			buf_adds(t, "\n\n");
		}
	}
	buf_clear(b);
	if (!(s->sse & (SSE_CRLF | SSE_CR))) {
		buf_add(b, t->base, t->len);
	} else {
		/* JSON strings hold no raw newline: every '\n' ends a line. */
		end = t->base + t->len;
		for (p = t->base; p < end; p = run + 1) {
			run = memchr(p, '\n', (size_t)(end - p));
			if (run == NULL) {
				buf_add(b, p, (size_t)(end - p));
				break;
			}
			buf_add(b, p, (size_t)(run - p));
			buf_adds(b, (s->sse & SSE_CRLF) ? "\r\n" : "\r");
		}
	}
	if (t->oom)
		b->oom = 1;
	buf_trim(t);
}

/* Send what is due of a stream; 1 when it is over (finished or cut), 0 when
 * it waits for the pacing timer. */
static int stream_step(struct conn *c, struct req *q)
{
	struct stream *s = q->stream;
	struct mock *m = c->m;
	enum ev_kind ev;

	if (!s->started) {
		put_head(&c->out, s->status ? s->status : 200, "text/event-stream", SIZE_MAX,
			 s->chunked, s->retry_after, !(q->flags & RF_CLOSE));
		s->started = 1;
	}
	for (;;) {
		if (s->cut >= 0 && s->next >= (uint64_t)s->cut)
			break;
		buf_clear(&m->body);
		ev = s->fmt == FMT_ANTHROPIC ? anthropic_event(s, s->next, &m->body) :
		     s->fmt == FMT_GEMINI ? gemini_event(s, s->next, &m->body) :
		     stream_event(s, s->next, &m->body);
		if (ev == EV_DONE && s->cut >= 0)
			break;		/* a cut stream never says [DONE] */
		if (ev == EV_END) {
			if (s->chunked)
				buf_adds(&c->out, "0\r\n\r\n");
			m->st.streams_completed++;
			return 1;
		}
		if (s->sse != 0)
			sse_mangle(m, s, s->next, ev);
		s->next++;
		if (s->chunked)
			buf_addf(&c->out, "%zx\r\n", m->body.len);
		buf_add(&c->out, m->body.base, m->body.len);
		if (s->chunked)
			buf_adds(&c->out, "\r\n");
		if (m->body.oom)
			c->out.oom = 1;
		if (ev == EV_DATA && m->stream_interval_ms > 0) {
			conn_set_state(c, CONN_STREAMING);
			uv_timer_start(&c->timer, on_timer, m->stream_interval_ms, 0);
			return 0;
		}
	}
	m->st.streams_cut++;
	if (s->clean_end && s->chunked) {
		buf_adds(&c->out, "0\r\n\r\n");	/* a proper end: the connection stays */
		return 1;
	}
	q->flags |= RF_CLOSE;
	return 1;
}

/* Start or continue the replies at the head of the queue, in order. */
static void conn_pump(struct conn *c)
{
	struct req *q;
	unsigned close;

	while (c->state == CONN_READING && (q = c->head) != NULL) {
		if (q->delay_ms > 0) {
			conn_set_state(c, CONN_DELAYING);
			uv_timer_start(&c->timer, on_timer, q->delay_ms, 0);
			q->delay_ms = 0;
			break;
		}
		if (q->flags & RF_RESET) {
			conn_flush(c);	/* earlier replies first */
			conn_close(c, 1);
			return;
		}
		if (q->stream != NULL) {
			if (!stream_step(c, q))
				break;
		} else if (c->out.len == 0) {
			buf_free(&c->out);
			c->out = q->resp;	/* no copy: take the buffer */
			memset(&q->resp, 0, sizeof(q->resp));
		} else {
			buf_add(&c->out, q->resp.base, q->resp.len);
		}
		c->head = q->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->queued--;
		close = q->flags & RF_CLOSE;
		req_free(q);
		if (close)
			conn_set_state(c, CONN_DRAINING);
	}
	if (c->state == CONN_READING && c->head == NULL && (c->flags & CF_INPUT_DONE))
		conn_set_state(c, CONN_DRAINING);
	conn_flush(c);
	conn_backpressure(c);
}

static void on_timer(uv_timer_t *t)
{
	struct conn *c = t->data;

	switch (c->state) {
	case CONN_DELAYING:
	case CONN_STREAMING:
		conn_set_state(c, CONN_READING);
		conn_pump(c);
		break;
	case CONN_DRAINING:
		conn_close(c, 0);	/* lingered long enough */
		break;
	default:
		break;
	}
}

/* Send the reply now if nothing is ahead of it and it need not wait; else
 * queue it. */
static void dispatch(struct conn *c, struct reply *r)
{
	struct req *q;

	if (c->head == NULL && r->delay_ms == 0 && r->stream == NULL &&
	    !(r->flags & RF_RESET)) {
		put_reply(&c->out, r);
		if (r->flags & RF_CLOSE)
			conn_set_state(c, CONN_DRAINING);
		return;
	}
	q = calloc(1, sizeof(*q));
	if (q == NULL) {
		free(r->stream);
		conn_close(c, 0);
		return;
	}
	q->flags = r->flags;
	q->delay_ms = r->delay_ms;
	q->stream = r->stream;
	if (q->stream == NULL && !(q->flags & RF_RESET))
		put_reply(&q->resp, r);
	if (q->resp.oom)
		c->out.oom = 1;	/* closes the connection at the next flush */
	if (c->tail != NULL)
		c->tail->next = q;
	else
		c->head = q;
	c->tail = q;
	c->queued++;
}

static void reply_init(struct reply *r, struct mock *m)
{
	memset(r, 0, sizeof(*r));
	r->status = 200;
	r->ctype = "application/json";
	r->body = &m->body;
	r->retry_after = -1;
	buf_clear(&m->body);
}

/* ---- llhttp callbacks ----------------------------------------------------- */

static void header_end_value(struct conn *c)
{
	while (c->hdrs.len > c->val_start &&
	       (c->hdrs.base[c->hdrs.len - 1] == ' ' || c->hdrs.base[c->hdrs.len - 1] == '\t'))
		c->hdrs.len--;
	buf_addc(&c->hdrs, '\0');
	c->hstate = HS_NONE;
}

/* Terminate whatever header entry is open, so hdrs is always well formed. */
static void headers_finish(struct conn *c)
{
	if (c->hstate == HS_FIELD) {
		buf_addc(&c->hdrs, '\0');
		c->val_start = c->hdrs.len;
		c->hstate = HS_VALUE;
	}
	if (c->hstate == HS_VALUE)
		header_end_value(c);
}

static int on_message_begin(llhttp_t *p)
{
	struct conn *c = p->data;

	buf_clear(&c->url);
	buf_clear(&c->hdrs);
	buf_clear(&c->body);
	c->hstate = HS_NONE;
	c->err_status = 0;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	if (c->url.len + n > MAX_URL) {
		c->err_status = 414;
		return -1;
	}
	buf_add(&c->url, at, n);
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	size_t i;

	if (c->hstate == HS_VALUE)
		header_end_value(c);
	c->hstate = HS_FIELD;
	if (c->hdrs.len + n > MAX_HEADER_BYTES || buf_grow(&c->hdrs, n) != 0) {
		c->err_status = 431;
		return -1;
	}
	for (i = 0; i < n; i++)
		c->hdrs.base[c->hdrs.len++] =
			(at[i] >= 'A' && at[i] <= 'Z') ? (char)(at[i] + 32) : at[i];
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	buf_addc(&c->hdrs, '\0');
	c->val_start = c->hdrs.len;
	c->hstate = HS_VALUE;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	if (c->hdrs.len + n > MAX_HEADER_BYTES) {
		c->err_status = 431;
		return -1;
	}
	buf_add(&c->hdrs, at, n);
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	header_end_value(p->data);
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	const char *v;
	size_t n;

	headers_finish(c);
	if (c->hdrs.oom || c->hdrs.len > MAX_HEADER_BYTES) {
		c->err_status = 431;
		return -1;
	}
	c->keep_alive = llhttp_should_keep_alive(p);
	if (p->flags & F_CONTENT_LENGTH) {
		if (p->content_length > MAX_BODY) {
			c->err_status = 413;
			return -1;
		}
		if (buf_grow(&c->body, (size_t)p->content_length) != 0) {
			c->err_status = 413;
			return -1;
		}
	}
	/* curl waits a second for "100 Continue" before sending a large body. */
	v = hdr_get(&c->hdrs, "expect", &n);
	if (v != NULL && n == 12 && strncasecmp(v, "100-continue", 12) == 0 &&
	    c->head == NULL && c->state == CONN_READING)
		buf_adds(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	if (c->body.len + n > MAX_BODY || buf_grow(&c->body, n) != 0) {
		c->err_status = 413;
		return -1;
	}
	buf_add(&c->body, at, n);
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct conn *c = p->data;
	struct reply r;

	if (c->state == CONN_CLOSING)
		return HPE_PAUSED;
	headers_finish(c);	/* chunked trailers */
	buf_addc(&c->url, '\0');
	if (c->url.oom || c->hdrs.oom) {
		conn_close(c, 0);
		return HPE_PAUSED;
	}
	reply_init(&r, c->m);
	if (!c->keep_alive)
		r.flags |= RF_CLOSE;
	route(c, &r);
	if (r.body->oom) {
		free(r.stream);
		r.stream = NULL;
		buf_clear(r.body);
		error_reply(&r, 500, "server_error", "null", "mock out of memory", 18);
	}
	if (r.flags & RF_CLOSE)
		c->flags |= CF_INPUT_DONE;
	dispatch(c, &r);
	buf_trim(&c->body);
	return (c->flags & CF_INPUT_DONE) ? HPE_PAUSED : 0;
}

static const llhttp_settings_t parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_header_field_complete = on_header_field_complete,
	.on_header_value_complete = on_header_value_complete,
};

/* ---- reading -------------------------------------------------------------- */

static void parse_error(struct conn *c, llhttp_errno_t err)
{
	const char *why = llhttp_get_error_reason(&c->parser);
	struct reply r;
	char msg[256];
	int status = c->err_status ? c->err_status : 400;

	if (why == NULL)
		why = "";
	if (!c->m->quiet)
		fprintf(stderr, "mock-upstream: bad request (%d): %s %s\n", status,
			llhttp_errno_name(err), why);
	if (status == 413)
		snprintf(msg, sizeof(msg), "Request body too large.");
	else if (status == 414)
		snprintf(msg, sizeof(msg), "Request URL too long.");
	else if (status == 431)
		snprintf(msg, sizeof(msg), "Request headers too large.");
	else
		snprintf(msg, sizeof(msg), "Malformed HTTP request: %s %s",
			 llhttp_errno_name(err), why);
	reply_init(&r, c->m);
	r.flags |= RF_CLOSE;
	error_reply(&r, status, "invalid_request_error", "null", msg, strlen(msg));
	dispatch(c, &r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->m->rbuf, sizeof(c->m->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	llhttp_errno_t err;

	if (nread == 0 || c->state == CONN_CLOSING)
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			conn_close(c, 0);
			return;
		}
		c->flags |= CF_PEER_EOF | CF_INPUT_DONE;
		if (c->head != NULL) {
			conn_close(c, 0);	/* gone while a reply waited */
			return;
		}
		if (c->state == CONN_DRAINING) {
			/* Lingering: done. Shutting down: on_shutdown closes. */
			if (uv_is_active((uv_handle_t *)&c->timer))
				conn_close(c, 0);
			return;
		}
		conn_pump(c);	/* drain what is left, then close */
		return;
	}
	if (c->state == CONN_DRAINING || (c->flags & CF_INPUT_DONE))
		return;		/* past the last request: drop */
	err = llhttp_execute(&c->parser, buf->base, (size_t)nread);
	if (c->state == CONN_CLOSING)
		return;
	if (err != HPE_OK) {
		c->flags |= CF_INPUT_DONE;
		if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
			parse_error(c, err);
	}
	conn_pump(c);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct mock *m = server->data;
	struct conn *c;

	if (status < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return;
	c->m = m;
	uv_tcp_init(m->loop, &c->tcp);
	uv_timer_init(m->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->handles_open = 2;
	c->next = m->conns;
	if (m->conns != NULL)
		m->conns->prev = c;
	m->conns = c;
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
		conn_close(c, 0);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
}

/* ---- startup -------------------------------------------------------------- */

static void on_signal(uv_signal_t *s, int signum)
{
	struct mock *m = s->data;
	struct conn *c;

	(void)signum;
	if (uv_is_closing((uv_handle_t *)&m->listener))
		return;
	for (c = m->conns; c != NULL; c = c->next)
		conn_close(c, 0);
	uv_close((uv_handle_t *)&m->listener, NULL);
	uv_close((uv_handle_t *)&m->sigterm, NULL);
	uv_close((uv_handle_t *)&m->sigint, NULL);
}

static void usage(FILE *f)
{
	fputs("usage: mock-upstream [--host 127.0.0.1] --port N [--latency-ms N]\n"
	      "                     [--stream-chunks N] [--stream-interval-ms N]\n"
	      "                     [--require-key KEY] [--fail-status CODE]\n"
	      "                     [--embed-dim N] [--quiet]\n", f);
}

static int opt_num(const char *name, const char *val, uint64_t min, uint64_t max,
		   uint64_t *out)
{
	if (parse_num(val, strlen(val), max, out) == 0 && *out >= min)
		return 0;
	fprintf(stderr, "mock-upstream: %s: must be an integer in [%" PRIu64 ", %"
		PRIu64 "]\n", name, min, max);
	return -1;
}

static int parse_args(struct mock *m, int argc, char **argv)
{
	const char *arg, *val, *eq;
	size_t len;
	uint64_t v;
	int i;

	for (i = 1; i < argc; i++) {
		arg = argv[i];
		if (strcmp(arg, "--quiet") == 0) {
			m->quiet = 1;
			continue;
		}
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage(stdout);
			exit(0);
		}
		eq = strchr(arg, '=');
		len = eq ? (size_t)(eq - arg) : strlen(arg);
		if (eq != NULL)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			goto bad;
#define OPT(s) (len == sizeof(s) - 1 && memcmp(arg, s, len) == 0)
		if (OPT("--host")) {
			m->host = val;
		} else if (OPT("--port")) {
			if (opt_num("--port", val, 0, 65535, &v) != 0)
				return -1;
			m->port = (int)v;
		} else if (OPT("--latency-ms")) {
			if (opt_num("--latency-ms", val, 0, MAX_DELAY_MS, &m->latency_ms) != 0)
				return -1;
		} else if (OPT("--stream-chunks")) {
			if (opt_num("--stream-chunks", val, 1, MAX_CHUNKS, &m->stream_chunks) != 0)
				return -1;
		} else if (OPT("--stream-interval-ms")) {
			if (opt_num("--stream-interval-ms", val, 0, MAX_DELAY_MS,
				    &m->stream_interval_ms) != 0)
				return -1;
		} else if (OPT("--require-key")) {
			m->require_key = val;
		} else if (OPT("--fail-status")) {
			if (opt_num("--fail-status", val, 200, 599, &v) != 0)
				return -1;
			m->fail_status = (int)v;
		} else if (OPT("--embed-dim")) {
			if (opt_num("--embed-dim", val, 1, MAX_EMBED_DIM, &v) != 0)
				return -1;
			m->embed_dim = (unsigned)v;
		} else {
			goto bad;
		}
#undef OPT
	}
	if (m->port >= 0)
		return 0;
	fprintf(stderr, "mock-upstream: --port is required\n");
	usage(stderr);
	return -1;
bad:
	fprintf(stderr, "mock-upstream: bad argument: %s\n", arg);
	usage(stderr);
	return -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage addr;
	struct mock *m;
	int len, rc, ret = 1;

	signal(SIGPIPE, SIG_IGN);
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return 1;
	m->host = "127.0.0.1";
	m->port = -1;
	m->stream_chunks = 5;
	m->embed_dim = 64;
	m->next_id = 1;
	if (parse_args(m, argc, argv) != 0) {
		ret = 2;
		goto out;
	}
	m->loop = uv_default_loop();
	if (uv_ip4_addr(strcmp(m->host, "localhost") == 0 ? "127.0.0.1" : m->host,
			m->port, (struct sockaddr_in *)&addr) != 0 &&
	    uv_ip6_addr(m->host, m->port, (struct sockaddr_in6 *)&addr) != 0) {
		fprintf(stderr, "mock-upstream: --host: not an IP address: %s\n", m->host);
		ret = 2;
		goto out;
	}
	uv_tcp_init(m->loop, &m->listener);
	m->listener.data = m;
	if ((rc = uv_tcp_bind(&m->listener, (struct sockaddr *)&addr, 0)) != 0 ||
	    (rc = uv_listen((uv_stream_t *)&m->listener, 1024, on_connection)) != 0) {
		fprintf(stderr, "mock-upstream: listen on %s:%d: %s\n", m->host, m->port,
			uv_strerror(rc));
		goto out_close;
	}
	len = sizeof(addr);
	uv_tcp_getsockname(&m->listener, (struct sockaddr *)&addr, &len);
	m->port = ntohs(addr.ss_family == AF_INET6 ?
			((struct sockaddr_in6 *)&addr)->sin6_port :
			((struct sockaddr_in *)&addr)->sin_port);
	uv_signal_init(m->loop, &m->sigterm);
	uv_signal_init(m->loop, &m->sigint);
	m->sigterm.data = m->sigint.data = m;
	uv_signal_start(&m->sigterm, on_signal, SIGTERM);
	uv_signal_start(&m->sigint, on_signal, SIGINT);
	printf("listening on %s:%d\n", m->host, m->port);
	fflush(stdout);
	uv_run(m->loop, UV_RUN_DEFAULT);
	ret = 0;
	goto out;
out_close:
	uv_close((uv_handle_t *)&m->listener, NULL);
	uv_run(m->loop, UV_RUN_DEFAULT);
out:
	if (m->loop != NULL)
		uv_loop_close(m->loop);
	buf_free(&m->last_auth);
	buf_free(&m->last_model);
	buf_free(&m->last_hdrs);
	buf_free(&m->body);
	buf_free(&m->prompt);
	buf_free(&m->ans);
	buf_free(&m->offs);
	buf_free(&m->tmp);
	free(m);
	return ret;
}
