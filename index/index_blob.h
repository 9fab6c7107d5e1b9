/* Private to the index module and its tests: the layout of a serialized
 * index (see the top of index/index.c). Host byte order. */
#ifndef SEMGATE_INDEX_BLOB_H
#define SEMGATE_INDEX_BLOB_H

#include <stddef.h>
#include <stdint.h>

#define SG__INDEX_BLOB_MAGIC 0x58494753u /* "SGIX" read as a little-endian u32 */
#define SG__INDEX_BLOB_VERSION 1u
#define SG__INDEX_CHECKSUM_SEED 0xcbf29ce484222325ULL

struct sg__index_blob_header {
	uint32_t magic;     /* SG__INDEX_BLOB_MAGIC */
	uint32_t version;   /* SG__INDEX_BLOB_VERSION */
	uint32_t type;      /* sg_index_type_t */
	uint32_t dim;       /* vector dimension */
	uint64_t n_dead;    /* tombstoned int64 ids that follow the header */
	uint64_t faiss_len; /* bytes of faiss_write_index() data after the ids */
	uint64_t checksum;  /* of header (this field as 0), ids, FAISS data */
};

/* Continue checksum h over len bytes; start with SG__INDEX_CHECKSUM_SEED. */
uint64_t sg__index_checksum(uint64_t h, const void *data, size_t len);

#endif
