/* threads.c - the CPU backend's persistent thread pool (see threads.h). A job is published
 * by bumping a generation counter; workers spin on it for a short while (decode issues a few
 * hundred small jobs per token, so sleeping between them would cost more than the work) and
 * fall back to a condition variable when idle. */
#include "threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "porta.h"

#define SPIN_ITERS 200000

struct porta_pool {
    int n;                          /* threads including the caller */
    pthread_t *th;
    atomic_uint gen;                /* bumped once per job */
    atomic_int pending;             /* workers still running the current job */
    atomic_int sleepers;
    atomic_bool stop;
    porta_job_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

struct worker_arg {
    struct porta_pool *p;
    int ith;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker(void *varg)
{
    struct worker_arg *wa = varg;
    struct porta_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0; /* the generation at creation: a job may be published before we get here */
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen)
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        seen = atomic_load(&p->gen);
        if (atomic_load(&p->stop))
            return NULL;
        p->fn(p->arg, ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

int porta_pool_create(int n_threads, struct porta_pool **out)
{
    *out = NULL;
    struct porta_pool *p = calloc(1, sizeof *p);
    if (!p)
        return PORTA_E_NOMEM;
    p->n = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->th = calloc((size_t)p->n, sizeof *p->th);
    if (!p->th)
        goto fail;
    for (int i = 1; i < p->n; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->p = p;
            wa->ith = i;
        }
        if (!wa || pthread_create(&p->th[i], NULL, worker, wa) != 0) {
            free(wa);
            porta_err("cpu: cannot start worker thread %d", i);
            p->n = i; /* join the workers that did start */
            porta_pool_destroy(p);
            return PORTA_E_NOMEM;
        }
    }
    *out = p;
    return 0;
fail:
    free(p->th);
    free(p);
    return PORTA_E_NOMEM;
}

void porta_pool_destroy(struct porta_pool *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->th);
    free(p);
}

int porta_pool_size(const struct porta_pool *p) { return p->n; }

void porta_pool_run(struct porta_pool *p, porta_job_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add(&p->gen, 1);           /* seq_cst: publishes fn/arg, orders vs sleepers */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
        cpu_relax();
}
