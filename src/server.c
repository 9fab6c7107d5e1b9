/* The HTTP/1.1 front end: accept, read, parse with llhttp, enforce limits,
 * hand complete requests to the handlers, write responses.
 *
 * One request per connection is handled at a time. Pipelined requests wait
 * unparsed in the connection's buffer (llhttp is paused at the end of each
 * message), so responses always leave in request order. Bytes are parsed
 * straight out of a server-wide read buffer; only what is left over when a
 * request is handed off is copied.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sched.h>
#include <time.h>

#include "semgate/log.h"
#include "fbuf_int.h"
#include "server_int.h"

#define LINGER_MS 2000           /* read and discard after a closing reply */
#define MAX_PENDING (1u << 20)   /* pipelined bytes buffered while busy */
#define BUSY_POLL_MAX_CONNS 8    /* busy polling only up to this many connections */
#define HITS_FLUSH_MS 20         /* hit counters reach the store this soon after a hit */

enum conn_state { CONN_OPEN, CONN_SHUTDOWN, CONN_LINGER, CONN_CLOSING, CONN__LAST };
enum conn_timer { TIMER_NONE, TIMER_IDLE, TIMER_REQUEST, TIMER_LINGER, TIMER_RETRY };

struct sg_conn {
	uv_tcp_t tcp;             /* the client socket; freed in its close callback */
	uv_timer_t timer;         /* idle, request or linger deadline */
	uv_shutdown_t shutdown;   /* flush-then-FIN */
	sg_server_t *srv;         /* owner */
	enum conn_state state;    /* one setter: conn_set_state() */
	enum conn_timer timer_kind; /* what the timer is armed for */
	llhttp_t parser;          /* request parser */
	sg_req_t req;             /* the request being read or answered */
	sg_buf_t pending;         /* received, not yet parsed */
	size_t write_queued;      /* bytes handed to uv_write, not yet written */
	int err_status;           /* limit hit inside a parser callback */
	int handles_open;         /* handles still to close before free */
	int in_process;           /* inside conn_process(): no re-entry */
	int overflow;             /* beyond max_connections: 503 and close */
	int read_stopped;         /* paused: too many pipelined bytes buffered */
	int holds;                /* thread-pool work still referring to the connection */
	int handles_closed;       /* both handles closed: free once holds is 0 */
	sg_conn_t *prev, *next;   /* srv->conns list */
};

typedef struct wreq {
	uv_write_t w;    /* libuv request */
	sg_conn_t *conn; /* owner */
	size_t len;      /* bytes in data */
	char data[];     /* copy of what uv_try_write could not send */
} wreq_t;

static void conn_process(sg_conn_t *c);
static void conn_close(sg_conn_t *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void req_finish(sg_req_t *req);

static const char *status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}

static void conn_set_state(sg_conn_t *c, enum conn_state s)
{
	c->state = s;
}

static void req_set_state(sg_req_t *req, enum sg_req_state s)
{
	req->state = s;
}

/* --- busy polling ---------------------------------------------------------------- */

/*
 * After activity the loop polls without sleeping for a short while
 * (limits.busy_poll_us): the reply of an upstream on the same host, or the
 * next request of a keep-alive client, then costs no wake-up of a sleeping
 * thread, which on a virtual machine is tens of microseconds. An idle handle
 * makes libuv poll with a zero timeout; it stops itself once the budget since
 * the last activity is spent, so an idle gateway sleeps as usual.
 */
static void on_spin(uv_idle_t *h)
{
	sg_server_t *srv = h->data;
	if (sg_now_us() >= srv->spin_until_us)
		uv_idle_stop(h);
	else
		sched_yield(); /* polite spinning: a process that needs this core gets it */
}

void sg__server_kick(sg_server_t *srv)
{
	long budget = srv->cfg->limits.busy_poll_us;
	/* Only at low concurrency, where a wake-up is most of the latency: with
	 * many connections events come often anyway, and spinning would take CPU
	 * from the processes (an upstream on the same host) that produce them. */
	if (budget <= 0 || srv->draining || srv->nconns > BUSY_POLL_MAX_CONNS)
		return;
	srv->spin_until_us = sg_now_us() + (uint64_t)budget;
	if (!uv_is_active((uv_handle_t *)&srv->spin))
		uv_idle_start(&srv->spin, on_spin);
}

/* --- timers ------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t);

static void timer_arm(sg_conn_t *c, enum conn_timer kind, uint64_t ms)
{
	c->timer_kind = kind;
	uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void timer_stop(sg_conn_t *c)
{
	c->timer_kind = TIMER_NONE;
	uv_timer_stop(&c->timer);
}

/* --- writing ------------------------------------------------------------------- */

static void on_write(uv_write_t *w, int status)
{
	wreq_t *wr = (wreq_t *)w;
	sg_conn_t *c = wr->conn;

	c->write_queued -= wr->len;
	free(wr);
	if (status < 0) {
		if (c->state != CONN_CLOSING)
			conn_close(c);
		return;
	}
	if (c->req.state == SG_REQ_STREAMING && c->write_queued < SG_STREAM_HIGH_WATER / 2)
		sg__handle_writable(&c->req);
}

