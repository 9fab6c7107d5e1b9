/* The safetensors reader: see safetensors_int.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "semgate/common.h"
#include "safetensors_int.h"

static int fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
	snprintf(err, errlen, fmt, a ? a : "", b ? b : "");
	return SG_ECORRUPT;
}

static int dtype_of(const char *s, size_t *elsize)
{
	static const struct {
		const char *name;
		int dtype;
		size_t size;
	} types[] = {
		{"F32", SG_ST_F32, 4},  {"F16", SG_ST_F16, 2},   {"BF16", SG_ST_BF16, 2},
		{"F64", SG_ST_OTHER, 8}, {"I64", SG_ST_OTHER, 8}, {"I32", SG_ST_OTHER, 4},
		{"I16", SG_ST_OTHER, 2}, {"I8", SG_ST_OTHER, 1},  {"U8", SG_ST_OTHER, 1},
		{"BOOL", SG_ST_OTHER, 1}, {"U16", SG_ST_OTHER, 2}, {"U32", SG_ST_OTHER, 4},
		{"U64", SG_ST_OTHER, 8}, {"F8_E4M3", SG_ST_OTHER, 1}, {"F8_E5M2", SG_ST_OTHER, 1},
	};
	for (size_t i = 0; i < SG_ARRAY_SIZE(types); i++)
		if (strcmp(s, types[i].name) == 0) {
			*elsize = types[i].size;
			return types[i].dtype;
		}
	return -1;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const sg_st_tensor_t *)a)->name, ((const sg_st_tensor_t *)b)->name);
}

static int by_begin(const void *a, const void *b)
{
	const sg_st_tensor_t *x = *(sg_st_tensor_t *const *)a, *y = *(sg_st_tensor_t *const *)b;
	return x->data < y->data ? -1 : x->data > y->data;
}

/* One entry of the header into t. */
static int parse_tensor(sg_st_tensor_t *t, const char *name, json_t *v, const uint8_t *base,
                        uint64_t data_size, char *err, size_t errlen)
{
	json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
	json_t *offs = json_object_get(v, "data_offsets");
	size_t elsize = 0, i;
	json_t *d;

	if (!json_is_object(v))
		return fail(err, errlen, "tensor \"%s\": not an object%s", name, NULL);
	if (!json_is_string(dt) || (t->dtype = dtype_of(json_string_value(dt), &elsize)) < 0)
		return fail(err, errlen, "tensor \"%s\": unknown dtype%s", name, NULL);
	snprintf(t->dtype_name, sizeof(t->dtype_name), "%s", json_string_value(dt));
	if (!json_is_array(shape) || json_array_size(shape) > SG_ST_MAX_RANK)
		return fail(err, errlen, "tensor \"%s\": shape must be an array of at most 8 sizes%s",
		            name, NULL);
	t->rank = (int)json_array_size(shape);
	t->numel = 1;
	json_array_foreach(shape, i, d) {
		if (!json_is_integer(d) || json_integer_value(d) < 0 ||
		    json_integer_value(d) > (json_int_t)1 << 40)
			return fail(err, errlen, "tensor \"%s\": a dimension is not a size%s", name, NULL);
		t->shape[i] = json_integer_value(d);
		if (t->shape[i] && t->numel > UINT64_MAX / 16 / (uint64_t)t->shape[i])
			return fail(err, errlen, "tensor \"%s\": too many elements%s", name, NULL);
		t->numel *= (uint64_t)t->shape[i];
	}
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
		return fail(err, errlen, "tensor \"%s\": data_offsets must be [begin, end]%s", name, NULL);
	json_int_t b = json_integer_value(json_array_get(offs, 0));
	json_int_t e = json_integer_value(json_array_get(offs, 1));
	if (b < 0 || e < b || (uint64_t)e > data_size)
		return fail(err, errlen, "tensor \"%s\": data_offsets outside the file's data%s", name,
		            NULL);
	t->nbytes = (uint64_t)(e - b);
	if (t->nbytes != t->numel * elsize)
		return fail(err, errlen, "tensor \"%s\": its bytes do not match its shape and dtype%s",
		            name, NULL);
	t->data = base + b;
	return 0;
}

