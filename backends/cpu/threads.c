/* threads.c - the CPU backend's persistent thread pool (see threads.h). One word of state
 * holds the job generation, a "closed" bit and the number of workers inside the job. A worker
 * joins the current job with a compare-and-swap on that word (so a late worker can never touch
 * a job that has ended), takes tasks from an atomic counter until none are left, and leaves.
 * The caller takes tasks too; when they are all taken it waits only for workers still inside,
 * then closes the job. Decode issues a few hundred jobs per token, so workers spin for a while
 * between jobs and only then sleep on a condition variable. Each thread may have memory to
 * prefetch whenever it has nothing left to do (porta_pool_prefetch): the time it waits for the
 * others, or for the caller's serial work between jobs, then loads what it reads first in the
 * next job. */
#include "threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "porta.h"

#define ACTIVE_MASK 0x7FFFull         /* workers inside the current job */
#define CLOSED      0x8000ull         /* the job has ended: nobody may join */
#define GEN_SHIFT   16
#define SPIN_NS     300000            /* a worker spins this long for the next job, then sleeps */
#define YIELD_AFTER 2000              /* the caller's wait: pause loops before sched_yield() */
#define PF_STEP     4096              /* idle prefetch: bytes between looks at the state word */

struct pf_range {
    const char *p;
    size_t n;
    size_t done;                    /* bytes prefetched so far (the thread's own copy only) */
};

struct porta_pool {
    int n;                          /* threads including the caller */
    pthread_t *th;
    _Atomic uint64_t state;         /* gen << 16 | CLOSED | active */
    uint64_t gen;                   /* the caller's copy of the current generation */
    /* the current job: written by the caller before the state word publishes it */
    porta_job_fn fn;
    void *arg;
    int n_tasks;
    atomic_int next;                /* next task index to take */
    struct pf_range *pf;            /* per slot: what to prefetch when out of tasks, kept until
                                     * replaced (written by the caller between jobs only) */
    struct pf_range caller_pf;      /* the caller's progress on pf[0] */
    atomic_int sleepers;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

struct worker_arg {
    struct porta_pool *p;
    int slot;
};

static _Thread_local int t_slot;

int porta_pool_slot(void) { return t_slot; }

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Takes tasks of the job published in p until none are left. */
static void take_tasks(struct porta_pool *p, porta_job_fn fn, void *arg, int n)
{
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= n)
            return;
        fn(arg, i, n);
    }
}

/* A thread's copy *mine of its range: set to `set` unless that is the range it already has
 * (then its progress stays). */
static void pf_take(struct pf_range *mine, struct pf_range set)
{
    if (mine->p != set.p || mine->n != set.n)
        *mine = (struct pf_range){ set.p, set.n, 0 };
}

/* Prefetches the next PF_STEP bytes of r into L2; false when all of it is done. */
static bool pf_step(struct pf_range *r)
{
    if (r->done >= r->n)
        return false;
    size_t end = r->n - r->done > PF_STEP ? r->done + PF_STEP : r->n;
    for (size_t o = r->done; o < end; o += 64)
        __builtin_prefetch(r->p + o, 0, 2);
    r->done = end;
    return true;
}

/* Waits until the state's generation differs from `seen` (or the pool stops): spins for
 * SPIN_NS, then sleeps. */
static void wait_job(struct porta_pool *p, uint64_t seen)
{
    uint64_t t0 = 0;
    for (unsigned spins = 0;; spins++) {
        if (atomic_load_explicit(&p->state, memory_order_acquire) >> GEN_SHIFT != seen)
            return;
        cpu_relax();
        if ((spins & 255) != 255)
            continue;
        uint64_t t = now_ns();
        if (!t0)
            t0 = t;
        else if (t - t0 > SPIN_NS)
            break;
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(&p->state) >> GEN_SHIFT == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
}

static void *worker(void *varg)
{
    struct worker_arg *wa = varg;
    struct porta_pool *p = wa->p;
    t_slot = wa->slot;
    int slot = wa->slot;
    free(wa);
    struct pf_range pf = { 0 };     /* this worker's idle prefetch and its progress */
    uint64_t seen = 0;              /* generation of the last job this worker is done with */
    for (;;) {
        wait_job(p, seen);
        if (atomic_load(&p->stop))
            return NULL;
        uint64_t s = atomic_load(&p->state);
        if (s & CLOSED) {           /* ended before we got here: wait for the next one */
            seen = s >> GEN_SHIFT;
            continue;
        }
        if (!atomic_compare_exchange_weak(&p->state, &s, s + 1))
            continue;               /* the state moved on: look again */
        seen = s >> GEN_SHIFT;
        take_tasks(p, p->fn, p->arg, p->n_tasks);
        pf_take(&pf, p->pf[slot]);       /* read while inside: the caller may rewrite it */
        atomic_fetch_sub_explicit(&p->state, 1, memory_order_release);
        /* out of tasks: prefetch until the next job starts */
        while (atomic_load_explicit(&p->state, memory_order_relaxed) >> GEN_SHIFT == seen &&
               pf_step(&pf))
            ;
    }
}

int porta_pool_create(int n_threads, struct porta_pool **out)
{
    *out = NULL;
    struct porta_pool *p = calloc(1, sizeof *p);
    if (!p)
        return PORTA_E_NOMEM;
    p->n = n_threads < 1 ? 1 : n_threads > (int)ACTIVE_MASK ? (int)ACTIVE_MASK : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->state, CLOSED);
    p->th = calloc((size_t)p->n, sizeof *p->th);
    p->pf = calloc((size_t)p->n, sizeof *p->pf);
    if (!p->th || !p->pf)
        goto fail;
    for (int i = 1; i < p->n; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->p = p;
            wa->slot = i;
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
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->th);
    free(p->pf);
    free(p);
    return PORTA_E_NOMEM;
}

void porta_pool_destroy(struct porta_pool *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->state, ++p->gen << GEN_SHIFT | CLOSED);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->th);
    free(p->pf);
    free(p);
}

int porta_pool_size(const struct porta_pool *p) { return p->n; }

void porta_pool_prefetch(struct porta_pool *p, int slot, const void *ptr, size_t n)
{
    if (slot >= 0 && slot < p->n)
        p->pf[slot] = (struct pf_range){ ptr, ptr ? n : 0, 0 };
}

void porta_pool_run_n(struct porta_pool *p, int n_tasks, porta_job_fn fn, void *arg)
{
    t_slot = 0;
    if (n_tasks <= 0)
        return;
    if (p->n == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++)
            fn(arg, i, n_tasks);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    uint64_t g = ++p->gen;
    atomic_store(&p->state, g << GEN_SHIFT);        /* seq_cst: publishes the job, then ... */
    if (atomic_load(&p->sleepers) > 0) {            /* ... orders against a worker going to sleep */
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    take_tasks(p, fn, arg, n_tasks);
    /* every task is taken; close the job once the workers inside it have left, prefetching
     * this thread's part of the next job meanwhile */
    uint64_t open = g << GEN_SHIFT;
    pf_take(&p->caller_pf, p->pf[0]);
    for (unsigned spins = 0;; spins++) {
        uint64_t expect = open;
        if (atomic_compare_exchange_weak(&p->state, &expect, open | CLOSED))
            break;
        if (pf_step(&p->caller_pf))
            continue;
        if (spins < YIELD_AFTER)
            cpu_relax();
        else
            sched_yield();      /* a worker inside may be waiting for this core */
    }
}

void porta_pool_run(struct porta_pool *p, porta_job_fn fn, void *arg)
{
    porta_pool_run_n(p, p->n, fn, arg);
}