/* Write bufs in order: as much as possible right away, the rest queued.
 * Returns 0 or a negative SG_E* code (the connection is then closing). */
static int conn_write(sg_conn_t *c, uv_buf_t *bufs, unsigned nbufs)
{
	size_t total = 0, done = 0;
	int n = 0;

	if (c->state != CONN_OPEN)
		return SG_ECANCELED;
	for (unsigned i = 0; i < nbufs; i++)
		total += bufs[i].len;
	if (c->write_queued == 0) {
		n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
		if (n < 0 && n != UV_EAGAIN) {
			conn_close(c);
			return SG_EIO;
		}
		done = n > 0 ? (size_t)n : 0;
		if (done == total)
			return 0;
	}
	wreq_t *wr = malloc(sizeof(*wr) + total - done);
	if (wr == NULL) {
		conn_close(c);
		return SG_ENOMEM;
	}
	wr->conn = c;
	wr->len = total - done;
	char *o = wr->data;
	for (unsigned i = 0; i < nbufs; i++) {
		if (done >= bufs[i].len) {
			done -= bufs[i].len;
			continue;
		}
		memcpy(o, bufs[i].base + done, bufs[i].len - done);
		o += bufs[i].len - done;
		done = 0;
	}
	uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
	if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
		free(wr);
		conn_close(c);
		return SG_EIO;
	}
	c->write_queued += wr->len;
	return 0;
}

/* --- closing -------------------------------------------------------------------- */

static void conn_free(sg_conn_t *c)
{
	if (!c->overflow && c->req.conn)
		sg__proxy_abort(&c->req); /* what a finished request still holds */
	sg_buf_free(&c->req.url);
	sg_buf_free(&c->req.hdrs);
	sg_buf_free(&c->req.body);
	sg_buf_free(&c->req.proxy.body);
	sg_buf_free(&c->req.proxy.out);
	free(c->req.proxy.tried);
	free(c->req.hdr);
	sg__cache_req_free(&c->req);
	sg_buf_free(&c->pending);
	free(c);
}

static void server_maybe_done(sg_server_t *srv);

static void on_handle_closed(uv_handle_t *h)
{
	sg_conn_t *c = h->data;
	if (--c->handles_open == 0) {
		sg_server_t *srv = c->srv;
		c->handles_closed = 1;
		if (c->holds == 0)
			conn_free(c);
		server_maybe_done(srv);
	}
}

void sg__req_hold(sg_req_t *req)
{
	req->conn->holds++;
}

int sg__req_release(sg_req_t *req)
{
	sg_conn_t *c = req->conn;
	if (--c->holds == 0 && c->handles_closed) {
		conn_free(c);
		return 0;
	}
	return c->state != CONN_CLOSING;
}

/* Close now: whatever is in flight for the request is canceled. */
static void conn_close(sg_conn_t *c)
{
	sg_server_t *srv = c->srv;

	if (c->state == CONN_CLOSING)
		return;
	conn_set_state(c, CONN_CLOSING);
	if (c->req.state == SG_REQ_HANDLING || c->req.state == SG_REQ_STREAMING)
		sg__handle_abort(&c->req);
	req_set_state(&c->req, SG_REQ_NONE);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (!c->overflow)
		srv->nconns--;
	uv_read_stop((uv_stream_t *)&c->tcp);
	timer_stop(c);
	c->handles_open = 2;
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
	sg_conn_t *c = s->data;
	if (c->state != CONN_SHUTDOWN)
		return; /* closed meanwhile */
	if (status < 0) {
		conn_close(c);
		return;
	}
	/* Keep reading (and discarding) for a moment so the client sees our reply
	 * before a reset caused by data it is still sending. */
	conn_set_state(c, CONN_LINGER);
	timer_arm(c, TIMER_LINGER, LINGER_MS);
}

/* Close after everything queued has been written. */
static void conn_shutdown(sg_conn_t *c)
{
	if (c->state != CONN_OPEN)
		return;
	conn_set_state(c, CONN_SHUTDOWN);
	timer_stop(c);
	c->shutdown.data = c;
	if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_close(c);
}

static void on_timer(uv_timer_t *t)
{
	sg_conn_t *c = t->data;
	enum conn_timer kind = c->timer_kind;

	c->timer_kind = TIMER_NONE;
	switch (kind) {
	case TIMER_REQUEST:
		if (c->state == CONN_OPEN && c->req.state == SG_REQ_READING) {
			c->req.keep_alive = 0;
			sg__respond_error(&c->req, 408, "invalid_request_error", "request_timeout",
			                  "the request did not arrive within %ld ms",
			                  c->srv->cfg->limits.request_timeout_ms);
			return;
		}
		conn_close(c);
		return;
	case TIMER_RETRY:
		if (c->state == CONN_OPEN && c->req.state == SG_REQ_HANDLING)
			sg__proxy_retry(&c->req);
		return;
	case TIMER_IDLE:
	case TIMER_LINGER:
		conn_close(c);
		return;
	case TIMER_NONE:
		return;
	}
}

