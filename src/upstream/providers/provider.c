/* Provider lookup and what the provider translations share: an incremental
 * SSE reader and writers for OpenAI's chunks, completions and errors. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "fbuf_int.h"
#include "provider_int.h"

/* ---- OpenAI and Azure: OpenAI's wire format, relayed as it is ------------- */

#define DEFAULT_AZURE_API_VERSION "2024-10-21"

static void openai_url(const sg_provider_deployment_t *d, const char *path, char *out, size_t n)
{
	sg__fbuf_t o;
	sg__fbuf_init(&o, out, n);
	sg__fbuf_str(&o, d->base_url);
	sg__fbuf_str(&o, path);
}

static void openai_auth(const char *key, char *out, size_t n)
{
	snprintf(out, n, "Authorization: Bearer %s", key);
}

static void azure_url(const sg_provider_deployment_t *d, const char *path, char *out, size_t n)
{
	snprintf(out, n, "%s%s?api-version=%s", d->base_url, path,
	         d->api_version ? d->api_version : DEFAULT_AZURE_API_VERSION);
}

/* Azure OpenAI authenticates with an api-key header. */
static void azure_auth(const char *key, char *out, size_t n)
{
	snprintf(out, n, "api-key: %s", key);
}

const sg_provider_t sg__provider_openai = {
	.name = "openai",
	.passthrough = 1,
	.url = openai_url,
	.auth = openai_auth,
};

const sg_provider_t sg__provider_azure = {
	.name = "azure",
	.passthrough = 1,
	.url = azure_url,
	.auth = azure_auth,
};

const sg_provider_t *sg_provider_find(const char *name)
{
	static const sg_provider_t *const all[] = {&sg__provider_openai, &sg__provider_azure,
	                                           &sg__provider_anthropic, &sg__provider_gemini};

	if (name == NULL)
		return NULL;
	for (size_t i = 0; i < SG_ARRAY_SIZE(all); i++)
		if (strcmp(all[i]->name, name) == 0)
			return all[i];
	return NULL;
}

/* ---- SSE ------------------------------------------------------------------ */

/* The providers read their streams with the one SSE reader (semgate/sse.h);
 * this keeps their callback shape (event name, data). */

void sg__sse_init(sg__sse_t *s, size_t max)
{
	sg_sse_init(&s->r, max);
}

void sg__sse_free(sg__sse_t *s)
{
	sg_sse_free(&s->r);
}

typedef struct sse_adapt {
	sg__sse_t *s;   /* the reader */
	sg__sse_cb cb;  /* the provider's callback */
	void *ctx;      /* its argument */
} sse_adapt_t;

static int sse_event(void *ud, enum sg_sse_kind kind, const char *data, size_t len)
{
	sse_adapt_t *a = ud;
	return kind == SG_SSE_DATA ? a->cb(a->ctx, a->s->r.event, data, len) : 0;
}

int sg__sse_feed(sg__sse_t *s, const char *p, size_t n, sg__sse_cb cb, void *ctx)
{
	sse_adapt_t a = {s, cb, ctx};
	return sg_sse_feed(&s->r, p, n, sse_event, &a);
}

int sg__sse_flush(sg__sse_t *s, sg__sse_cb cb, void *ctx)
{
	sse_adapt_t a = {s, cb, ctx};
	return sg_sse_finish(&s->r, sse_event, &a);
}

/* ---- JSON and errors ------------------------------------------------------ */

const char *sg__error_type(int status)
{
	switch (status) {
	case 401: return "authentication_error";
	case 403: return "permission_error";
	case 404: return "not_found_error";
	case 429: return "rate_limit_error";
	default: return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

const char *sg__error_type_map(const char *const map[][2], size_t n, const char *name,
                               int status)
{
	for (size_t i = 0; name != NULL && i < n; i++)
		if (strcmp(map[i][0], name) == 0)
			return map[i][1];
	return sg__error_type(status);
}

int sg__error_raw(const char *provider, const char *body, size_t len, int status,
                  sg_buf_t *out)
{
	sg_buf_t msg;
	int rc;

	sg_buf_init(&msg, 0);
	rc = sg_buf_printf(&msg, "%s upstream error (HTTP %d): ", provider, status);
	if (rc == 0)
		rc = sg_buf_append(&msg, body ? body : "", SG_MIN(len, (size_t)512));
	if (rc == 0)
		rc = sg__error_body(out, msg.data, msg.len, sg__error_type(status), NULL);
	sg_buf_free(&msg);
	return rc;
}

int sg__target_header(sg_provider_target_t *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->nheaders >= (int)SG_ARRAY_SIZE(t->headers))
		return SG_EINVAL;
	va_start(ap, fmt);
	n = vsnprintf(t->headers[t->nheaders], sizeof(t->headers[0]), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(t->headers[0]))
		return SG_EINVAL;
	t->nheaders++;
	return 0;
}

/* ---- request helpers ------------------------------------------------------ */

int sg__fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return SG_EINVAL;
}

