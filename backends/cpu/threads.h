/* threads.h - a persistent thread pool for the CPU backend: the calling thread plus n-1
 * workers run one job at a time; workers spin briefly, then sleep, between jobs. No allocation
 * and no locks on the hot path while workers are spinning. */
#ifndef PORTA_CPU_THREADS_H
#define PORTA_CPU_THREADS_H

/* The job: called once on every thread with its index ith in [0, nth). */
typedef void (*porta_job_fn)(void *arg, int ith, int nth);

struct porta_pool;

/* Starts n_threads - 1 workers (n_threads >= 1). 0 or PORTA_E_NOMEM. */
int porta_pool_create(int n_threads, struct porta_pool **out);
void porta_pool_destroy(struct porta_pool *p);              /* NULL ok; joins the workers */
int porta_pool_size(const struct porta_pool *p);
/* Runs fn on every thread (the caller is thread 0) and returns when all have finished. */
void porta_pool_run(struct porta_pool *p, porta_job_fn fn, void *arg);

/* Splits [0, n) into nth near-equal parts; part ith is [*lo, *hi). */
static inline void porta_split(long n, int ith, int nth, long *lo, long *hi)
{
    long per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}

#endif /* PORTA_CPU_THREADS_H */
