/* Anthropic's Messages API behind OpenAI's chat completions.
 *
 * Request: system/developer messages become the top-level "system";
 * consecutive messages of one role are merged (Anthropic wants user and
 * assistant to alternate); tool messages become user messages holding
 * tool_result blocks. Mapped: max_tokens/max_completion_tokens (4096 when
 * absent: Anthropic requires it), temperature, top_p, top_k, stop ->
 * stop_sequences, tools, tool_choice, parallel_tool_calls=false ->
 * disable_parallel_tool_use, user -> metadata.user_id, stream. Refused with
 * 400: n > 1, content parts other than text, image_url and PDF files.
 * Dropped: frequency/presence_penalty, logit_bias, logprobs, top_logprobs,
 * seed, response_format, stream_options, metadata, store, service_tier,
 * reasoning_effort, modalities, audio, prediction.
 *
 * Reply: text blocks joined into message.content, tool_use blocks into
 * message.tool_calls, thinking blocks into message.reasoning_content.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fsm.h"
#include "provider_int.h"

#define STREAM_LINE_MAX ((size_t)16 * 1024 * 1024) /* one SSE line or event */
#define MAX_BLOCKS 4096                            /* content blocks in one reply */

/* ---- request -------------------------------------------------------------- */

static json_t *text_block(const json_t *text, const json_t *cache_control)
{
	json_t *b = json_pack("{s:s,s:O}", "type", "text", "text", text);

	/* Clients that know Anthropic mark prompt-cache breakpoints on parts. */
	if (b != NULL && json_is_object(cache_control))
		json_object_set(b, "cache_control", (json_t *)cache_control);
	return b;
}

static int image_block(const json_t *part, json_t *blocks, size_t mi, char *err, size_t errlen)
{
	const json_t *iu = json_object_get(part, "image_url");
	const char *url = json_string_value(json_is_object(iu) ? json_object_get(iu, "url") : iu);
	sg_iovec_t mime, data;
	json_t *b;

	if (url == NULL)
		return sg__fail(err, errlen, "messages[%zu]: image_url.url must be a string", mi);
	if (sg__data_url(url, &mime, &data) == 0)
		b = json_pack("{s:s,s:{s:s,s:s%,s:s%}}", "type", "image", "source", "type", "base64",
		              "media_type", mime.base, mime.len, "data", data.base, data.len);
	else if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0)
		b = json_pack("{s:s,s:{s:s,s:s}}", "type", "image", "source", "type", "url", "url", url);
	else
		return sg__fail(err, errlen, "messages[%zu]: image_url.url must be an http(s) URL "
		                "or a base64 data: URL", mi);
	return json_array_append_new(blocks, b) ? SG_ENOMEM : 0;
}

/* A PDF given as a file part with file_data "data:application/pdf;base64,...". */
static int file_block(const json_t *part, json_t *blocks, size_t mi, char *err, size_t errlen)
{
	const char *fd = json_string_value(json_object_get(json_object_get(part, "file"),
	                                                   "file_data"));
	sg_iovec_t mime, data;

	if (fd == NULL || sg__data_url(fd, &mime, &data) != 0 ||
	    mime.len != 15 || memcmp(mime.base, "application/pdf", 15) != 0)
		return sg__fail(err, errlen, "messages[%zu]: anthropic takes files only as PDF "
		                "file_data (data:application/pdf;base64,...)", mi);
	return json_array_append_new(blocks, json_pack("{s:s,s:{s:s,s:s,s:s%}}", "type",
	                                               "document", "source", "type", "base64",
	                                               "media_type", "application/pdf", "data",
	                                               data.base, data.len))
	               ? SG_ENOMEM : 0;
}

/* Content (a string or an array of parts) into blocks. Empty texts are left
 * out: Anthropic refuses empty text blocks. */
