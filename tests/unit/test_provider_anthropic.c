/* Unit tests: OpenAI <-> Anthropic Messages API translation, against bodies
 * in Anthropic's documented format (tests/data/providers/anthropic_*). */
#include <stdlib.h>

#include <jansson.h>

#include "check.h"
#include "provider_check.h"

/* What requests are translated for. */
static const sg_provider_deployment_t test_deployment = {
	"https://api.anthropic.com", "claude-sonnet-4-5", "sk-ant-KEY", NULL};

/* ---- request -------------------------------------------------------------- */

static void test_request_basic(void)
{
	char err[256];
	int rc;
	sg_provider_target_t t;
	json_t *b = translate(
		"{\"model\":\"gpt-4o\",\"messages\":["
		"{\"role\":\"system\",\"content\":\"You are terse.\"},"
		"{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Answer in English.\"}]},"
		"{\"role\":\"user\",\"content\":\"Hi\"},"
		"{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"there\"},"
		"  {\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},"
		"  {\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.jpg\",\"detail\":\"high\"}}]},"
		"{\"role\":\"assistant\",\"content\":\"Hello!\"},"
		"{\"role\":\"assistant\",\"content\":\"\"},"
		"{\"role\":\"user\",\"content\":\"Bye\"}],"
		"\"temperature\":0.5,\"top_p\":0.9,\"stop\":\"END\",\"stream\":true,"
		"\"n\":1,\"logprobs\":true,\"seed\":7,\"response_format\":{\"type\":\"json_object\"},"
		"\"user\":\"u-42\"}",
		1, &rc, err, &t);

	CHECK(rc == 0 && b != NULL);
	CHECK_STR(str_at(b, "model"), "claude-sonnet-4-5");
	CHECK(int_at(b, "max_tokens") == 4096);
	CHECK_STR(str_at(b, "system"), "You are terse.\n\nAnswer in English.");
	CHECK(json_array_size(at(b, "messages")) == 3);
	CHECK_STR(str_at(b, "messages.0.role"), "user");
	CHECK(json_array_size(at(b, "messages.0.content")) == 4);
	CHECK_STR(str_at(b, "messages.0.content.0.text"), "Hi");
	CHECK_STR(str_at(b, "messages.0.content.1.text"), "there");
	CHECK_STR(str_at(b, "messages.0.content.2.type"), "image");
	CHECK_STR(str_at(b, "messages.0.content.2.source.type"), "base64");
	CHECK_STR(str_at(b, "messages.0.content.2.source.media_type"), "image/png");
	CHECK_STR(str_at(b, "messages.0.content.2.source.data"), "iVBORw0KGgo=");
	CHECK_STR(str_at(b, "messages.0.content.3.source.type"), "url");
	CHECK_STR(str_at(b, "messages.0.content.3.source.url"), "https://example.com/cat.jpg");
	CHECK_STR(str_at(b, "messages.1.role"), "assistant");
	CHECK(json_array_size(at(b, "messages.1.content")) == 1); /* the empty one left out */
	CHECK_STR(str_at(b, "messages.2.content.0.text"), "Bye");
	CHECK(json_real_value(at(b, "temperature")) == 0.5);
	CHECK(json_real_value(at(b, "top_p")) == 0.9);
	CHECK_STR(str_at(b, "stop_sequences.0"), "END");
	CHECK(json_is_true(at(b, "stream")));
	CHECK_STR(str_at(b, "metadata.user_id"), "u-42");
	/* dropped */
	CHECK(at(b, "n") == NULL && at(b, "logprobs") == NULL && at(b, "seed") == NULL &&
	      at(b, "response_format") == NULL && at(b, "user") == NULL && at(b, "tools") == NULL);
	CHECK_STR(t.url, "https://api.anthropic.com/v1/messages");
	CHECK(t.nheaders == 3);
	CHECK_STR(t.headers[0], "x-api-key: sk-ant-KEY");
	CHECK_STR(t.headers[1], "anthropic-version: 2023-06-01");
	CHECK_STR(t.headers[2], "content-type: application/json");
	json_decref(b);

	/* max_completion_tokens wins; stop arrays; no stream */
	b = translate("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":10,"
	              "\"max_completion_tokens\":20,\"stop\":[\"a\",\"\",\"b\"]}", 0, &rc, err, NULL);
	CHECK(rc == 0 && int_at(b, "max_tokens") == 20);
	CHECK(json_array_size(at(b, "stop_sequences")) == 2);
	CHECK_STR(str_at(b, "stop_sequences.1"), "b");
	CHECK(at(b, "stream") == NULL && at(b, "system") == NULL);
	json_decref(b);
	b = translate("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":10}", 0,
	              &rc, err, NULL);
	CHECK(rc == 0 && int_at(b, "max_tokens") == 10);
	json_decref(b);
}

