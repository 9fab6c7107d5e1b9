/* Cache keys: split a request into its hard scope and the prompt to embed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "semgate/cache_key.h"
#include "semgate/hash.h"
#include "key_int.h"

#define SG_KEY_MAX_TEXT (256u << 10) /* longest prompt keyed; longer bypasses */

/* Request fields that do not change the answer. Everything else is scope. */
static const char *const unscoped[] = {
	"messages", "prompt", "model", "stream", "stream_options", "user", "metadata", "store",
	"service_tier", NULL,
};

static int is_unscoped(const char *key)
{
	for (const char *const *u = unscoped; *u; u++)
		if (strcmp(*u, key) == 0)
			return 1;
	return 0;
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int sg__key_canon_dump(sg_buf_t *out, const json_t *v)
{
	char num[32];
	int rc = 0;

	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(v), i = 0;
		const char *stack_keys[32], **keys = stack_keys, *key;
		json_t *item;
		if (n > 32 && (keys = malloc(n * sizeof(*keys))) == NULL)
			return SG_ENOMEM;
		json_object_foreach((json_t *)v, key, item)
			keys[i++] = key;
		qsort(keys, n, sizeof(*keys), cmp_keys);
		rc = sg_buf_append(out, "{", 1);
		for (i = 0; i < n && rc == 0; i++) {
			if (i > 0)
				rc = sg_buf_append(out, ",", 1);
			if (rc == 0)
				rc = sg_buf_json_str(out, keys[i], strlen(keys[i]));
			if (rc == 0)
				rc = sg_buf_append(out, ":", 1);
			if (rc == 0)
				rc = sg__key_canon_dump(out, json_object_get(v, keys[i]));
		}
		if (keys != stack_keys)
			free(keys);
		return rc ? rc : sg_buf_append(out, "}", 1);
	}
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		rc = sg_buf_append(out, "[", 1);
		for (size_t i = 0; i < n && rc == 0; i++) {
			if (i > 0)
				rc = sg_buf_append(out, ",", 1);
			if (rc == 0)
				rc = sg__key_canon_dump(out, json_array_get(v, i));
		}
		return rc ? rc : sg_buf_append(out, "]", 1);
	}
	case JSON_STRING:
		return sg_buf_json_str(out, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return sg_buf_puts(out, num);
	case JSON_REAL: {
		double d = json_real_value(v);
		if (d == floor(d) && fabs(d) < 9e15) { /* 1.0 keys like 1 */
			snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, (json_int_t)d);
			return sg_buf_puts(out, num);
		}
		/* jansson's own real formatting, so that keys stay what they were */
		char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		if (s == NULL)
			return SG_ENOMEM;
		rc = sg_buf_puts(out, s);
		free(s);
		return rc;
	}
	case JSON_TRUE:
		return sg_buf_append(out, "true", 4);
	case JSON_FALSE:
		return sg_buf_append(out, "false", 5);
	default:
		return sg_buf_append(out, "null", 4);
	}
}

static int is_system_role(const char *role)
{
	return strcmp(role, "system") == 0 || strcmp(role, "developer") == 0;
}

/* Append a message's text to the prompt; non-text parts go to media (scope). */
static int append_content(sg_buf_t *prompt, json_t *content, json_t *media)
{
	size_t i, start = prompt->len;
	json_t *part;

	if (json_is_string(content))
		return sg_buf_append(prompt, json_string_value(content), json_string_length(content));
	if (!json_is_array(content))
		return json_is_null(content) || content == NULL ? 0 : SG_EINVAL;
	json_array_foreach(content, i, part) {
		json_t *text = json_object_get(part, "text");
		if (json_is_string(text)) {
			if (prompt->len > start && sg_buf_append(prompt, "\n", 1))
				return SG_ETOOBIG;
			if (sg_buf_append(prompt, json_string_value(text), json_string_length(text)))
				return SG_ETOOBIG;
		} else if (json_array_append(media, part) != 0) {
			return SG_ENOMEM;
		}
	}
	return 0;
}

