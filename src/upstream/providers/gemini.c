/* Google's Gemini API (generateContent) behind OpenAI's chat completions.
 *
 * Request: system/developer messages become systemInstruction; user and tool
 * messages are "user" contents, assistant ones "model" contents, consecutive
 * contents of one role merged; a tool message becomes a functionResponse
 * named after the earlier tool call it answers. Mapped into generationConfig:
 * temperature, top_p, max_tokens/max_completion_tokens, stop, n,
 * presence/frequency_penalty, seed, response_format (json_object ->
 * responseMimeType, json_schema -> responseMimeType + responseSchema); tools,
 * tool_choice -> toolConfig. Images: data: URLs -> inlineData, http(s) URLs
 * -> fileData. Dropped: logprobs, top_logprobs, logit_bias, user,
 * parallel_tool_calls, stream_options, metadata, store, service_tier,
 * reasoning_effort, modalities, audio, prediction.
 *
 * Tool call ids: Gemini has none, so each reply's are made up
 * ("call_<hash>_<candidate>_<n>"). A call's thoughtSignature (Gemini 3 wants
 * it back with the call in the next request) rides in the id after "~sig~".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "fsm.h"
#include "provider_int.h"

#define STREAM_LINE_MAX ((size_t)16 * 1024 * 1024) /* one SSE line or event */
#define MAX_CANDIDATES 16                          /* choices in one reply */
#define SIG_SEP "~sig~"                            /* id / thoughtSignature separator */

/* ---- request -------------------------------------------------------------- */

static const char *guess_mime(const char *url)
{
	static const char *const map[][2] = {
		{".png", "image/png"},   {".gif", "image/gif"},   {".webp", "image/webp"},
		{".heic", "image/heic"}, {".heif", "image/heif"}, {".pdf", "application/pdf"},
	};
	size_t len = strcspn(url, "?#");

	for (size_t i = 0; i < SG_ARRAY_SIZE(map); i++) {
		size_t k = strlen(map[i][0]);
		if (len > k && strncasecmp(url + len - k, map[i][0], k) == 0)
			return map[i][1];
	}
	return "image/jpeg";
}

static int media_part(const char *url, json_t *parts, size_t mi, char *err, size_t errlen)
{
	sg_iovec_t mime, data;
	json_t *p;

	if (url == NULL)
		return sg__fail(err, errlen, "messages[%zu]: image_url.url must be a string", mi);
	if (sg__data_url(url, &mime, &data) == 0)
		p = json_pack("{s:{s:s%,s:s%}}", "inlineData", "mimeType", mime.base, mime.len,
		              "data", data.base, data.len);
	else if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0 ||
	         strncmp(url, "gs://", 5) == 0)
		p = json_pack("{s:{s:s,s:s}}", "fileData", "mimeType", guess_mime(url), "fileUri",
		              url);
	else
		return sg__fail(err, errlen, "messages[%zu]: image_url.url must be an http(s) URL "
		                "or a base64 data: URL", mi);
	return json_array_append_new(parts, p) ? SG_ENOMEM : 0;
}

