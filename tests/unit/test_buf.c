/* Unit tests: capped buffers. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "fbuf_int.h"
#include "semgate/buf.h"

static void test_append_and_cap(void)
{
	sg_buf_t b;
	sg_buf_init(&b, 10);
	CHECK(sg_buf_append(&b, "hello", 5) == 0);
	CHECK(b.len == 5 && strcmp(b.data, "hello") == 0);
	CHECK(sg_buf_append(&b, "world", 5) == 0);
	CHECK(b.len == 10);
	/* past the cap: refused, buffer unchanged */
	CHECK(sg_buf_append(&b, "!", 1) == SG_ETOOBIG);
	CHECK(b.len == 10 && strcmp(b.data, "helloworld") == 0);
	CHECK(sg_buf_printf(&b, "%d", 1) == SG_ETOOBIG);
	sg_buf_consume(&b, 5);
	CHECK(b.len == 5 && strcmp(b.data, "world") == 0);
	sg_buf_consume(&b, 99);
	CHECK(b.len == 0);
	sg_buf_free(&b);
	CHECK(b.data == NULL && b.len == 0);
}

static void test_huge_request_is_clean(void)
{
	sg_buf_t b;
	sg_buf_init(&b, 100);
	CHECK(sg_buf_reserve(&b, (size_t)-1) == SG_ETOOBIG);
	CHECK(sg_buf_append(&b, "x", (size_t)-1 / 2) == SG_ETOOBIG);
	sg_buf_free(&b);
}

static void test_printf_and_json(void)
{
	sg_buf_t b;
	sg_buf_init(&b, 0);
	CHECK(sg_buf_printf(&b, "%s=%d;", "a", 42) == 0);
	CHECK_STR(b.data, "a=42;");
	sg_buf_reset(&b);
	CHECK(sg_buf_json_str(&b, "q\"\\\n\x01z", 6) == 0);
	CHECK_STR(b.data, "\"q\\\"\\\\\\n\\u0001z\"");
	size_t len;
	char *p = sg_buf_steal(&b, &len);
	CHECK(p != NULL && len == strlen(p));
	CHECK(b.data == NULL && b.len == 0);
	free(p);
}

static void test_strerror(void)
{
	CHECK_STR(sg_strerror(0), "success");
	CHECK_STR(sg_strerror(SG_ETOOBIG), "size limit exceeded");
	CHECK_STR(sg_strerror(-999), "unknown error");
	CHECK_STR(sg_strerror(5), "unknown error");
}

/* sg__put_u64 and sg__fbuf_u64 write what printf's %llu does, at every
 * digit count's edges, and fbuf truncates them like snprintf. */
static void test_decimal_writer(void)
{
	char got[32], want[32];
	for (uint64_t p = 1, k = 0; k < 20; k++, p *= 10) {
		uint64_t vs[] = {p - 1, p, p + 1, p * 5 + 3, k == 19 ? UINT64_MAX : p * 10 - 1};
		for (size_t j = 0; j < sizeof(vs) / sizeof(vs[0]); j++) {
			char *end = sg__put_u64(got, vs[j]);
			*end = '\0';
			snprintf(want, sizeof(want), "%" PRIu64, vs[j]);
			CHECK_STR(got, want);
			CHECK(sg__u64_digits(vs[j]) == (int)strlen(want));
			/* the same digits as words, written twice; nothing past n + 7 */
			char two[2 * 20 + 7 + 1];
			memset(two, '#', sizeof(two));
			sg__dec_t d;
			sg__dec(&d, vs[j]);
			char *e1 = sg__put_dec(two, &d), *e2 = sg__put_dec(e1, &d);
			CHECK(e1 - two == (ptrdiff_t)strlen(want) && e2 - e1 == e1 - two);
			CHECK(memcmp(two, want, strlen(want)) == 0 && memcmp(e1, want, strlen(want)) == 0);
			for (char *x = e2 + 7; x < two + sizeof(two); x++)
				CHECK(*x == '#');
		}
	}
	/* values below 10^8 as 8 digits, leading zeros included. Its halves go
	 * through separate lanes that cannot carry into each other, so every
	 * value of each half, with the other at 0 and at its mirror, covers what
	 * the multiplications' exactness depends on. */
	int bad = 0;
	for (uint32_t i = 0; i < 10000; i++) {
		uint32_t xs[] = {i, i * 10000, i * 10000 + 9999 - i};
		for (int j = 0; j < 3; j++) {
			uint64_t a = sg__ascii8(xs[j]);
			const unsigned char *b = (const unsigned char *)&a;
			uint32_t y = xs[j];
			for (int k = 7; k >= 0; k--, y /= 10)
				bad += b[k] != '0' + y % 10;
		}
	}
	CHECK(bad == 0);
	sg__fbuf_t o;
	sg__fbuf_init(&o, got, 6);
	sg__fbuf_str(&o, "n=");
	sg__fbuf_u64(&o, 1234567);
	CHECK_STR(got, "n=123");
	CHECK(sg__fbuf_full(&o));
}

/* lib/common.c's clocks: a monotonic reading on the wall clock agrees with a
 * wall-clock read, and moves with its argument, whatever the order of calls. */
static void test_wall_at(void)
{
	uint64_t m = sg_now_us();
	int64_t w = sg_wall_us(), d = sg_wall_at_us(m) - w;
	CHECK(d > -100000 && d < 100000); /* (the two reads apart by scheduling at most) */
	/* one offset for readings within its second, before or after it was read */
	CHECK(sg_wall_at_us(m + 5000) - sg_wall_at_us(m) == 5000);
	CHECK(sg_wall_at_us(m) - sg_wall_at_us(m - 70000) == 70000);
	/* a reading past the offset's second reads the clocks again */
	int64_t later = sg_wall_at_us(m + 3000000);
	CHECK(later - w > 2900000 && later - w < 3100000);
	CHECK(sg_wall_at_us(m) - w > -100000 && sg_wall_at_us(m) - w < 100000);
}

int main(void)
{
	test_wall_at();
	test_decimal_writer();
	test_append_and_cap();
	test_huge_request_is_clean();
	test_printf_and_json();
	test_strerror();
	CHECK_DONE();
}
