/* Routing: which endpoint a request is for, and validation of the OpenAI
 * request bodies before anything is forwarded. */
#include <string.h>

#include <jansson.h>

#include "semgate/json_scan.h"
#include "semgate/log.h"
#include "server_int.h"

enum kind { KIND_CHAT, KIND_COMPLETIONS, KIND_EMBEDDINGS };

static int path_is(sg_iovec_t path, const char *s)
{
	size_t n = strlen(s);
	return path.len == n && memcmp(path.base, s, n) == 0;
}

static void method_not_allowed(sg_req_t *req, const char *allow)
{
	sg__respond_error(req, 405, "invalid_request_error", "method_not_allowed",
	                  "method not allowed here (use %s)", allow);
}

static void handle_models(sg_req_t *req)
{
	const sg_config_t *cfg = sg__req_server(req)->cfg;
	sg_buf_t b;

	sg_buf_init(&b, 0);
	sg_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0; i < cfg->nmodels; i++) {
		sg_buf_puts(&b, i ? ",{\"id\":" : "{\"id\":");
		sg_buf_json_str(&b, cfg->models[i].name, strlen(cfg->models[i].name));
		sg_buf_puts(&b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"semgate\"}");
	}
	if (sg_buf_puts(&b, "]}\n") != 0) {
		sg_buf_free(&b);
		sg__respond_error(req, 503, "server_error", "overloaded", "out of memory");
		return;
	}
	sg__respond(req, 200, "application/json", b.data, b.len, NULL);
	sg_buf_free(&b);
}

/* Checks the fields each endpoint needs; returns a message or NULL. */
static const char *validate(json_t *root, enum kind kind)
{
	json_t *v;

	if (!json_is_object(root))
		return "the request body must be a JSON object";
	v = json_object_get(root, "model");
	if (v == NULL)
		return "missing required field 'model'";
	if (!json_is_string(v) || json_string_length(v) == 0)
		return "'model' must be a non-empty string";
	v = json_object_get(root, "stream");
	if (v && !json_is_boolean(v) && !json_is_null(v))
		return "'stream' must be a boolean";
	switch (kind) {
	case KIND_CHAT: {
		json_t *msgs = json_object_get(root, "messages");
		size_t i;
		json_t *m;
		if (msgs == NULL)
			return "missing required field 'messages'";
		if (!json_is_array(msgs) || json_array_size(msgs) == 0)
			return "'messages' must be a non-empty array";
		json_array_foreach(msgs, i, m) {
			if (!json_is_object(m))
				return "each of 'messages' must be an object";
			if (!json_is_string(json_object_get(m, "role")))
				return "each of 'messages' must have a string 'role'";
		}
		break;
	}
	case KIND_COMPLETIONS:
		v = json_object_get(root, "prompt");
		if (v == NULL)
			return "missing required field 'prompt'";
		if (!json_is_string(v) && !json_is_array(v))
			return "'prompt' must be a string or an array";
		break;
	case KIND_EMBEDDINGS:
		v = json_object_get(root, "input");
		if (v == NULL)
			return "missing required field 'input'";
		if (!json_is_string(v) && !json_is_array(v))
			return "'input' must be a string or an array";
		break;
	}
	return NULL;
}

static void handle_inference(sg_req_t *req, enum kind kind)
{
	static const char *const paths[] = {"/chat/completions", "/completions", "/embeddings"};
	const sg_config_t *cfg = sg__req_server(req)->cfg;
	const sg_model_t *model;
	json_error_t jerr;
	const char *problem;
	json_t *root;

	if (req->body.len == 0) {
		sg__respond_error(req, 400, "invalid_request_error", "invalid_json",
		                  "the request body is empty; expected a JSON object");
		return;
	}
	root = sg_json_load(req->body.data, req->body.len, &jerr);
	if (root == NULL) {
		sg__respond_error(req, 400, "invalid_request_error", "invalid_json",
		                  "invalid JSON in request body at line %d, column %d: %s",
		                  jerr.line, jerr.column, jerr.text);
		return;
	}
	problem = validate(root, kind);
	if (problem) {
		sg__respond_error(req, 400, "invalid_request_error", "invalid_request", "%s", problem);
		goto out;
	}
	json_t *mv = json_object_get(root, "model");
	model = sg_config_find_model(cfg, json_string_value(mv), json_string_length(mv));
	if (model == NULL) {
		sg__respond_error(req, 404, "invalid_request_error", "model_not_found",
		                  "the model '%s' does not exist on this gateway",
		                  json_string_value(mv));
		goto out;
	}
	int stream = kind != KIND_EMBEDDINGS && json_is_true(json_object_get(root, "stream"));
	if (kind == KIND_EMBEDDINGS)
		sg__proxy(req, model, root, paths[kind], 0);
	else
		sg__cache_request(req, model, root,
		                  kind == KIND_CHAT ? SG_CACHE_CHAT : SG_CACHE_COMPLETIONS, paths[kind],
		                  stream);
out:
	json_decref(root);
}

void sg__handle(sg_req_t *req)
{
	sg_iovec_t path = {req->url.data ? req->url.data : "", req->url.len};
	const char *q = memchr(path.base, '?', path.len);
	int get = req->method == HTTP_GET, post = req->method == HTTP_POST;

	if (q)
		path.len = (size_t)(q - path.base);
	if (path_is(path, "/healthz")) {
		if (!get)
			return method_not_allowed(req, "GET");
		static const char ok[] = "{\"status\":\"ok\"}\n";
		return sg__respond(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
	}
	if (path_is(path, "/readyz")) {
		if (!get)
			return method_not_allowed(req, "GET");
		if (sg__req_server(req)->draining)
			return sg__respond_error(req, 503, "server_error", "draining",
			                         "semgate is shutting down");
		static const char ready[] = "{\"status\":\"ready\"}\n";
		return sg__respond(req, 200, "application/json", ready, sizeof(ready) - 1, NULL);
	}
	/* Health is answered above even beyond the connection limit, admin even
	 * under memory pressure (/stats says what is held); the rest may be shed. */
	if (sg__req_refused(req))
		return;
	if (sg__admin(req, path))
		return;
	if (sg__req_shed(req))
		return;
	/* OpenAI clients whose base URL lacks "/v1" call the bare paths. */
	if (path.len >= 4 && memcmp(path.base, "/v1/", 4) == 0) {
		path.base += 3;
		path.len -= 3;
	}
	if (path_is(path, "/chat/completions"))
		return post ? handle_inference(req, KIND_CHAT) : method_not_allowed(req, "POST");
	if (path_is(path, "/completions"))
		return post ? handle_inference(req, KIND_COMPLETIONS) : method_not_allowed(req, "POST");
	if (path_is(path, "/embeddings"))
		return post ? handle_inference(req, KIND_EMBEDDINGS) : method_not_allowed(req, "POST");
	if (path_is(path, "/models"))
		return get ? handle_models(req) : method_not_allowed(req, "GET");
	sg__respond_error(req, 404, "invalid_request_error", "not_found", "no route for %s %.*s",
	                  llhttp_method_name((llhttp_method_t)req->method),
	                  (int)SG_MIN(path.len, 200), path.base);
}

void sg__handle_abort(sg_req_t *req)
{
	sg__cache_abort(req);
	sg__proxy_abort(req);
}

void sg__handle_writable(sg_req_t *req)
{
	sg__proxy_writable(req);
}