/* --- responses --------------------------------------------------------------------- */

static const char *date_header(sg_server_t *srv)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t now = time(NULL);
	struct tm tm;

	if (now != srv->date_sec) {
		srv->date_sec = now;
		gmtime_r(&now, &tm);
		snprintf(srv->date, sizeof(srv->date),
		         "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", days[tm.tm_wday],
		         tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		         tm.tm_sec);
	}
	return srv->date;
}

static int format_head(sg_req_t *req, char *out, size_t cap, int status, const char *ctype,
                       const char *extra, const char *framing)
{
	sg_conn_t *c = req->conn;
	const char *conn_hdr = "";

	if (c->srv->draining)
		req->keep_alive = 0;
	if (!req->keep_alive)
		conn_hdr = "Connection: close\r\n";
	else if (req->http_minor == 0)
		conn_hdr = "Connection: keep-alive\r\n";
	sg__fbuf_t o;
	sg__fbuf_init(&o, out, cap);
	sg__fbuf_str(&o, "HTTP/1.1 ");
	sg__fbuf_u64(&o, (uint64_t)status);
	sg__fbuf_mem(&o, " ", 1);
	sg__fbuf_str(&o, status_text(status));
	sg__fbuf_mem(&o, "\r\n", 2);
	sg__fbuf_str(&o, date_header(c->srv));
	sg__fbuf_str(&o, "Server: semgate\r\nContent-Type: ");
	sg__fbuf_str(&o, ctype);
	sg__fbuf_mem(&o, "\r\n", 2);
	sg__fbuf_str(&o, framing);
	sg__fbuf_str(&o, "X-Request-Id: ");
	sg__fbuf_str(&o, req->id);
	sg__fbuf_mem(&o, "\r\n", 2);
	sg__fbuf_str(&o, conn_hdr);
	if (extra)
		sg__fbuf_str(&o, extra);
	sg__fbuf_mem(&o, "\r\n", 2);
	return (int)o.len;
}

void sg__respond(sg_req_t *req, int status, const char *ctype, const char *body, size_t len,
                 const char *extra)
{
	char head[2048], framing[64];
	uv_buf_t bufs[2];

	sg__fbuf_t f;
	sg__fbuf_init(&f, framing, sizeof(framing));
	sg__fbuf_str(&f, "Content-Length: ");
	sg__fbuf_u64(&f, len);
	sg__fbuf_mem(&f, "\r\n", 2);
	int n = format_head(req, head, sizeof(head), status, ctype, extra, framing);
	bufs[0] = uv_buf_init(head, (unsigned)n);
	bufs[1] = uv_buf_init((char *)body, (unsigned)len);
	conn_write(req->conn, bufs, len ? 2 : 1);
	req_finish(req);
}

static void respond_error_v(sg_req_t *req, int status, const char *extra, const char *type,
                            const char *code, const char *fmt, va_list ap)
{
	char msg[1024];
	sg_buf_t b;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	sg_buf_init(&b, 0);
	sg_buf_puts(&b, "{\"error\":{\"message\":");
	sg_buf_json_str(&b, msg, strlen(msg));
	sg_buf_puts(&b, ",\"type\":");
	sg_buf_json_str(&b, type, strlen(type));
	sg_buf_puts(&b, ",\"code\":");
	if (code)
		sg_buf_json_str(&b, code, strlen(code));
	else
		sg_buf_puts(&b, "null");
	if (sg_buf_puts(&b, "}}\n") != 0) {
		sg_buf_free(&b);
		conn_close(req->conn);
		return;
	}
	sg__respond(req, status, "application/json", b.data, b.len, extra);
	sg_buf_free(&b);
}

void sg__respond_error(sg_req_t *req, int status, const char *type, const char *code,
                       const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	respond_error_v(req, status, NULL, type, code, fmt, ap);
	va_end(ap);
}

void sg__respond_error_h(sg_req_t *req, int status, const char *extra, const char *type,
                         const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	respond_error_v(req, status, extra, type, code, fmt, ap);
	va_end(ap);
}

void sg__stream_begin(sg_req_t *req, int status, const char *ctype, const char *extra)
{
	char head[2048];
	uv_buf_t buf;

	if (req->http_minor == 0)
		req->keep_alive = 0; /* HTTP/1.0: the end of the body is the close */
	int n = format_head(req, head, sizeof(head), status, ctype, extra,
	                    req->http_minor ? "Transfer-Encoding: chunked\r\n"
	                                    : "Cache-Control: no-cache\r\n");
	req_set_state(req, SG_REQ_STREAMING);
	buf = uv_buf_init(head, (unsigned)n);
	conn_write(req->conn, &buf, 1);
}

