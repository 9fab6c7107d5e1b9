/* Unit tests: OpenAI <-> Gemini generateContent translation, against bodies
 * in Gemini's documented format (tests/data/providers/gemini_*). */
#include <stdlib.h>

#include <jansson.h>

#include "check.h"
#include "semgate/provider.h"

static const sg_provider_t *P;

/* ---- helpers -------------------------------------------------------------- */

static char *read_data(const char *name, size_t *len)
{
	char path[1024];
	const char *slash = strrchr(__FILE__, '/');
	int dir = slash ? (int)(slash - __FILE__) : 0;
	FILE *f;
	char *p;
	long n;

	/* __FILE__ is tests/unit/test_x.c: the data is in tests/data/providers. */
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
	sg_provider_deployment_t d = {"https://generativelanguage.googleapis.com",
	                              "gemini-2.5-flash", "AIzaKEY", NULL};
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
	*rc = P->request(req, &d, stream, &body, t ? t : &tmp, err, 256);
	if (*rc == 0)
		out = json_loadb(body.data, body.len, 0, NULL);
	sg_buf_free(&body);
	json_decref(req);
	return out;
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
	char content[1024];   /* choice 0's content, concatenated */
	char content1[256];   /* choice 1's */
	char reasoning[256];  /* reasoning_content */
	char role[16];        /* the role chunk's */
	char tool_id[4][64];  /* per tool call index */
	char tool_name[4][64];
	char tool_args[4][256];
	int ntools;           /* highest tool index + 1 */
	char finish[32];      /* finish_reason */
	long long pt, ct, tt; /* usage chunk */
	int usage_chunks;
	int done;             /* data: [DONE] count */
	int events;           /* all events */
	char error_type[64];  /* an error event's */
	char error_code[64];
	char id[128];         /* the chunks' id */
	char model[64];
	int bad;              /* something not in OpenAI's shape */
};

static void cat(char *dst, size_t size, const char *s)
{
	if (s)
		strncat(dst, s, size - strlen(dst) - 1);
}

static void parse_stream(const char *p, size_t len, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	const char *end = p + len;
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
				json_decref(v);
			} else {
				if (strcmp(str_at(v, "object") ? str_at(v, "object") : "",
				           "chat.completion.chunk") != 0)
					s->bad++;
				snprintf(s->id, sizeof(s->id), "%s", str_at(v, "id") ? str_at(v, "id") : "?");
				snprintf(s->model, sizeof(s->model), "%s",
				         str_at(v, "model") ? str_at(v, "model") : "?");
				if (json_array_size(at(v, "choices")) == 0) {
					s->usage_chunks++;
					s->pt = int_at(v, "usage.prompt_tokens");
					s->ct = int_at(v, "usage.completion_tokens");
					s->tt = int_at(v, "usage.total_tokens");
				} else {
					json_t *d = at(v, "choices.0.delta"), *tc;
					size_t i;
					if (int_at(v, "choices.0.index") == 1) {
						cat(s->content1, sizeof(s->content1), str_at(d, "content"));
						json_decref(v);
						p = e + 2;
						continue;
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
				json_decref(v);
			}
		}
		p = e + 2;
	}
}

/* Feed the whole stream in pieces: step 0 = random sizes (seeded), else that
 * size. Returns stream_end's result; out gets everything. */
