/* The mock upstream's router: which endpoint a request is, its faults
 * applied, its reply built (whole or as a stream); /mock/stats. */

#include "mock.h"

/* A chat or text completion: complete in r->body, or as r->stream. */
static void completion_reply(struct conn *c, struct reply *r, const struct call *a,
			     const json_t *root, const struct faults *f)
{
	struct mock *m = c->m;
	const json_t *t;
	const size_t *off;
	uint64_t ct = 0;
	size_t i;

	answers_begin(m);
	if (a->tool != NULL) {
		/* The answer is the call's arguments: {"q":"<prompt>"}. */
		buf_adds(&m->ans, "{\"q\":");
		buf_add_jstr(&m->ans, a->prompt, a->prompt_len);
		buf_addc(&m->ans, '}');
		buf_add(&m->offs, &m->ans.len, sizeof(m->ans.len));
	} else if (a->texts == NULL) {
		answers_add(m, a->prompt, a->prompt_len, f->huge, f->done_in_content);
	} else {
		for (i = 0; i < texts_count(a->texts); i++) {
			t = texts_at(a->texts, i);
			answers_add(m, json_string_value(t), json_string_length(t), f->huge,
				    f->done_in_content);
		}
	}
	if (m->ans.oom || m->offs.oom) {
		r->body->oom = 1;
		return;
	}
	off = (const size_t *)m->offs.base;
	for (i = 0; i + 1 < m->offs.len / sizeof(size_t); i++)
		ct += ceil4(off[i + 1] - off[i]);
	if (a->fmt == FMT_GEMINI ? !a->stream
				 : !json_is_true(json_object_get(root, "stream"))) {
		if (a->fmt == FMT_ANTHROPIC)
			anthropic_body(m, a, r->body, ct);
		else if (a->fmt == FMT_GEMINI)
			gemini_body(m, a, r->body, ct);
		else
			completion_body(m, a->api, r->body, a->model, a->model_len,
					a->prompt_tokens, ct, a->tool, a->tool_len, f->body,
					f->no_finish);
		return;
	}
	r->stream = stream_new(m, a->api, a->model, a->model_len, a->prompt_tokens, ct,
			       a->tool, a->tool_len);
	if (r->stream == NULL) {
		r->body->oom = 1;
		return;
	}
	r->stream->fmt = a->fmt;
	r->stream->include_usage = json_is_true(json_object_get(
		json_object_get(root, "stream_options"), "include_usage"));
	r->stream->retry_after = r->retry_after;
	r->stream->clean_end = f->clean_end;
	if (a->fmt == FMT_OPENAI) {
		r->stream->no_finish = f->no_finish;
		r->stream->no_done = f->no_done;
		r->stream->sse = f->sse;
		if (f->done_in_content && a->tool == NULL)
			r->stream->pre = sizeof(DONE_TEXT) - 1;
	}
	/* HTTP/1.0 has no chunked encoding: the stream ends with the connection. */
	r->stream->chunked = llhttp_get_http_major(&c->parser) == 1 &&
			     llhttp_get_http_minor(&c->parser) >= 1 &&
			     r->stream->no_done != 2;
	if (!r->stream->chunked)
		r->flags |= RF_CLOSE;
	m->st.streams_started++;
}

/* POST /v1/chat/completions, /v1/completions, /v1/embeddings; chat in
 * another format (fmt): /v1/messages, or Gemini's, whose model and stream
 * come from the URL (url_model, NULL otherwise). */
