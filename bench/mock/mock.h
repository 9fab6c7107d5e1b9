/* Shared by the mock upstream's files (bench/mock/): its types, limits and
 * the functions that cross files. What the server does, its options and its
 * fault markers are documented at the top of main.c; README.md says which
 * file holds what. */
#ifndef SEMGATE_MOCK_H
#define SEMGATE_MOCK_H

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
#define MAX_HUGE	((uint64_t)128 * 1024 * 1024)
#define MAX_DELAY_MS	((uint64_t)3600 * 1000)
#define MAX_EMBED_DIM	65536

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

/* The fault markers of a prompt, as parse_faults() reads them. */
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

/* buf.c: buffers, HTTP output */
int buf_grow(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *p, size_t n);
void buf_addc(struct buf *b, char ch);
void buf_adds(struct buf *b, const char *s);
void buf_add_u64(struct buf *b, uint64_t v);
void buf_addf(struct buf *b, const char *fmt, ...);
void buf_clear(struct buf *b);
void buf_free(struct buf *b);
void buf_trim(struct buf *b);
void buf_add_jraw(struct buf *b, const char *s, size_t n);
void buf_add_jstr(struct buf *b, const char *s, size_t n);
int parse_num(const char *s, size_t n, uint64_t max, uint64_t *out);
uint64_t ceil4(size_t n);
void put_head(struct buf *o, int status, const char *ctype, size_t clen,
	      int chunked, int64_t retry_after, int keep_alive);
void put_reply(struct buf *o, const struct reply *r);
void error_reply(struct reply *r, int status, const char *type,
		 const char *code, const char *msg, size_t msg_len);
void injected_error(struct reply *r, int status);
void bad_request(struct reply *r, const char *msg);

/* embed.c: embeddings */
void embed_text(const char *s, size_t n, float *v, unsigned dim);
void buf_add_unit_float(struct buf *b, float x);
void buf_add_base64_floats(struct buf *b, const float *v, unsigned dim);

/* faults.c: fault markers */
extern const char *const body_kinds[];
void parse_faults(const char *s, size_t n, struct faults *f);

/* openai.c: OpenAI requests */
const char *hdr_get(const struct buf *h, const char *name, size_t *len);
int authorized(const struct conn *c);
size_t content_len(const json_t *content);
void content_text(const json_t *content, struct buf *out);
void answers_begin(struct mock *m);
void answers_add(struct mock *m, const char *prompt, size_t len, int64_t huge,
		 int done_in_content);
void put_usage(struct buf *b, uint64_t pt, uint64_t ct);
void completion_body(struct mock *m, enum api api, struct buf *b,
		     const char *model, size_t model_len, uint64_t pt, uint64_t ct,
		     const char *tool, size_t tool_len, int kind, int no_finish);
struct stream *stream_new(struct mock *m, enum api api, const char *model,
			  size_t model_len, uint64_t pt, uint64_t ct,
			  const char *tool, size_t tool_len);
size_t texts_count(const json_t *texts);
const json_t *texts_at(const json_t *texts, size_t i);
const char *read_chat(struct mock *m, const json_t *root, struct call *a);
const char *read_texts(const json_t *root, struct call *a);
const char *embeddings_body(struct mock *m, const struct call *a,
			    const json_t *root, struct buf *b);

/* providers.c: Anthropic's and Gemini's formats */
void fmt_error(struct reply *r, enum fmt fmt, int status, const char *msg);
int authorized_as(const struct conn *c, enum fmt fmt);
const char *read_anthropic(struct mock *m, const json_t *root, struct call *a);
const char *read_gemini(struct mock *m, const json_t *root, struct call *a);
void anthropic_body(struct mock *m, const struct call *a, struct buf *b, uint64_t ct);
void gemini_response(struct buf *b, const char *tool, size_t tool_len,
		     const char *text, size_t len, int final, uint64_t pt,
		     uint64_t ct, const char *model, size_t model_len, uint64_t id);
void gemini_body(struct mock *m, const struct call *a, struct buf *b, uint64_t ct);

/* route.c: the router */
void route(struct conn *c, struct reply *r);

/* conn.c: connections, llhttp callbacks, reading */
void conn_close(struct conn *c, int reset);
void on_connection(uv_stream_t *server, int status);

#endif
