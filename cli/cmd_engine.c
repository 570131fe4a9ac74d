/* cmd_engine.c - the commands that exercise the engine without text: `porta devices`,
 * `porta logits` (reference-logit dumps) and `porta bench` (prefill/decode speed). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

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

/* ---- bench ----
 * Decode reads every weight once per token, so its speed is bounded by the memory read
 * bandwidth: each decode repetition is paired with a bandwidth measurement on the same number
 * of threads, and the report gives the effective GB/s (bytes read per token x tok/s) and its
 * share of that bandwidth. Prefill is bound by arithmetic: tokens/s and GOP/s. */

#define MEMBW_RUNS 5

struct membw_arg {
    const uint64_t *p;
    size_t n;                       /* uint64 words */
    size_t pf;                      /* prefetch distance, words */
    atomic_int *go;
    uint64_t sum;
};

/* Reads [p, p + n) once with the widest loads the CPU has, 4 independent sums, software
 * prefetch pf words ahead: the kernels stream their weights the same way (this kind of VM
 * leaves a plain read latency-bound), so the ceiling they are measured against should too. */
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint64_t *p, size_t n,
                                                                 size_t pf)
{
    const char *c = (const char *)p, *end = c + n / 32 * 256;
    const size_t d = pf * 8;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (; c < end; c += 256) {
        if (d) {
            _mm_prefetch(c + d, _MM_HINT_T0);
            _mm_prefetch(c + d + 64, _MM_HINT_T0);
            _mm_prefetch(c + d + 128, _MM_HINT_T0);
            _mm_prefetch(c + d + 192, _MM_HINT_T0);
        }
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(c));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(c + 64));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(c + 128));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(c + 192));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1),
                                                              _mm512_add_epi64(s2, s3)));
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint64_t *p, size_t n, size_t pf)
{
    const char *c = (const char *)p, *end = c + n / 16 * 128;
    const size_t d = pf * 8;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (; c < end; c += 128) {
        if (d) {
            _mm_prefetch(c + d, _MM_HINT_T0);
            _mm_prefetch(c + d + 64, _MM_HINT_T0);
        }
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)c));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(c + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(c + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(c + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)v, s);
    return v[0] + v[1] + v[2] + v[3];
}
#endif

static uint64_t read_plain(const uint64_t *p, size_t n, size_t pf)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        if (pf)
            __builtin_prefetch(p + i + pf);
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
        s4 += p[i + 4];
        s5 += p[i + 5];
        s6 += p[i + 6];
        s7 += p[i + 7];
    }
    return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

static void *membw_read(void *varg)
{
    struct membw_arg *a = varg;
    while (!atomic_load(a->go))
        ;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f"))
        a->sum = read_avx512(a->p, a->n, a->pf);
    else if (__builtin_cpu_supports("avx2"))
        a->sum = read_avx2(a->p, a->n, a->pf);
    else
#endif
        a->sum = read_plain(a->p, a->n, a->pf);
    return NULL;
}

/* One read of buf by nth threads: the best GB/s over a few prefetch distances; 0 when the
 * threads cannot be started. */
