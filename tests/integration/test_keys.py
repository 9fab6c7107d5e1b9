"""Virtual keys and teams through the real binary (auth.mode "keys"): the
key lifecycle taking effect on the next request, refusals that name the
public id but never the secret, teams, secrets absent from logs, answers and
the store, cache namespaces a key cannot leave, the admin API refusing bad
input without changing anything, persistence across SIGTERM and kill -9,
and the configuration errors of keys mode. (The constant-time compare of
secrets cannot be timed reliably here: a unit test covers it.)"""

import json
import os
import re
import secrets
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

A = h.MODEL
B = "other-model"
CHAT = "/v1/chat/completions"
ADMIN_KEY = "adm-" + secrets.token_hex(12)
SERVER_SECRET = "srv-" + secrets.token_hex(16)
ENV = {"SGT_ADMIN": ADMIN_KEY, "SGT_SECRET": SERVER_SECRET}
ADMIN = {"Authorization": "Bearer " + ADMIN_KEY}
KEY_RE = re.compile(r"^sg-([a-z0-9]{12})-([A-Za-z0-9]{32})$")


# --- helpers -----------------------------------------------------------------------


def config(mock, cache=False, **top):
    """Keys mode, two model groups (A and B) on mock, a fresh auth.path."""
    dep = {"provider": "openai", "base_url": mock.url, "model": h.UPSTREAM_MODEL}
    cfg = {"log_level": "warn", "admin_key_env": "SGT_ADMIN",
           "models": [{"name": n, "deployments": [dep], "input_per_mtok": 1.0,
                       "output_per_mtok": 2.0} for n in (A, B)],
           "auth": {"mode": "keys", "secret_env": "SGT_SECRET", "path": h.make_temp_dir("sg-a-")},
           "cache": ({"enabled": True, "embedder": {"provider": "local"}} if cache
                     else {"enabled": False})}
    cfg.update(top)
    return cfg


def start(cache=False, **top):
    mock = h.Mock("--quiet")
    return mock, h.Semgate(config(mock, cache=cache, **top), env=ENV)


def adm(sg, method, path, body=None):
    return sg.request(method, path, body=body, headers=ADMIN)


def create(sg, kind="keys", **fields):
    """POST /admin/{kind}: the view (with "key" for a key) after checking 201."""
    r = adm(sg, "POST", "/admin/" + kind, fields)
    h.expect_status(r, 201)
    v = r.json()
    if kind == "keys":
        m = KEY_RE.match(v.get("key") or "")
        h.expect(m and m.group(1) == v["id"], "key %r does not match id %r", v.get("key"),
                 v.get("id"))
    else:
        h.expect("key" not in v, "a team has no secret: %r", v)
    return v


def get(sg, kind, id_, status=200):
    r = adm(sg, "GET", "/admin/%s/%s" % (kind, id_))
    h.expect_status(r, status)
    return r.json() if status == 200 else None


def keys_list(sg, query=""):
    r = adm(sg, "GET", "/admin/keys" + query)
    h.expect_status(r, 200)
    h.expect_eq(r.json().get("object"), "list", "list object")
    return r.json()


def ids(sg, query=""):
    return [x["id"] for x in keys_list(sg, query)["data"]]


def rotate(sg, kid, grace_s=None):
    r = adm(sg, "POST", "/admin/keys/%s/rotate" % kid,
            None if grace_s is None else {"grace_s": grace_s})
    h.expect_status(r, 200)
    return r.json()["key"]


def secret_of(key):
    return KEY_RE.match(key).group(2)


def chat(sg, key, model=A, via="bearer", prompt=None, headers=None):
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization" if via == "bearer" else "x-api-key"] = (
            "Bearer " + key if via == "bearer" else key)
    return sg.post_json(CHAT, h.chat_body(prompt or h.unique("keys"), model=model), headers=hdrs)


def ok(sg, key, **kw):
    h.expect_status(chat(sg, key, **kw), 200)


def refused(r, status, code, id_=None, secret=None):
    err = h.expect_error(r, status, code=code)
    h.expect(not id_ or "sg-" + id_ in err["message"], "%r does not name sg-%s", err, id_)
    h.expect(not secret or secret not in r.text(), "the answer echoes the secret: %r", r.body)


def no_secrets(text, what):
    h.expect("secret_hmac" not in text, "%s has a secret digest: %s", what, text[:500])
    h.expect(not re.search(r"sg-[a-z0-9]{12}-[A-Za-z0-9]{8}", text), "%s has a key: %s", what,
             text[:500])


def stable(view):
    """A view without its spend figures (which may move between two looks)."""
    return {k: v for k, v in view.items() if k != "spend"}


def wrong_secret():
    return "Wq" + secrets.token_hex(15)  # 32 characters, never a real secret


