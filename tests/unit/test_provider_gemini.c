/* Unit tests: OpenAI <-> Gemini generateContent translation, against bodies
 * in Gemini's documented format (tests/data/providers/gemini_*). */
#include <stdlib.h>

#include <jansson.h>

#include "check.h"
#include "provider_check.h"

/* What requests are translated for. */
static const sg_provider_deployment_t test_deployment = {
	"https://generativelanguage.googleapis.com", "gemini-2.5-flash", "AIzaKEY", NULL};

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
	static const struct bad_request bad[] = {
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
	check_bad_requests(bad, SG_ARRAY_SIZE(bad));
}

/* ---- response ------------------------------------------------------------- */

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

static void test_stream_text(void)
{
	size_t len;
	char *in = read_data("gemini_stream_text.sse", &len);
	struct seen s;
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(run_parse(in, len, 1, 0, &out, &s) == 0);
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
	CHECK(run_parse(in, (size_t)(last - in + 1), 0, 8, &out, &s) == SG_EUPSTREAM);
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
	CHECK(run_parse(lf, k - 2, 0, 10, &out, &s) == 0);
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
	CHECK(run_parse(in, len, 0, 3, &out, &s) == 0);
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
	CHECK(run_parse(two, strlen(two), 0, 11, &out, &s) == 0);
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
	CHECK(run_parse(in, len, 0, 4, &out, &s) == SG_EUPSTREAM);
	CHECK(s.bad == 0);
	CHECK_STR(s.content, "Par");
	CHECK_STR(s.error_type, "server_error");
	CHECK_STR(s.error_code, "UNAVAILABLE");
	CHECK(s.done == 0);
	sg_buf_free(&out);
	check_split_invariance(in, len, SG_EUPSTREAM);
	free(in);

	check_malformed_stream("data: {oops\n\n");
}

int main(void)
{
	if (use_provider("gemini", &test_deployment, "gem-x") != 0)
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