static int run_stream(const char *in, size_t len, size_t step, unsigned seed, sg_buf_t *out)
{
	sg_provider_stream_t *st = P->stream_new("gem-x");
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

/* ---- request -------------------------------------------------------------- */

static void test_request_basic(void)
{
	char err[256];
	int rc;
	sg_provider_target_t t;
	json_t *b = translate(
		"{\"model\":\"gpt-4o\",\"messages\":["
		"{\"role\":\"system\",\"content\":\"You are terse.\"},"
		"{\"role\":\"developer\",\"content\":\"Answer in English.\"},"
		"{\"role\":\"user\",\"content\":\"Hi\"},"
		"{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"there\"},"
		"  {\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/4AAQ\"}},"
		"  {\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.png?x=1\"}}]},"
		"{\"role\":\"assistant\",\"content\":\"Hello!\"},"
		"{\"role\":\"user\",\"content\":\"Bye\"}],"
		"\"temperature\":0.5,\"top_p\":0.9,\"max_tokens\":100,\"stop\":[\"END\",\"STOP\"],"
		"\"n\":2,\"seed\":7,\"presence_penalty\":0.1,\"response_format\":{\"type\":\"json_object\"},"
		"\"logprobs\":true,\"user\":\"u\"}",
		0, &rc, err, &t);

	CHECK(rc == 0 && b != NULL);
	CHECK_STR(str_at(b, "systemInstruction.parts.0.text"), "You are terse.\n\nAnswer in English.");
	CHECK(json_array_size(at(b, "contents")) == 3);
	CHECK_STR(str_at(b, "contents.0.role"), "user");
	CHECK(json_array_size(at(b, "contents.0.parts")) == 4);
	CHECK_STR(str_at(b, "contents.0.parts.0.text"), "Hi");
	CHECK_STR(str_at(b, "contents.0.parts.1.text"), "there");
	CHECK_STR(str_at(b, "contents.0.parts.2.inlineData.mimeType"), "image/jpeg");
	CHECK_STR(str_at(b, "contents.0.parts.2.inlineData.data"), "/9j/4AAQ");
	CHECK_STR(str_at(b, "contents.0.parts.3.fileData.fileUri"), "https://example.com/cat.png?x=1");
	CHECK_STR(str_at(b, "contents.0.parts.3.fileData.mimeType"), "image/png");
	CHECK_STR(str_at(b, "contents.1.role"), "model");
	CHECK_STR(str_at(b, "contents.1.parts.0.text"), "Hello!");
	CHECK_STR(str_at(b, "contents.2.parts.0.text"), "Bye");
	CHECK(json_real_value(at(b, "generationConfig.temperature")) == 0.5);
	CHECK(json_real_value(at(b, "generationConfig.topP")) == 0.9);
	CHECK(int_at(b, "generationConfig.maxOutputTokens") == 100);
	CHECK_STR(str_at(b, "generationConfig.stopSequences.1"), "STOP");
	CHECK(int_at(b, "generationConfig.candidateCount") == 2);
	CHECK(int_at(b, "generationConfig.seed") == 7);
	CHECK(json_real_value(at(b, "generationConfig.presencePenalty")) == 0.1);
	CHECK_STR(str_at(b, "generationConfig.responseMimeType"), "application/json");
	CHECK(at(b, "model") == NULL && at(b, "messages") == NULL && at(b, "logprobs") == NULL &&
	      at(b, "user") == NULL && at(b, "tools") == NULL);
	CHECK_STR(t.url, "https://generativelanguage.googleapis.com/v1beta/models/"
	          "gemini-2.5-flash:generateContent");
	CHECK(t.nheaders == 2);
	CHECK_STR(t.headers[0], "x-goog-api-key: AIzaKEY");
	CHECK_STR(t.headers[1], "content-type: application/json");
	json_decref(b);

	b = translate("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":"
	              "20,\"max_tokens\":10,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
	              "{\"name\":\"r\",\"schema\":{\"type\":\"object\",\"additionalProperties\":false,"
	              "\"properties\":{\"a\":{\"type\":\"string\"}}}}}}", 1, &rc, err, &t);
	CHECK(rc == 0 && int_at(b, "generationConfig.maxOutputTokens") == 20);
	CHECK(at(b, "generationConfig.candidateCount") == NULL && at(b, "systemInstruction") == NULL);
	CHECK_STR(str_at(b, "generationConfig.responseSchema.properties.a.type"), "string");
	CHECK(at(b, "generationConfig.responseSchema.additionalProperties") == NULL);
	CHECK_STR(t.url, "https://generativelanguage.googleapis.com/v1beta/models/"
	          "gemini-2.5-flash:streamGenerateContent?alt=sse");
	json_decref(b);
	/* no optional field: no generationConfig at all */
	b = translate("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 0, &rc, err, NULL);
	CHECK(rc == 0 && at(b, "generationConfig") == NULL);
	json_decref(b);
}

static void test_request_tools(void)
{
	char err[256];
	int rc;
	const char *msgs =
		"\"messages\":[{\"role\":\"user\",\"content\":\"Weather in SF and NYC?\"},"
		"{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
		"  {\"id\":\"call_1~sig~Cp4BAdHtim9\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
		"   \"arguments\":\"{\\\"location\\\":\\\"SF\\\"}\"}},"
		"  {\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"now\","
		"   \"arguments\":\"\"}}]},"
		"{\"role\":\"tool\",\"tool_call_id\":\"call_1~sig~Cp4BAdHtim9\",\"content\":\"{\\\"temp\\\":15}\"},"
		"{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":\"12:00\"},"
		"{\"role\":\"user\",\"content\":\"Thanks\"}]";
	const char *tools =
		"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
		"\"description\":\"Current weather\",\"parameters\":{\"type\":\"object\","
		"\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"additionalProperties\":false,"
		"\"properties\":{\"location\":{\"type\":\"string\"}},\"required\":[\"location\"]}}},"
		"{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]";
	char req[4096];
	json_t *b;

	snprintf(req, sizeof(req), "{%s,%s,\"tool_choice\":\"auto\"}", msgs, tools);
	b = translate(req, 0, &rc, err, NULL);
	CHECK(rc == 0 && b != NULL);
	CHECK(json_array_size(at(b, "contents")) == 3);
	CHECK_STR(str_at(b, "contents.1.role"), "model");
	CHECK_STR(str_at(b, "contents.1.parts.0.functionCall.name"), "get_weather");
	CHECK_STR(str_at(b, "contents.1.parts.0.functionCall.args.location"), "SF");
	CHECK_STR(str_at(b, "contents.1.parts.0.thoughtSignature"), "Cp4BAdHtim9");
	CHECK(json_object_size(at(b, "contents.1.parts.1.functionCall.args")) == 0);
	CHECK(at(b, "contents.1.parts.1.thoughtSignature") == NULL);
	CHECK_STR(str_at(b, "contents.2.role"), "user");
	CHECK(json_array_size(at(b, "contents.2.parts")) == 3);
	CHECK_STR(str_at(b, "contents.2.parts.0.functionResponse.name"), "get_weather");
	CHECK(int_at(b, "contents.2.parts.0.functionResponse.response.temp") == 15);
	CHECK_STR(str_at(b, "contents.2.parts.1.functionResponse.name"), "now");
	CHECK_STR(str_at(b, "contents.2.parts.1.functionResponse.response.content"), "12:00");
	CHECK_STR(str_at(b, "contents.2.parts.2.text"), "Thanks");
	CHECK_STR(str_at(b, "tools.0.functionDeclarations.0.name"), "get_weather");
	CHECK_STR(str_at(b, "tools.0.functionDeclarations.0.description"), "Current weather");
	CHECK_STR(str_at(b, "tools.0.functionDeclarations.0.parameters.required.0"), "location");
	CHECK(at(b, "tools.0.functionDeclarations.0.parameters.additionalProperties") == NULL);
	CHECK(at(b, "tools.0.functionDeclarations.0.parameters.$schema") == NULL);
	CHECK_STR(str_at(b, "tools.0.functionDeclarations.1.name"), "now");
	CHECK(at(b, "tools.0.functionDeclarations.1.parameters") == NULL);
	CHECK_STR(str_at(b, "toolConfig.functionCallingConfig.mode"), "AUTO");
	json_decref(b);

	static const char *const choices[][3] = {
		{"\"required\"", "ANY", NULL},
		{"\"none\"", "NONE", NULL},
		{"{\"type\":\"function\",\"function\":{\"name\":\"now\"}}", "ANY", "now"},
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(choices); i++) {
		snprintf(req, sizeof(req), "{%s,%s,\"tool_choice\":%s}", msgs, tools, choices[i][0]);
		b = translate(req, 0, &rc, err, NULL);
		CHECK(rc == 0);
		CHECK_STR(str_at(b, "toolConfig.functionCallingConfig.mode"), choices[i][1]);
		if (choices[i][2])
			CHECK_STR(str_at(b, "toolConfig.functionCallingConfig.allowedFunctionNames.0"),
			          choices[i][2]);
		json_decref(b);
	}
	snprintf(req, sizeof(req), "{%s,%s}", msgs, tools);
	b = translate(req, 0, &rc, err, NULL);
	CHECK(rc == 0 && at(b, "toolConfig") == NULL && at(b, "tools") != NULL);
	json_decref(b);
}

static void test_request_invalid(void)
{
	static const struct {
		const char *req;
		const char *msg;
	} bad[] = {
		{"{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"t\",\"type\":"
		 "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}",
		 "messages[0].tool_calls[0].function.arguments is not a JSON object"},
		{"{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"nope\",\"content\":\"x\"}]}",
		 "matches no earlier tool call"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}",
		 "input_audio"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
		 "{\"url\":\"data:image/png,notbase64\"}}]}]}", "image_url.url"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":99}", "'n'"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":\"x\"}", "max_tokens"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}",
		 "tools[0]"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[],\"tool_choice\":\"maybe\"}",
		 "tool_choice"},
		{"{\"messages\":{}}", "non-empty"},
	};
	char err[256];
	int rc;

	for (size_t i = 0; i < SG_ARRAY_SIZE(bad); i++) {
		json_t *b = translate(bad[i].req, 0, &rc, err, NULL);
		CHECK(rc == SG_EINVAL && b == NULL);
		CHECK_CONTAINS(err, bad[i].msg);
		if (strstr(err, bad[i].msg) == NULL)
			fprintf(stderr, "  case %zu: got \"%s\"\n", i, err);
	}
}

