/* semgate: reading the safetensors format (private to the model loader).
 *
 * A file is: an 8-byte little-endian header length N, N bytes of a JSON
 * object {name: {"dtype", "shape", "data_offsets": [begin, end]}, optional
 * "__metadata__": {string: string}}, then the tensors' bytes, offsets counted
 * from the end of the header. The parser trusts nothing: every offset, shape
 * and size is checked against the data actually present, tensors may not
 * overlap, and products of dimensions are checked for overflow.
 */
#ifndef SEMGATE_SAFETENSORS_INT_H
#define SEMGATE_SAFETENSORS_INT_H

#include <stddef.h>
#include <stdint.h>

enum sg_st_dtype { SG_ST_F32, SG_ST_F16, SG_ST_BF16, SG_ST_OTHER };

#define SG_ST_MAX_RANK 8
#define SG_ST_MAX_HEADER (100u << 20) /* the format's own limit */

typedef struct sg_st_tensor {
	char *name;
	int dtype;                     /* enum sg_st_dtype */
	char dtype_name[16];           /* as written, for messages */
	int rank;
	int64_t shape[SG_ST_MAX_RANK];
	uint64_t numel;
	const uint8_t *data;           /* into the file's bytes */
	uint64_t nbytes;
} sg_st_tensor_t;

typedef struct sg_st {
	sg_st_tensor_t *tensors;       /* sorted by name */
	size_t n;
} sg_st_t;

/**
 * Parse size bytes of a safetensors file held in memory (data stays borrowed:
 * tensors point into it). On failure returns SG_ECORRUPT (or SG_ENOMEM) and a
 * message in err; *out is then empty.
 */
int sg__st_parse(sg_st_t *out, const uint8_t *data, size_t size, char *err, size_t errlen);

/**
 * Map the file at path read-only (shared: processes mapping the same file
 * share its pages) and parse it. On success *map and *len are the mapping
 * (munmap them after sg__st_free); on failure nothing stays mapped and err
 * names the file: SG_EIO (cannot open or map), SG_ECORRUPT, SG_ENOMEM.
 */
int sg__st_map(const char *path, uint8_t **map, size_t *len, sg_st_t *out, char *err,
               size_t errlen);

/** Free what sg__st_parse allocated (not the data). */
void sg__st_free(sg_st_t *st);

/** The tensor of that name, or NULL. */
const sg_st_tensor_t *sg__st_find(const sg_st_t *st, const char *name);

#endif