static int content_parts(const json_t *content, json_t *parts, size_t mi, char *err,
                         size_t errlen)
{
	const json_t *part, *iu;
	const char *type;
	size_t i;

	if (content == NULL || json_is_null(content))
		return 0;
	if (json_is_string(content)) {
		if (json_string_length(content) == 0)
			return 0;
		return json_array_append_new(parts, json_pack("{s:O}", "text", content)) ? SG_ENOMEM
		                                                                       : 0;
	}
	if (!json_is_array(content))
		return sg__fail(err, errlen, "messages[%zu].content must be a string or an array", mi);
	json_array_foreach(content, i, part) {
		int rc = 0;
		type = json_string_value(json_object_get(part, "type"));
		if (type == NULL)
			return sg__fail(err, errlen, "messages[%zu].content[%zu].type must be a string",
			                mi, i);
		if (strcmp(type, "text") == 0) {
			const json_t *t = json_object_get(part, "text");
			if (!json_is_string(t))
				return sg__fail(err, errlen,
				                "messages[%zu].content[%zu].text must be a string", mi, i);
			if (json_string_length(t) > 0)
				rc = json_array_append_new(parts, json_pack("{s:O}", "text", t)) ? SG_ENOMEM
				                                                               : 0;
		} else if (strcmp(type, "image_url") == 0) {
			iu = json_object_get(part, "image_url");
			rc = media_part(json_string_value(json_is_object(iu) ? json_object_get(iu, "url")
			                                                     : iu),
			                parts, mi, err, errlen);
		} else if (strcmp(type, "file") == 0) {
			rc = media_part(json_string_value(json_object_get(json_object_get(part, "file"),
			                                                  "file_data")),
			                parts, mi, err, errlen);
		} else if (strcmp(type, "refusal") == 0) {
			continue;
		} else {
			return sg__fail(err, errlen, "messages[%zu].content[%zu]: gemini does not take "
			                "\"%s\" parts", mi, i, type);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int function_call_parts(const json_t *calls, json_t *parts, size_t mi, char *err,
                               size_t errlen)
{
	const json_t *call, *fn, *name;
	const char *id, *sig;
	json_t *argv, *p;
	size_t i;
	int rc;

	if (calls == NULL || json_is_null(calls))
		return 0;
	if (!json_is_array(calls))
		return sg__fail(err, errlen, "messages[%zu].tool_calls must be an array", mi);
	json_array_foreach(calls, i, call) {
		fn = json_object_get(call, "function");
		name = json_object_get(fn, "name");
		if (!json_is_string(name))
			return sg__fail(err, errlen, "messages[%zu].tool_calls[%zu] needs a "
			                "function.name", mi, i);
		if ((rc = sg__tool_args(json_object_get(fn, "arguments"), mi, i, &argv, err,
		                        errlen)) != 0)
			return rc;
		p = json_pack("{s:{s:O,s:o}}", "functionCall", "name", name, "args", argv);
		id = json_string_value(json_object_get(call, "id"));
		sig = id ? strstr(id, SIG_SEP) : NULL;
		if (p != NULL && sig != NULL)
			json_object_set_new(p, "thoughtSignature", json_string(sig + strlen(SIG_SEP)));
		if (json_array_append_new(parts, p))
			return SG_ENOMEM;
	}
	return 0;
}

/* The name of the function an earlier assistant message called with id. */
static const char *tool_call_name(const json_t *list, size_t before, const char *id)
{
	const json_t *call;
	size_t i, k;

	for (i = before; i-- > 0;) {
		json_array_foreach(json_object_get(json_array_get(list, i), "tool_calls"), k, call) {
			const char *cid = json_string_value(json_object_get(call, "id"));
			if (cid != NULL && strcmp(cid, id) == 0)
				return json_string_value(json_object_get(json_object_get(call, "function"),
				                                         "name"));
		}
	}
	return NULL;
}

static int function_response_part(const json_t *list, size_t mi, json_t *parts, char *err,
                                  size_t errlen)
{
	const json_t *msg = json_array_get(list, mi);
	const char *id = json_string_value(json_object_get(msg, "tool_call_id"));
	const char *name = id ? tool_call_name(list, mi, id) : NULL;
	json_t *response;
	sg_buf_t text;
	int rc;

	if (name == NULL)
		name = json_string_value(json_object_get(msg, "name"));
	if (name == NULL)
		return sg__fail(err, errlen, "messages[%zu]: tool_call_id matches no earlier "
		                "tool call", mi);
	sg_buf_init(&text, 0);
	if ((rc = sg__content_text(json_object_get(msg, "content"), "\n", &text)) != 0) {
		sg_buf_free(&text);
		return rc == SG_EINVAL ? sg__fail(err, errlen, "messages[%zu]: a tool message "
		                                  "takes only text", mi) : rc;
	}
	/* Gemini wants an object: a JSON object result as it is, anything else
	 * wrapped. */
	response = json_loadb(text.data ? text.data : "", text.len, 0, NULL);
	if (!json_is_object(response)) {
		json_decref(response);
		response = json_pack("{s:s%}", "content", text.data ? text.data : "", text.len);
	}
	sg_buf_free(&text);
	return json_array_append_new(parts, json_pack("{s:{s:s,s:o}}", "functionResponse", "name",
	                                              name, "response", response))
	               ? SG_ENOMEM : 0;
}

/* One user, assistant or tool message (see sg__messages_walk) into contents. */
static int one_content(json_t *contents, const json_t *list, size_t mi, const json_t *msg,
                       const char *role, char *err, size_t errlen)
{
	json_t *parts = json_array();
	int rc;

	if (parts == NULL)
		return SG_ENOMEM;
	if (strcmp(role, "tool") == 0) {
		rc = function_response_part(list, mi, parts, err, errlen);
		role = "user";
	} else {
		rc = content_parts(json_object_get(msg, "content"), parts, mi, err, errlen);
		if (rc == 0 && strcmp(role, "assistant") == 0) {
			rc = function_call_parts(json_object_get(msg, "tool_calls"), parts, mi, err,
			                         errlen);
			role = "model";
		}
	}
	if (rc != 0) {
		json_decref(parts);
		return rc;
	}
	return sg__push_merged(contents, role, "parts", parts);
}

static int translate_messages(const json_t *req, json_t *out, char *err, size_t errlen)
{
	json_t *contents;
	sg_buf_t system;
	int rc;

	sg_buf_init(&system, 0);
	if ((rc = sg__messages_walk(req, one_content, &contents, &system, err, errlen)) != 0)
		goto out;
	if (system.len > 0)
		json_object_set_new(out, "systemInstruction",
		                    json_pack("{s:[{s:s%}]}", "parts", "text", system.data,
		                              system.len));
	rc = json_object_set(out, "contents", contents) ? SG_ENOMEM : 0;
out:
	json_decref(contents);
	sg_buf_free(&system);
	return rc;
}

/* A copy of a JSON schema without the keywords Gemini's OpenAPI-subset
 * schemas refuse ("additionalProperties", "$schema"), at any depth. */
static json_t *gemini_schema(const json_t *v)
{
	const char *key;
	json_t *copy, *item;
	const json_t *val;
	size_t i;

	if (json_is_object(v)) {
		copy = json_object();
		json_object_foreach((json_t *)v, key, val) {
			if (strcmp(key, "additionalProperties") == 0 || strcmp(key, "$schema") == 0)
				continue;
			json_object_set_new(copy, key, gemini_schema(val));
		}
		return copy;
	}
	if (json_is_array(v)) {
		copy = json_array();
		json_array_foreach(v, i, val) {
			item = gemini_schema(val);
			json_array_append_new(copy, item);
		}
		return copy;
	}
	return json_incref((json_t *)v);
}

static int translate_tools(const json_t *req, json_t *out, char *err, size_t errlen)
{
	const json_t *tools, *t, *fn;
	json_t *decls, *fcc = NULL;
	enum sg__tool_choice tc;
	const char *name;
	size_t i;
	int rc;

	if ((rc = sg__tools(req, &tools, &tc, &name, err, errlen)) != 0 || tools == NULL)
		return rc;
	switch (tc) {
	case SG__TC_AUTO:
		fcc = json_pack("{s:s}", "mode", "AUTO");
		break;
	case SG__TC_REQUIRED:
		fcc = json_pack("{s:s}", "mode", "ANY");
		break;
	case SG__TC_NONE:
		fcc = json_pack("{s:s}", "mode", "NONE");
		break;
	case SG__TC_FUNCTION:
		fcc = json_pack("{s:s,s:[s]}", "mode", "ANY", "allowedFunctionNames", name);
		break;
	default:
		break;
	}
	decls = json_array();
	json_array_foreach(tools, i, t) {
		if ((fn = sg__tool_function(t, i, err, errlen)) == NULL) {
			json_decref(decls);
			json_decref(fcc);
			return SG_EINVAL;
		}
		json_t *d = json_pack("{s:O}", "name", json_object_get(fn, "name"));
		if (json_is_string(json_object_get(fn, "description")))
			json_object_set(d, "description", json_object_get(fn, "description"));
		if (json_is_object(json_object_get(fn, "parameters")))
			json_object_set_new(d, "parameters",
			                    gemini_schema(json_object_get(fn, "parameters")));
		json_array_append_new(decls, d);
	}
	json_object_set_new(out, "tools", json_pack("[{s:o}]", "functionDeclarations", decls));
	if (fcc != NULL)
		json_object_set_new(out, "toolConfig", json_pack("{s:o}", "functionCallingConfig",
		                                                 fcc));
	return 0;
}

static int generation_config(const json_t *req, json_t *out, char *err, size_t errlen)
{
	json_t *gc = json_object(), *stop;
	const json_t *v, *rf;
	const char *rft;
	int rc;

	if (gc == NULL)
		return SG_ENOMEM;
	if (json_is_number(v = json_object_get(req, "temperature")))
		json_object_set(gc, "temperature", (json_t *)v);
	if (json_is_number(v = json_object_get(req, "top_p")))
		json_object_set(gc, "topP", (json_t *)v);
	if (json_is_integer(v = json_object_get(req, "top_k")))
		json_object_set(gc, "topK", (json_t *)v);
	if ((rc = sg__max_tokens(req, &v, err, errlen)) != 0 ||
	    (rc = sg__stop_list(json_object_get(req, "stop"), &stop, err, errlen)) != 0) {
		json_decref(gc);
		return rc;
	}
	if (v != NULL)
		json_object_set(gc, "maxOutputTokens", (json_t *)v);
	if (stop != NULL)
		json_object_set_new(gc, "stopSequences", stop);
	v = json_object_get(req, "n");
	if (v != NULL && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > MAX_CANDIDATES) {
			json_decref(gc);
			return sg__fail(err, errlen, "'n' must be an integer in [1, %d]", MAX_CANDIDATES);
		}
		if (json_integer_value(v) > 1)
			json_object_set(gc, "candidateCount", (json_t *)v);
	}
	if (json_is_number(v = json_object_get(req, "presence_penalty")))
		json_object_set(gc, "presencePenalty", (json_t *)v);
	if (json_is_number(v = json_object_get(req, "frequency_penalty")))
		json_object_set(gc, "frequencyPenalty", (json_t *)v);
	if (json_is_integer(v = json_object_get(req, "seed")))
		json_object_set(gc, "seed", (json_t *)v);
	rf = json_object_get(req, "response_format");
	rft = json_string_value(json_object_get(rf, "type"));
	if (rft != NULL && (strcmp(rft, "json_object") == 0 || strcmp(rft, "json_schema") == 0)) {
		json_object_set_new(gc, "responseMimeType", json_string("application/json"));
		v = json_object_get(json_object_get(rf, "json_schema"), "schema");
		if (strcmp(rft, "json_schema") == 0 && json_is_object(v))
			json_object_set_new(gc, "responseSchema", gemini_schema(v));
	}
	if (json_object_size(gc) > 0)
		json_object_set(out, "generationConfig", gc);
	json_decref(gc);
	return 0;
}

static int gemini_request(void *vreq, const sg_provider_deployment_t *d, int stream,
                          sg_buf_t *body, sg_provider_target_t *target, char *err,
                          size_t errlen)
{
	const json_t *req = vreq;
	const char *model = d->model ? d->model : "";
	json_t *out;
	int rc, n;

	if (!json_is_object(req))
		return sg__fail(err, errlen, "the request body must be a JSON object");
	out = json_object();
	if (out == NULL)
		return SG_ENOMEM;
	if ((rc = translate_messages(req, out, err, errlen)) != 0 ||
	    (rc = translate_tools(req, out, err, errlen)) != 0 ||
	    (rc = generation_config(req, out, err, errlen)) != 0 ||
	    (rc = sg__json_append(body, out)) != 0)
		goto out;

	memset(target, 0, sizeof(*target));
	if (strncmp(model, "models/", 7) == 0)
		model += 7;
	n = snprintf(target->url, sizeof(target->url), "%s/v1beta/models/%s:%s",
	             d->base_url ? d->base_url : "", model,
	             stream ? "streamGenerateContent?alt=sse" : "generateContent");
	if (n < 0 || (size_t)n >= sizeof(target->url)) {
		rc = sg__fail(err, errlen, "gemini: base_url or model too long");
		goto out;
	}
	if ((d->api_key != NULL && sg__target_header(target, "x-goog-api-key: %s", d->api_key)) ||
	    sg__target_header(target, "content-type: application/json"))
		rc = sg__fail(err, errlen, "gemini: a header is too long");
out:
	json_decref(out);
	return rc;
}

/* ---- reply ---------------------------------------------------------------- */

static const char *finish_reason(const char *r, int has_calls)
{
	static const char *const filtered[] = {"SAFETY", "RECITATION", "BLOCKLIST",
	                                       "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"};

	if (r == NULL)
		return NULL;
	if (strcmp(r, "MAX_TOKENS") == 0)
		return "length";
	for (size_t i = 0; i < SG_ARRAY_SIZE(filtered); i++)
		if (strcmp(r, filtered[i]) == 0)
			return "content_filter";
	return has_calls ? "tool_calls" : "stop";
}

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h;
}

/* An OpenAI tool call for a functionCall part; seed: what makes the ids of
 * this reply differ from others' (its responseId, else its bytes). */
static json_t *tool_call(const json_t *part, uint64_t seed, int cand, int k, int with_index)
{
	const json_t *fc = json_object_get(part, "functionCall");
	const char *name = json_string_value(json_object_get(fc, "name"));
	const char *sig = json_string_value(json_object_get(part, "thoughtSignature"));
	const json_t *args = json_object_get(fc, "args");
	char *argstr;
	json_t *call;
	sg_buf_t id;

	if (name == NULL)
		return NULL;
	argstr = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
	sg_buf_init(&id, 0);
	if (argstr == NULL ||
	    sg_buf_printf(&id, "call_%016llx_%d_%d", (unsigned long long)seed, cand, k) != 0 ||
	    (sig != NULL && sg_buf_printf(&id, SIG_SEP "%s", sig) != 0)) {
		free(argstr);
		sg_buf_free(&id);
		return NULL;
	}
	call = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id.data, "type", "function", "function",
	                 "name", name, "arguments", argstr);
	if (call != NULL && with_index)
		json_object_set_new(call, "index", json_integer(k));
	free(argstr);
	sg_buf_free(&id);
	return call;
}

