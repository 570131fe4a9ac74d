/* metrics.c - the server's counters and gauges (requests by status, prompt and generated
 * tokens, queue length, active slots, tokens/s, time to first token) in Prometheus' text
 * exposition format for GET /metrics. */
#include <string.h>

#include "server.h"

enum { C_2XX, C_4XX, C_5XX, C_BUSY, C_N };
static const char *const class_names[C_N] = { "2xx", "4xx", "5xx", "503_busy" };
static const double ttft_le[SRV_TTFT_BUCKETS] = { 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60 };
#define TPS_WINDOW 1.0 /* seconds over which tokens/s is measured */

void srv_metrics_init(struct srv_metrics *mt, int slots)
{
    memset(mt, 0, sizeof *mt);
    pthread_mutex_init(&mt->mu, NULL);
    mt->slots_total = slots;
    mt->tps_t0 = porta_time_s();
}

void srv_metrics_deinit(struct srv_metrics *mt)
{
    pthread_mutex_destroy(&mt->mu);
}

void srv_metrics_status(struct srv_metrics *mt, int status)
{
    int c = status == 503 ? C_BUSY : status >= 500 ? C_5XX : status >= 400 ? C_4XX : C_2XX;
    pthread_mutex_lock(&mt->mu);
    mt->requests[c]++;
    pthread_mutex_unlock(&mt->mu);
}

void srv_metrics_ttft(struct srv_metrics *mt, double s)
{
    pthread_mutex_lock(&mt->mu);
    mt->ttft_count++;
    mt->ttft_sum += s;
    for (int i = 0; i < SRV_TTFT_BUCKETS; i++)
        if (s <= ttft_le[i])
            mt->ttft_bucket[i]++;
    pthread_mutex_unlock(&mt->mu);
}

void srv_metrics_gen(struct srv_metrics *mt, int n_gen)
{
    pthread_mutex_lock(&mt->mu);
    mt->gen_tokens += (unsigned long long)n_gen;
    pthread_mutex_unlock(&mt->mu);
}

void srv_metrics_step(struct srv_metrics *mt, int n_prompt, int queue_len, int active)
{
    double now = porta_time_s();
    pthread_mutex_lock(&mt->mu);
    mt->prompt_tokens += (unsigned long long)n_prompt;
    mt->queue_len = queue_len;
    mt->slots_active = active;
    mt->steps++;
    if (now - mt->tps_t0 >= TPS_WINDOW) {
        mt->tps = (double)(mt->gen_tokens - mt->tps_n0) / (now - mt->tps_t0);
        mt->tps_t0 = now;
        mt->tps_n0 = mt->gen_tokens;
    }
    pthread_mutex_unlock(&mt->mu);
}

int srv_metrics_text(struct srv_metrics *mt, bool ready, struct srv_buf *o)
{
    int rc = 0;
    pthread_mutex_lock(&mt->mu);
    /* an idle server has generated nothing lately */
    double tps = porta_time_s() - mt->tps_t0 > 2 * TPS_WINDOW ? 0.0 : mt->tps;
    rc |= srv_buf_puts(o, "# HELP porta_ready 1 once the model is loaded.\n"
                          "# TYPE porta_ready gauge\n");
    rc |= srv_buf_printf(o, "porta_ready %d\n", ready ? 1 : 0);
    rc |= srv_buf_puts(o, "# HELP porta_requests_total HTTP requests answered, by status class.\n"
                          "# TYPE porta_requests_total counter\n");
    for (int c = 0; c < C_N; c++)
        rc |= srv_buf_printf(o, "porta_requests_total{status=\"%s\"} %llu\n", class_names[c],
                             mt->requests[c]);
    rc |= srv_buf_printf(o,
                         "# HELP porta_prompt_tokens_total Prompt tokens prefilled.\n"
                         "# TYPE porta_prompt_tokens_total counter\n"
                         "porta_prompt_tokens_total %llu\n"
                         "# HELP porta_generation_tokens_total Tokens generated.\n"
                         "# TYPE porta_generation_tokens_total counter\n"
                         "porta_generation_tokens_total %llu\n"
                         "# HELP porta_queue_length Requests waiting for a slot.\n"
                         "# TYPE porta_queue_length gauge\n"
                         "porta_queue_length %d\n"
                         "# HELP porta_slots_active Slots generating or prefilling.\n"
                         "# TYPE porta_slots_active gauge\n"
                         "porta_slots_active %d\n"
                         "# HELP porta_slots_total Slots (parallel sequences).\n"
                         "# TYPE porta_slots_total gauge\n"
                         "porta_slots_total %d\n"
                         "# HELP porta_tokens_per_second Generated tokens per second, all slots.\n"
                         "# TYPE porta_tokens_per_second gauge\n"
                         "porta_tokens_per_second %.3f\n"
                         "# HELP porta_steps_total Forward passes run by the scheduler.\n"
                         "# TYPE porta_steps_total counter\n"
                         "porta_steps_total %llu\n",
                         mt->prompt_tokens, mt->gen_tokens, mt->queue_len, mt->slots_active,
                         mt->slots_total, tps, mt->steps);
    rc |= srv_buf_puts(o, "# HELP porta_time_to_first_token_seconds From arrival to the first "
                          "generated token.\n"
                          "# TYPE porta_time_to_first_token_seconds histogram\n");
    for (int i = 0; i < SRV_TTFT_BUCKETS; i++)
        rc |= srv_buf_printf(o, "porta_time_to_first_token_seconds_bucket{le=\"%g\"} %llu\n",
                             ttft_le[i], mt->ttft_bucket[i]);
    rc |= srv_buf_printf(o,
                         "porta_time_to_first_token_seconds_bucket{le=\"+Inf\"} %llu\n"
                         "porta_time_to_first_token_seconds_sum %.6f\n"
                         "porta_time_to_first_token_seconds_count %llu\n",
                         mt->ttft_count, mt->ttft_sum, mt->ttft_count);
    pthread_mutex_unlock(&mt->mu);
    return rc ? PORTA_E_NOMEM : 0;
}