long sg__stream_write(sg_req_t *req, const char *p, size_t n)
{
	sg_conn_t *c = req->conn;
	char size[24];
	uv_buf_t bufs[3];
	int rc;

	if (n == 0)
		return (long)c->write_queued;
	if (req->http_minor == 0) {
		bufs[0] = uv_buf_init((char *)p, (unsigned)n);
		rc = conn_write(c, bufs, 1);
	} else {
		int k = snprintf(size, sizeof(size), "%zx\r\n", n);
		bufs[0] = uv_buf_init(size, (unsigned)k);
		bufs[1] = uv_buf_init((char *)p, (unsigned)n);
		bufs[2] = uv_buf_init("\r\n", 2);
		rc = conn_write(c, bufs, 3);
	}
	return rc < 0 ? rc : (long)c->write_queued;
}

void sg__stream_end(sg_req_t *req)
{
	if (req->http_minor) {
		uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
		conn_write(req->conn, &b, 1);
	}
	req_finish(req);
}

/* The response is out (or queued): reuse the connection or close it. */
static void req_finish(sg_req_t *req)
{
	sg_conn_t *c = req->conn;

	req_set_state(req, SG_REQ_NONE);
	if (c->state != CONN_OPEN)
		return;
	sg__server_kick(c->srv);
	if (!req->keep_alive || c->srv->draining) {
		conn_shutdown(c);
		return;
	}
	timer_arm(c, TIMER_IDLE, (uint64_t)c->srv->cfg->limits.idle_timeout_ms);
	if (c->pending.len)
		conn_process(c);
	if (c->read_stopped && c->state == CONN_OPEN) {
		c->read_stopped = 0;
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
			conn_close(c);
	}
}

void sg__req_retry_after(sg_req_t *req, uint64_t ms)
{
	timer_arm(req->conn, TIMER_RETRY, ms);
}

int sg__req_header(const sg_req_t *req, const char *name, sg_iovec_t *out)
{
	size_t nlen = strlen(name);
	for (size_t i = 0; i < req->nhdr; i++) {
		const sg_hdr_t *h = &req->hdr[i];
		if (h->name_len == nlen && strncasecmp(req->hdrs.data + h->name_off, name, nlen) == 0) {
			out->base = req->hdrs.data + h->value_off;
			out->len = h->value_len;
			return 0;
		}
	}
	return SG_ENOTFOUND;
}

sg_server_t *sg__req_server(const sg_req_t *req)
{
	return req->conn->srv;
}

/* --- parsing --------------------------------------------------------------------- */

#define CONN(p) ((sg_conn_t *)(p)->data)

static int fail(sg_conn_t *c, int status)
{
	c->err_status = status;
	return -1;
}

static int on_message_begin(llhttp_t *p)
{
	sg_conn_t *c = CONN(p);
	sg_req_t *r = &c->req;

	req_set_state(r, SG_REQ_READING);
	sg_buf_reset(&r->url);
	sg_buf_reset(&r->hdrs);
	sg_buf_reset(&r->body);
	r->nhdr = 0;
	r->in_header_value = 0;
	r->value_done = 0;
	r->expect_continue = 0;
	r->keep_alive = 1;
	r->id[0] = '\0';
	r->cache.state = SG_RC_OFF;
	timer_arm(c, TIMER_REQUEST, (uint64_t)c->srv->cfg->limits.request_timeout_ms);
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	sg_conn_t *c = CONN(p);
	return sg_buf_append(&c->req.url, at, n) ? fail(c, 414) : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	sg_conn_t *c = CONN(p);
	sg_req_t *r = &c->req;

	r->value_done = 0;
	if (r->nhdr == 0 || r->in_header_value) {
		/* a new header begins */
		if (r->nhdr == (size_t)c->srv->cfg->limits.max_headers)
			return fail(c, 431);
		if (r->nhdr == r->hdr_cap) {
			size_t cap = r->hdr_cap ? r->hdr_cap * 2 : 16;
			sg_hdr_t *h = realloc(r->hdr, cap * sizeof(*h));
			if (h == NULL)
				return fail(c, 503);
			r->hdr = h;
			r->hdr_cap = cap;
		}
		r->hdr[r->nhdr++] = (sg_hdr_t){(uint32_t)r->hdrs.len, 0, 0, 0};
		r->in_header_value = 0;
	}
	if (sg_buf_append(&r->hdrs, at, n))
		return fail(c, 431);
	r->hdr[r->nhdr - 1].name_len += (uint32_t)n;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
	sg_conn_t *c = CONN(p);
	sg_req_t *r = &c->req;

	/* A value with no name before it: llhttp reports no empty field names. */
	if (r->nhdr == 0 || r->value_done)
		return fail(c, 400);
	sg_hdr_t *h = &r->hdr[r->nhdr - 1];
	if (!r->in_header_value) {
		r->in_header_value = 1;
		h->value_off = (uint32_t)r->hdrs.len;
	}
	if (sg_buf_append(&r->hdrs, at, n))
		return fail(c, 431);
	h->value_len += (uint32_t)n;
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	sg_conn_t *c = CONN(p);
	if (c->req.nhdr == 0 || c->req.hdr[c->req.nhdr - 1].name_len == 0 || c->req.value_done)
		return fail(c, 400); /* ": value" */
	c->req.value_done = 1;
	c->req.in_header_value = 1; /* even when the value was empty */
	return 0;
}

