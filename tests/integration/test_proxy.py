"""The proxied endpoints, response headers, routing, credentials, the built-in
endpoints and the client-visible request errors."""

import http.client
import http.server
import os
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def expect_proxy_headers(resp, upstream="gpt-4o-mini/0"):
    rid = resp.header("X-Request-Id")
    h.expect(rid, "X-Request-Id missing or empty: %r", resp.headers.pairs)
    h.expect_eq(resp.header("X-Semgate-Upstream"), upstream, "X-Semgate-Upstream")
    return rid


def test_chat_completion():
    mock, sg = h.start("--quiet")
    prompt = h.unique("what is the capital of France?")
    r = sg.post_json("/v1/chat/completions", h.chat_body(prompt))
    obj = h.expect_answer(r, prompt)
    h.expect((r.header("Content-Type") or "").startswith("application/json"),
             "Content-Type %r", r.header("Content-Type"))
    h.expect_eq(obj["choices"][0]["message"]["role"], "assistant", "role")
    expect_proxy_headers(r)
    st = mock.stats()
    h.expect(st["chat"] >= 1, "mock saw no chat request: %r", st)
    h.expect_eq(st["last_model"], h.UPSTREAM_MODEL, "model sent upstream")


def test_chat_uses_last_user_message():
    mock, sg = h.start("--quiet")
    prompt = h.unique("second question")
    body = {"model": h.MODEL, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": prompt}]}
    h.expect_answer(sg.post_json("/v1/chat/completions", body), prompt)


def test_request_ids_unique_and_echoed():
    mock, sg = h.start("--quiet")
    ids = set()
    for _ in range(3):
        r = sg.post_json("/v1/chat/completions", h.chat_body(h.unique()))
        h.expect_status(r, 200)
        ids.add(expect_proxy_headers(r))
    h.expect_eq(len(ids), 3, "distinct X-Request-Id values over 3 requests")
    r = sg.post_json("/v1/chat/completions", h.chat_body(h.unique()),
                     headers={"X-Request-Id": "my-trace-123"})
    h.expect_status(r, 200)
    h.expect_eq(r.header("X-Request-Id"), "my-trace-123", "echoed X-Request-Id")


def test_completions():
    mock, sg = h.start("--quiet")
    prompt = h.unique("once upon a time")
    r = sg.post_json("/v1/completions", {"model": h.MODEL, "prompt": prompt, "max_tokens": 5})
    h.expect_status(r, 200)
    obj = r.json()
    h.expect_eq(obj["choices"][0]["text"], "mock answer to: " + prompt, "choices[0].text")
    expect_proxy_headers(r)
    st = mock.stats()
    h.expect(st["completions"] >= 1, "mock saw no completions request: %r", st)
    h.expect_eq(st["last_model"], h.UPSTREAM_MODEL, "model sent upstream")


def test_embeddings():
    mock, sg = h.start("--quiet", "--embed-dim", "16")
    r = sg.post_json("/v1/embeddings", {"model": h.MODEL, "input": h.unique("embed me")})
    h.expect_status(r, 200)
    obj = r.json()
    h.expect_eq(obj.get("object"), "list", "object")
    emb = obj["data"][0]["embedding"]
    h.expect_eq(len(emb), 16, "embedding length")
    h.expect(all(isinstance(x, (int, float)) for x in emb), "embedding not numeric: %r", emb)
    expect_proxy_headers(r)
    st = mock.stats()
    h.expect(st["embeddings"] >= 1, "mock saw no embeddings request: %r", st)
    r = sg.post_json("/v1/embeddings", {"model": h.MODEL, "input": ["a", "b", "c"]})
    h.expect_status(r, 200)
    h.expect_eq(len(r.json()["data"]), 3, "embeddings for a 3-item input")


def test_models_list():
    mock = h.Mock("--quiet")
    cfg = h.base_config(mock)
    cfg["models"].append({"name": "other-model", "deployments": [{"base_url": mock.url}]})
    sg = h.Semgate(cfg)
    r = sg.request("GET", "/v1/models")
    h.expect_status(r, 200)
    h.expect((r.header("Content-Type") or "").startswith("application/json"), "Content-Type")
    h.expect_eq(r.json(), {"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "semgate"},
        {"id": "other-model", "object": "model", "created": 0, "owned_by": "semgate"}]},
        "/v1/models body")