static uint64_t reply_seed(const json_t *root, const char *body, size_t len)
{
	const json_t *rid = json_object_get(root, "responseId");

	return json_is_string(rid) ? fnv1a(json_string_value(rid), json_string_length(rid))
	                           : fnv1a(body, len);
}

static int gemini_response(const char *body, size_t len, const char *model, sg_buf_t *out)
{
	json_t *root = json_loadb(body, len, 0, NULL), *choices = NULL;
	const json_t *cands, *cand, *parts, *part, *usage;
	const char *rid;
	uint64_t seed = reply_seed(root, body, len);
	sg_buf_t text, id;
	size_t i, k;
	int rc = SG_EINVAL;

	sg_buf_init(&text, 0);
	sg_buf_init(&id, 0);
	cands = json_object_get(root, "candidates");
	if (!json_is_object(root) || (cands != NULL && !json_is_array(cands)))
		goto out;
	choices = json_array();
	json_array_foreach(cands, i, cand) {
		json_t *calls = json_array(), *msg;
		const json_t *ix = json_object_get(cand, "index");
		int ci = json_is_integer(ix) ? (int)json_integer_value(ix) : (int)i;
		sg_buf_reset(&text);
		parts = json_object_get(json_object_get(cand, "content"), "parts");
		json_array_foreach(parts, k, part) {
			const json_t *t = json_object_get(part, "text");
			if (json_is_true(json_object_get(part, "thought")))
				continue; /* a thought summary, not the answer */
			if (json_is_string(t)) {
				if ((rc = sg_buf_append(&text, json_string_value(t),
				                        json_string_length(t))) != 0) {
					json_decref(calls);
					goto out;
				}
				rc = SG_EINVAL;
			} else if (json_object_get(part, "functionCall") != NULL) {
				json_t *c = tool_call(part, seed, ci, (int)json_array_size(calls), 0);
				if (c == NULL) {
					json_decref(calls);
					goto out;
				}
				json_array_append_new(calls, c);
			}
		}
		msg = sg__assistant_message(text.data, text.len, json_array_size(calls) > 0);
		if (json_array_size(calls) > 0)
			json_object_set(msg, "tool_calls", calls);
		const char *fr = finish_reason(json_string_value(json_object_get(cand, "finishReason")),
		                               json_array_size(calls) > 0);
		json_array_append_new(choices, json_pack("{s:i,s:o,s:s}", "index", ci, "message", msg,
		                                         "finish_reason", fr ? fr : "stop"));
		json_decref(calls);
	}
	if (json_array_size(choices) == 0) {
		/* The prompt itself was blocked (promptFeedback.blockReason). */
		if (json_object_get(root, "promptFeedback") == NULL)
			goto out;
		json_array_append_new(choices, json_pack("{s:i,s:{s:s,s:s},s:s}", "index", 0,
		                                         "message", "role", "assistant", "content",
		                                         "", "finish_reason", "content_filter"));
	}
	usage = json_object_get(root, "usageMetadata");
	rid = json_string_value(json_object_get(root, "responseId"));
	if (rid != NULL)
		rc = sg_buf_printf(&id, "chatcmpl-%s", rid);
	else
		rc = sg_buf_printf(&id, "chatcmpl-%016llx", (unsigned long long)seed);
	if (rc)
		goto out;
	if (model == NULL)
		model = json_string_value(json_object_get(root, "modelVersion"));
	rc = sg__completion(out, id.data, model ? model : "", choices,
	                    json_integer_value(json_object_get(usage, "promptTokenCount")),
	                    json_integer_value(json_object_get(usage, "candidatesTokenCount")) +
	                        json_integer_value(json_object_get(usage, "thoughtsTokenCount")));
	choices = NULL;
out:
	json_decref(choices);
	json_decref(root);
	sg_buf_free(&text);
	sg_buf_free(&id);
	return rc;
}