/* ---- response ------------------------------------------------------------- */

static json_t *response(const char *body, int *rc)
{
	sg_buf_t out;
	json_t *v = NULL;

	sg_buf_init(&out, 0);
	*rc = P->response(body, strlen(body), "gem-x", &out);
	if (*rc == 0)
		v = json_loadb(out.data, out.len, 0, NULL);
	sg_buf_free(&out);
	return v;
}

static void test_response(void)
{
	size_t len;
	char *body = read_data("gemini_response_tool.json", &len);
	int rc;
	json_t *v = response(body, &rc);
	const char *id0;

	CHECK(rc == 0 && v != NULL);
	CHECK_STR(str_at(v, "object"), "chat.completion");
	CHECK_STR(str_at(v, "id"), "chatcmpl-kq1naMbzBtqPz7IP0d7u8AQ");
	CHECK_STR(str_at(v, "model"), "gem-x");
	CHECK_STR(str_at(v, "choices.0.message.content"), "Let me look that up. One moment.");
	CHECK(json_array_size(at(v, "choices.0.message.tool_calls")) == 2);
	id0 = str_at(v, "choices.0.message.tool_calls.0.id");
	CHECK(id0 != NULL && strncmp(id0, "call_", 5) == 0);
	CHECK_CONTAINS(id0, "~sig~CiQB0e2Kb3dRh+BYdbZvmulSN2Pwwc75DQaV");
	CHECK(str_at(v, "choices.0.message.tool_calls.1.id") != NULL &&
	      strcmp(str_at(v, "choices.0.message.tool_calls.1.id"), id0) != 0);
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.type"), "function");
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.function.name"), "get_weather");
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.function.arguments"),
	          "{\"location\":\"Boston, MA\",\"unit\":\"celsius\"}");
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.1.function.arguments"), "{}");
	CHECK_STR(str_at(v, "choices.0.finish_reason"), "tool_calls");
	CHECK(int_at(v, "usage.prompt_tokens") == 61);
	CHECK(int_at(v, "usage.completion_tokens") == 69);
	CHECK(int_at(v, "usage.total_tokens") == 130);
	json_decref(v);
	free(body);

	static const char *const reasons[][2] = {
		{"STOP", "stop"}, {"MAX_TOKENS", "length"}, {"SAFETY", "content_filter"},
		{"RECITATION", "content_filter"}, {"OTHER", "stop"},
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(reasons); i++) {
		char b[512];
		snprintf(b, sizeof(b), "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"},"
		         "{\"text\":\"!\"}],\"role\":\"model\"},\"finishReason\":\"%s\",\"index\":0}],"
		         "\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2,"
		         "\"totalTokenCount\":6},\"modelVersion\":\"gemini-2.5-flash\"}", reasons[i][0]);
		v = response(b, &rc);
		CHECK(rc == 0);
		CHECK_STR(str_at(v, "choices.0.finish_reason"), reasons[i][1]);
		CHECK_STR(str_at(v, "choices.0.message.content"), "Hi!");
		CHECK(at(v, "choices.0.message.tool_calls") == NULL);
		CHECK(int_at(v, "usage.total_tokens") == 6);
		CHECK(str_at(v, "id") != NULL && strncmp(str_at(v, "id"), "chatcmpl-", 9) == 0);
		json_decref(v);
	}

	/* n = 2: two candidates, two choices */
	v = response("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}],\"role\":\"model\"},"
	             "\"finishReason\":\"STOP\",\"index\":0},{\"content\":{\"parts\":[{\"text\":\"B\"}],"
	             "\"role\":\"model\"},\"finishReason\":\"MAX_TOKENS\",\"index\":1}]}", &rc);
	CHECK(rc == 0 && json_array_size(at(v, "choices")) == 2);
	CHECK_STR(str_at(v, "choices.1.message.content"), "B");
	CHECK(int_at(v, "choices.1.index") == 1);
	CHECK_STR(str_at(v, "choices.1.finish_reason"), "length");
	json_decref(v);

	/* a blocked prompt: no candidates */
	v = response("{\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":"
	             "{\"promptTokenCount\":8,\"totalTokenCount\":8}}", &rc);
	CHECK(rc == 0);
	CHECK_STR(str_at(v, "choices.0.finish_reason"), "content_filter");
	CHECK(int_at(v, "usage.prompt_tokens") == 8);
	json_decref(v);

	static const char *const garbage[] = {"", "nope", "[]", "{}", "{\"candidates\":5}"};
	for (size_t i = 0; i < SG_ARRAY_SIZE(garbage); i++) {
		v = response(garbage[i], &rc);
		CHECK(rc == SG_EINVAL && v == NULL);
	}
}

