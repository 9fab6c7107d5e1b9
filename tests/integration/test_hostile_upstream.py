"""Hostile upstreams (issue 9): streams that say [DONE] where they should not or
never say they finished, malformed server-sent events, and 2xx replies that
are not answers. Each is sent through semgate with the harness's default
config (the cache on) and checked against what a correct gateway must do:

- A stream is complete only when `data: [DONE]` came as a whole SSE data line
  at an event boundary; the text inside a JSON string does not count. A
  stream the upstream cut ends for the client with semgate's error event
  (code upstream_stream_interrupted, see README) and is not stored; neither
  is a stream that never carried a finish_reason.
- Whatever the upstream sent, the client receives valid SSE: events made of
  `data: <JSON>` lines (comment lines allowed) each ended by a blank line,
  the last one `data: [DONE]` or an error event, nothing after it and no
  other line. Invalid events may be dropped or end the stream with an error
  event; valid but unusual SSE (comments, multi-line data, CRLF, CR) still
  delivers the whole answer. If such a stream was stored, its replay is a
  valid stream with the whole answer: nothing malformed is stored.
- A 2xx whose body is not a chat completion (choices [null], [], a choice
  without a message, an `error` object beside choices, JSON that is not an
  object) or a completion answered 201/206 is not stored: the identical
  repeat is a miss that reaches the upstream again. What the client gets is
  not fixed by the README for these, so the tests accept either the
  upstream's status and body passed through or a 502 error in OpenAI's
  shape, and check that semgate keeps answering.

"Not stored" is checked after a barrier: a good request of the same kind is
sent and repeated until it is an exact hit (stores happen in completion
order), then the faulty request is repeated.

The fault markers are documented at the top of bench/mock/main.c.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
HITS = ("hit-exact", "hit-semantic")
# [[done-in-content]]: the text every answer starts with (DONE_TEXT in bench/mock/mock.h).
DONE_TEXT = "A stream of server-sent events ends with:\n\ndata: [DONE]\n\n"


# --- requests ---------------------------------------------------------------------


def body_for(path, prompt, stream=False):
    if path == CHAT:
        return h.chat_body(prompt, stream=stream)
    body = {"model": h.MODEL, "prompt": prompt}
    if stream:
        body["stream"] = True
    return body


def call(sg, path, body):
    """One request on a fresh connection; the response as far as it came
    (resp.complete tells whether its framing ended properly)."""
    with sg.connect(timeout=30) as c:
        c.send(h.build_request("POST", path, body=body))
        return c.read_partial()


def upstream_count(mock, path):
    return mock.stats()["chat" if path == CHAT else "completions"]


def answer(prompt, done_in_content=False):
    return (DONE_TEXT if done_in_content else "") + "mock answer to: " + prompt


# --- strict SSE ---------------------------------------------------------------------


class Stream:
    """A stream as the client received it, parsed strictly."""

    def __init__(self, objs, terminal, error):
        self.objs = objs  # the JSON objects of the data events before the terminal one
        self.terminal = terminal  # "done" or "error"
        self.error = error  # the error event's "error" object, or None
        self.content = ""
        self.finish_reasons = []
        for o in objs:
            for ch in o.get("choices") or []:
                if not isinstance(ch, dict):
                    continue
                delta = ch.get("delta") if isinstance(ch.get("delta"), dict) else {}
                if isinstance(delta.get("content"), str):
                    self.content += delta["content"]
                elif isinstance(ch.get("text"), str):
                    self.content += ch["text"]
                if ch.get("finish_reason"):
                    self.finish_reasons.append(ch["finish_reason"])


def strict_sse(resp, status=200):
    """Parse resp's body as the SSE a client must get from semgate, or fail
    naming the first violation: valid UTF-8; lines ended by LF, CRLF or CR;
    only `data:` lines, comment lines and blank lines; every event ended by a
    blank line; each event's data (lines joined by LF) a JSON object or
    [DONE]; the last event [DONE] or an error event, and only the last."""
    h.expect_status(resp, status)
    ct = (resp.header("Content-Type") or "").lower()
    h.expect(ct.startswith("text/event-stream"), "Content-Type %r, want text/event-stream", ct)
    h.expect(resp.complete, "the response did not end properly (no chunked terminator); "
             "last bytes %r", resp.body[-200:])
    try:
        text = resp.body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise h.TestFailure("the stream is not UTF-8 (%s)" % e)
    lines = re.split(r"\r\n|\r|\n", text)
    rest = lines.pop()  # what follows the last line end
    h.expect(rest == "", "the stream ends inside a line: %r", rest[-200:])
    events, datas = [], []
    for i, line in enumerate(lines):
        if line == "":
            if datas:
                events.append("\n".join(datas))
            datas = []
        elif line.startswith(":"):
            continue  # a comment: valid, ignored by clients
        elif line.startswith("data:"):
            v = line[5:]
            datas.append(v[1:] if v.startswith(" ") else v)
        else:
            raise h.TestFailure("line %d is not a data line, a comment or a blank line: %r"
                                % (i + 1, line[:200]))
    h.expect(not datas, "the last event is not ended by a blank line: %r",
             "\n".join(datas)[-200:])
    h.expect(events, "no events at all")
    objs = []
    for k, data in enumerate(events):
        last = k == len(events) - 1
        if data == "[DONE]":
            h.expect(last, "[DONE] is event %d of %d: events follow it", k + 1, len(events))
            return Stream(objs, "done", None)
        try:
            obj = json.loads(data)
        except ValueError:
            raise h.TestFailure("event %d's data is not JSON: %r" % (k + 1, data[:200]))
        h.expect(isinstance(obj, dict), "event %d's data is not a JSON object: %r",
                 k + 1, data[:200])
        if "error" in obj:
            err = obj["error"]
            h.expect(last, "an error event is followed by other events: %r", obj)
            h.expect(isinstance(err, dict) and isinstance(err.get("message"), str)
                     and isinstance(err.get("type"), str) and "code" in err,
                     "the error event is not {\"error\":{message,type,code}}: %r", obj)
            return Stream(objs, "error", err)
        h.expect(isinstance(obj.get("choices"), list), "event %d has no choices list: %r",
                 k + 1, data[:200])
        objs.append(obj)
    raise h.TestFailure("the stream ends with neither data: [DONE] nor an error event; "
                        "last event %r" % events[-1][:200])


def expect_interrupted(resp):
    """A stream the upstream broke off: well-formed, its last event semgate's
    error event upstream_stream_interrupted, no [DONE] anywhere."""
    h.expect(resp.status != 200 or b"upstream_stream_interrupted" in resp.body,
             "the cut stream reached the client without semgate's error event "
             "(upstream_stream_interrupted), as if it were complete; last bytes %r",
             resp.body[-200:])
    s = strict_sse(resp)
    h.expect(s.terminal == "error", "the cut stream ended with a clean data: [DONE] instead "
             "of semgate's error event (last bytes %r)", resp.body[-160:])
    h.expect_eq(s.error.get("code"), "upstream_stream_interrupted", "error event code")
    return s


def expect_whole(resp, want):
    """A stream that must deliver the whole answer and end with [DONE]."""
    s = strict_sse(resp)
    h.expect(s.terminal == "done", "the stream ended with an error event: %r", s.error)
    h.expect_eq(s.content, want, "content the client received")
    h.expect(s.finish_reasons, "no finish_reason reached the client")
    return s


def expect_valid_or_error(resp, want):
    """Malformed upstream SSE: the client gets valid SSE; either the junk was
    dropped (the whole answer, then [DONE]) or the stream ends with an error
    event. A 502 before the stream began is accepted too."""
    if resp.status != 200:
        h.expect_error(resp, 502)
        return None
    s = strict_sse(resp)
    if s.terminal == "done":
        h.expect_eq(s.content, want, "content of a stream that ended with [DONE]")
    return s


# --- the cache ----------------------------------------------------------------------


def settle(sg, path, stream):
    """Barrier: a good request of the same kind is stored (repeated until it is
    an exact hit). Also shows that semgate still answers."""
    p = h.unique("quokka marmalade barrier")
    body = body_for(path, p, stream)
    r = call(sg, path, body)
    if stream:
        expect_whole(r, answer(p))
    else:
        h.expect_status(r, 200)

    def stored():
        r = call(sg, path, body)
        h.expect_status(r, 200)
        return r.header("X-Semgate-Cache") == "hit-exact"
    h.wait_for(stored, timeout=5, what="a good request after the fault to be stored")


def expect_not_stored(sg, mock, path, body, what):
    """body's reply was not stored: after the barrier, the identical repeat is
    a miss that reaches the upstream. Returns the repeat's response."""
    settle(sg, path, bool(body.get("stream")))
    n = upstream_count(mock, path)
    r = call(sg, path, body)
    state = r.header("X-Semgate-Cache")
    h.expect(state not in HITS, "%s was stored: the identical repeat is a %s (entry %s), "
             "status %d" % (what, state, r.header("X-Semgate-Cache-Id"), r.status))
    h.expect(state is None or state == "miss", "X-Semgate-Cache of the repeat: %r", state)
    h.expect(upstream_count(mock, path) >= n + 1, "the repeat did not reach the upstream")
    return r