static void set_request_id(sg_req_t *r)
{
	sg_server_t *srv = r->conn->srv;
	sg_iovec_t v;

	if (sg__req_header(r, "X-Request-Id", &v) == 0 && v.len > 0 && v.len < sizeof(r->id)) {
		size_t i;
		for (i = 0; i < v.len; i++) {
			char ch = v.base[i];
			if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
			      (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_' || ch == '.' || ch == ':'))
				break;
		}
		if (i == v.len) {
			memcpy(r->id, v.base, v.len);
			r->id[v.len] = '\0';
			return;
		}
	}
	sg__fbuf_t o;
	sg__fbuf_init(&o, r->id, sizeof(r->id));
	sg__fbuf_hex(&o, srv->id_seed, 8);
	sg__fbuf_hex(&o, ++srv->next_req_id & 0xffffffffffffULL, 12);
}

static int on_headers_complete(llhttp_t *p)
{
	sg_conn_t *c = CONN(p);
	sg_req_t *r = &c->req;
	const sg_limits_t *lim = &c->srv->cfg->limits;
	sg_iovec_t v;

	r->method = (uint8_t)llhttp_get_method(p);
	r->http_minor = llhttp_get_http_major(p) == 1 ? (uint8_t)llhttp_get_http_minor(p) : 0;
	r->keep_alive = (uint8_t)llhttp_should_keep_alive(p);
	set_request_id(r);
	if ((p->flags & F_CONTENT_LENGTH) && p->content_length > (uint64_t)lim->max_body_bytes)
		return fail(c, 413);
	if (sg__req_header(r, "Expect", &v) == 0) {
		if (v.len == 12 && strncasecmp(v.base, "100-continue", 12) == 0) {
			if (r->http_minor == 1 && (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)) &&
			    !(p->flags & F_CONTENT_LENGTH && p->content_length == 0)) {
				uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
				conn_write(c, &b, 1);
			}
		} else {
			return fail(c, 417);
		}
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	sg_conn_t *c = CONN(p);
	return sg_buf_append(&c->req.body, at, n) ? fail(c, 413) : 0;
}

static int on_message_complete(llhttp_t *p)
{
	sg_conn_t *c = CONN(p);
	timer_stop(c);
	c->req.start_us = sg_now_us();
	req_set_state(&c->req, SG_REQ_HANDLING);
	return HPE_PAUSED; /* one request at a time: the rest waits */
}

static void respond_parse_error(sg_conn_t *c, llhttp_errno_t e)
{
	sg_req_t *r = &c->req;
	int status = c->err_status ? c->err_status : 400;

	r->keep_alive = 0;
	if (r->id[0] == '\0')
		set_request_id(r);
	switch (status) {
	case 413:
		sg__respond_error(r, 413, "invalid_request_error", "body_too_large",
		                  "request body exceeds %ld bytes", c->srv->cfg->limits.max_body_bytes);
		break;
	case 414:
		sg__respond_error(r, 414, "invalid_request_error", "uri_too_long",
		                  "request target exceeds %ld bytes", c->srv->cfg->limits.max_url_bytes);
		break;
	case 417:
		sg__respond_error(r, 417, "invalid_request_error", "expectation_failed",
		                  "only \"Expect: 100-continue\" is supported");
		break;
	case 431:
		sg__respond_error(r, 431, "invalid_request_error", "headers_too_large",
		                  "request headers exceed %ld bytes or %ld fields",
		                  c->srv->cfg->limits.max_header_bytes, c->srv->cfg->limits.max_headers);
		break;
	case 503:
		sg__respond_error(r, 503, "server_error", "overloaded", "out of memory");
		break;
	default:
		sg__respond_error(r, 400, "invalid_request_error", "bad_request",
		                  "malformed HTTP request: %s", llhttp_errno_name(e));
		break;
	}
}

/* Parse what can be parsed of p. Returns the bytes consumed. */
static size_t feed(sg_conn_t *c, const char *p, size_t n)
{
	llhttp_errno_t e = llhttp_execute(&c->parser, p, n);

	switch (e) {
	case HPE_OK:
		return n;
	case HPE_PAUSED:
	case HPE_PAUSED_UPGRADE: {
		size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - p);
		if (e == HPE_PAUSED_UPGRADE)
			c->req.keep_alive = 0; /* no protocol switch: what follows isn't HTTP */
		llhttp_resume(&c->parser);
		if (c->state != CONN_OPEN) {
			/* closed while the request was read (a failed 100 Continue write) */
			req_set_state(&c->req, SG_REQ_NONE);
			return n;
		}
		sg__handle(&c->req);
		return used;
	}
	default:
		respond_parse_error(c, e);
		return n;
	}
}

