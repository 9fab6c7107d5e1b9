/* Fuzz target: the hot-path JSON scanner (lib/json_scan.c), differentially
 * against jansson, whose acceptance it promises to match (semgate/json_scan.h):
 *   - sg_json_scan() accepts exactly what json_loadb(.., 0, ..) accepts,
 *     except that a raw NUL byte makes the text invalid;
 *   - the span of each top-level member it finds is the member jansson reads;
 *   - sg_json_integer() and sg_json_array_nonempty() agree with jansson on
 *     those spans;
 *   - sg_json_load() builds the tree json_loadb(.., JSON_DECODE_ANY, ..) does.
 * The input is the JSON text itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz_common.h"
#include "semgate/json_scan.h"

/* The members semgate asks the scanner for, and a few odd ones. */
static const char *const keys[] = {"usage", "choices", "model", "total_tokens", "", "a",
				   "error", "\xc3\xa9"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	sg_json_field_t fields[SG_ARRAY_SIZE(keys)];
	json_error_t jerr;
	json_t *ref, *mine;
	int rc;

	for (size_t i = 0; i < SG_ARRAY_SIZE(keys); i++)
		fields[i] = (sg_json_field_t){.key = keys[i]};
	rc = sg_json_scan(text, size, fields, SG_ARRAY_SIZE(keys));
	ref = json_loadb(text, size, 0, &jerr);

	if (memchr(text, '\0', size) != NULL) {
		FUZZ_CHECK(rc == SG_EINVAL, "accepted a text with a NUL byte");
	} else {
		FUZZ_CHECK((rc == 0) == (ref != NULL), "sg_json_scan says %d, jansson %s (%s)", rc,
			   ref ? "accepts" : "refuses", ref ? "" : jerr.text);
	}
	if (rc == 0 && ref != NULL && json_is_object(ref)) {
		for (size_t i = 0; i < SG_ARRAY_SIZE(keys); i++) {
			json_t *want = json_object_get(ref, keys[i]), *got;
			long long n;

			FUZZ_CHECK(fields[i].found == (want != NULL), "member \"%s\": found %d",
				   keys[i], fields[i].found);
			if (!fields[i].found)
				continue;
			got = json_loadb(fields[i].value.base, fields[i].value.len, JSON_DECODE_ANY,
					 &jerr);
			FUZZ_CHECK(got != NULL && json_equal(got, want),
				   "member \"%s\": span '%.*s' is not its value", keys[i],
				   (int)fields[i].value.len, fields[i].value.base);
			json_decref(got);
			if (sg_json_integer(fields[i].value, &n) == 0)
				FUZZ_CHECK(json_is_integer(want) && json_integer_value(want) == n,
					   "member \"%s\": integer %lld", keys[i], n);
			else
				FUZZ_CHECK(!json_is_integer(want), "member \"%s\": integer refused",
					   keys[i]);
			FUZZ_CHECK(sg_json_array_nonempty(fields[i].value) ==
					   (json_is_array(want) && json_array_size(want) > 0),
				   "member \"%s\": array_nonempty", keys[i]);
		}
	}
	json_decref(ref);

	/* sg_json_load() is jansson's reader, faster: the same tree or the same
	 * refusal (what the scanner refuses, a NUL byte included, goes to jansson). */
	mine = sg_json_load(text, size, &jerr);
	ref = json_loadb(text, size, JSON_DECODE_ANY, &jerr);
	FUZZ_CHECK((mine != NULL) == (ref != NULL), "sg_json_load %s, jansson %s",
		   mine ? "accepts" : "refuses", ref ? "accepts" : "refuses");
	FUZZ_CHECK(mine == NULL || json_equal(mine, ref), "sg_json_load built another tree");
	json_decref(mine);
	json_decref(ref);
	return 0;
}
