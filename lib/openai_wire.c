/* OpenAI's wire format: see openai_wire.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "openai_wire.h"
#include "semgate/common.h"

int sg__json_append(sg_buf_t *out, const json_t *v)
{
	size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
	size_t n = json_dumpb(v, NULL, 0, flags);
	int rc;

	if (n == 0)
		return SG_EINVAL;
	if ((rc = sg_buf_reserve(out, n)) != 0)
		return rc;
	if (json_dumpb(v, out->data + out->len, n, flags) != n)
		return SG_EINVAL;
	out->len += n;
	out->data[out->len] = '\0';
	return 0;
}

int sg__json_str_lossy(sg_buf_t *out, const char *s, size_t n)
{
	json_t *v = json_stringn(s, n); /* NULL for invalid UTF-8 (or NUL bytes) */
	char *ascii;
	int rc;

	if (v != NULL) {
		rc = sg__json_append(out, v);
		json_decref(v);
		return rc;
	}
	ascii = malloc(n + 1);
	if (ascii == NULL)
		return SG_ENOMEM;
	for (size_t i = 0; i < n; i++)
		ascii[i] = (unsigned char)s[i] >= 0x80 || s[i] == '\0' ? '?' : s[i];
	rc = sg_buf_json_str(out, ascii, n);
	free(ascii);
	return rc;
}

int sg__error_body(sg_buf_t *out, const char *msg, size_t msglen, const char *type,
                   const char *code)
{
	int rc;

	if ((rc = sg_buf_puts(out, "{\"error\":{\"message\":")) != 0 ||
	    (rc = sg__json_str_lossy(out, msg, msglen)) != 0 ||
	    (rc = sg_buf_puts(out, ",\"type\":")) != 0 ||
	    (rc = sg__json_str_lossy(out, type, strlen(type))) != 0 ||
	    (rc = sg_buf_puts(out, ",\"code\":")) != 0)
		return rc;
	if (code != NULL)
		rc = sg__json_str_lossy(out, code, strlen(code));
	else
		rc = sg_buf_puts(out, "null");
	return rc ? rc : sg_buf_puts(out, "}}");
}

static int append_event(sg_buf_t *out, json_t *v)
{
	int rc;

	if (v == NULL)
		return SG_ENOMEM;
	if ((rc = sg_buf_puts(out, "data: ")) == 0 && (rc = sg__json_append(out, v)) == 0)
		rc = sg_buf_puts(out, "\n\n");
	json_decref(v);
	return rc;
}

int sg__chunk_head_init(sg__chunk_head_t *h, const char *id, const char *model)
{
	snprintf(h->id, sizeof(h->id), "%s", id);
	h->created = (long long)time(NULL);
	if (model == NULL)
		return 0;
	snprintf(h->model, sizeof(h->model), "%s", model);
	return 1;
}

int sg__chunk_event(sg_buf_t *out, const char *id, const char *object, long long created,
                    const char *model, json_t *choice, const json_t *usage)
{
	json_t *v = json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", object, "created",
	                      (json_int_t)created, "model", model);

	if (v == NULL || json_object_set_new(v, "choices", choice ? json_pack("[o]", choice)
	                                                          : json_array()) != 0 ||
	    (usage && json_object_set(v, "usage", (json_t *)usage) != 0)) {
		json_decref(v);
		return SG_ENOMEM;
	}
	return append_event(out, v);
}

int sg__chunk(sg_buf_t *out, const sg__chunk_head_t *h, int index, json_t *delta,
              const char *finish_reason)
{
	json_t *choice = json_pack("{s:i,s:o,s:o}", "index", index, "delta",
	                           delta ? delta : json_object(), "finish_reason",
	                           finish_reason ? json_string(finish_reason) : json_null());

	if (choice == NULL)
		return SG_ENOMEM;
	return sg__chunk_event(out, h->id, "chat.completion.chunk", h->created, h->model, choice,
	                       NULL);
}

/* OpenAI's usage object of those counts; NULL on allocation failure. */
static json_t *usage_of(long long prompt_tokens, long long completion_tokens)
{
	return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt_tokens,
	                 "completion_tokens", (json_int_t)completion_tokens, "total_tokens",
	                 (json_int_t)(prompt_tokens + completion_tokens));
}

int sg__chunk_usage_done(sg_buf_t *out, const sg__chunk_head_t *h, long long prompt_tokens,
                         long long completion_tokens)
{
	json_t *usage = usage_of(prompt_tokens, completion_tokens);
	int rc = usage ? sg__chunk_event(out, h->id, "chat.completion.chunk", h->created, h->model,
	                                 NULL, usage)
	               : SG_ENOMEM;

	json_decref(usage);
	return rc ? rc : sg_buf_puts(out, "data: [DONE]\n\n");
}

int sg__chunk_error(sg_buf_t *out, const char *msg, const char *type, const char *code)
{
	int rc;

	if ((rc = sg_buf_puts(out, "data: ")) == 0 &&
	    (rc = sg__error_body(out, msg, strlen(msg), type, code)) == 0)
		rc = sg_buf_puts(out, "\n\n");
	return rc;
}

void sg__out_rewind(sg_buf_t *out, size_t mark)
{
	out->len = mark;
	if (out->data != NULL)
		out->data[mark] = '\0';
}

json_t *sg__assistant_message(const char *text, size_t len, int has_calls)
{
	json_t *msg = json_pack("{s:s}", "role", "assistant");

	if (msg == NULL)
		return NULL;
	json_object_set_new(msg, "content", len == 0 && has_calls
	                                        ? json_null()
	                                        : json_stringn(text ? text : "", len));
	return msg;
}

int sg__completion_object(sg_buf_t *out, const char *id, const char *object, long long created,
                          const char *model, json_t *choices, json_t *usage)
{
	json_t *v;
	int rc;

	if (choices == NULL) {
		json_decref(usage);
		return SG_ENOMEM;
	}
	v = json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", id, "object", object, "created",
	              (json_int_t)created, "model", model, "choices", choices);
	if (v == NULL || (usage && json_object_set_new(v, "usage", usage) != 0)) {
		json_decref(v);
		return SG_ENOMEM;
	}
	rc = sg__json_append(out, v);
	json_decref(v);
	return rc;
}

int sg__completion(sg_buf_t *out, const char *id, const char *model, json_t *choices,
                   long long prompt_tokens, long long completion_tokens)
{
	json_t *usage = usage_of(prompt_tokens, completion_tokens);

	if (usage == NULL) {
		json_decref(choices);
		return SG_ENOMEM;
	}
	return sg__completion_object(out, id, "chat.completion", (long long)time(NULL), model,
	                             choices, usage);
}

