/*
 * tool_pipeline: the pipelining attack of bench/bench_hostile.sh (issue 9).
 * Not built by CMake: bench_hostile.sh compiles it into its scratch folder with
 *   cc -O2 -pthread -o tool_pipeline bench/tool_pipeline.c
 *
 *   tool_pipeline --port P --pid PID --body JSON [--seconds 8] [--rss-limit-mb 3072]
 *                 [--rcvbuf 4096] [--probe-ms 10] [--stop-over]
 *
 * Three things at once, for --seconds or until PID's VmRSS passes --rss-limit-mb:
 * - attacker: ONE connection (SO_RCVBUF set small before connect) that sends
 *   "POST /v1/chat/completions" with BODY over and over, pipelined, as fast as the
 *   socket takes it, and never reads a byte. Non-blocking: a partial send resumes
 *   where it stopped, so the stream is always whole requests.
 * - probe: a separate keep-alive connection sending GET /healthz every --probe-ms
 *   (at once when the previous answer came late) and timing each answer. A probe
 *   still unanswered at the end counts in the percentiles with its elapsed time (a
 *   lower bound: probe_max_lower_bound=1 when it is the largest).
 * - sampler (main thread): VmRSS of PID every 100 ms; VmHWM at the end. Past the
 *   limit it stops the attack and, with --stop-over, SIGSTOPs PID at once (its
 *   memory grows no further; the caller then kills it).
 * Then the attacker's connection is closed and VmRSS read again 1 s later.
 * Prints one line of key=value figures (sizes in kB, times in microseconds).
 */
