/* Private to the provider module (src/provider*.c): the SSE reader, the
 * writers of OpenAI's chunks, completions and errors, and the readers of
 * OpenAI request fields that every translation shares. Not for other
 * modules. */
#ifndef SEMGATE_PROVIDER_INT_H
#define SEMGATE_PROVIDER_INT_H

#include <stddef.h>

#include <jansson.h>

#include "semgate/buf.h"
#include "semgate/provider.h"
#include "semgate/sse.h"
#include "openai_wire.h" /* the writers of OpenAI's chunks, completions and errors */

/* ---- SSE ------------------------------------------------------------------ */

/* The SSE reader (semgate/sse.h) as the providers call it. */
typedef struct sg__sse {
	sg_sse_t r; /* the reader; r.event names the event being delivered */
} sg__sse_t;

/* Called once per complete event; data is NUL-terminated. Non-zero stops the feed. */
typedef int (*sg__sse_cb)(void *ctx, const char *event, const char *data, size_t len);

/* max: cap on one line and on one event's data (0: unlimited). */
void sg__sse_init(sg__sse_t *s, size_t max);
void sg__sse_free(sg__sse_t *s);
/* Feed bytes; cb runs for each event completed by them. Returns cb's
 * non-zero result, SG_ETOOBIG, SG_ENOMEM or 0. */
int sg__sse_feed(sg__sse_t *s, const char *p, size_t n, sg__sse_cb cb, void *ctx);
/* The input ended: an event left without its blank line is delivered anyway. */
int sg__sse_flush(sg__sse_t *s, sg__sse_cb cb, void *ctx);

/* ---- JSON and errors ------------------------------------------------------ */

/* OpenAI's error type for an HTTP status ("invalid_request_error", ...). */
const char *sg__error_type(int status);
/* OpenAI's error type for a provider's error name: the second of the map's
 * pair whose first is name; sg__error_type(status) when none is (or name
 * is NULL). */
const char *sg__error_type_map(const char *const map[][2], size_t n, const char *name,
                               int status);
/* Append the OpenAI error body for a reply that could not be understood:
 * the raw text (at most 512 bytes) in the message. */
int sg__error_raw(const char *provider, const char *body, size_t len, int status,
                  sg_buf_t *out);

/* Format into target->headers[target->nheaders++]; SG_EINVAL if it does not fit. */
int sg__target_header(sg_provider_target_t *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- request helpers ------------------------------------------------------ */

/* Write a message into err (if any) and return SG_EINVAL. */
int sg__fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Called by sg__messages_walk for messages[mi] (msg) of role "user",
 * "assistant" or "tool"; list is the request's whole array. Appends what
 * the message becomes to out (e.g. with sg__push_merged). Returns 0 or an
 * error (SG_EINVAL with a message in err). */
typedef int (*sg__message_cb)(json_t *out, const json_t *list, size_t mi, const json_t *msg,
                              const char *role, char *err, size_t errlen);
/* Walk the request's "messages" into *out, a new array (caller frees; NULL
 * on error): the text of system and developer messages is appended to
 * system (separated by "\n\n"; empty ones leave nothing), every user,
 * assistant and tool message is handed to cb, in order. Returns cb's error,
 * SG_ENOMEM, or SG_EINVAL with a message in err when "messages" is not a
 * non-empty array, a message has no role or an unknown one, a system
 * message is not text, or *out would be empty. */
int sg__messages_walk(const json_t *req, sg__message_cb cb, json_t **out, sg_buf_t *system,
                      char *err, size_t errlen);
/* Append items (stolen) to list as {"role":role,key:items}, or to the last
 * entry's key array when that entry has the same role (the providers want
 * roles to alternate). Empty items append nothing. */
int sg__push_merged(json_t *list, const char *role, const char *key, json_t *items);

/* Append the text of an OpenAI message content (a string, or the text of
 * an array of parts, joined with sep). SG_EINVAL for a part that is not
 * text or for another type of content; null appends nothing. */
int sg__content_text(const json_t *content, const char *sep, sg_buf_t *out);
/* Split "data:MIME;base64,DATA": mime and data point into url. SG_EINVAL
 * when url is not such a URL. */
int sg__data_url(const char *url, sg_iovec_t *mime, sg_iovec_t *data);
/* OpenAI's "stop" (a string, an array of strings or null) as a new array
 * of its non-empty strings (*out NULL when there are none). */
int sg__stop_list(const json_t *stop, json_t **out, char *err, size_t errlen);
/* OpenAI's max_completion_tokens, else max_tokens, into *out (borrowed;
 * NULL when neither is given). SG_EINVAL unless it is a positive integer. */
int sg__max_tokens(const json_t *req, const json_t **out, char *err, size_t errlen);
/* The arguments of messages[mi].tool_calls[ci].function (a string of a JSON
 * object, "" or null) as a new object in *out. */
int sg__tool_args(const json_t *args, size_t mi, size_t ci, json_t **out, char *err,
                  size_t errlen);

/* What OpenAI's tool_choice asks for. */
enum sg__tool_choice {
	SG__TC_UNSET,    /* absent or null */
	SG__TC_AUTO,     /* "auto" */
	SG__TC_REQUIRED, /* "required" */
	SG__TC_NONE,     /* "none" */
	SG__TC_FUNCTION, /* {"type":"function","function":{"name":...}} */
	SG__TC_LAST
};
/* Read the request's "tools" into *tools (borrowed; NULL when absent or
 * null, and then nothing else is read) and its "tool_choice" into *choice
 * (and, for SG__TC_FUNCTION, the name into *name, borrowed). SG_EINVAL
 * when tools is not an array or tool_choice is none of these. */
int sg__tools(const json_t *req, const json_t **tools, enum sg__tool_choice *choice,
              const char **name, char *err, size_t errlen);
/* The "function" of tools[i], which must be {"type":"function","function":
 * {"name":...}}; NULL (with a message in err) when it is not. */
const json_t *sg__tool_function(const json_t *tool, size_t i, char *err, size_t errlen);

extern const sg_provider_t sg__provider_openai;
extern const sg_provider_t sg__provider_azure;
extern const sg_provider_t sg__provider_anthropic;
extern const sg_provider_t sg__provider_gemini;

#endif