# --- 1. lifecycle --------------------------------------------------------------------


def test_key_lifecycle_applies_to_the_next_request():
    """create (secret shown once), use with both headers, models, disable /
    enable, expiry, rotate with and without grace, delete: each change applies
    to the very next request without a restart."""
    mock, sg = start()
    v = create(sg, name="life", metadata={"owner": "qa"})
    key, kid = v["key"], v["id"]
    h.expect_eq((v["name"], v["disabled"], v["metadata"]), ("life", False, {"owner": "qa"}),
                "name, disabled, metadata of the new key")
    h.expect({"created_at", "updated_at", "spend"} <= set(v), "view fields missing: %r", v)
    no_secrets(json.dumps(get(sg, "keys", kid)), "GET /admin/keys/{id}")
    no_secrets(json.dumps(keys_list(sg)), "GET /admin/keys")
    h.expect("key" not in get(sg, "keys", kid), "GET shows the key again")
    h.expect_eq(ids(sg), [kid], "ids listed")

    before = mock.stats()["chat"]
    ok(sg, key, via="bearer")
    ok(sg, key, via="x-api-key")
    h.expect_eq(mock.stats()["chat"], before + 2, "upstream chats for two keyed requests")

    def patch(body):
        r = adm(sg, "PATCH", "/admin/keys/" + kid, body)
        h.expect_status(r, 200)
        return r.json()

    h.expect_eq(patch({"models": ["gpt-3*", B]})["models"], ["gpt-3*", B], "models")
    refused(chat(sg, key), 403, "model_not_allowed", kid)
    r = sg.request("GET", "/v1/models", headers={"Authorization": "Bearer " + key})
    h.expect_status(r, 200)
    h.expect_eq([m["id"] for m in r.json()["data"]], [B], "/v1/models of the key")
    ok(sg, key, model=B)
    patch({"models": ["gpt-4o-*"]})
    ok(sg, key)
    h.expect("models" not in patch({"models": None}), "null did not remove models")
    ok(sg, key, model=B)

    h.expect_eq(adm(sg, "POST", "/admin/keys/%s/disable" % kid).json()["disabled"], True,
                "disabled after /disable")
    refused(chat(sg, key), 403, "key_disabled", kid)
    refused(chat(sg, key, via="x-api-key"), 403, "key_disabled", kid)
    h.expect_eq(adm(sg, "POST", "/admin/keys/%s/enable" % kid).json()["disabled"], False,
                "disabled after /enable")
    ok(sg, key)

    h.expect_eq(patch({"expires_at": "2001-02-03T04:05:06Z"})["expires_at"], 981173106,
                "expires_at from RFC 3339")
    refused(chat(sg, key), 401, "key_expired", kid)
    patch({"expires_at": "2099-01-01T00:00:00Z"})
    ok(sg, key)
    patch({"expires_at": 1000})
    refused(chat(sg, key), 401, "key_expired", kid)
    patch({"expires_at": None})
    ok(sg, key)

    key2 = rotate(sg, kid, 2)
    h.expect(KEY_RE.match(key2) and key2 != key and key2.startswith("sg-%s-" % kid),
             "rotated key %r (old %r)", key2, key)
    h.expect("previous_secret_valid_until" in get(sg, "keys", kid), "grace not in the view")
    ok(sg, key)
    ok(sg, key2)
    h.wait_for(lambda: chat(sg, key).status == 401, timeout=6, what="the old secret refused")
    refused(chat(sg, key), 401, "invalid_api_key", kid, secret_of(key))
    ok(sg, key2)

    key3 = rotate(sg, kid, 0)
    refused(chat(sg, key2), 401, "invalid_api_key", kid, secret_of(key2))
    refused(chat(sg, key), 401, "invalid_api_key", kid)
    ok(sg, key3)
    key4 = rotate(sg, kid)  # no body: grace 0
    refused(chat(sg, key3), 401, "invalid_api_key", kid)
    ok(sg, key4)

    h.expect_status(adm(sg, "DELETE", "/admin/keys/" + kid), 200)
    refused(chat(sg, key4), 401, "invalid_api_key", kid)
    get(sg, "keys", kid, status=404)
    h.expect_eq(keys_list(sg)["data"], [], "list after the delete")
    h.expect_status(adm(sg, "DELETE", "/admin/keys/" + kid), 404)
    h.expect_status(adm(sg, "POST", "/admin/keys/%s/rotate" % kid), 404)
    sg.assert_alive()