def test_healthz_readyz():
    mock, sg = h.start("--quiet")
    r = sg.request("GET", "/healthz")
    h.expect_status(r, 200)
    h.expect_eq(r.json(), {"status": "ok"}, "/healthz body")
    h.expect((r.header("Content-Type") or "").startswith("application/json"), "Content-Type")
    r = sg.request("GET", "/readyz")
    h.expect_status(r, 200)
    h.expect_eq(r.json(), {"status": "ready"}, "/readyz body")


def test_routing_between_model_groups():
    mock_a = h.Mock("--quiet")
    mock_b = h.Mock("--quiet")
    cfg = h.base_config(mock_a)
    cfg["models"].append({"name": "claude-ish",
                          "deployments": [{"base_url": mock_b.url, "model": "b-model"}]})
    sg = h.Semgate(cfg)
    p = h.unique("for b")
    r = sg.post_json("/v1/chat/completions", h.chat_body(p, model="claude-ish"))
    h.expect_answer(r, p)
    expect_proxy_headers(r, "claude-ish/0")
    h.expect_eq(mock_b.stats()["last_model"], "b-model", "model sent to b")
    h.expect_eq(mock_a.stats()["chat"], 0, "chat requests that reached a")
    p = h.unique("for a")
    r = sg.post_json("/v1/chat/completions", h.chat_body(p))
    h.expect_answer(r, p)
    expect_proxy_headers(r, "gpt-4o-mini/0")
    h.expect_eq(mock_a.stats()["last_model"], h.UPSTREAM_MODEL, "model sent to a")


def test_deployment_model_defaults_to_group_name():
    mock = h.Mock("--quiet")
    cfg = {"models": [{"name": "plain-model", "deployments": [{"base_url": mock.url}]}]}
    sg = h.Semgate(cfg)
    p = h.unique()
    h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p, model="plain-model")), p)
    h.expect_eq(mock.stats()["last_model"], "plain-model", "model sent upstream")


def test_api_key_and_extra_headers_forwarded():
    key = "sk-test-" + h.unique("k").replace(" ", "").replace("#", "")
    mock, sg = h.start("--quiet", "--require-key", key, env={"SG_IT_API_KEY": key},
                       api_key_env="SG_IT_API_KEY", headers={"X-Extra": "1", "X-Team": "qa"})
    p = h.unique()
    h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p)), p)
    st = mock.stats()
    h.expect_eq(st["last_authorization"], "Bearer " + key, "Authorization sent upstream")
    h.expect_eq(st["last_headers"].get("x-extra"), "1", "X-Extra sent upstream")
    h.expect_eq(st["last_headers"].get("x-team"), "qa", "X-Team sent upstream")
    h.expect(key not in open(sg.config_path).read(), "the key is in the config file")
    h.expect(key not in sg.log(), "the key appears in semgate's log")


def test_api_key_env_unset_sends_no_key():
    key = "sk-needed"
    mock, sg = h.start("--quiet", "--require-key", key, env={"SG_IT_UNSET_KEY": None},
                       api_key_env="SG_IT_UNSET_KEY")
    r = sg.post_json("/v1/chat/completions", h.chat_body(h.unique()))
    # The mock rejects the missing key; semgate passes its 4xx through.
    h.expect(400 <= r.status < 500, "status %d, want the mock's 4xx rejection: %r",
             r.status, r.body)
    h.expect_error(r, r.status, upstream=True)
    auth = mock.stats().get("last_authorization")
    h.expect(not auth or key not in auth, "a key was sent: %r", auth)
    sg.assert_alive()


