/* The hot-path JSON scanner (see semgate/json_scan.h).
 *
 * One forward pass, no recursion: a stack of open containers (one byte each)
 * and, for the top-level object, the key and start of the member being read,
 * so that a member's value span is known when its value ends.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/json_scan.h"

static size_t skip_ws(const char *s, size_t len, size_t i)
{
	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

static int hex4(const char *s, size_t len, size_t i, unsigned *out)
{
	unsigned v = 0;
	if (len - i < 4)
		return -1;
	for (size_t k = 0; k < 4; k++) {
		unsigned char c = (unsigned char)s[i + k];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* One UTF-8 sequence starting at s[i] (a byte >= 0x80): its length, or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t i)
{
	unsigned char c = s[i];
	size_t n;
	uint32_t cp;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0; /* continuation byte, overlong lead (c0, c1) or past U+10FFFF */
	if (len - i < n)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((s[i + k] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i + k] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0; /* overlong, out of range, or a UTF-16 surrogate */
	return n;
}

/* A string starting at s[i] == '"': the index just past its closing quote, or 0. */
static size_t scan_string(const char *s, size_t len, size_t i)
{
	const unsigned char *u = (const unsigned char *)s;

	for (i++; i < len;) {
		unsigned char c = u[i];
		if (c == '"')
			return i + 1;
		if (c < 0x20)
			return 0;
		if (c < 0x80 && c != '\\') {
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t n = utf8_seq(u, len, i);
			if (n == 0)
				return 0;
			i += n;
			continue;
		}
		/* an escape */
		if (++i >= len)
			return 0;
		c = u[i];
		if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
			i++;
			continue;
		}
		unsigned cp, lo;
		if (c != 'u' || hex4(s, len, i + 1, &cp) != 0 || cp == 0)
			return 0; /* jansson refuses \u0000 without JSON_ALLOW_NUL */
		i += 5;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return 0; /* a low surrogate alone */
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (len - i < 6 || s[i] != '\\' || s[i + 1] != 'u' ||
			    hex4(s, len, i + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
				return 0; /* a high surrogate without its pair */
			i += 6;
		}
	}
	return 0;
}

/* A number starting at s[i]: the index just past it, or 0. */
static size_t scan_number(const char *s, size_t len, size_t i)
{
#define DIGIT(k) ((k) < len && s[k] >= '0' && s[k] <= '9')
	if (i < len && s[i] == '-')
		i++;
	if (!DIGIT(i))
		return 0;
	if (s[i] == '0')
		i++;
	else
		while (DIGIT(i))
			i++;
	if (i < len && s[i] == '.') {
		if (!DIGIT(i + 1))
			return 0;
		for (i++; DIGIT(i); i++)
			;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		if (!DIGIT(i))
			return 0;
		while (DIGIT(i))
			i++;
	}
	return i;
#undef DIGIT
}

/*
 * The value of the number lexeme s[0..n) as jansson reads it: an integer
 * (no fraction, no exponent) into *iv, else a real into *dv; *integral
 * says which. -1 when jansson refuses it (an integer outside int64, a real
 * that overflows a double) or no memory for a long lexeme.
 */
static int number_value(const char *s, size_t n, int *integral, long long *iv, double *dv)
{
	char tmp[64], *num = tmp;
	int rc = 0;

	*integral = memchr(s, '.', n) == NULL && memchr(s, 'e', n) == NULL &&
		    memchr(s, 'E', n) == NULL;
	if (n >= sizeof(tmp) && (num = malloc(n + 1)) == NULL)
		return -1;
	memcpy(num, s, n);
	num[n] = '\0';
	errno = 0;
	if (*integral) {
		*iv = strtoll(num, NULL, 10);
		rc = errno == ERANGE ? -1 : 0;
	} else {
		*dv = strtod(num, NULL);
		rc = errno == ERANGE && isinf(*dv) ? -1 : 0;
	}
	if (num != tmp)
		free(num);
	return rc;
}

/* Would jansson hold the number s[0..n)? Short lexemes always fit (under 19
 * digits, or a real without exponent under 300 characters): only long ones
 * or ones with exponents are converted to tell. */
