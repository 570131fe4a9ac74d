/* http.c - the HTTP side of `porta serve` on libmicrohttpd (a thread per connection):
 * routing, the optional Bearer API key (constant-time compare, never logged), body and
 * header limits, 503 while loading or when the queue is full, the blocking wait of a plain
 * answer and the SSE stream of a streamed one, both of which notice a client that went away
 * and cancel its request so that its slot is freed at the next step. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "server.h"

#define WAIT_TICK_MS 50         /* how often a waiting handler looks at its client */
#define MAX_CONNECTIONS 1024
#define HEADER_MEMORY (64 * 1024) /* per connection: request line + headers + I/O buffers */
#define IDLE_TIMEOUT_S 30       /* a client idle this long is dropped (or timeout_s if less) */

struct porta_server {
    struct porta_config cfg;
    char alias[PORTA_CFG_PATH_MAX];
    long long created;
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;         /* guards sc against destroy */
    atomic_bool ready, stopping;
    atomic_int n_live;          /* answers still being written (drained before stopping) */
    struct srv_engine e;
    struct srv_sched *sc;
    struct srv_metrics mt;
};

/* per request */
struct conn {
    struct srv_buf body;
    bool too_big;
};

/* a streamed answer: owned by its MHD response */
struct stream {
    struct porta_server *s;
    struct srv_req *r;
    int fd;
    struct srv_buf out;
    size_t off;
    bool end;
};

/* ---- small helpers ---- */

static enum MHD_Result reply(struct porta_server *s, struct MHD_Connection *mc, int status,
                             const char *type, const char *body, size_t n, bool copy)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        n, (void *)body, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (status == 503)
        MHD_add_response_header(resp, "Retry-After", "1");
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(mc, (unsigned)status, resp);
    MHD_destroy_response(resp);
    srv_metrics_status(&s->mt, status);
    return ok;
}

static enum MHD_Result reply_json(struct porta_server *s, struct MHD_Connection *mc, int status,
                                  char *json)
{
    if (!json)
        return reply(s, mc, 500, "application/json", "{\"error\":{\"message\":\"out of memory\"}}",
                     38, false);
    enum MHD_Result ok = reply(s, mc, status, "application/json", json, strlen(json), true);
    free(json);
    return ok;
}

static enum MHD_Result reply_error(struct porta_server *s, struct MHD_Connection *mc,
                                   const struct srv_error *e)
{
    return reply_json(s, mc, e->status, srv_json_error(e));
}

static enum MHD_Result fail(struct porta_server *s, struct MHD_Connection *mc, int status,
                            const char *param, const char *code, const char *msg)
{
    struct srv_error e;
    srv_error_set(&e, status, param, "%s", msg);
    e.code = code;
    if (status == 401)
        e.type = "authentication_error";
    return reply_error(s, mc, &e);
}

