/* Fuzz targets: one provider's translations (src/provider_*.c), built once
 * per provider (FUZZ_PROVIDER, "anthropic" or "gemini") and per part:
 *
 * FUZZ_PART_request   a client's chat request (OpenAI JSON, read as the
 *                     handler reads it) into the provider's request. Input:
 *                     one byte of options (stream, key, version), the body.
 *                     A translation is JSON with a URL; a refusal says why.
 * FUZZ_PART_response  a provider's reply body, as a 2xx reply and as an error
 *                     reply. Input: one byte of options (status, model), the
 *                     body. A translated reply is an OpenAI chat.completion; an
 *                     error is always an OpenAI error body.
 * FUZZ_PART_stream    a provider's stream. Input: two bytes that choose where
 *                     the stream is cut, one of options, the stream. It is fed
 *                     whole, then in pieces: the pieces must give the same
 *                     events (the API takes "any split"), and what comes out
 *                     is complete SSE events of JSON objects or [DONE].
 */
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_common.h"
#include "semgate/json_scan.h"
#include "semgate/provider.h"

#ifndef FUZZ_PROVIDER
#error "FUZZ_PROVIDER names the provider"
#endif

static const sg_provider_t *prov;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	prov = sg_provider_find(FUZZ_PROVIDER);
	FUZZ_CHECK(prov != NULL, "no provider %s", FUZZ_PROVIDER);
	return 0;
}

/* An OpenAI JSON object, as a client reads one (\u0000 escapes are JSON
 * too: an upstream's raw text may hold NUL bytes); NULL if not. */
static json_t *json_object_text(const char *p, size_t n)
{
	json_t *v = json_loadb(p, n, JSON_ALLOW_NUL, NULL);
	if (v != NULL && !json_is_object(v)) {
		json_decref(v);
		v = NULL;
	}
	return v;
}

#if defined(FUZZ_PART_request)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_input_t in = {data, size};
	uint8_t o = fuzz_u8(&in);
	sg_provider_deployment_t d = {
		o & 2 ? "http://127.0.0.1:9/base" : "https://api.example.com", "upstream-model",
		o & 4 ? "sk-KEY" : NULL, o & 8 ? "2023-06-01" : NULL};
	sg_provider_target_t target;
	char err[256] = "";
	sg_buf_t body;
	json_t *req, *out;
	int rc;

	req = sg_json_load((const char *)in.p, in.n, NULL);
	if (req == NULL || !json_is_object(req)) {
		json_decref(req); /* the handler answers 400 first */
		return 0;
	}
	memset(&target, 0, sizeof(target));
	sg_buf_init(&body, 0);
	rc = prov->request(req, &d, o & 1, &body, &target, err, sizeof(err));
	FUZZ_CHECK(rc == 0 || rc == SG_EINVAL, "request: %d", rc);
	if (rc == 0) {
		out = json_object_text(body.data, body.len);
		FUZZ_CHECK(out != NULL, "request: the translation is not a JSON object: %.*s",
			   (int)SG_MIN(body.len, 4096), body.data ? body.data : "");
		json_decref(out);
		FUZZ_CHECK(memchr(target.url, '\0', sizeof(target.url)) && target.url[0],
			   "request: no URL");
		FUZZ_CHECK(target.nheaders >= 0 && target.nheaders <= 4, "request: %d headers",
			   target.nheaders);
	} else {
		FUZZ_CHECK(memchr(err, '\0', sizeof(err)) && err[0], "request: refused, no reason");
	}
	sg_buf_free(&body);
	json_decref(req);
	return 0;
}

#elif defined(FUZZ_PART_response)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int statuses[] = {400, 401, 403, 404, 408, 413, 422, 429,
				       500, 502, 503, 504, 529, 599, 418, 409};
	fuzz_input_t in = {data, size};
	uint8_t o = fuzz_u8(&in);
	const char *body = (const char *)in.p;
	int status = statuses[o & 15], rc;
	sg_buf_t out;
	json_t *v;

	sg_buf_init(&out, 0);
	rc = prov->response(body, in.n, o & 16 ? NULL : "gpt-4o-mini", &out);
	FUZZ_CHECK(rc == 0 || rc == SG_EINVAL, "response: %d", rc);
	if (rc == 0) {
		v = json_object_text(out.data, out.len);
		FUZZ_CHECK(v != NULL && json_is_array(json_object_get(v, "choices")),
			   "response: not a chat.completion: %.*s", (int)SG_MIN(out.len, 4096),
			   out.data ? out.data : "");
		json_decref(v);
	}

	sg_buf_reset(&out);
	rc = prov->error(body, in.n, &status, &out);
	FUZZ_CHECK(rc == 0, "error: %d on garbage", rc);
	FUZZ_CHECK(status >= 400 && status <= 599, "error: status %d", status);
	v = json_object_text(out.data, out.len);
	FUZZ_CHECK(v != NULL && json_is_string(json_object_get(json_object_get(v, "error"),
							      "message")),
		   "error: not an OpenAI error body: %.*s", (int)SG_MIN(out.len, 4096),
		   out.data ? out.data : "");
	json_decref(v);
	sg_buf_free(&out);
	return 0;
}

