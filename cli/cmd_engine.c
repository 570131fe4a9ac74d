/* cmd_engine.c - the commands that exercise the engine without text: `porta devices`,
 * `porta logits` (reference-logit dumps) and `porta bench` (prefill/decode speed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- devices ---- */

static void print_line(void *user, const char *line)
{
    printf("    %s\n", line);
}

int cmd_devices(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    int n_rest, rc = cli_parse(argc, argv, &cfg, &rest, &n_rest);
    if (rc)
        goto done;
    if (n_rest) {
        porta_err("devices: unknown argument '%s'", rest[0]);
        rc = PORTA_E_INVAL;
        goto done;
    }
    int n;
    const struct porta_backend_ops *const *reg = porta_backend_registry(&n);
    printf("backends built:");
    for (int i = 0; i < n; i++)
        printf(" %s", reg[i]->name);
    printf("\n");
    for (int i = 0; i < n; i++) {
        printf("  %s:\n", reg[i]->name);
        int drc = reg[i]->devices ? reg[i]->devices(print_line, NULL) : PORTA_E_UNSUPPORTED;
        if (drc)
            printf("    no usable device: %s\n", porta_log_last_error()[0] ? porta_log_last_error()
                                                                          : porta_strerror(drc));
    }
    printf("config order:");
    for (int i = 0; i < cfg.backend.n_order; i++)
        printf(" %s", cfg.backend.order[i]);
    printf("\n");
    struct porta_backend *be = NULL;
    for (int i = 0; i < cfg.backend.n_order && !be; i++) {
        struct porta_backend_cfg bc;
        const char *name = cfg.backend.order[i];
        porta_config_backend_cfg(&cfg, name, &bc);
        if (porta_backend_open(name, &bc, &be) == 0) {
            printf("the config picks: %s\n", be->desc);
            porta_backend_close(be);
            break;
        }
        printf("  %s: cannot open (%s)\n", name, porta_log_last_error());
    }
    if (!be && !cfg.backend.n_order)
        printf("the config picks: nothing (empty backend.order)\n");
done:
    free(rest);
    return rc;
}

/* ---- logits ---- */

int cmd_logits(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    int n_rest, rc = cli_parse(argc, argv, &cfg, &rest, &n_rest);
    const char *ids_path = NULL, *out_path = NULL;
    bool decode = false;
    int32_t *ids = NULL;
    float *logits = NULL;
    FILE *f = NULL;
    struct cli_engine e = { 0 };
    if (rc)
        goto done;
    for (int i = 0; i < n_rest; i++) {
        if (strcmp(rest[i], "--ids") == 0 && i + 1 < n_rest)
            ids_path = rest[++i];
        else if (strcmp(rest[i], "-o") == 0 && i + 1 < n_rest)
            out_path = rest[++i];
        else if (strcmp(rest[i], "--decode") == 0)
            decode = true;
        else {
            porta_err("logits: unknown or incomplete argument '%s'", rest[i]);
            rc = PORTA_E_INVAL;
            goto done;
        }
    }
    if (!ids_path || !out_path) {
        porta_err("logits: need --ids FILE and -o OUT");
        rc = PORTA_E_INVAL;
        goto done;
    }
    int n;
    if ((rc = cli_read_ids(ids_path, &ids, &n)))
        goto done;
    if (cfg.model.n_ctx < n)
        cfg.model.n_ctx = n;
    if ((rc = cli_engine_open(&cfg, 1, &e)))
        goto done;
    int nv = e.model->hp.n_vocab;
    logits = malloc(sizeof(float) * (size_t)n * nv);
    bool *want = malloc(sizeof(bool) * (size_t)n);
    if (!logits || !want) {
        free(want);
        rc = PORTA_E_NOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++)
        want[i] = true;
    if (!decode) {
        struct porta_batch b = { .n_tok = n, .ids = ids, .logits = want };
        rc = porta_forward(e.ctx, &b, logits);
    } else {
        /* the first id as a one-token prefill, then one decode step per id */
        for (int i = 0; i < n && !rc; i++) {
            struct porta_batch b = { .n_tok = 1, .ids = ids + i };
            rc = porta_forward(e.ctx, &b, logits + (size_t)i * nv);
        }
    }
    free(want);
    if (rc)
        goto done;
    f = fopen(out_path, "wb");
    if (!f || fwrite(logits, sizeof(float) * (size_t)nv, (size_t)n, f) != (size_t)n) {
        porta_err("%s: cannot write the logits", out_path);
        rc = PORTA_E_IO;
        goto done;
    }
    porta_info("wrote %d x %d logits to %s", n, nv, out_path);
done:
    if (f && fclose(f) && !rc) {
        porta_err("%s: write failed", out_path);
        rc = PORTA_E_IO;
    }
    cli_engine_close(&e);
    free(logits);
    free(ids);
    free(rest);
    return rc;
}

/* ---- bench ---- */

struct stat3 {
    double mean, sd, min, max;
};

static struct stat3 stats(const double *v, int n)
{
    struct stat3 s = { 0, 0, v[0], v[0] };
    for (int i = 0; i < n; i++) {
        s.mean += v[i] / n;
        s.min = v[i] < s.min ? v[i] : s.min;
        s.max = v[i] > s.max ? v[i] : s.max;
    }
    for (int i = 0; i < n; i++)
        s.sd += (v[i] - s.mean) * (v[i] - s.mean) / (n > 1 ? n - 1 : 1);
    s.sd = sqrt(s.sd);
    return s;
}