def expect_stored_well(sg, mock, path, body, want, what):
    """Nothing malformed is stored: the repeat is either a miss reaching the
    upstream, or a hit whose replay is a valid stream of the whole answer."""
    settle(sg, path, True)
    n = upstream_count(mock, path)
    r = call(sg, path, body)
    state = r.header("X-Semgate-Cache")
    if state in HITS:
        try:
            expect_whole(r, want)
        except h.TestFailure as e:
            raise h.TestFailure("%s was stored and its replay is wrong: %s" % (what, e))
    else:
        h.expect(upstream_count(mock, path) >= n + 1, "the repeat (%s) did not reach the "
                 "upstream", state)


class Problems:
    """Independent checks of one test: all are run, all failures reported."""

    def __init__(self):
        self.msgs = []

    def check(self, what, fn, *args):
        try:
            return fn(*args)
        except h.TestFailure as e:
            self.msgs.append("%s: %s" % (what, e))
            return None

    def done(self):
        if self.msgs:
            raise h.TestFailure("\n  ".join(["%d problem(s):" % len(self.msgs)] + self.msgs))


# --- [DONE] and completeness -----------------------------------------------------------


def test_clean_cut_stream_is_interrupted():
    """Control for the next tests: a stream whose upstream ends its HTTP reply
    properly (zero-size chunk) after 2 of its events, without finish_reason or
    [DONE], ends with semgate's upstream_stream_interrupted error event and is
    not stored."""
    mock, sg = h.start("--quiet", "--stream-chunks", "4")
    p = h.unique("tell me about tides [[cut=2]] [[clean-end]]")
    body = body_for(CHAT, p, stream=True)
    pr = Problems()
    pr.check("client", expect_interrupted, call(sg, CHAT, body))
    pr.check("cache", expect_not_stored, sg, mock, CHAT, body, "a cut stream")
    pr.done()


