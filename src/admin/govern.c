/*
 * The admin API of keys, teams and spend (JSON in and out, behind the admin
 * key like every admin route):
 *
 *   POST   /admin/keys                  create: 201 {id, key, ...}; key is the
 *                                       whole secret, shown this once
 *   GET    /admin/keys?team=&after=&limit=   a page, by id
 *   GET | PATCH | DELETE /admin/keys/{id}
 *   POST   /admin/keys/{id}/disable | enable
 *   POST   /admin/keys/{id}/rotate      {"grace_s": N}: a new secret; the old
 *                                       one works N seconds more
 *   the same under /admin/teams (no rotate)
 *   GET    /admin/spend?group_by=key|team|model|day&from=&to=
 *
 * A body is checked whole before anything changes: unknown fields, wrong
 * types, negative limits are a 400 listing every problem, and nothing is
 * written. Changes are on disk before they are answered and apply to the
 * next request.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "openai_wire.h"
#include "server_int.h"

#define MAX_ADMIN_BODY 65536
#define PAGE_DEFAULT 100
#define PAGE_MAX 1000

/* Answer with o (taken). */
static void respond_json(sg_req_t *req, int status, json_t *o)
{
	sg_buf_t b;
	sg_buf_init(&b, 0);
	int rc = o ? sg__json_append(&b, o) : SG_ENOMEM;
	json_decref(o);
	if (rc != 0) {
		sg_buf_free(&b);
		return sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
	}
	sg__respond_json(req, status, &b);
}

/* The request's JSON body (an object), or NULL after answering 400. */
static json_t *body_json(sg_req_t *req, int empty_ok)
{
	json_error_t je;
	if (req->body.len == 0 && empty_ok)
		return json_object();
	if (req->body.len > MAX_ADMIN_BODY) {
		sg__respond_error(req, SG_CE_INVALID_REQUEST, "the body is larger than %d bytes",
		                  MAX_ADMIN_BODY);
		return NULL;
	}
	json_t *o = json_loadb(req->body.data ? req->body.data : "", req->body.len,
	                       JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(o)) {
		json_decref(o);
		sg__respond_error(req, SG_CE_INVALID_JSON, "the body must be a JSON object%s%s",
		                  o ? "" : ": ", o ? "" : je.text);
		return NULL;
	}
	return o;
}

static void respond_rc(sg_req_t *req, int rc, int is_team, const char *id, sg_buf_t *errors)
{
	const char *what = is_team ? "team" : "key";
	switch (rc) {
	case SG_EINVAL:
		sg__respond_error(req, SG_CE_INVALID_REQUEST, "%.*s", (int)(errors && errors->len ? errors->len - 1 : 0),
		                  errors && errors->data ? errors->data : "");
		break;
	case SG_ENOTFOUND:
		sg__respond_error(req, SG_CE_NOT_FOUND, "no %s \"%.64s\"", what, id);
		break;
	case SG_EEXIST:
		sg__respond_error(req, SG_CE_CONFLICT,
		                  "team %.64s still has keys: move or delete them first", id);
		break;
	case SG_ENOMEM:
		sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
		break;
	default:
		sg__respond_error(req, SG_CE_STORE_ERROR, "the key store could not be written: %s "
		                  "(see the log; is auth.map_size_mb reached?)", sg_strerror(rc));
		break;
	}
}

static void method_not_allowed(sg_req_t *req, const char *allow)
{
	char h[64];
	snprintf(h, sizeof(h), "Allow: %s\r\n", allow);
	sg__respond_error_h(req, SG_CE_METHOD_NOT_ALLOWED, h, "method not allowed here (use %s)",
	                    allow);
}

static void collection(sg_req_t *req, sg_authdb_t *db, int is_team)
{
	if (req->method == HTTP_POST) {
		json_t *body = body_json(req, 0), *view = NULL;
		char *key = NULL;
		sg_buf_t errors;
		if (body == NULL)
			return;
		sg_buf_init(&errors, 16384);
		int rc = sg__authdb_create(db, is_team, body, &view, is_team ? NULL : &key, &errors);
		json_decref(body);
		if (rc != 0) {
			respond_rc(req, rc, is_team, "", &errors);
		} else {
			if (key)
				json_object_set_new(view, "key", json_string(key));
			respond_json(req, 201, view);
		}
		if (key) {
			explicit_bzero(key, strlen(key));
			free(key);
		}
		sg_buf_free(&errors);
		return;
	}
	if (req->method != HTTP_GET)
		return method_not_allowed(req, "GET, POST");
	char team[64], after[64], lim[16];
	int bad = 0;
	const char *t = is_team ? NULL : sg__query_param(req, "team", team, sizeof(team), &bad);
	const char *a = sg__query_param(req, "after", after, sizeof(after), &bad);
	const char *l = sg__query_param(req, "limit", lim, sizeof(lim), &bad);
	long limit = PAGE_DEFAULT;
	if (l) {
		char *end;
		limit = strtol(l, &end, 10);
		if (*end || limit < 1 || limit > PAGE_MAX)
			bad = 1;
	}
	if (bad)
		return sg__respond_error(req, SG_CE_INVALID_REQUEST,
		                         "query: team and after are ids, limit is 1 to %d", PAGE_MAX);
	json_t *o = sg__authdb_list(db, is_team, t, a, (size_t)limit);
	respond_json(req, 200, o);
}

