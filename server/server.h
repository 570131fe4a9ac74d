/* server.h - `porta serve`: an OpenAI-compatible HTTP server (libmicrohttpd + cJSON) in front
 * of one model. The public part is porta_server_*; the srv_* part is the interface between the
 * server's own files: buf.c (byte buffers), params.c (request JSON -> srv_req), respond.c
 * (srv_req -> response JSON / SSE), sched.c (slots, queue, continuous batching), metrics.c,
 * http.c (routing, auth, limits, streaming) and page.c (the embedded chat page). */
#ifndef PORTA_SERVER_H
#define PORTA_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "config.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

/* ---- public ------------------------------------------------------------------------ */

struct porta_server;

/* Starts listening on cfg->server.host:port (the config is copied). Until
 * porta_server_attach(), /health answers 503 and generation endpoints 503. Returns 0,
 * PORTA_E_CONFIG (the host does not resolve), PORTA_E_IO (the port cannot be bound; logged)
 * or PORTA_E_NOMEM. */
int porta_server_create(const struct porta_config *cfg, struct porta_server **out);

/* Hands the loaded model to the server and starts the scheduler thread: from then on the
 * server is ready. m, c and tok are borrowed (they must outlive the server); c must have been
 * made with n_seq >= cfg->server.slots. Returns 0, PORTA_E_INVAL or PORTA_E_NOMEM. */
int porta_server_attach(struct porta_server *s, struct porta_model *m, struct porta_ctx *c,
                        const struct porta_tokenizer *tok, enum porta_chat_tmpl tmpl);

/* Stops accepting, ends every request (streams get their end), joins every thread. NULL ok. */
void porta_server_destroy(struct porta_server *s);

/* The port actually bound (useful with port 0 in tests). */
int porta_server_port(const struct porta_server *s);

/* ---- buf.c: growable byte buffers ---------------------------------------------------- */

struct srv_buf {
    char *p;          /* always NUL-terminated once anything was added; NULL when empty */
    size_t n, cap;
};

