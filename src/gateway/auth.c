/*
 * Virtual keys. With auth.mode "keys", sg__auth_check (called by the
 * inference and /v1/models handlers before anything else of the request is
 * read) finds the caller's key ("Authorization: Bearer sg-<id>-<secret>", or
 * "x-api-key: sg-..." as Anthropic's clients send it) and checks it: the
 * secret in constant time, expiry, the key and its team enabled. The auth
 * step, first of every call, then checks the key's and its team's model lists
 * and puts the key, its team and the cache namespace it is confined to on the
 * call. Every refusal names the public id at most: the secret is never
 * echoed, logged or stored.
 */
#include <string.h>
#include <time.h>

#include "semgate/hash.h"
#include "server_int.h"

/* Whether s starts with "Bearer " in any case (ASCII letters: strncasecmp's
 * call and locale cost more than the rest of a remembered key's check). */
static int is_bearer(const char *s)
{
	return (s[0] | 0x20) == 'b' && (s[1] | 0x20) == 'e' && (s[2] | 0x20) == 'a' &&
	       (s[3] | 0x20) == 'r' && (s[4] | 0x20) == 'e' && (s[5] | 0x20) == 'r' && s[6] == ' ';
}

/* The key a request carries: 1 found (*out), 0 none, -1 an Authorization
 * header that is not a bearer token. */
static int find_key(const sg_req_t *req, sg_iovec_t *out)
{
	sg_iovec_t v;
	if (sg__req_header(req, "Authorization", &v) == 0) {
		if (v.len < 7 || !is_bearer(v.base))
			return -1;
		v.base += 7;
		v.len -= 7;
		while (v.len && *v.base == ' ')
			v.base++, v.len--;
		*out = v;
		return 1;
	}
	if (sg__req_header(req, "x-api-key", &v) == 0) {
		*out = v;
		return 1;
	}
	return 0;
}

/* A refusal (before any call started). */
#define REFUSE(req, gw, e, ...)                                                   \
	do {                                                                      \
		(gw)->auth_refused++;                                             \
		sg__respond_error(req, e, __VA_ARGS__);                           \
		return -1;                                                        \
	} while (0)

/* The connection's memo of its last key: that key and team, if this request
 * sends the same key and neither table changed since. Compared whole and in
 * constant time, as the secret's HMAC would be. */
static int memo_hit(const sg_key_memo_t *m, sg_authdb_t *db, sg_iovec_t k, int64_t now)
{
	return m->key && m->changes == sg__authdb_changes(db) && m->len == k.len &&
	       sg_ct_equal(m->token, k.base, k.len) && (!m->old || m->key->old_until >= now);
}

static void memo_set(sg_key_memo_t *m, sg_authdb_t *db, sg_iovec_t k, sg_principal_t *key,
                     sg_principal_t *team)
{
	sg__principal_ref(key);
	if (team)
		sg__principal_ref(team);
	sg__principal_unref(m->key);
	sg__principal_unref(m->team);
	m->key = key;
	m->team = team;
	m->changes = sg__authdb_changes(db);
	m->old = key->seen_old; /* as sg__authdb_verify just left it */
	m->len = k.len;
	memcpy(m->token, k.base, k.len);
}