class ForwardProxy:
    """An HTTP forward proxy on a free port: records each request's target
    (absolute-form, as a client sends it to a proxy) and passes the request
    on to the mock, whatever host the target names."""

    def __init__(self, mock):
        self.targets = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                proxy.targets.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = urllib.parse.urlsplit(self.path).path
                up = http.client.HTTPConnection(mock.host, mock.port, timeout=10)
                up.request("POST", path, body=body,
                           headers={"Content-Type": "application/json"})
                r = up.getresponse()
                data = r.read()
                self.send_response(r.status)
                self.send_header("Content-Type", r.getheader("Content-Type") or "")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                up.close()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((h.HOST, 0), Handler)
        self.url = "http://%s:%d" % (h.HOST, self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# curl reads these (any case): cleared so that the test's own environment counts
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY", "no_proxy", "NO_PROXY")


def test_proxy_environment_honoured():
    """semgate tells curl there is no proxy only when the environment names
    none: with http_proxy set, upstream calls go through it, and no_proxy
    still exempts a host."""
    mock = h.Mock("--quiet")
    proxy = ForwardProxy(mock)
    try:
        env = dict.fromkeys(PROXY_VARS)
        env["http_proxy"] = proxy.url
        # a host name only the proxy can reach (it sends everything to the mock)
        target = "http://upstream.invalid:%d/v1" % mock.port
        with h.Semgate(h.base_config(base_url=target), env=env) as sg:
            p = h.unique("through the proxy")
            h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p)), p)
        h.expect_eq(proxy.targets, [target + "/chat/completions"], "what the proxy was asked")

        env["no_proxy"] = h.HOST
        with h.Semgate(h.base_config(mock), env=env) as sg:
            p = h.unique("around the proxy")
            h.expect_answer(sg.post_json("/v1/chat/completions", h.chat_body(p)), p)
        h.expect_eq(len(proxy.targets), 1, "requests through the proxy once no_proxy names the mock")
        h.expect(mock.stats()["chat"] >= 2, "the mock did not answer both: %r", mock.stats())
    finally:
        proxy.close()


def test_client_authorization_not_required():
    mock, sg = h.start("--quiet")
    p = h.unique()
    r = sg.post_json("/v1/chat/completions", h.chat_body(p),
                     headers={"Authorization": "Bearer whatever-the-client-has"})
    h.expect_answer(r, p)


def test_http10_proxied_request():
    mock, sg = h.start("--quiet")
    p = h.unique()
    with sg.connect() as c:
        c.send(h.build_request("POST", "/v1/chat/completions", body=h.chat_body(p),
                               version="HTTP/1.0"))
        r = c.read_response()
        h.expect_answer(r, p)
        h.expect(c.wait_closed(10), "HTTP/1.0 connection not closed after the reply")


# --- errors -----------------------------------------------------------------------


def test_not_found():
    mock, sg = h.start("--quiet")
    for method, path in (("GET", "/"), ("GET", "/v1/nope"), ("POST", "/v1/chat"),
                         ("GET", "/v2/models"), ("GET", "/healthz/extra")):
        r = sg.request(method, path, body=b"{}" if method == "POST" else None)
        h.expect_error(r, 404, code="not_found", type_="invalid_request_error")


def test_method_not_allowed():
    mock, sg = h.start("--quiet")
    for method, path, allow in (("GET", "/v1/chat/completions", "POST"),
                                ("PUT", "/chat/completions", "POST"),
                                ("DELETE", "/v1/completions", "POST"),
                                ("GET", "/v1/embeddings", "POST"), ("POST", "/v1/models", "GET"),
                                ("POST", "/healthz", "GET"), ("DELETE", "/readyz", "GET")):
        r = sg.request(method, path, body=b"{}" if method in ("POST", "PUT") else None)
        h.expect_error(r, 405, code="method_not_allowed", type_="invalid_request_error")
        h.expect_eq(r.headers.get("Allow"), allow, f"Allow of {method} {path}")
    sg.assert_alive()


