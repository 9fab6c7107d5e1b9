/* A minimal test harness: CHECK() records failures and goes on; main()
 * ends with CHECK_DONE(), which prints "N passed, N failed". Call the
 * checks from one thread (workers report back; the counters are plain). */
#ifndef SEMGATE_TEST_CHECK_H
#define SEMGATE_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "semgate/common.h"

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

/* CHECK with a printf-style message naming the case when it fails. */
#define CHECK_MSG(cond, ...)                                                       \
	do {                                                                       \
		CHECK(cond);                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "  ");                                     \
			fprintf(stderr, __VA_ARGS__);                              \
			fprintf(stderr, "\n");                                     \
		}                                                                  \
	} while (0)

/* An SG_E* return code: the expression, its code and text when it differs. */
#define CHECK_RC(expr, want)                                                       \
	do {                                                                       \
		int rc_ = (expr);                                                  \
		CHECK_MSG(rc_ == (want), "%s = %d (%s), want %d", #expr, rc_,      \
		          sg_strerror(rc_), (want));                               \
	} while (0)

#define CHECK_STR(a, b) CHECK((a) != NULL && strcmp((a), (b)) == 0)
#define CHECK_CONTAINS(hay, needle) CHECK((hay) != NULL && strstr((hay), (needle)) != NULL)

#define CHECK_DONE()                                                               \
	do {                                                                       \
		printf("%d passed, %d failed\n", check_passed, check_failed);      \
		return check_failed ? 1 : 0;                                       \
	} while (0)

#endif