def test_key_changes_apply_on_the_same_connection():
    """a keep-alive connection remembers the key it last verified: every
    change (disable, the team's disable, models, expiry, rotation with and
    after its grace, delete) and every other secret still applies to its very
    next request there."""
    mock, sg = start()
    tid = create(sg, "teams", name="conn")["id"]
    v = create(sg, name="conn", team=tid)
    key, kid = v["key"], v["id"]
    conn = sg.connect()

    def send(k, model=A):
        r = conn.request("POST", CHAT, body=h.chat_body(h.unique("conn"), model=model),
                         headers={"Authorization": "Bearer " + k})
        h.expect(not r.wants_close(), "the connection closes after %d %r", r.status, r.body)
        return r

    def sends_ok(k, model=A):
        h.expect_status(send(k, model), 200)

    def admin_ok(method, path, body=None):
        h.expect_status(adm(sg, method, path, body), 200)

    sends_ok(key)
    sends_ok(key)
    wrong = "sg-%s-%s" % (kid, wrong_secret())
    refused(send(wrong), 401, "invalid_api_key", kid, secret_of(wrong))
    refused(send(key[:-1] + ("a" if key[-1] != "a" else "b")), 401, "invalid_api_key", kid)
    sends_ok(key)
    refused(send(wrong), 401, "invalid_api_key", kid, secret_of(wrong))

    admin_ok("POST", "/admin/keys/%s/disable" % kid)
    refused(send(key), 403, "key_disabled", kid)
    admin_ok("POST", "/admin/keys/%s/enable" % kid)
    sends_ok(key)
    admin_ok("POST", "/admin/teams/%s/disable" % tid)
    refused(send(key), 403, "key_disabled", kid)
    admin_ok("POST", "/admin/teams/%s/enable" % tid)
    sends_ok(key)
    admin_ok("PATCH", "/admin/keys/" + kid, {"models": [B]})
    refused(send(key), 403, "model_not_allowed", kid)
    sends_ok(key, model=B)
    admin_ok("PATCH", "/admin/keys/" + kid, {"models": None, "expires_at": 1000})
    refused(send(key), 401, "key_expired", kid)
    admin_ok("PATCH", "/admin/keys/" + kid, {"expires_at": None})
    sends_ok(key)

    key2 = rotate(sg, kid, 2)
    sends_ok(key)  # within the grace, remembered as the previous secret
    sends_ok(key)
    sends_ok(key2)
    sends_ok(key)
    h.wait_for(lambda: send(key).status == 401, timeout=6, what="the old secret refused")
    refused(send(key), 401, "invalid_api_key", kid, secret_of(key))
    sends_ok(key2)
    key3 = rotate(sg, kid, 0)
    refused(send(key2), 401, "invalid_api_key", kid, secret_of(key2))
    sends_ok(key3)
    h.expect_status(adm(sg, "DELETE", "/admin/keys/" + kid), 200)
    refused(send(key3), 401, "invalid_api_key", kid, secret_of(key3))
    conn.close()
    sg.assert_alive()


# --- 2. refusals -----------------------------------------------------------------------


def test_missing_malformed_unknown_and_wrong_keys():
    """no key: 401 missing_api_key; malformed: 401 invalid_api_key; an unknown
    id or a wrong secret: 401 naming sg-<id> but never the secret sent."""
    mock, sg = start()
    v = create(sg)
    key, kid = v["key"], v["id"]
    before = mock.stats()["chat"]
    refused(chat(sg, None), 401, "missing_api_key")
    for bad in ("Bearer nonsense", "Bearer sg-short", "Basic " + key, "Bearer " + key.upper(),
                "Bearer sg-%s_%s" % (kid, secret_of(key)), "Bearer sg-ABCDEFGHIJKL-x"):
        r = sg.post_json(CHAT, h.chat_body(h.unique()), headers={"Authorization": bad})
        refused(r, 401, "invalid_api_key")
    refused(chat(sg, "garbage", via="x-api-key"), 401, "invalid_api_key")

    other = "zz" + kid[2:] if not kid.startswith("zz") else "yy" + kid[2:]
    ghost = "Qq" + secrets.token_hex(15)
    for via in ("bearer", "x-api-key"):
        refused(chat(sg, "sg-%s-%s" % (other, ghost), via=via), 401, "invalid_api_key", other,
                ghost)
        wrong = wrong_secret()
        refused(chat(sg, "sg-%s-%s" % (kid, wrong), via=via), 401, "invalid_api_key", kid,
                wrong)
        refused(chat(sg, key + "x", via=via), 401, "invalid_api_key", kid, secret_of(key))
        refused(chat(sg, key[:-1], via=via), 401, "invalid_api_key", kid, secret_of(key)[:-1])
    h.expect_eq(mock.stats()["chat"], before, "refused requests that reached the upstream")
    ok(sg, key)
    # optional whitespace around a field value is not part of it (RFC 9110 5.5)
    for hdr in ({"Authorization": "Bearer %s  " % key}, {"x-api-key": key + " \t"}):
        r = sg.post_json(CHAT, h.chat_body(h.unique()), headers=hdr)
        h.expect(r.status == 200, "%r: %d %r", hdr, r.status, r.body)