static int conn_fd(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* true once the client closed its end (or the socket broke) */
static bool peer_gone(int fd)
{
    if (fd < 0)
        return false;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += (long)ms * 1000000L;
    ts->tv_sec += ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

/* waits (r->mu held) for news on r; false if the client left or the server stops */
static bool wait_tick(struct porta_server *s, struct srv_req *r, int fd)
{
    struct timespec ts;
    deadline(&ts, WAIT_TICK_MS);
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    if (atomic_load(&s->stopping) && !srv_req_done(r))
        return true;                /* the scheduler ends it; keep waiting for that */
    pthread_mutex_unlock(&r->mu);
    bool gone = peer_gone(fd);
    pthread_mutex_lock(&r->mu);
    return !gone;
}

/* one access-log line per generation (never the key, never the text) */
static void log_done(const struct srv_req *r, bool gone)
{
    int gen = 0;
    for (int i = 0; i < r->n; i++)
        gen += r->ch[i].n_gen;
    porta_info("serve: %s: %s, %d prompt + %d generated tokens, %.2f s%s", r->id,
               r->kind == SRV_CHAT ? "chat" : "completion", r->n_prompt, gen,
               porta_time_s() - r->t_arrive,
               gone ? ", client went away" : r->failed ? ", failed" : "");
}

static void cancel(struct porta_server *s, struct srv_req *r)
{
    atomic_store(&r->cancel, true);
    pthread_mutex_lock(&s->mu);
    if (s->sc)
        srv_sched_wake(s->sc);
    pthread_mutex_unlock(&s->mu);
}

/* ---- streaming ---- */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    struct srv_req *r = st->r;
    /* MHD may keep writing into the socket buffer for a while after the client is gone */
    if (peer_gone(st->fd)) {
        porta_dbg("serve: %s: client went away mid-stream", r->id);
        cancel(st->s, r);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    while (st->off == st->out.n) {
        if (st->end)
            return MHD_CONTENT_READER_END_OF_STREAM;
        st->out.n = st->off = 0;
        pthread_mutex_lock(&r->mu);
        for (;;) {
            if (srv_sse_next(&st->s->e, r, st->s->alias, &st->out, &st->end)) {
                pthread_mutex_unlock(&r->mu);
                cancel(st->s, r);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (st->out.n || st->end)
                break;
            if (!wait_tick(st->s, r, st->fd)) {
                pthread_mutex_unlock(&r->mu);
                porta_dbg("serve: %s: client went away mid-stream", r->id);
                cancel(st->s, r);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        pthread_mutex_unlock(&r->mu);
    }
    size_t n = st->out.n - st->off < max ? st->out.n - st->off : max;
    memcpy(buf, st->out.p + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    struct stream *st = cls;
    pthread_mutex_lock(&st->r->mu);
    bool done = srv_req_done(st->r);
    log_done(st->r, !st->end);
    pthread_mutex_unlock(&st->r->mu);
    if (!done)
        cancel(st->s, st->r);
    srv_req_unref(st->r);
    srv_buf_free(&st->out);
    atomic_fetch_sub(&st->s->n_live, 1);
    free(st);
}

static enum MHD_Result answer_stream(struct porta_server *s, struct MHD_Connection *mc,
                                     struct srv_req *r)
{
    struct stream *st = calloc(1, sizeof *st);
    if (!st) {
        cancel(s, r);
        srv_req_unref(r);
        return fail(s, mc, 500, NULL, NULL, "out of memory");
    }
    st->s = s;
    st->r = r;
    st->fd = conn_fd(mc);
    atomic_fetch_add(&s->n_live, 1);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, st, sse_free);
    if (!resp) {
        sse_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result ok = MHD_queue_response(mc, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    srv_metrics_status(&s->mt, 200);
    return ok;
}

/* ---- completions ---- */

static enum MHD_Result generate(struct porta_server *s, struct MHD_Connection *mc,
                                struct conn *c, enum srv_kind kind)
{
    if (c->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than %d KiB",
                 s->cfg.server.max_body_kb);
        return fail(s, mc, 413, NULL, "request_too_large", msg);
    }
    if (!atomic_load(&s->ready))
        return fail(s, mc, 503, NULL, "model_loading", "the model is still loading");
    struct srv_error err;
    struct srv_req *r;
    if (srv_parse(&s->e, &s->cfg, s->alias, kind, c->body.p ? c->body.p : "", c->body.n, &r,
                  &err))
        return reply_error(s, mc, &err);
    pthread_mutex_lock(&s->mu);
    int rc = s->sc && !atomic_load(&s->stopping) ? srv_sched_submit(s->sc, r) : PORTA_E_RANGE;
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        srv_req_unref(r);
        return fail(s, mc, 503, NULL, "server_busy",
                    "the server is busy: every slot is taken and the queue is full; retry later");
    }
    porta_dbg("serve: %s: %d prompt tokens, max_tokens %d, n %d%s", r->id, r->n_prompt,
              r->max_tokens, r->n, r->stream ? ", streamed" : "");
    if (r->stream)
        return answer_stream(s, mc, r);
    int fd = conn_fd(mc);
    pthread_mutex_lock(&r->mu);
    bool here = true;
    while (here && !srv_req_done(r))
        here = wait_tick(s, r, fd);
    char *json = NULL;
    struct srv_error fe = { 0 };
    if (here && r->failed)
        srv_error_set(&fe, 500, NULL, "%s", r->err);
    else if (here)
        json = srv_json_final(&s->e, r, s->alias);
    log_done(r, !here);
    pthread_mutex_unlock(&r->mu);
    if (!here) {
        porta_dbg("serve: %s: client went away", r->id);
        cancel(s, r);
        srv_req_unref(r);
        return MHD_NO;
    }
    srv_req_unref(r);
    if (fe.status)
        return reply_error(s, mc, &fe);
    return reply_json(s, mc, 200, json);
}

/* ---- routing ---- */

static bool authorized(struct porta_server *s, struct MHD_Connection *mc)
{
    const char *key = s->cfg.server.api_key;
    if (!key[0])
        return true;
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return srv_ct_equal(h, strlen(h), key, strlen(key));
}

static bool needs_key(const char *url)
{
    return strncmp(url, "/v1/", 4) == 0 || strcmp(url, "/metrics") == 0;
}

static enum MHD_Result route(struct porta_server *s, struct MHD_Connection *mc, struct conn *c,
                             const char *url, const char *method)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/v1/chat/completions") == 0 || strcmp(url, "/v1/completions") == 0) {
        if (!post)
            return fail(s, mc, 405, NULL, "method_not_allowed", "use POST");
        return generate(s, mc, c, url[4] == 'c' && url[5] == 'h' ? SRV_CHAT : SRV_COMPLETION);
    }
    if (!get)
        return fail(s, mc, 405, NULL, "method_not_allowed", "use GET");
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            srv_page_len, (void *)srv_page_html, MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/html; charset=utf-8");
        MHD_add_response_header(resp, "Content-Security-Policy",
                                "default-src 'none'; script-src 'unsafe-inline'; "
                                "style-src 'unsafe-inline'; connect-src 'self'; img-src data:");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        enum MHD_Result ok = MHD_queue_response(mc, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        srv_metrics_status(&s->mt, 200);
        return ok;
    }
    bool ready = atomic_load(&s->ready);
    if (strcmp(url, "/health") == 0)
        return ready ? reply(s, mc, 200, "application/json", "{\"status\":\"ok\"}", 15, false)
                     : reply(s, mc, 503, "application/json", "{\"status\":\"loading\"}", 20, false);
    if (strcmp(url, "/metrics") == 0) {
        struct srv_buf b = { 0 };
        if (srv_metrics_text(&s->mt, ready, &b)) {
            srv_buf_free(&b);
            return fail(s, mc, 500, NULL, NULL, "out of memory");
        }
        enum MHD_Result ok = reply(s, mc, 200, "text/plain; version=0.0.4; charset=utf-8", b.p,
                                   b.n, true);
        srv_buf_free(&b);
        return ok;
    }
    if (strcmp(url, "/v1/models") == 0)
        return reply_json(s, mc, 200, srv_json_models(s->alias, s->created));
    if (strncmp(url, "/v1/models/", 11) == 0) {
        if (strcmp(url + 11, s->alias) == 0)
            return reply_json(s, mc, 200, srv_json_model(s->alias, s->created));
        return fail(s, mc, 404, "model", "model_not_found", "the model does not exist");
    }
    return fail(s, mc, 404, NULL, "not_found", "no such endpoint");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *mc, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *data_size, void **con_cls)
{
    struct porta_server *s = cls;
    struct conn *c = *con_cls;
    size_t max_body = (size_t)s->cfg.server.max_body_kb * 1024;
    if (!c) {
        if (!(c = calloc(1, sizeof *c)))
            return MHD_NO;
        *con_cls = c;
        /* refuse before reading a body: wrong key, or a declared length over the limit */
        if (needs_key(url) && !authorized(s, mc))
            return fail(s, mc, 401, NULL, "invalid_api_key",
                        "missing or invalid API key (Authorization: Bearer ...)");
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || *end || v > max_body) {
                c->too_big = true;
                char msg[128];
                snprintf(msg, sizeof msg, "the request body is larger than %d KiB",
                         s->cfg.server.max_body_kb);
                return fail(s, mc, 413, NULL, "request_too_large", msg);
            }
        }
        return MHD_YES;
    }
    if (*data_size) {
        if (!c->too_big && c->body.n + *data_size > max_body) {
            c->too_big = true;
            srv_buf_free(&c->body);
        }
        if (!c->too_big && srv_buf_add(&c->body, data, *data_size))
            return MHD_NO;
        *data_size = 0;
        return MHD_YES;
    }
    return route(s, mc, c, url, method);
}

static void completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                      enum MHD_RequestTerminationCode why)
{
    struct conn *c = *con_cls;
    if (!c)
        return;
    srv_buf_free(&c->body);
    free(c);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    porta_dbg("serve: http: %s", msg);
}