static void api_request(struct conn *c, struct reply *r, enum api api, enum fmt fmt,
			const char *url_model, size_t url_model_len, int stream)
{
	struct mock *m = c->m;
	struct call a = { api, "mock-model", 10, NULL, "", 0, 0, fmt, stream, NULL, 0 };
	const char *err;
	json_error_t jerr;
	struct faults f;
	json_t *root, *model;
	char msg[320];
	size_t n;

	if (fmt == FMT_ANTHROPIC)
		m->st.messages++;
	else if (fmt == FMT_GEMINI)
		m->st.gemini++;
	else if (api == API_CHAT)
		m->st.chat++;
	else if (api == API_TEXT)
		m->st.completions++;
	else
		m->st.embeddings++;
	root = json_loadb(c->body.base ? c->body.base : "", c->body.len, 0, &jerr);
	model = json_object_get(root, "model");
	if (url_model != NULL) {
		a.model = url_model;
		a.model_len = url_model_len;
	} else if (json_is_string(model)) {
		a.model = json_string_value(model);
		a.model_len = json_string_length(model);
	}
	if (url_model != NULL || json_is_string(model)) {
		buf_clear(&m->last_model);
		buf_add(&m->last_model, a.model, a.model_len);
		m->has_last_model = 1;
	}
	if (fmt == FMT_ANTHROPIC && !authorized_as(c, fmt)) {
		fmt_error(r, fmt, 401, "invalid x-api-key");
		goto out;
	} else if (fmt == FMT_GEMINI && !authorized_as(c, fmt)) {
		fmt_error(r, fmt, 400, "API key not valid. Please pass a valid API key.");
		goto out;
	} else if (!authorized(c) && fmt == FMT_OPENAI) {
		error_reply(r, 401, "invalid_request_error", "\"invalid_api_key\"",
			    "Incorrect API key provided.", 27);
		goto out;
	}
	if (fmt == FMT_ANTHROPIC && hdr_get(&c->hdrs, "anthropic-version", &n) == NULL) {
		fmt_error(r, fmt, 400, "anthropic-version: header is required");
		goto out;
	}
	if (root == NULL) {
		snprintf(msg, sizeof(msg), "We could not parse the JSON body of your "
			 "request: %s (line %d, column %d)", jerr.text, jerr.line,
			 jerr.column);
		fmt_error(r, fmt, 400, msg);
		goto out;
	}
	if (!json_is_object(root))
		err = "The request body must be a JSON object.";
	else if (fmt == FMT_ANTHROPIC)
		err = read_anthropic(m, root, &a);
	else if (fmt == FMT_GEMINI)
		err = read_gemini(m, root, &a);
	else
		err = api == API_CHAT ? read_chat(m, root, &a) : read_texts(root, &a);
	if (err != NULL) {
		fmt_error(r, fmt, 400, err);
		goto out;
	}

	parse_faults(a.prompt, a.prompt_len, &f);
	if (!m->quiet && (f.status || f.reset || f.delay_ms || f.cut >= 0 ||
			  f.garbage || f.huge >= 0 || f.retry_after >= 0))
		fprintf(stderr, "mock-upstream: fault: status=%d reset=%d delay=%" PRIu64
			" cut=%" PRId64 " garbage=%d huge=%" PRId64 "\n", f.status,
			f.reset, f.delay_ms, f.cut, f.garbage, f.huge);
	if (!m->quiet && (f.clean_end || f.done_in_content || f.no_finish || f.no_done ||
			  f.sse || f.body || f.ok_status))
		fprintf(stderr, "mock-upstream: fault: clean-end=%d done-in-content=%d "
			"no-finish=%d no-done=%d sse=%#x body=%s ok-status=%d\n", f.clean_end,
			f.done_in_content, f.no_finish, f.no_done, f.sse, body_kinds[f.body],
			f.ok_status);
	r->delay_ms += f.delay_ms;
	r->retry_after = f.retry_after;
	if (f.reset) {
		r->flags |= RF_RESET | RF_CLOSE;
	} else if (f.status && f.status_text) {
		r->status = f.status;
		r->ctype = "text/plain";
		buf_adds(r->body, "mock plain failure");
	} else if ((f.status || m->fail_status) && fmt != FMT_OPENAI) {
		snprintf(msg, sizeof(msg), "mock injected %d", f.status ? f.status : m->fail_status);
		fmt_error(r, fmt, f.status ? f.status : m->fail_status, msg);
	} else if (f.status || m->fail_status) {
		injected_error(r, f.status ? f.status : m->fail_status);
	} else if (f.garbage) {
		buf_adds(r->body, "this is not json {");
	} else if (api == API_EMBED) {
		err = embeddings_body(m, &a, root, r->body);
		if (err != NULL)
			bad_request(r, err);
	} else {
		if (api == API_CHAT && f.tool != NULL) {
			a.tool = f.tool;
			a.tool_len = f.tool_len;
		}
		completion_reply(c, r, &a, root, &f);
	}
	if (f.ok_status && r->status == 200 && r->stream != NULL)
		r->stream->status = f.ok_status;
	else if (f.ok_status && r->status == 200 && !f.garbage && !f.status)
		r->status = f.ok_status;
	if (f.cut >= 0 && r->stream != NULL)
		r->stream->cut = f.cut;
	else if (f.cut >= 0)
		r->flags |= RF_CUT | RF_CLOSE;
out:
	json_decref(root);
}

