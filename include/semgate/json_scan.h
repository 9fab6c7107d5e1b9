/* semgate: a strict, non-allocating JSON scanner for the hot path.
 *
 * A proxied reply only needs three answers from its body: is it JSON, what
 * does `usage` say, and does `choices` hold anything. Building a jansson tree
 * of the whole reply for that cost more instructions than the rest of the
 * request together (jansson reads a byte at a time through callbacks). This
 * scanner validates the text in one pass without allocating and hands back
 * the spans of the top-level members it was asked for; the few numbers needed
 * are read from those spans. jansson stays for everything that builds or
 * edits JSON.
 *
 * What it accepts is what json_loadb(.., 0, ..) accepts for an object or an
 * array (RFC 8259; strings of valid UTF-8 without U+0000; surrogate escapes
 * in pairs; at most SG_JSON_MAX_DEPTH levels of nesting, scalars counted;
 * integers within int64, reals within double), with one difference: a raw
 * NUL byte anywhere makes the text invalid here (RFC 8259 has no place for
 * one), where jansson's json_loadb skips it.
 */
#ifndef SEMGATE_JSON_SCAN_H
#define SEMGATE_JSON_SCAN_H

#include <stddef.h>

#include <jansson.h>

#include "semgate/common.h"

/** Nesting limit, as jansson's. */
#define SG_JSON_MAX_DEPTH 2048

/** A top-level member to look for: set key; found and value are filled in. */
typedef struct sg_json_field {
	const char *key;   /* NUL-terminated member name, compared after unescaping */
	int found;         /* 1 when the object has it (the last one wins, as in jansson) */
	sg_iovec_t value;  /* the member's value as it appears in the text (borrowed) */
} sg_json_field_t;

/**
 * Check that text[0..len) is one JSON object or array, with optional
 * whitespace around it. When it is an object, fields[0..n) whose key is one
 * of its members get found = 1 and the value's span. Returns 0, or SG_EINVAL
 * when the text is not such JSON (fields are then unspecified).
 */
int sg_json_scan(const char *text, size_t len, sg_json_field_t *fields, size_t n);

/**
 * The value of span as an integer: 0 and *out set when span is a JSON number
 * written without fraction or exponent that fits a long long; SG_EINVAL
 * otherwise (a string, a real, 1e3, an overflow...).
 */
int sg_json_integer(sg_iovec_t span, long long *out);

/** 1 when span is a JSON array with at least one element, else 0. */
int sg_json_array_nonempty(sg_iovec_t span);

/**
 * json_loadb(text, len, JSON_DECODE_ANY, err), faster: an object or array is
 * checked by sg_json_scan()'s rules and built with jansson's no-check
 * constructors in the same pass (jansson's reader costs ~150 instructions a
 * byte); any other text, and any those rules refuse, goes to json_loadb
 * itself, so the tree and the error are jansson's own.
 * Caller owns the result (json_decref).
 */
json_t *sg_json_load(const char *text, size_t len, json_error_t *err);

#endif
