/* The mock upstream's Anthropic and Gemini formats: their errors, keys,
 * request checks and reply bodies. */

#include "mock.h"

/* ---- Anthropic's and Gemini's formats -------------------------------------- */

static const char *anthropic_error_type(int status)
{
	switch (status) {
	case 400: return "invalid_request_error";
	case 401: return "authentication_error";
	case 403: return "permission_error";
	case 404: return "not_found_error";
	case 413: return "request_too_large";
	case 429: return "rate_limit_error";
	case 529: return "overloaded_error";
	default: return status < 500 ? "invalid_request_error" : "api_error";
	}
}

static const char *gemini_status(int status)
{
	switch (status) {
	case 400: return "INVALID_ARGUMENT";
	case 401: return "UNAUTHENTICATED";
	case 403: return "PERMISSION_DENIED";
	case 404: return "NOT_FOUND";
	case 429: return "RESOURCE_EXHAUSTED";
	case 503: return "UNAVAILABLE";
	case 504: return "DEADLINE_EXCEEDED";
	default: return status < 500 ? "FAILED_PRECONDITION" : "INTERNAL";
	}
}

/* An error body in the request's format. */
void fmt_error(struct reply *r, enum fmt fmt, int status, const char *msg)
{
	struct buf *b = r->body;

	if (fmt == FMT_OPENAI) {
		error_reply(r, status, status == 401 ? "invalid_request_error" :
			    status == 429 ? "rate_limit_error" :
			    status < 500 ? "invalid_request_error" : "server_error",
			    "null", msg, strlen(msg));
		return;
	}
	r->status = status;
	r->ctype = "application/json";
	buf_clear(b);
	if (fmt == FMT_ANTHROPIC) {
		buf_adds(b, "{\"type\":\"error\",\"error\":{\"type\":\"");
		buf_adds(b, anthropic_error_type(status));
		buf_adds(b, "\",\"message\":");
		buf_add_jstr(b, msg, strlen(msg));
		buf_adds(b, "},\"request_id\":\"req_mock\"}");
	} else {
		buf_adds(b, "{\"error\":{\"code\":");
		buf_add_u64(b, (uint64_t)status);
		buf_adds(b, ",\"message\":");
		buf_add_jstr(b, msg, strlen(msg));
		buf_adds(b, ",\"status\":\"");
		buf_adds(b, gemini_status(status));
		buf_adds(b, "\"}}");
	}
}

static int key_is(const char *v, size_t n, const char *key)
{
	return v != NULL && n == strlen(key) && memcmp(v, key, n) == 0;
}

/* --require-key, as each provider takes the key. */
int authorized_as(const struct conn *c, enum fmt fmt)
{
	const char *key = c->m->require_key, *v, *q;
	size_t n;

	if (key == NULL || fmt == FMT_OPENAI)
		return authorized(c);
	if (fmt == FMT_ANTHROPIC) {
		v = hdr_get(&c->hdrs, "x-api-key", &n);
		return key_is(v, n, key);
	}
	v = hdr_get(&c->hdrs, "x-goog-api-key", &n);
	if (v != NULL)
		return key_is(v, n, key);
	q = strchr(c->url.base, '?');
	while (q != NULL) {
		q++;
		if (strncmp(q, "key=", 4) == 0)
			return key_is(q + 4, strcspn(q + 4, "&#"), key);
		q = strchr(q, '&');
	}
	return 0;
}

/* The tool_use ids of an Anthropic message: does it have this one? */
static int has_tool_use(const json_t *msg, const char *id)
{
	const json_t *blk;
	size_t i;

	json_array_foreach(json_object_get(msg, "content"), i, blk) {
		if (json_is_string(json_object_get(blk, "id")) &&
		    strcmp(json_string_value(json_object_get(blk, "id")), id) == 0)
			return 1;
	}
	return 0;
}

static int has_text(const json_t *content)
{
	const json_t *part;
	size_t i;

	if (json_is_string(content))
		return 1;
	json_array_foreach(content, i, part)
		if (json_is_string(json_object_get(part, "text")))
			return 1;
	return 0;
}

