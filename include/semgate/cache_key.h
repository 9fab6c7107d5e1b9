/* semgate: what a cached request is keyed on.
 *
 * A request splits into a hard scope, which a semantic match never crosses,
 * and the prompt text that is embedded and compared. The scope is canonical
 * JSON (sorted keys, no whitespace, integral numbers written as integers), so
 * key order and formatting in the request never change it:
 *   {"kind","ns","model","history":[earlier turns],"params":{everything else
 *    that shapes the answer: system prompt, tools, response_format,
 *    temperature, top_p, max_tokens, seed, stop, logprobs, ...}}
 * The exact key is the scope plus the prompt, byte for byte.
 */
#ifndef SEMGATE_CACHE_KEY_H
#define SEMGATE_CACHE_KEY_H

#include <stdint.h>

#include "semgate/buf.h"
#include "semgate/hash.h"

/** Which endpoint a request is for (they never share entries). */
enum sg_cache_kind { SG_CACHE_CHAT, SG_CACHE_COMPLETIONS };

/** What of a conversation is embedded. */
enum sg_cache_embed_mode {
	SG_EMBED_LAST_USER,    /* last user message; earlier turns are scope */
	SG_EMBED_LAST_MESSAGE, /* last user message; earlier turns are ignored */
	SG_EMBED_LAST_TURNS    /* the last N messages joined; earlier ones are scope */
};

/** Keying options, from the cache config. */
typedef struct sg_cache_key_opts {
	int embed_mode;         /* enum sg_cache_embed_mode */
	int embed_turns;        /* N for SG_EMBED_LAST_TURNS */
	double max_temperature; /* bypass above this */
	const sg_hash_key_t *hash_key; /* the store's secret (sg_cache_hash_key()); NULL: an
	                                * all-zero key, for tools without a store */
} sg_cache_key_opts_t;

/** A request's cache key. Owns its buffers: sg_cache_key_free(). */
typedef struct sg_cache_key {
	sg_buf_t scope;         /* canonical scope JSON */
	sg_buf_t prompt;        /* the text to embed */
	uint64_t scope_hash;    /* keyed hash of scope: which index (never trusted alone:
	                         * a hit's whole scope is compared) */
	uint64_t exact_hash;    /* keyed hash of scope + prompt */
	const char *bypass;     /* static reason the cache must not serve it, or NULL */
} sg_cache_key_t;

void sg_cache_key_init(sg_cache_key_t *k);
/** Derive k's scope_hash and exact_hash from its scope and prompt under key
 * (NULL: all zero). sg_cache_key_build() does this; the store's migration of
 * ids made by an older version does it on stored entries. */
void sg_cache_key_hash(sg_cache_key_t *k, const sg_hash_key_t *key);
/** The same for bytes: the ids of scope and prompt under key. */
void sg_cache_key_ids(const sg_hash_key_t *key, const char *scope, size_t scope_len,
                      const char *prompt, size_t prompt_len, uint64_t *scope_hash,
                      uint64_t *exact_hash);
void sg_cache_key_free(sg_cache_key_t *k);

/**
 * Build the key of a parsed OpenAI request body (`root`, a json_t object,
 * borrowed) for namespace ns and model group name model. When the request
 * must bypass the cache, returns 0 with k->bypass set (e.g. "n > 1",
 * "tool-call continuation", "temperature above cache.max_temperature").
 * SG_EINVAL for a body without a usable prompt (then k->bypass is set too),
 * SG_ENOMEM.
 */
int sg_cache_key_build(sg_cache_key_t *k, void *root, enum sg_cache_kind kind, const char *ns,
                       const char *model, const sg_cache_key_opts_t *opts);

#endif