/* ---- errors --------------------------------------------------------------- */

static const char *error_type(const char *status_name, int status)
{
	static const char *const map[][2] = {
		{"INVALID_ARGUMENT", "invalid_request_error"},
		{"FAILED_PRECONDITION", "invalid_request_error"},
		{"OUT_OF_RANGE", "invalid_request_error"},
		{"UNAUTHENTICATED", "authentication_error"},
		{"PERMISSION_DENIED", "permission_error"},
		{"NOT_FOUND", "not_found_error"},
		{"RESOURCE_EXHAUSTED", "rate_limit_error"},
		{"INTERNAL", "server_error"},
		{"UNAVAILABLE", "server_error"},
		{"DEADLINE_EXCEEDED", "server_error"},
	};

	return sg__error_type_map(map, SG_ARRAY_SIZE(map), status_name, status);
}

/* {"error":{...}}, or [{"error":{...}}] as the non-SSE stream sends it. */
static const json_t *error_object(const json_t *root)
{
	if (json_is_array(root))
		root = json_array_get(root, 0);
	return json_object_get(root, "error");
}

static int gemini_error(const char *body, size_t len, int *status, sg_buf_t *out)
{
	json_t *root = json_loadb(body ? body : "", len, 0, NULL);
	const json_t *e = error_object(root);
	const char *msg = json_string_value(json_object_get(e, "message"));
	const char *st = json_string_value(json_object_get(e, "status"));
	int rc;

	if (msg != NULL)
		rc = sg__error_body(out, msg, strlen(msg), error_type(st, *status), st);
	else
		rc = sg__error_raw("gemini", body, len, *status, out);
	json_decref(root);
	return rc;
}

