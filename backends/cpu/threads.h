/* threads.h - a persistent thread pool for the CPU backend: the calling thread plus n-1
 * workers share one job at a time. A job is a set of tasks handed out through an atomic
 * counter, so whichever threads are running take them: a worker the OS has descheduled never
 * holds back a task it has not started (no idle tail on a busy machine). No allocation and no
 * locks on the hot path; workers spin briefly between jobs, then sleep. */
#ifndef PORTA_CPU_THREADS_H
#define PORTA_CPU_THREADS_H

#include <stddef.h>

/* A task: called once for every task index in [0, n). */
typedef void (*porta_job_fn)(void *arg, int task, int n);

struct porta_pool;

/* Starts n_threads - 1 workers (n_threads >= 1). 0 or PORTA_E_NOMEM. */
int porta_pool_create(int n_threads, struct porta_pool **out);
void porta_pool_destroy(struct porta_pool *p);              /* NULL ok; joins the workers */
int porta_pool_size(const struct porta_pool *p);
/* Runs fn(arg, i, n) once for each i in [0, n) with n = porta_pool_size(p), spread over the
 * pool's threads (the caller takes part), and returns when all have finished. Which thread
 * runs which i is not fixed: a task must not assume it runs on a particular thread (per-index
 * scratch is fine). Not reentrant: a task must not call porta_pool_run* itself. */
void porta_pool_run(struct porta_pool *p, porta_job_fn fn, void *arg);
/* Same with n_tasks tasks (n_tasks >= 0): fn(arg, i, n_tasks) for each i, any thread. */
void porta_pool_run_n(struct porta_pool *p, int n_tasks, porta_job_fn fn, void *arg);
/* Idle-time prefetch: from the next job started with porta_pool_run* on, whenever thread
 * `slot` has no task left in a job (a worker after it leaves the job, until the next one
 * starts; the caller while it waits for the workers), it prefetches [ptr, ptr + n) into its
 * L2 in short steps, going on where it stopped, until all of it is done. For data the thread
 * is likely to read first in a later job (a matrix multiplication's first rows), so that the
 * job starts warm instead of one memory latency after another, while memory would idle. Call
 * between jobs; kept until replaced (ptr NULL: nothing). Never faults: a prefetch of memory
 * freed meanwhile is harmless. */
void porta_pool_prefetch(struct porta_pool *p, int slot, const void *ptr, size_t n);
/* Inside a task: the running thread's slot in [0, porta_pool_size()) (0 is the thread that
 * called porta_pool_run*), for per-thread scratch when tasks outnumber threads. */
int porta_pool_slot(void);

/* Splits [0, n) into nth near-equal parts; part ith is [*lo, *hi). */
static inline void porta_split(long n, int ith, int nth, long *lo, long *hi)
{
    long per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}

#endif /* PORTA_CPU_THREADS_H */