static const char *anthropic_block_error(const json_t *blk, const char *role,
					 const json_t *prev)
{
	const char *type = json_string_value(json_object_get(blk, "type"));
	const json_t *src = json_object_get(blk, "source");
	const char *st = json_string_value(json_object_get(src, "type"));
	const json_t *v;

	if (type == NULL)
		return "messages: content block: Field required: type";
	if (strcmp(type, "text") == 0) {
		v = json_object_get(blk, "text");
		if (!json_is_string(v))
			return "messages: text block: Field required: text";
		if (json_string_length(v) == 0)
			return "messages: text content blocks must be non-empty";
	} else if (strcmp(type, "image") == 0 || strcmp(type, "document") == 0) {
		if (st == NULL)
			return "messages: image source: Field required: type";
		if (strcmp(st, "base64") == 0) {
			if (!json_is_string(json_object_get(src, "media_type")) ||
			    !json_is_string(json_object_get(src, "data")))
				return "messages: base64 source needs media_type and data";
		} else if (strcmp(st, "url") == 0) {
			if (!json_is_string(json_object_get(src, "url")))
				return "messages: url source needs url";
		} else {
			return "messages: unknown image source type";
		}
	} else if (strcmp(type, "tool_use") == 0) {
		if (strcmp(role, "assistant") != 0)
			return "messages: tool_use blocks are only allowed in assistant messages";
		if (!json_is_string(json_object_get(blk, "id")) ||
		    !json_is_string(json_object_get(blk, "name")) ||
		    !json_is_object(json_object_get(blk, "input")))
			return "messages: tool_use needs id, name and an input object";
	} else if (strcmp(type, "tool_result") == 0) {
		v = json_object_get(blk, "tool_use_id");
		if (strcmp(role, "user") != 0)
			return "messages: tool_result blocks are only allowed in user messages";
		if (!json_is_string(v))
			return "messages: tool_result: Field required: tool_use_id";
		if (prev == NULL || !has_tool_use(prev, json_string_value(v)))
			return "messages: unexpected `tool_use_id` found in `tool_result` blocks: "
			       "each tool_result must answer a tool_use of the previous message";
	} else if (strcmp(type, "thinking") != 0 && strcmp(type, "redacted_thinking") != 0) {
		return "messages: unknown content block type";
	}
	return NULL;
}

/* Anthropic's Messages request. NULL, or what is wrong. */
const char *read_anthropic(struct mock *m, const json_t *root, struct call *a)
{
	const json_t *msgs = json_object_get(root, "messages"), *msg, *content, *blk;
	const json_t *sys = json_object_get(root, "system"), *prev = NULL, *v;
	const char *role, *prev_role = NULL, *err;
	size_t i, k, last_user = SIZE_MAX;

	v = json_object_get(root, "max_tokens");
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		return "max_tokens: Field required";
	if (sys != NULL && !json_is_string(sys) && !json_is_array(sys))
		return "system: Input should be a valid string or a list of text blocks";
	a->prompt_tokens += ceil4(content_len(sys));
	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return "messages: at least one message is required";
	json_array_foreach(msgs, i, msg) {
		role = json_string_value(json_object_get(msg, "role"));
		content = json_object_get(msg, "content");
		if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
			return "messages: role: Input should be 'user' or 'assistant'";
		if (prev_role != NULL && strcmp(prev_role, role) == 0)
			return "messages: roles must alternate between \"user\" and \"assistant\"";
		if (json_is_array(content)) {
			if (json_array_size(content) == 0)
				return "messages: all messages must have non-empty content";
			json_array_foreach(content, k, blk)
				if ((err = anthropic_block_error(blk, role, prev)) != NULL)
					return err;
		} else if (!json_is_string(content)) {
			return "messages: content: Input should be a valid string or list";
		}
		a->prompt_tokens += ceil4(content_len(content)) + 3;
		if (strcmp(role, "user") == 0 && has_text(content))
			last_user = i;
		prev_role = role;
		prev = msg;
	}
	v = json_object_get(root, "tools");
	json_array_foreach(v, i, blk)
		if (!json_is_string(json_object_get(blk, "name")) ||
		    !json_is_object(json_object_get(blk, "input_schema")))
			return "tools: each tool needs a name and an input_schema object";
	v = json_object_get(root, "tool_choice");
	if (v != NULL) {
		role = json_string_value(json_object_get(v, "type"));
		if (role == NULL || (strcmp(role, "auto") && strcmp(role, "any") &&
				     strcmp(role, "tool") && strcmp(role, "none")))
			return "tool_choice: type must be auto, any, tool or none";
		if (strcmp(role, "tool") == 0 && !json_is_string(json_object_get(v, "name")))
			return "tool_choice: Field required: name";
	}
	v = json_object_get(root, "stop_sequences");
	json_array_foreach(v, i, blk)
		if (!json_is_string(blk))
			return "stop_sequences: Input should be a list of strings";
	buf_clear(&m->prompt);
	if (last_user != SIZE_MAX)
		content_text(json_object_get(json_array_get(msgs, last_user), "content"),
			     &m->prompt);
	a->prompt = m->prompt.base ? m->prompt.base : "";
	a->prompt_len = m->prompt.len;
	return NULL;
}