/* ---- errors --------------------------------------------------------------- */

static void test_errors(void)
{
	static const struct {
		int status;
		const char *st;
		const char *oa_type;
	} cases[] = {
		{400, "INVALID_ARGUMENT", "invalid_request_error"},
		{400, "FAILED_PRECONDITION", "invalid_request_error"},
		{401, "UNAUTHENTICATED", "authentication_error"},
		{403, "PERMISSION_DENIED", "permission_error"},
		{404, "NOT_FOUND", "not_found_error"},
		{429, "RESOURCE_EXHAUSTED", "rate_limit_error"},
		{500, "INTERNAL", "server_error"},
		{503, "UNAVAILABLE", "server_error"},
		{504, "DEADLINE_EXCEEDED", "server_error"},
	};
	char body[512];
	sg_buf_t out;
	json_t *v;
	int status;

	sg_buf_init(&out, 0);
	for (size_t i = 0; i < SG_ARRAY_SIZE(cases); i++) {
		/* as Gemini sends them, and wrapped in an array as its non-SSE stream does */
		for (int arr = 0; arr < 2; arr++) {
			snprintf(body, sizeof(body), "%s{\"error\":{\"code\":%d,\"message\":\"m%zu\","
			         "\"status\":\"%s\",\"details\":[{\"@type\":\"type.googleapis.com/"
			         "google.rpc.ErrorInfo\",\"reason\":\"X\"}]}}%s", arr ? "[" : "",
			         cases[i].status, i, cases[i].st, arr ? "]" : "");
			status = cases[i].status;
			sg_buf_reset(&out);
			CHECK(P->error(body, strlen(body), &status, &out) == 0);
			CHECK(status == cases[i].status);
			v = json_loadb(out.data, out.len, 0, NULL);
			snprintf(body, sizeof(body), "m%zu", i);
			CHECK_STR(str_at(v, "error.message"), body);
			CHECK_STR(str_at(v, "error.type"), cases[i].oa_type);
			CHECK_STR(str_at(v, "error.code"), cases[i].st);
			json_decref(v);
		}
	}
	static const char *const garbage[] = {"Service Unavailable", "", "{\"error\":{}}", "\x80\x81"};
	for (size_t i = 0; i < SG_ARRAY_SIZE(garbage); i++) {
		status = 429;
		sg_buf_reset(&out);
		CHECK(P->error(garbage[i], strlen(garbage[i]), &status, &out) == 0);
		v = json_loadb(out.data, out.len, 0, NULL);
		CHECK(v != NULL && status == 429);
		CHECK_CONTAINS(str_at(v, "error.message"), "gemini upstream error (HTTP 429)");
		CHECK_STR(str_at(v, "error.type"), "rate_limit_error");
		json_decref(v);
	}
	sg_buf_free(&out);
}