# --- 3. teams ----------------------------------------------------------------------------


def test_teams():
    """a team's disable and model list bind its keys; a team with keys cannot
    be deleted (409); an unknown team is a 400; ?team= and paging list keys."""
    mock, sg = start()
    tid = create(sg, "teams", name="red")["id"]
    k = create(sg, name="member", team=tid)
    h.expect_eq(k["team"], tid, "team of the key")
    ok(sg, k["key"])
    ok(sg, k["key"], model=B)

    h.expect_status(adm(sg, "POST", "/admin/teams/%s/disable" % tid), 200)
    refused(chat(sg, k["key"]), 403, "key_disabled", k["id"])
    h.expect_status(adm(sg, "POST", "/admin/teams/%s/enable" % tid), 200)
    ok(sg, k["key"])

    h.expect_status(adm(sg, "PATCH", "/admin/teams/" + tid, {"models": ["gpt-4o*"]}), 200)
    ok(sg, k["key"])
    refused(chat(sg, k["key"], model=B), 403, "model_not_allowed", k["id"])
    loner = create(sg)  # a key outside the team is not bound by it
    ok(sg, loner["key"], model=B)
    h.expect_status(adm(sg, "PATCH", "/admin/teams/" + tid, {"models": None}), 200)
    ok(sg, k["key"], model=B)

    h.expect_error(adm(sg, "DELETE", "/admin/teams/" + tid), 409)
    get(sg, "teams", tid)
    ok(sg, k["key"])
    before = ids(sg)
    h.expect_error(adm(sg, "POST", "/admin/keys", {"name": "x", "team": "nosuchteam00"}), 400,
                   message_contains="team")
    h.expect_error(adm(sg, "POST", "/admin/keys", {"team": "short"}), 400)
    h.expect_eq(ids(sg), before, "keys after refused creates")
    h.expect_error(adm(sg, "PATCH", "/admin/keys/" + loner["id"], {"team": "nosuchteam00"}),
                   400)
    h.expect("team" not in get(sg, "keys", loner["id"]), "a refused team was set")

    t2 = create(sg, "teams", name="blue")["id"]
    mine = sorted([k["id"]] + [create(sg, team=tid)["id"] for _ in range(2)])
    theirs = sorted([create(sg, team=t2)["id"] for _ in range(2)])
    others = [loner["id"]] + [create(sg)["id"] for _ in range(2)]
    h.expect_eq(ids(sg, "?team=" + tid), mine, "?team=red")
    h.expect_eq(ids(sg, "?team=" + t2), theirs, "?team=blue")
    everyone = sorted(mine + theirs + others)
    seen, after = [], ""
    while len(seen) <= len(everyone):
        page = keys_list(sg, "?limit=2" + ("&after=" + after if after else ""))
        got = [x["id"] for x in page["data"]]
        h.expect(1 <= len(got) <= 2, "page of %d keys: %r", len(got), page)
        seen += got
        if not page["has_more"]:
            break
        after = page["next_after"]
        h.expect_eq(after, got[-1], "next_after")
    h.expect_eq(seen, everyone, "ids over all pages")
    page = keys_list(sg, "?team=%s&limit=2&after=%s" % (tid, mine[0]))
    h.expect_eq([x["id"] for x in page["data"]], mine[1:], "team page after the first")
    h.expect_error(adm(sg, "GET", "/admin/keys?limit=0"), 400)

    for kid in mine:
        h.expect_status(adm(sg, "DELETE", "/admin/keys/" + kid), 200)
    refused(chat(sg, k["key"]), 401, "invalid_api_key", k["id"])
    h.expect_status(adm(sg, "DELETE", "/admin/teams/" + tid), 200)
    get(sg, "teams", tid, status=404)
    h.expect_eq(keys_list(sg, "?team=" + tid)["data"], [], "keys of the deleted team")
    h.expect_error(adm(sg, "POST", "/admin/keys", {"team": tid}), 400)


# --- 4. no secret in logs, answers or the store ---------------------------------------------


