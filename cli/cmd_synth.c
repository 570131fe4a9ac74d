/* cmd_synth.c - `porta synth`: writes a random-weight GGUF model of a real shape (core/synth.c)
 * for speed work, e.g. porta synth --shape r1-distill-qwen-1.5b --type Q4_K_M -o m.gguf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "synth.h"

static void progress(void *user, double frac)
{
    cli_progress((const char *)user, frac);
}

static void list_shapes(FILE *out)
{
    int n;
    const struct porta_synth_shape *s = porta_synth_shapes(&n);
    fprintf(out, "shapes:\n");
    for (int i = 0; i < n; i++) {
        fprintf(out, "  %-22s %s, n_embd %d, %d layers, %d heads, %d KV heads, n_ff %d, vocab %d%s",
                s[i].name, s[i].arch, s[i].n_embd, s[i].n_layer, s[i].n_head, s[i].n_head_kv,
                s[i].n_ff, s[i].n_vocab, s[i].tied ? ", tied" : "");
        if (s[i].n_expert)
            fprintf(out, ", %d experts (top %d) of n_ff %d, shared n_ff %d", s[i].n_expert,
                    s[i].n_expert_used, s[i].n_ff_exp, s[i].n_ff_shexp);
        if (s[i].kv_lora_rank)
            fprintf(out, ", MLA kv_lora_rank %d", s[i].kv_lora_rank);
        fputc('\n', out);
    }
    fprintf(out, "types: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q4_K_M Q4_K Q6_K\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        porta_err("synth: %s %s is not an integer in %ld..%ld", flag, v, lo, hi);
        return PORTA_E_INVAL;
    }
    *out = x;
    return 0;
}

int cmd_synth(int argc, char **argv)
{
    const char *shape = NULL, *type = NULL, *out = NULL;
    struct porta_synth_opts o = { .seed = 1, .pool_rows = 64 };
    long v;
    int rc = 0;
    for (int i = 0; i < argc && !rc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--list") == 0) {
            list_shapes(stdout);
            return 0;
        }
        if (!val) {
            porta_err("synth: unknown or incomplete argument '%s'", a);
            return PORTA_E_INVAL;
        }
        i++;
        if (strcmp(a, "--shape") == 0)
            shape = val;
        else if (strcmp(a, "--type") == 0)
            type = val;
        else if (strcmp(a, "-o") == 0)
            out = val;
        else if (strcmp(a, "--seed") == 0 && !(rc = parse_int(a, val, 0, 1L << 30, &v)))
            o.seed = (uint64_t)v;
        else if (strcmp(a, "--pool") == 0 && !(rc = parse_int(a, val, 0, 1 << 20, &v)))
            o.pool_rows = (int)v;
        else if (strcmp(a, "--threads") == 0 && !(rc = parse_int(a, val, 0, 1024, &v)))
            o.threads = (int)v;
        else if (strcmp(a, "--layers") == 0 && !(rc = parse_int(a, val, 1, 4096, &v)))
            o.n_layer = (int)v;
        else if (!rc) {
            porta_err("synth: unknown argument '%s'", a);
            rc = PORTA_E_INVAL;
        }
    }
    if (rc)
        return rc;
    if (!shape || !type || !out) {
        porta_err("synth: need --shape NAME --type TYPE -o FILE "
                  "[--seed S] [--pool ROWS] [--threads N] [--layers N]; --list shows the shapes");
        list_shapes(stderr);
        return PORTA_E_INVAL;
    }
    const struct porta_synth_shape *s = porta_synth_shape_find(shape);
    if (!s) {
        porta_err("synth: unknown shape '%s'", shape);
        list_shapes(stderr);
        return PORTA_E_INVAL;
    }
    enum porta_synth_ftype ft;
    if ((rc = porta_synth_ftype_parse(type, &ft)))
        return rc;
    o.progress = progress;
    o.user = (void *)"writing";
    double t0 = porta_time_s();
    if ((rc = porta_synth_write(out, s, ft, &o)))
        return rc;
    porta_info("wrote %s (%s %s, seed %llu, pool %d) in %.1f s", out, s->name,
               porta_synth_ftype_name(ft), (unsigned long long)o.seed, o.pool_rows,
               porta_time_s() - t0);
    return 0;
}