int cmd_bench(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    int n_rest, rc = cli_parse(argc, argv, &cfg, &rest, &n_rest);
    int n_prompt = 128, n_gen = 32, reps = 3;
    bool json = false;
    int32_t *ids = NULL;
    float *logits = NULL;
    double *pp = NULL, *tg = NULL;
    struct cli_engine e = { 0 };
    if (rc)
        goto done;
    for (int i = 0; i < n_rest; i++) {
        char *end = NULL;
        if (strcmp(rest[i], "-p") == 0 && i + 1 < n_rest)
            n_prompt = (int)strtol(rest[++i], &end, 10);
        else if (strcmp(rest[i], "-n") == 0 && i + 1 < n_rest)
            n_gen = (int)strtol(rest[++i], &end, 10);
        else if (strcmp(rest[i], "-r") == 0 && i + 1 < n_rest)
            reps = (int)strtol(rest[++i], &end, 10);
        else if (strcmp(rest[i], "--json") == 0)
            json = true;
        else {
            porta_err("bench: unknown or incomplete argument '%s'", rest[i]);
            rc = PORTA_E_INVAL;
            goto done;
        }
        if (end && (*end || n_prompt < 0 || n_gen < 0 || reps < 1 || n_prompt > 1 << 20 ||
                    n_gen > 1 << 20 || reps > 1000)) {
            porta_err("bench: bad value for %s", rest[i - 1]);
            rc = PORTA_E_INVAL;
            goto done;
        }
    }
    if (n_prompt + n_gen + 1 > cfg.model.n_ctx)
        cfg.model.n_ctx = n_prompt + n_gen + 1;
    if (n_prompt > 0 && cfg.model.n_batch < n_prompt)
        cfg.model.n_batch = n_prompt;
    if ((rc = cli_engine_open(&cfg, 1, &e)))
        goto done;
    int nv = e.model->hp.n_vocab;
    int n_ids = n_prompt > 1 ? n_prompt : 1;
    ids = malloc(sizeof(int32_t) * (size_t)n_ids);
    logits = malloc(sizeof(float) * (size_t)nv);
    pp = calloc((size_t)reps, sizeof(double));
    tg = calloc((size_t)reps, sizeof(double));
    if (!ids || !logits || !pp || !tg) {
        rc = PORTA_E_NOMEM;
        goto done;
    }
    unsigned long long st = 12345;
    for (int i = 0; i < n_ids; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((st >> 33) % (unsigned long long)nv);
    }
    /* warm-up: one token, not timed */
    struct porta_batch wb = { .n_tok = 1, .ids = ids };
    if ((rc = porta_forward(e.ctx, &wb, logits)))
        goto done;
    for (int r = 0; r < reps; r++) {
        porta_ctx_reset(e.ctx, -1);
        if (n_prompt > 0) {
            double t0 = porta_time_s();
            struct porta_batch b = { .n_tok = n_prompt, .ids = ids };
            if ((rc = porta_forward(e.ctx, &b, logits)))
                goto done;
            pp[r] = n_prompt / (porta_time_s() - t0);
        }
        int32_t tok = ids[0];
        double t0 = porta_time_s();
        for (int i = 0; i < n_gen; i++) {
            struct porta_batch b = { .n_tok = 1, .ids = &tok };
            if ((rc = porta_forward(e.ctx, &b, logits)))
                goto done;
            int best = 0;
            for (int v = 1; v < nv; v++)
                best = logits[v] > logits[best] ? v : best;
            tok = best;
        }
        if (n_gen > 0)
            tg[r] = n_gen / (porta_time_s() - t0);
    }
    const char *name = strrchr(cfg.model.path, '/') ? strrchr(cfg.model.path, '/') + 1
                                                    : cfg.model.path;
    double mb = (double)e.model->weight_bytes / 1e6;
    struct stat3 sp = stats(pp, reps), sg = stats(tg, reps);
    if (json) {
        if (n_prompt > 0)
            printf("{\"model\": \"%s\", \"backend\": \"%s\", \"test\": \"pp%d\", \"tok_s\": %.3f, "
                   "\"tok_s_sd\": %.3f, \"tok_s_min\": %.3f, \"tok_s_max\": %.3f, \"reps\": %d}\n",
                   name, e.be->desc, n_prompt, sp.mean, sp.sd, sp.min, sp.max, reps);
        if (n_gen > 0)
            printf("{\"model\": \"%s\", \"backend\": \"%s\", \"test\": \"tg%d\", \"tok_s\": %.3f, "
                   "\"tok_s_sd\": %.3f, \"tok_s_min\": %.3f, \"tok_s_max\": %.3f, "
                   "\"bytes_per_tok\": %zu, \"gb_s\": %.3f, \"reps\": %d}\n",
                   name, e.be->desc, n_gen, sg.mean, sg.sd, sg.min, sg.max,
                   e.model->weight_bytes, sg.mean * mb / 1e3, reps);
    } else {
        printf("| model | backend | weights MB | test | tok/s | ± sd | min | max |\n");
        printf("|---|---|---:|---|---:|---:|---:|---:|\n");
        if (n_prompt > 0)
            printf("| %s | %s | %.1f | pp%d | %.2f | %.2f | %.2f | %.2f |\n", name, e.be->desc, mb,
                   n_prompt, sp.mean, sp.sd, sp.min, sp.max);
        if (n_gen > 0)
            printf("| %s | %s | %.1f | tg%d | %.2f | %.2f | %.2f | %.2f |\n", name, e.be->desc, mb,
                   n_gen, sg.mean, sg.sd, sg.min, sg.max);
    }
done:
    cli_engine_close(&e);
    free(ids);
    free(logits);
    free(pp);
    free(tg);
    free(rest);
    return rc;
}
