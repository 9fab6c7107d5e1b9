/*
 * Which endpoint a request is for: one table of (path, methods, auth class,
 * handler), matched in order. The auth class says what is checked before the
 * handler runs, in this order:
 *
 *   PUBLIC   nothing: health answers even beyond the connection limits
 *   ADMIN    not a refused connection, then the admin key; never shed (/stats
 *            says why the process sheds)
 *   CACHE    ADMIN, then the cache is on
 *   CLIENT   not a refused connection, not shed
 *
 * then the method (405 with Allow). Inference routes are also reachable
 * without their "/v1" (OpenAI clients whose base URL lacks it).
 */
#include <stdio.h>
#include <string.h>

#include "server_int.h"

enum auth_class { AUTH_PUBLIC, AUTH_ADMIN, AUTH_CACHE, AUTH_CLIENT };

#define M(m) (1u << (m))

typedef struct route {
	const char *path;    /* exact path, or a prefix when prefix is set */
	uint8_t prefix;      /* match path as a prefix; the rest goes to the handler */
	uint8_t v1;          /* also reachable without a leading "/v1" */
	uint8_t auth;        /* enum auth_class */
	uint32_t methods;    /* M(HTTP_GET) | ...; 0: none (the path exists, nothing is served) */
	const char *allow;   /* the methods as text, for 405 and Allow */
	void (*handler)(sg_req_t *req, sg_iovec_t rest);
} route_t;

static const route_t routes[] = {
	{"/healthz", 0, 0, AUTH_PUBLIC, M(HTTP_GET), "GET", sg__route_healthz},
	{"/readyz", 0, 0, AUTH_PUBLIC, M(HTTP_GET), "GET", sg__route_readyz},
	{"/stats", 0, 0, AUTH_ADMIN, M(HTTP_GET), "GET", sg__admin_stats},
	{"/admin/reload", 0, 0, AUTH_ADMIN, M(HTTP_POST), "POST", sg__admin_reload},
	{"/admin/keys", 1, 0, AUTH_ADMIN, M(HTTP_GET) | M(HTTP_POST) | M(HTTP_PATCH) | M(HTTP_DELETE),
	 "GET, POST, PATCH, DELETE", sg__admin_keys},
	{"/admin/teams", 1, 0, AUTH_ADMIN, M(HTTP_GET) | M(HTTP_POST) | M(HTTP_PATCH) | M(HTTP_DELETE),
	 "GET, POST, PATCH, DELETE", sg__admin_teams},
	{"/admin/spend", 0, 0, AUTH_ADMIN, M(HTTP_GET), "GET", sg__admin_spend},
	{"/cache", 0, 0, AUTH_CACHE, M(HTTP_DELETE), "DELETE", sg__admin_cache_clear},
	{"/cache/entries", 0, 0, AUTH_CACHE, M(HTTP_GET), "GET", sg__admin_cache_list},
	{"/cache/entries/", 1, 0, AUTH_CACHE, M(HTTP_GET) | M(HTTP_DELETE), "GET, DELETE",
	 sg__admin_cache_entry},
	{"/cache/", 1, 0, AUTH_CACHE, 0, NULL, NULL}, /* no such cache endpoint: 404 */
	{"/v1/chat/completions", 0, 1, AUTH_CLIENT, M(HTTP_POST), "POST", sg__route_chat},
	{"/v1/completions", 0, 1, AUTH_CLIENT, M(HTTP_POST), "POST", sg__route_completions},
	{"/v1/embeddings", 0, 1, AUTH_CLIENT, M(HTTP_POST), "POST", sg__route_embeddings},
	{"/v1/models", 0, 1, AUTH_CLIENT, M(HTTP_GET), "GET", sg__route_models},
};

/* Whether path is the route's (or under it, for a prefix); *rest gets what follows. */
static int match(const route_t *r, sg_iovec_t path, sg_iovec_t *rest)
{
	const char *p = r->path;
	size_t n = strlen(p);

	if (r->v1 && !(path.len >= 4 && memcmp(path.base, "/v1/", 4) == 0)) {
		p += 3; /* "/v1/x" also as "/x" */
		n -= 3;
	}
	if (path.len < n || memcmp(path.base, p, n) != 0 || (!r->prefix && path.len != n))
		return 0;
	*rest = (sg_iovec_t){path.base + n, path.len - n};
	return 1;
}

void sg__handle(sg_req_t *req)
{
	sg_iovec_t path = {req->url.data ? req->url.data : "", req->url.len}, rest = {"", 0};
	const char *q = memchr(path.base, '?', path.len);
	const route_t *r = NULL;

	if (q)
		path.len = (size_t)(q - path.base);
	/* the request runs on the generation current now, whatever reloads come */
	sg_gateway_t *gw = sg__req_gateway(req);
	if (req->gen != gw->gen) {
		sg__gen_unref(req->gen);
		req->gen = sg__gen_ref(gw->gen);
	}
	for (size_t i = 0; i < SG_ARRAY_SIZE(routes) && r == NULL; i++)
		if (match(&routes[i], path, &rest))
			r = &routes[i];
	if (r == NULL || r->auth != AUTH_PUBLIC) {
		if (sg__req_refused(req))
			return;
	}
	if (r == NULL) {
		if (sg__req_shed(req))
			return;
		return sg__respond_error(req, SG_CE_NOT_FOUND, "no route for %s %.*s",
		                         llhttp_method_name((llhttp_method_t)req->method),
		                         (int)SG_MIN(path.len, 200), path.base);
	}
	switch ((enum auth_class)r->auth) {
	case AUTH_PUBLIC:
		break;
	case AUTH_ADMIN:
	case AUTH_CACHE:
		if (!sg__admin_authorized(req))
			return sg__respond_error(
				req, SG_CE_UNAUTHORIZED,
				"admin endpoints need 'Authorization: Bearer <admin key>'");
		if (r->auth == AUTH_CACHE && sg__req_gateway(req)->cache == NULL)
			return sg__respond_error(req, SG_CE_CACHE_DISABLED,
			                         "the cache is disabled in the configuration");
		break;
	case AUTH_CLIENT:
		if (sg__req_shed(req))
			return;
		break;
	}
	if (r->handler == NULL)
		return sg__respond_error(req, SG_CE_NOT_FOUND, "no such endpoint");
	if (req->method >= 32 || !(r->methods & M(req->method))) {
		char allow[64];
		snprintf(allow, sizeof(allow), "Allow: %s\r\n", r->allow);
		return sg__respond_error_h(req, SG_CE_METHOD_NOT_ALLOWED, allow,
		                           "method not allowed here (use %s)", r->allow);
	}
	r->handler(req, rest);
}

void sg__handle_abort(sg_req_t *req)
{
	sg__call_abort(req);
}

void sg__handle_writable(sg_req_t *req)
{
	sg__call_writable(req);
}