/* ---- stream --------------------------------------------------------------- */

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

static void test_stream_text(void)
{
	size_t len;
	char *in = read_data("gemini_stream_text.sse", &len);
	struct seen s;
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(run_stream(in, len, 1, 0, &out) == 0);
	parse_stream(out.data, out.len, &s);
	CHECK(s.bad == 0);
	CHECK_STR(s.role, "assistant");
	CHECK_STR(s.content, "The sky is blue because of Rayleigh scattering: air molecules scatter "
	          "short (blue) wavelengths of sunlight much more than long (red) ones.\n"
	          "\xc3\x9c" "n\xc3\xaf" "code \xe2\x9c\x93");
	CHECK_STR(s.finish, "stop");
	CHECK(s.usage_chunks == 1 && s.pt == 9 && s.ct == 31 && s.tt == 40);
	CHECK(s.done == 1);
	CHECK_STR(s.id, "chatcmpl-7q1naKfqMtqPz7IPq9_u8AQ");
	CHECK_STR(s.model, "gem-x");
	CHECK(out.len > 14 && strcmp(out.data + out.len - 14, "data: [DONE]\n\n") == 0);
	sg_buf_free(&out);
	check_split_invariance(in, len, 0);

	/* the connection closed before the last reply (no finishReason) */
	const char *last = strstr(in, "\"finishReason\"");
	while (last > in && *last != '\n')
		last--;
	sg_buf_init(&out, 0);
	CHECK(run_stream(in, (size_t)(last - in + 1), 0, 8, &out) == SG_EUPSTREAM);
	parse_stream(out.data, out.len, &s);
	CHECK(s.done == 0 && s.usage_chunks == 0);
	CHECK(run_stream(in, len - 30, 0, 9, &out) == SG_EUPSTREAM); /* mid-line */
	CHECK(run_stream(in, 0, 0, 9, &out) == SG_EUPSTREAM);
	sg_buf_free(&out);
	/* "\n\n" line ends work too, and a last event without its blank line */
	char *lf = strdup(in);
	size_t k = 0;
	for (size_t i = 0; i < len; i++)
		if (in[i] != '\r')
			lf[k++] = in[i];
	sg_buf_init(&out, 0);
	CHECK(run_stream(lf, k - 2, 0, 10, &out) == 0);
	parse_stream(out.data, out.len, &s);
	CHECK(s.done == 1 && s.bad == 0 && s.ct == 31);
	sg_buf_free(&out);
	check_split_invariance(lf, k, 0);
	free(lf);
	free(in);
}