def test_no_secret_in_logs_answers_or_store():
    """with log_level debug, requests with good, wrong, rotated-out and
    query-string keys over both headers leave no secret in the log, in any
    answer but the one create/rotate that returned it, or in auth.path."""
    mock, sg = start(log_level="debug")
    auth_path = sg.config["auth"]["path"]
    answers = []  # every answer but the create/rotate ones
    keep = lambda r: answers.append(r) or r  # noqa: E731
    t = create(sg, "teams", name="t")
    k1 = create(sg, name="one", team=t["id"])
    k2 = create(sg, name="two")
    k2new = rotate(sg, k2["id"], 60)
    k3 = create(sg, name="three")
    k3new = rotate(sg, k3["id"], 0)
    wrong = wrong_secret()
    sent = [secret_of(k) for k in (k1["key"], k2["key"], k2new, k3["key"], k3new)] + [wrong]

    for via in ("bearer", "x-api-key"):
        for k in (k1["key"], k2["key"], k2new, k3new):  # k2["key"]: in its grace
            h.expect_status(keep(chat(sg, k, via=via)), 200)
        refused(keep(chat(sg, k3["key"], via=via)), 401, "invalid_api_key", k3["id"])
        refused(keep(chat(sg, "sg-%s-%s" % (k1["id"], wrong), via=via)), 401,
                "invalid_api_key", k1["id"])
        refused(keep(chat(sg, "sg-%s-%s" % ("q" * 12, wrong), via=via)), 401,
                "invalid_api_key", "q" * 12)
        keep(chat(sg, "sg-%s_%s" % (k1["id"], wrong), via=via))  # malformed
    keep(sg.post_json(CHAT + "?key=" + k1["key"], h.chat_body(h.unique())))
    keep(sg.post_json(CHAT + "?key=" + k1["key"], h.chat_body(h.unique()),
                      headers={"Authorization": "Bearer " + k3new}))
    keep(sg.request("GET", "/v1/models?api_key=" + k2new))
    for path in ("/admin/keys", "/admin/keys/" + k1["id"], "/admin/keys/" + k2["id"],
                 "/admin/teams", "/admin/spend", "/admin/spend?group_by=team", "/stats"):
        h.expect_status(keep(adm(sg, "GET", path)), 200)
    keep(adm(sg, "PATCH", "/admin/keys/" + k2["id"], {"name": "renamed"}))
    keep(adm(sg, "POST", "/admin/keys/%s/disable" % k2["id"]))
    h.expect("auth: key %s created" % k1["id"] in sg.log(), "no log lines:\n%s", sg.log())
    sg.signal(signal.SIGTERM)
    h.expect_eq(sg.wait_exit(30), 0, "exit code after SIGTERM")
    log, store = sg.log(), b""
    for f in os.listdir(auth_path):
        with open(os.path.join(auth_path, f), "rb") as fh:
            store += fh.read()
    h.expect(len(store) > 0, "nothing in auth.path %s", auth_path)
    for s in sent:
        h.expect(s not in log, "the log has the secret %s:\n%s", s, log)
        h.expect(s.encode() not in store, "the auth store has the secret %s", s)
        for a in answers:
            h.expect(s.encode() not in a.body + repr(a.headers.pairs).encode(),
                     "an answer has the secret %s: %r", s, a)


# --- 5. cache namespaces -----------------------------------------------------------------


def cache_state(r):
    h.expect_status(r, 200)
    return r.header("X-Semgate-Cache") or ""


def expect_shared(sg, mock, first, second, prompt, headers=None):
    """first stores prompt (miss); second's identical request is a hit that
    does not reach the upstream."""
    h.expect_eq(cache_state(chat(sg, first, prompt=prompt)), "miss", "first request")
    n = mock.stats()["chat"]
    st = cache_state(chat(sg, second, prompt=prompt, headers=headers))
    h.expect(st.startswith("hit"), "second request: X-Semgate-Cache %r, want a hit", st)
    h.expect_eq(mock.stats()["chat"], n, "upstream chats during the hit")


def expect_confined(sg, mock, key, prompt, namespace):
    """key (which has not asked prompt before) asking for another namespace
    still misses and reaches the upstream."""
    n = mock.stats()["chat"]
    st = cache_state(chat(sg, key, prompt=prompt, headers={"X-Semgate-Namespace": namespace}))
    h.expect(not st.startswith("hit"), "X-Semgate-Namespace %s gave %r", namespace, st)
    h.expect_eq(mock.stats()["chat"], n + 1, "upstream chats for the confined request")


