/* main.c - the porta command-line tool: dispatches sub-commands and holds the option
 * parsing and engine set-up they share. The only place in porta that calls exit(). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"


static const char usage[] =
    "usage: porta COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  run        generate text:  porta run -c CFG -p \"text\" | -f FILE [-n N] [--temp T] [--chat]\n"
    "             [--beams N]  (beam search: the best of N beams, printed at the end)\n"
    "  chat       interactive chat with the model's template: porta chat -c CFG\n"
    "  bench      prefill/decode speed: porta bench -m MODEL [-p 128] [-n 32] [-r 3] [--json]\n"
    "  logits     write every position's logits: porta logits -m MODEL --ids FILE -o OUT\n"
    "  tokenize   text on stdin -> ids: porta tokenize -m MODEL [--special] [--bos] [--json]\n"
    "  detokenize ids on stdin -> text: porta detokenize -m MODEL\n"
    "  devices    backends built, devices they see, and which the config picks\n"
    "  serve      OpenAI-compatible HTTP server + chat page: porta serve -c CFG [-m MODEL]\n"
    "             [--host H] [--port P] [--slots N] [--alias NAME] [--api-key KEY]\n"
    "\n"
    "common options (override the config file):\n"
    "  -c, --config FILE    libconfig file (see config/)\n"
    "  -m, --model FILE     GGUF model\n"
    "  --backend LIST       backend order, e.g. cpu or opencl,cpu\n"
    "  -t, --threads N      CPU threads (0 = all cores)\n"
    "  --kernels SET        CPU kernel set: auto, avx512, avx2, scalar\n"
    "  --amx true|false     AMX int8 tiles for avx512 prefill (default true where present)\n"
    "  --ctx N              context length; --batch N  prefill chunk\n"
    "  --kv-type f16|f32    KV cache precision\n"
    "  -v, --verbose        debug logging; -q, --quiet  errors only\n";

/* flag -> config key, for flags that take a value */
static const struct {
    const char *flag, *alt, *key;
} flag_keys[] = {
    { "-m", "--model", "model.path" },
    { "--backend", NULL, "backend.order" },
    { "-t", "--threads", "backend.cpu.threads" },
    { "--kernels", NULL, "backend.cpu.kernels" },
    { "--amx", NULL, "backend.cpu.amx" },
    { "--ctx", "--n-ctx", "model.n_ctx" },
    { "--batch", NULL, "model.n_batch" },
    { "--kv-type", NULL, "model.kv_type" },
    { "--temp", "--temperature", "sampling.temperature" },
    { "--top-p", NULL, "sampling.top_p" },
    { "--top-k", NULL, "sampling.top_k" },
    { "--min-p", NULL, "sampling.min_p" },
    { "--repeat-penalty", "--repetition-penalty", "sampling.repetition_penalty" },
    { "--presence-penalty", NULL, "sampling.presence_penalty" },
    { "--frequency-penalty", NULL, "sampling.frequency_penalty" },
    { "--seed", NULL, "sampling.seed" },
    { "--template", "--chat-template", "model.chat_template" },
    { "--host", NULL, "server.host" },
    { "--port", NULL, "server.port" },
    { "--slots", NULL, "server.slots" },
    { "--alias", NULL, "model.alias" },
    { "--api-key", NULL, "server.api_key" },
};

int cli_parse(int argc, char **argv, struct porta_config *cfg, char ***rest, int *n_rest)
{
    porta_config_defaults(cfg);
    *rest = calloc((size_t)argc + 1, sizeof(char *));
    *n_rest = 0;
    if (!*rest)
        return PORTA_E_NOMEM;
    /* the config file first, so that flags override it wherever they appear */
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                porta_err("%s needs a file name", argv[i]);
                return PORTA_E_INVAL;
            }
            int rc = porta_config_load(argv[i + 1], cfg);
            if (rc)
                return rc;
            i++;
        }
    porta_log_set_level(porta_config_log_level(cfg));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            porta_log_set_level(PORTA_LOG_DEBUG);
            continue;
        }
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            porta_log_set_level(PORTA_LOG_ERROR);
            continue;
        }
        const char *key = NULL;
        for (size_t k = 0; k < sizeof flag_keys / sizeof flag_keys[0]; k++)
            if (strcmp(a, flag_keys[k].flag) == 0 ||
                (flag_keys[k].alt && strcmp(a, flag_keys[k].alt) == 0))
                key = flag_keys[k].key;
        if (!key) {
            (*rest)[(*n_rest)++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            porta_err("%s needs a value", a);
            return PORTA_E_INVAL;
        }
        int rc = porta_config_set(cfg, key, argv[++i]);
        if (rc)
            return rc;
    }
    return 0;
}

