/* The input format of the store and cache_open targets (fuzz_store.c), which
 * seed_store.c writes from real stores.
 *
 *   byte 0   flags (STORE_IN_*)
 *   then records, to the end of the input:
 *     byte   database (an index into store_dbs[], modulo its size)
 *     byte   key length, then the key (8 bytes in the integer-keyed
 *            databases, whatever the input says)
 *     u16    value length (big-endian), then the value
 *
 * The records are written with LMDB's own API into a fresh environment, as
 * a store's databases, which the target then opens as semgate does at start.
 * So the file is always a well-formed LMDB file: what is fuzzed is semgate's
 * reading of the records in it (cache/store.c), of the index checkpoints
 * (index/index.c), and what the cache builds from them (cache/cache.c).
 * Damage to LMDB's own pages is another matter (cache.verify).
 *
 * The layouts below mirror cache/store.c and index/index_blob.h, for the
 * fix-ups that let mutated records past their checksums.
 */
#ifndef SEMGATE_FUZZ_STORE_INPUT_H
#define SEMGATE_FUZZ_STORE_INPUT_H

#include <lmdb.h>
#include <stdint.h>

/* Store options of both targets and of the seeds. */
#define STORE_EMBEDDER_ID "fuzz-v1:dim=4"
#define STORE_DIM 4
#define STORE_MAP_SIZE ((size_t)4 << 20)
#define STORE_NOW_S 1700000000 /* "now" of cache_open: expiry is deterministic */

/* Flags (byte 0). */
#define STORE_IN_FIX_RECORDS 0x01 /* entry records: last length and checksum recomputed */
#define STORE_IN_FIX_MANIFESTS 0x02 /* manifests: checksum recomputed over their chunks */
#define STORE_IN_FIX_BLOBS 0x04   /* index blobs: checksum recomputed (before the above),
                                     only with SEMGATE_FUZZ_FORGE=1 (fuzz_store.c) */
#define STORE_IN_HNSW 0x08        /* cache_open: index = hnsw (else auto, from 2 entries) */

/* The store's databases, with the flags cache/store.c opens them with. */
static const struct {
	const char *name;
	unsigned flags;
	int int_key; /* keys are 8-byte integers */
} store_dbs[] = {
	{"meta", 0, 0},
	{"entries", 0, 0},
	{"vectors", 0, 0},
	{"exact", MDB_INTEGERKEY | MDB_DUPSORT | MDB_DUPFIXED | MDB_INTEGERDUP, 1},
	{"checkpoints", MDB_INTEGERKEY, 1},
	{"manifests", MDB_INTEGERKEY, 1},
	{"ckchunks", 0, 0},
};
enum { DB_META, DB_ENTRIES, DB_VECTORS, DB_EXACT, DB_CHECKPOINTS, DB_MANIFESTS, DB_CKCHUNKS,
       DB__LAST };

/* cache/store.c: an entry record's header (88 bytes, then 5 parts). */
#define REC_VERSION 1u
#define REC_HDR 88
#define REC_LEN_AT 64      /* uint32_t len[5] */
#define REC_CHECKSUM_AT 84 /* uint32_t checksum */

/* cache/store.c: a manifest (48 bytes) and its chunks' keys. */
#define MANIFEST_SIZE 48
#define MANIFEST_GEN_AT 8
#define MANIFEST_LEN_AT 24
#define MANIFEST_NCHUNKS_AT 32
#define MANIFEST_CHECKSUM_AT 40
#define CKPT_SEED 0x5347435050ull
#define CHUNK_KEY 20

/* index/index_blob.h: the checksum of a blob header is at byte 32 of 40. */
#define BLOB_HDR 40
#define BLOB_NDEAD_AT 16
#define BLOB_FAISS_LEN_AT 24
#define BLOB_CHECKSUM_AT 32

#endif