def test_cache_namespace_is_the_keys():
    """a keyed call's cache namespace is its key's (or its team's, or its
    explicit one): X-Semgate-Namespace cannot reach another key's entries, a
    team's keys share, keys with the same explicit namespace share; DELETE
    /cache leaves the keys alone."""
    mock, sg = start(cache=True)
    a, b, c = create(sg, name="a"), create(sg, name="b"), create(sg, name="c")
    pa = h.unique("What is the capital of France?")
    expect_shared(sg, mock, a["key"], a["key"], pa)
    expect_confined(sg, mock, b["key"], pa, "key-" + a["id"])
    expect_confined(sg, mock, c["key"], pa, "default")

    a2 = create(sg, name="a2", namespace="private.a2")
    pa2 = h.unique("How do I bake bread?")
    expect_shared(sg, mock, a2["key"], a2["key"], pa2)
    expect_confined(sg, mock, b["key"], pa2, "private.a2")
    expect_confined(sg, mock, a["key"], pa2, "private.a2")

    t = create(sg, "teams", name="team")
    t1, t2 = create(sg, team=t["id"]), create(sg, team=t["id"])
    pt = h.unique("Why is the sky blue?")
    expect_shared(sg, mock, t1["key"], t2["key"], pt)
    expect_confined(sg, mock, b["key"], pt, "team-" + t["id"])
    expect_confined(sg, mock, a["key"], pt, "team-" + t["id"])

    s1, s2 = create(sg, namespace="shared"), create(sg, namespace="shared")
    ps = h.unique("Name three prime numbers")
    expect_shared(sg, mock, s1["key"], s2["key"], ps)
    expect_confined(sg, mock, b["key"], ps, "shared")
    # a key's own namespace beats its team's
    t3 = create(sg, team=t["id"], namespace="shared")
    expect_shared(sg, mock, t3["key"], s1["key"], h.unique("Which ocean is the deepest on Earth"))
    expect_confined(sg, mock, t3["key"], pt, "team-" + t["id"])
    # a team's own namespace binds its keys unless a key has one
    tn = create(sg, "teams", name="tn", namespace="shared")
    expect_shared(sg, mock, create(sg, team=tn["id"])["key"], s2["key"],
                  h.unique("Who wrote Hamlet"))
    # a namespace given to a key later applies to its next request
    h.expect_status(adm(sg, "PATCH", "/admin/keys/" + b["id"], {"namespace": "shared"}), 200)
    n = mock.stats()["chat"]
    h.expect(cache_state(chat(sg, b["key"], prompt=ps)).startswith("hit"), "b after PATCH")
    h.expect_eq(mock.stats()["chat"], n, "upstream chats during b's hit")

    # DELETE /cache (admin) empties the cache, not the keys and teams
    before = ([stable(v) for v in keys_list(sg)["data"]], stable(get(sg, "teams", t["id"])))
    h.expect_status(adm(sg, "DELETE", "/cache"), 200)
    h.expect_eq(([stable(v) for v in keys_list(sg)["data"]], stable(get(sg, "teams", t["id"]))),
                before, "keys and team after DELETE /cache")
    h.expect_eq(cache_state(chat(sg, t1["key"], prompt=pt)), "miss", "after DELETE /cache")
    expect_shared(sg, mock, t1["key"], t2["key"], h.unique("What is the tallest mountain?"))


# --- 6. bad admin input ------------------------------------------------------------------


BAD_BODIES = [
    ("unknown field", {"name": "x", "colour": "red"}),
    ("negative rpm", {"name": "x", "rpm": -1}),
    ("string tpm", {"name": "x", "tpm": "100"}),
    ("float max_concurrent", {"name": "x", "max_concurrent": 1.5}),
    ("negative model limit", {"name": "x", "model_limits": {A: {"rpm": -5}}}),
    ("soft over max", {"name": "x", "budget": {"max_usd": 1.0, "soft_usd": 2.0}}),
    ("bad period", {"name": "x", "budget": {"max_usd": 1.0, "period": "fortnightly"}}),
    ("bad namespace", {"name": "x", "namespace": "no spaces!"}),
    ("empty namespace", {"name": "x", "namespace": ""}),
    ("id", {"name": "x", "id": "aaaaaaaaaaaa"}),
    ("disabled", {"name": "x", "disabled": True}),
    ("created_at", {"name": "x", "created_at": 1}),
    ("bad expires_at", {"name": "x", "expires_at": "next tuesday"}),
    ("models not a list", {"name": "x", "models": A}),
    ("non-JSON", b'{"name": "x", '),
    ("JSON array", b'[{"name": "x"}]'),
    ("JSON string", b'"x"'),
    ("duplicate keys", b'{"name": "x", "name": "y"}'),
    ("record over 64 KiB", {"name": "x", "metadata": {"pad": "p" * 70000}}),
    ("body over 64 KiB", b'{"name": "x"' + b" " * 66000 + b"}"),  # a small record
]


