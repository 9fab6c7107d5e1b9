/* The `model` embedder: a BERT-family encoder (cache/encoder.c) run by a small
 * pool of embedding threads, off the event loop.
 *
 * Requests arriving together are embedded as one batch: a thread that wakes
 * for a text waits up to batch_wait_us for more (or until max_batch are
 * queued) and then runs them through one forward pass, whose matrix products
 * are then a few large sgemm calls instead of many small ones.
 *
 * Flow and ownership. sg_embed_start() copies the text into a job, links it
 * at the tail of the queue and returns SG_EMBED_PENDING; a full queue
 * (queue_max) returns SG_EFULL and the caller skips the semantic lookup.
 * A worker moves up to max_batch jobs from the queue into its batch, embeds
 * them without the lock, then moves them to the done list and wakes the loop
 * (uv_async). On the loop, the done list is drained: each job still attached
 * to a request copies its vector into req->out and calls req->cb. A loop timer
 * gives up on jobs still queued after timeout_ms (SG_ETIMEDOUT): a burst never
 * makes a request wait on the embedder for longer than that.
 *
 * A job's state moves QUEUED -> RUNNING -> DONE, or QUEUED -> (freed) when
 * cancelled or timed out while queued. Cancelling a RUNNING or DONE job only
 * detaches it from its request (job->req = NULL); the worker's or the loop's
 * completion then frees it without a callback. All of this is under `lock`;
 * requests themselves are touched only on the loop thread.
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "semgate/config.h"
#include "semgate/embed.h"
#include "semgate/log.h"
#include "semgate/encoder.h"
#include "embed_int.h"

/* OpenBLAS's own knob (cblas.h of libopenblas-dev declares it; declared here
 * to keep cblas.h out of this file). */
void openblas_set_num_threads(int num_threads);

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_STATE_LAST };

typedef struct job {
	struct job *prev, *next;   /* in the queue or the done list */
	sg_embed_req_t *req;       /* NULL once cancelled */
	enum job_state state;
	int status;                /* 0 or SG_E* when DONE */
	uint64_t deadline_us;      /* given up if still queued then */
	size_t len;
	char *text;                /* owned copy */
	float vec[];               /* dim floats */
} job_t;

typedef struct list {
	job_t *head, *tail;
	size_t n;
} list_t;

typedef struct model_embedder {
	sg_embedder_t base;
	sg_encoder_t *model;
	uv_loop_t *loop;
	uv_async_t wake;          /* workers -> loop: the done list has jobs */
	uv_timer_t sweep;         /* gives up on jobs queued too long */
	int handles_open;
	int nthreads, max_batch, queue_max;
	uint64_t batch_wait_us, timeout_us;
	pthread_t *threads;
	int nstarted;

	pthread_mutex_t lock;     /* everything below */
	pthread_cond_t work;      /* the queue got a job, or stopping */
	list_t queue, done;
	int stopping;
	sg_embed_stats_t st;
} model_embedder_t;

static void job_set_state(job_t *j, enum job_state s)
{
	static const unsigned char legal[JOB_STATE_LAST] = {
		[JOB_QUEUED] = 1u << JOB_RUNNING,
		[JOB_RUNNING] = 1u << JOB_DONE,
		[JOB_DONE] = 0,
	};
	assert(legal[j->state] & (1u << s));
	(void)legal;
	j->state = s;
}

static void list_push(list_t *l, job_t *j)
{
	j->next = NULL;
	j->prev = l->tail;
	if (l->tail)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
	l->n++;
}

static void list_unlink(list_t *l, job_t *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		l->head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		l->tail = j->prev;
	j->prev = j->next = NULL;
	l->n--;
}

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void job_free(job_t *j)
{
	if (j) {
		free(j->text);
		free(j);
	}
}

/* --- the workers ------------------------------------------------------------ */