def done_in_content_cut(path, cut):
    mock, sg = h.start("--quiet", "--stream-chunks", "4")
    p = h.unique("explain server sent events [[done-in-content]] [[cut=%d]] [[clean-end]]" % cut)
    body = body_for(path, p, stream=True)
    r = call(sg, path, body)
    h.expect(b"data: [DONE]\\n\\n" in r.body,
             "the mock's content piece holding data: [DONE] did not reach the client: %r",
             r.body[-400:])
    pr = Problems()
    pr.check("client", expect_interrupted, r)
    pr.check("cache", expect_not_stored, sg, mock, path, body,
             "a cut stream whose content held the text data: [DONE]")
    pr.done()


def test_done_in_content_cut_stream_chat():
    """Defect: "a stream counts as complete when `data: [DONE]` appears anywhere
    in its bytes". A chat stream whose content piece holds the text
    data: [DONE]\\n\\n inside a JSON string, then cut (HTTP ends properly),
    must end with the upstream_stream_interrupted error event and not be
    stored."""
    done_in_content_cut(CHAT, 3)  # role chunk, the [DONE] text, one more piece


def test_done_in_content_cut_stream_completions():
    """Defect: "a stream counts as complete when `data: [DONE]` appears anywhere
    in its bytes", on /v1/completions: a text_completion stream whose text
    holds data: [DONE]\\n\\n, cut, must end with the error event and not be
    stored."""
    done_in_content_cut(TEXT, 2)  # the [DONE] text, one more piece


def test_done_in_content_transport_cut():
    """Defect guard for "[DONE] anywhere in the bytes": the same stream cut by a
    closed connection (no chunked terminator) also ends with the error event
    and is not stored."""
    mock, sg = h.start("--quiet", "--stream-chunks", "4")
    p = h.unique("explain server sent events [[done-in-content]] [[cut=3]]")
    body = body_for(CHAT, p, stream=True)
    pr = Problems()
    pr.check("client", expect_interrupted, call(sg, CHAT, body))
    pr.check("cache", expect_not_stored, sg, mock, CHAT, body,
             "a cut stream whose content held the text data: [DONE]")
    pr.done()


