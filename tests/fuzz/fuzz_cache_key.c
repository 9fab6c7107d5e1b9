/* Fuzz target: cache-key canonicalisation (cache/key.c) on request bodies.
 *
 * Input: one byte of options (endpoint kind, embed mode, turns, the
 * max_temperature), then the request body as a client sends it. The body is
 * read as the handler reads it (sg_json_load) and keyed; then its key order
 * and formatting are changed (jansson writes it back with sorted keys and
 * indentation) and it is keyed again: semgate/cache_key.h promises that
 * neither changes the key. */
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_common.h"
#include "semgate/cache_key.h"
#include "semgate/json_scan.h"

static int key_of(sg_cache_key_t *k, json_t *root, enum sg_cache_kind kind,
		  const sg_cache_key_opts_t *opts)
{
	return sg_cache_key_build(k, root, kind, "default", "gpt-4o-mini", opts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const double temps[] = {1.0, 0.0, 2.0, 0.5};
	fuzz_input_t in = {data, size};
	uint8_t o = fuzz_u8(&in);
	enum sg_cache_kind kind = o & 1 ? SG_CACHE_COMPLETIONS : SG_CACHE_CHAT;
	sg_cache_key_opts_t opts = {.embed_mode = (o >> 1) % 3, .embed_turns = (o >> 3) & 7,
				    .max_temperature = temps[(o >> 6) & 3]};
	sg_cache_key_t a, b;
	json_t *root, *again;
	char *text;
	int rc, rc2;

	root = sg_json_load((const char *)in.p, in.n, NULL);
	if (root == NULL || !json_is_object(root)) {
		json_decref(root); /* the handler answers 400 before any key */
		return 0;
	}
	sg_cache_key_init(&a);
	sg_cache_key_init(&b);
	rc = key_of(&a, root, kind, &opts);
	FUZZ_CHECK(rc == 0 || rc == SG_EINVAL, "sg_cache_key_build: %d", rc);
	FUZZ_CHECK(rc == 0 || a.bypass != NULL, "SG_EINVAL without a bypass reason");

	text = json_dumps(root, JSON_SORT_KEYS | JSON_INDENT(1));
	FUZZ_CHECK(text != NULL, "json_dumps");
	again = json_loads(text, 0, NULL);
	FUZZ_CHECK(again != NULL, "jansson cannot read what it wrote: %s", text);
	rc2 = key_of(&b, again, kind, &opts);
	FUZZ_CHECK(rc2 == rc, "key order changed the result: %d, then %d", rc, rc2);
	FUZZ_CHECK((a.bypass == NULL) == (b.bypass == NULL) &&
			   (a.bypass == NULL || strcmp(a.bypass, b.bypass) == 0),
		   "key order changed the bypass: %s, then %s", a.bypass ? a.bypass : "none",
		   b.bypass ? b.bypass : "none");
	if (rc == 0 && a.bypass == NULL) {
		FUZZ_CHECK(a.scope.len == b.scope.len &&
				   memcmp(a.scope.data, b.scope.data, a.scope.len) == 0,
			   "key order changed the scope:\n%s\n%s", a.scope.data, b.scope.data);
		FUZZ_CHECK(a.prompt.len == b.prompt.len &&
				   memcmp(a.prompt.data, b.prompt.data, a.prompt.len) == 0,
			   "key order changed the prompt");
		FUZZ_CHECK(a.scope_hash == b.scope_hash && a.exact_hash == b.exact_hash,
			   "same scope and prompt, other hashes");
		/* the scope is canonical JSON: jansson reads it */
		json_t *scope = json_loadb(a.scope.data, a.scope.len, 0, NULL);
		FUZZ_CHECK(scope != NULL, "the scope is not JSON: %s", a.scope.data);
		json_decref(scope);
	}
	free(text);
	json_decref(again);
	json_decref(root);
	sg_cache_key_free(&a);
	sg_cache_key_free(&b);
	return 0;
}
