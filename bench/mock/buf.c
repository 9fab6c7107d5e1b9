/* The mock upstream's growable buffers (JSON string escaping, number
 * parsing) and its HTTP output: response heads, whole replies, OpenAI error
 * bodies. */

#include "mock.h"

#define KEEP_SPARE	((size_t)1024 * 1024)	/* larger idle buffers are freed */

/* ---- buffers -------------------------------------------------------------- */

int buf_grow(struct buf *b, size_t extra)
{
	size_t want;
	char *p;

	if (b->oom)
		return -1;
	if (extra <= b->cap - b->len)
		return 0;
	if (extra > SIZE_MAX / 4 - b->len)
		goto fail;
	want = b->cap ? b->cap : 256;
	while (want < b->len + extra)
		want *= 2;
	p = realloc(b->base, want);
	if (p == NULL)
		goto fail;
	b->base = p;
	b->cap = want;
	return 0;
fail:
	b->oom = 1;
	return -1;
}

void buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0 || buf_grow(b, n) != 0)
		return;
	memcpy(b->base + b->len, p, n);
	b->len += n;
}

void buf_addc(struct buf *b, char ch)
{
	buf_add(b, &ch, 1);
}

void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void buf_add_u64(struct buf *b, uint64_t v)
{
	char tmp[24], *p = tmp + sizeof(tmp);

	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	buf_add(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

void buf_addf(struct buf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

void buf_clear(struct buf *b)
{
	b->len = 0;
	b->oom = 0;
}

void buf_free(struct buf *b)
{
	free(b->base);
	memset(b, 0, sizeof(*b));
}

/* Empty the buffer, giving back its memory if it grew big (64 MB bodies). */
void buf_trim(struct buf *b)
{
	if (b->cap > KEEP_SPARE)
		buf_free(b);
	buf_clear(b);
}

/* Length of a valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

/* Append s as JSON string content (no quotes); invalid UTF-8 becomes U+FFFD. */
void buf_add_jraw(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s, *end = p + n, *run;
	char esc[6] = { '\\', 'u', '0', '0', 0, 0 };
	size_t k;

	while (p < end) {
		run = p;
		while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
			p++;
		buf_add(b, run, (size_t)(p - run));
		if (p == end)
			break;
		if (*p >= 0x80) {
			k = utf8_len(p, (size_t)(end - p));
			if (k == 0) {
				buf_adds(b, "\\ufffd");
				k = 1;
			} else {
				buf_add(b, p, k);
			}
			p += k;
			continue;
		}
		switch (*p) {
		case '"': buf_adds(b, "\\\""); break;
		case '\\': buf_adds(b, "\\\\"); break;
		case '\n': buf_adds(b, "\\n"); break;
		case '\r': buf_adds(b, "\\r"); break;
		case '\t': buf_adds(b, "\\t"); break;
		default:
			esc[4] = hex[*p >> 4];
			esc[5] = hex[*p & 15];
			buf_add(b, esc, 6);
		}
		p++;
	}
}

void buf_add_jstr(struct buf *b, const char *s, size_t n)
{
	buf_addc(b, '"');
	buf_add_jraw(b, s, n);
	buf_addc(b, '"');
}

/* Parse a decimal number of at most `max`; 0 on success. */
int parse_num(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 19)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

uint64_t ceil4(size_t n)
{
	return ((uint64_t)n + 3) / 4;
}

/* ---- HTTP output ---------------------------------------------------------- */

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 206: return "Partial Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return status < 400 ? "OK" : "Error";
	}
}

/* Response head; framing is a Content-Length, or chunked, or neither (close
 * delimited) when clen is SIZE_MAX. */
void put_head(struct buf *o, int status, const char *ctype, size_t clen,
	      int chunked, int64_t retry_after, int keep_alive)
{
	buf_adds(o, "HTTP/1.1 ");
	buf_add_u64(o, (uint64_t)status);
	buf_addc(o, ' ');
	buf_adds(o, reason(status));
	buf_adds(o, "\r\nContent-Type: ");
	buf_adds(o, ctype);
	if (chunked) {
		buf_adds(o, "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked");
	} else if (clen != SIZE_MAX) {
		buf_adds(o, "\r\nContent-Length: ");
		buf_add_u64(o, clen);
	}
	if (retry_after >= 0) {
		buf_adds(o, "\r\nRetry-After: ");
		buf_add_u64(o, (uint64_t)retry_after);
	}
	buf_adds(o, keep_alive ? "\r\nConnection: keep-alive\r\n\r\n"
			       : "\r\nConnection: close\r\n\r\n");
}

void put_reply(struct buf *o, const struct reply *r)
{
	size_t n = r->body->len;

	put_head(o, r->status, r->ctype, n, 0, r->retry_after,
		 !(r->flags & RF_CLOSE));
	if (r->flags & RF_HEAD)
		return;
	if (r->flags & RF_CUT)
		n /= 2;
	buf_add(o, r->body->base, n);
}

/* An OpenAI error body; `code` is a raw JSON token ("\"not_found\"", "500"). */
void error_reply(struct reply *r, int status, const char *type,
		 const char *code, const char *msg, size_t msg_len)
{
	struct buf *b = r->body;

	r->status = status;
	r->ctype = "application/json";
	buf_clear(b);
	buf_adds(b, "{\"error\":{\"message\":");
	buf_add_jstr(b, msg, msg_len);
	buf_adds(b, ",\"type\":\"");
	buf_adds(b, type);
	buf_adds(b, "\",\"code\":");
	buf_adds(b, code);
	buf_adds(b, "}}");
}

void injected_error(struct reply *r, int status)
{
	char msg[48], code[16];
	const char *type = status == 429 ? "rate_limit_error" :
			   status >= 400 && status < 500 ? "invalid_request_error" :
			   "server_error";

	snprintf(msg, sizeof(msg), "mock injected %d", status);
	snprintf(code, sizeof(code), "%d", status);
	error_reply(r, status, type, code, msg, strlen(msg));
}

void bad_request(struct reply *r, const char *msg)
{
	error_reply(r, 400, "invalid_request_error", "null", msg, strlen(msg));
}