/* Parse buffered pipelined requests while no request is being handled. */
static void conn_process(sg_conn_t *c)
{
	if (c->in_process)
		return;
	c->in_process = 1;
	while (c->state == CONN_OPEN && c->pending.len > 0 &&
	       (c->req.state == SG_REQ_NONE || c->req.state == SG_REQ_READING)) {
		size_t used = feed(c, c->pending.data, c->pending.len);
		sg_buf_consume(&c->pending, used);
	}
	c->in_process = 0;
	/* Room again (a request being read from the buffer may need more bytes). */
	if (c->read_stopped && c->state == CONN_OPEN && c->pending.len < MAX_PENDING &&
	    c->req.state != SG_REQ_HANDLING && c->req.state != SG_REQ_STREAMING) {
		c->read_stopped = 0;
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
			conn_close(c);
	}
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	sg_conn_t *c = h->data;
	sg_server_t *srv = c->srv;

	if (!srv->rbuf_busy) {
		srv->rbuf_busy = 1;
		*buf = uv_buf_init(srv->rbuf, sizeof(srv->rbuf));
		return;
	}
	/* Only one read is in progress at a time on one loop, so this is rare. */
	*buf = uv_buf_init(malloc(65536), 65536);
	if (buf->base == NULL)
		buf->len = 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	sg_conn_t *c = s->data;
	sg_server_t *srv = c->srv;
	const char *p = buf->base;
	size_t n = nread > 0 ? (size_t)nread : 0;

	if (nread < 0) {
		/* EOF or error. A client that goes away cancels its request. */
		if (c->state != CONN_CLOSING)
			conn_close(c);
		goto out;
	}
	if (c->state == CONN_LINGER || c->state == CONN_SHUTDOWN || n == 0)
		goto out;
	if (c->pending.len > 0 || c->in_process ||
	    c->req.state == SG_REQ_HANDLING || c->req.state == SG_REQ_STREAMING) {
		/* Busy: keep the bytes for later; past the mark, stop reading. */
		if (sg_buf_append(&c->pending, p, n) != 0) {
			conn_close(c); /* never drop bytes of a stream silently */
			goto out;
		}
		if (c->pending.len >= MAX_PENDING) {
			uv_read_stop(s);
			c->read_stopped = 1;
		}
		conn_process(c);
		goto out;
	}
	sg__server_kick(srv);
	c->in_process = 1;
	while (n > 0 && c->state == CONN_OPEN &&
	       (c->req.state == SG_REQ_NONE || c->req.state == SG_REQ_READING)) {
		size_t used = feed(c, p, n);
		p += used;
		n -= used;
	}
	c->in_process = 0;
	if (n > 0 && c->state == CONN_OPEN) {
		if (sg_buf_append(&c->pending, p, n) != 0) {
			conn_close(c);
		} else {
			if (c->pending.len >= MAX_PENDING) {
				uv_read_stop(s);
				c->read_stopped = 1;
			}
			conn_process(c);
		}
	}
out:
	if (buf->base == srv->rbuf)
		srv->rbuf_busy = 0;
	else
		free(buf->base);
}

/* --- accepting ------------------------------------------------------------------------ */