/* Gemini refuses fields it does not know; so do we. */
static const char *unknown_field(const json_t *obj, const char *const *known)
{
	static char msg[200];
	const char *key;
	const json_t *v;
	size_t i;

	json_object_foreach((json_t *)obj, key, v) {
		for (i = 0; known[i] != NULL && strcmp(known[i], key) != 0; i++)
			;
		if (known[i] == NULL) {
			snprintf(msg, sizeof(msg), "Invalid JSON payload received. Unknown name "
				 "\"%.64s\": Cannot find field.", key);
			return msg;
		}
	}
	return NULL;
}

/* OpenAPI-subset schemas: keywords Gemini refuses in "parameters". */
static const char *schema_error(const json_t *v)
{
	const char *key, *err;
	const json_t *val;
	size_t i;

	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, val) {
			if (strcmp(key, "additionalProperties") == 0 || strcmp(key, "$schema") == 0)
				return "Invalid JSON payload received. Unknown name "
				       "\"additionalProperties\" or \"$schema\" in parameters";
			if ((err = schema_error(val)) != NULL)
				return err;
		}
	}
	json_array_foreach(v, i, val)
		if ((err = schema_error(val)) != NULL)
			return err;
	return NULL;
}

static const char *gemini_part_error(const json_t *part)
{
	static const char *const known[] = {
		"text", "inlineData", "inline_data", "fileData", "file_data", "functionCall",
		"function_call", "functionResponse", "function_response", "executableCode",
		"codeExecutionResult", "thought", "thoughtSignature", "thought_signature",
		"videoMetadata", NULL
	};
	const json_t *v;
	const char *err;
	int data = 0;

	if (!json_is_object(part))
		return "contents.parts: each part must be an object";
	if ((err = unknown_field(part, known)) != NULL)
		return err;
	if ((v = json_object_get(part, "text")) != NULL) {
		data++;
		if (!json_is_string(v))
			return "contents.parts.text: must be a string";
	}
	if ((v = json_object_get(part, "inlineData")) != NULL ||
	    (v = json_object_get(part, "inline_data")) != NULL) {
		data++;
		if ((!json_is_string(json_object_get(v, "mimeType")) &&
		     !json_is_string(json_object_get(v, "mime_type"))) ||
		    !json_is_string(json_object_get(v, "data")))
			return "contents.parts.inline_data: needs mime_type and data";
	}
	if ((v = json_object_get(part, "fileData")) != NULL ||
	    (v = json_object_get(part, "file_data")) != NULL) {
		data++;
		if (!json_is_string(json_object_get(v, "fileUri")) &&
		    !json_is_string(json_object_get(v, "file_uri")))
			return "contents.parts.file_data: needs file_uri";
	}
	if ((v = json_object_get(part, "functionCall")) != NULL ||
	    (v = json_object_get(part, "function_call")) != NULL) {
		data++;
		if (!json_is_string(json_object_get(v, "name")) ||
		    (json_object_get(v, "args") != NULL && !json_is_object(json_object_get(v, "args"))))
			return "contents.parts.function_call: needs a name and an args object";
	}
	if ((v = json_object_get(part, "functionResponse")) != NULL ||
	    (v = json_object_get(part, "function_response")) != NULL) {
		data++;
		if (!json_is_string(json_object_get(v, "name")) ||
		    !json_is_object(json_object_get(v, "response")))
			return "contents.parts.function_response: needs a name and a response object";
	}
	if (json_object_get(part, "executableCode") || json_object_get(part, "codeExecutionResult"))
		data++;
	if (data != 1)
		return "contents.parts: a part must have exactly one of text, inline_data, "
		       "file_data, function_call, function_response";
	return NULL;
}

