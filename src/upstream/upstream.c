/* Upstream transfers: libcurl multi driven by libuv.
 *
 * curl tells us which sockets to watch (socket callback) and when to wake it
 * (timer callback); libuv polls those sockets and calls
 * curl_multi_socket_action() when they are ready. Easy handles are pooled,
 * and the multi handle's connection cache keeps upstream connections alive.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fsm.h"
#include "semgate/upstream.h"

struct sg_upstream_headers {
	struct curl_slist *list; /* owned */
};

enum xfer_state { XFER_FREE, XFER_RUNNING, XFER_CANCELED, XFER__LAST };

struct sg_xfer {
	CURL *easy;              /* pooled with the xfer */
	sg_upstream_t *up;       /* owner */
	const sg_xfer_cbs_t *cbs; /* borrowed from the caller */
	void *ud;                /* caller's pointer */
	enum xfer_state state;   /* one setter: xfer_set_state() */
	int headers_sent;        /* on_headers has run */
	int abort_err;           /* code on_data/on_headers aborted with */
	int reused;              /* the easy handle has its fixed options set */
	sg_xfer_t *next;         /* free list / cancel list link */
	sg_xfer_t *run_prev;     /* running list links, for sg_upstream_close() */
	sg_xfer_t *run_next;
};

/* The poll handle of a socket number curl has watched. Kept, stopped, when
 * curl stops watching the socket (after each transfer on a kept-alive
 * connection) and started again when curl watches that number next: a new
 * handle each time would cost five system calls a transfer (the epoll
 * add-and-remove check and nonblocking ioctl of uv_poll_init_socket, then
 * the add and the removals), and a malloc. A stopped handle watches nothing,
 * so a number curl has closed in the meantime and opened again (or any
 * socket curl made with it) is watched right. Closed with the upstream. */
typedef struct sock_ctx {
	uv_poll_t poll;      /* freed in its close callback */
	curl_socket_t fd;    /* the socket number */
	sg_upstream_t *up;   /* owner */
} sock_ctx_t;

struct sg_upstream {
	uv_loop_t *loop;     /* borrowed */
	CURLM *multi;        /* owned */
	uv_timer_t timer;    /* curl's timeout */
	sg_xfer_t *free;     /* pooled transfers */
	sg_xfer_t *canceled; /* canceled inside a curl call, to remove after */
	sg_xfer_t *running;  /* transfers in the multi (including canceled ones) */
	size_t active;       /* transfers in the multi */
	int in_curl;         /* inside a curl_multi_* call: no removals */
	int closing;         /* sg_upstream_close() ran */
	int proxy_env;       /* a *_proxy variable is set: curl reads them per transfer */
	sock_ctx_t **socks;  /* by socket number: its poll handle, or NULL */
	size_t nsocks;       /* entries in socks */
};

/* A pooled transfer: free -> running -> (canceled ->) free. A running one
 * that curl cannot take goes back to free at once. */
static const char *const xfer_state_names[XFER__LAST] = {"free", "running", "canceled"};
static const uint32_t xfer_next[XFER__LAST] = {
	[XFER_FREE] = SG_FSM_TO(XFER_RUNNING) | SG_FSM_TO(XFER_FREE), /* a new one is free */
	[XFER_RUNNING] = SG_FSM_TO(XFER_FREE) | SG_FSM_TO(XFER_CANCELED),
	[XFER_CANCELED] = SG_FSM_TO(XFER_FREE),
};
static const sg_fsm_t xfer_fsm = {"transfer", xfer_state_names, xfer_next, XFER__LAST};

static void xfer_set_state(sg_xfer_t *x, enum xfer_state s)
{
	sg_fsm_move(&xfer_fsm, x, x->state, s);
	x->state = s;
}

static void release(sg_xfer_t *x)
{
	sg_upstream_t *up = x->up;
	curl_multi_remove_handle(up->multi, x->easy);
	up->active--;
	x->reused = 1;
	if (x->run_prev)
		x->run_prev->run_next = x->run_next;
	else
		up->running = x->run_next;
	if (x->run_next)
		x->run_next->run_prev = x->run_prev;
	xfer_set_state(x, XFER_FREE);
	x->cbs = NULL;
	x->ud = NULL;
	x->next = up->free;
	up->free = x;
}

static void release_canceled(sg_upstream_t *up)
{
	while (up->canceled) {
		sg_xfer_t *x = up->canceled;
		up->canceled = x->next;
		release(x);
	}
}

static int map_curl_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
		return SG_ECONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		return SG_ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return SG_ENOMEM;
	default:
		return SG_EUPSTREAM;
	}
}