#elif defined(FUZZ_PART_stream)

/* out[from..) is whole events "data: X\n\n", X a JSON object or [DONE]. */
static void check_events(const sg_buf_t *out, size_t from)
{
	const char *p = out->data ? out->data + from : "", *end = p + (out->len - from);

	while (p < end) {
		const char *stop;
		json_t *v;

		FUZZ_CHECK(end - p > 6 && memcmp(p, "data: ", 6) == 0, "stream: not an event: %.*s",
			   (int)SG_MIN(end - p, 200), p);
		p += 6;
		stop = memmem(p, (size_t)(end - p), "\n\n", 2);
		FUZZ_CHECK(stop != NULL, "stream: an event without its end");
		if (!(stop - p == 6 && memcmp(p, "[DONE]", 6) == 0)) {
			v = json_object_text(p, (size_t)(stop - p));
			FUZZ_CHECK(v != NULL, "stream: an event that is not a JSON object: %.*s",
				   (int)SG_MIN(stop - p, 4096), p);
			json_decref(v);
		}
		p = stop + 2;
	}
}

typedef struct run {
	sg_buf_t out;  /* every event, in order */
	int feed_rc;   /* the first failed feed's code, or 0 */
	int end_rc;    /* stream_end's, when every feed went through */
} run_t;

/* Feed p[0..n) cut at cuts[0..ncuts), then end the stream. */
static void run_stream(run_t *r, const char *model, const char *p, const size_t *cuts,
		       size_t ncuts)
{
	sg_provider_stream_t *s = prov->stream_new(model);
	size_t at = 0;

	FUZZ_CHECK(s != NULL, "stream_new");
	sg_buf_init(&r->out, 0);
	r->feed_rc = r->end_rc = 0;
	for (size_t i = 0; i < ncuts; i++) {
		size_t mark = r->out.len;
		int rc = prov->stream_feed(s, p + at, cuts[i] - at, &r->out);
		FUZZ_CHECK(rc == 0 || rc == SG_EINVAL, "stream_feed: %d", rc);
		check_events(&r->out, mark);
		at = cuts[i];
		if (rc) {
			/* the proxy ends the reply here: nothing more is fed */
			r->feed_rc = rc;
			break;
		}
	}
	if (r->feed_rc == 0) {
		size_t mark = r->out.len;
		r->end_rc = prov->stream_end(s, &r->out);
		FUZZ_CHECK(r->end_rc == 0 || r->end_rc == SG_EUPSTREAM, "stream_end: %d",
			   r->end_rc);
		FUZZ_CHECK(r->end_rc == 0 || r->out.len == mark,
			   "stream_end failed but appended");
		check_events(&r->out, mark);
	}
	prov->stream_free(s);
}

/* "created":<seconds> differs between runs a second apart: blank it. */
static void blank_created(sg_buf_t *b)
{
	char *p = b->data;

	while (p && (p = memmem(p, b->len - (size_t)(p - b->data), "\"created\":", 10))) {
		p += 10;
		while (*p >= '0' && *p <= '9')
			*p++ = '0';
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_input_t in = {data, size};
	uint16_t seed = fuzz_u16(&in);
	uint8_t o = fuzz_u8(&in);
	const char *model = o & 1 ? NULL : "gpt-4o-mini";
	size_t whole = in.n, cuts[64], ncuts;
	run_t a, b;

	run_stream(&a, model, (const char *)in.p, &whole, in.n ? 1 : 0);
	ncuts = fuzz_cuts(seed, in.n, cuts, SG_ARRAY_SIZE(cuts));
	if (in.n == 0)
		ncuts = 0;
	run_stream(&b, model, (const char *)in.p, cuts, ncuts);

	FUZZ_CHECK((a.feed_rc == 0) == (b.feed_rc == 0),
		   "the cuts changed whether the stream is malformed: %d whole, %d cut",
		   a.feed_rc, b.feed_rc);
	if (a.feed_rc == 0) {
		FUZZ_CHECK(a.end_rc == b.end_rc, "the cuts changed stream_end: %d whole, %d cut",
			   a.end_rc, b.end_rc);
		blank_created(&a.out);
		blank_created(&b.out);
		FUZZ_CHECK(a.out.len == b.out.len &&
				   (a.out.len == 0 || memcmp(a.out.data, b.out.data, a.out.len) == 0),
			   "the cuts changed the events:\n--- whole\n%s\n--- cut\n%s",
			   a.out.data ? a.out.data : "", b.out.data ? b.out.data : "");
	}
	sg_buf_free(&a.out);
	sg_buf_free(&b.out);
	return 0;
}

#else
#error "define one of FUZZ_PART_request, FUZZ_PART_response, FUZZ_PART_stream"
#endif