static void test_stream_tool(void)
{
	size_t len;
	char *in = read_data("gemini_stream_tool.sse", &len);
	struct seen s;
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(run_stream(in, len, 0, 3, &out) == 0);
	parse_stream(out.data, out.len, &s);
	CHECK(s.bad == 0);
	CHECK_STR(s.content, "");
	CHECK(s.ntools == 2);
	CHECK_STR(s.tool_name[0], "get_weather");
	CHECK_STR(s.tool_args[0], "{\"location\":\"Paris\"}");
	CHECK_CONTAINS(s.tool_id[0], "~sig~Cp4BAdHtim9");
	CHECK_STR(s.tool_args[1], "{\"location\":\"Tokyo\"}");
	CHECK(strncmp(s.tool_id[1], "call_", 5) == 0 && strcmp(s.tool_id[0], s.tool_id[1]) != 0);
	CHECK_STR(s.finish, "tool_calls");
	CHECK(s.pt == 70 && s.ct == 30 && s.done == 1);
	sg_buf_free(&out);
	check_split_invariance(in, len, 0);
	free(in);

	/* two candidates (n = 2) */
	const char *two = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}]},\"index\":0},"
	                  "{\"content\":{\"parts\":[{\"text\":\"B\"}]},\"index\":1}]}\r\n\r\n"
	                  "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},"
	                  "\"finishReason\":\"STOP\",\"index\":0},{\"content\":{\"parts\":[{\"text\":"
	                  "\"b\"}]},\"finishReason\":\"STOP\",\"index\":1}]}\r\n\r\n";
	sg_buf_init(&out, 0);
	CHECK(run_stream(two, strlen(two), 0, 11, &out) == 0);
	parse_stream(out.data, out.len, &s);
	CHECK_STR(s.content, "Aa");
	CHECK_STR(s.content1, "Bb");
	sg_buf_free(&out);
}