int sg__st_parse(sg_st_t *out, const uint8_t *data, size_t size, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = NULL, *v;
	const char *name;
	sg_st_tensor_t **order = NULL;
	uint64_t hlen = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (size < 8)
		return fail(err, errlen, "too short for a safetensors header (%s%s bytes)",
		            size ? "fewer than 8" : "0", NULL);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | data[i];
	if (hlen < 2 || hlen > SG_ST_MAX_HEADER || hlen > size - 8)
		return fail(err, errlen, "the header length is %s%s", hlen > size - 8 ?
		            "past the end of the file (truncated?)" : "out of range", NULL);
	root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		rc = fail(err, errlen, "the header is not a JSON object (%s%s)", jerr.text, NULL);
		goto out;
	}
	size_t n = json_object_size(root) - (json_object_get(root, "__metadata__") != NULL);
	if (n == 0) {
		rc = fail(err, errlen, "no tensors%s%s", NULL, NULL);
		goto out;
	}
	out->tensors = calloc(n, sizeof(*out->tensors));
	order = calloc(n, sizeof(*order));
	if (out->tensors == NULL || order == NULL) {
		rc = SG_ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	const uint8_t *base = data + 8 + hlen;
	uint64_t data_size = size - 8 - hlen;
	json_object_foreach(root, name, v) {
		if (strcmp(name, "__metadata__") == 0) {
			if (!json_is_object(v)) {
				rc = fail(err, errlen, "__metadata__ is not an object%s%s", NULL, NULL);
				goto out;
			}
			continue;
		}
		sg_st_tensor_t *t = &out->tensors[out->n];
		if ((t->name = strdup(name)) == NULL) {
			rc = SG_ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		order[out->n++] = t;
		if ((rc = parse_tensor(t, name, v, base, data_size, err, errlen)) != 0)
			goto out;
	}
	/* The format forbids overlapping tensors (a forged file could make two
	 * weights alias each other). Empty tensors overlap nothing. */
	qsort(order, out->n, sizeof(*order), by_begin);
	for (size_t i = 1; i < out->n; i++)
		if (order[i - 1]->nbytes && order[i]->nbytes &&
		    order[i - 1]->data + order[i - 1]->nbytes > order[i]->data) {
			rc = fail(err, errlen, "tensors \"%s\" and \"%s\" overlap", order[i - 1]->name,
			          order[i]->name);
			goto out;
		}
	qsort(out->tensors, out->n, sizeof(*out->tensors), by_name);
out:
	free(order);
	json_decref(root);
	if (rc)
		sg__st_free(out);
	return rc;
}

int sg__st_map(const char *path, uint8_t **map, size_t *len, sg_st_t *out, char *err,
               size_t errlen)
{
	struct stat sb;
	char why[512];
	int fd, rc;

	*map = NULL;
	*len = 0;
	memset(out, 0, sizeof(*out));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return SG_EIO;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size < 8) {
		close(fd);
		snprintf(err, errlen, "%s: not a safetensors file (too short)", path);
		return SG_ECORRUPT;
	}
	uint8_t *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		snprintf(err, errlen, "%s: mmap: %s", path, strerror(errno));
		return SG_EIO;
	}
	if ((rc = sg__st_parse(out, m, (size_t)sb.st_size, why, sizeof(why)))) {
		snprintf(err, errlen, "%s: %s", path, why);
		munmap(m, (size_t)sb.st_size);
		return rc;
	}
	*map = m;
	*len = (size_t)sb.st_size;
	return 0;
}

void sg__st_free(sg_st_t *st)
{
	for (size_t i = 0; i < st->n; i++)
		free(st->tensors[i].name);
	free(st->tensors);
	memset(st, 0, sizeof(*st));
}

const sg_st_tensor_t *sg__st_find(const sg_st_t *st, const char *name)
{
	sg_st_tensor_t key = {.name = (char *)name};
	if (st->n == 0)
		return NULL;
	return bsearch(&key, st->tensors, st->n, sizeof(key), by_name);
}