def test_done_in_content_complete_stream():
    """Guard against over-correcting "[DONE] anywhere in the bytes": a complete
    stream whose content holds the text data: [DONE]\\n\\n is delivered whole,
    ends with exactly one real [DONE], is stored, and its replay holds the
    same text."""
    mock, sg = h.start("--quiet", "--stream-chunks", "4")
    p = h.unique("explain server sent events [[done-in-content]]")
    body = body_for(CHAT, p, stream=True)
    want = answer(p, done_in_content=True)
    expect_whole(call(sg, CHAT, body), want)

    def hit():
        r = call(sg, CHAT, body)
        return r if r.header("X-Semgate-Cache") == "hit-exact" else None
    r = h.wait_for(hit, timeout=5, what="the complete stream to be stored")
    expect_whole(r, want)


def test_stream_without_finish_reason_not_stored():
    """Defect: a stream is stored without having carried a finish reason. A
    stream (chat, then completions) that ends with a proper data: [DONE] but
    whose chunks all have finish_reason null reaches the client as valid SSE
    and is not stored."""
    mock, sg = h.start("--quiet", "--stream-chunks", "4")
    pr = Problems()
    for path in (CHAT, TEXT):
        p = h.unique("name three rivers [[no-finish]]")
        body = body_for(path, p, stream=True)
        s = pr.check(path + " client", strict_sse, call(sg, path, body))
        if s is not None and s.terminal == "done":
            pr.check(path + " client", h.expect_eq, s.content, answer(p), "content")
        pr.check(path + " cache", expect_not_stored, sg, mock, path, body,
                 "a stream without a finish_reason")
    pr.done()


# --- malformed and unusual SSE ------------------------------------------------------------


def malformed(kind, paths=(CHAT,), dropped=False):
    """[[sse=kind]] junk in an otherwise complete stream: valid SSE for the
    client, nothing malformed stored, semgate still answering. dropped: the
    junk is an event semgate must drop and count in /stats."""
    mock, sg = h.start("--quiet", "--stream-chunks", "4")
    pr = Problems()
    for path in paths:
        p = h.unique("describe the moon [[sse=%s]]" % kind)
        body = body_for(path, p, stream=True)
        pr.check(path + " client", expect_valid_or_error, call(sg, path, body), answer(p))
        pr.check(path + " cache", expect_stored_well, sg, mock, path, body, answer(p),
                 "a stream with [[sse=%s]]" % kind)
    if dropped:
        st = sg.request("GET", "/stats").json()
        h.expect(st["server"]["upstream_sse_events_dropped"] >= len(paths),
                 "dropped events not counted: %r", st["server"])
    sg.assert_alive()
    pr.done()


def test_sse_event_not_json():
    """Defect: "malformed SSE events from an upstream are relayed as they are".
    An event `data: this is not json {` amid a stream (chat and completions)
    must not reach the client as it is."""
    malformed("garbage", (CHAT, TEXT), dropped=True)


def test_sse_line_without_field_name():
    """Defect: "malformed SSE events from an upstream are relayed as they are".
    A line `this line has no field name` (no colon) amid a stream must not
    reach the client as it is."""
    malformed("nofield")


def test_sse_huge_line():
    """Defect: "malformed SSE events from an upstream are relayed as they are".
    A 2 MiB line `data: xxx...` (not JSON) amid a stream must not reach the
    client as it is; semgate stays up."""
    malformed("huge-line")


def test_sse_no_final_blank_line():
    """Defect: "malformed SSE events from an upstream are relayed as they are".
    A stream whose last event, data: [DONE], lacks its blank line must still
    reach the client as well-formed SSE: [DONE] with its blank line, or an
    error event."""
    malformed("noblank", (CHAT, TEXT))


def unusual(kind, paths=(CHAT,)):
    """[[sse=kind]]: valid SSE written unusually; the whole answer reaches the
    client, and what is stored (if anything) replays correctly."""
    mock, sg = h.start("--quiet", "--stream-chunks", "4")
    pr = Problems()
    for path in paths:
        p = h.unique("describe the moon [[sse=%s]]" % kind)
        body = body_for(path, p, stream=True)
        pr.check(path + " client", expect_whole, call(sg, path, body), answer(p))
        pr.check(path + " cache", expect_stored_well, sg, mock, path, body, answer(p),
                 "a stream with [[sse=%s]]" % kind)
    pr.done()


def test_sse_comment_lines():
    """Guard for the malformed-SSE fix: comment lines (": keepalive") are valid
    SSE; the whole answer is delivered."""
    unusual("comment")


def test_sse_multiline_data():
    """Guard for the malformed-SSE fix: a JSON event split over two data: lines
    is valid SSE (joined with a newline); the whole answer is delivered."""
    unusual("multiline", (CHAT, TEXT))


def test_sse_crlf_line_ends():
    """Guard for the malformed-SSE fix: CRLF line ends are valid SSE; the whole
    answer is delivered."""
    unusual("crlf")