static void *worker(void *arg)
{
	model_embedder_t *me = arg;
	int dim = me->base.dim;
	sg_encoder_ws_t *ws = sg_encoder_ws_new(me->model, me->max_batch);
	job_t **batch = calloc((size_t)me->max_batch, sizeof(*batch));
	const char **texts = calloc((size_t)me->max_batch, sizeof(*texts));
	size_t *lens = calloc((size_t)me->max_batch, sizeof(*lens));
	float *out = malloc(sizeof(float) * (size_t)dim * (size_t)me->max_batch);
	int ok = ws && batch && texts && lens && out;

	if (!ok)
		sg_log_error("model embedder: a thread could not get its memory: it stops");
	pthread_mutex_lock(&me->lock);
	while (ok) {
		while (!me->stopping && me->queue.n == 0)
			pthread_cond_wait(&me->work, &me->lock);
		if (me->stopping)
			break;
		/* Wait a moment for the batch to fill: requests that arrive
		 * together share one forward pass. */
		if (me->batch_wait_us && me->queue.n < (size_t)me->max_batch) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			uint64_t ns = (uint64_t)until.tv_nsec + me->batch_wait_us * 1000u;
			until.tv_sec += (time_t)(ns / 1000000000u);
			until.tv_nsec = (long)(ns % 1000000000u);
			while (!me->stopping && me->queue.n > 0 && me->queue.n < (size_t)me->max_batch &&
			       pthread_cond_timedwait(&me->work, &me->lock, &until) == 0)
				;
			if (me->stopping)
				break;
		}
		int n = 0;
		while (n < me->max_batch && me->queue.head) {
			job_t *j = me->queue.head;
			list_unlink(&me->queue, j);
			job_set_state(j, JOB_RUNNING);
			batch[n] = j;
			texts[n] = j->text;
			lens[n] = j->len;
			n++;
		}
		me->st.queue_depth = me->queue.n;
		if (n == 0)
			continue;
		pthread_mutex_unlock(&me->lock);

		uint64_t t0 = mono_us();
		int rc = sg_encoder_embed(me->model, ws, texts, lens, n, out);
		uint64_t took = mono_us() - t0;

		pthread_mutex_lock(&me->lock);
		for (int i = 0; i < n; i++) {
			job_t *j = batch[i];
			j->status = rc;
			if (rc == 0)
				memcpy(j->vec, out + (size_t)i * dim, sizeof(float) * (size_t)dim);
			job_set_state(j, JOB_DONE);
			list_push(&me->done, j);
		}
		me->st.batches++;
		me->st.busy_us += took;
		if (rc == 0)
			me->st.embedded += (uint64_t)n;
		else
			me->st.failures += (uint64_t)n;
		uv_async_send(&me->wake);
	}
	pthread_mutex_unlock(&me->lock);
	sg_encoder_ws_free(ws);
	free(batch);
	free(texts);
	free(lens);
	free(out);
	return NULL;
}

/* --- the loop side ---------------------------------------------------------- */

static void on_wake(uv_async_t *a)
{
	model_embedder_t *me = a->data;
	list_t done;

	pthread_mutex_lock(&me->lock);
	done = me->done;
	memset(&me->done, 0, sizeof(me->done));
	pthread_mutex_unlock(&me->lock);
	/* A callback may cancel a later job of this list: cancel then finds it
	 * DONE and detaches it (job->req = NULL), under the lock. */
	for (job_t *j = done.head, *next; j; j = next) {
		pthread_mutex_lock(&me->lock);
		next = j->next;
		sg_embed_req_t *req = j->req;
		if (req)
			req->impl = NULL;
		pthread_mutex_unlock(&me->lock);
		if (req) {
			if (j->status == 0)
				memcpy(req->out, j->vec, sizeof(float) * (size_t)me->base.dim);
			req->cb(req, j->status);
		}
		job_free(j);
	}
}