static void on_connection(uv_stream_t *l, int status)
{
	sg_server_t *srv = l->data;
	const sg_limits_t *lim = &srv->cfg->limits;
	sg_conn_t *c;

	if (status < 0) {
		sg_log_warn("accept: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		sg_log_error("accept: out of memory");
		return;
	}
	c->srv = srv;
	uv_tcp_init(srv->loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
		c->handles_open = 1;
		c->state = CONN_CLOSING;
		uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
		return;
	}
	uv_timer_init(srv->loop, &c->timer);
	c->timer.data = c;
	uv_tcp_nodelay(&c->tcp, 1);
	llhttp_init(&c->parser, HTTP_REQUEST, &srv->parser_settings);
	c->parser.data = c;
	c->req.conn = c;
	sg_buf_init(&c->req.url, (size_t)lim->max_url_bytes);
	sg_buf_init(&c->req.hdrs, (size_t)lim->max_header_bytes);
	sg_buf_init(&c->req.body, (size_t)lim->max_body_bytes);
	/* Reads stop at MAX_PENDING; the cap leaves room for the read in progress. */
	sg_buf_init(&c->pending, MAX_PENDING + (size_t)lim->max_body_bytes + (256u << 10));
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;

	if (srv->nconns >= (size_t)lim->max_connections) {
		c->overflow = 1;
		c->req.keep_alive = 0;
		set_request_id(&c->req);
		sg_log_warn("connection limit (%ld) reached: refusing a connection", lim->max_connections);
		uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
		sg__respond_error(&c->req, 503, "server_error", "overloaded",
		                  "too many connections (limit %ld)", lim->max_connections);
		return;
	}
	srv->nconns++;
	timer_arm(c, TIMER_IDLE, (uint64_t)lim->idle_timeout_ms);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
		conn_close(c);
}

/* --- server lifecycle --------------------------------------------------------------------- */

static void noop_close(uv_handle_t *h)
{
	(void)h;
}

static void server_maybe_done(sg_server_t *srv)
{
	if (!srv->draining || srv->conns != NULL || srv->upstream == NULL)
		return;
	sg_log_info("drained: all connections closed");
	uv_timer_stop(&srv->drain_timer);
	uv_close((uv_handle_t *)&srv->drain_timer, noop_close);
	uv_idle_stop(&srv->spin);
	uv_close((uv_handle_t *)&srv->spin, noop_close);
	if (srv->cache) {
		uv_timer_stop(&srv->maint_timer);
		uv_close((uv_handle_t *)&srv->maint_timer, noop_close);
		uv_timer_stop(&srv->hits_timer);
		uv_close((uv_handle_t *)&srv->hits_timer, noop_close);
	}
	sg_upstream_close(srv->upstream);
	srv->upstream = NULL;
}

static void on_drain_timeout(uv_timer_t *t)
{
	sg_server_t *srv = t->data;
	sg_log_warn("drain timeout: closing %zu connection(s) with work in flight", srv->nconns);
	while (srv->conns)
		conn_close(srv->conns);
}

void sg_server_drain(sg_server_t *srv)
{
	if (srv->draining)
		return;
	srv->draining = 1;
	uv_idle_stop(&srv->spin);
	sg_log_info("draining: no new connections; waiting up to %ld ms for %zu connection(s)",
	            srv->cfg->limits.drain_timeout_ms, srv->nconns);
	uv_close((uv_handle_t *)&srv->listener, noop_close);
	/* Idle connections go now; busy ones close after their reply. */
	for (sg_conn_t *c = srv->conns, *next; c; c = next) {
		next = c->next;
		if (c->req.state == SG_REQ_NONE && c->pending.len == 0)
			conn_close(c);
	}
	uv_timer_start(&srv->drain_timer, on_drain_timeout,
	               (uint64_t)srv->cfg->limits.drain_timeout_ms, 0);
	server_maybe_done(srv);
}

static void sync_work(uv_work_t *w)
{
	sg_server_t *srv = w->data;
	srv->sync_rc = sg_cache_sync(srv->cache);
}

static void sync_done(uv_work_t *w, int status)
{
	sg_server_t *srv = w->data;
	srv->syncing = 0;
	if (status == 0 && srv->sync_rc)
		sg_log_warn("cache: fsync failed: %s", sg_strerror(srv->sync_rc));
}

/* Hit counters go to the store in small writes: see sg_cache_flush_hits(). */
static void on_hits_flush(uv_timer_t *t)
{
	sg_server_t *srv = t->data;
	sg_cache_flush_hits(srv->cache);
}

void sg__server_hit_counted(sg_server_t *srv)
{
	/* one shot, armed by the first hit after a flush: an idle gateway sleeps */
	if (srv->cache && !srv->draining && !uv_is_active((uv_handle_t *)&srv->hits_timer))
		uv_timer_start(&srv->hits_timer, on_hits_flush, HITS_FLUSH_MS, 0);
}

static void on_maintenance(uv_timer_t *t)
{
	sg_server_t *srv = t->data;
	int64_t now = (int64_t)time(NULL);
	int checkpoint = now - srv->last_checkpoint_s >= srv->cfg->cache.checkpoint_interval_s;
	int rc = sg_cache_maintain(srv->cache, now, checkpoint);
	if (rc)
		sg_log_warn("cache maintenance: %s", sg_strerror(rc));
	if (checkpoint)
		srv->last_checkpoint_s = now;
	/* Committed data survives a crash of the process as it is; the fsync
	 * guards against power loss, on a thread of its own. */
	if (!srv->syncing && !srv->draining) {
		srv->sync_work.data = srv;
		if (uv_queue_work(srv->loop, &srv->sync_work, sync_work, sync_done) == 0)
			srv->syncing = 1;
	}
}

int sg_server_new(sg_server_t **out, uv_loop_t *loop, const sg_config_t *cfg,
                  sg_cache_t *cache, sg_embed_local_t *embedder)
{
	struct sockaddr_storage addr;
	sg_server_t *srv;
	int rc, ndeps = 0;

	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return SG_ENOMEM;
	srv->loop = loop;
	srv->cfg = cfg;
	srv->cache = cache;
	srv->embedder = embedder;
	srv->stats = sg_stats_new();
	if (srv->stats == NULL) {
		free(srv);
		return SG_ENOMEM;
	}
	srv->id_seed = (uint32_t)(sg_now_us() ^ ((uint64_t)uv_os_getpid() << 16));

	llhttp_settings_init(&srv->parser_settings);
	srv->parser_settings.on_message_begin = on_message_begin;
	srv->parser_settings.on_url = on_url;
	srv->parser_settings.on_header_field = on_header_field;
	srv->parser_settings.on_header_value = on_header_value;
	srv->parser_settings.on_header_value_complete = on_header_value_complete;
	srv->parser_settings.on_headers_complete = on_headers_complete;
	srv->parser_settings.on_body = on_body;
	srv->parser_settings.on_message_complete = on_message_complete;

	rc = sg_upstream_new(&srv->upstream, loop);
	if (rc)
		goto fail_upstream;
	srv->router = sg_router_new(cfg, sg_now_us() ^ srv->id_seed);
	if (srv->router == NULL) {
		rc = SG_ENOMEM;
		goto fail_headers;
	}

	/* One prebuilt upstream header list per deployment. */
	for (size_t i = 0; i < cfg->nmodels; i++)
		ndeps += (int)cfg->models[i].ndeployments;
	srv->ndeps = (size_t)ndeps;
	srv->dep_headers = calloc((size_t)ndeps, sizeof(*srv->dep_headers));
	if (srv->dep_headers == NULL) {
		rc = SG_ENOMEM;
		goto fail_headers;
	}
	ndeps = 0;
	for (size_t i = 0; i < cfg->nmodels; i++) {
		for (size_t j = 0; j < cfg->models[i].ndeployments; j++) {
			const sg_deployment_t *d = &cfg->models[i].deployments[j];
			char auth[1024];
			if (d->api_key)
				/* Azure OpenAI authenticates with an api-key header. */
				snprintf(auth, sizeof(auth), strcmp(d->provider, "azure") == 0
				                                 ? "api-key: %s" : "Authorization: Bearer %s",
				         d->api_key);
			srv->dep_headers[ndeps] = sg__json_headers(d->api_key ? auth : NULL,
			                                           (const char *const *)d->headers,
			                                           d->nheaders);
			if (srv->dep_headers[ndeps++] == NULL) {
				rc = SG_ENOMEM;
				goto fail_headers;
			}
		}
	}

	if (cache && embedder == NULL) {
		const sg_embedder_config_t *ec = &cfg->cache.embedder;
		char auth[1024];
		snprintf(srv->embed_url, sizeof(srv->embed_url), "%s/embeddings", ec->base_url);
		if (ec->api_key)
			snprintf(auth, sizeof(auth), "Authorization: Bearer %s", ec->api_key);
		srv->embed_headers = sg__json_headers(ec->api_key ? auth : NULL, NULL, 0);
		if (srv->embed_headers == NULL) {
			rc = SG_ENOMEM;
			goto fail_headers;
		}
	}
	if (uv_ip4_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in *)&addr) != 0 &&
	    uv_ip6_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in6 *)&addr) != 0) {
		sg_log_error("listen: \"%s\" is not an IPv4 or IPv6 address", cfg->listen_host);
		rc = SG_EINVAL;
		goto fail_headers;
	}
	uv_tcp_init(loop, &srv->listener);
	srv->listener.data = srv;
	rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
	if (rc != 0) {
		sg_log_error("listen on %s:%d: %s", cfg->listen_host, cfg->listen_port, uv_strerror(rc));
		uv_close((uv_handle_t *)&srv->listener, noop_close);
		rc = SG_EIO;
		goto fail_headers;
	}
	int len = sizeof(addr);
	uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&addr, &len);
	srv->port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
	                                              : ((struct sockaddr_in *)&addr)->sin_port);
	uv_timer_init(loop, &srv->drain_timer);
	srv->drain_timer.data = srv;
	uv_idle_init(loop, &srv->spin);
	srv->spin.data = srv;
	if (cache) {
		srv->last_checkpoint_s = (int64_t)time(NULL);
		uv_timer_init(loop, &srv->maint_timer);
		srv->maint_timer.data = srv;
		uv_timer_start(&srv->maint_timer, on_maintenance, 1000, 1000);
		uv_timer_init(loop, &srv->hits_timer);
		srv->hits_timer.data = srv;
	}
	*out = srv;
	return 0;

fail_headers:
	sg_upstream_close(srv->upstream);
	srv->upstream = NULL;
fail_upstream:
	srv->draining = 1;
	*out = srv;
	return rc;
}

int sg_server_port(const sg_server_t *srv)
{
	return srv->port;
}

void sg_server_free(sg_server_t *srv)
{
	if (srv == NULL)
		return;
	size_t k = 0;
	for (size_t i = 0; i < srv->cfg->nmodels; i++)
		for (size_t j = 0; j < srv->cfg->models[i].ndeployments; j++, k++)
			if (srv->dep_headers)
				sg_upstream_headers_free(srv->dep_headers[k]);
	free(srv->dep_headers);
	sg_upstream_headers_free(srv->embed_headers);
	sg_router_free(srv->router);
	sg_stats_free(srv->stats);
	free(srv);
}
