/* The mock upstream's fault markers: [[status=CODE]] and the rest, read from
 * a prompt (documented in main.c). */

#include "mock.h"

/* ---- fault markers -------------------------------------------------------- */

static const char *const sse_kinds[] = {
	"garbage", "nofield", "huge-line", "comment", "multiline", "crlf", "cr", "noblank", NULL
};

const char *const body_kinds[] = {
	"answer", "choices-null", "choices-empty", "no-message", "error-and-choices", "array",
	"string", NULL
};

/* Index of s (n bytes) in a NULL-terminated list of names, or -1. */
static int name_index(const char *const *names, const char *s, size_t n)
{
	int i;

	for (i = 0; names[i] != NULL; i++)
		if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
			return i;
	return -1;
}

static int marker_num(const char *s, size_t n, const char *key, uint64_t max,
		      uint64_t *out)
{
	size_t k = strlen(key);

	return n > k && memcmp(s, key, k) == 0 && parse_num(s + k, n - k, max, out) == 0;
}

void parse_faults(const char *s, size_t n, struct faults *f)
{
	const char *in, *end;
	size_t i = 0, len;
	uint64_t v;

	memset(f, 0, sizeof(*f));
	f->retry_after = f->cut = f->huge = -1;
	while (i + 4 <= n) {
		if (s[i] != '[' || s[i + 1] != '[') {
			i++;
			continue;
		}
		in = s + i + 2;
		for (end = in; end + 1 < s + n && !(end[0] == ']' && end[1] == ']'); end++)
			;
		if (end + 1 >= s + n)
			break;
		len = (size_t)(end - in);
		if (len == 5 && memcmp(in, "reset", 5) == 0)
			f->reset = 1;
		else if (len == 7 && memcmp(in, "garbage", 7) == 0)
			f->garbage = 1;
		else if (len > 5 && marker_num(in, len - 5, "status=", 599, &v) &&
			 memcmp(end - 5, ":text", 5) == 0 && v >= 200)
			f->status = (int)v, f->status_text = 1;
		else if (marker_num(in, len, "status=", 599, &v) && v >= 200)
			f->status = (int)v, f->status_text = 0;
		else if (marker_num(in, len, "retry-after=", 1000000000, &v))
			f->retry_after = (int64_t)v;
		else if (marker_num(in, len, "latency=", MAX_DELAY_MS, &v) ||
			 marker_num(in, len, "slow-headers=", MAX_DELAY_MS, &v))
			f->delay_ms += v;
		else if (marker_num(in, len, "cut=", 1000000000, &v))
			f->cut = (int64_t)v;
		else if (marker_num(in, len, "huge=", MAX_HUGE, &v))
			f->huge = (int64_t)v;
		else if (len == 9 && memcmp(in, "clean-end", 9) == 0)
			f->clean_end = 1;
		else if (len == 15 && memcmp(in, "done-in-content", 15) == 0)
			f->done_in_content = 1;
		else if (len == 9 && memcmp(in, "no-finish", 9) == 0)
			f->no_finish = 1;
		else if (len == 7 && memcmp(in, "no-done", 7) == 0)
			f->no_done = 1;
		else if (len == 13 && memcmp(in, "no-done=close", 13) == 0)
			f->no_done = 2;
		else if (len > 4 && memcmp(in, "sse=", 4) == 0 &&
			 name_index(sse_kinds, in + 4, len - 4) >= 0)
			f->sse |= 1u << name_index(sse_kinds, in + 4, len - 4);
		else if (len > 5 && memcmp(in, "body=", 5) == 0 &&
			 name_index(body_kinds, in + 5, len - 5) >= 0)
			f->body = name_index(body_kinds, in + 5, len - 5);
		else if (marker_num(in, len, "ok-status=", 299, &v) && v >= 200)
			f->ok_status = (int)v;
		else if (len > 5 && len <= 5 + 64 && memcmp(in, "tool=", 5) == 0 &&
			 strspn(in + 5, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				"0123456789_-") >= len - 5)
			f->tool = in + 5, f->tool_len = len - 5;
		else {
			i++;	/* not a marker: "[[x [[reset]]" still resets */
			continue;
		}
		i = (size_t)(end + 2 - s);
	}
}