/* Jobs queued past their deadline get SG_ETIMEDOUT. */
static void on_sweep(uv_timer_t *t)
{
	model_embedder_t *me = t->data;
	uint64_t now = mono_us();
	list_t expired = {0};

	pthread_mutex_lock(&me->lock);
	for (job_t *j = me->queue.head, *next; j; j = next) {
		next = j->next;
		if (j->deadline_us > now)
			break; /* queued in deadline order */
		list_unlink(&me->queue, j);
		list_push(&expired, j);
		me->st.timeouts++;
	}
	me->st.queue_depth = me->queue.n;
	int idle = me->queue.n == 0;
	for (job_t *j = expired.head; j; j = j->next)
		if (j->req)
			j->req->impl = NULL;
	pthread_mutex_unlock(&me->lock);
	if (idle)
		uv_timer_stop(t);
	for (job_t *j = expired.head, *next; j; j = next) {
		next = j->next;
		sg_log_debug("model embedder: a text waited more than %llu ms: no semantic lookup",
		             (unsigned long long)(me->timeout_us / 1000));
		if (j->req)
			j->req->cb(j->req, SG_ETIMEDOUT);
		job_free(j);
	}
}

static int me_start(sg_embedder_t *e, sg_embed_req_t *req, const char *text, size_t len)
{
	model_embedder_t *me = (model_embedder_t *)e;
	job_t *j;

	if (!me->handles_open)
		return SG_ECANCELED;
	j = malloc(sizeof(*j) + sizeof(float) * (size_t)e->dim);
	if (j == NULL)
		return SG_ENOMEM;
	memset(j, 0, sizeof(*j));
	j->text = malloc(len + 1);
	if (j->text == NULL) {
		free(j);
		return SG_ENOMEM;
	}
	if (len)
		memcpy(j->text, text, len);
	j->text[len] = '\0';
	j->len = len;
	j->deadline_us = mono_us() + me->timeout_us;

	pthread_mutex_lock(&me->lock);
	if (me->queue.n >= (size_t)me->queue_max) {
		me->st.queue_full++;
		pthread_mutex_unlock(&me->lock);
		job_free(j);
		return SG_EFULL;
	}
	j->req = req;
	req->impl = j;
	list_push(&me->queue, j);
	me->st.queue_depth = me->queue.n;
	if (me->queue.n > me->st.queue_max)
		me->st.queue_max = me->queue.n;
	pthread_cond_signal(&me->work);
	pthread_mutex_unlock(&me->lock);
	if (!uv_is_active((uv_handle_t *)&me->sweep)) {
		uint64_t every = me->timeout_us / 4000;
		uv_timer_start(&me->sweep, on_sweep, every ? every : 1, every ? every : 1);
	}
	return SG_EMBED_PENDING;
}

static void me_cancel(sg_embedder_t *e, sg_embed_req_t *req)
{
	model_embedder_t *me = (model_embedder_t *)e;
	job_t *free_now = NULL;

	pthread_mutex_lock(&me->lock);
	job_t *j = req->impl;
	if (j) {
		if (j->state == JOB_QUEUED) {
			list_unlink(&me->queue, j);
			me->st.queue_depth = me->queue.n;
			free_now = j;
		} else {
			j->req = NULL; /* the worker or on_wake frees it */
		}
		req->impl = NULL;
	}
	pthread_mutex_unlock(&me->lock);
	job_free(free_now);
}

static void me_stats(const sg_embedder_t *e, sg_embed_stats_t *out)
{
	model_embedder_t *me = (model_embedder_t *)e;
	pthread_mutex_lock(&me->lock);
	*out = me->st;
	pthread_mutex_unlock(&me->lock);
}

static void stop_threads(model_embedder_t *me)
{
	pthread_mutex_lock(&me->lock);
	me->stopping = 1;
	pthread_cond_broadcast(&me->work);
	pthread_mutex_unlock(&me->lock);
	for (int i = 0; i < me->nstarted; i++)
		pthread_join(me->threads[i], NULL);
	me->nstarted = 0;
	/* Nothing runs any more: drop what is left, without callbacks. */
	for (list_t *l = &me->queue; l; l = l == &me->queue ? &me->done : NULL)
		while (l->head) {
			job_t *j = l->head;
			list_unlink(l, j);
			if (j->req)
				j->req->impl = NULL;
			job_free(j);
		}
}

static void me_close(sg_embedder_t *e)
{
	model_embedder_t *me = (model_embedder_t *)e;
	stop_threads(me);
	if (me->handles_open) {
		uv_close((uv_handle_t *)&me->wake, NULL);
		uv_close((uv_handle_t *)&me->sweep, NULL);
		me->handles_open = 0;
	}
}