/* ---- public ---- */

int porta_server_create(const struct porta_config *cfg, struct porta_server **out)
{
    *out = NULL;
    struct porta_server *s = calloc(1, sizeof *s);
    if (!s)
        return PORTA_E_NOMEM;
    s->cfg = *cfg;
    s->created = (long long)time(NULL);
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->ready, false);
    atomic_init(&s->stopping, false);
    atomic_init(&s->n_live, 0);
    srv_metrics_init(&s->mt, cfg->server.slots);
    if (cfg->model.alias[0]) {
        snprintf(s->alias, sizeof s->alias, "%s", cfg->model.alias);
    } else {
        const char *b = strrchr(cfg->model.path, '/');
        snprintf(s->alias, sizeof s->alias, "%s", b ? b + 1 : cfg->model.path);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->server.port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV },
                    *ai = NULL;
    int g = getaddrinfo(cfg->server.host, port, &hints, &ai);
    if (g) {
        porta_err("serve: server.host \"%s\": %s", cfg->server.host, gai_strerror(g));
        porta_server_destroy(s);
        return PORTA_E_CONFIG;
    }
    /* idle means no bytes moving on the socket; a handler waiting for tokens is not idle */
    unsigned idle = cfg->server.timeout_s > 0 && cfg->server.timeout_s < IDLE_TIMEOUT_S
                        ? (unsigned)cfg->server.timeout_s
                        : IDLE_TIMEOUT_S;
    unsigned limit = (unsigned)(cfg->server.slots + cfg->server.queue + 16);
    if (limit > MAX_CONNECTIONS)
        limit = MAX_CONNECTIONS;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->d = MHD_start_daemon(flags, (uint16_t)cfg->server.port, NULL, NULL, handler, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, idle,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_MEMORY,
                            MHD_OPTION_THREAD_STACK_SIZE, (size_t)512 * 1024,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        porta_err("serve: cannot listen on %s:%d (in use, or not an address of this machine)",
                  cfg->server.host, cfg->server.port);
        porta_server_destroy(s);
        return PORTA_E_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->server.port;
    porta_info("serve: listening on http://%s:%d/ (model alias \"%s\", %d slots, queue %d%s)",
               cfg->server.host, s->port, s->alias, cfg->server.slots, cfg->server.queue,
               cfg->server.api_key[0] ? ", API key required" : "");
    *out = s;
    return 0;
}

