/* Unit tests: cache keys (scope, prompt, bypass, canonical form). */
#include <jansson.h>

#include "check.h"
#include "semgate/cache_key.h"

static const sg_cache_key_opts_t defaults = {SG_EMBED_LAST_USER, 0, 1.0};

/* Key of a JSON request text; returns 0 on success. */
static int key_of(sg_cache_key_t *k, const char *json, enum sg_cache_kind kind, const char *ns,
                  const sg_cache_key_opts_t *opts)
{
	json_t *root = json_loads(json, 0, NULL);
	int rc;
	if (root == NULL)
		return -100;
	rc = sg_cache_key_build(k, root, kind, ns, "m", opts ? opts : &defaults);
	json_decref(root);
	return rc;
}

static void test_canonical(void)
{
	sg_cache_key_t a, b;
	sg_cache_key_init(&a);
	sg_cache_key_init(&b);
	CHECK(key_of(&a, "{\"model\":\"m\",\"temperature\":0.5,\"max_tokens\":10,"
	                 "\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"}]}",
	             SG_CACHE_CHAT, "default", NULL) == 0);
	CHECK(key_of(&b, "{ \"messages\" : [ {\"content\":\"Hi there\", \"role\":\"user\"} ],"
	                 "\"max_tokens\":10.0,  \"temperature\":0.50, \"model\":\"m\","
	                 "\"stream\":true, \"user\":\"u1\"}",
	             SG_CACHE_CHAT, "default", NULL) == 0);
	CHECK(a.bypass == NULL && b.bypass == NULL);
	CHECK_STR(a.prompt.data, "Hi there");
	CHECK(a.scope_hash == b.scope_hash);
	CHECK(a.exact_hash == b.exact_hash);
	CHECK_STR(a.scope.data, b.scope.data);
	sg_cache_key_free(&a);
	sg_cache_key_free(&b);
}

static void test_scope_separates(void)
{
	static const char *const variants[] = {
		"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"temperature\":0.2,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"seed\":1,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
		"\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"response_format\":{\"type\":\"json_object\"},"
		"\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
		"{\"role\":\"user\",\"content\":\"q\"}]}",
		"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"who is X?\"},"
		"{\"role\":\"assistant\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"q\"}]}",
	};
	uint64_t hashes[SG_ARRAY_SIZE(variants)];
	sg_cache_key_t k;
	sg_cache_key_init(&k);
	for (size_t i = 0; i < SG_ARRAY_SIZE(variants); i++) {
		CHECK(key_of(&k, variants[i], SG_CACHE_CHAT, "default", NULL) == 0);
		CHECK(k.bypass == NULL);
		CHECK_STR(k.prompt.data, "q");
		hashes[i] = k.scope_hash;
		for (size_t j = 0; j < i; j++)
			CHECK(hashes[j] != hashes[i]);
	}
	/* namespaces and endpoints separate too */
	CHECK(key_of(&k, variants[0], SG_CACHE_CHAT, "tenant-b", NULL) == 0);
	CHECK(k.scope_hash != hashes[0]);
	sg_cache_key_free(&k);
}

static void test_bypass(void)
{
	sg_cache_key_t k;
	sg_cache_key_init(&k);
	CHECK(key_of(&k, "{\"model\":\"m\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(k.bypass, "n > 1");
	CHECK(key_of(&k, "{\"model\":\"m\",\"temperature\":1.5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK(k.bypass != NULL);
	CHECK(key_of(&k, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
	                 "{\"role\":\"assistant\",\"tool_calls\":[]},{\"role\":\"tool\",\"content\":\"42\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(k.bypass, "tool-call continuation");
	CHECK(key_of(&k, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}",
	             SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(k.bypass, "empty prompt");
	CHECK(key_of(&k, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", SG_CACHE_COMPLETIONS, "d", NULL) == 0);
	CHECK_STR(k.bypass, "batched prompts");
	sg_cache_key_free(&k);
}

static void test_modes_and_parts(void)
{
	const char *conv = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
	                   "{\"role\":\"user\",\"content\":\"first\"},{\"role\":\"assistant\",\"content\":\"ans\"},"
	                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"how old\"},"
	                   "{\"type\":\"text\",\"text\":\"is he?\"}]}]}";
	const char *other = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
	                    "{\"role\":\"user\",\"content\":\"other\"},{\"role\":\"assistant\",\"content\":\"ans\"},"
	                    "{\"role\":\"user\",\"content\":\"how old\\nis he?\"}]}";
	sg_cache_key_opts_t last_msg = {SG_EMBED_LAST_MESSAGE, 0, 1.0};
	sg_cache_key_opts_t turns = {SG_EMBED_LAST_TURNS, 2, 1.0};
	sg_cache_key_t a, b;
	sg_cache_key_init(&a);
	sg_cache_key_init(&b);
	CHECK(key_of(&a, conv, SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK(key_of(&b, other, SG_CACHE_CHAT, "d", NULL) == 0);
	CHECK_STR(a.prompt.data, "how old\nis he?");
	CHECK_STR(b.prompt.data, "how old\nis he?");
	CHECK(a.scope_hash != b.scope_hash); /* different history */
	CHECK(key_of(&a, conv, SG_CACHE_CHAT, "d", &last_msg) == 0);
	CHECK(key_of(&b, other, SG_CACHE_CHAT, "d", &last_msg) == 0);
	CHECK(a.scope_hash == b.scope_hash); /* history ignored, system kept */
	CHECK(key_of(&a, conv, SG_CACHE_CHAT, "d", &turns) == 0);
	CHECK_STR(a.prompt.data, "assistant: ans\nuser: how old\nis he?");
	sg_cache_key_free(&a);
	sg_cache_key_free(&b);
}

int main(void)
{
	test_canonical();
	test_scope_separates();
	test_bypass();
	test_modes_and_parts();
	CHECK_DONE();
}