static void item(sg_req_t *req, sg_authdb_t *db, int is_team, const char *id, const char *action)
{
	json_t *view = NULL, *body;
	sg_buf_t errors;
	int rc;

	if (action) {
		if (req->method != HTTP_POST)
			return method_not_allowed(req, "POST");
		if (strcmp(action, "disable") == 0 || strcmp(action, "enable") == 0) {
			rc = sg__authdb_set_disabled(db, is_team, id, action[0] == 'd', &view);
			return rc ? respond_rc(req, rc, is_team, id, NULL) : respond_json(req, 200, view);
		}
		if (strcmp(action, "rotate") != 0 || is_team)
			return sg__respond_error(req, SG_CE_NOT_FOUND, "no such endpoint");
		if ((body = body_json(req, 1)) == NULL)
			return;
		json_t *g = json_object_get(body, "grace_s");
		if (json_object_size(body) > (g ? 1u : 0u) ||
		    (g && (!json_is_integer(g) || json_integer_value(g) < 0 ||
		           json_integer_value(g) > 365 * 86400))) {
			json_decref(body);
			return sg__respond_error(req, SG_CE_INVALID_REQUEST,
			                         "the body is {\"grace_s\": seconds the old secret keeps "
			                         "working, 0 to 31536000}");
		}
		char *key = NULL;
		rc = sg__authdb_rotate(db, id, g ? json_integer_value(g) : 0, &view, &key);
		json_decref(body);
		if (rc)
			return respond_rc(req, rc, is_team, id, NULL);
		json_object_set_new(view, "key", json_string(key));
		explicit_bzero(key, strlen(key));
		free(key);
		return respond_json(req, 200, view);
	}
	switch (req->method) {
	case HTTP_GET: {
		sg_principal_t *p = sg__authdb_find(db, is_team, id, strlen(id));
		if (p == NULL)
			return respond_rc(req, SG_ENOTFOUND, is_team, id, NULL);
		return respond_json(req, 200, sg__authdb_view(db, p));
	}
	case HTTP_PATCH:
		if ((body = body_json(req, 0)) == NULL)
			return;
		sg_buf_init(&errors, 16384);
		rc = sg__authdb_patch(db, is_team, id, body, &view, &errors);
		json_decref(body);
		if (rc)
			respond_rc(req, rc, is_team, id, &errors);
		else
			respond_json(req, 200, view);
		sg_buf_free(&errors);
		return;
	case HTTP_DELETE:
		if ((rc = sg__authdb_delete(db, is_team, id)) != 0)
			return respond_rc(req, rc, is_team, id, NULL);
		return respond_json(req, 200, json_pack("{s:s, s:b}", "id", id, "deleted", 1));
	default:
		return method_not_allowed(req, "GET, PATCH, DELETE");
	}
}

/* /admin/keys and /admin/teams: rest is "", "/{id}" or "/{id}/{action}". */
static void route(sg_req_t *req, sg_iovec_t rest, int is_team)
{
	sg_authdb_t *db = sg__req_gateway(req)->authdb;
	char id[SG_KEY_ID_LEN + 2], action[16];

	if (db == NULL)
		return sg__respond_error(req, SG_CE_NOT_FOUND,
		                         "keys and teams are off: set auth.mode to \"keys\"");
	const char *q = memchr(rest.base, '?', rest.len);
	if (q)
		rest.len = (size_t)(q - rest.base);
	if (rest.len == 0 || (rest.len == 1 && rest.base[0] == '/'))
		return collection(req, db, is_team);
	if (rest.base[0] != '/')
		return sg__respond_error(req, SG_CE_NOT_FOUND, "no such endpoint");
	const char *s = rest.base + 1, *end = rest.base + rest.len;
	const char *slash = memchr(s, '/', (size_t)(end - s));
	size_t idn = (size_t)((slash ? slash : end) - s);
	size_t an = slash ? (size_t)(end - slash - 1) : 0;
	if (idn == 0 || idn >= sizeof(id) || an >= sizeof(action))
		return sg__respond_error(req, SG_CE_NOT_FOUND, "no %s \"%.*s\"",
		                         is_team ? "team" : "key", (int)SG_MIN(idn, 64), s);
	memcpy(id, s, idn);
	id[idn] = '\0';
	if (slash) {
		memcpy(action, slash + 1, an);
		action[an] = '\0';
	}
	item(req, db, is_team, id, slash && an ? action : NULL); /* "/{id}/" is "/{id}" */
}

