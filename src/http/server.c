/* The HTTP/1.1 front end: accept, read, parse with llhttp, enforce limits,
 * hand complete requests to the handlers, write responses.
 *
 * One request per connection is handled at a time. Pipelined requests wait
 * unparsed in the connection's buffer (llhttp is paused at the end of each
 * message), so responses always leave in request order. Bytes are parsed
 * straight out of a server-wide read buffer; only what is left over when a
 * request is handed off is copied.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>

#include "semgate/hash.h"
#include "semgate/log.h"
#include "fbuf_int.h"
#include "fsm.h"
#include "openai_wire.h"
#include "server_int.h"

#define LINGER_MS 2000           /* read and discard after a closing reply */
#define MAX_PENDING (1u << 20)   /* pipelined bytes buffered while busy */
#define PROCESS_BATCH 64         /* pipelined requests answered per loop turn and connection */
#define SWEEP_MS 1000            /* slow clients and stalled writers are checked this often */
#define MIN_RATE_GRACE_MS 5000   /* a request gets this long before its data rate counts */
#define OVERFLOW_TIMEOUT_MS 2000 /* a connection beyond the limit must ask within this */
#define OVERFLOW_KEY_SALT 0x9E3779B97F4A7C15ULL /* a client's overflow connections, counted apart */
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
	int read_stopped;         /* not reading: pipelined bytes or unsent output past their marks */
	int holds;                /* thread-pool work still referring to the connection */
	int handles_closed;       /* both handles closed: free once holds is 0 */
	int on_ready;             /* on srv->ready: pipelined requests wait for the loop */
	uint64_t client_key;      /* hash of the peer address, counted in srv->clients (0: not) */
	uint64_t req_bytes;       /* bytes of the current request parsed so far (its rate) */
	size_t last_write_queue;  /* the socket's write queue at the last sweep (progress) */
	uint64_t req_start_us;    /* when the current request's first byte was parsed */
	uint64_t write_progress_us; /* last time unsent output shrank (or began) */
	sg_conn_t *prev, *next;   /* srv->conns list */
	sg_conn_t *ready_prev, *ready_next; /* srv->ready list */
};

typedef struct wreq {
	uv_write_t w;    /* libuv request */
	sg_conn_t *conn; /* owner */
	size_t len;      /* bytes queued: data, then owned */
	char *owned;     /* a body handed over by the caller (freed when written), or NULL */
	char data[];     /* copy of what uv_try_write could not send (heads) */
} wreq_t;

