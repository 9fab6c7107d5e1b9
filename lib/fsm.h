/*
 * State machines: one enum per machine, one setter per machine, and this
 * check inside every setter. A machine lists its states' names and, for each
 * state, the states it may move to (a bit mask); the check asserts that a
 * move is one of them and, in debug builds, traces it (log level debug).
 * Nobody writes a machine's state field except its setter.
 */
#ifndef SEMGATE_FSM_H
#define SEMGATE_FSM_H

#include <assert.h>
#include <stdint.h>

#include "semgate/log.h"

typedef struct sg_fsm {
	const char *what;          /* "connection", "request", ... (for the trace) */
	const char *const *names;  /* by state */
	const uint32_t *next;      /* next[s]: bit t set when s -> t is legal */
	int n;                     /* states */
} sg_fsm_t;

#define SG_FSM_TO(s) (1u << (s))

static inline void sg_fsm_move(const sg_fsm_t *m, const void *obj, int from, int to)
{
	assert(from >= 0 && from < m->n && to >= 0 && to < m->n);
	assert(((m->next[from] >> to) & 1u) && "illegal state transition");
#ifndef NDEBUG
	sg_log_debug("%s %p: %s -> %s", m->what, obj, m->names[from], m->names[to]);
#else
	(void)obj;
#endif
}

#endif