static double membw_once(const uint64_t *buf, size_t words, int nth)
{
    static const size_t pfs[] = { 0, 64, 128, 256 };     /* words: 0, 512 .. 2048 bytes */
    words = words / 32 * 32;
    double best = 0;
    pthread_t th[64];
    struct membw_arg a[64];
    nth = nth < 1 ? 1 : nth > 64 ? 64 : nth;
    size_t per = words / (size_t)nth / 32 * 32;
    for (size_t k = 0; k < sizeof pfs / sizeof pfs[0]; k++) {
        atomic_int go = 0;
        int started = 0;
        for (int i = 0; i < nth; i++) {
            a[i] = (struct membw_arg){ buf + (size_t)i * per, per, pfs[k], &go, 0 };
            if (pthread_create(&th[i], NULL, membw_read, &a[i]))
                break;
            started++;
        }
        double t0 = porta_time_s();
        atomic_store(&go, 1);
        for (int i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        double dt = porta_time_s() - t0;
        if (started < nth) {
            porta_err("bench: cannot start %d threads for the bandwidth test", nth);
            return 0;
        }
        double gbs = (double)(per * (size_t)nth * 8) / dt / 1e9;
        best = gbs > best ? gbs : best;
    }
    return best;
}

struct membw_buf {
    uint64_t *p;
    size_t words;
};

static int membw_alloc(struct membw_buf *b, size_t mb)
{
    b->words = mb * (1u << 20) / 8;
    b->p = aligned_alloc(1u << 21, b->words * 8);
    if (!b->p) {
        porta_err("bench: cannot allocate %zu MB for the bandwidth test", mb);
        return PORTA_E_NOMEM;
    }
#ifdef MADV_HUGEPAGE
    /* 2 MB pages where the kernel has them: the CPU backend asks for them for its repacked
     * weights too, and with 4 KB pages the page walks cost this VM a third of its bandwidth */
    madvise(b->p, b->words * 8, MADV_HUGEPAGE);
#endif
    for (size_t i = 0; i < b->words; i++)          /* touch every page (no zero-page reads) */
        b->p[i] = i;
    return 0;
}

/* CPU time of this process (all threads), seconds */
static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct stat3 {
    double median, min, max;
};

static struct stat3 stats(const double *v, int n)
{
    double tmp[1000];
    struct stat3 s = { 0, 0, 0 };
    if (n < 1)
        return s;
    memcpy(tmp, v, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    s.min = tmp[0];
    s.max = tmp[n - 1];
    s.median = n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
    return s;
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* `porta bench --membw`: read bandwidth with 1..N threads */
static int bench_membw(int max_threads, size_t mb, bool json)
{
    struct membw_buf b;
    int rc = membw_alloc(&b, mb);
    if (rc)
        return rc;
    if (!json) {
        printf("| threads | read GB/s median | min | max | runs | buffer MB |\n");
        printf("|---:|---:|---:|---:|---:|---:|\n");
    }
    for (int nt = 1; nt <= max_threads; nt++) {
        double v[MEMBW_RUNS];
        for (int r = 0; r < MEMBW_RUNS; r++)
            v[r] = membw_once(b.p, b.words, nt);
        struct stat3 s = stats(v, MEMBW_RUNS);
        if (json)
            printf("{\"test\": \"membw\", \"threads\": %d, \"gb_s\": %.3f, \"gb_s_min\": %.3f, "
                   "\"gb_s_max\": %.3f, \"runs\": %d, \"buffer_mb\": %zu}\n",
                   nt, s.median, s.min, s.max, MEMBW_RUNS, mb);
        else
            printf("| %d | %.2f | %.2f | %.2f | %d | %zu |\n", nt, s.median, s.min, s.max,
                   MEMBW_RUNS, mb);
    }
    free(b.p);
    return 0;
}

/* what one forward pass of the model multiplies: MACs of the layer matrices per token (MoE:
 * the n_expert_used routed experts, the shared ones and the router; MLA: the per-head
 * projections of every head), and of the output matrix */
static void model_macs(const struct porta_model *m, double *layer_macs, double *out_macs)
{
    double sum = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const struct porta_layer *L = &m->layers[il];
        const struct porta_weight *w[] = {
            &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down,
            &L->gate_inp, &L->gate_shexp, &L->up_shexp, &L->down_shexp, &L->gate_inp_shexp,
            &L->wq_a, &L->wq_nope, &L->wq_rope, &L->wkv_lat, &L->wk_rope, &L->wk_b, &L->wv_b,
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            if (w[i]->buf)
                sum += (double)w[i]->n_rows * (double)w[i]->n_cols * (double)w[i]->n_mat;
        const struct porta_weight *x[] = { &L->gate_exps, &L->up_exps, &L->down_exps };
        for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
            if (x[i]->buf)
                sum += (double)x[i]->n_rows * (double)x[i]->n_cols * m->hp.n_expert_used;
    }
    *layer_macs = sum;
    *out_macs = (double)m->output.n_rows * (double)m->output.n_cols;
}

struct bench_opts {
    int n_prompt, n_gen, reps;
    bool json;
    size_t membw_mb;
};

/* "avx512" and 2 from "cpu (avx512, 2 threads)"; "-" and the configured count otherwise */
static void backend_kernels(const struct porta_backend *be, const struct porta_config *cfg,
                            char *kernels, size_t n, int *threads)
{
    const char *lp = strchr(be->desc, '(');
    int t = 0;
    snprintf(kernels, n, "-");
    *threads = cfg->backend.cpu.threads > 0 ? cfg->backend.cpu.threads : cpu_count();
    if (strcmp(be->ops->name, "cpu") == 0 && lp) {
        size_t k = strcspn(lp + 1, ",)");
        snprintf(kernels, n, "%.*s", (int)k, lp + 1);
        const char *comma = strchr(lp, ',');
        if (comma && sscanf(comma + 1, "%d", &t) == 1 && t > 0)
            *threads = t;
    }
}

static int bench_model(struct porta_config *cfg, const struct bench_opts *o, bool header)
{
    int n_prompt = o->n_prompt, n_gen = o->n_gen, reps = o->reps, rc;
    int32_t *ids = NULL;
    float *logits = NULL;
    double pp[1000], tg[1000], bw[1000], cpu[1000];
    struct membw_buf mb = { 0 };
    struct cli_engine e = { 0 };
    if (n_prompt + n_gen + 1 > cfg->model.n_ctx)
        cfg->model.n_ctx = n_prompt + n_gen + 1;
    if (n_prompt > 0 && cfg->model.n_batch < n_prompt)
        cfg->model.n_batch = n_prompt;
    if ((rc = cli_engine_open(cfg, 1, &e)))
        goto done;
    if (n_gen > 0 && (rc = membw_alloc(&mb, o->membw_mb)))
        goto done;
    const struct porta_hparams *hp = &e.model->hp;
    int nv = hp->n_vocab, n_ids = n_prompt > 1 ? n_prompt : 1;
    ids = malloc(sizeof(int32_t) * (size_t)n_ids);
    logits = malloc(sizeof(float) * (size_t)nv);
    if (!ids || !logits) {
        rc = PORTA_E_NOMEM;
        goto done;
    }
    unsigned long long st = 12345;
    for (int i = 0; i < n_ids; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((st >> 33) % (unsigned long long)nv);
    }
    /* warm-up (not timed): one pass of each test, so that the backend's first-use work
     * (repacking weights, growing scratch) and cold caches/page faults stay out of the numbers */
    for (int r = -1; r < reps; r++) {
        porta_ctx_reset(e.ctx, -1);
        if (n_prompt > 0) {
            double t0 = porta_time_s();
            struct porta_batch b = { .n_tok = n_prompt, .ids = ids };
            if ((rc = porta_forward(e.ctx, &b, logits)))
                goto done;
            if (r >= 0)
                pp[r] = n_prompt / (porta_time_s() - t0);
        }
        if (n_gen <= 0)
            continue;
        int nth = 1;
        char kern[32];
        backend_kernels(e.be, cfg, kern, sizeof kern, &nth);
        if (r >= 0)
            bw[r] = membw_once(mb.p, mb.words, nth);
        int32_t tok = ids[0];
        int n = r >= 0 ? n_gen : (n_gen < 4 ? n_gen : 4);
        double c0 = cpu_seconds(), t0 = porta_time_s();
        for (int i = 0; i < n; i++) {
            struct porta_batch b = { .n_tok = 1, .ids = &tok };
            if ((rc = porta_forward(e.ctx, &b, logits)))
                goto done;
            int best = 0;
            for (int v = 1; v < nv; v++)
                best = logits[v] > logits[best] ? v : best;
            tok = best;
        }
        if (r >= 0) {
            double dt = porta_time_s() - t0;
            tg[r] = n_gen / dt;
            cpu[r] = (cpu_seconds() - c0) / (dt * nth);
        }
    }
    const char *name = strrchr(cfg->model.path, '/') ? strrchr(cfg->model.path, '/') + 1
                                                     : cfg->model.path;
    char kern[32], bname[64] = "";
    int nth;
    backend_kernels(e.be, cfg, kern, sizeof kern, &nth);
    /* per-layer placement: every part's backend, "cpu+opencl+cpu" */
    for (int s = 0, l = 0; s < e.n_stages && l < (int)sizeof bname; s++)
        l += snprintf(bname + l, sizeof bname - (size_t)l, "%s%s", s ? "+" : "",
                      e.stage_model[s]->be->ops->name);
    /* decode reads every weight matrix it multiplies (MoE: the active experts only, see
     * weight_bytes) plus, per layer, the K and V rows of every earlier position (averaged over
     * the positions the test decodes); MLA caches one latent + rope row per position */
    size_t kv_elem = porta_config_kv_dtype(cfg) == PORTA_F16 ? 2 : 4;
    double kv_per_pos = (double)hp->n_layer * hp->n_head_kv * (hp->head_dim + hp->head_dim_v) *
                        (double)kv_elem;
    if (hp->arch == PORTA_ARCH_DEEPSEEK2)
        kv_per_pos = (double)hp->n_layer * (hp->kv_lora_rank + hp->n_rope) * (double)kv_elem;
    /* with per-layer placement, every part's weights and products */
    double wbytes = 0, lmacs = 0, omacs = 0;
    for (int s = 0; s < e.n_stages; s++) {
        double l, o;
        model_macs(e.stage_model[s], &l, &o);
        lmacs += l;
        omacs += o;
        wbytes += (double)e.stage_model[s]->weight_bytes;
    }
    double bytes_tok = wbytes + kv_per_pos * (n_prompt + n_gen / 2.0 + 1);
    /* MLA attends in the latent: scores over kv_lora + rope, the sum over kv_lora */
    int attn_dims = hp->arch == PORTA_ARCH_DEEPSEEK2 ? 2 * hp->kv_lora_rank + hp->n_rope
                                                     : hp->head_dim + hp->head_dim_v;
    double attn_macs = (double)hp->n_layer * hp->n_head * attn_dims *
                       (double)n_prompt * (n_prompt + 1) / 2.0;
    double pp_ops = 2.0 * (lmacs * n_prompt + omacs + attn_macs);
    struct stat3 sp = stats(pp, reps), sg = stats(tg, reps), sb = stats(bw, reps);
    struct stat3 sc = stats(cpu, reps);
    double gbs = sg.median * bytes_tok / 1e9;
    if (o->json) {
        if (n_prompt > 0)
            printf("{\"model\": \"%s\", \"backend\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, "
                   "\"test\": \"pp%d\", \"tok_s\": %.3f, \"tok_s_min\": %.3f, \"tok_s_max\": %.3f, "
                   "\"gop_s\": %.2f, \"reps\": %d}\n",
                   name, bname, kern, nth, n_prompt, sp.median, sp.min, sp.max,
                   pp_ops * sp.median / n_prompt / 1e9, reps);
        if (n_gen > 0)
            printf("{\"model\": \"%s\", \"backend\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, "
                   "\"test\": \"tg%d\", \"tok_s\": %.3f, \"tok_s_min\": %.3f, \"tok_s_max\": %.3f, "
                   "\"bytes_per_tok\": %.0f, \"gb_s\": %.3f, \"membw_gb_s\": %.3f, "
                   "\"membw_gb_s_max\": %.3f, \"membw_pct\": %.1f, \"cpu_share\": %.2f, "
                   "\"reps\": %d}\n",
                   name, bname, kern, nth, n_gen, sg.median, sg.min, sg.max, bytes_tok,
                   gbs, sb.median, sb.max, 100.0 * gbs / sb.median, sc.median, reps);
    } else {
        if (header) {
            printf("| model | backend | threads | weights MB | test | tok/s | min | max | "
                   "GOP/s or GB/s | %% of mem bw (GB/s) | cpu share |\n");
            printf("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
        }
        double wmb = wbytes / 1e6;
        if (n_prompt > 0)
            printf("| %s | %s %s | %d | %.1f | pp%d | %.2f | %.2f | %.2f | %.1f GOP/s | | |\n", name,
                   bname, kern, nth, wmb, n_prompt, sp.median, sp.min, sp.max,
                   pp_ops * sp.median / n_prompt / 1e9);
        if (n_gen > 0)
            printf("| %s | %s %s | %d | %.1f | tg%d | %.2f | %.2f | %.2f | %.2f GB/s | %.0f%% "
                   "(%.1f) | %.2f |\n", name, bname, kern, nth, wmb, n_gen, sg.median,
                   sg.min, sg.max, gbs, 100.0 * gbs / sb.median, sb.median, sc.median);
        fflush(stdout);
    }
done:
    cli_engine_close(&e);
    free(mb.p);
    free(ids);
    free(logits);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest;
    const char *models[64];
    int n_models = 0, n_rest;
    /* every -m / --model is a model to run, in order (cli_parse keeps only the last) */
    for (int i = 0; i + 1 < argc; i++)
        if ((strcmp(argv[i], "-m") == 0 || strcmp(argv[i], "--model") == 0) && n_models < 64)
            models[n_models++] = argv[++i];
    int rc = cli_parse(argc, argv, &cfg, &rest, &n_rest);
    struct bench_opts o = { .n_prompt = 128, .n_gen = 32, .reps = 5, .membw_mb = 1024 };
    bool membw = false;
    if (rc)
        goto done;
    for (int i = 0; i < n_rest; i++) {
        char *end = NULL;
        long v = 0;
        const char *a = rest[i];
        if (strcmp(a, "--json") == 0) {
            o.json = true;
            continue;
        }
        if (strcmp(a, "--membw") == 0) {
            membw = true;
            continue;
        }
        if (i + 1 >= n_rest || !(strcmp(a, "-p") == 0 || strcmp(a, "-n") == 0 ||
                                 strcmp(a, "-r") == 0 || strcmp(a, "--membw-mb") == 0)) {
            porta_err("bench: unknown or incomplete argument '%s'", a);
            rc = PORTA_E_INVAL;
            goto done;
        }
        v = strtol(rest[++i], &end, 10);
        if (*end || v < (strcmp(a, "-r") == 0 || strcmp(a, "--membw-mb") == 0 ? 1 : 0) ||
            v > (strcmp(a, "-r") == 0 ? 1000 : 1 << 20)) {
            porta_err("bench: bad value '%s' for %s", rest[i], a);
            rc = PORTA_E_INVAL;
            goto done;
        }
        if (strcmp(a, "-p") == 0)
            o.n_prompt = (int)v;
        else if (strcmp(a, "-n") == 0)
            o.n_gen = (int)v;
        else if (strcmp(a, "-r") == 0)
            o.reps = (int)v;
        else
            o.membw_mb = (size_t)v;
    }
    if (membw) {
        int nt = cfg.backend.cpu.threads > 0 ? cfg.backend.cpu.threads : cpu_count();
        rc = bench_membw(nt, o.membw_mb, o.json);
        if (rc || !n_models)
            goto done;
    }
    if (!n_models && cfg.model.path[0])
        models[n_models++] = cfg.model.path;
    if (!n_models) {
        porta_err("bench: no model: pass -m FILE (several -m run one after the other) or "
                  "--membw");
        rc = PORTA_E_INVAL;
        goto done;
    }
    for (int i = 0; i < n_models && !rc; i++) {
        snprintf(cfg.model.path, sizeof cfg.model.path, "%s", models[i]);
        rc = bench_model(&cfg, &o, i == 0);
    }
done:
    free(rest);
    return rc;
}