def test_sse_cr_line_ends():
    """Guard for the malformed-SSE fix: lone-CR line ends are valid SSE; the
    whole answer is delivered."""
    unusual("cr")


def test_sse_huge_valid_line():
    """Guard for the malformed-SSE fix: one valid 2 MiB content event (a single
    line) is delivered whole."""
    mock, sg = h.start("--quiet", "--stream-chunks", "1")
    n = 2 * 1024 * 1024
    p = h.unique("[[huge=%d]] one long line" % n)
    s = expect_whole(call(sg, CHAT, body_for(CHAT, p, stream=True)), "x" * n)
    h.expect_eq(len(s.content), n, "content length")
    sg.assert_alive()


# --- 2xx non-answers --------------------------------------------------------------------


def strip_ids(obj):
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k not in ("id", "created")}
    return obj


def non_answer(marker, paths=(CHAT,), stream=False):
    """A 2xx that is not an answer: the client gets the upstream's status and
    body, or a 502 error; it is not stored; semgate keeps answering."""
    mock, sg = h.start("--quiet", "--stream-chunks", "3")
    pr = Problems()
    for path in paths:
        p = h.unique("what is a lighthouse " + marker)
        body = body_for(path, p, stream=stream)
        n = upstream_count(mock, path)
        r = call(sg, path, body)
        pr.check(path + " upstream", h.expect, upstream_count(mock, path) >= n + 1,
                 "the request did not reach the upstream")
        pr.check(path + " cache", h.expect, r.header("X-Semgate-Cache-Id") is None,
                 "the reply was stored as entry %s (status %d, body %r)"
                 % (r.header("X-Semgate-Cache-Id"), r.status, r.body[:200]))
        direct = h.request(mock.host, mock.port, "POST", path,
                           body=dict(body, model=h.UPSTREAM_MODEL))
        if r.status == 502:
            pr.check(path + " client", h.expect_error, r, 502)
        elif not stream:
            pr.check(path + " client", h.expect_eq, r.status, direct.status,
                     "status (neither the upstream's passed through nor 502)")
            try:
                got, want = strip_ids(json.loads(r.body)), strip_ids(json.loads(direct.body))
            except ValueError:
                got, want = r.body, direct.body
            pr.check(path + " client", h.expect_eq, got, want, "body passed through")
        else:
            pr.check(path + " client", h.expect_eq, r.status, direct.status,
                     "status (neither the upstream's passed through nor 502)")
            pr.check(path + " client", strict_sse, r, direct.status)
        pr.check(path + " cache", expect_not_stored, sg, mock, path, body,
                 "a %d reply with %s" % (direct.status, marker))
    sg.assert_alive()
    pr.done()


def test_choices_null_not_stored():
    """Defect: "non-answers cached". A 200 with "choices":[null] is not a chat
    completion and must not be stored (chat and completions)."""
    non_answer("[[body=choices-null]]", (CHAT, TEXT))


def test_choices_empty_not_stored():
    """Defect: "non-answers cached". A 200 with "choices":[] must not be
    stored."""
    non_answer("[[body=choices-empty]]")


def test_choice_without_message_not_stored():
    """Defect: "non-answers cached". A 200 with "choices":[{"index":0}] (no
    message, no text) must not be stored (chat and completions)."""
    non_answer("[[body=no-message]]", (CHAT, TEXT))


def test_error_beside_choices_not_stored():
    """Defect: "non-answers cached". A 200 holding an "error" object beside
    valid choices must not be stored."""
    non_answer("[[body=error-and-choices]]", (CHAT, TEXT))


def test_json_array_body_not_stored():
    """Defect: "non-answers cached". A 200 whose body is the JSON array [] must
    not be stored."""
    non_answer("[[body=array]]")


def test_json_string_body_not_stored():
    """Defect: "non-answers cached". A 200 whose body is a JSON string must not
    be stored."""
    non_answer("[[body=string]]")


def test_status_201_not_stored():
    """Defect: "non-answers cached". A valid completion answered 201 must not be
    stored (chat and completions)."""
    non_answer("[[ok-status=201]]", (CHAT, TEXT))


def test_status_206_not_stored():
    """Defect: "non-answers cached". A valid completion answered 206 Partial
    Content must not be stored."""
    non_answer("[[ok-status=206]]")


def test_stream_status_201_not_stored():
    """Defect: "non-answers cached", streamed: a complete stream answered 201
    must not be stored; the client gets the 201 stream as valid SSE or a
    502."""
    non_answer("[[ok-status=201]]", stream=True)


if __name__ == "__main__":
    h.main()