void cli_progress(const char *what, double frac)
{
    if (!isatty(STDERR_FILENO))
        return;
    int w = 30, done = (int)(frac * w + 0.5);
    fprintf(stderr, "\r%s [", what);
    for (int i = 0; i < w; i++)
        fputc(i < done ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%%%s", (int)(frac * 100 + 0.5), frac >= 1.0 ? "\n" : "");
    fflush(stderr);
}

/* the backend that runs layer il: its backend.layers range's, else the first one */
static struct porta_backend *layer_backend(const struct porta_config *cfg, struct cli_engine *e,
                                           bool *tried, int il)
{
    static const char *const names[] = { "cpu", "opencl", "hip" };
    const char *want = NULL;
    for (int j = 0; j < cfg->backend.n_layers; j++)
        if (il >= cfg->backend.layers[j].from && il <= cfg->backend.layers[j].to)
            want = cfg->backend.layers[j].backend;
    if (!want || strcmp(want, e->be->ops->name) == 0)
        return e->be;
    for (int j = 0; j < e->n_extra; j++)
        if (strcmp(e->extra_be[j]->ops->name, want) == 0)
            return e->extra_be[j];
    int k = 0;
    while (k < 3 && strcmp(names[k], want) != 0)
        k++;
    if (k == 3 || tried[k])
        return e->be;
    tried[k] = true;
    struct porta_backend_cfg bcfg;
    struct porta_backend *be;
    if (!porta_backend_find(want)) {
        porta_warn("backend.layers: backend '%s' is not compiled into this binary; its layers "
                   "run on %s", want, e->be->desc);
        return e->be;
    }
    porta_config_backend_cfg(cfg, want, &bcfg);
    porta_log_demote(true);         /* the fallback below is the message, not an error */
    int rc = porta_backend_open(want, &bcfg, &be);
    porta_log_demote(false);
    if (rc != 0) {
        porta_warn("backend.layers: backend '%s' did not open (%s); its layers run on %s", want,
                   porta_log_last_error(), e->be->desc);
        return e->be;
    }
    porta_info("backend: %s (for backend.layers)", be->desc);
    e->extra_be[e->n_extra++] = be;
    return be;
}

/* a model (and context) per run of consecutive layers on one backend, contexts linked */
static int open_stages(const struct porta_config *cfg, int n_seq, struct cli_engine *e)
{
    struct porta_gguf *g;
    struct porta_hparams hp;
    int rc = porta_gguf_open(cfg->model.path, &g);
    if (rc)
        return rc;
    rc = porta_hparams_read(g, &hp);
    porta_gguf_close(g);
    if (rc || (rc = porta_config_check_layers(cfg, hp.n_layer)))
        return rc;
    bool tried[3] = { false, false, false };
    struct porta_backend *prev = NULL;
    int from = 0;
    char plan[512] = "";
    size_t pl = 0;
    for (int il = 0; il <= hp.n_layer && !rc; il++) {
        struct porta_backend *be = il < hp.n_layer ? layer_backend(cfg, e, tried, il) : NULL;
        if (il > 0 && be != prev) {
            if (e->n_stages == CLI_MAX_STAGES) {
                porta_err("backend.layers: more than %d runs of layers", CLI_MAX_STAGES);
                return PORTA_E_INVAL;
            }
            int s = e->n_stages++;
            rc = porta_model_load_range(cfg->model.path, prev, from, il - 1, &e->stage_model[s]);
            if (!rc && pl < sizeof plan)
                pl += (size_t)snprintf(plan + pl, sizeof plan - pl, "%s%d..%d on %s",
                                       s ? ", " : "", from, il - 1, prev->ops->name);
            from = il;
        }
        prev = be;
    }
    if (rc)
        return rc;
    porta_info("per-layer placement: layers %s", plan);
    e->model = e->stage_model[0];
    if (n_seq <= 0)
        return 0;
    struct porta_ctx_params cp = { .n_ctx = cfg->model.n_ctx, .n_seq = n_seq,
                                   .n_batch = cfg->model.n_batch,
                                   .kv_type = porta_config_kv_dtype(cfg) };
    for (int s = 0; s < e->n_stages && !rc; s++) {
        rc = porta_ctx_create(e->stage_model[s], &cp, &e->stage_ctx[s]);
        if (!rc && s > 0)
            rc = porta_ctx_link(e->stage_ctx[s - 1], e->stage_ctx[s]);
    }
    e->ctx = e->stage_ctx[0];
    return rc;
}

int cli_engine_open(const struct porta_config *cfg, int n_seq, struct cli_engine *e)
{
    memset(e, 0, sizeof *e);
    if (!cfg->model.path[0]) {
        porta_err("no model: pass -m FILE or set model.path in the config");
        return PORTA_E_INVAL;
    }
    const char *order[PORTA_CFG_MAX_ORDER];
    struct porta_backend_cfg bcfg[PORTA_CFG_MAX_ORDER];
    for (int i = 0; i < cfg->backend.n_order; i++) {
        order[i] = cfg->backend.order[i];
        porta_config_backend_cfg(cfg, order[i], &bcfg[i]);
    }
    int rc = porta_backend_open_first(order, bcfg, cfg->backend.n_order, &e->be);
    if (rc)
        return rc;
    porta_info("backend: %s", e->be->desc);
    cli_progress("loading model", 0.0);
    double t0 = porta_time_s();
    if (cfg->backend.n_layers > 0) {
        rc = open_stages(cfg, n_seq, e);
        if (rc)
            cli_engine_close(e);
        else
            cli_progress("loading model", 1.0);
        return rc;
    }
    rc = porta_model_load(cfg->model.path, e->be, &e->model);
    if (rc) {
        cli_engine_close(e);
        return rc;
    }
    e->n_stages = 1;
    e->stage_model[0] = e->model;
    cli_progress("loading model", 1.0);
    porta_info("model: %s (%s, %d layers, n_embd %d, vocab %d) loaded in %.2f s",
               cfg->model.path, e->model->hp.arch_name, e->model->hp.n_layer, e->model->hp.n_embd,
               e->model->hp.n_vocab, porta_time_s() - t0);
    if (n_seq > 0) {
        struct porta_ctx_params cp = { .n_ctx = cfg->model.n_ctx, .n_seq = n_seq,
                                       .n_batch = cfg->model.n_batch,
                                       .kv_type = porta_config_kv_dtype(cfg) };
        rc = porta_ctx_create(e->model, &cp, &e->ctx);
        if (rc) {
            cli_engine_close(e);
            return rc;
        }
        e->stage_ctx[0] = e->ctx;
    }
    return 0;
}

void cli_engine_close(struct cli_engine *e)
{
    if (e->n_stages == 0) {         /* failed before the stages were recorded */
        porta_ctx_destroy(e->ctx);
        porta_model_destroy(e->model);
    }
    for (int s = 0; s < e->n_stages; s++) {
        porta_ctx_destroy(e->stage_ctx[s]);
        porta_model_destroy(e->stage_model[s]);
    }
    for (int j = 0; j < e->n_extra; j++)
        porta_backend_close(e->extra_be[j]);
    porta_backend_close(e->be);
    memset(e, 0, sizeof *e);
}

int cli_read_ids(const char *path, int32_t **ids, int *n)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    *ids = NULL;
    *n = 0;
    if (!f) {
        porta_err("%s: %s", path, strerror(errno));
        return PORTA_E_IO;
    }
    int cap = 0, rc = 0, c;
    char tok[32];
    int tl = 0;
    for (;;) {
        c = fgetc(f);
        if (c != EOF && (isdigit(c) || (c == '-' && tl == 0))) {
            if (tl >= (int)sizeof tok - 1) {
                porta_err("%s: number too long", path);
                rc = PORTA_E_FORMAT;
                break;
            }
            tok[tl++] = (char)c;
            continue;
        }
        if (tl) {
            tok[tl] = 0;
            char *end;
            errno = 0;
            long v = strtol(tok, &end, 10);
            if (errno || *end || v < 0 || v > INT32_MAX) {
                porta_err("%s: '%s' is not a token id", path, tok);
                rc = PORTA_E_FORMAT;
                break;
            }
            if (*n == cap) {
                cap = cap ? cap * 2 : 256;
                int32_t *p = realloc(*ids, sizeof(int32_t) * (size_t)cap);
                if (!p) {
                    rc = PORTA_E_NOMEM;
                    break;
                }
                *ids = p;
            }
            (*ids)[(*n)++] = (int32_t)v;
            tl = 0;
        }
        if (c == EOF)
            break;
        if (!(isspace(c) || c == ',' || c == '[' || c == ']')) {
            porta_err("%s: unexpected character '%c' in the id list", path, c);
            rc = PORTA_E_FORMAT;
            break;
        }
    }
    if (f != stdin)
        fclose(f);
    if (!rc && *n == 0) {
        porta_err("%s: no token ids", path);
        rc = PORTA_E_FORMAT;
    }
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}


int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        { "devices", cmd_devices }, { "logits", cmd_logits }, { "bench", cmd_bench },
        { "run", cmd_run },         { "chat", cmd_chat },     { "tokenize", cmd_tokenize },
        { "detokenize", cmd_detokenize }, { "serve", cmd_serve },
        { "synth", cmd_synth },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) {
            int rc = cmds[i].fn(argc - 2, argv + 2);
            return rc == 0 ? 0 : 1;
        }
    fprintf(stderr, "porta: unknown command '%s'\n\n%s", argv[1], usage);
    return 2;
}