def test_bad_admin_input_changes_nothing():
    """every bad body is a 400 and changes nothing (PATCH: the view is the
    same; POST: no new key); a body over limits.max_body_bytes is a 413;
    admin endpoints without the admin key are a 401."""
    mock, sg = start(limits={"max_body_bytes": 100000})
    k = create(sg, name="orig", rpm=100, budget={"max_usd": 5.0, "soft_usd": 1.0})
    kid = k["id"]
    t = create(sg, "teams", name="tm")
    view, tview = stable(get(sg, "keys", kid)), stable(get(sg, "teams", t["id"]))
    listed = ids(sg)
    hdr = dict(ADMIN, **{"Content-Type": "application/json"})
    for what, body in BAD_BODIES:
        for method, path in (("PATCH", "/admin/keys/" + kid), ("POST", "/admin/keys"),
                             ("PATCH", "/admin/teams/" + t["id"])):
            r = sg.request(method, path, body=body, headers=hdr)
            h.expect(r.status == 400, "%s %s with %s: %d %r", method, path, what, r.status,
                     r.body[:300])
            h.expect_error(r, 400, code="invalid_json" if isinstance(body, bytes) and
                           what != "body over 64 KiB" else None)
        h.expect_eq(stable(get(sg, "keys", kid)), view, "key view after " + what)
        h.expect_eq(stable(get(sg, "teams", t["id"])), tview, "team view after " + what)
        h.expect_eq(ids(sg), listed, "key ids after " + what)
    h.expect_error(adm(sg, "PATCH", "/admin/teams/" + t["id"], {"expires_at": 1}), 400)
    h.expect_error(adm(sg, "PATCH", "/admin/teams/" + t["id"], {"team": t["id"]}), 400)
    h.expect_error(adm(sg, "POST", "/admin/keys/%s/rotate" % kid, {"grace_s": -1}), 400)
    h.expect_eq(stable(get(sg, "teams", t["id"])), tview, "team view after key-only fields")
    ok(sg, k["key"])  # the secret did not rotate either

    with sg.connect() as c:
        big = json.dumps({"name": "y", "metadata": {"pad": "p" * 150000}}).encode()
        c.send_until_reply(h.build_request("PATCH", "/admin/keys/" + kid, body=big, headers=hdr))
        h.expect_error(c.read_partial(), 413, code="body_too_large")
    h.expect_eq(stable(get(sg, "keys", kid)), view, "key view after the 413")

    for call in ("GET keys", "POST keys", "GET keys/" + kid, "PATCH keys/" + kid, "GET teams",
                 "DELETE keys/" + kid, "POST keys/%s/rotate" % kid, "POST teams",
                 "POST keys/%s/disable" % kid, "DELETE teams/" + t["id"], "GET spend"):
        method, path = call.split(" ")
        path = "/admin/" + path
        body = {"name": "z"} if method in ("POST", "PATCH") else None
        for auth in (None, "Bearer wrong-admin-key", "Bearer " + k["key"]):
            r = sg.request(method, path, body=body,
                           headers={"Authorization": auth} if auth else None)
            h.expect_error(r, 401)
    h.expect_eq(stable(get(sg, "keys", kid)), view, "key view after unauthorised calls")
    h.expect_eq(ids(sg), listed, "ids after unauthorised calls")
    ok(sg, k["key"])


# --- 7. persistence ------------------------------------------------------------------------


def test_keys_survive_sigterm_and_kill9():
    """teams and keys (disabled, rotated, patched, in a grace period) come back
    the same from auth.path after a SIGTERM and after a kill -9 that follows an
    admin change at once."""
    mock = h.Mock("--quiet")
    cfg = config(mock)
    sg = h.Semgate(cfg, env=ENV)
    t, t2 = create(sg, "teams", name="persist", models=[A]), create(sg, "teams", name="off")
    k1, k2, k3, k4, k5, k6 = [create(sg, name="k%d" % i, team=tm) for i, tm in
                              enumerate((t["id"], None, None, None, t2["id"], None), 1)]
    keys = {"k%d" % i: k["key"] for i, k in enumerate((k1, k2, k3, k4, k5, k6), 1)}
    for k in keys.values():
        ok(sg, k)
    h.expect_status(adm(sg, "POST", "/admin/keys/%s/disable" % k2["id"]), 200)
    h.expect_status(adm(sg, "POST", "/admin/teams/%s/disable" % t2["id"]), 200)
    keys["k3new"], keys["k6new"] = rotate(sg, k3["id"], 0), rotate(sg, k6["id"], 3600)
    h.expect_status(adm(sg, "PATCH", "/admin/keys/" + k4["id"], {
        "name": "patched twice", "models": [B], "rpm": 1000, "metadata": {"n": 1}}), 200)
    kids = [k["id"] for k in (k1, k2, k3, k4, k5, k6)]

    def snapshot(sg):
        return ({i: stable(get(sg, "keys", i)) for i in kids},
                {i: stable(get(sg, "teams", i)) for i in (t["id"], t2["id"])},
                [stable(v) for v in keys_list(sg)["data"]])

    def check(sg):
        ok(sg, keys["k1"])
        refused(chat(sg, keys["k1"], model=B), 403, "model_not_allowed", k1["id"])
        refused(chat(sg, keys["k2"]), 403, "key_disabled", k2["id"])
        refused(chat(sg, keys["k3"]), 401, "invalid_api_key", k3["id"])
        ok(sg, keys["k3new"])
        ok(sg, keys["k4"], model=B)
        refused(chat(sg, keys["k4"]), 403, "model_not_allowed", k4["id"])
        refused(chat(sg, keys["k5"]), 403, "key_disabled", k5["id"])
        ok(sg, keys["k6"])
        ok(sg, keys["k6new"])
        refused(chat(sg, None), 401, "missing_api_key")

    check(sg)
    snap = snapshot(sg)
    sg.signal(signal.SIGTERM)
    h.expect_eq(sg.wait_exit(30), 0, "exit code after SIGTERM")

    sg = h.Semgate(cfg, env=ENV)
    check(sg)
    h.expect_eq(snapshot(sg), snap, "views after SIGTERM and a restart")
    # an admin change answered is on disk: a kill -9 right after keeps it
    h.expect_status(adm(sg, "PATCH", "/admin/keys/" + k1["id"], {"name": "renamed"}), 200)
    h.expect_status(adm(sg, "POST", "/admin/keys/%s/enable" % k2["id"]), 200)
    snap = snapshot(sg)
    sg.stop()

    sg = h.Semgate(cfg, env=ENV)
    h.expect_eq(snapshot(sg), snap, "views after kill -9 and a restart")
    h.expect_eq(get(sg, "keys", k1["id"])["name"], "renamed", "name after kill -9")
    ok(sg, keys["k2"])
    h.expect_status(adm(sg, "POST", "/admin/keys/%s/disable" % k2["id"]), 200)
    check(sg)


