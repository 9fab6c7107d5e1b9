/* What the unit tests of the providers share: recorded bodies, a request
 * translation, jq-like lookups, and a harness that feeds a provider's
 * stream in pieces and reads the OpenAI stream back as a client would.
 * Include after check.h; main() calls use_provider() first. */
#ifndef SEMGATE_TEST_PROVIDER_CHECK_H
#define SEMGATE_TEST_PROVIDER_CHECK_H

#include <stdlib.h>

#include <jansson.h>

#include "check.h"
#include "semgate/provider.h"

static const sg_provider_t *P;                     /* the provider under test */
static const sg_provider_deployment_t *deployment; /* what requests are translated for */
static const char *reply_model;                    /* the model replies and streams report */

/* Select the provider under test (d is borrowed for the whole test); 0 when it exists. */
static int use_provider(const char *name, const sg_provider_deployment_t *d, const char *model)
{
	P = sg_provider_find(name);
	CHECK(P != NULL && strcmp(P->name, name) == 0);
	deployment = d;
	reply_model = model;
	return P != NULL ? 0 : -1;
}

/* A recorded body from tests/data/providers (caller frees). */
static char *read_data(const char *name, size_t *len)
{
	char path[1024];
	const char *slash = strrchr(__FILE__, '/');
	int dir = slash ? (int)(slash - __FILE__) : 0;
	FILE *f;
	char *p;
	long n;

	/* __FILE__ is tests/unit/provider_check.h: the data is in tests/data/providers. */
	snprintf(path, sizeof(path), "%.*s/../data/providers/%s", dir, __FILE__, name);
	f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "cannot open %s\n", path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	p = malloc((size_t)n + 1);
	if (p == NULL || fread(p, 1, (size_t)n, f) != (size_t)n)
		exit(1);
	p[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return p;
}

/* Translate a request; returns the parsed body (NULL on failure, rc set). */
static json_t *translate(const char *req_json, int stream, int *rc, char *err,
                         sg_provider_target_t *t)
{
	json_t *req = json_loads(req_json, 0, NULL);
	sg_provider_target_t tmp;
	sg_buf_t body;
	json_t *out = NULL;

	if (req == NULL) {
		fprintf(stderr, "bad test JSON: %s\n", req_json);
		exit(1);
	}
	sg_buf_init(&body, 0);
	err[0] = '\0';
	*rc = P->request(req, deployment, stream, &body, t ? t : &tmp, err, 256);
	if (*rc == 0)
		out = json_loadb(body.data, body.len, 0, NULL);
	sg_buf_free(&body);
	json_decref(req);
	return out;
}

/* A request the provider must refuse, and part of the message it gives. */
struct bad_request {
	const char *req; /* the OpenAI request */
	const char *msg; /* part of the error message */
};

static void check_bad_requests(const struct bad_request *bad, size_t n)
{
	char err[256];
	int rc;

	for (size_t i = 0; i < n; i++) {
		json_t *b = translate(bad[i].req, 0, &rc, err, NULL);
		CHECK(rc == SG_EINVAL && b == NULL);
		CHECK_CONTAINS(err, bad[i].msg);
		if (strstr(err, bad[i].msg) == NULL)
			fprintf(stderr, "  case %zu: got \"%s\"\n", i, err);
	}
}

/* Translate a complete reply; returns the parsed completion (NULL on failure, rc set). */
static json_t *response(const char *body, int *rc)
{
	sg_buf_t out;
	json_t *v = NULL;

	sg_buf_init(&out, 0);
	*rc = P->response(body, strlen(body), reply_model, &out);
	if (*rc == 0)
		v = json_loadb(out.data, out.len, 0, NULL);
	sg_buf_free(&out);
	return v;
}

/* jq-like: "messages.0.content.1.type" */
static json_t *at(json_t *v, const char *path)
{
	char key[64];

	while (v != NULL && *path) {
		size_t n = strcspn(path, ".");
		snprintf(key, sizeof(key), "%.*s", (int)n, path);
		if (json_is_array(v))
			v = json_array_get(v, (size_t)atoi(key));
		else
			v = json_object_get(v, key);
		path += n + (path[n] == '.');
	}
	return v;
}

static const char *str_at(json_t *v, const char *path)
{
	return json_string_value(at(v, path));
}

static long long int_at(json_t *v, const char *path)
{
	return json_integer_value(at(v, path));
}

/* What a client would make of a translated OpenAI stream. */
struct seen {
	char content[1024];     /* choice 0's content, concatenated */
	char content1[256];     /* choice 1's */
	char reasoning[256];    /* reasoning_content */
	char role[16];          /* the role chunk's */
	char tool_id[4][64];    /* per tool call index */
	char tool_name[4][64];  /* per tool call index */
	char tool_args[4][256]; /* per tool call index, concatenated */
	int ntools;             /* highest tool index + 1 */
	char finish[32];        /* finish_reason */
	long long pt, ct, tt;   /* usage chunk */
	int usage_chunks;       /* usage chunks seen */
	int done;               /* data: [DONE] count */
	int events;             /* all events */
	char error_type[64];    /* an error event's */
	char error_code[64];    /* an error event's */
	char id[128];           /* the chunks' id */
	char model[64];         /* the chunks' model */
	int bad;                /* something not in OpenAI's shape */
};

static void cat(char *dst, size_t size, const char *s)
{
	if (s)
		strncat(dst, s, size - strlen(dst) - 1);
}

/* One chat.completion.chunk into s. */
static void seen_chunk(json_t *v, struct seen *s)
{
	json_t *d = at(v, "choices.0.delta"), *tc;
	size_t i;

	if (strcmp(str_at(v, "object") ? str_at(v, "object") : "", "chat.completion.chunk") != 0)
		s->bad++;
	snprintf(s->id, sizeof(s->id), "%s", str_at(v, "id") ? str_at(v, "id") : "?");
	snprintf(s->model, sizeof(s->model), "%s", str_at(v, "model") ? str_at(v, "model") : "?");
	if (json_array_size(at(v, "choices")) == 0) {
		s->usage_chunks++;
		s->pt = int_at(v, "usage.prompt_tokens");
		s->ct = int_at(v, "usage.completion_tokens");
		s->tt = int_at(v, "usage.total_tokens");
		return;
	}
	if (int_at(v, "choices.0.index") == 1) {
		cat(s->content1, sizeof(s->content1), str_at(d, "content"));
		return;
	}
	cat(s->role, sizeof(s->role), str_at(d, "role"));
	cat(s->content, sizeof(s->content), str_at(d, "content"));
	cat(s->reasoning, sizeof(s->reasoning), str_at(d, "reasoning_content"));
	cat(s->finish, sizeof(s->finish), str_at(v, "choices.0.finish_reason"));
	json_array_foreach(json_object_get(d, "tool_calls"), i, tc) {
		int k = (int)int_at(tc, "index");
		if (k < 0 || k >= 4) {
			s->bad++;
			continue;
		}
		if (k + 1 > s->ntools)
			s->ntools = k + 1;
		cat(s->tool_id[k], 64, str_at(tc, "id"));
		cat(s->tool_name[k], 64, str_at(tc, "function.name"));
		cat(s->tool_args[k], 256, str_at(tc, "function.arguments"));
	}
}

static void parse_stream(const char *p, size_t len, struct seen *s)
{
	const char *end = p + len;

	memset(s, 0, sizeof(*s));
	while (p < end) {
		const char *e = strstr(p, "\n\n");
		if (e == NULL) {
			s->bad++; /* an unterminated event */
			break;
		}
		s->events++;
		if (strncmp(p, "data: ", 6) != 0) {
			s->bad++;
		} else if (strncmp(p + 6, "[DONE]\n\n", 8) == 0) {
			s->done++;
		} else {
			json_t *v = json_loadb(p + 6, (size_t)(e - p - 6), 0, NULL);
			if (v == NULL) {
				s->bad++;
			} else if (json_object_get(v, "error")) {
				cat(s->error_type, sizeof(s->error_type), str_at(v, "error.type"));
				cat(s->error_code, sizeof(s->error_code), str_at(v, "error.code"));
			} else {
				seen_chunk(v, s);
			}
			json_decref(v);
		}
		p = e + 2;
	}
}

/* Feed the whole stream in pieces: step 0 = random sizes (seeded), else that
 * size. Returns stream_end's result; out gets everything. */
static int run_stream(const char *in, size_t len, size_t step, unsigned seed, sg_buf_t *out)
{
	sg_provider_stream_t *st = P->stream_new(reply_model);
	size_t off = 0, n;
	int rc = 0;

	srand(seed);
	while (off < len && rc == 0) {
		n = step ? step : (size_t)(rand() % 23) + 1;
		n = SG_MIN(n, len - off);
		rc = P->stream_feed(st, in + off, n, out);
		off += n;
	}
	if (rc == 0)
		rc = P->stream_end(st, out);
	P->stream_free(st);
	return rc;
}

/* run_stream() into out (which the caller owns), then parse_stream() of it into s. */
static int run_parse(const char *in, size_t len, size_t step, unsigned seed, sg_buf_t *out,
                     struct seen *s)
{
	int rc = run_stream(in, len, step, seed, out);

	parse_stream(out->data, out->len, s);
	return rc;
}

/* Replace "created":N with "created":0, so outputs of two runs compare. */
static void zero_created(sg_buf_t *b)
{
	char *p = b->data;

	while (p && (p = strstr(p, "\"created\":")) != NULL) {
		p += 10;
		char *q = p;
		while (*q >= '0' && *q <= '9')
			q++;
		memmove(p + 1, q, strlen(q) + 1);
		*p = '0';
		b->len = strlen(b->data);
	}
}

/* Whatever the pieces the stream arrives in, the output is the same bytes
 * (but for "created") and stream_end says want_rc. */
static void check_split_invariance(const char *in, size_t len, int want_rc)
{
	sg_buf_t whole, piece;

	sg_buf_init(&whole, 0);
	CHECK(run_stream(in, len, len, 0, &whole) == want_rc);
	zero_created(&whole);
	for (unsigned seed = 1; seed <= 20; seed++) {
		sg_buf_init(&piece, 0);
		CHECK(run_stream(in, len, seed <= 2 ? seed : 0, seed, &piece) == want_rc);
		zero_created(&piece);
		CHECK(piece.len == whole.len && memcmp(piece.data, whole.data, whole.len) == 0);
		sg_buf_free(&piece);
	}
	sg_buf_free(&whole);
}

/* A malformed stream: the feed refuses it, and the end reports the interruption. */
static void check_malformed_stream(const char *in)
{
	sg_provider_stream_t *st = P->stream_new(NULL);
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(P->stream_feed(st, in, strlen(in), &out) == SG_EINVAL);
	CHECK(P->stream_end(st, &out) == SG_EUPSTREAM);
	P->stream_free(st);
	sg_buf_free(&out);
}

#endif