static int deliver_headers(sg_xfer_t *x)
{
	long status = 0;
	char *ctype = NULL;
	curl_off_t retry_after = -1;

	x->headers_sent = 1;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ctype);
	if (curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &retry_after) != CURLE_OK ||
	    retry_after <= 0)
		retry_after = status == 429 || status == 503 ? 0 : -1;
	return x->cbs->on_headers(x->ud, status, ctype, (long)retry_after);
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
	sg_xfer_t *x = arg;
	size_t n = size * nmemb;
	int rc;

	if (x->state != XFER_RUNNING)
		return 0; /* canceled: make curl stop */
	if (!x->headers_sent && deliver_headers(x) != 0) {
		x->abort_err = SG_ECANCELED;
		return 0;
	}
	if (x->state != XFER_RUNNING)
		return 0;
	rc = x->cbs->on_data(x->ud, p, n);
	if (rc == SG_XFER_PAUSE)
		return CURL_WRITEFUNC_PAUSE;
	if (rc < 0) {
		x->abort_err = rc;
		return 0;
	}
	return n;
}

static void check_done(sg_upstream_t *up)
{
	CURLMsg *msg;
	int pending;

	while ((msg = curl_multi_info_read(up->multi, &pending)) != NULL) {
		sg_xfer_t *x;
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		CURLcode cc = msg->data.result; /* msg dies with the removal */
		if (x->state != XFER_RUNNING) {
			release(x);
			continue;
		}
		const sg_xfer_cbs_t *cbs = x->cbs;
		void *ud = x->ud;
		int err = x->abort_err ? x->abort_err : map_curl_error(cc);
		if (err == 0 && !x->headers_sent && deliver_headers(x) != 0)
			err = SG_ECANCELED;
		release(x);
		cbs->on_done(ud, err);
	}
}

static void socket_action(sg_upstream_t *up, curl_socket_t fd, int flags)
{
	int running;
	up->in_curl++;
	curl_multi_socket_action(up->multi, fd, flags, &running);
	up->in_curl--;
	release_canceled(up);
	check_done(up);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	sock_ctx_t *s = h->data;
	int flags = 0;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	socket_action(s->up, s->fd, flags);
}

static void on_timer(uv_timer_t *t)
{
	socket_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static void sock_closed(uv_handle_t *h)
{
	free(h->data);
}

/* The poll handle for socket number fd, made the first time (NULL: out of
 * memory, or libuv refused the socket). */
static sock_ctx_t *sock_get(sg_upstream_t *up, curl_socket_t fd)
{
	if (fd < 0)
		return NULL;
	if ((size_t)fd >= up->nsocks) {
		size_t n = SG_MAX((size_t)fd + 1, up->nsocks * 2);
		sock_ctx_t **socks = realloc(up->socks, n * sizeof(*socks));
		if (socks == NULL)
			return NULL;
		memset(socks + up->nsocks, 0, (n - up->nsocks) * sizeof(*socks));
		up->socks = socks;
		up->nsocks = n;
	}
	sock_ctx_t *s = up->socks[fd];
	if (s != NULL)
		return s;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->fd = fd;
	s->up = up;
	if (uv_poll_init_socket(up->loop, &s->poll, fd) != 0) {
		free(s);
		return NULL;
	}
	s->poll.data = s;
	up->socks[fd] = s;
	return s;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
	sg_upstream_t *up = arg;
	sock_ctx_t *s = sockp;
	int events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s) { /* stopped, kept for the socket number's next use */
			uv_poll_stop(&s->poll);
			curl_multi_assign(up->multi, fd, NULL);
		}
		return 0;
	}
	if (up->closing)
		return 0; /* (curl_multi_cleanup's last calls: nothing to watch for) */
	if (s == NULL) {
		if ((s = sock_get(up, fd)) == NULL)
			return -1;
		curl_multi_assign(up->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, on_poll);
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
	sg_upstream_t *up = arg;
	if (timeout_ms < 0)
		uv_timer_stop(&up->timer);
	else
		uv_timer_start(&up->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

/* Whether the environment names a proxy the way curl reads it: any
 * variable called *_proxy, in any case (http_proxy, HTTPS_PROXY, all_proxy,
 * no_proxy...). Read when an upstream is made; the environment is fixed
 * after start. */
static int proxy_in_env(void)
{
	extern char **environ;
	static const char suffix[] = "_proxy";
	const size_t n = sizeof(suffix) - 1;
	for (char **v = environ; v && *v; v++) {
		const char *eq = strchr(*v, '=');
		size_t len = eq ? (size_t)(eq - *v) : strlen(*v);
		if (len >= n && strncasecmp(*v + len - n, suffix, n) == 0)
			return 1;
	}
	return 0;
}

static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int sg_upstream_new(sg_upstream_t **out, uv_loop_t *loop)
{
	static uv_once_t once = UV_ONCE_INIT;
	sg_upstream_t *up;

	uv_once(&once, global_init);
	up = calloc(1, sizeof(*up));
	if (up == NULL)
		return SG_ENOMEM;
	up->loop = loop;
	up->proxy_env = proxy_in_env();
	up->multi = curl_multi_init();
	if (up->multi == NULL) {
		free(up);
		return SG_ENOMEM;
	}
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
	/* Keep plenty of idle upstream connections for reuse under load. */
	curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, 1024L);
	uv_timer_init(loop, &up->timer);
	up->timer.data = up;
	*out = up;
	return 0;
}

static void timer_closed(uv_handle_t *h)
{
	sg_upstream_t *up = h->data;
	curl_multi_cleanup(up->multi);
	while (up->free) {
		sg_xfer_t *x = up->free;
		up->free = x->next;
		curl_easy_cleanup(x->easy);
		free(x);
	}
	free(up);
}

void sg_upstream_close(sg_upstream_t *up)
{
	if (up == NULL || up->closing)
		return;
	up->closing = 1;
	up->canceled = NULL; /* all of them are on the running list too */
	while (up->running)
		release(up->running);
	/* Closing a poll handle takes its socket number out of epoll (libuv's
	 * invalidate), whoever holds that number now. Safe here only because the
	 * gateway closes its upstream after the server has drained (no client
	 * socket left to hold a number curl once had): an upstream closed while
	 * the loop still serves would have to close each handle when curl closes
	 * its socket (CURLOPT_CLOSESOCKETFUNCTION) instead. */
	for (size_t fd = 0; fd < up->nsocks; fd++) {
		sock_ctx_t *s = up->socks[fd];
		if (s == NULL)
			continue;
		curl_multi_assign(up->multi, (curl_socket_t)fd, NULL); /* (no-op unless watched) */
		uv_close((uv_handle_t *)&s->poll, sock_closed);
	}
	free(up->socks);
	up->socks = NULL;
	up->nsocks = 0;
	uv_timer_stop(&up->timer);
	uv_close((uv_handle_t *)&up->timer, timer_closed);
}

size_t sg_upstream_active(const sg_upstream_t *up)
{
	return up->active;
}

sg_upstream_headers_t *sg_upstream_headers_new(const char *const *lines, size_t n)
{
	sg_upstream_headers_t *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		struct curl_slist *l = curl_slist_append(h->list, lines[i]);
		if (l == NULL) {
			sg_upstream_headers_free(h);
			return NULL;
		}
		h->list = l;
	}
	return h;
}