int sg__messages_walk(const json_t *req, sg__message_cb cb, json_t **out, sg_buf_t *system,
                      char *err, size_t errlen)
{
	const json_t *list = json_object_get(req, "messages"), *msg;
	const char *role;
	size_t i, before;
	int rc = 0;

	*out = NULL;
	if (!json_is_array(list) || json_array_size(list) == 0)
		return sg__fail(err, errlen, "'messages' must be a non-empty array");
	if ((*out = json_array()) == NULL)
		return SG_ENOMEM;
	json_array_foreach(list, i, msg) {
		role = json_string_value(json_object_get(msg, "role"));
		if (role == NULL) {
			rc = sg__fail(err, errlen, "messages[%zu].role must be a string", i);
			goto fail;
		}
		if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
			before = system->len;
			if (system->len > 0 && (rc = sg_buf_puts(system, "\n\n")) != 0)
				goto fail;
			if ((rc = sg__content_text(json_object_get(msg, "content"), "\n", system)) != 0) {
				if (rc == SG_EINVAL)
					rc = sg__fail(err, errlen, "messages[%zu]: a %s message takes only "
					              "text", i, role);
				goto fail;
			}
			if (system->len == before + (before > 0 ? 2 : 0))
				system->len = before; /* empty: no separator either */
			continue;
		}
		if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0 &&
		    strcmp(role, "tool") != 0) {
			rc = sg__fail(err, errlen, "messages[%zu]: role \"%s\" is not supported", i,
			              role);
			goto fail;
		}
		if ((rc = cb(*out, list, i, msg, role, err, errlen)) != 0)
			goto fail;
	}
	if (json_array_size(*out) > 0)
		return 0;
	rc = sg__fail(err, errlen, "'messages' has no user or assistant content");
fail:
	json_decref(*out);
	*out = NULL;
	return rc;
}

int sg__push_merged(json_t *list, const char *role, const char *key, json_t *items)
{
	size_t n = json_array_size(list);
	json_t *last = n ? json_array_get(list, n - 1) : NULL;
	int rc;

	if (json_array_size(items) == 0) {
		json_decref(items);
		return 0;
	}
	if (last != NULL && strcmp(json_string_value(json_object_get(last, "role")), role) == 0)
		rc = json_array_extend(json_object_get(last, key), items);
	else
		rc = json_array_append_new(list, json_pack("{s:s,s:O}", "role", role, key, items));
	json_decref(items);
	return rc ? SG_ENOMEM : 0;
}

int sg__content_text(const json_t *content, const char *sep, sg_buf_t *out)
{
	const json_t *part, *text;
	size_t i, start = out->len;
	int rc;

	if (content == NULL || json_is_null(content))
		return 0;
	if (json_is_string(content))
		return sg_buf_append(out, json_string_value(content), json_string_length(content));
	if (!json_is_array(content))
		return SG_EINVAL;
	json_array_foreach(content, i, part) {
		text = json_object_get(part, "text");
		if (!json_is_string(text) ||
		    !json_is_string(json_object_get(part, "type")) ||
		    strcmp(json_string_value(json_object_get(part, "type")), "text") != 0)
			return SG_EINVAL;
		if (out->len > start && (rc = sg_buf_puts(out, sep)) != 0)
			return rc;
		if ((rc = sg_buf_append(out, json_string_value(text), json_string_length(text))) != 0)
			return rc;
	}
	return 0;
}

int sg__data_url(const char *url, sg_iovec_t *mime, sg_iovec_t *data)
{
	const char *semi, *comma;

	if (strncmp(url, "data:", 5) != 0)
		return SG_EINVAL;
	comma = strchr(url + 5, ',');
	if (comma == NULL)
		return SG_EINVAL;
	semi = memchr(url + 5, ';', (size_t)(comma - (url + 5)));
	/* Only base64 payloads: that is what both providers take. */
	if (semi == NULL || comma - semi != 7 || memcmp(semi, ";base64", 7) != 0 ||
	    semi == url + 5)
		return SG_EINVAL;
	mime->base = url + 5;
	mime->len = (size_t)(semi - (url + 5));
	data->base = comma + 1;
	data->len = strlen(comma + 1);
	return 0;
}

