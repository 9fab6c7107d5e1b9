/*
 * Every error semgate itself answers a client with, in one list:
 * X(NAME, HTTP status, OpenAI error type, OpenAI error code). The responders
 * (sg__respond_error and friends, server_int.h) take an SG_CE_NAME and a
 * message; the body is OpenAI's {"error":{"message","type","code"}}.
 * Errors an upstream sent are relayed as they came, not from here.
 */
#ifndef SEMGATE_CLIENT_ERRORS_H
#define SEMGATE_CLIENT_ERRORS_H

#define SG_CLIENT_ERRORS(X)                                                          \
	/* the request itself */                                                     \
	X(BAD_REQUEST, 400, "invalid_request_error", "bad_request")                  \
	X(INVALID_JSON, 400, "invalid_request_error", "invalid_json")                \
	X(INVALID_REQUEST, 400, "invalid_request_error", "invalid_request")          \
	X(INVALID_CACHE_CONTROL, 400, "invalid_request_error", "invalid_cache_control") \
	X(UNSUPPORTED_FOR_PROVIDER, 400, "invalid_request_error", "unsupported_for_provider") \
	X(UNAUTHORIZED, 401, "invalid_request_error", "unauthorized")                \
	/* keys, limits, budgets (src/gateway/auth.c, limits.c, spend.c) */          \
	X(MISSING_API_KEY, 401, "invalid_request_error", "missing_api_key")          \
	X(INVALID_API_KEY, 401, "invalid_request_error", "invalid_api_key")          \
	X(KEY_EXPIRED, 401, "invalid_request_error", "key_expired")                  \
	X(KEY_DISABLED, 403, "permission_error", "key_disabled")                     \
	X(MODEL_NOT_ALLOWED, 403, "permission_error", "model_not_allowed")           \
	X(MODEL_UNPRICED, 403, "permission_error", "model_unpriced")                 \
	X(RATE_LIMITED, 429, "rate_limit_error", "rate_limit_exceeded")              \
	X(BUDGET_EXCEEDED, 429, "insufficient_quota", "budget_exceeded")             \
	X(NOT_FOUND, 404, "invalid_request_error", "not_found")                      \
	X(MODEL_NOT_FOUND, 404, "invalid_request_error", "model_not_found")          \
	X(CACHE_DISABLED, 404, "invalid_request_error", "cache_disabled")            \
	X(METHOD_NOT_ALLOWED, 405, "invalid_request_error", "method_not_allowed")    \
	X(REQUEST_TIMEOUT, 408, "invalid_request_error", "request_timeout")          \
	X(BODY_TOO_LARGE, 413, "invalid_request_error", "body_too_large")            \
	X(URI_TOO_LONG, 414, "invalid_request_error", "uri_too_long")                \
	X(EXPECTATION_FAILED, 417, "invalid_request_error", "expectation_failed")    \
	X(HEADERS_TOO_LARGE, 431, "invalid_request_error", "headers_too_large")      \
	/* semgate */                                                                \
	X(CACHE_ERROR, 500, "server_error", "cache_error")                           \
	X(STORE_ERROR, 500, "server_error", "store_error")                           \
	X(CONFLICT, 409, "invalid_request_error", "conflict")                        \
	X(OVERLOADED, 503, "server_error", "overloaded")                             \
	X(DRAINING, 503, "server_error", "draining")                                 \
	X(NO_HEALTHY_UPSTREAM, 503, "server_error", "no_healthy_upstream")           \
	/* the upstream */                                                           \
	X(UPSTREAM_ERROR, 502, "upstream_error", "upstream_error")                   \
	X(UPSTREAM_UNREACHABLE, 502, "upstream_error", "upstream_unreachable")       \
	X(UPSTREAM_TOO_LARGE, 502, "upstream_error", "upstream_response_too_large")  \
	X(UPSTREAM_INVALID_RESPONSE, 502, "upstream_error", "upstream_invalid_response") \
	X(UPSTREAM_TIMEOUT, 504, "upstream_error", "upstream_timeout")

enum sg_client_error {
#define SG__CE_ENUM(name, status, type, code) SG_CE_##name,
	SG_CLIENT_ERRORS(SG__CE_ENUM)
#undef SG__CE_ENUM
	SG_CE__LAST
};

/** One entry of the list. */
typedef struct sg_client_error_info {
	int status;       /* HTTP status */
	const char *type; /* OpenAI's error.type */
	const char *code; /* OpenAI's error.code */
} sg_client_error_info_t;

/** The entry for e (e must be one of the list). */
const sg_client_error_info_t *sg__client_error(enum sg_client_error e);

#endif