static void conn_process(sg_conn_t *c);
static void conn_close(sg_conn_t *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void req_finish(sg_req_t *req);
static void set_request_id(sg_req_t *r);
static void ready_unlink(sg_conn_t *c);
static void client_uncount(sg_conn_t *c);

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

/* A connection only moves towards its close: open -> shutdown (flushing its
 * last reply) -> linger (reading what the client still sends) -> closing. */
static const char *const conn_state_names[CONN__LAST] = {"open", "shutdown", "linger", "closing"};
static const uint32_t conn_next[CONN__LAST] = {
	[CONN_OPEN] = SG_FSM_TO(CONN_SHUTDOWN) | SG_FSM_TO(CONN_CLOSING),
	[CONN_SHUTDOWN] = SG_FSM_TO(CONN_LINGER) | SG_FSM_TO(CONN_CLOSING),
	[CONN_LINGER] = SG_FSM_TO(CONN_CLOSING),
	[CONN_CLOSING] = 0,
};
static const sg_fsm_t conn_fsm = {"connection", conn_state_names, conn_next, CONN__LAST};

static void conn_set_state(sg_conn_t *c, enum conn_state s)
{
	sg_fsm_move(&conn_fsm, c, c->state, s);
	c->state = s;
}

/* A request is read, handled, maybe streamed, and done; a close ends it in
 * any state. */
static const char *const req_state_names[SG_REQ__LAST] = {"none", "reading", "handling",
                                                          "streaming"};
static const uint32_t req_next[SG_REQ__LAST] = {
	[SG_REQ_NONE] = SG_FSM_TO(SG_REQ_NONE) | SG_FSM_TO(SG_REQ_READING),
	[SG_REQ_READING] = SG_FSM_TO(SG_REQ_NONE) | SG_FSM_TO(SG_REQ_HANDLING),
	[SG_REQ_HANDLING] = SG_FSM_TO(SG_REQ_NONE) | SG_FSM_TO(SG_REQ_STREAMING),
	[SG_REQ_STREAMING] = SG_FSM_TO(SG_REQ_NONE),
};
static const sg_fsm_t req_fsm = {"request", req_state_names, req_next, SG_REQ__LAST};

static void req_set_state(sg_req_t *req, enum sg_req_state s)
{
	sg_fsm_move(&req_fsm, req, req->state, s);
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

static void conn_schedule(sg_conn_t *c);
static void conn_update_read(sg_conn_t *c);

/* Unsent output at which a connection is backlogged: its requests are read
 * and parsed no further until the client takes its answers. */
static size_t backlog_mark(const sg_conn_t *c)
{
	return (size_t)c->srv->cfg->limits.max_client_backlog_bytes;
}

static void held_add(sg_server_t *srv, size_t n)
{
	srv->held_bytes += n;
}

static void held_sub(sg_server_t *srv, size_t n)
{
	assert(srv->held_bytes >= n);
	srv->held_bytes -= n;
}

void sg__server_held(sg_server_t *srv, long delta)
{
	if (delta >= 0)
		held_add(srv, (size_t)delta);
	else
		held_sub(srv, (size_t)-delta);
}

static void on_write(uv_write_t *w, int status)
{
	wreq_t *wr = (wreq_t *)w;
	sg_conn_t *c = wr->conn;

	c->write_queued -= wr->len;
	held_sub(c->srv, wr->len);
	c->write_progress_us = sg_now_us();
	free(wr->owned);
	free(wr);
	if (status < 0) {
		if (c->state != CONN_CLOSING)
			conn_close(c);
		return;
	}
	if (c->req.state == SG_REQ_STREAMING && c->write_queued < SG_STREAM_HIGH_WATER / 2)
		sg__handle_writable(&c->req);
	/* Drained below half the mark: the client takes its answers again. */
	if (c->state == CONN_OPEN && c->write_queued < backlog_mark(c) / 2) {
		conn_update_read(c);
		conn_schedule(c);
	}
}

/* Write bufs in order: as much as possible right away, the rest queued.
 * owned, when not NULL, is the last buffer's memory (malloc'd), handed over:
 * what of it cannot be sent at once is queued without a copy and it is freed
 * once written (or now). Returns 0 or a negative SG_E* code (the connection
 * is then closing). */
static int conn_write_owned(sg_conn_t *c, uv_buf_t *bufs, unsigned nbufs, char *owned)
{
	size_t total = 0, done = 0;
	int n = 0;

	assert(owned == NULL || (nbufs > 0 && bufs[nbufs - 1].base == owned));
	if (c->state != CONN_OPEN) {
		free(owned);
		return SG_ECANCELED;
	}
	for (unsigned i = 0; i < nbufs; i++)
		total += bufs[i].len;
	if (c->write_queued == 0) {
		n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
		if (n < 0 && n != UV_EAGAIN) {
			free(owned);
			conn_close(c);
			return SG_EIO;
		}
		done = n > 0 ? (size_t)n : 0;
		if (done == total) {
			free(owned);
			return 0;
		}
	}
	/* What is left: a copy of the unsent heads, the owned tail by reference. */
	size_t owned_len = owned ? bufs[nbufs - 1].len : 0;
	size_t owned_off = 0, copy_len;
	unsigned ncopy_bufs = owned ? nbufs - 1 : nbufs;
	if (done >= total - owned_len) {
		owned_off = done - (total - owned_len);
		copy_len = 0;
	} else {
		copy_len = total - owned_len - done;
	}
	wreq_t *wr = malloc(sizeof(*wr) + copy_len);
	if (wr == NULL) {
		free(owned);
		conn_close(c);
		return SG_ENOMEM;
	}
	wr->conn = c;
	wr->len = total - done;
	wr->owned = owned;
	char *o = wr->data;
	size_t skip = done;
	for (unsigned i = 0; i < ncopy_bufs && copy_len; i++) {
		if (skip >= bufs[i].len) {
			skip -= bufs[i].len;
			continue;
		}
		memcpy(o, bufs[i].base + skip, bufs[i].len - skip);
		o += bufs[i].len - skip;
		skip = 0;
	}
	uv_buf_t b[2];
	unsigned nb = 0;
	if (copy_len)
		b[nb++] = uv_buf_init(wr->data, (unsigned)copy_len);
	if (owned && owned_len > owned_off)
		b[nb++] = uv_buf_init(owned + owned_off, (unsigned)(owned_len - owned_off));
	if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, b, nb, on_write) != 0) {
		free(wr->owned);
		free(wr);
		conn_close(c);
		return SG_EIO;
	}
	if (c->write_queued == 0)
		c->write_progress_us = sg_now_us();
	c->write_queued += wr->len;
	held_add(c->srv, wr->len);
	return 0;
}