static int number_fits(const char *s, size_t n)
{
	int has_exp = memchr(s, 'e', n) != NULL || memchr(s, 'E', n) != NULL;
	int integral;
	long long iv;
	double dv;

	if (!has_exp && (memchr(s, '.', n) == NULL ? n < 19 : n < 300))
		return 1;
	return number_value(s, n, &integral, &iv, &dv) == 0;
}

/*
 * Does the string token s[a..b) (quotes included) spell key? Raw bytes are
 * compared unless the token has escapes; then it is decoded first (keys
 * worth looking for are short: a long escaped one cannot match).
 */
static int key_is(const char *s, size_t a, size_t b, const char *key)
{
	size_t klen = strlen(key), n = 0;
	char buf[64];

	a++, b--; /* inside the quotes */
	if (memchr(s + a, '\\', b - a) == NULL)
		return b - a == klen && memcmp(s + a, key, klen) == 0;
	for (size_t i = a; i < b; i++) {
		char c = s[i];
		if (n >= sizeof(buf))
			return 0;
		if (c != '\\') {
			buf[n++] = c;
			continue;
		}
		c = s[++i];
		switch (c) {
		case 'b': buf[n++] = '\b'; break;
		case 'f': buf[n++] = '\f'; break;
		case 'n': buf[n++] = '\n'; break;
		case 'r': buf[n++] = '\r'; break;
		case 't': buf[n++] = '\t'; break;
		case 'u': {
			unsigned cp;
			if (hex4(s, b, i + 1, &cp) != 0 || cp >= 0x80)
				return 0; /* keys we look for are ASCII */
			buf[n++] = (char)cp;
			i += 4;
			break;
		}
		default: buf[n++] = c; break; /* " \ / */
		}
	}
	return n == klen && memcmp(buf, key, klen) == 0;
}

int sg_json_scan(const char *s, size_t len, sg_json_field_t *fields, size_t nf)
{
	unsigned char stack[SG_JSON_MAX_DEPTH]; /* '{' or '[' per open container */
	size_t depth = 0, i, key_a = 0, key_b = 0, member_start = 0;

	for (size_t f = 0; f < nf; f++)
		fields[f].found = 0;
	i = skip_ws(s, len, 0);
	if (i >= len || (s[i] != '{' && s[i] != '['))
		return SG_EINVAL;

	for (;;) {
		/* a value starts at i */
		i = skip_ws(s, len, i);
		if (i >= len)
			return SG_EINVAL;
		if (depth == SG_JSON_MAX_DEPTH)
			return SG_EINVAL; /* as jansson, every value counts, scalars too */
		if (depth == 1 && stack[0] == '{')
			member_start = i;
		switch (s[i]) {
		case '{':
		case '[':
			stack[depth++] = (unsigned char)s[i];
			i = skip_ws(s, len, i + 1);
			if (i < len && s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
				i++;
				depth--;
				break; /* empty: the value is complete */
			}
			if (stack[depth - 1] == '[')
				continue; /* the first element */
			goto key;
		case '"':
			if ((i = scan_string(s, len, i)) == 0)
				return SG_EINVAL;
			break;
		case 't':
			if (len - i < 4 || memcmp(s + i, "true", 4) != 0)
				return SG_EINVAL;
			i += 4;
			break;
		case 'f':
			if (len - i < 5 || memcmp(s + i, "false", 5) != 0)
				return SG_EINVAL;
			i += 5;
			break;
		case 'n':
			if (len - i < 4 || memcmp(s + i, "null", 4) != 0)
				return SG_EINVAL;
			i += 4;
			break;
		default: {
			size_t a = i;
			if ((i = scan_number(s, len, i)) == 0 || !number_fits(s + a, i - a))
				return SG_EINVAL;
			break;
		}
		}

		/* a value ended just before i: close containers, find the next one */
		for (;;) {
			if (depth == 1 && stack[0] == '{')
				for (size_t f = 0; f < nf; f++)
					if (key_is(s, key_a, key_b, fields[f].key)) {
						fields[f].found = 1;
						fields[f].value.base = (char *)s + member_start;
						fields[f].value.len = i - member_start;
					}
			i = skip_ws(s, len, i);
			if (depth == 0)
				return i == len ? 0 : SG_EINVAL;
			if (i >= len)
				return SG_EINVAL;
			if (s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
				i++;
				depth--;
				continue; /* that container was a value too */
			}
			if (s[i] != ',')
				return SG_EINVAL;
			i++;
			break;
		}
		if (stack[depth - 1] == '[')
			continue;
key:
		/* in an object, at a member: "key" : value */
		i = skip_ws(s, len, i);
		if (i >= len || s[i] != '"')
			return SG_EINVAL;
		size_t a = i;
		if ((i = scan_string(s, len, i)) == 0)
			return SG_EINVAL;
		if (depth == 1) { /* a top-level member: the key its value is filed under */
			key_a = a;
			key_b = i;
		}
		i = skip_ws(s, len, i);
		if (i >= len || s[i] != ':')
			return SG_EINVAL;
		i++;
	}
}

