/* The OpenAI endpoints (routed by routes.c): validation of the request
 * bodies before anything is forwarded, /models, and health. */
#include <string.h>

#include <jansson.h>

#include "semgate/json_scan.h"
#include "semgate/log.h"
#include "server_int.h"

/* The model groups; with auth.mode "keys", those the caller's key may use. */
static void handle_models(sg_req_t *req)
{
	const sg_config_t *cfg = req->gen->cfg;
	sg_principal_t *key = NULL, *team = NULL;
	sg_buf_t b;

	if (cfg->auth.keys && sg__req_gateway(req)->authdb &&
	    sg__auth_check(req, &key, &team) != 0)
		return;
	sg_buf_init(&b, 0);
	sg_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0, n = 0; i < cfg->nmodels; i++) {
		const char *name = cfg->models[i].name;
		if ((key && !sg__principal_allows(key, name)) ||
		    (team && !sg__principal_allows(team, name)))
			continue;
		sg_buf_puts(&b, n++ ? ",{\"id\":" : "{\"id\":");
		sg_buf_json_str(&b, cfg->models[i].name, strlen(cfg->models[i].name));
		sg_buf_puts(&b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"semgate\"}");
	}
	if (sg_buf_puts(&b, "]}\n") != 0) {
		sg_buf_free(&b);
		sg__respond_error(req, SG_CE_OVERLOADED, "out of memory");
		return;
	}
	sg__respond(req, 200, "application/json", b.data, b.len, NULL);
	sg_buf_free(&b);
}

/* Checks the fields each endpoint needs; returns a message or NULL. */
static const char *validate(json_t *root, enum sg_call_kind kind)
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
	case SG_CALL_CHAT: {
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
	case SG_CALL_COMPLETIONS:
		v = json_object_get(root, "prompt");
		if (v == NULL)
			return "missing required field 'prompt'";
		if (!json_is_string(v) && !json_is_array(v))
			return "'prompt' must be a string or an array";
		break;
	case SG_CALL_EMBEDDINGS:
		v = json_object_get(root, "input");
		if (v == NULL)
			return "missing required field 'input'";
		if (!json_is_string(v) && !json_is_array(v))
			return "'input' must be a string or an array";
		break;
	}
	return NULL;
}

static void handle_inference(sg_req_t *req, enum sg_call_kind kind)
{
	static const char *const paths[] = {[SG_CALL_CHAT] = "/chat/completions",
	                                    [SG_CALL_COMPLETIONS] = "/completions",
	                                    [SG_CALL_EMBEDDINGS] = "/embeddings"};
	const sg_config_t *cfg = req->gen->cfg;
	const sg_model_t *model;
	json_error_t jerr;
	const char *problem;
	json_t *root;

	/* with keys, nothing about the gateway (which models exist, what a valid
	 * body is) is told to a caller without a valid key: the key first (the auth
	 * step checks it again with the model) */
	req->auth_key = req->auth_team = NULL;
	if (cfg->auth.keys && sg__req_gateway(req)->authdb &&
	    sg__auth_check(req, &req->auth_key, &req->auth_team) != 0)
		return;
	if (req->body.len == 0) {
		sg__respond_error(req, SG_CE_INVALID_JSON,
		                  "the request body is empty; expected a JSON object");
		return;
	}
	root = sg_json_load(req->body.data, req->body.len, &jerr);
	if (root == NULL) {
		sg__respond_error(req, SG_CE_INVALID_JSON,
		                  "invalid JSON in request body at line %d, column %d: %s",
		                  jerr.line, jerr.column, jerr.text);
		return;
	}
	problem = validate(root, kind);
	if (problem) {
		sg__respond_error(req, SG_CE_INVALID_REQUEST, "%s", problem);
		goto out;
	}
	json_t *mv = json_object_get(root, "model");
	model = sg_config_find_model(cfg, json_string_value(mv), json_string_length(mv));
	if (model == NULL) {
		sg__respond_error(req, SG_CE_MODEL_NOT_FOUND,
		                  "the model '%s' does not exist on this gateway",
		                  json_string_value(mv));
		goto out;
	}
	int stream = kind != SG_CALL_EMBEDDINGS && json_is_true(json_object_get(root, "stream"));
	sg__call_start(req, model, root, kind, paths[kind], stream);
	req->auth_key = req->auth_team = NULL; /* the auth step took them (synchronously) */
out:
	json_decref(root);
}

void sg__route_chat(sg_req_t *req, sg_iovec_t rest) { handle_inference(req, SG_CALL_CHAT); }
void sg__route_completions(sg_req_t *req, sg_iovec_t rest)
{
	handle_inference(req, SG_CALL_COMPLETIONS);
}
void sg__route_embeddings(sg_req_t *req, sg_iovec_t rest) { handle_inference(req, SG_CALL_EMBEDDINGS); }
void sg__route_models(sg_req_t *req, sg_iovec_t rest) { handle_models(req); }

void sg__route_healthz(sg_req_t *req, sg_iovec_t rest)
{
	static const char ok[] = "{\"status\":\"ok\"}\n";
	sg__respond(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

void sg__route_readyz(sg_req_t *req, sg_iovec_t rest)
{
	static const char ready[] = "{\"status\":\"ready\"}\n";
	if (sg__req_server(req)->draining)
		return sg__respond_error(req, SG_CE_DRAINING, "semgate is shutting down");
	sg__respond(req, 200, "application/json", ready, sizeof(ready) - 1, NULL);
}