static int conn_write(sg_conn_t *c, uv_buf_t *bufs, unsigned nbufs)
{
	return conn_write_owned(c, bufs, nbufs, NULL);
}

/* --- closing -------------------------------------------------------------------- */

static void conn_free(sg_conn_t *c)
{
	if (c->req.conn)
		c->srv->handler->release(&c->req); /* what a finished request still holds */
	sg_buf_free(&c->req.url);
	sg_buf_free(&c->req.hdrs);
	sg_buf_free(&c->req.body);
	free(c->req.hdr);
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

/* --- connections per client ----------------------------------------------------- */

static uint64_t client_key_of(const uv_tcp_t *tcp)
{
	struct sockaddr_storage a;
	int len = sizeof(a);

	if (uv_tcp_getpeername(tcp, (struct sockaddr *)&a, &len) != 0)
		return 0;
	uint64_t k;
	if (a.ss_family == AF_INET)
		k = sg_hash64(&((struct sockaddr_in *)&a)->sin_addr, 4, 4);
	else if (a.ss_family == AF_INET6) /* its /64: one host has a whole one */
		k = sg_hash64(&((struct sockaddr_in6 *)&a)->sin6_addr, 8, 6);
	else
		return 0;
	return k ? k : 1; /* 0 means "not counted" */
}

static size_t client_count(sg_server_t *srv, uint64_t key)
{
	return (size_t)(uintptr_t)sg__u64map_get(&srv->clients, key);
}

/* Count c against its client; 0, or SG_ENOMEM (then it is not counted). */
static int client_count_add(sg_conn_t *c, uint64_t key)
{
	sg_server_t *srv = c->srv;
	size_t n = client_count(srv, key) + 1;
	if (sg__u64map_put(&srv->clients, key, (void *)(uintptr_t)n) != 0)
		return SG_ENOMEM;
	c->client_key = key;
	return 0;
}

static void client_uncount(sg_conn_t *c)
{
	sg_server_t *srv = c->srv;
	if (c->client_key == 0)
		return;
	size_t n = client_count(srv, c->client_key);
	assert(n > 0);
	if (n <= 1)
		sg__u64map_del(&srv->clients, c->client_key);
	else
		sg__u64map_put(&srv->clients, c->client_key, (void *)(uintptr_t)(n - 1));
	c->client_key = 0;
}

/* --- pipelined requests, from the loop ------------------------------------------------ */

/*
 * A connection whose next pipelined request can be parsed is put on a list
 * that the loop drains in its idle phase, never from inside a respond call:
 * nothing that answers a request has to care what the next one does, and a
 * client with thousands of requests queued gets PROCESS_BATCH answered per
 * turn while every other connection (and /healthz) gets its turn too.
 */
static void ready_unlink(sg_conn_t *c)
{
	sg_server_t *srv = c->srv;
	if (!c->on_ready)
		return;
	if (c->ready_prev)
		c->ready_prev->ready_next = c->ready_next;
	else
		srv->ready = c->ready_next;
	if (c->ready_next)
		c->ready_next->ready_prev = c->ready_prev;
	else
		srv->ready_tail = c->ready_prev;
	c->ready_prev = c->ready_next = NULL;
	c->on_ready = 0;
	srv->nready--;
}

static int conn_can_parse(const sg_conn_t *c)
{
	return c->state == CONN_OPEN &&
	       (c->req.state == SG_REQ_NONE || c->req.state == SG_REQ_READING) &&
	       c->write_queued < backlog_mark(c);
}

static void on_ready(uv_idle_t *h)
{
	sg_server_t *srv = h->data;
	/* Those queued before this turn; one that queues itself again goes last. */
	for (size_t n = srv->nready; n > 0 && srv->ready; n--) {
		sg_conn_t *c = srv->ready;
		ready_unlink(c);
		conn_process(c);
	}
	if (srv->ready == NULL)
		uv_idle_stop(h);
}

static void conn_schedule(sg_conn_t *c)
{
	sg_server_t *srv = c->srv;
	if (c->on_ready || c->in_process || c->pending.len == 0 || !conn_can_parse(c))
		return;
	c->on_ready = 1;
	c->ready_next = NULL;
	c->ready_prev = srv->ready_tail;
	if (srv->ready_tail)
		srv->ready_tail->ready_next = c;
	else
		srv->ready = c;
	srv->ready_tail = c;
	srv->nready++;
	if (!uv_is_active((uv_handle_t *)&srv->ready_idle))
		uv_idle_start(&srv->ready_idle, on_ready);
}

/* Read from the client only while there is room for what it sends and it
 * takes the answers it already has. */
static void conn_update_read(sg_conn_t *c)
{
	if (c->state != CONN_OPEN)
		return;
	int want = c->pending.len < MAX_PENDING && c->write_queued < backlog_mark(c);
	if (want && c->read_stopped) {
		c->read_stopped = 0;
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
			conn_close(c);
	} else if (!want && !c->read_stopped) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->read_stopped = 1;
	}
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
	else
		srv->noverflow--;
	ready_unlink(c);
	client_uncount(c);
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
			sg__respond_error(&c->req, SG_CE_REQUEST_TIMEOUT,
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
		if (c->write_queued > 0 && c->state == CONN_OPEN) {
			/* Still sending its answers: the sweep closes it if that stalls. */
			timer_arm(c, TIMER_IDLE, (uint64_t)c->srv->cfg->limits.idle_timeout_ms);
			return;
		}
		conn_close(c);
		return;
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
	if (req->resp_hdrs_put)
		req->resp_hdrs_put(req, &o);
	if (req->resp_hdrs_len)
		sg__fbuf_mem(&o, req->resp_hdrs, req->resp_hdrs_len);
	sg__fbuf_mem(&o, "\r\n", 2);
	return (int)o.len;
}

static void respond(sg_req_t *req, int status, const char *ctype, const char *body, size_t len,
                    const char *extra, char *owned)
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
	if (owned && len == 0) {
		free(owned);
		owned = NULL;
	}
	conn_write_owned(req->conn, bufs, len ? 2 : 1, owned);
	req_finish(req);
}