static void test_request_tools(void)
{
	char err[256];
	int rc;
	const char *msgs =
		"\"messages\":[{\"role\":\"user\",\"content\":\"Weather in SF and NYC?\"},"
		"{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
		"  {\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
		"   \"arguments\":\"{\\\"location\\\":\\\"SF\\\"}\"}},"
		"  {\"id\":\"toolu_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
		"   \"arguments\":\"\"}}]},"
		"{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"15 C\"},"
		"{\"role\":\"tool\",\"tool_call_id\":\"toolu_2\",\"content\":[{\"type\":\"text\",\"text\":\"20 C\"}]},"
		"{\"role\":\"user\",\"content\":\"Thanks; which is warmer?\"}]";
	const char *tools =
		"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
		"\"description\":\"Current weather\",\"parameters\":{\"type\":\"object\","
		"\"properties\":{\"location\":{\"type\":\"string\"}},\"required\":[\"location\"]}}},"
		"{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]";
	char req[4096];
	json_t *b;

	snprintf(req, sizeof(req), "{%s,%s,\"tool_choice\":\"auto\"}", msgs, tools);
	b = translate(req, 0, &rc, err, NULL);
	CHECK(rc == 0 && b != NULL);
	CHECK(json_array_size(at(b, "messages")) == 3);
	CHECK_STR(str_at(b, "messages.1.role"), "assistant");
	CHECK(json_array_size(at(b, "messages.1.content")) == 2);
	CHECK_STR(str_at(b, "messages.1.content.0.type"), "tool_use");
	CHECK_STR(str_at(b, "messages.1.content.0.id"), "toolu_1");
	CHECK_STR(str_at(b, "messages.1.content.0.name"), "get_weather");
	CHECK_STR(str_at(b, "messages.1.content.0.input.location"), "SF");
	CHECK(json_is_object(at(b, "messages.1.content.1.input")) &&
	      json_object_size(at(b, "messages.1.content.1.input")) == 0);
	/* both tool results and the next user text: one user message */
	CHECK_STR(str_at(b, "messages.2.role"), "user");
	CHECK(json_array_size(at(b, "messages.2.content")) == 3);
	CHECK_STR(str_at(b, "messages.2.content.0.type"), "tool_result");
	CHECK_STR(str_at(b, "messages.2.content.0.tool_use_id"), "toolu_1");
	CHECK_STR(str_at(b, "messages.2.content.0.content"), "15 C");
	CHECK_STR(str_at(b, "messages.2.content.1.tool_use_id"), "toolu_2");
	CHECK_STR(str_at(b, "messages.2.content.1.content.0.text"), "20 C");
	CHECK_STR(str_at(b, "messages.2.content.2.text"), "Thanks; which is warmer?");
	CHECK(json_array_size(at(b, "tools")) == 2);
	CHECK_STR(str_at(b, "tools.0.name"), "get_weather");
	CHECK_STR(str_at(b, "tools.0.description"), "Current weather");
	CHECK_STR(str_at(b, "tools.0.input_schema.required.0"), "location");
	CHECK_STR(str_at(b, "tools.1.input_schema.type"), "object"); /* default schema */
	CHECK(at(b, "tools.1.description") == NULL);
	CHECK_STR(str_at(b, "tool_choice.type"), "auto");
	json_decref(b);

	snprintf(req, sizeof(req), "{%s,%s,\"tool_choice\":\"required\"}", msgs, tools);
	b = translate(req, 0, &rc, err, NULL);
	CHECK(rc == 0 && str_at(b, "tool_choice.type") && strcmp(str_at(b, "tool_choice.type"), "any") == 0);
	json_decref(b);

	snprintf(req, sizeof(req), "{%s,%s,\"tool_choice\":{\"type\":\"function\",\"function\":"
	         "{\"name\":\"now\"}},\"parallel_tool_calls\":false}", msgs, tools);
	b = translate(req, 0, &rc, err, NULL);
	CHECK_STR(str_at(b, "tool_choice.type"), "tool");
	CHECK_STR(str_at(b, "tool_choice.name"), "now");
	CHECK(json_is_true(at(b, "tool_choice.disable_parallel_tool_use")));
	json_decref(b);

	snprintf(req, sizeof(req), "{%s,%s,\"tool_choice\":\"none\"}", msgs, tools);
	b = translate(req, 0, &rc, err, NULL);
	CHECK(rc == 0 && at(b, "tools") == NULL && at(b, "tool_choice") == NULL);
	json_decref(b);

	snprintf(req, sizeof(req), "{%s,%s}", msgs, tools);
	b = translate(req, 0, &rc, err, NULL);
	CHECK(rc == 0 && at(b, "tools") != NULL && at(b, "tool_choice") == NULL);
	json_decref(b);
}