int porta_server_port(const struct porta_server *s)
{
    return s->port;
}

static void tok_text(const struct porta_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    size_t len = 0;
    const char *p = id >= 0 ? porta_tokenizer_text(t, id, &len) : NULL;
    buf[0] = 0;
    if (p && len < cap) {
        memcpy(buf, p, len);
        buf[len] = 0;
    }
}

int porta_server_attach(struct porta_server *s, struct porta_model *m, struct porta_ctx *c,
                        const struct porta_tokenizer *tok, enum porta_chat_tmpl tmpl)
{
    struct srv_engine *e = &s->e;
    if (c->p.n_seq < s->cfg.server.slots) {
        porta_err("serve: the context has %d sequences for %d slots", c->p.n_seq,
                  s->cfg.server.slots);
        return PORTA_E_INVAL;
    }
    e->m = m;
    e->c = c;
    e->tok = tok;
    e->tmpl = tmpl;
    e->n_vocab = m->hp.n_vocab < porta_tokenizer_n_vocab(tok) ? m->hp.n_vocab
                                                                : porta_tokenizer_n_vocab(tok);
    e->n_ctx = c->p.n_ctx;
    e->n_batch = c->p.n_batch;
    e->n_slots = s->cfg.server.slots;
    tok_text(tok, porta_tokenizer_bos(tok), e->bos_text, sizeof e->bos_text);
    tok_text(tok, porta_tokenizer_eos(tok), e->eos_text, sizeof e->eos_text);
    for (int32_t id = 0; id < e->n_vocab; id++)
        if (porta_tokenizer_is_eog(tok, id)) {
            int32_t *p = realloc(e->eog, sizeof(int32_t) * (size_t)(e->n_eog + 1));
            if (!p)
                return PORTA_E_NOMEM;
            e->eog = p;
            e->eog[e->n_eog++] = id;
        }
    struct srv_sched *sc;
    int rc = srv_sched_create(e, &s->cfg, &s->mt, &sc);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->mu);
    s->sc = sc;
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->ready, true);
    porta_info("serve: ready (%s template, n_ctx %d per slot)", porta_chat_tmpl_name(tmpl),
               e->n_ctx);
    return 0;
}

void porta_server_destroy(struct porta_server *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    pthread_mutex_lock(&s->mu);
    struct srv_sched *sc = s->sc;
    s->sc = NULL;
    pthread_mutex_unlock(&s->mu);
    srv_sched_destroy(sc);          /* ends every request: waiting handlers return */
    /* let the streams just ended write their last chunks and [DONE] */
    for (int i = 0; i < 300 && atomic_load(&s->n_live) > 0; i++) {
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
    if (s->d)
        MHD_stop_daemon(s->d);
    free(s->e.eog);
    srv_metrics_deinit(&s->mt);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
