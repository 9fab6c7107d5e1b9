/* The mock upstream's OpenAI requests: headers, prompts, answers, the
 * chat/text completion bodies, streams' state, embeddings bodies. */

#include "mock.h"

/* ---- requests ------------------------------------------------------------- */

/* Value of a header of the request being handled, or NULL. */
const char *hdr_get(const struct buf *h, const char *name, size_t *len)
{
	const char *p = h->base, *end = p != NULL ? p + h->len : NULL, *nul, *val;

	while (p != NULL && p < end) {
		nul = memchr(p, '\0', (size_t)(end - p));
		if (nul == NULL)
			break;
		val = nul + 1;
		nul = val < end ? memchr(val, '\0', (size_t)(end - val)) : NULL;
		if (nul == NULL)
			break;
		if (strcmp(p, name) == 0) {
			*len = (size_t)(nul - val);
			return val;
		}
		p = nul + 1;
	}
	return NULL;
}

int authorized(const struct conn *c)
{
	const char *key = c->m->require_key, *v;
	size_t n;

	if (key == NULL)
		return 1;
	v = hdr_get(&c->hdrs, "authorization", &n);
	return v != NULL && n == 7 + strlen(key) && memcmp(v, "Bearer ", 7) == 0 &&
	       memcmp(v + 7, key, n - 7) == 0;
}

/* Bytes of content_text(content) without building it. */
size_t content_len(const json_t *content)
{
	const json_t *part, *text;
	size_t i, n = 0, parts = 0;

	if (json_is_string(content))
		return json_string_length(content);
	json_array_foreach(content, i, part) {
		text = json_is_string(part) ? part : json_object_get(part, "text");
		if (json_is_string(text))
			n += json_string_length(text) + (parts++ > 0);
	}
	return n;
}

/* Text of a message content: a string, or the text parts of an array. */
void content_text(const json_t *content, struct buf *out)
{
	const json_t *part, *text;
	size_t i, start = out->len;

	if (json_is_string(content)) {
		buf_add(out, json_string_value(content), json_string_length(content));
		return;
	}
	if (!json_is_array(content))
		return;
	json_array_foreach(content, i, part) {
		text = json_is_string(part) ? part : json_object_get(part, "text");
		if (!json_is_string(text))
			continue;
		if (out->len > start)
			buf_addc(out, ' ');
		buf_add(out, json_string_value(text), json_string_length(text));
	}
}

void answers_begin(struct mock *m)
{
	size_t zero = 0;

	buf_clear(&m->ans);
	buf_clear(&m->offs);
	buf_add(&m->offs, &zero, sizeof(zero));
}

void answers_add(struct mock *m, const char *prompt, size_t len, int64_t huge,
		 int done_in_content)
{
	if (done_in_content)
		buf_adds(&m->ans, DONE_TEXT);
	if (huge >= 0) {
		if (m->ans.len + (size_t)huge > MAX_HUGE)
			m->ans.oom = 1;	/* [[huge]] times many prompts */
		if (buf_grow(&m->ans, (size_t)huge) == 0) {
			memset(m->ans.base + m->ans.len, 'x', (size_t)huge);
			m->ans.len += (size_t)huge;
		}
	} else {
		buf_adds(&m->ans, "mock answer to: ");
		buf_add(&m->ans, prompt, len);
	}
	buf_add(&m->offs, &m->ans.len, sizeof(m->ans.len));
}

void put_usage(struct buf *b, uint64_t pt, uint64_t ct)
{
	buf_adds(b, "\"usage\":{\"prompt_tokens\":");
	buf_add_u64(b, pt);
	buf_adds(b, ",\"completion_tokens\":");
	buf_add_u64(b, ct);
	buf_adds(b, ",\"total_tokens\":");
	buf_add_u64(b, pt + ct);
	buf_addc(b, '}');
}