static int content_blocks(const json_t *content, json_t *blocks, size_t mi, char *err,
                          size_t errlen)
{
	const json_t *part, *type_v;
	const char *type;
	size_t i;
	int rc;

	if (content == NULL || json_is_null(content))
		return 0;
	if (json_is_string(content)) {
		if (json_string_length(content) == 0)
			return 0;
		return json_array_append_new(blocks, text_block(content, NULL)) ? SG_ENOMEM : 0;
	}
	if (!json_is_array(content))
		return sg__fail(err, errlen, "messages[%zu].content must be a string or an array", mi);
	json_array_foreach(content, i, part) {
		type_v = json_object_get(part, "type");
		type = json_string_value(type_v);
		if (type == NULL)
			return sg__fail(err, errlen, "messages[%zu].content[%zu].type must be a string",
			                mi, i);
		if (strcmp(type, "text") == 0) {
			if (!json_is_string(json_object_get(part, "text")))
				return sg__fail(err, errlen,
				                "messages[%zu].content[%zu].text must be a string", mi, i);
			if (json_string_length(json_object_get(part, "text")) == 0)
				continue;
			rc = json_array_append_new(blocks, text_block(json_object_get(part, "text"),
			                                              json_object_get(part, "cache_control")))
			         ? SG_ENOMEM : 0;
		} else if (strcmp(type, "image_url") == 0) {
			rc = image_block(part, blocks, mi, err, errlen);
		} else if (strcmp(type, "file") == 0) {
			rc = file_block(part, blocks, mi, err, errlen);
		} else if (strcmp(type, "refusal") == 0) {
			continue; /* an assistant's earlier refusal: nothing to replay */
		} else {
			return sg__fail(err, errlen, "messages[%zu].content[%zu]: anthropic does not "
			                "take \"%s\" parts", mi, i, type);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int tool_use_blocks(const json_t *calls, json_t *blocks, size_t mi, char *err,
                           size_t errlen)
{
	const json_t *call, *fn, *id, *name;
	json_t *input;
	size_t i;
	int rc;

	if (calls == NULL || json_is_null(calls))
		return 0;
	if (!json_is_array(calls))
		return sg__fail(err, errlen, "messages[%zu].tool_calls must be an array", mi);
	json_array_foreach(calls, i, call) {
		fn = json_object_get(call, "function");
		id = json_object_get(call, "id");
		name = json_object_get(fn, "name");
		if (!json_is_string(id) || !json_is_string(name))
			return sg__fail(err, errlen, "messages[%zu].tool_calls[%zu] needs an id and "
			                "a function.name", mi, i);
		if ((rc = sg__tool_args(json_object_get(fn, "arguments"), mi, i, &input, err,
		                        errlen)) != 0)
			return rc;
		if (json_array_append_new(blocks, json_pack("{s:s,s:O,s:O,s:o}", "type", "tool_use",
		                                            "id", id, "name", name, "input", input)))
			return SG_ENOMEM;
	}
	return 0;
}

static int tool_result_block(const json_t *msg, json_t *blocks, size_t mi, char *err,
                             size_t errlen)
{
	const json_t *id = json_object_get(msg, "tool_call_id");
	const json_t *content = json_object_get(msg, "content");
	json_t *inner, *b;
	int rc;

	if (!json_is_string(id))
		return sg__fail(err, errlen, "messages[%zu].tool_call_id must be a string", mi);
	if (json_is_array(content)) {
		inner = json_array();
		if (inner == NULL)
			return SG_ENOMEM;
		if ((rc = content_blocks(content, inner, mi, err, errlen)) != 0) {
			json_decref(inner);
			return rc;
		}
	} else if (json_is_string(content)) {
		inner = json_incref((json_t *)content);
	} else if (content == NULL || json_is_null(content)) {
		inner = json_string("");
	} else {
		return sg__fail(err, errlen, "messages[%zu].content must be a string or an array", mi);
	}
	b = json_pack("{s:s,s:O,s:o}", "type", "tool_result", "tool_use_id", id, "content", inner);
	return json_array_append_new(blocks, b) ? SG_ENOMEM : 0;
}

/* One user, assistant or tool message (see sg__messages_walk) into msgs. */
static int one_message(json_t *msgs, const json_t *list, size_t mi, const json_t *msg,
                       const char *role, char *err, size_t errlen)
{
	const json_t *content = json_object_get(msg, "content");
	json_t *blocks = json_array();
	int rc;

	if (blocks == NULL)
		return SG_ENOMEM;
	if (strcmp(role, "tool") == 0) {
		rc = tool_result_block(msg, blocks, mi, err, errlen);
		role = "user";
	} else {
		rc = content_blocks(content, blocks, mi, err, errlen);
		if (rc == 0 && strcmp(role, "assistant") == 0)
			rc = tool_use_blocks(json_object_get(msg, "tool_calls"), blocks, mi, err,
			                     errlen);
	}
	if (rc != 0) {
		json_decref(blocks);
		return rc;
	}
	return sg__push_merged(msgs, role, "content", blocks);
}

static int translate_messages(const json_t *req, json_t *out, char *err, size_t errlen)
{
	json_t *msgs;
	sg_buf_t system;
	int rc;

	sg_buf_init(&system, 0);
	if ((rc = sg__messages_walk(req, one_message, &msgs, &system, err, errlen)) != 0)
		goto out;
	if (system.len > 0 &&
	    json_object_set_new(out, "system", json_stringn(system.data, system.len))) {
		rc = SG_ENOMEM;
		goto out;
	}
	rc = json_object_set(out, "messages", msgs) ? SG_ENOMEM : 0;
out:
	json_decref(msgs);
	sg_buf_free(&system);
	return rc;
}

static int translate_tools(const json_t *req, json_t *out, char *err, size_t errlen)
{
	const json_t *tools, *t, *fn, *params;
	json_t *list, *choice = NULL, *ptc = json_object_get(req, "parallel_tool_calls");
	enum sg__tool_choice tc;
	const char *name;
	size_t i;
	int rc;

	if ((rc = sg__tools(req, &tools, &tc, &name, err, errlen)) != 0 || tools == NULL)
		return rc;
	switch (tc) {
	case SG__TC_NONE:
		return 0; /* no tools at all: the model cannot call one */
	case SG__TC_AUTO:
		choice = json_pack("{s:s}", "type", "auto");
		break;
	case SG__TC_REQUIRED:
		choice = json_pack("{s:s}", "type", "any");
		break;
	case SG__TC_FUNCTION:
		choice = json_pack("{s:s,s:s}", "type", "tool", "name", name);
		break;
	default:
		break;
	}
	if (json_is_false(ptc)) {
		if (choice == NULL)
			choice = json_pack("{s:s}", "type", "auto");
		json_object_set_new(choice, "disable_parallel_tool_use", json_true());
	}
	list = json_array();
	json_array_foreach(tools, i, t) {
		if ((fn = sg__tool_function(t, i, err, errlen)) == NULL) {
			json_decref(list);
			json_decref(choice);
			return SG_EINVAL;
		}
		params = json_object_get(fn, "parameters");
		json_t *tool = json_pack("{s:O}", "name", json_object_get(fn, "name"));
		if (json_is_string(json_object_get(fn, "description")))
			json_object_set(tool, "description", json_object_get(fn, "description"));
		json_object_set_new(tool, "input_schema",
		                    json_is_object(params) ? json_incref((json_t *)params)
		                                           : json_pack("{s:s,s:{}}", "type", "object",
		                                                       "properties"));
		json_array_append_new(list, tool);
	}
	json_object_set_new(out, "tools", list);
	if (choice != NULL)
		json_object_set_new(out, "tool_choice", choice);
	return 0;
}

static int anthropic_request(void *vreq, const sg_provider_deployment_t *d, int stream,
                             sg_buf_t *body, sg_provider_target_t *target, char *err,
                             size_t errlen)
{
	const json_t *req = vreq, *v;
	json_t *out, *stop;
	json_int_t max_tokens = 4096;
	int rc, n;

	if (!json_is_object(req))
		return sg__fail(err, errlen, "the request body must be a JSON object");
	v = json_object_get(req, "n");
	if (json_is_integer(v) && json_integer_value(v) > 1)
		return sg__fail(err, errlen, "'n' > 1 is not supported by anthropic");
	out = json_pack("{s:s}", "model", d->model ? d->model : "");
	if (out == NULL)
		return SG_ENOMEM;
	if ((rc = translate_messages(req, out, err, errlen)) != 0)
		goto out;
	if ((rc = sg__max_tokens(req, &v, err, errlen)) != 0)
		goto out;
	if (v != NULL)
		max_tokens = json_integer_value(v);
	/* Key order as Anthropic documents it: model, max_tokens, system, messages. */
	json_object_set_new(out, "max_tokens", json_integer(max_tokens));
	if ((rc = sg__stop_list(json_object_get(req, "stop"), &stop, err, errlen)) != 0)
		goto out;
	if (stop != NULL)
		json_object_set_new(out, "stop_sequences", stop);
	if (json_is_number(v = json_object_get(req, "temperature")))
		json_object_set(out, "temperature", (json_t *)v);
	if (json_is_number(v = json_object_get(req, "top_p")))
		json_object_set(out, "top_p", (json_t *)v);
	if (json_is_integer(v = json_object_get(req, "top_k")))
		json_object_set(out, "top_k", (json_t *)v);
	if (json_is_string(v = json_object_get(req, "user")))
		json_object_set_new(out, "metadata", json_pack("{s:O}", "user_id", v));
	if ((rc = translate_tools(req, out, err, errlen)) != 0)
		goto out;
	if (stream)
		json_object_set_new(out, "stream", json_true());
	if ((rc = sg__json_append(body, out)) != 0)
		goto out;

	memset(target, 0, sizeof(*target));
	n = snprintf(target->url, sizeof(target->url), "%s/v1/messages",
	             d->base_url ? d->base_url : "");
	if (n < 0 || (size_t)n >= sizeof(target->url)) {
		rc = sg__fail(err, errlen, "anthropic: base_url too long");
		goto out;
	}
	if ((d->api_key != NULL && sg__target_header(target, "x-api-key: %s", d->api_key)) ||
	    sg__target_header(target, "anthropic-version: %s",
	                      d->api_version ? d->api_version : "2023-06-01") ||
	    sg__target_header(target, "content-type: application/json"))
		rc = sg__fail(err, errlen, "anthropic: a header is too long");
out:
	json_decref(out);
	return rc;
}

/* ---- reply ---------------------------------------------------------------- */

static const char *finish_reason(const char *stop_reason)
{
	if (stop_reason == NULL)
		return "stop";
	if (strcmp(stop_reason, "max_tokens") == 0 ||
	    strcmp(stop_reason, "model_context_window_exceeded") == 0)
		return "length";
	if (strcmp(stop_reason, "tool_use") == 0)
		return "tool_calls";
	if (strcmp(stop_reason, "refusal") == 0)
		return "content_filter";
	return "stop"; /* end_turn, stop_sequence, pause_turn */
}

/* Prompt tokens: cached ones are part of the prompt too. */
static long long input_tokens(const json_t *usage)
{
	return json_integer_value(json_object_get(usage, "input_tokens")) +
	       json_integer_value(json_object_get(usage, "cache_creation_input_tokens")) +
	       json_integer_value(json_object_get(usage, "cache_read_input_tokens"));
}

static int anthropic_response(const char *body, size_t len, const char *model, sg_buf_t *out)
{
	json_t *root = json_loadb(body, len, 0, NULL), *msg = NULL, *calls = NULL;
	const json_t *content, *blk, *type_v, *usage;
	const char *type, *id;
	sg_buf_t text, thinking;
	size_t i;
	int rc = SG_EINVAL;

	sg_buf_init(&text, 0);
	sg_buf_init(&thinking, 0);
	content = json_object_get(root, "content");
	type_v = json_object_get(root, "type");
	if (!json_is_array(content) || (type_v && (!json_is_string(type_v) ||
	                                           strcmp(json_string_value(type_v), "message"))))
		goto out;
	calls = json_array();
	json_array_foreach(content, i, blk) {
		type = json_string_value(json_object_get(blk, "type"));
		if (type == NULL)
			goto out;
		if (strcmp(type, "text") == 0) {
			const json_t *t = json_object_get(blk, "text");
			if (!json_is_string(t))
				goto out;
			if ((rc = sg_buf_append(&text, json_string_value(t), json_string_length(t))))
				goto out;
			rc = SG_EINVAL;
		} else if (strcmp(type, "tool_use") == 0) {
			const json_t *input = json_object_get(blk, "input");
			char *args;
			if (!json_is_string(json_object_get(blk, "id")) ||
			    !json_is_string(json_object_get(blk, "name")) || input == NULL)
				goto out;
			args = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
			if (args == NULL)
				goto out;
			json_array_append_new(calls, json_pack("{s:O,s:s,s:{s:O,s:s}}", "id",
			                                       json_object_get(blk, "id"), "type",
			                                       "function", "function", "name",
			                                       json_object_get(blk, "name"),
			                                       "arguments", args));
			free(args);
		} else if (strcmp(type, "thinking") == 0 &&
		           json_is_string(json_object_get(blk, "thinking"))) {
			const json_t *t = json_object_get(blk, "thinking");
			if ((rc = sg_buf_append(&thinking, json_string_value(t), json_string_length(t))))
				goto out;
			rc = SG_EINVAL;
		}
		/* Other blocks (redacted_thinking, server tools' results) have no
		 * OpenAI equivalent. */
	}
	msg = sg__assistant_message(text.data, text.len, json_array_size(calls) > 0);
	if (msg == NULL) {
		rc = SG_ENOMEM;
		goto out;
	}
	if (thinking.len > 0)
		json_object_set_new(msg, "reasoning_content", json_stringn(thinking.data, thinking.len));
	if (json_array_size(calls) > 0)
		json_object_set(msg, "tool_calls", calls);
	usage = json_object_get(root, "usage");
	id = json_string_value(json_object_get(root, "id"));
	if (model == NULL)
		model = json_string_value(json_object_get(root, "model"));
	rc = sg__completion(out, id ? id : "msg_unknown", model ? model : "",
	                    json_pack("[{s:i,s:o,s:s}]", "index", 0, "message", msg,
	                              "finish_reason",
	                              finish_reason(json_string_value(
	                                  json_object_get(root, "stop_reason")))),
	                    input_tokens(usage),
	                    json_integer_value(json_object_get(usage, "output_tokens")));
	msg = NULL; /* the choices took it */
out:
	json_decref(msg);
	json_decref(calls);
	json_decref(root);
	sg_buf_free(&text);
	sg_buf_free(&thinking);
	return rc;
}

/* ---- errors --------------------------------------------------------------- */

static const char *error_type(const char *anthropic_type, int status)
{
	static const char *const map[][2] = {
		{"invalid_request_error", "invalid_request_error"},
		{"request_too_large", "invalid_request_error"},
		{"authentication_error", "authentication_error"},
		{"permission_error", "permission_error"},
		{"not_found_error", "not_found_error"},
		{"rate_limit_error", "rate_limit_error"},
		{"api_error", "server_error"},
		{"overloaded_error", "server_error"},
	};

	return sg__error_type_map(map, SG_ARRAY_SIZE(map), anthropic_type, status);
}

static int anthropic_error(const char *body, size_t len, int *status, sg_buf_t *out)
{
	json_t *root = json_loadb(body ? body : "", len, 0, NULL);
	const json_t *e = json_object_get(root, "error");
	const char *msg = json_string_value(json_object_get(e, "message"));
	const char *type = json_string_value(json_object_get(e, "type"));
	int rc;

	if (*status == 529)
		*status = 503; /* overloaded: OpenAI clients know 503 */
	if (msg != NULL)
		rc = sg__error_body(out, msg, strlen(msg), error_type(type, *status), type);
	else
		rc = sg__error_raw("anthropic", body, len, *status, out);
	json_decref(root);
	return rc;
}

/* ---- stream --------------------------------------------------------------- */

enum astream_state {
	AS_START,   /* nothing yet: message_start is due */
	AS_MESSAGE, /* in the message */
	AS_DONE,    /* message_stop seen: everything sent */
	AS_FAILED,  /* an error event: the rest is ignored */
	AS_LAST
};

typedef struct anthropic_stream {
	sg__sse_t sse;             /* the SSE reader */
	sg__chunk_head_t head;     /* id, created, model of our chunks */
	enum astream_state state;  /* see enum */
	sg_buf_t *out;             /* where the feed being handled writes */
	int block_tool[MAX_BLOCKS]; /* content block index -> tool call index, or -1 */
	int ntools;                /* tool_use blocks seen */
	long long input_tokens;    /* prompt tokens, cached ones included */
	long long output_tokens;   /* completion tokens so far */
	const char *finish;        /* finish_reason from message_delta, or NULL */
	int model_given;           /* head.model came from the caller */
} anthropic_stream;

/* start -> message -> done; an error event fails it from any state (final:
 * later events change nothing). */
static const char *const astream_state_names[AS_LAST] = {"start", "message", "done", "failed"};
static const uint32_t astream_next[AS_LAST] = {
	[AS_START] = SG_FSM_TO(AS_MESSAGE) | SG_FSM_TO(AS_FAILED),
	[AS_MESSAGE] = SG_FSM_TO(AS_DONE) | SG_FSM_TO(AS_FAILED),
	[AS_DONE] = SG_FSM_TO(AS_DONE) | SG_FSM_TO(AS_FAILED),
	[AS_FAILED] = SG_FSM_TO(AS_FAILED),
};
static const sg_fsm_t astream_fsm = {"anthropic stream", astream_state_names, astream_next,
                                     AS_LAST};

static void set_state(anthropic_stream *s, enum astream_state st)
{
	if (s->state == AS_FAILED)
		return; /* final */
	sg_fsm_move(&astream_fsm, s, s->state, st);
	s->state = st;
}

static int emit_text(anthropic_stream *s, const char *key, const json_t *text)
{
	if (!json_is_string(text) || json_string_length(text) == 0)
		return 0;
	return sg__chunk(s->out, &s->head, 0, json_pack("{s:O}", key, text), NULL);
}

static int on_event(void *ctx, const char *event, const char *data, size_t len)
{
	anthropic_stream *s = ctx;
	json_t *ev;
	const json_t *blk, *delta, *usage;
	const char *type;
	json_int_t idx;
	int rc = 0;

	if (s->state == AS_FAILED || s->state == AS_DONE)
		return 0;
	ev = json_loadb(data, len, 0, NULL);
	if (!json_is_object(ev)) {
		json_decref(ev);
		return SG_EINVAL;
	}
	type = json_string_value(json_object_get(ev, "type"));
	if (type == NULL)
		type = event;
	if (strcmp(type, "ping") == 0)
		goto out;
	if (strcmp(type, "error") == 0) {
		const json_t *e = json_object_get(ev, "error");
		const char *etype = json_string_value(json_object_get(e, "type"));
		const char *msg = json_string_value(json_object_get(e, "message"));
		rc = sg__chunk_error(s->out, msg ? msg : "anthropic stream error",
		                     error_type(etype, 500), etype);
		set_state(s, AS_FAILED);
		goto out;
	}
	if (strcmp(type, "message_start") == 0) {
		const json_t *m = json_object_get(ev, "message");
		const char *id = json_string_value(json_object_get(m, "id"));
		const char *model = json_string_value(json_object_get(m, "model"));
		if (s->state != AS_START)
			goto bad;
		if (id != NULL)
			snprintf(s->head.id, sizeof(s->head.id), "%s", id);
		if (!s->model_given && model != NULL)
			snprintf(s->head.model, sizeof(s->head.model), "%s", model);
		usage = json_object_get(m, "usage");
		s->input_tokens = input_tokens(usage);
		s->output_tokens = json_integer_value(json_object_get(usage, "output_tokens"));
		set_state(s, AS_MESSAGE);
		rc = sg__chunk(s->out, &s->head, 0,
		               json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL);
		goto out;
	}
	if (s->state != AS_MESSAGE)
		goto bad;
	idx = json_integer_value(json_object_get(ev, "index"));
	if (strcmp(type, "content_block_start") == 0) {
		blk = json_object_get(ev, "content_block");
		const char *bt = json_string_value(json_object_get(blk, "type"));
		if (idx < 0 || idx >= MAX_BLOCKS || bt == NULL)
			goto bad;
		s->block_tool[idx] = -1;
		if (strcmp(bt, "text") == 0) {
			rc = emit_text(s, "content", json_object_get(blk, "text"));
		} else if (strcmp(bt, "tool_use") == 0) {
			const char *id = json_string_value(json_object_get(blk, "id"));
			const char *name = json_string_value(json_object_get(blk, "name"));
			if (id == NULL || name == NULL)
				goto bad;
			s->block_tool[idx] = s->ntools++;
			rc = sg__chunk(s->out, &s->head, 0,
			               json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls",
			                         "index", s->block_tool[idx], "id", id, "type",
			                         "function", "function", "name", name,
			                         "arguments", ""),
			               NULL);
		}
	} else if (strcmp(type, "content_block_delta") == 0) {
		delta = json_object_get(ev, "delta");
		const char *dt = json_string_value(json_object_get(delta, "type"));
		if (idx < 0 || idx >= MAX_BLOCKS || dt == NULL)
			goto bad;
		if (strcmp(dt, "text_delta") == 0) {
			rc = emit_text(s, "content", json_object_get(delta, "text"));
		} else if (strcmp(dt, "thinking_delta") == 0) {
			rc = emit_text(s, "reasoning_content", json_object_get(delta, "thinking"));
		} else if (strcmp(dt, "input_json_delta") == 0) {
			const json_t *pj = json_object_get(delta, "partial_json");
			if (s->block_tool[idx] < 0 || !json_is_string(pj))
				goto bad;
			if (json_string_length(pj) > 0)
				rc = sg__chunk(s->out, &s->head, 0,
				               json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls", "index",
				                         s->block_tool[idx], "function", "arguments", pj),
				               NULL);
		}
	} else if (strcmp(type, "message_delta") == 0) {
		const char *sr = json_string_value(json_object_get(json_object_get(ev, "delta"),
		                                                   "stop_reason"));
		usage = json_object_get(ev, "usage");
		if (sr != NULL)
			s->finish = finish_reason(sr);
		if (json_is_integer(json_object_get(usage, "output_tokens")))
			s->output_tokens = json_integer_value(json_object_get(usage, "output_tokens"));
		if (json_is_integer(json_object_get(usage, "input_tokens")))
			s->input_tokens = input_tokens(usage);
	} else if (strcmp(type, "message_stop") == 0) {
		rc = sg__chunk(s->out, &s->head, 0, NULL, s->finish ? s->finish : "stop");
		if (rc == 0)
			rc = sg__chunk_usage_done(s->out, &s->head, s->input_tokens, s->output_tokens);
		set_state(s, AS_DONE);
	}
	/* content_block_stop and event types added later need nothing. */
	goto out;
bad:
	rc = SG_EINVAL;
out:
	json_decref(ev);
	return rc;
}

static sg_provider_stream_t *anthropic_stream_new(const char *model)
{
	anthropic_stream *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	sg__sse_init(&s->sse, STREAM_LINE_MAX);
	s->model_given = sg__chunk_head_init(&s->head, "msg_unknown", model);
	for (size_t i = 0; i < MAX_BLOCKS; i++)
		s->block_tool[i] = -1;
	/* s->state: AS_START (0), from calloc */
	return (sg_provider_stream_t *)s;
}

static int anthropic_stream_feed(sg_provider_stream_t *ps, const char *p, size_t n, sg_buf_t *out)
{
	anthropic_stream *s = (anthropic_stream *)ps;

	if (s->state == AS_FAILED || s->state == AS_DONE)
		return 0;
	s->out = out;
	return sg__sse_feed(&s->sse, p, n, on_event, s);
}

static int anthropic_stream_end(sg_provider_stream_t *ps, sg_buf_t *out)
{
	anthropic_stream *s = (anthropic_stream *)ps;
	size_t mark = out->len;
	int rc = 0;

	s->out = out;
	if (s->state == AS_MESSAGE)
		rc = sg__sse_flush(&s->sse, on_event, s); /* a last event without its blank line */
	if (s->state == AS_DONE && rc == 0)
		return 0;
	sg__out_rewind(out, mark);
	return SG_EUPSTREAM;
}

static void anthropic_stream_free(sg_provider_stream_t *ps)
{
	anthropic_stream *s = (anthropic_stream *)ps;

	if (s == NULL)
		return;
	sg__sse_free(&s->sse);
	free(s);
}

const sg_provider_t sg__provider_anthropic = {
	.name = "anthropic",
	.request = anthropic_request,
	.response = anthropic_response,
	.error = anthropic_error,
	.stream_new = anthropic_stream_new,
	.stream_feed = anthropic_stream_feed,
	.stream_end = anthropic_stream_end,
	.stream_free = anthropic_stream_free,
};