def test_query_string_ignored_for_routing():
    mock, sg = h.start("--quiet")
    r = sg.request("GET", "/v1/models?limit=5")
    h.expect_status(r, 200)
    h.expect_eq(r.json()["object"], "list", "object")


def test_invalid_json():
    mock, sg = h.start("--quiet")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        for body in (b"{", b"not json", b'{"model": "gpt-4o-mini",}', b"", b"{} trailing"):
            r = sg.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            h.expect_error(r, 400, code="invalid_json", type_="invalid_request_error")
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")


def test_invalid_request_fields():
    mock, sg = h.start("--quiet")
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        ("/v1/chat/completions", [1, 2], None),
        ("/v1/chat/completions", b'"a string"', None),  # valid JSON, not an object
        ("/v1/chat/completions", b"42", None),
        ("/v1/chat/completions", b"null", None),
        ("/v1/chat/completions", {"messages": msgs}, "model"),
        ("/v1/chat/completions", {"model": 42, "messages": msgs}, "model"),
        ("/v1/chat/completions", {"model": h.MODEL}, "messages"),
        ("/v1/chat/completions", {"model": h.MODEL, "messages": []}, "messages"),
        ("/v1/chat/completions", {"model": h.MODEL, "messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"model": h.MODEL, "messages": ["hi"]}, "messages"),
        ("/v1/chat/completions", {"model": h.MODEL, "messages": [{"content": "hi"}]}, "role"),
        ("/v1/chat/completions", {"model": h.MODEL, "messages": [{"role": 1}]}, "role"),
        ("/v1/completions", {"model": h.MODEL}, "prompt"),
        ("/v1/completions", {"prompt": "hi"}, "model"),
        ("/v1/embeddings", {"model": h.MODEL}, "input"),
        ("/v1/embeddings", {"input": "x"}, "model"),
    ]
    failures = []
    for path, body, field in cases:
        r = sg.post_json(path, body)
        try:
            h.expect_error(r, 400, code="invalid_request", type_="invalid_request_error",
                           message_contains=field)
        except h.TestFailure as e:
            failures.append("POST %s %r: %s" % (path, body, e))
    h.expect(not failures, "%d of %d cases wrong:\n%s", len(failures), len(cases),
             "\n".join(failures))
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")


def test_unknown_model():
    mock, sg = h.start("--quiet")
    r = sg.post_json("/v1/chat/completions", h.chat_body("hi", model="no-such-model"))
    h.expect_error(r, 404, code="model_not_found")
    r = sg.post_json("/v1/completions", {"model": "no-such-model", "prompt": "x"})
    h.expect_error(r, 404, code="model_not_found")
    r = sg.post_json("/v1/embeddings", {"model": "no-such-model", "input": "x"})
    h.expect_error(r, 404, code="model_not_found")
    # The deployment's upstream model name is not a client-visible model.
    r = sg.post_json("/v1/chat/completions", h.chat_body("hi", model=h.UPSTREAM_MODEL))
    h.expect_error(r, 404, code="model_not_found")
    h.expect_eq(mock.stats()["requests"], 0, "requests that reached the mock")


def test_errors_keep_connection_usable():
    mock, sg = h.start("--quiet")
    with sg.connect() as c:
        h.expect_error(c.request("POST", "/v1/chat/completions", body=b"{"), 400, "invalid_json")
        h.expect_error(c.request("GET", "/nope"), 404, "not_found")
        h.expect_error(c.request("POST", "/v1/chat/completions",
                                 body=h.chat_body("x", model="nope")), 404, "model_not_found")
        p = h.unique()
        h.expect_answer(c.request("POST", "/v1/chat/completions", body=h.chat_body(p)), p)


if __name__ == "__main__":
    h.main()
