/* Unit tests: capped buffers. */
#include <stdlib.h>

#include "check.h"
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

int main(void)
{
	test_append_and_cap();
	test_huge_request_is_clean();
	test_printf_and_json();
	test_strerror();
	CHECK_DONE();
}