/* Gemini's GenerateContentRequest. NULL, or what is wrong. */
const char *read_gemini(struct mock *m, const json_t *root, struct call *a)
{
	static const char *const fields[] = {
		"contents", "systemInstruction", "system_instruction", "tools", "toolConfig",
		"tool_config", "generationConfig", "generation_config", "safetySettings",
		"safety_settings", "cachedContent", "cached_content", NULL
	};
	static const char *const gen_fields[] = {
		"temperature", "topP", "top_p", "topK", "top_k", "maxOutputTokens",
		"max_output_tokens", "stopSequences", "stop_sequences", "candidateCount",
		"candidate_count", "responseMimeType", "response_mime_type", "responseSchema",
		"response_schema", "responseJsonSchema", "response_json_schema", "presencePenalty",
		"presence_penalty", "frequencyPenalty", "frequency_penalty", "seed",
		"responseLogprobs", "response_logprobs", "logprobs", "thinkingConfig",
		"thinking_config", "responseModalities", "response_modalities", NULL
	};
	const json_t *contents = json_object_get(root, "contents"), *c, *parts, *part, *v, *t;
	const char *role, *err;
	size_t i, k, last_user = SIZE_MAX;

	if ((err = unknown_field(root, fields)) != NULL)
		return err;
	v = json_object_get(root, "generationConfig");
	if (v == NULL)
		v = json_object_get(root, "generation_config");
	if (v != NULL && (!json_is_object(v) || (err = unknown_field(v, gen_fields)) != NULL))
		return err ? err : "generation_config: must be an object";
	if (!json_is_array(contents) || json_array_size(contents) == 0)
		return "* GenerateContentRequest.contents: contents is not specified";
	json_array_foreach(contents, i, c) {
		role = json_string_value(json_object_get(c, "role"));
		parts = json_object_get(c, "parts");
		if (json_object_get(c, "role") != NULL &&
		    (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "model") != 0)))
			return "Please use a valid role: user, model.";
		if (!json_is_array(parts) || json_array_size(parts) == 0)
			return "* GenerateContentRequest.contents.parts: contents.parts must not be empty.";
		json_array_foreach(parts, k, part)
			if ((err = gemini_part_error(part)) != NULL)
				return err;
		a->prompt_tokens += ceil4(content_len(parts)) + 3;
		if ((role == NULL || strcmp(role, "user") == 0) && has_text(parts))
			last_user = i;
	}
	v = json_object_get(root, "systemInstruction");
	if (v == NULL)
		v = json_object_get(root, "system_instruction");
	if (v != NULL && !json_is_array(json_object_get(v, "parts")))
		return "system_instruction: parts must be a list";
	a->prompt_tokens += ceil4(content_len(json_object_get(v, "parts")));
	json_array_foreach(json_object_get(root, "tools"), i, t) {
		v = json_object_get(t, "functionDeclarations");
		if (v == NULL)
			v = json_object_get(t, "function_declarations");
		json_array_foreach(v, k, part) {
			if (!json_is_string(json_object_get(part, "name")))
				return "tools.function_declarations: name is required";
			if ((err = schema_error(json_object_get(part, "parameters"))) != NULL)
				return err;
		}
	}
	buf_clear(&m->prompt);
	if (last_user != SIZE_MAX)
		content_text(json_object_get(json_array_get(contents, last_user), "parts"),
			     &m->prompt);
	a->prompt = m->prompt.base ? m->prompt.base : "";
	a->prompt_len = m->prompt.len;
	return NULL;
}