static void test_request_invalid(void)
{
	static const struct bad_request bad[] = {
		{"{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"t\",\"type\":"
		 "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{not json\"}}]}]}",
		 "messages[0].tool_calls[0].function.arguments is not a JSON object"},
		{"{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"t\",\"type\":"
		 "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
		 "is not a JSON object"},
		{"{\"messages\":[]}", "non-empty"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}", "'n' > 1"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}",
		 "input_audio"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
		 "{\"url\":\"ftp://x/y.png\"}}]}]}", "image_url.url"},
		{"{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "tool_call_id"},
		{"{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "wizard"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":5}", "stop"},
		{"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
		 "\"custom\"}]}", "tools[0]"},
		{"{\"messages\":[{\"role\":\"system\",\"content\":\"only system\"}]}", "no user"},
	};
	check_bad_requests(bad, SG_ARRAY_SIZE(bad));
}

/* ---- response ------------------------------------------------------------- */

static void test_response(void)
{
	size_t len;
	char *body = read_data("anthropic_response_tool.json", &len);
	int rc;
	json_t *v = response(body, &rc);

	CHECK(rc == 0 && v != NULL);
	CHECK_STR(str_at(v, "object"), "chat.completion");
	CHECK_STR(str_at(v, "id"), "msg_01Aq9w938a90dw8q");
	CHECK_STR(str_at(v, "model"), "claude-x");
	CHECK_STR(str_at(v, "choices.0.message.role"), "assistant");
	CHECK_STR(str_at(v, "choices.0.message.content"), "I'll check the weather.");
	CHECK_STR(str_at(v, "choices.0.message.reasoning_content"), "The user wants the weather.");
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.id"), "toolu_01A09q90qw90lq917835lq9");
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.type"), "function");
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.function.name"), "get_weather");
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.function.arguments"),
	          "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}");
	CHECK_STR(str_at(v, "choices.0.finish_reason"), "tool_calls");
	CHECK(int_at(v, "usage.prompt_tokens") == 2200);
	CHECK(int_at(v, "usage.completion_tokens") == 503);
	CHECK(int_at(v, "usage.total_tokens") == 2703);
	json_decref(v);
	free(body);

	static const char *const reasons[][2] = {
		{"end_turn", "stop"}, {"stop_sequence", "stop"}, {"max_tokens", "length"},
		{"tool_use", "tool_calls"}, {"refusal", "content_filter"}, {"pause_turn", "stop"},
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(reasons); i++) {
		char b[512];
		snprintf(b, sizeof(b), "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
		         "\"model\":\"claude-sonnet-4-5\",\"content\":[{\"type\":\"text\",\"text\":"
		         "\"Hi!\"}],\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":"
		         "{\"input_tokens\":10,\"output_tokens\":3}}", reasons[i][0]);
		v = response(b, &rc);
		CHECK(rc == 0);
		CHECK_STR(str_at(v, "choices.0.finish_reason"), reasons[i][1]);
		CHECK_STR(str_at(v, "choices.0.message.content"), "Hi!");
		CHECK(at(v, "choices.0.message.tool_calls") == NULL);
		CHECK(int_at(v, "usage.total_tokens") == 13);
		json_decref(v);
	}

	/* only a tool call: content is null */
	v = response("{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"content\":"
	             "[{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"now\",\"input\":{}}],"
	             "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}",
	             &rc);
	CHECK(rc == 0 && json_is_null(at(v, "choices.0.message.content")));
	CHECK_STR(str_at(v, "choices.0.message.tool_calls.0.function.arguments"), "{}");
	json_decref(v);

	/* not a Messages reply */
	static const char *const garbage[] = {
		"", "not json", "[]", "{\"type\":\"error\",\"error\":{}}", "{\"content\":\"x\"}",
		"{\"content\":[{\"type\":\"text\"}]}",
	};
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
		const char *type;   /* Anthropic's */
		int out_status;
		const char *oa_type; /* OpenAI's */
	} cases[] = {
		{400, "invalid_request_error", 400, "invalid_request_error"},
		{401, "authentication_error", 401, "authentication_error"},
		{403, "permission_error", 403, "permission_error"},
		{404, "not_found_error", 404, "not_found_error"},
		{413, "request_too_large", 413, "invalid_request_error"},
		{429, "rate_limit_error", 429, "rate_limit_error"},
		{500, "api_error", 500, "server_error"},
		{529, "overloaded_error", 503, "server_error"},
	};
	char body[512];
	sg_buf_t out;
	json_t *v;
	int status;

	sg_buf_init(&out, 0);
	for (size_t i = 0; i < SG_ARRAY_SIZE(cases); i++) {
		snprintf(body, sizeof(body), "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
		         "\"message\":\"msg %zu \\\"q\\\"\"},\"request_id\":\"req_011CSHoEeqs5C35K2UUqR7Fy\"}",
		         cases[i].type, i);
		status = cases[i].status;
		sg_buf_reset(&out);
		CHECK(P->error(body, strlen(body), &status, &out) == 0);
		CHECK(status == cases[i].out_status);
		v = json_loadb(out.data, out.len, 0, NULL);
		snprintf(body, sizeof(body), "msg %zu \"q\"", i);
		CHECK_STR(str_at(v, "error.message"), body);
		CHECK_STR(str_at(v, "error.type"), cases[i].oa_type);
		CHECK_STR(str_at(v, "error.code"), cases[i].type);
		json_decref(v);
	}

	/* garbage: the raw text, wrapped; always valid JSON */
	static const char *const garbage[] = {
		"<html><body>502 Bad Gateway</body></html>", "", "{\"error\":\"flat\"}",
		"\xff\xfe bytes \x01\"",
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(garbage); i++) {
		status = 502;
		sg_buf_reset(&out);
		CHECK(P->error(garbage[i], strlen(garbage[i]), &status, &out) == 0);
		v = json_loadb(out.data, out.len, 0, NULL);
		CHECK(v != NULL && status == 502);
		CHECK_CONTAINS(str_at(v, "error.message"), "anthropic upstream error (HTTP 502)");
		CHECK_STR(str_at(v, "error.type"), "server_error");
		CHECK(json_is_null(at(v, "error.code")));
		json_decref(v);
	}
	status = 529;
	sg_buf_reset(&out);
	CHECK(P->error("overloaded", 10, &status, &out) == 0 && status == 503);
	sg_buf_free(&out);
}