static void test_stream_error(void)
{
	size_t len;
	char *in = read_data("gemini_stream_error.sse", &len);
	struct seen s;
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(run_stream(in, len, 0, 4, &out) == SG_EUPSTREAM);
	parse_stream(out.data, out.len, &s);
	CHECK(s.bad == 0);
	CHECK_STR(s.content, "Par");
	CHECK_STR(s.error_type, "server_error");
	CHECK_STR(s.error_code, "UNAVAILABLE");
	CHECK(s.done == 0);
	sg_buf_free(&out);
	check_split_invariance(in, len, SG_EUPSTREAM);
	free(in);

	sg_provider_stream_t *st = P->stream_new(NULL);
	sg_buf_init(&out, 0);
	CHECK(P->stream_feed(st, "data: {oops\n\n", 13, &out) == SG_EINVAL);
	CHECK(P->stream_end(st, &out) == SG_EUPSTREAM);
	P->stream_free(st);
	sg_buf_free(&out);
}

int main(void)
{
	P = sg_provider_find("gemini");
	CHECK(P != NULL && strcmp(P->name, "gemini") == 0);
	if (P == NULL)
		CHECK_DONE();
	test_request_basic();
	test_request_tools();
	test_request_invalid();
	test_response();
	test_errors();
	test_stream_text();
	test_stream_tool();
	test_stream_error();
	CHECK_DONE();
}