# --- 8. configuration ---------------------------------------------------------------------


def test_keys_mode_config_errors():
    """keys mode without admin_key_env, or without a usable auth.secret_env,
    refuses to start, naming the option; semgate --check says the same."""
    mock = h.Mock("--quiet")
    short = "Zq9shrt"
    cases = [("auth.mode", lambda c: c.pop("admin_key_env"), ENV),
             ("auth.secret_env", lambda c: None, dict(ENV, SGT_SECRET=None)),
             ("auth.secret_env", lambda c: c["auth"].pop("secret_env"), ENV),
             ("auth.secret_env", lambda c: None, dict(ENV, SGT_SECRET=short))]
    for path, change, env in cases:
        cfg = config(mock)
        change(cfg)
        sg = h.Semgate(cfg, env=env, wait=False)
        rc = sg.wait_exit(15)
        h.expect(rc != 0, "semgate started without %s (rc %r): %s", path, rc, sg.log())
        h.expect(path in sg.log(), "the error does not name %s: %s", path, sg.log())
        h.expect(short not in sg.log(), "the error shows the secret: %s", sg.log())
        rc, out, err = h.run_semgate(["--check", sg.config_path], env=env)
        h.expect(rc != 0 and path in out + err, "--check: rc %r, output %r", rc, out + err)
    cfg = config(mock)
    sg = h.Semgate(cfg, env=ENV)
    rc, out, err = h.run_semgate(["--check", sg.config_path], env=ENV)
    h.expect(rc == 0 and "configuration OK" in out, "--check of a good config: %r %r %r",
             rc, out, err)


def test_reload_keeps_auth_mode_and_applies_live_options():
    """A reload cannot turn keys off (auth.mode and the secret are FIXED: named
    in not_applied, keys still required), while a LIVE option (a model's
    price, here the one budget.unpriced checks) applies to the next request."""
    mock, sg = start()
    key = create(sg, budget={"max_usd": 10.0})["key"]
    ok(sg, key)
    cfg = json.loads(json.dumps(sg.config))
    cfg["auth"]["mode"] = "off"
    cfg["auth"]["path"] = h.make_temp_dir("sg-a-other-")
    cfg.pop("admin_key_env")  # keys stay on, so the admin key must too
    for m in cfg["models"]:  # unpriced now: a budgeted call is refused
        m.pop("input_per_mtok")
        m.pop("output_per_mtok")
    with open(sg.config_path, "w") as f:
        json.dump(cfg, f)
    r = adm(sg, "POST", "/admin/reload")
    h.expect_status(r, 200)
    na = r.json()["not_applied"]
    h.expect("auth.mode" in na and "auth.path" in na and "admin_key_env" in na,
             "not_applied %r", na)
    r = sg.post_json("/admin/keys", {"name": "minted"})
    h.expect_status(r, 401)
    refused(chat(sg, None), 401, "missing_api_key")
    refused(chat(sg, key), 403, "model_unpriced")
    sg.assert_alive()


if __name__ == "__main__":
    h.main()
