/* The mock upstream's connections: reply queue, output, stream events (all
 * three formats, [[sse=KIND]]), the llhttp callbacks and reading. */

#include "mock.h"

#define MAX_URL		8192
#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_BODY	((size_t)256 * 1024 * 1024)
#define MAX_QUEUE	1024			/* queued replies before reads stop */
#define HIGH_WATER	((size_t)8 * 1024 * 1024) /* unsent bytes before reads stop */
#define LINGER_MS	2000			/* drain input this long after the last reply */
#define HUGE_LINE	((size_t)2 * 1024 * 1024)	/* [[sse=huge-line]] bytes of 'x' */

#define container_of(ptr, type, field) \
	((type *)((char *)(ptr) - offsetof(type, field)))

enum {
	CF_INPUT_DONE = 1,	/* the parser takes no more requests */
	CF_READ_PAUSED = 2,	/* reads stopped for back-pressure */
	CF_PEER_EOF = 4,	/* the client sent FIN */
	CF_SHUTDOWN = 8		/* uv_shutdown() issued */
};

/* A uv_write that owns the memory it writes. */
struct wreq {
	uv_write_t req;		/* req.data is the connection */
	char *mem;		/* freed when the write ends */
};

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
void conn_close(struct conn *c, int reset)
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

void on_connection(uv_stream_t *server, int status)
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