int srv_buf_add(struct srv_buf *b, const void *s, size_t n);           /* 0 / PORTA_E_NOMEM */
int srv_buf_puts(struct srv_buf *b, const char *s);
int srv_buf_printf(struct srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_buf_free(struct srv_buf *b);
/* Appends s[0..n) with every byte sequence that is not valid UTF-8 replaced by U+FFFD. */
int srv_buf_add_utf8(struct srv_buf *b, const char *s, size_t n);
/* True when a[0..na) equals b[0..nb); the time taken depends only on na and nb. */
bool srv_ct_equal(const char *a, size_t na, const char *b, size_t nb);

/* ---- the model the server runs -------------------------------------------------------- */

struct srv_engine {
    struct porta_model *m;
    struct porta_ctx *c;
    const struct porta_tokenizer *tok;
    enum porta_chat_tmpl tmpl;
    char bos_text[128], eos_text[128]; /* for the chat template */
    int32_t *eog;                      /* every end-of-generation id (min_tokens, beams) */
    int n_eog;
    int n_vocab, n_ctx, n_batch, n_slots;
};

/* ---- requests (params.c builds, sched.c fills, respond.c / http.c read) ---------------- */

enum srv_kind { SRV_CHAT, SRV_COMPLETION };

/* An error answer: HTTP status and OpenAI's error object. */
struct srv_error {
    int status;                 /* 400, 401, 404, 413, 500, 503, ... */
    const char *type;           /* "invalid_request_error", "server_error", ... */
    const char *code;           /* NULL or e.g. "model_not_found" */
    char param[64];             /* "" = null */
    char message[384];
};

void srv_error_set(struct srv_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct srv_logprob {
    int32_t id;
    float lp;
    int n_top;
    int32_t top_ids[PORTA_SAMPLER_MAX_TOP_LOGPROBS];
    float top_lps[PORTA_SAMPLER_MAX_TOP_LOGPROBS];
};

/* One generated sequence. Written by the scheduler, read by the HTTP side, under req->mu. */
struct srv_choice {
    struct srv_buf content, reasoning;  /* everything generated so far */
    struct srv_logprob *lp;              /* one per generated token when logprobs were asked */
    int n_lp, cap_lp;
    int n_gen;                           /* tokens generated */
    const char *finish;                  /* NULL while generating: "stop", "length" */
    /* HTTP side cursors (streaming) */
    size_t sent_content, sent_reasoning;
    int sent_lp;
    bool sent_role, sent_finish;
};

struct srv_req {
    /* ---- set by srv_parse, read-only afterwards ---- */
    enum srv_kind kind;
    char id[48];
    long long created;
    int32_t *prompt;
    int n_prompt;
    struct porta_sampler_params sp;      /* points at bias_ids / bias_vals; seed of choice 0 */
    int32_t *bias_ids;
    float *bias_vals;
    char **stops;
    int n_stops;
    int max_tokens;                      /* >= 1, already clipped to the context */
    int n;                               /* choices */
    int num_beams;                       /* 1 = no beam search */
    float length_penalty;
    bool ignore_eos, stream, include_usage;
    bool logprobs;                       /* report log-probabilities */
    int top_logprobs;
    bool think, think_start;             /* split <think>; generation starts inside it */
    double t_arrive;
    /* ---- shared, under mu ---- */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct srv_choice *ch;               /* n */
    int n_finished;                      /* choices with finish set */
    bool failed;                         /* the engine failed: answer 500 with err */
    char err[256];
    double t_first;                      /* first token time (0 = none yet) */
    int refs;
    atomic_bool cancel;                  /* the client went away or the server stops */
};

/* Parses and validates a request body for `kind` (see params.c for every rule): renders the
 * chat template, tokenizes, checks every limit. Returns 0 and *out (refs 1; release with
 * srv_req_unref), or fills *err and returns its status as a negative PORTA_E_* code. */
int srv_parse(const struct srv_engine *e, const struct porta_config *cfg, const char *alias,
              enum srv_kind kind, const char *body, size_t len, struct srv_req **out,
              struct srv_error *err);
void srv_req_ref(struct srv_req *r);
void srv_req_unref(struct srv_req *r);                                 /* NULL ok */
/* True once every choice finished (call with r->mu held). */
static inline bool srv_req_done(const struct srv_req *r)
{
    return r->failed || r->n_finished >= r->n;
}

/* ---- respond.c: JSON out -------------------------------------------------------------- */

/* All return a malloc'd NUL-terminated string (caller frees) or NULL when out of memory. */
char *srv_json_error(const struct srv_error *e);
char *srv_json_models(const char *alias, long long created);
char *srv_json_model(const char *alias, long long created);
/* The complete (non-streamed) answer; call with r->mu held and srv_req_done(r). */
char *srv_json_final(const struct srv_engine *e, struct srv_req *r, const char *alias);
/* Appends the SSE events for what was generated since the last call (and, once done, the
 * finish chunks, the usage chunk if asked and "data: [DONE]"). Call with r->mu held.
 * *end: true once [DONE] was written. Returns 0 or PORTA_E_NOMEM. */
int srv_sse_next(const struct srv_engine *e, struct srv_req *r, const char *alias,
                 struct srv_buf *out, bool *end);

/* ---- metrics.c ------------------------------------------------------------------------- */

#define SRV_TTFT_BUCKETS 10

struct srv_metrics {
    pthread_mutex_t mu;
    unsigned long long requests[6];      /* by class: 2xx, 4xx, 5xx, 503 busy, ... see .c */
    unsigned long long prompt_tokens, gen_tokens;
    unsigned long long ttft_count, ttft_bucket[SRV_TTFT_BUCKETS];
    double ttft_sum;
    int queue_len, slots_active, slots_total;
    double tps;                          /* generated tokens/s over the last window */
    double tps_t0;
    unsigned long long tps_n0;
    unsigned long long steps;
};

void srv_metrics_init(struct srv_metrics *mt, int slots);
void srv_metrics_deinit(struct srv_metrics *mt);
void srv_metrics_status(struct srv_metrics *mt, int http_status);
void srv_metrics_ttft(struct srv_metrics *mt, double seconds);
/* Counts generated tokens (called before the request sees them). */
void srv_metrics_gen(struct srv_metrics *mt, int n_gen);
/* The scheduler's view after a step: prompt tokens just prefilled, queue, active slots. */
void srv_metrics_step(struct srv_metrics *mt, int n_prompt, int queue_len, int active);
/* Prometheus text exposition. */
int srv_metrics_text(struct srv_metrics *mt, bool ready, struct srv_buf *out);

/* ---- sched.c: slots and continuous batching -------------------------------------------- */

struct srv_sched;

/* Starts the scheduler thread over e (borrowed). Returns 0 or PORTA_E_NOMEM. */
int srv_sched_create(struct srv_engine *e, const struct porta_config *cfg,
                     struct srv_metrics *mt, struct srv_sched **out);
/* Cancels every request, joins the thread. NULL ok. */
void srv_sched_destroy(struct srv_sched *s);
/* Queues r: one task per choice (or one beam search needing num_beams slots), each holding a
 * reference to r until its slot is done. Returns 0, PORTA_E_RANGE when the slots and the queue
 * have no room (the caller answers 503 with Retry-After) or PORTA_E_NOMEM. */
int srv_sched_submit(struct srv_sched *s, struct srv_req *r);
/* Wakes the scheduler (e.g. after a request was cancelled). */
void srv_sched_wake(struct srv_sched *s);

/* ---- page.c ---------------------------------------------------------------------------- */

extern const char srv_page_html[];
extern const size_t srv_page_len;

#endif /* PORTA_SERVER_H */