static void stats_reply(struct mock *m, struct buf *b)
{
	const char *p, *q, *end = m->last_hdrs.base;
	const char *val, *qval;
	int first = 1;

	buf_addf(b, "{\"requests\":%" PRIu64 ",\"chat\":%" PRIu64 ",\"completions\":%"
		 PRIu64 ",\"embeddings\":%" PRIu64, m->st.requests, m->st.chat,
		 m->st.completions, m->st.embeddings);
	buf_addf(b, ",\"messages\":%" PRIu64 ",\"gemini\":%" PRIu64, m->st.messages,
		 m->st.gemini);
	buf_addf(b, ",\"streams_started\":%" PRIu64 ",\"streams_completed\":%" PRIu64
		 ",\"streams_aborted\":%" PRIu64 ",\"streams_cut\":%" PRIu64,
		 m->st.streams_started, m->st.streams_completed,
		 m->st.streams_aborted, m->st.streams_cut);
	buf_adds(b, ",\"last_authorization\":");
	if (m->has_last_auth)
		buf_add_jstr(b, m->last_auth.base, m->last_auth.len);
	else
		buf_adds(b, "null");
	buf_adds(b, ",\"last_model\":");
	if (m->has_last_model)
		buf_add_jstr(b, m->last_model.base, m->last_model.len);
	else
		buf_adds(b, "null");
	/* Repeated headers are merged with ", ", where the first one appears. */
	buf_adds(b, ",\"last_headers\":{");
	if (end != NULL)
		end += m->last_hdrs.len;
	for (p = m->last_hdrs.base; p != NULL && p < end; p = val + strlen(val) + 1) {
		val = p + strlen(p) + 1;
		for (q = m->last_hdrs.base; q < p; q = qval + strlen(qval) + 1) {
			qval = q + strlen(q) + 1;
			if (strcmp(q, p) == 0)
				break;
		}
		if (q < p)
			continue;
		if (!first)
			buf_addc(b, ',');
		first = 0;
		buf_add_jstr(b, p, strlen(p));
		buf_adds(b, ":\"");
		buf_add_jraw(b, val, strlen(val));
		for (q = val + strlen(val) + 1; q < end; q = qval + strlen(qval) + 1) {
			qval = q + strlen(q) + 1;
			if (strcmp(q, p) == 0) {
				buf_adds(b, ", ");
				buf_add_jraw(b, qval, strlen(qval));
			}
		}
		buf_addc(b, '"');
	}
	buf_adds(b, "}}");
}