static const char *chat_split(json_t *root, const sg_cache_key_opts_t *opts, json_t *scope,
                              sg_buf_t *prompt)
{
	json_t *msgs = json_object_get(root, "messages");
	json_t *system = json_array(), *history = json_array(), *media = json_array();
	size_t n = json_array_size(msgs), first_prompt;
	const char *why = NULL;

	json_object_set_new(scope, "system", system);
	json_object_set_new(scope, "history", history);
	json_object_set_new(scope, "media", media);
	if (!system || !history || !media)
		return "out of memory";
	if (n == 0)
		return "no messages";
	json_t *last = json_array_get(msgs, n - 1);
	const char *role = json_string_value(json_object_get(last, "role"));
	if (role == NULL)
		return "message without a role";
	if (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0)
		return "tool-call continuation";
	if (strcmp(role, "user") != 0)
		return "the last message is not from the user";

	first_prompt = n - 1;
	if (opts->embed_mode == SG_EMBED_LAST_TURNS && opts->embed_turns > 1)
		first_prompt = n > (size_t)opts->embed_turns ? n - (size_t)opts->embed_turns : 0;
	for (size_t i = 0; i < n; i++) {
		json_t *m = json_array_get(msgs, i);
		const char *r = json_string_value(json_object_get(m, "role"));
		if (r == NULL)
			return "message without a role";
		if (is_system_role(r)) {
			if (json_array_append(system, m))
				return "out of memory";
			continue;
		}
		if (i < first_prompt) {
			if (opts->embed_mode != SG_EMBED_LAST_MESSAGE &&
			    json_array_append(history, m))
				return "out of memory";
			continue;
		}
		if (json_object_get(m, "tool_calls") || strcmp(r, "tool") == 0) {
			why = "tool calls in the embedded turns";
			break;
		}
		if (first_prompt < n - 1) {
			/* several turns embedded: keep who said what */
			if (prompt->len && sg_buf_append(prompt, "\n", 1))
				return "prompt too long";
			if (sg_buf_puts(prompt, r) || sg_buf_append(prompt, ": ", 2))
				return "prompt too long";
		}
		int rc = append_content(prompt, json_object_get(m, "content"), media);
		if (rc == SG_ETOOBIG)
			return "prompt too long";
		if (rc)
			return "unsupported message content";
	}
	return why;
}

static const char *completion_split(json_t *root, sg_buf_t *prompt)
{
	json_t *p = json_object_get(root, "prompt");

	if (json_is_array(p)) {
		if (json_array_size(p) != 1)
			return "batched prompts";
		p = json_array_get(p, 0);
	}
	if (!json_is_string(p))
		return "prompt is not text";
	if (sg_buf_append(prompt, json_string_value(p), json_string_length(p)))
		return "prompt too long";
	return NULL;
}

void sg_cache_key_init(sg_cache_key_t *k)
{
	sg_buf_init(&k->scope, 0);
	sg_buf_init(&k->prompt, SG_KEY_MAX_TEXT);
	k->scope_hash = k->exact_hash = 0;
	k->bypass = NULL;
}

void sg_cache_key_free(sg_cache_key_t *k)
{
	sg_buf_free(&k->scope);
	sg_buf_free(&k->prompt);
}

void sg_cache_key_ids(const sg_hash_key_t *key, const char *scope, size_t scope_len,
                      const char *prompt, size_t prompt_len, uint64_t *scope_hash,
                      uint64_t *exact_hash)
{
	static const sg_hash_key_t zero = {0, 0};
	if (key == NULL)
		key = &zero;
	*scope_hash = sg_siphash(key, scope, scope_len);
	/* the prompt under a key of its own per scope: same prompt, other scope,
	 * unrelated ids */
	sg_hash_key_t pk = {key->k0 ^ *scope_hash, key->k1 + 0x9E3779B97F4A7C15ULL};
	*exact_hash = sg_siphash(&pk, prompt, prompt_len);
}

void sg_cache_key_hash(sg_cache_key_t *k, const sg_hash_key_t *key)
{
	sg_cache_key_ids(key, k->scope.data, k->scope.len, k->prompt.data, k->prompt.len,
	                 &k->scope_hash, &k->exact_hash);
}

int sg_cache_key_build(sg_cache_key_t *k, void *rootp, enum sg_cache_kind kind, const char *ns,
                       const char *model, const sg_cache_key_opts_t *opts)
{
	json_t *root = rootp, *scope, *params, *v;
	const char *key;
	int rc = 0;

	sg_buf_reset(&k->scope);
	sg_buf_reset(&k->prompt);
	k->bypass = NULL;

	v = json_object_get(root, "n");
	if (json_is_integer(v) && json_integer_value(v) > 1) {
		k->bypass = "n > 1";
		return 0;
	}
	v = json_object_get(root, "temperature");
	if (json_is_number(v) && json_number_value(v) > opts->max_temperature) {
		k->bypass = "temperature above cache.max_temperature";
		return 0;
	}

	scope = json_object();
	params = json_object();
	if (!scope || !params) {
		json_decref(scope);
		json_decref(params);
		return SG_ENOMEM;
	}
	json_object_set_new(scope, "kind", json_string(kind == SG_CACHE_CHAT ? "chat" : "completion"));
	json_object_set_new(scope, "ns", json_string(ns));
	json_object_set_new(scope, "model", json_string(model));
	json_object_set_new(scope, "params", params);
	json_object_foreach(root, key, v) {
		if (!is_unscoped(key) && json_object_set(params, key, v) != 0) {
			rc = SG_ENOMEM;
			goto out;
		}
	}
	k->bypass = kind == SG_CACHE_CHAT ? chat_split(root, opts, scope, &k->prompt)
	                                  : completion_split(root, &k->prompt);
	if (k->bypass)
		goto out;
	if (k->prompt.len == 0) {
		k->bypass = "empty prompt";
		goto out;
	}
	if ((rc = sg__key_canon_dump(&k->scope, scope)) != 0)
		goto out;
	sg_cache_key_hash(k, opts->hash_key);
out:
	json_decref(scope);
	return rc;
}
