/* lib/hash.c's constant-time compare: equal and unequal buffers, and no
 * early exit (every byte is read whatever differs first). */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "check.h"
#include "semgate/hash.h"

static void test_equality(void)
{
	uint8_t a[64], b[64];
	for (int i = 0; i < 64; i++)
		a[i] = b[i] = (uint8_t)(i * 7 + 1);
	CHECK(sg_ct_equal(a, b, 64));
	CHECK(sg_ct_equal(a, b, 0));
	for (int i = 0; i < 64; i++) {
		b[i] ^= 0x80;
		CHECK_MSG(!sg_ct_equal(a, b, 64), "a difference at byte %d went unseen", i);
		b[i] ^= 0x80;
	}
	b[63] ^= 1;
	CHECK(sg_ct_equal(a, b, 63)); /* only n bytes count */
}

/*
 * No early exit: a's first byte differs from b's and sits at the end of a
 * readable page; its other bytes lie on a page that cannot be read. A
 * compare that stops at the first difference returns; one that reads every
 * byte faults. It runs in a child, which must die (a signal, or ASan's exit
 * on the fault).
 */
static void test_reads_every_byte(void)
{
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *map = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	                    -1, 0);
	CHECK(map != MAP_FAILED);
	if (map == MAP_FAILED)
		return;
	uint8_t *a = map + page - 1;
	a[0] = 'x';
	CHECK(mprotect(map + page, (size_t)page, PROT_NONE) == 0);
	static const uint8_t b[32] = "y0123456789012345678901234567890";

	pid_t pid = fork();
	if (pid == 0) {
		/* stderr off: a sanitizer's report of the expected fault is noise */
		int fd = open("/dev/null", 1);
		if (fd >= 0)
			dup2(fd, 2);
		int r = sg_ct_equal(a, b, sizeof(b));
		_exit(r == 0 ? 0 : 3); /* returned: it stopped at the first byte */
	}
	int status = 0;
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	int faulted = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
	                                      WEXITSTATUS(status) != 3);
	CHECK_MSG(faulted, "sg_ct_equal returned without reading the bytes after the first "
	                   "difference (exit %d, signal %d)",
	          WIFEXITED(status) ? WEXITSTATUS(status) : -1,
	          WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	munmap(map, (size_t)page * 2);
}

int main(void)
{
	test_equality();
	test_reads_every_byte();
	CHECK_DONE();
}