/* ---- stream --------------------------------------------------------------- */

/* The same stream with "\r\n" line ends. */
static char *crlf(const char *in, size_t len, size_t *out_len)
{
	char *o = malloc(len * 2 + 1), *p = o;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\n')
			*p++ = '\r';
		*p++ = in[i];
	}
	*p = '\0';
	*out_len = (size_t)(p - o);
	return o;
}

static void test_stream_text(void)
{
	size_t len, len2;
	char *in = read_data("anthropic_stream_text.sse", &len), *in2;
	struct seen s;
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(run_parse(in, len, 1, 0, &out, &s) == 0);
	CHECK(s.bad == 0);
	CHECK_STR(s.role, "assistant");
	CHECK_STR(s.content, "Hello, w\xc3\xb6rld \xe2\x80\x94 \"quoted\"\n");
	CHECK_STR(s.finish, "stop");
	CHECK(s.usage_chunks == 1 && s.pt == 25 && s.ct == 15 && s.tt == 40);
	CHECK(s.done == 1);
	CHECK(s.ntools == 0);
	CHECK_STR(s.id, "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
	CHECK_STR(s.model, "claude-x");
	/* [DONE] is the very end */
	CHECK(out.len > 14 && strcmp(out.data + out.len - 14, "data: [DONE]\n\n") == 0);
	sg_buf_free(&out);
	check_split_invariance(in, len, 0);

	in2 = crlf(in, len, &len2);
	sg_buf_init(&out, 0);
	CHECK(run_parse(in2, len2, 0, 99, &out, &s) == 0);
	CHECK(s.bad == 0 && s.done == 1);
	CHECK_STR(s.content, "Hello, w\xc3\xb6rld \xe2\x80\x94 \"quoted\"\n");
	sg_buf_free(&out);
	check_split_invariance(in2, len2, 0);
	free(in2);

	/* early end: everything but message_stop */
	const char *cut = strstr(in, "event: message_stop");
	sg_buf_init(&out, 0);
	CHECK(run_parse(in, (size_t)(cut - in), 0, 5, &out, &s) == SG_EUPSTREAM);
	CHECK(s.done == 0 && s.usage_chunks == 0);
	sg_buf_free(&out);
	/* cut in the middle of a line, and before anything */
	sg_buf_init(&out, 0);
	CHECK(run_stream(in, len / 2, 0, 6, &out) == SG_EUPSTREAM);
	CHECK(run_stream(in, 0, 0, 6, &out) == SG_EUPSTREAM);
	sg_buf_free(&out);
	/* the last blank line missing: still complete */
	sg_buf_init(&out, 0);
	CHECK(run_parse(in, len - 1, 0, 7, &out, &s) == 0);
	CHECK(s.done == 1 && s.bad == 0);
	sg_buf_free(&out);
	free(in);
}

static void test_stream_tool(void)
{
	size_t len;
	char *in = read_data("anthropic_stream_tool.sse", &len);
	struct seen s;
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(run_parse(in, len, 0, 3, &out, &s) == 0);
	CHECK(s.bad == 0);
	CHECK_STR(s.content, "Okay, let me check.");
	CHECK(s.ntools == 2);
	CHECK_STR(s.tool_id[0], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
	CHECK_STR(s.tool_name[0], "get_weather");
	CHECK_STR(s.tool_args[0], "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}");
	CHECK_STR(s.tool_id[1], "toolu_02Abc");
	CHECK_STR(s.tool_name[1], "get_time");
	CHECK_STR(s.tool_args[1], "{}");
	CHECK_STR(s.finish, "tool_calls");
	CHECK(s.pt == 572 && s.ct == 89);
	CHECK(s.done == 1);
	/* the first chunk of a tool call carries id, type and name */
	CHECK_CONTAINS(out.data, "\"tool_calls\":[{\"index\":0,\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\","
	               "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]");
	sg_buf_free(&out);
	check_split_invariance(in, len, 0);
	free(in);
}

static void test_stream_error(void)
{
	size_t len;
	char *in = read_data("anthropic_stream_error.sse", &len);
	struct seen s;
	sg_buf_t out;

	sg_buf_init(&out, 0);
	CHECK(run_parse(in, len, 0, 4, &out, &s) == SG_EUPSTREAM);
	CHECK(s.bad == 0);
	CHECK_STR(s.content, "Par");
	CHECK_STR(s.error_type, "server_error");
	CHECK_STR(s.error_code, "overloaded_error");
	CHECK(s.done == 0 && s.usage_chunks == 0);
	sg_buf_free(&out);
	check_split_invariance(in, len, SG_EUPSTREAM);
	free(in);

	/* malformed: not JSON, or deltas before message_start */
	static const char *const bad[] = {
		"event: message_start\ndata: {not json\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
		"\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(bad); i++)
		check_malformed_stream(bad[i]);
	/* an input_json_delta for a block that is not a tool_use */
	{
		const char *t = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
		                "{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n"
		                "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
		                "{\"type\":\"text\",\"text\":\"\"}}\n\n"
		                "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
		                "{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n";
		sg_provider_stream_t *st = P->stream_new(NULL);
		sg_buf_init(&out, 0);
		CHECK(P->stream_feed(st, t, strlen(t), &out) == SG_EINVAL);
		parse_stream(out.data, out.len, &s);
		CHECK_STR(s.model, "c"); /* the reply's model when the caller gives none */
		P->stream_free(st);
		sg_buf_free(&out);
	}
}

int main(void)
{
	CHECK(sg_provider_find("acme") == NULL && sg_provider_find(NULL) == NULL);
	/* OpenAI and Azure: entries of the table that relay OpenAI's format */
	{
		const sg_provider_t *o = sg_provider_find("openai"), *a = sg_provider_find("azure");
		sg_provider_deployment_t d = {"https://h/v1", "m", "k", NULL};
		char url[256], auth[128];
		CHECK(o && o->passthrough && o->request == NULL);
		CHECK(a && a->passthrough && a->request == NULL);
		if (o && a) {
			o->url(&d, "/chat/completions", url, sizeof(url));
			CHECK_STR(url, "https://h/v1/chat/completions");
			o->auth("k", auth, sizeof(auth));
			CHECK_STR(auth, "Authorization: Bearer k");
			a->url(&d, "/embeddings", url, sizeof(url));
			CHECK_STR(url, "https://h/v1/embeddings?api-version=2024-10-21");
			d.api_version = "2025-01-01";
			a->url(&d, "/embeddings", url, sizeof(url));
			CHECK_STR(url, "https://h/v1/embeddings?api-version=2025-01-01");
			a->auth("k", auth, sizeof(auth));
			CHECK_STR(auth, "api-key: k");
		}
	}
	if (use_provider("anthropic", &test_deployment, "claude-x") != 0)
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
