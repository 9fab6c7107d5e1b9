/* Fuzz target: the HTTP front end (src/http/server.c on llhttp) and the handlers
 * behind it, on real traffic.
 *
 * The real server runs in this process on a libuv loop, on a loopback port,
 * with the cache off and upstreams on a closed port (127.0.0.1:1), so a
 * proxied request fails fast with 502 after a retry and a fallback; nothing
 * leaves the machine. Each input is one client connection:
 *
 *   byte 0   options: bit 0 half-closes the connection after the bytes,
 *            bit 1 resets it instead of closing it at the end
 *   u16      where the bytes are cut into separate writes (0: one write)
 *   then     the bytes the client sends
 *
 * The loop runs until the server has answered and has nothing left to do (or
 * a bound), the client reading what comes. What comes must be HTTP/1.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "fuzz_common.h"
#include "semgate/config.h"
#include "semgate/log.h"
#include "semgate/server.h"

#define DEADLINE_MS 500 /* the most one input may keep the loop going */
#define QUIET_MS 20     /* nothing due sooner than this: the server waits for the client */

static const char config_json[] =
	"{\"listen\":\"127.0.0.1:0\",\"log_level\":\"error\",\"admin_key_env\":\"SG_FUZZ_ADMIN\","
	"\"limits\":{\"max_body_bytes\":65536,\"max_header_bytes\":4096,\"max_headers\":32,"
	"\"max_url_bytes\":1024,\"request_timeout_ms\":2000,\"idle_timeout_ms\":2000,"
	"\"max_connections\":64,\"busy_poll_us\":0,\"drain_timeout_ms\":100},"
	"\"models\":["
	"{\"name\":\"gpt-4o-mini\",\"max_attempts\":2,\"backoff_ms\":0,\"budget_ms\":1000,"
	" \"circuit_failures\":1000000,\"deployments\":[{\"base_url\":\"http://127.0.0.1:1/v1\","
	" \"connect_timeout_ms\":100,\"timeout_ms\":500,\"api_key_env\":\"SG_FUZZ_KEY\"}]},"
	"{\"name\":\"claude\",\"max_attempts\":2,\"backoff_ms\":0,\"budget_ms\":1000,"
	" \"circuit_failures\":1000000,\"fallbacks\":[\"gemini\"],"
	" \"deployments\":[{\"provider\":\"anthropic\",\"base_url\":\"http://127.0.0.1:1\","
	" \"connect_timeout_ms\":100,\"timeout_ms\":500}]},"
	"{\"name\":\"gemini\",\"max_attempts\":1,\"circuit_failures\":1000000,"
	" \"deployments\":[{\"provider\":\"gemini\",\"base_url\":\"http://127.0.0.1:1\","
	" \"connect_timeout_ms\":100,\"timeout_ms\":500}]},"
	"{\"name\":\"azure\",\"max_attempts\":1,\"circuit_failures\":1000000,"
	" \"deployments\":[{\"provider\":\"azure\",\"base_url\":"
	" \"http://127.0.0.1:1/openai/deployments/d\",\"connect_timeout_ms\":100}]}],"
	"\"cache\":{\"enabled\":false}}";

static uv_loop_t loop;
static sg_config_t *cfg;
static sg_server_t *srv;
static struct sockaddr_in addr;
static int show_replies; /* SEMGATE_FUZZ_LOG=debug: what the server sends goes to stderr */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	sg_buf_t errors;
	int rc;

	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN); /* as semgate's main() */
	setenv("SG_FUZZ_ADMIN", "admin-key", 1);
	setenv("SG_FUZZ_KEY", "sk-upstream", 1);
	sg_buf_init(&errors, 0);
	rc = sg_config_parse(&cfg, config_json, sizeof(config_json) - 1, &errors);
	FUZZ_CHECK(rc == 0, "the fuzz config: %s", errors.data ? errors.data : "");
	sg_buf_free(&errors);
	fuzz_log_init();
	show_replies = sg_log_enabled(SG_LOG_DEBUG);
	uv_loop_init(&loop);
	rc = sg_server_new(&srv, &loop, cfg, NULL, NULL);
	FUZZ_CHECK(rc == 0, "sg_server_new: %s", sg_strerror(rc));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)sg_server_port(srv));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return 0;
}

typedef struct client {
	int fd;          /* our end of the connection */
	int eof;         /* the server closed (or reset) it */
	char head[9];    /* the first bytes received */
	size_t nhead;    /* bytes in head */
} client_t;

