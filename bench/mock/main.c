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

#include "mock.h"

#define MAX_CHUNKS	100000

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
