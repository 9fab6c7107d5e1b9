/* A minimal test harness: CHECK() records failures and goes on; main()
 * ends with CHECK_DONE(), which prints "N passed, N failed". */
#ifndef SEMGATE_TEST_CHECK_H
#define SEMGATE_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                                \
	do {                                                                       \
		if (cond) {                                                        \
			check_passed++;                                            \
		} else {                                                           \
			check_failed++;                                            \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,     \
			        __LINE__, #cond);                                  \
		}                                                                  \
	} while (0)

#define CHECK_STR(a, b) CHECK((a) != NULL && strcmp((a), (b)) == 0)
#define CHECK_CONTAINS(hay, needle) CHECK((hay) != NULL && strstr((hay), (needle)) != NULL)

#define CHECK_DONE()                                                               \
	do {                                                                       \
		printf("%d passed, %d failed\n", check_passed, check_failed);      \
		return check_failed ? 1 : 0;                                       \
	} while (0)

#endif