/* ---- stream --------------------------------------------------------------- */

enum gstream_state {
	GS_STREAMING, /* replies arriving */
	GS_FAILED,    /* an error object: the rest is ignored */
	GS_LAST
};

typedef struct gemini_stream {
	sg__sse_t sse;                 /* the SSE reader */
	sg__chunk_head_t head;         /* id, created, model of our chunks */
	enum gstream_state state;      /* see enum */
	sg_buf_t *out;                 /* where the feed being handled writes */
	int model_given;               /* head.model came from the caller */
	int have_id;                   /* head.id came from a responseId */
	uint64_t seed;                 /* tool call ids (see tool_call()) */
	unsigned char started[MAX_CANDIDATES]; /* the role chunk went out */
	int ntools[MAX_CANDIDATES];    /* tool calls sent per candidate */
	int finished;                  /* a finishReason was seen */
	long long prompt_tokens;       /* from the latest usageMetadata */
	long long completion_tokens;   /* from the latest usageMetadata */
} gemini_stream;

/* streaming -> failed (an error object; final) */
static const char *const gstream_state_names[GS_LAST] = {"streaming", "failed"};
static const uint32_t gstream_next[GS_LAST] = {
	[GS_STREAMING] = SG_FSM_TO(GS_FAILED),
	[GS_FAILED] = SG_FSM_TO(GS_FAILED),
};
static const sg_fsm_t gstream_fsm = {"gemini stream", gstream_state_names, gstream_next, GS_LAST};