void sg__respond(sg_req_t *req, int status, const char *ctype, const char *body, size_t len,
                 const char *extra)
{
	respond(req, status, ctype, body, len, extra, NULL);
}

void sg__respond_owned(sg_req_t *req, int status, const char *ctype, char *body, size_t len,
                       const char *extra)
{
	respond(req, status, ctype, body, len, extra, body);
}

static const sg_client_error_info_t client_errors[SG_CE__LAST] = {
#define SG__CE_INFO(name, status, type, code) [SG_CE_##name] = {status, type, code},
	SG_CLIENT_ERRORS(SG__CE_INFO)
#undef SG__CE_INFO
};

const sg_client_error_info_t *sg__client_error(enum sg_client_error e)
{
	assert(e >= 0 && e < SG_CE__LAST);
	return &client_errors[e];
}

static void respond_error_v(sg_req_t *req, enum sg_client_error e, int status, const char *extra,
                            const char *fmt, va_list ap)
{
	const sg_client_error_info_t *ce = sg__client_error(e);
	char msg[1024];
	sg_buf_t b;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	sg_buf_init(&b, 0);
	if (sg__error_body(&b, msg, strlen(msg), ce->type, ce->code) != 0 ||
	    sg_buf_puts(&b, "\n") != 0) {
		sg_buf_free(&b);
		conn_close(req->conn);
		return;
	}
	sg__respond(req, status ? status : ce->status, "application/json", b.data, b.len, extra);
	sg_buf_free(&b);
}

void sg__respond_error(sg_req_t *req, enum sg_client_error e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	respond_error_v(req, e, 0, NULL, fmt, ap);
	va_end(ap);
}

void sg__respond_error_h(sg_req_t *req, enum sg_client_error e, const char *extra,
                         const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	respond_error_v(req, e, 0, extra, fmt, ap);
	va_end(ap);
}

void sg__respond_error_status(sg_req_t *req, enum sg_client_error e, int status,
                              const char *extra, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	respond_error_v(req, e, status, extra, fmt, ap);
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
	/* answered: what every answer to it carried is not the next one's */
	req->resp_hdrs = NULL;
	req->resp_hdrs_len = 0;
	req->resp_hdrs_put = NULL;
	if (c->state != CONN_OPEN)
		return;
	sg__server_kick(c->srv);
	if (!req->keep_alive || c->srv->draining) {
		conn_shutdown(c);
		return;
	}
	timer_arm(c, TIMER_IDLE, (uint64_t)c->srv->cfg->limits.idle_timeout_ms);
	/* The next pipelined request starts from the loop, not from here. */
	conn_schedule(c);
	conn_update_read(c);
}

