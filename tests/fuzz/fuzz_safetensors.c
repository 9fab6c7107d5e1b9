/* Fuzz target: the safetensors reader (cache/safetensors.c), which parses the
 * header of every model file semgate loads. Input: the file's bytes. Checked:
 * every tensor it accepts lies inside the file's data, holds exactly the
 * bytes its shape and dtype need, overlaps no other, and can be found by its
 * name; reading it whole touches only accepted bytes (ASan). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "safetensors_int.h"

static size_t elsize(const sg_st_tensor_t *t)
{
	return t->dtype == SG_ST_F32 ? 4 : t->dtype == SG_ST_OTHER ? 0 : 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a private copy: ASan then sees exactly the input's bounds */
	uint8_t *copy = malloc(size ? size : 1);
	char err[512];
	sg_st_t st;

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	if (sg__st_parse(&st, copy, size, err, sizeof(err)) == 0) {
		FUZZ_CHECK(st.n > 0, "accepted a file without tensors");
		for (size_t i = 0; i < st.n; i++) {
			const sg_st_tensor_t *t = &st.tensors[i];
			FUZZ_CHECK(t->data >= copy && t->data + t->nbytes <= copy + size,
			           "tensor %s outside the file", t->name);
			if (elsize(t))
				FUZZ_CHECK(t->nbytes == t->numel * elsize(t), "tensor %s: bytes != shape",
				           t->name);
			FUZZ_CHECK(sg__st_find(&st, t->name) == t, "tensor %s not found by name", t->name);
			for (size_t j = 0; j < i; j++) {
				const sg_st_tensor_t *u = &st.tensors[j];
				if (t->nbytes && u->nbytes)
					FUZZ_CHECK(t->data + t->nbytes <= u->data ||
					                   u->data + u->nbytes <= t->data,
					           "tensors %s and %s overlap", t->name, u->name);
			}
			volatile uint8_t sum = 0;
			for (uint64_t k = 0; k < t->nbytes; k++)
				sum ^= t->data[k];
			(void)sum;
		}
		sg__st_free(&st);
	} else {
		FUZZ_CHECK(err[0] != '\0', "refused without a message");
		FUZZ_CHECK(st.n == 0 && st.tensors == NULL, "a refused parse left tensors");
	}
	free(copy);
	return 0;
}
