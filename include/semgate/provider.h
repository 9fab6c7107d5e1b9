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
	const char *name; /* "openai", "azure", "anthropic", "gemini" */

	/**
	 * OpenAI's own wire format (openai, azure): the client's body is
	 * forwarded as it is (with the deployment's model name), and replies,
	 * errors and streams are relayed untranslated; request, response, error
	 * and stream_* are NULL. Only url and auth differ.
	 */
	int passthrough;
	/** passthrough: the URL of OpenAI path `path` ("/chat/completions") on d, into out. */
	void (*url)(const sg_provider_deployment_t *d, const char *path, char *out, size_t n);
	/** passthrough: the header line carrying api_key ("Authorization: Bearer ..."), into out. */
	void (*auth)(const char *api_key, char *out, size_t n);

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

/** The provider table's entry of that name ("openai", "azure", "anthropic",
 * "gemini"), or NULL. The configuration resolves it once, at load
 * (sg_deployment_t.prov). */
const sg_provider_t *sg_provider_find(const char *name);

#endif