void sg__admin_keys(sg_req_t *req, sg_iovec_t rest)
{
	route(req, rest, 0);
}

void sg__admin_teams(sg_req_t *req, sg_iovec_t rest)
{
	route(req, rest, 1);
}

static void spend_report_done(void *arg, int rc, json_t *out)
{
	sg_req_t *req = arg;
	if (!sg__req_release(req)) { /* the client left */
		json_decref(out);
		return;
	}
	if (rc)
		return sg__respond_error(req, SG_CE_STORE_ERROR, "the spend store could not be read: %s",
		                         sg_strerror(rc));
	respond_json(req, 200, out);
}

void sg__admin_spend(sg_req_t *req, sg_iovec_t rest)
{
	sg_authdb_t *db = sg__req_gateway(req)->authdb;
	char by[16], from[64], to[64];
	int bad = 0;
	/* records are stamped by sg_wall_us: the same clock ends the default
	 * range, or a record in a second's first tick could fall past time()'s */
	int64_t f = 0, t = sg_wall_us() / 1000000 + 1;

	(void)rest;
	if (db == NULL)
		return sg__respond_error(req, SG_CE_NOT_FOUND,
		                         "spend is not recorded: set auth.mode to \"keys\" or "
		                         "auth.record_spend");
	const char *b = sg__query_param(req, "group_by", by, sizeof(by), &bad);
	const char *fs = sg__query_param(req, "from", from, sizeof(from), &bad);
	const char *ts = sg__query_param(req, "to", to, sizeof(to), &bad);
	if (b == NULL)
		b = "key";
	if (fs && sg__parse_time_arg(fs, &f) == 0 && ts == NULL && f >= t)
		t = f + 1; /* from in the future and no to: an empty range, not an error */
	if (bad || (fs && sg__parse_time_arg(fs, &f) != 0) || (ts && sg__parse_time_arg(ts, &t) != 0))
		return sg__respond_error(req, SG_CE_INVALID_REQUEST,
		                         "from and to are Unix seconds or RFC 3339 times "
		                         "(2026-12-01T00:00:00Z)");
	if (t < f)
		return sg__respond_error(req, SG_CE_INVALID_REQUEST, "to is before from");
	/* only one key's, team's or model's records */
	char kb[32], tb[32], mb[256];
	int fbad = 0;
	sg_report_filter_t only = {sg__query_param(req, "key", kb, sizeof(kb), &fbad),
	                           sg__query_param(req, "team", tb, sizeof(tb), &fbad),
	                           sg__query_param(req, "model", mb, sizeof(mb), &fbad)};
	json_t *probe = only.model ? json_string(only.model) : NULL; /* UTF-8, as names are */
	int model_ok = only.model == NULL || probe != NULL;
	json_decref(probe);
	if (fbad || (only.key && !sg__authdb_id_ok(only.key, strlen(only.key))) ||
	    (only.team && !sg__authdb_id_ok(only.team, strlen(only.team))) || !model_ok)
		return sg__respond_error(req, SG_CE_INVALID_REQUEST,
		                         "key and team are public ids (12 characters, a-z and 0-9; "
		                         "without \"sg-\"), model a model's name (UTF-8, at most "
		                         "255 bytes)");
	/* the store is read on the thread pool, the connection held meanwhile */
	sg__req_hold(req);
	int rc = sg__authdb_report_start(db, b, f, t, &only, spend_report_done, req);
	if (rc == 0)
		return;
	sg__req_release(req);
	if (rc == SG_EINVAL)
		return sg__respond_error(req, SG_CE_INVALID_REQUEST,
		                         "group_by must be key, team, model or day");
	sg__respond_error(req, SG_CE_STORE_ERROR, "the spend store could not be read: %s",
	                  sg_strerror(rc));
}
