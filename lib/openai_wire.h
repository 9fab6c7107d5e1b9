/*
 * OpenAI's wire format, written in one place: the error body, the error event
 * of a stream, chat.completion.chunk events and chat.completion objects, and
 * the JSON appenders they use. Every floor may use them (the providers'
 * translations, the front end's errors, the proxy's stream errors).
 */
#ifndef SEMGATE_OPENAI_WIRE_H
#define SEMGATE_OPENAI_WIRE_H

#include <stddef.h>

#include <jansson.h>

#include "semgate/buf.h"

/* Append v as compact JSON. v is borrowed. */
int sg__json_append(sg_buf_t *out, const json_t *v);
/* Append n bytes as a JSON string literal; invalid UTF-8 becomes '?'. */
int sg__json_str_lossy(sg_buf_t *out, const char *s, size_t n);
/* Append {"error":{"message":msg,"type":type,"code":code|null}}. */
int sg__error_body(sg_buf_t *out, const char *msg, size_t msglen, const char *type,
                   const char *code);

/* What every chunk of one stream repeats. */
typedef struct sg__chunk_head {
	char id[128];      /* "chatcmpl-..." */
	long long created; /* unix time */
	char model[256];   /* the model to report */
} sg__chunk_head_t;

/* Set id, created (now) and, when model is not NULL, model. Returns whether
 * the model was given. */
int sg__chunk_head_init(sg__chunk_head_t *h, const char *id, const char *model);
/* The one writer of a stream's chunk events: append "data: {"id","object",
 * "created","model","choices":[choice],"usage"}\n\n". object:
 * "chat.completion.chunk" or "text_completion"; choice is stolen (NULL:
 * "choices":[]); usage is borrowed (NULL: no "usage"). */
int sg__chunk_event(sg_buf_t *out, const char *id, const char *object, long long created,
                    const char *model, json_t *choice, const json_t *usage);
/* Append one SSE event "data: {chat.completion.chunk}\n\n" for choice
 * index with that delta (stolen; NULL: {}) and finish_reason (NULL: null). */
int sg__chunk(sg_buf_t *out, const sg__chunk_head_t *h, int index, json_t *delta,
              const char *finish_reason);
/* Append the usage chunk (choices: []) and "data: [DONE]". */
int sg__chunk_usage_done(sg_buf_t *out, const sg__chunk_head_t *h, long long prompt_tokens,
                         long long completion_tokens);
/* Append an OpenAI error event "data: {"error":{...}}\n\n". */
int sg__chunk_error(sg_buf_t *out, const char *msg, const char *type, const char *code);
/* Drop what was appended to out since it was mark bytes long. */
void sg__out_rewind(sg_buf_t *out, size_t mark);

/* A new {"role":"assistant","content":...} message: content is the text,
 * or null when it is empty and the message has tool calls. NULL on
 * allocation failure. */
json_t *sg__assistant_message(const char *text, size_t len, int has_calls);
/* The one writer of a completion object: {"id","object","created","model",
 * "choices","usage"}. object: "chat.completion" or "text_completion";
 * choices and usage are stolen (usage NULL: none). */
int sg__completion_object(sg_buf_t *out, const char *id, const char *object, long long created,
                          const char *model, json_t *choices, json_t *usage);
/* Append a chat.completion object created now; choices is stolen. */
int sg__completion(sg_buf_t *out, const char *id, const char *model, json_t *choices,
                   long long prompt_tokens, long long completion_tokens);

#endif