void sg_upstream_headers_free(sg_upstream_headers_t *h)
{
	if (h == NULL)
		return;
	curl_slist_free_all(h->list);
	free(h);
}

int sg_xfer_start(sg_upstream_t *up, const sg_xfer_req_t *req, const sg_xfer_cbs_t *cbs,
                  void *ud, sg_xfer_t **out)
{
	sg_xfer_t *x = up->free;
	CURL *e;

	if (up->closing)
		return SG_ECANCELED;
	if (x) {
		up->free = x->next;
	} else {
		x = calloc(1, sizeof(*x));
		if (x == NULL)
			return SG_ENOMEM;
		x->easy = curl_easy_init();
		if (x->easy == NULL) {
			free(x);
			return SG_ENOMEM;
		}
		x->up = up;
	}
	e = x->easy;
	x->cbs = cbs;
	x->ud = ud;
	x->headers_sent = 0;
	x->abort_err = 0;
	x->next = NULL;

	if (!x->reused) {
		/* Fixed for the handle's life; pooled handles keep them. */
		curl_easy_setopt(e, CURLOPT_PRIVATE, x);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
		curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
		/* Pass upstream bodies through as they are. */
		curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
		/* No proxy variable in the environment: say so, or curl looks
		 * them all up again for every transfer (several getenv scans). */
		if (!up->proxy_env) {
			curl_easy_setopt(e, CURLOPT_PROXY, "");
			curl_easy_setopt(e, CURLOPT_NOPROXY, "");
		}
	}
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers ? req->headers->list : NULL);
	if (req->body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	} else {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	xfer_set_state(x, XFER_RUNNING);
	if (curl_multi_add_handle(up->multi, e) != CURLM_OK) {
		xfer_set_state(x, XFER_FREE);
		x->next = up->free;
		up->free = x;
		return SG_ENOMEM;
	}
	up->active++;
	x->run_prev = NULL;
	x->run_next = up->running;
	if (up->running)
		up->running->run_prev = x;
	up->running = x;
	*out = x;
	return 0;
}

void sg_xfer_cancel(sg_xfer_t *x)
{
	sg_upstream_t *up;

	if (x == NULL || x->state != XFER_RUNNING)
		return;
	up = x->up;
	xfer_set_state(x, XFER_CANCELED);
	x->cbs = NULL;
	x->ud = NULL;
	if (up->in_curl) {
		/* curl forbids removing a handle from inside its own callbacks. */
		x->next = up->canceled;
		up->canceled = x;
		return;
	}
	release(x);
}

void sg_xfer_resume(sg_xfer_t *x)
{
	sg_upstream_t *up = x->up;

	if (x->state != XFER_RUNNING)
		return;
	up->in_curl++;
	curl_easy_pause(x->easy, CURLPAUSE_CONT);
	up->in_curl--;
	release_canceled(up);
	check_done(up);
}