int sg__auth_check(sg_req_t *req, sg_principal_t **keyp, sg_principal_t **teamp)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_call_t *c = sg__call_get(req); /* NULL (out of memory): no memo */
	sg_principal_t *key, *team;
	sg_iovec_t k;

	*keyp = *teamp = NULL;
	int found = find_key(req, &k);
	if (found == 0)
		REFUSE(req, gw, SG_CE_MISSING_API_KEY,
		       "this gateway needs a key: send 'Authorization: Bearer sg-...'");
	/* sg-<id>-<secret> */
	if (found < 0 || k.len < 3 + SG_KEY_ID_LEN + 2 || k.len > 3 + SG_KEY_ID_LEN + 1 + 256 ||
	    memcmp(k.base, "sg-", 3) != 0 || k.base[3 + SG_KEY_ID_LEN] != '-')
		REFUSE(req, gw, SG_CE_INVALID_API_KEY,
		       "the key is not a semgate key (sg-<id>-<secret>)");
	int64_t now = (int64_t)time(NULL);
	if (c && memo_hit(&c->key_memo, gw->authdb, k, now)) {
		key = c->key_memo.key;
		team = c->key_memo.team;
		goto found;
	}
	const char *id = k.base + 3;
	const char *secret = id + SG_KEY_ID_LEN + 1;
	size_t slen = k.len - 3 - SG_KEY_ID_LEN - 1;
	/* the id's characters are checked only when no key has it (a stored id is
	 * valid), before it is echoed in the refusal */
	key = sg__authdb_find(gw->authdb, 0, id, SG_KEY_ID_LEN);
	if (key == NULL && !sg__authdb_id_ok(id, SG_KEY_ID_LEN))
		REFUSE(req, gw, SG_CE_INVALID_API_KEY,
		       "the key is not a semgate key (sg-<id>-<secret>)");
	if (key == NULL)
		REFUSE(req, gw, SG_CE_INVALID_API_KEY, "unknown key sg-%.*s", SG_KEY_ID_LEN, id);
	if (!sg__authdb_verify(gw->authdb, key, secret, slen, now))
		REFUSE(req, gw, SG_CE_INVALID_API_KEY, "wrong secret for key sg-%s", key->id);
	team = key->team[0] ? sg__authdb_find(gw->authdb, 1, key->team, SG_KEY_ID_LEN) : NULL;
	if (c)
		memo_set(&c->key_memo, gw->authdb, k, key, team);
found:
	if (key->expires_at && now >= key->expires_at)
		REFUSE(req, gw, SG_CE_KEY_EXPIRED, "key sg-%s expired at %lld (Unix time)", key->id,
		       (long long)key->expires_at);
	if (key->disabled)
		REFUSE(req, gw, SG_CE_KEY_DISABLED, "key sg-%s is disabled", key->id);
	if (team && team->disabled)
		REFUSE(req, gw, SG_CE_KEY_DISABLED, "the team %s of key sg-%s is disabled", team->id,
		       key->id);
	*keyp = key;
	*teamp = team;
	return 0;
}

static void auth_request(sg_req_t *req)
{
	sg_gateway_t *gw = sg__req_gateway(req);
	sg_call_t *c = req->call;
	/* the handler verified the key before it read the body (keys on), or
	 * there is none to verify (keys off) */
	sg_principal_t *key = req->auth_key, *team = req->auth_team;

	req->auth_key = req->auth_team = NULL;
	if (key == NULL)
		return sg__call_next(req);
	if (!sg__principal_allows(key, c->model->name) ||
	    (team && !sg__principal_allows(team, c->model->name))) {
		gw->auth_refused++;
		sg__call_end(req, 0);
		return sg__respond_error(req, SG_CE_MODEL_NOT_ALLOWED, "key sg-%s may not use model '%s'",
		                         key->id, c->model->name);
	}
	/* the key's namespace, else its team's, else one of its own: whatever
	 * X-Semgate-Namespace says, the cache step keeps to it */
	const char *ns = key->ns[0] ? key->ns : team && team->ns[0] ? team->ns
	                                       : team                ? team->own_ns
	                                                             : key->own_ns;
	memcpy(c->ns, ns, strlen(ns) + 1);
	sg__principal_ref(key);
	c->key = key;
	if (team) {
		sg__principal_ref(team);
		c->team = team;
	}
	sg__call_next(req);
}

static void auth_release(sg_req_t *req)
{
	sg_call_t *c = req->call;
	sg__principal_unref(c->key);
	sg__principal_unref(c->team);
	c->key = c->team = NULL;
}

static void auth_end(sg_req_t *req, int ok)
{
	(void)ok;
	auth_release(req);
}

const sg_step_t sg__step_auth = {
	.name = "auth",
	.request = auth_request,
	.end = auth_end,
	.abort = auth_release,
};