int sg__stop_list(const json_t *stop, json_t **out, char *err, size_t errlen)
{
	const json_t *v;
	json_t *list;
	size_t i;

	*out = NULL;
	if (stop == NULL || json_is_null(stop))
		return 0;
	if (!json_is_string(stop) && !json_is_array(stop))
		return sg__fail(err, errlen, "'stop' must be a string or an array of strings");
	list = json_array();
	if (list == NULL)
		return SG_ENOMEM;
	if (json_is_string(stop)) {
		if (json_string_length(stop) > 0)
			json_array_append(list, (json_t *)stop);
	} else {
		json_array_foreach(stop, i, v) {
			if (!json_is_string(v)) {
				json_decref(list);
				return sg__fail(err, errlen, "'stop' must be a string or an array of strings");
			}
			if (json_string_length(v) > 0)
				json_array_append(list, (json_t *)v);
		}
	}
	if (json_array_size(list) == 0)
		json_decref(list);
	else
		*out = list;
	return 0;
}

int sg__max_tokens(const json_t *req, const json_t **out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(req, "max_completion_tokens");

	*out = NULL;
	if (v == NULL || json_is_null(v))
		v = json_object_get(req, "max_tokens");
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		return sg__fail(err, errlen, "'max_tokens' must be a positive integer");
	*out = v;
	return 0;
}

int sg__tool_args(const json_t *args, size_t mi, size_t ci, json_t **out, char *err,
                  size_t errlen)
{
	json_error_t jerr;
	json_t *v;

	*out = NULL;
	if (args == NULL || json_is_null(args) ||
	    (json_is_string(args) && json_string_length(args) == 0)) {
		v = json_object();
		if (v == NULL)
			return SG_ENOMEM;
	} else if (json_is_string(args)) {
		v = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY,
		               &jerr);
		if (!json_is_object(v)) {
			json_decref(v);
			return sg__fail(err, errlen, "messages[%zu].tool_calls[%zu].function.arguments "
			                "is not a JSON object%s%s", mi, ci, v ? "" : ": ",
			                v ? "" : jerr.text);
		}
	} else {
		return sg__fail(err, errlen, "messages[%zu].tool_calls[%zu].function.arguments "
		                "must be a string", mi, ci);
	}
	*out = v;
	return 0;
}

int sg__tools(const json_t *req, const json_t **tools, enum sg__tool_choice *choice,
              const char **name, char *err, size_t errlen)
{
	static const struct {
		const char *text;         /* as OpenAI spells it */
		enum sg__tool_choice tc;  /* what it asks for */
	} modes[] = {{"auto", SG__TC_AUTO}, {"required", SG__TC_REQUIRED}, {"none", SG__TC_NONE}};
	const json_t *tc = json_object_get(req, "tool_choice");

	*tools = json_object_get(req, "tools");
	*choice = SG__TC_UNSET;
	*name = NULL;
	if (*tools == NULL || json_is_null(*tools)) {
		*tools = NULL;
		return 0;
	}
	if (!json_is_array(*tools))
		return sg__fail(err, errlen, "'tools' must be an array");
	if (tc == NULL || json_is_null(tc))
		return 0;
	if (json_is_string(tc)) {
		for (size_t i = 0; i < SG_ARRAY_SIZE(modes); i++) {
			if (strcmp(json_string_value(tc), modes[i].text) == 0) {
				*choice = modes[i].tc;
				return 0;
			}
		}
		return sg__fail(err, errlen, "'tool_choice' \"%s\" is not supported",
		                json_string_value(tc));
	}
	if (!json_is_object(tc))
		return sg__fail(err, errlen, "'tool_choice' must be a string or an object");
	*name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
	if (*name == NULL)
		return sg__fail(err, errlen, "'tool_choice' must name a function");
	*choice = SG__TC_FUNCTION;
	return 0;
}

const json_t *sg__tool_function(const json_t *tool, size_t i, char *err, size_t errlen)
{
	const json_t *fn = json_object_get(tool, "function");
	const char *type = json_string_value(json_object_get(tool, "type"));

	if (type == NULL || strcmp(type, "function") != 0 ||
	    !json_is_string(json_object_get(fn, "name"))) {
		sg__fail(err, errlen, "tools[%zu]: only {\"type\":\"function\","
		         "\"function\":{\"name\":...}} tools are supported", i);
		return NULL;
	}
	return fn;
}