/* Read what the server sent; 1 if anything came. */
static int client_read(client_t *c)
{
	char buf[65536];
	int got = 0;

	while (!c->eof) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n > 0) {
			if (show_replies)
				fwrite(buf, 1, (size_t)n, stderr);
			size_t take = SG_MIN((size_t)n, sizeof(c->head) - c->nhead);
			memcpy(c->head + c->nhead, buf, take);
			c->nhead += take;
			if (c->nhead == sizeof(c->head))
				FUZZ_CHECK(memcmp(c->head, "HTTP/1.1 ", 9) == 0,
					   "the server's reply does not start with HTTP/1.1: %.9s",
					   c->head);
			got = 1;
		} else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			c->eof = 1;
		} else if (errno != EINTR) {
			break;
		}
	}
	return got;
}

/* One turn of the loop without blocking; then 1 if the server is idle: no
 * event waiting and no timer due within QUIET_MS. Otherwise waits a little
 * for what is due. */
static int turn(void)
{
	struct pollfd p = {uv_backend_fd(&loop), POLLIN, 0};
	int timeout;

	uv_run(&loop, UV_RUN_NOWAIT);
	timeout = uv_backend_timeout(&loop);
	if (poll(&p, 1, 0) > 0)
		return 0;
	if (timeout < 0 || timeout > QUIET_MS)
		return 1;
	poll(&p, 1, timeout);
	return 0;
}

/* Run the loop until the server is idle with nothing more for the client
 * (or the client's connection is gone, or the deadline). */
static void settle(client_t *c, uint64_t deadline)
{
	int quiet = 0;

	while (now_ms() < deadline) {
		int idle = turn();
		if (c && client_read(c))
			quiet = 0;
		else if (idle)
			quiet++;
		else
			quiet = 0;
		if ((c && c->eof) || quiet >= 2)
			break;
	}
}

/* Connect fd (non-blocking) to the server: 1, or 0 when no local port is
 * left. libFuzzer's timer signals interrupt a blocking connect: poll for it. */
static int client_connect(int fd)
{
	struct pollfd p = {fd, POLLOUT, 0};
	socklen_t len = sizeof(int);
	int err = 0;

	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		return 1;
	if (errno == EADDRNOTAVAIL || errno == EAGAIN)
		return 0;
	FUZZ_CHECK(errno == EINPROGRESS || errno == EINTR, "connect: %s", strerror(errno));
	while (poll(&p, 1, 1000) < 0)
		FUZZ_CHECK(errno == EINTR, "poll: %s", strerror(errno));
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err == EADDRNOTAVAIL || err == EAGAIN)
		return 0;
	FUZZ_CHECK(err == 0 && (p.revents & POLLOUT), "connect: %s", strerror(err));
	return 1;
}

static void client_send(client_t *c, const char *p, size_t n, uint64_t deadline)
{
	while (n > 0 && !c->eof && now_ms() < deadline) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			return; /* reset by the server: it may refuse to read more */
		} else {
			/* the server is not reading: let it run, and read its replies */
			turn();
			client_read(c);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_input_t in = {data, size};
	uint8_t o = fuzz_u8(&in);
	uint16_t seed = fuzz_u16(&in);
	uint64_t deadline = now_ms() + DEADLINE_MS;
	client_t c = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
	size_t cuts[32], ncuts, at = 0;

	FUZZ_CHECK(c.fd >= 0, "socket: %s", strerror(errno));
	fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
	setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	/* Out of local ports (TIME_WAIT), the input is skipped: not the server's
	 * doing. The handshake needs no accept: the server need not run. */
	if (!client_connect(c.fd)) {
		close(c.fd);
		settle(NULL, now_ms() + 50);
		return 0;
	}

	ncuts = fuzz_cuts(seed, in.n, cuts, SG_ARRAY_SIZE(cuts));
	for (size_t i = 0; i < ncuts && !c.eof; i++) {
		client_send(&c, (const char *)in.p + at, cuts[i] - at, deadline);
		at = cuts[i];
		settle(&c, deadline);
	}
	if (o & 1) {
		shutdown(c.fd, SHUT_WR);
		settle(&c, deadline);
	}
	if (o & 2) /* an abortive close: RST, not FIN */
		setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0},
			   sizeof(struct linger));
	close(c.fd);
	/* let the server see the close and free the connection */
	settle(NULL, now_ms() + 50);
	return 0;
}