void sg__req_retry_after(sg_req_t *req, uint64_t ms)
{
	timer_arm(req->conn, TIMER_RETRY, ms);
}

/* Whether a[0..n) and b[0..n) are the same but for the case of ASCII
 * letters (header names: tokens, no locale): a loop of a few instructions a
 * byte, where strncasecmp's call and locale cost more than the rest of a
 * lookup. */
static int same_name(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x != y && ((x | 0x20) != (y | 0x20) || (unsigned)((x | 0x20) - 'a') > 'z' - 'a'))
			return 0;
	}
	return 1;
}

int sg__req_header(const sg_req_t *req, const char *name, sg_iovec_t *out)
{
	size_t nlen = strlen(name);
	for (size_t i = 0; i < req->nhdr; i++) {
		const sg_hdr_t *h = &req->hdr[i];
		if (h->name_len == nlen && same_name(req->hdrs.data + h->name_off, name, nlen)) {
			out->base = req->hdrs.data + h->value_off;
			out->len = h->value_len;
			/* a field value's trailing whitespace is not part of it (RFC 9110
			 * 5.5; llhttp drops the leading) */
			while (out->len && (out->base[out->len - 1] == ' ' || out->base[out->len - 1] == '\t'))
				out->len--;
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
	c->req_start_us = sg_now_us();
	c->req_bytes = 0;
	timer_arm(c, TIMER_REQUEST, c->overflow ? SG_MIN((uint64_t)OVERFLOW_TIMEOUT_MS,
	                                                 (uint64_t)c->srv->cfg->limits.request_timeout_ms)
	                                        : (uint64_t)c->srv->cfg->limits.request_timeout_ms);
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	sg_conn_t *c = CONN(p);
	c->req_bytes += n;
	return sg_buf_append(&c->req.url, at, n) ? fail(c, 414) : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	sg_conn_t *c = CONN(p);
	sg_req_t *r = &c->req;

	c->req_bytes += n;
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

	c->req_bytes += n;
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
	r->keep_alive = (uint8_t)llhttp_should_keep_alive(p) && !c->overflow;
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
	c->req_bytes += n;
	return sg_buf_append(&c->req.body, at, n) ? fail(c, 413) : 0;
}

static int on_message_complete(llhttp_t *p)
{
	sg_conn_t *c = CONN(p);
	timer_stop(c);
	c->req_start_us = 0;
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
		sg__respond_error(r, SG_CE_BODY_TOO_LARGE,
		                  "request body exceeds %ld bytes", c->srv->cfg->limits.max_body_bytes);
		break;
	case 414:
		sg__respond_error(r, SG_CE_URI_TOO_LONG,
		                  "request target exceeds %ld bytes", c->srv->cfg->limits.max_url_bytes);
		break;
	case 417:
		sg__respond_error(r, SG_CE_EXPECTATION_FAILED,
		                  "only \"Expect: 100-continue\" is supported");
		break;
	case 431:
		sg__respond_error(r, SG_CE_HEADERS_TOO_LARGE,
		                  "request headers exceed %ld bytes or %ld fields",
		                  c->srv->cfg->limits.max_header_bytes, c->srv->cfg->limits.max_headers);
		break;
	case 503:
		sg__respond_error(r, SG_CE_OVERLOADED, "out of memory");
		break;
	default:
		sg__respond_error(r, SG_CE_BAD_REQUEST,
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

/* Parse buffered pipelined requests while no request is being handled and
 * the client takes its answers, PROCESS_BATCH at most: the rest wait for the
 * loop's next turn. */
static void conn_process(sg_conn_t *c)
{
	int batch = PROCESS_BATCH;

	if (c->in_process)
		return;
	c->in_process = 1;
	/* One move of what is left per call, not per request (pending may hold
	 * a megabyte of small requests). */
	size_t off = 0;
	while (off < c->pending.len && conn_can_parse(c) && batch > 0) {
		int was_reading = c->req.state == SG_REQ_READING;
		size_t used = feed(c, c->pending.data + off, c->pending.len - off);
		off += used;
		if (!was_reading || c->req.state != SG_REQ_READING)
			batch--;
		if (used == 0)
			break;
	}
	if (c->state != CONN_CLOSING)
		sg_buf_consume(&c->pending, off);
	c->in_process = 0;
	conn_schedule(c); /* more to do: next turn */
	conn_update_read(c);
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
	if (c->pending.len == 0 && !c->in_process && conn_can_parse(c)) {
		/* The common case: parse straight out of the read buffer. */
		sg__server_kick(srv);
		c->in_process = 1;
		int batch = PROCESS_BATCH;
		while (n > 0 && conn_can_parse(c) && batch > 0) {
			int was_reading = c->req.state == SG_REQ_READING;
			size_t used = feed(c, p, n);
			p += used;
			n -= used;
			if (!was_reading || c->req.state != SG_REQ_READING)
				batch--;
			if (used == 0)
				break;
		}
		c->in_process = 0;
	}
	/* Busy, backlogged or out of turn: keep the rest for later. */
	if (n > 0 && c->state == CONN_OPEN) {
		if (sg_buf_append(&c->pending, p, n) != 0) {
			conn_close(c); /* cannot happen within the marks; never drop bytes */
			goto out;
		}
		conn_schedule(c);
	}
	conn_update_read(c);
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
		/* EMFILE and the like: libuv accepts and closes the connection itself. */
		srv->refused_connections++;
		sg_log_limited(&srv->refused_log, SG_LOG_WARN, "accept: %s%s", uv_strerror(status),
		               status == UV_EMFILE || status == UV_ENFILE
		                       ? " (file-descriptor limit reached: connection refused; raise "
		                         "`ulimit -n` or lower limits.max_connections)"
		                       : "");
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		sg_log_limited(&srv->refused_log, SG_LOG_ERROR, "accept: out of memory");
		return;
	}
	c->srv = srv;
	uv_tcp_init(srv->loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
		c->handles_open = 1;
		conn_set_state(c, CONN_CLOSING);
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

	const char *refuse = NULL;
	uint64_t key = lim->max_connections_per_client > 0 ? client_key_of(&c->tcp) : 0;
	if (srv->nconns >= srv->max_conns)
		refuse = srv->max_conns < (size_t)lim->max_connections
		                 ? "connection limit of the file-descriptor limit"
		                 : "connection limit";
	else if (key && client_count(srv, key) >= (size_t)lim->max_connections_per_client)
		refuse = "per-client connection limit";
	else if (key && client_count_add(c, key) != 0)
		refuse = "out of memory";
	if (refuse) {
		/*
		 * Beyond a limit. Up to limits.health_connections such connections are
		 * still read, briefly: an orchestrator's /healthz and /readyz are answered
		 * (a busy gateway is not a dead one), anything else gets 503. Past those,
		 * the connection is closed at once.
		 */
		c->overflow = 1;
		srv->noverflow++;
		srv->refused_connections++;
		sg_log_limited(&srv->refused_log, SG_LOG_WARN, "%s reached (%ld): refusing a connection",
		               refuse, strncmp(refuse, "connection limit", 16) == 0
		                               ? (long)srv->max_conns
		                               : lim->max_connections_per_client);
		/* One client cannot take every one of those: a flood from one address
		 * leaves room for the orchestrator's probes from another. */
		uint64_t okey = (key ? key : client_key_of(&c->tcp)) ^ OVERFLOW_KEY_SALT;
		size_t per_client = SG_MAX((size_t)2, srv->max_overflow / 4);
		if (srv->noverflow > srv->max_overflow || client_count(srv, okey) >= per_client ||
		    client_count_add(c, okey) != 0) {
			conn_close(c);
			return;
		}
		c->req.keep_alive = 0;
		timer_arm(c, TIMER_REQUEST, SG_MIN((uint64_t)OVERFLOW_TIMEOUT_MS,
		                                   (uint64_t)lim->request_timeout_ms));
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
			conn_close(c);
		return;
	}
	srv->nconns++;
	timer_arm(c, TIMER_IDLE, (uint64_t)lim->idle_timeout_ms);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
		conn_close(c);
}

int sg__req_refused(sg_req_t *req)
{
	sg_conn_t *c = req->conn;
	sg_server_t *srv = c->srv;
	const sg_limits_t *lim = &srv->cfg->limits;

	if (c->overflow) {
		req->keep_alive = 0;
		sg__respond_error_h(req, SG_CE_OVERLOADED, "Retry-After: 1\r\n",
		                    "too many connections (limit %zu%s)", srv->max_conns,
		                    lim->max_connections_per_client ? ", or per client" : "");
		return 1;
	}
	return 0;
}

int sg__req_shed(sg_req_t *req)
{
	sg_server_t *srv = req->conn->srv;
	const sg_limits_t *lim = &srv->cfg->limits;

	if (lim->max_held_bytes > 0 && srv->held_bytes > (size_t)lim->max_held_bytes) {
		srv->shed_requests++;
		sg_log_limited(&srv->shed_log, SG_LOG_WARN,
		               "%zu bytes held for clients (limits.max_held_bytes %ld): shedding "
		               "requests with 503", srv->held_bytes, lim->max_held_bytes);
		sg__respond_error_h(req, SG_CE_OVERLOADED, "Retry-After: 1\r\n",
		                    "semgate holds too much unsent output; retry shortly");
		return 1;
	}
	return 0;
}

/* Once a second: requests arriving too slowly get 408, clients that take
 * nothing of their answers for idle_timeout_ms are closed. */
static void on_sweep(uv_timer_t *t)
{
	sg_server_t *srv = t->data;
	const sg_limits_t *lim = &srv->cfg->limits;
	uint64_t now = sg_now_us();
	uint64_t grace_us = (uint64_t)SG_MIN((long)MIN_RATE_GRACE_MS, lim->request_timeout_ms) * 1000u;

	for (sg_conn_t *c = srv->conns, *next; c; c = next) {
		next = c->next;
		/* A closing reply the client never takes would hold its shutdown open. */
		if (c->state != CONN_OPEN && c->state != CONN_SHUTDOWN)
			continue;
		/* The socket's own queue: a request of many MB moves on byte by byte. */
		size_t wq = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
		if (wq < c->last_write_queue)
			c->write_progress_us = now;
		c->last_write_queue = wq;
		if (c->write_queued > 0 &&
		    now - c->write_progress_us > (uint64_t)lim->idle_timeout_ms * 1000u) {
			sg_log_limited(&srv->slow_log, SG_LOG_WARN,
			               "a client took none of its %zu unsent bytes for %ld ms: closing",
			               c->write_queued, lim->idle_timeout_ms);
			srv->slow_clients++;
			conn_close(c);
			continue;
		}
		if (c->state != CONN_OPEN)
			continue;
		if (lim->min_request_bytes_per_s > 0 && c->req.state == SG_REQ_READING &&
		    c->req_start_us && now - c->req_start_us > grace_us) {
			uint64_t got = c->req_bytes;
			uint64_t want = (uint64_t)lim->min_request_bytes_per_s * (now - c->req_start_us) /
			                1000000u;
			if (got < want) {
				srv->slow_clients++;
				sg_log_limited(&srv->slow_log, SG_LOG_WARN,
				               "a request arrived at %llu bytes/s (limits.min_request_bytes_per_s "
				               "%ld): 408",
				               (unsigned long long)(got * 1000000u / (now - c->req_start_us)),
				               lim->min_request_bytes_per_s);
				c->req.keep_alive = 0;
				if (c->req.id[0] == '\0')
					set_request_id(&c->req);
				sg__respond_error(&c->req, SG_CE_REQUEST_TIMEOUT,
				                  "the request arrived slower than %ld bytes/s",
				                  lim->min_request_bytes_per_s);
			}
		}
	}
}

/* --- server lifecycle --------------------------------------------------------------------- */

static void noop_close(uv_handle_t *h)
{
	(void)h;
}

static void server_maybe_done(sg_server_t *srv)
{
	if (!srv->draining || srv->conns != NULL || srv->drained)
		return;
	srv->drained = 1;
	sg_log_info("drained: all connections closed");
	uv_timer_stop(&srv->drain_timer);
	uv_close((uv_handle_t *)&srv->drain_timer, noop_close);
	uv_idle_stop(&srv->spin);
	uv_close((uv_handle_t *)&srv->spin, noop_close);
	uv_idle_stop(&srv->ready_idle);
	uv_close((uv_handle_t *)&srv->ready_idle, noop_close);
	uv_timer_stop(&srv->sweep_timer);
	uv_close((uv_handle_t *)&srv->sweep_timer, noop_close);
	srv->handler->drained(srv->app);
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

/*
 * Every client connection can have an upstream connection beside it, plus the
 * overflow connections, the store and the loop's own descriptors: check that
 * the process may open that many and raise the soft limit where the hard one
 * allows. Where it does not, the connection limits are lowered to what the
 * descriptors allow, so that semgate refuses (and says so) before the kernel
 * does (libuv closes connections it cannot accept without a word).
 */
#define FD_RESERVE 32 /* the loop, the listener, LMDB, curl's resolver, logs */

static void fit_fd_limit(sg_server_t *srv)
{
	const sg_limits_t *lim = &srv->cfg->limits;
	struct rlimit rl;
	rlim_t need = (rlim_t)lim->max_connections * 2 + (rlim_t)lim->health_connections +
	              FD_RESERVE;

	srv->max_conns = (size_t)lim->max_connections;
	srv->max_overflow = (size_t)lim->health_connections;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= need)
		return;
	rlim_t old = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
	if (rl.rlim_cur > old && setrlimit(RLIMIT_NOFILE, &rl) == 0)
		sg_log_info("file-descriptor limit raised from %llu to %llu for max_connections %ld",
		            (unsigned long long)old, (unsigned long long)rl.rlim_cur,
		            lim->max_connections);
	else
		rl.rlim_cur = old;
	if (rl.rlim_cur >= need)
		return;
	size_t avail = rl.rlim_cur > FD_RESERVE + 3 ? (size_t)rl.rlim_cur - FD_RESERVE : 3;
	srv->max_overflow = SG_MIN(srv->max_overflow, avail / 4);
	srv->max_conns = SG_MAX((size_t)1, SG_MIN(srv->max_conns, (avail - srv->max_overflow) / 2));
	sg_log_warn("the file-descriptor limit (%llu, hard %llu) is below the ~%llu that "
	            "limits.max_connections %ld needs: at most %zu connections are taken (and %zu "
	            "for health checks); raise `ulimit -n`, or lower limits.max_connections",
	            (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
	            (unsigned long long)need, lim->max_connections, srv->max_conns,
	            srv->max_overflow);
}

int sg__http_new(sg_server_t **out, uv_loop_t *loop, const sg_config_t *cfg,
                 const sg_http_handler_t *handler, void *app)
{
	struct sockaddr_storage addr;
	sg_server_t *srv;
	int rc;

	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return SG_ENOMEM;
	srv->loop = loop;
	srv->cfg = cfg;
	srv->handler = handler;
	srv->app = app;
	srv->id_seed = (uint32_t)(sg_now_us() ^ ((uint64_t)uv_os_getpid() << 16));
	fit_fd_limit(srv);
	sg__u64map_init(&srv->clients);

	llhttp_settings_init(&srv->parser_settings);
	srv->parser_settings.on_message_begin = on_message_begin;
	srv->parser_settings.on_url = on_url;
	srv->parser_settings.on_header_field = on_header_field;
	srv->parser_settings.on_header_value = on_header_value;
	srv->parser_settings.on_header_value_complete = on_header_value_complete;
	srv->parser_settings.on_headers_complete = on_headers_complete;
	srv->parser_settings.on_body = on_body;
	srv->parser_settings.on_message_complete = on_message_complete;

	if (uv_ip4_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in *)&addr) != 0 &&
	    uv_ip6_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in6 *)&addr) != 0) {
		sg_log_error("listen: \"%s\" is not an IPv4 or IPv6 address", cfg->listen_host);
		rc = SG_EINVAL;
		goto fail;
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
		goto fail;
	}
	int len = sizeof(addr);
	uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&addr, &len);
	srv->port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
	                                              : ((struct sockaddr_in *)&addr)->sin_port);
	uv_timer_init(loop, &srv->drain_timer);
	srv->drain_timer.data = srv;
	uv_idle_init(loop, &srv->spin);
	srv->spin.data = srv;
	uv_idle_init(loop, &srv->ready_idle);
	srv->ready_idle.data = srv;
	uv_timer_init(loop, &srv->sweep_timer);
	srv->sweep_timer.data = srv;
	uv_timer_start(&srv->sweep_timer, on_sweep, SWEEP_MS, SWEEP_MS);
	uv_unref((uv_handle_t *)&srv->sweep_timer);
	*out = srv;
	return 0;

fail:
	srv->draining = srv->drained = 1;
	*out = srv;
	return rc;
}

int sg_server_port(const sg_server_t *srv)
{
	return srv->port;
}

void sg__http_free(sg_server_t *srv)
{
	if (srv == NULL)
		return;
	sg__u64map_free(&srv->clients);
	free(srv);
}

void sg__server_set_config(sg_server_t *srv, const sg_config_t *cfg)
{
	srv->cfg = cfg;
}

void *sg__req_app(const sg_req_t *req)
{
	return req->conn->srv->app;
}