/* Decide the reply to the request just parsed. */
void route(struct conn *c, struct reply *r)
{
	struct mock *m = c->m;
	const char *path = c->url.base, *auth;
	size_t plen = strcspn(path, "?#"), auth_len;
	int method = llhttp_get_method(&c->parser);
	int get = method == HTTP_GET || method == HTTP_HEAD, post = method == HTTP_POST;
	const char *colon;
	char msg[160];

	if (method == HTTP_HEAD)
		r->flags |= RF_HEAD;
#define IS(s) (plen == sizeof(s) - 1 && memcmp(path, s, plen) == 0)
	if (IS("/mock/stats") && get) {
		stats_reply(m, r->body);
		return;
	}
	if (IS("/mock/reset") && post) {
		memset(&m->st, 0, sizeof(m->st));
		m->has_last_auth = m->has_last_model = 0;
		buf_clear(&m->last_hdrs);
		buf_adds(r->body, "{\"ok\":true}");
		return;
	}

	if (strncmp(path, "/mock/", 6) != 0) {
		/* What the tests ask about: what semgate sent us. */
		m->st.requests++;
		auth = hdr_get(&c->hdrs, "authorization", &auth_len);
		m->has_last_auth = auth != NULL;
		buf_clear(&m->last_auth);
		if (auth != NULL)
			buf_add(&m->last_auth, auth, auth_len);
		if (post) {
			m->has_last_model = 0;	/* api_request() sets it */
			buf_clear(&m->last_hdrs);
			buf_add(&m->last_hdrs, c->hdrs.base, c->hdrs.len);
		}
	}
	if (strncmp(path, "/v1/", 4) == 0 || strncmp(path, "/v1beta/", 8) == 0)
		r->delay_ms = m->latency_ms;
	if (IS("/v1/chat/completions") && post) {
		api_request(c, r, API_CHAT, FMT_OPENAI, NULL, 0, 0);
	} else if (IS("/v1/completions") && post) {
		api_request(c, r, API_TEXT, FMT_OPENAI, NULL, 0, 0);
	} else if (IS("/v1/embeddings") && post) {
		api_request(c, r, API_EMBED, FMT_OPENAI, NULL, 0, 0);
	} else if (IS("/v1/messages") && post) {
		api_request(c, r, API_CHAT, FMT_ANTHROPIC, NULL, 0, 0);
	} else if (plen > 15 && memcmp(path, "/v1beta/models/", 15) == 0 && post &&
		   (colon = memchr(path + 15, ':', plen - 15)) != NULL &&
		   colon > path + 15 &&
		   ((size_t)(path + plen - colon) == 16 &&
		    memcmp(colon, ":generateContent", 16) == 0)) {
		api_request(c, r, API_CHAT, FMT_GEMINI, path + 15, (size_t)(colon - path - 15), 0);
	} else if (plen > 15 && memcmp(path, "/v1beta/models/", 15) == 0 && post &&
		   (colon = memchr(path + 15, ':', plen - 15)) != NULL &&
		   colon > path + 15 &&
		   (size_t)(path + plen - colon) == 22 &&
		   memcmp(colon, ":streamGenerateContent", 22) == 0) {
		/* Without alt=sse Gemini streams one JSON array: not mocked. */
		if (strstr(path + plen, "alt=sse") == NULL)
			fmt_error(r, FMT_GEMINI, 400, "mock: only alt=sse streams are supported");
		else
			api_request(c, r, API_CHAT, FMT_GEMINI, path + 15,
				    (size_t)(colon - path - 15), 1);
	} else if (strncmp(path, "/v1/", 4) == 0 && !authorized(c)) {
		error_reply(r, 401, "invalid_request_error", "\"invalid_api_key\"",
			    "Incorrect API key provided.", 27);
	} else if (IS("/v1/models") && get) {
		buf_adds(r->body, "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\","
			 "\"object\":\"model\",\"created\":0,\"owned_by\":\"mock\"}]}");
	} else {
		snprintf(msg, sizeof(msg), "Invalid URL (%s %.*s)",
			 llhttp_method_name((llhttp_method_t)method),
			 plen > 100 ? 100 : (int)plen, path);
		error_reply(r, 404, "invalid_request_error", "\"not_found\"", msg,
			    strlen(msg));
	}
#undef IS
}
