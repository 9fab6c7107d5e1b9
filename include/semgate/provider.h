/* semgate: provider translation.
 *
 * semgate speaks OpenAI's API to clients. A provider other than "openai"
 * has its request, its reply, its errors and its stream translated both
 * ways here; transport (libcurl), retries and routing are elsewhere.
 * Every function is pure (no I/O), so each provider is unit-tested against
 * recorded, realistic bodies.
 */
#ifndef SEMGATE_PROVIDER_H
#define SEMGATE_PROVIDER_H

#include <stddef.h>

#include "semgate/buf.h"

typedef struct sg_provider sg_provider_t;
typedef struct sg_provider_stream sg_provider_stream_t;

/** What an upstream request needs beyond the body. */
typedef struct sg_provider_target {
	char url[2048];        /* full URL to POST to */
	char headers[4][512];  /* provider-specific headers ("Name: value"), e.g. auth */
	int nheaders;          /* entries used in headers */
} sg_provider_target_t;

/** Inputs that come from the deployment's configuration. */
typedef struct sg_provider_deployment {
	const char *base_url;     /* e.g. "https://api.anthropic.com" (no trailing '/') */
	const char *model;        /* upstream model / deployment name */
	const char *api_key;      /* secret, or NULL */
	const char *api_version;  /* azure: api-version; anthropic: anthropic-version; or NULL */
} sg_provider_deployment_t;

struct sg_provider {
	const char *name; /* "anthropic", "gemini", ... */

	/**
	 * Translate an OpenAI chat-completions request (`req`: a parsed json_t
	 * object, borrowed) into the provider's request body (appended to body)
	 * and target (URL, headers). stream: the client asked for a stream.
	 * Returns 0, SG_EINVAL with a message in err (a request the provider
	 * cannot express: answered 400), SG_ENOMEM.
	 */
	int (*request)(void *req, const sg_provider_deployment_t *d, int stream, sg_buf_t *body,
	               sg_provider_target_t *target, char *err, size_t errlen);

	/**
	 * Translate a complete (non-streamed) 2xx reply into an OpenAI
	 * chat.completion object (appended to out). model: the name to report.
	 * SG_EINVAL if the reply is not what the provider sends (-> 502).
	 */
	int (*response)(const char *body, size_t len, const char *model, sg_buf_t *out);

	/**
	 * Translate an error reply (status >= 400) into OpenAI's error shape
	 * {"error":{"message","type","code"}} (appended to out); *status may be
	 * adjusted (e.g. Anthropic's 529 overloaded -> 503). Never fails on
	 * garbage: it then wraps the raw text.
	 */
	int (*error)(const char *body, size_t len, int *status, sg_buf_t *out);

	/** Start translating a streamed reply; NULL on allocation failure. */
	sg_provider_stream_t *(*stream_new)(const char *model);
	/**
	 * Feed raw bytes of the provider's stream (any split); complete OpenAI
	 * SSE events ("data: {chat.completion.chunk}\n\n") are appended to out
	 * as soon as the input allows. SG_EINVAL on a malformed stream; an
	 * in-stream error event from the provider is translated into an OpenAI
	 * error event and sets the stream's failed state.
	 */
	int (*stream_feed)(sg_provider_stream_t *s, const char *p, size_t n, sg_buf_t *out);
	/**
	 * The provider's stream ended. Appends what is still due (the final
	 * chunk and "data: [DONE]\n\n") when the stream completed properly and
	 * returns 0; returns SG_EUPSTREAM (appending nothing) when it ended
	 * early or failed, so that the caller reports the interruption.
	 */
	int (*stream_end)(sg_provider_stream_t *s, sg_buf_t *out);
	void (*stream_free)(sg_provider_stream_t *s);
};

/** The provider of that name, or NULL ("openai" and "azure" are handled by the proxy itself). */
const sg_provider_t *sg_provider_find(const char *name);

/* ---- Shared by the provider implementations (src/provider*.c) only. ------
 * Not for other modules; they belong in a private src/provider_int.h once
 * the module may have one. */

struct json_t;

/** An incremental Server-Sent-Events reader: lines may be split anywhere,
 * end in "\n", "\r\n" or "\r"; "event:" and "data:" fields are kept. */