void anthropic_body(struct mock *m, const struct call *a, struct buf *b, uint64_t ct)
{
	const size_t *off = (const size_t *)m->offs.base;
	uint64_t id = m->next_id++;

	buf_adds(b, "{\"id\":\"msg_mock_");
	buf_add_u64(b, id);
	buf_adds(b, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
	buf_add_jstr(b, a->model, a->model_len);
	if (a->tool != NULL) {
		buf_adds(b, ",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_mock_");
		buf_add_u64(b, id);
		buf_adds(b, "\",\"name\":");
		buf_add_jstr(b, a->tool, a->tool_len);
		buf_adds(b, ",\"input\":");
		buf_add(b, m->ans.base, off[1]);	/* a JSON object */
		buf_adds(b, "}],\"stop_reason\":\"tool_use\"");
	} else {
		buf_adds(b, ",\"content\":[{\"type\":\"text\",\"text\":");
		buf_add_jstr(b, m->ans.base, off[1]);
		buf_adds(b, "}],\"stop_reason\":\"end_turn\"");
	}
	buf_adds(b, ",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
	buf_add_u64(b, a->prompt_tokens);
	buf_adds(b, ",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
		 "\"output_tokens\":");
	buf_add_u64(b, ct);
	buf_adds(b, "}}");
}

static void gemini_usage(struct buf *b, uint64_t pt, uint64_t ct, int final)
{
	buf_adds(b, "\"usageMetadata\":{\"promptTokenCount\":");
	buf_add_u64(b, pt);
	if (final) {
		buf_adds(b, ",\"candidatesTokenCount\":");
		buf_add_u64(b, ct);
	}
	buf_adds(b, ",\"totalTokenCount\":");
	buf_add_u64(b, final ? pt + ct : pt);
	buf_addc(b, '}');
}

/* One GenerateContentResponse: a text piece or the tool call; final ones
 * carry the finishReason. */
void gemini_response(struct buf *b, const char *tool, size_t tool_len,
		     const char *text, size_t len, int final, uint64_t pt,
		     uint64_t ct, const char *model, size_t model_len, uint64_t id)
{
	buf_adds(b, "{\"candidates\":[{\"content\":{\"parts\":[");
	if (tool != NULL) {
		buf_adds(b, "{\"functionCall\":{\"name\":");
		buf_add_jstr(b, tool, tool_len);
		buf_adds(b, ",\"args\":");
		buf_add(b, text, len);
		buf_adds(b, "}}");
	} else {
		buf_adds(b, "{\"text\":");
		buf_add_jstr(b, text, len);
		buf_addc(b, '}');
	}
	buf_adds(b, "],\"role\":\"model\"}");
	if (final)
		buf_adds(b, ",\"finishReason\":\"STOP\"");
	buf_adds(b, ",\"index\":0}],");
	gemini_usage(b, pt, ct, final);
	buf_adds(b, ",\"modelVersion\":");
	buf_add_jstr(b, model, model_len);
	buf_adds(b, ",\"responseId\":\"mock-");
	buf_add_u64(b, id);
	buf_adds(b, "\"}");
}

void gemini_body(struct mock *m, const struct call *a, struct buf *b, uint64_t ct)
{
	const size_t *off = (const size_t *)m->offs.base;

	gemini_response(b, a->tool, a->tool_len, m->ans.base, off[1], 1, a->prompt_tokens, ct,
			a->model, a->model_len, m->next_id++);
}