int sg_json_integer(sg_iovec_t span, long long *out)
{
	char buf[32];
	char *end;

	if (span.len == 0 || span.len >= sizeof(buf))
		return SG_EINVAL;
	for (size_t k = 0; k < span.len; k++)
		if (!((span.base[k] >= '0' && span.base[k] <= '9') || (k == 0 && span.base[k] == '-')))
			return SG_EINVAL;
	if (scan_number(span.base, span.len, 0) != span.len)
		return SG_EINVAL; /* "-", "01" */
	memcpy(buf, span.base, span.len);
	buf[span.len] = '\0';
	errno = 0;
	long long v = strtoll(buf, &end, 10);
	if (errno == ERANGE || *end != '\0')
		return SG_EINVAL;
	*out = v;
	return 0;
}

int sg_json_array_nonempty(sg_iovec_t span)
{
	if (span.len < 2 || span.base[0] != '[')
		return 0;
	size_t i = skip_ws(span.base, span.len, 1);
	return i < span.len && span.base[i] != ']';
}

/* ---- building a jansson tree from text the scanner has checked ---------- */

/* A UTF-8 encoding of cp (< 0x110000) at out: its length. */
static size_t put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * The string token s[a..b) (quotes included) decoded into out (at least
 * b - a bytes: decoding never lengthens a token). Returns the length.
 */
static size_t unescape(const char *s, size_t a, size_t b, char *out)
{
	size_t n = 0;
	for (size_t i = a + 1; i < b - 1; i++) {
		char c = s[i];
		if (c != '\\') {
			out[n++] = c;
			continue;
		}
		switch (c = s[++i]) {
		case 'b': out[n++] = '\b'; break;
		case 'f': out[n++] = '\f'; break;
		case 'n': out[n++] = '\n'; break;
		case 'r': out[n++] = '\r'; break;
		case 't': out[n++] = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			hex4(s, b, i + 1, &cp);
			i += 4;
			if (cp >= 0xd800 && cp <= 0xdbff) { /* the scanner checked the pair */
				hex4(s, b, i + 3, &lo);
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			}
			n += put_utf8(out + n, cp);
			break;
		}
		default: out[n++] = c; break; /* " \ / */
		}
	}
	return n;
}

/*
 * The loader checks as it builds, with the scanner's own rules (the same
 * string, number and depth checks; commas, colons, literals and the end of
 * the text in load_value), so that the text is read once. Anything it cannot
 * build goes to json_loadb, which then says why in jansson's words.
 */
typedef struct loader {
	const char *s;   /* the text */
	size_t len;
	size_t i;        /* where the next token starts (or whitespace before it) */
	size_t depth;    /* containers open around the value being read */
	char small[256]; /* decoding room for short strings */
} loader_t;

static json_t *load_value(loader_t *l);

/* The next byte that is not whitespace, or -1 at the end; l->i points at it. */
static int peek(loader_t *l)
{
	l->i = skip_ws(l->s, l->len, l->i);
	return l->i < l->len ? (unsigned char)l->s[l->i] : -1;
}

/*
 * The string token at l->i, checked and decoded: *out points into the text
 * when it has no escapes, else into l->small or, when longer, a malloc'd
 * copy returned in *owned (caller frees). Returns the length, or SIZE_MAX
 * when the token is not a valid string (or no memory).
 */