static void set_state(gemini_stream *s, enum gstream_state st)
{
	sg_fsm_move(&gstream_fsm, s, s->state, st);
	s->state = st;
}

static int start_choice(gemini_stream *s, int ci)
{
	if (s->started[ci])
		return 0;
	s->started[ci] = 1;
	return sg__chunk(s->out, &s->head, ci,
	                 json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL);
}

static int on_reply(gemini_stream *s, const json_t *r, const char *data, size_t len)
{
	const json_t *cands = json_object_get(r, "candidates"), *cand, *part, *usage, *e;
	const char *rid = json_string_value(json_object_get(r, "responseId"));
	const char *model = json_string_value(json_object_get(r, "modelVersion"));
	size_t i, k;
	int rc;

	if ((e = json_object_get(r, "error")) != NULL) {
		const char *msg = json_string_value(json_object_get(e, "message"));
		const char *st = json_string_value(json_object_get(e, "status"));
		set_state(s, GS_FAILED);
		return sg__chunk_error(s->out, msg ? msg : "gemini stream error",
		                       error_type(st, 500), st);
	}
	if (cands != NULL && !json_is_array(cands))
		return SG_EINVAL;
	if (!s->have_id) {
		s->have_id = 1;
		s->seed = rid ? fnv1a(rid, strlen(rid)) : fnv1a(data, len);
		if (rid != NULL)
			snprintf(s->head.id, sizeof(s->head.id), "chatcmpl-%s", rid);
		else
			snprintf(s->head.id, sizeof(s->head.id), "chatcmpl-%016llx",
			         (unsigned long long)s->seed);
		if (!s->model_given && model != NULL)
			snprintf(s->head.model, sizeof(s->head.model), "%s", model);
	}
	usage = json_object_get(r, "usageMetadata");
	if (usage != NULL) {
		s->prompt_tokens = json_integer_value(json_object_get(usage, "promptTokenCount"));
		s->completion_tokens =
			json_integer_value(json_object_get(usage, "candidatesTokenCount")) +
			json_integer_value(json_object_get(usage, "thoughtsTokenCount"));
	}
	if (json_array_size(cands) == 0 &&
	    json_is_string(json_object_get(json_object_get(r, "promptFeedback"), "blockReason"))) {
		if ((rc = start_choice(s, 0)) != 0)
			return rc;
		s->finished = 1;
		return sg__chunk(s->out, &s->head, 0, NULL, "content_filter");
	}
	json_array_foreach(cands, i, cand) {
		const json_t *ix = json_object_get(cand, "index");
		json_int_t ci = json_is_integer(ix) ? json_integer_value(ix) : (json_int_t)i;
		if (ci < 0 || ci >= MAX_CANDIDATES)
			return SG_EINVAL;
		if ((rc = start_choice(s, (int)ci)) != 0)
			return rc;
		json_array_foreach(json_object_get(json_object_get(cand, "content"), "parts"), k, part) {
			const json_t *t = json_object_get(part, "text");
			int thought = json_is_true(json_object_get(part, "thought"));
			if (json_is_string(t) && json_string_length(t) > 0) {
				rc = sg__chunk(s->out, &s->head, (int)ci,
				               json_pack("{s:O}", thought ? "reasoning_content" : "content",
				                         t),
				               NULL);
			} else if (json_object_get(part, "functionCall") != NULL) {
				json_t *c = tool_call(part, s->seed, (int)ci, s->ntools[ci], 1);
				if (c == NULL)
					return SG_EINVAL;
				s->ntools[ci]++;
				rc = sg__chunk(s->out, &s->head, (int)ci,
				               json_pack("{s:[o]}", "tool_calls", c), NULL);
			} else {
				rc = 0;
			}
			if (rc)
				return rc;
		}
		const char *fr = finish_reason(json_string_value(json_object_get(cand, "finishReason")),
		                               s->ntools[ci] > 0);
		if (fr != NULL) {
			s->finished = 1;
			if ((rc = sg__chunk(s->out, &s->head, (int)ci, NULL, fr)) != 0)
				return rc;
		}
	}
	return 0;
}