static void me_free(sg_embedder_t *e)
{
	model_embedder_t *me = (model_embedder_t *)e;
	stop_threads(me);
	assert(!me->handles_open); /* sg_embed_close() first */
	pthread_mutex_destroy(&me->lock);
	pthread_cond_destroy(&me->work);
	free(me->threads);
	sg_encoder_free(me->model);
	free(me);
}

static const sg_embedder_ops_t model_ops = {
	"model", me_start, me_cancel, me_stats, me_close, me_free,
};

/* How many threads: by default one per core but one, which the loop keeps
 * (at least one); OpenBLAS gets the cores left over per thread, so the two
 * never ask for more threads than there are cores. */
static void fit_threads(const sg_embedder_config_t *cfg, int *threads, int *blas)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	if (cores < 1)
		cores = 1;
	*threads = cfg->threads > 0 ? (int)cfg->threads : (int)SG_MAX(1, cores - 1);
	*blas = cfg->blas_threads > 0 ? (int)cfg->blas_threads
	                              : (int)SG_MAX(1, (cores - 1) / *threads);
}

int sg__embed_model_new(sg_embedder_t **out, uv_loop_t *loop, const sg_embedder_config_t *cfg,
                        const char *dir, char *err, size_t errlen)
{
	model_embedder_t *me = calloc(1, sizeof(*me));
	sg_encoder_opts_t mo = {(int)cfg->max_tokens, cfg->prefix, 0};
	int rc, blas;

	*out = NULL;
	if (me == NULL)
		return SG_ENOMEM;
	pthread_mutex_init(&me->lock, NULL);
	pthread_cond_init(&me->work, NULL);
	if ((rc = sg_encoder_load(&me->model, dir, &mo, err, errlen)))
		goto fail;
	me->base.ops = &model_ops;
	me->base.dim = sg_encoder_dim(me->model);
	snprintf(me->base.id, sizeof(me->base.id), "%s", sg_encoder_id(me->model));
	me->loop = loop;
	me->max_batch = (int)cfg->max_batch;
	me->queue_max = (int)cfg->queue_max;
	me->batch_wait_us = (uint64_t)cfg->batch_wait_us;
	me->timeout_us = (uint64_t)cfg->timeout_ms * 1000u;
	fit_threads(cfg, &me->nthreads, &blas);
	openblas_set_num_threads(blas);
	snprintf(me->base.describe, sizeof(me->base.describe),
	         "model %s; %d thread%s x %d OpenBLAS (%s), batches of %d",
	         sg_encoder_describe(me->model), me->nthreads, me->nthreads == 1 ? "" : "s", blas,
	         sg_encoder_blas_core(), me->max_batch);

	if (uv_async_init(loop, &me->wake, on_wake) != 0 || uv_timer_init(loop, &me->sweep) != 0) {
		snprintf(err, errlen, "model embedder: cannot create its loop handles");
		rc = SG_ENOMEM;
		goto fail; /* (cannot happen on a working loop; handles not closed) */
	}
	me->wake.data = me->sweep.data = me;
	me->handles_open = 1;
	/* They serve requests, which keep the loop alive themselves: the loop
	 * may end (a drained server) while these are open. */
	uv_unref((uv_handle_t *)&me->wake);
	uv_unref((uv_handle_t *)&me->sweep);
	me->threads = calloc((size_t)me->nthreads, sizeof(*me->threads));
	if (me->threads == NULL) {
		rc = SG_ENOMEM;
		goto fail_handles;
	}
	for (; me->nstarted < me->nthreads; me->nstarted++)
		if (pthread_create(&me->threads[me->nstarted], NULL, worker, me) != 0) {
			snprintf(err, errlen, "model embedder: cannot start thread %d", me->nstarted + 1);
			rc = SG_ENOMEM;
			goto fail_handles;
		}
	*out = &me->base;
	return 0;
fail_handles:
	me_close(&me->base);
	uv_run(loop, UV_RUN_NOWAIT); /* the close callbacks */
fail:
	me->handles_open = 0;
	me_free(&me->base);
	return rc;
}