static size_t decode_string(loader_t *l, const char **out, char **owned)
{
	size_t a = l->i, b = l->i < l->len && l->s[a] == '"' ? scan_string(l->s, l->len, a) : 0;
	size_t rawlen = b - a - 2;
	char *dst = l->small;

	*owned = NULL;
	if (b == 0)
		return SIZE_MAX;
	l->i = b;
	*out = l->s + a + 1;
	if (memchr(*out, '\\', rawlen) == NULL)
		return rawlen;
	if (rawlen > sizeof(l->small) && (dst = *owned = malloc(rawlen)) == NULL)
		return SIZE_MAX;
	*out = dst;
	return unescape(l->s, a, b, dst);
}

static json_t *load_string(loader_t *l)
{
	const char *p;
	char *owned;
	size_t n = decode_string(l, &p, &owned);
	json_t *out = n == SIZE_MAX ? NULL : json_stringn_nocheck(p, n);
	free(owned);
	return out;
}

/* A member "key": value of an object; 0 or -1. */
static int load_member(loader_t *l, json_t *obj)
{
	char kbuf[128], *owned, *key = kbuf;
	const char *p;
	size_t n;
	int rc = -1;

	peek(l);
	n = decode_string(l, &p, &owned);
	if (n == SIZE_MAX || memchr(p, '\0', n) != NULL) /* keys are C strings in jansson */
		goto out;
	if (n >= sizeof(kbuf) && (key = malloc(n + 1)) == NULL)
		goto out;
	memcpy(key, p, n); /* before the value reuses l->small */
	key[n] = '\0';
	if (peek(l) == ':') {
		l->i++;
		json_t *v = load_value(l);
		if (v != NULL)
			rc = json_object_set_new_nocheck(obj, key, v) == 0 ? 0 : -1;
	}
	if (key != kbuf)
		free(key);
out:
	free(owned);
	return rc;
}

static json_t *load_number(loader_t *l)
{
	size_t a = l->i, b = scan_number(l->s, l->len, a);
	int integral;
	long long iv;
	double dv;

	if (b == 0 || number_value(l->s + a, b - a, &integral, &iv, &dv) != 0)
		return NULL;
	l->i = b;
	return integral ? json_integer((json_int_t)iv) : json_real(dv);
}

/* The literal word at l->i (true, false, null) as value, or NULL. */
static json_t *load_literal(loader_t *l, const char *word, json_t *value)
{
	size_t n = strlen(word);
	if (l->len - l->i < n || memcmp(l->s + l->i, word, n) != 0)
		return NULL;
	l->i += n;
	return value;
}

static json_t *load_value(loader_t *l)
{
	int c = peek(l);

	if (l->depth == SG_JSON_MAX_DEPTH)
		return NULL; /* as jansson, every value counts, scalars too */
	switch (c) {
	case '{':
	case '[': {
		int close = c == '{' ? '}' : ']';
		json_t *out = c == '{' ? json_object() : json_array();
		l->i++;
		l->depth++;
		if (out != NULL && peek(l) == close) {
			l->i++;
			l->depth--;
			return out;
		}
		while (out != NULL) {
			json_t *v = NULL;
			if (c == '{' ? load_member(l, out) != 0
				     : ((v = load_value(l)) == NULL || json_array_append_new(out, v) != 0))
				break;
			int next = peek(l);
			l->i++;
			if (next == close) {
				l->depth--;
				return out;
			}
			if (next != ',')
				break;
		}
		json_decref(out);
		return NULL;
	}
	case '"':
		return load_string(l);
	case 't':
		return load_literal(l, "true", json_true());
	case 'f':
		return load_literal(l, "false", json_false());
	case 'n':
		return load_literal(l, "null", json_null());
	default:
		return c == -1 ? NULL : load_number(l);
	}
}

json_t *sg_json_load(const char *text, size_t len, json_error_t *err)
{
	loader_t l = {text, len, 0, 0, {0}};
	int c = peek(&l);

	if (c == '{' || c == '[') {
		json_t *root = load_value(&l);
		if (root != NULL && peek(&l) == -1)
			return root;
		json_decref(root);
	}
	/* not an object or array, not JSON, a number jansson cannot hold, or no
	 * memory: jansson's own tree or error */
	return json_loadb(text, len, JSON_DECODE_ANY, err);
}