/* A complete (non-streamed) chat.completion or text_completion. */
void completion_body(struct mock *m, enum api api, struct buf *b,
		     const char *model, size_t model_len, uint64_t pt, uint64_t ct,
		     const char *tool, size_t tool_len, int kind, int no_finish)
{
	const size_t *off = (const size_t *)m->offs.base;
	size_t n = m->offs.len / sizeof(size_t) - 1, i;
	const char *fin = no_finish ? "null" : tool != NULL ? "\"tool_calls\"" : "\"stop\"";

	if (kind == BODY_ARRAY) {
		buf_adds(b, "[]");
		return;
	}
	if (kind == BODY_STRING) {
		buf_add_jstr(b, m->ans.base, off[1]);
		return;
	}
	if (kind == BODY_ERROR_AND_CHOICES)
		buf_adds(b, "{\"error\":{\"message\":\"mock error beside choices\","
			 "\"type\":\"server_error\",\"code\":null},\"id\":");
	else
		buf_adds(b, "{\"id\":");
	buf_adds(b, api == API_CHAT ? "\"chatcmpl-mock-" : "\"cmpl-mock-");
	buf_add_u64(b, m->next_id++);
	buf_adds(b, api == API_CHAT ? "\",\"object\":\"chat.completion\",\"created\":"
				    : "\",\"object\":\"text_completion\",\"created\":");
	buf_add_u64(b, (uint64_t)time(NULL));
	buf_adds(b, ",\"model\":");
	buf_add_jstr(b, model, model_len);
	buf_adds(b, ",\"choices\":[");
	if (kind == BODY_CHOICES_NULL)
		buf_adds(b, "null");
	else if (kind == BODY_NO_MESSAGE)
		buf_adds(b, "{\"index\":0}");
	for (i = 0; i < n && kind != BODY_CHOICES_NULL && kind != BODY_CHOICES_EMPTY &&
		    kind != BODY_NO_MESSAGE; i++) {
		if (i > 0)
			buf_addc(b, ',');
		if (api == API_CHAT && tool != NULL) {
			buf_adds(b, "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
				 "null,\"tool_calls\":[{\"id\":\"call_mock_");
			buf_add_u64(b, m->next_id - 1);
			buf_adds(b, "\",\"type\":\"function\",\"function\":{\"name\":");
			buf_add_jstr(b, tool, tool_len);
			buf_adds(b, ",\"arguments\":");
			buf_add_jstr(b, m->ans.base + off[i], off[i + 1] - off[i]);
			buf_adds(b, "}}]},\"finish_reason\":");
			buf_adds(b, fin);
			buf_addc(b, '}');
		} else if (api == API_CHAT) {
			buf_adds(b, "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
			buf_add_jstr(b, m->ans.base + off[i], off[i + 1] - off[i]);
			buf_adds(b, "},\"finish_reason\":");
			buf_adds(b, fin);
			buf_addc(b, '}');
		} else {
			buf_adds(b, "{\"text\":");
			buf_add_jstr(b, m->ans.base + off[i], off[i + 1] - off[i]);
			buf_adds(b, ",\"index\":");
			buf_add_u64(b, i);
			buf_adds(b, ",\"logprobs\":null,\"finish_reason\":");
			buf_adds(b, fin);
			buf_addc(b, '}');
		}
	}
	buf_adds(b, "],");
	put_usage(b, pt, ct);
	buf_addc(b, '}');
}

struct stream *stream_new(struct mock *m, enum api api, const char *model,
			  size_t model_len, uint64_t pt, uint64_t ct,
			  const char *tool, size_t tool_len)
{
	size_t n = m->offs.len / sizeof(size_t) - 1;
	size_t offs_size = (n + 1) * sizeof(size_t);
	struct stream *s;
	char *p;

	s = calloc(1, sizeof(*s) + offs_size + model_len + m->ans.len + tool_len);
	if (s == NULL)
		return NULL;
	s->off = (size_t *)(s + 1);
	memcpy(s->off, m->offs.base, offs_size);
	p = (char *)s->off + offs_size;
	memcpy(p, model, model_len);
	s->model = p;
	s->model_len = model_len;
	p += model_len;
	if (m->ans.len > 0)
		memcpy(p, m->ans.base, m->ans.len);
	s->text = p;
	if (tool != NULL) {
		p += m->ans.len;
		memcpy(p, tool, tool_len);
		s->tool = p;
		s->tool_len = tool_len;
	}
	s->api = api;
	s->n_answers = n;
	s->id = m->next_id++;
	s->created = (uint64_t)time(NULL);
	s->chunks = m->stream_chunks;
	s->cut = -1;
	s->retry_after = -1;
	s->prompt_tokens = pt;
	s->completion_tokens = ct;
	return s;
}

size_t texts_count(const json_t *texts)
{
	return json_is_array(texts) ? json_array_size(texts) : 1;
}

const json_t *texts_at(const json_t *texts, size_t i)
{
	return json_is_array(texts) ? json_array_get(texts, i) : texts;
}

/* Chat: the prompt is the last user message. NULL, or what is wrong. */
const char *read_chat(struct mock *m, const json_t *root, struct call *a)
{
	const json_t *msgs = json_object_get(root, "messages"), *msg, *role;
	size_t i, last_user = SIZE_MAX;

	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return "'messages' must be a non-empty array.";
	json_array_foreach(msgs, i, msg) {
		if (!json_is_object(msg))
			return "Each message must be an object.";
		a->prompt_tokens += ceil4(content_len(json_object_get(msg, "content"))) + 3;
		role = json_object_get(msg, "role");
		if (json_is_string(role) && strcmp(json_string_value(role), "user") == 0)
			last_user = i;
	}
	buf_clear(&m->prompt);
	if (last_user != SIZE_MAX)
		content_text(json_object_get(json_array_get(msgs, last_user), "content"),
			     &m->prompt);
	a->prompt = m->prompt.base ? m->prompt.base : "";
	a->prompt_len = m->prompt.len;
	return NULL;
}

/* Completions' "prompt", embeddings' "input": a string or a non-empty array
 * of strings; the first one is the prompt. NULL, or what is wrong. */
const char *read_texts(const json_t *root, struct call *a)
{
	const char *what = a->api == API_TEXT ?
		"'prompt' must be a string or a non-empty array of strings." :
		"'input' must be a string or a non-empty array of strings.";
	const json_t *v = json_object_get(root, a->api == API_TEXT ? "prompt" : "input");
	const json_t *t;
	size_t i;

	if (!json_is_string(v) && (!json_is_array(v) || json_array_size(v) == 0))
		return what;
	for (i = 0; i < texts_count(v); i++) {
		t = texts_at(v, i);
		if (!json_is_string(t))
			return what;
		a->prompt_tokens += ceil4(json_string_length(t));
	}
	a->texts = v;
	a->prompt = json_string_value(texts_at(v, 0));
	a->prompt_len = json_string_length(texts_at(v, 0));
	return NULL;
}

/* The embeddings list. NULL, or what is wrong with the request. */
const char *embeddings_body(struct mock *m, const struct call *a,
			    const json_t *root, struct buf *b)
{
	const json_t *v = json_object_get(root, "dimensions");
	const char *fmt = json_string_value(json_object_get(root, "encoding_format"));
	uint64_t dim = m->embed_dim;
	size_t i, k, n = texts_count(a->texts);
	float *vec;

	if (v != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > MAX_EMBED_DIM)
			return "'dimensions' must be an integer in [1, 65536].";
		dim = (uint64_t)json_integer_value(v);
	}
	if (json_object_get(root, "encoding_format") != NULL &&
	    (fmt == NULL || (strcmp(fmt, "float") != 0 && strcmp(fmt, "base64") != 0)))
		return "'encoding_format' must be \"float\" or \"base64\".";
	if ((uint64_t)n * dim > MAX_HUGE / 16)
		return "Too many inputs for this many dimensions.";
	buf_clear(&m->tmp);
	if (buf_grow(&m->tmp, dim * sizeof(float)) != 0) {
		b->oom = 1;
		return NULL;
	}
	vec = (float *)m->tmp.base;
	buf_adds(b, "{\"object\":\"list\",\"data\":[");
	for (i = 0; i < n; i++) {
		v = texts_at(a->texts, i);
		embed_text(json_string_value(v), json_string_length(v), vec, (unsigned)dim);
		buf_adds(b, i ? ",{\"object\":\"embedding\",\"index\":"
			      : "{\"object\":\"embedding\",\"index\":");
		buf_add_u64(b, i);
		buf_adds(b, ",\"embedding\":");
		if (fmt != NULL && strcmp(fmt, "base64") == 0) {
			buf_add_base64_floats(b, vec, (unsigned)dim);
		} else {
			buf_addc(b, '[');
			for (k = 0; k < dim; k++) {
				if (k > 0)
					buf_addc(b, ',');
				buf_add_unit_float(b, vec[k]);
			}
			buf_addc(b, ']');
		}
		buf_addc(b, '}');
	}
	buf_adds(b, "],\"model\":");
	buf_add_jstr(b, a->model, a->model_len);
	buf_adds(b, ",\"usage\":{\"prompt_tokens\":");
	buf_add_u64(b, a->prompt_tokens);
	buf_adds(b, ",\"total_tokens\":");
	buf_add_u64(b, a->prompt_tokens);
	buf_adds(b, "}}");
	return NULL;
}