#ifndef _GNU_SOURCE /* the project's build defines it; the script's cc does not */
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static int port, rcvbuf = 4096, probe_ms = 10;
static pid_t target;
static atomic_int stop;

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(int64_t us)
{
	if (us <= 0)
		return;
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int dial(int small_rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	if (small_rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* VmRSS / VmHWM of the target in kB; -1 once the process is gone. */
static long status_kb(const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)target);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* ---- attacker ---- */

static char *req;	/* the request, repeated */
static size_t req_len, one_len;
static int atk_fd = -1;
static uint64_t atk_sent;	/* bytes the kernel took */
static int atk_err;		/* errno that ended the attack early, 0 if none */
static int64_t atk_err_at;	/* when, us since the start */
static int64_t t_start;

static void *attacker(void *arg)
{
	(void)arg;
	size_t off = 0;
	while (!atomic_load(&stop)) {
		ssize_t n = send(atk_fd, req + off, req_len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			atk_sent += (uint64_t)n;
			off += (size_t)n;
			if (off == req_len)
				off = 0;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			struct pollfd p = {atk_fd, POLLOUT, 0};
			poll(&p, 1, 20);
			continue;
		}
		atk_err = n < 0 ? errno : EPIPE;
		atk_err_at = now_us() - t_start;
		break;
	}
	return NULL;
}

/* ---- probe ---- */

static int64_t *lat;
static size_t nlat, cap_lat;
static int64_t inflight_us;	/* a probe unanswered at the end: its elapsed time */
static long probe_bad;		/* answers other than 200 */
static int probe_err;

static void lat_add(int64_t v)
{
	if (nlat == cap_lat) {
		cap_lat = cap_lat ? cap_lat * 2 : 4096;
		lat = realloc(lat, cap_lat * sizeof *lat);
		if (!lat)
			abort();
	}
	lat[nlat++] = v;
}

/* Reads one HTTP response with a Content-Length body. 1 done, 0 stopped, -1 error. */
static int read_response(int fd, int *status)
{
	char buf[8192];
	size_t len = 0;
	long need = -1;
	for (;;) {
		if (need >= 0 && (long)len >= need)
			return 1;
		struct pollfd p = {fd, POLLIN, 0};
		int r = poll(&p, 1, 5);
		if (atomic_load(&stop))
			return 0;
		if (r <= 0)
			continue;
		ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
		if (n <= 0)
			return -1;
		len += (size_t)n;
		buf[len] = 0;
		if (need < 0) {
			char *e = strstr(buf, "\r\n\r\n");
			if (!e) {
				if (len >= sizeof buf - 1)
					return -1;
				continue;
			}
			*status = atoi(buf + 9);
			long cl = 0;
			for (char *h = strstr(buf, "\r\n"); h && h < e; h = strstr(h + 2, "\r\n"))
				if (!strncasecmp(h + 2, "Content-Length:", 15))
					cl = strtol(h + 17, NULL, 10);
			need = (long)(e + 4 - buf) + cl;
			if (need > (long)sizeof buf - 1)
				return -1;
		}
	}
}

static void *probe(void *arg)
{
	(void)arg;
	int fd = dial(0);
	if (fd < 0) {
		probe_err = errno;
		return NULL;
	}
	static const char get[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	int64_t next = now_us();
	while (!atomic_load(&stop)) {
		sleep_us(next - now_us());
		if (atomic_load(&stop))
			break;
		int64_t t0 = now_us();
		if (send(fd, get, sizeof get - 1, MSG_NOSIGNAL) != (ssize_t)sizeof get - 1) {
			probe_err = errno ? errno : EPIPE;
			break;
		}
		int status = 0;
		int r = read_response(fd, &status);
		int64_t t1 = now_us();
		if (r == 0) {
			inflight_us = t1 - t0;
			break;
		}
		if (r < 0) {
			probe_err = errno ? errno : ECONNRESET;
			break;
		}
		lat_add(t1 - t0);
		if (status != 200)
			probe_bad++;
		next += probe_ms * 1000;
		if (next < t1)
			next = t1;
	}
	close(fd);
	return NULL;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	const char *body = NULL;
	double seconds = 8;
	long limit_mb = 3072;
	int stop_over = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--stop-over")) {
			stop_over = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "%s: missing value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--port"))
			port = atoi(v);
		else if (!strcmp(a, "--pid"))
			target = (pid_t)atoi(v);
		else if (!strcmp(a, "--body"))
			body = v;
		else if (!strcmp(a, "--seconds"))
			seconds = atof(v);
		else if (!strcmp(a, "--rss-limit-mb"))
			limit_mb = atol(v);
		else if (!strcmp(a, "--rcvbuf"))
			rcvbuf = atoi(v);
		else if (!strcmp(a, "--probe-ms"))
			probe_ms = atoi(v);
		else {
			fprintf(stderr, "unknown option %s\n", a);
			return 2;
		}
	}
	if (!port || !target || !body) {
		fprintf(stderr, "usage: %s --port P --pid PID --body JSON [--seconds S] "
		        "[--rss-limit-mb MB] [--rcvbuf B] [--probe-ms MS] [--stop-over]\n", argv[0]);
		return 2;
	}
	char one[4096];
	int n = snprintf(one, sizeof one,
	                 "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	                 strlen(body), body);
	if (n <= 0 || (size_t)n >= sizeof one) {
		fprintf(stderr, "body too long\n");
		return 2;
	}
	one_len = (size_t)n;
	size_t copies = (64 * 1024) / one_len + 1;
	req_len = copies * one_len;
	req = malloc(req_len);
	for (size_t i = 0; i < copies; i++)
		memcpy(req + i * one_len, one, one_len);

	long idle_kb = status_kb("VmRSS");
	if (idle_kb < 0) {
		fprintf(stderr, "no process %d\n", (int)target);
		return 1;
	}
	atk_fd = dial(1);
	if (atk_fd < 0) {
		perror("connect");
		return 1;
	}
	int got = 0;
	socklen_t gl = sizeof got;
	getsockopt(atk_fd, SOL_SOCKET, SO_RCVBUF, &got, &gl);

	t_start = now_us();
	pthread_t ta, tp;
	pthread_create(&tp, NULL, probe, NULL);
	pthread_create(&ta, NULL, attacker, NULL);

	long peak_kb = idle_kb, hwm_kb = -1, rss_kb;
	int over = 0, gone = 0;
	int64_t end = t_start + (int64_t)(seconds * 1e6), next = t_start;
	while (now_us() < end) {
		next += 100000;
		sleep_us(next - now_us());
		rss_kb = status_kb("VmRSS");
		if (rss_kb < 0) {
			gone = 1;
			break;
		}
		if (rss_kb > peak_kb)
			peak_kb = rss_kb;
		if (rss_kb > limit_mb * 1024) {
			over = 1;
			hwm_kb = status_kb("VmHWM");
			if (stop_over)
				kill(target, SIGSTOP);
			break;
		}
	}
	int64_t attack_us = now_us() - t_start;
	atomic_store(&stop, 1);
	pthread_join(ta, NULL);
	pthread_join(tp, NULL);
	long end_kb = -1, after_kb = -1;
	if (!over && !gone) {
		hwm_kb = status_kb("VmHWM");
		end_kb = status_kb("VmRSS");
	}
	close(atk_fd);
	if (!over && !gone) {
		sleep_us(1000000);
		after_kb = status_kb("VmRSS");
		if (after_kb < 0)
			gone = 1;
	}

	/* An unanswered probe counts with its elapsed time: a lower bound of that stall. */
	size_t answered = nlat;
	if (inflight_us > 0)
		lat_add(inflight_us);
	int64_t max_us = -1, p99_us = -1, p50_us = -1;
	if (nlat) {
		qsort(lat, nlat, sizeof *lat, cmp64);
		max_us = lat[nlat - 1];
		p50_us = lat[(nlat - 1) / 2];
		size_t k = (size_t)(0.99 * (double)nlat + 0.999999);
		p99_us = lat[(k ? k : 1) - 1];
	}
	if (hwm_kb > peak_kb)
		peak_kb = hwm_kb;
	printf("result idle_kb=%ld peak_kb=%ld hwm_kb=%ld end_kb=%ld after_close_kb=%ld over=%d "
	       "gone=%d attack_ms=%lld sent_bytes=%llu req_bytes=%zu requests=%llu rcvbuf=%d "
	       "atk_err=%s atk_err_ms=%lld probes=%zu probe_max_lower_bound=%d probe_p50_us=%lld probe_p99_us=%lld "
	       "probe_max_us=%lld probe_inflight_us=%lld probe_non200=%ld probe_err=%s\n",
	       idle_kb, peak_kb, hwm_kb, end_kb, after_kb, over, gone, (long long)(attack_us / 1000),
	       (unsigned long long)atk_sent, one_len, (unsigned long long)(atk_sent / one_len), got,
	       atk_err ? strerrorname_np(atk_err) : "none", (long long)(atk_err_at / 1000), answered,
	       inflight_us > 0 && inflight_us == max_us,
	       (long long)p50_us, (long long)p99_us, (long long)max_us, (long long)inflight_us,
	       probe_bad, probe_err ? strerrorname_np(probe_err) : "none");
	return 0;
}