typedef struct sg__sse {
	sg_buf_t line;  /* the line being read (capped: SG_ETOOBIG past the cap) */
	sg_buf_t data;  /* "data:" lines of the event being read, joined by '\n' */
	char event[64]; /* "event:" of the event being read, or "" */
	int has_data;   /* a data: line was seen in this event */
	int skip_lf;    /* the previous byte was '\r': a '\n' now ends nothing */
} sg__sse_t;

/** Called once per complete event; data is NUL-terminated. Non-zero stops the feed. */
typedef int (*sg__sse_cb)(void *ctx, const char *event, const char *data, size_t len);

/** max: cap on one line and on one event's data (0: unlimited). */
void sg__sse_init(sg__sse_t *s, size_t max);
void sg__sse_free(sg__sse_t *s);
/** Feed bytes; cb runs for each event completed by them. Returns cb's
 * non-zero result, SG_ETOOBIG, SG_ENOMEM or 0. */
int sg__sse_feed(sg__sse_t *s, const char *p, size_t n, sg__sse_cb cb, void *ctx);
/** The input ended: an event left without its blank line is delivered anyway. */
int sg__sse_flush(sg__sse_t *s, sg__sse_cb cb, void *ctx);

/** Append v as compact JSON. v is borrowed. */
int sg__json_append(sg_buf_t *out, const struct json_t *v);
/** Append n bytes as a JSON string literal; invalid UTF-8 becomes '?'. */
int sg__json_str_lossy(sg_buf_t *out, const char *s, size_t n);
/** Append {"error":{"message":msg,"type":type,"code":code|null}}. */
int sg__error_body(sg_buf_t *out, const char *msg, size_t msglen, const char *type,
                   const char *code);
/** OpenAI's error type for an HTTP status ("invalid_request_error", ...). */
const char *sg__error_type(int status);
/** Append the OpenAI error body for a reply that could not be understood:
 * the raw text (at most 512 bytes) in the message. */
int sg__error_raw(const char *provider, const char *body, size_t len, int status,
                  sg_buf_t *out);

/** What every chunk of one translated stream repeats. */
typedef struct sg__chunk_head {
	char id[128];     /* "chatcmpl-..." */
	long long created; /* unix time */
	char model[256];  /* the model to report */
} sg__chunk_head_t;

/** Append one SSE event "data: {chat.completion.chunk}\n\n" for choice
 * index with that delta (stolen; NULL: {}) and finish_reason (NULL: null). */
int sg__chunk(sg_buf_t *out, const sg__chunk_head_t *h, int index, struct json_t *delta,
              const char *finish_reason);
/** Append the usage chunk (choices: []) and "data: [DONE]". */
int sg__chunk_usage_done(sg_buf_t *out, const sg__chunk_head_t *h, long long prompt_tokens,
                         long long completion_tokens);
/** Append an OpenAI error event "data: {"error":{...}}\n\n". */
int sg__chunk_error(sg_buf_t *out, const char *msg, const char *type, const char *code);

/** Append a chat.completion object; message is stolen. */
int sg__completion(sg_buf_t *out, const char *id, const char *model, struct json_t *choices,
                   long long prompt_tokens, long long completion_tokens);

/** Format into target->headers[target->nheaders++]; SG_EINVAL if it does not fit. */
int sg__target_header(sg_provider_target_t *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/** Write a message into err (if any) and return SG_EINVAL. */
int sg__fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/** Append the text of an OpenAI message content (a string, or the text of
 * an array of parts, joined with sep). SG_EINVAL for a part that is not
 * text or for another type of content; null appends nothing. */
int sg__content_text(const struct json_t *content, const char *sep, sg_buf_t *out);
/** Split "data:MIME;base64,DATA": mime and data point into url. SG_EINVAL
 * when url is not such a URL. */
int sg__data_url(const char *url, sg_iovec_t *mime, sg_iovec_t *data);
/** OpenAI's "stop" (a string, an array of strings or null) as a new array
 * of its non-empty strings (*out NULL when there are none). */
int sg__stop_list(const struct json_t *stop, struct json_t **out, char *err, size_t errlen);

extern const sg_provider_t sg__provider_anthropic;
extern const sg_provider_t sg__provider_gemini;

#endif