static int on_event(void *ctx, const char *event, const char *data, size_t len)
{
	gemini_stream *s = ctx;
	json_t *v;
	const json_t *item;
	size_t i;
	int rc = 0;

	if (s->state == GS_FAILED)
		return 0;
	v = json_loadb(data, len, 0, NULL);
	if (json_is_object(v)) {
		rc = on_reply(s, v, data, len);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, item) {
			rc = json_is_object(item) ? on_reply(s, item, data, len) : SG_EINVAL;
			if (rc != 0 || s->state == GS_FAILED)
				break;
		}
	} else {
		rc = SG_EINVAL;
	}
	json_decref(v);
	return rc;
}

static sg_provider_stream_t *gemini_stream_new(const char *model)
{
	gemini_stream *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	sg__sse_init(&s->sse, STREAM_LINE_MAX);
	s->model_given = sg__chunk_head_init(&s->head, "chatcmpl-gemini", model);
	return (sg_provider_stream_t *)s; /* GS_STREAMING (0) */
}

static int gemini_stream_feed(sg_provider_stream_t *ps, const char *p, size_t n, sg_buf_t *out)
{
	gemini_stream *s = (gemini_stream *)ps;

	if (s->state == GS_FAILED)
		return 0;
	s->out = out;
	return sg__sse_feed(&s->sse, p, n, on_event, s);
}

static int gemini_stream_end(sg_provider_stream_t *ps, sg_buf_t *out)
{
	gemini_stream *s = (gemini_stream *)ps;
	size_t mark = out->len;
	int rc = 0;

	s->out = out;
	if (s->state == GS_STREAMING)
		rc = sg__sse_flush(&s->sse, on_event, s);
	if (rc == 0 && s->state == GS_STREAMING && s->finished &&
	    (rc = sg__chunk_usage_done(out, &s->head, s->prompt_tokens, s->completion_tokens)) == 0)
		return 0;
	sg__out_rewind(out, mark);
	return rc == SG_ENOMEM || rc == SG_ETOOBIG ? rc : SG_EUPSTREAM;
}

static void gemini_stream_free(sg_provider_stream_t *ps)
{
	gemini_stream *s = (gemini_stream *)ps;

	if (s == NULL)
		return;
	sg__sse_free(&s->sse);
	free(s);
}

const sg_provider_t sg__provider_gemini = {
	.name = "gemini",
	.request = gemini_request,
	.response = gemini_response,
	.error = gemini_error,
	.stream_new = gemini_stream_new,
	.stream_feed = gemini_stream_feed,
	.stream_end = gemini_stream_end,
	.stream_free = gemini_stream_free,
};
