/* config.c - libconfig file -> struct porta_config, CLI overrides and dump. One schema table
 * drives all of it, so the file, the flags and the dump cannot disagree on a key's type,
 * range or spelling; every value goes through the same put_*() checks whatever its source. */
#include "config.h"
#include "backend.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- schema ---- */

enum ktype { K_GROUP, K_INT, K_I64, K_FLOAT, K_BOOL, K_STR, K_ORDER, K_LAYERS };

#define F_NONEMPTY 1u   /* string must not be "" */
#define F_WORD     2u   /* string limited to [a-z0-9._-] */
#define F_LO_OPEN  4u   /* float: value must be > lo, not >= lo */

struct key {
    const char *name;
    enum ktype type;
    size_t off;                     /* into the base struct (porta_config or a layer range) */
    size_t size;                    /* K_STR: buffer bytes */
    long long ilo, ihi;             /* K_INT, K_I64: inclusive range */
    double flo, fhi;                /* K_FLOAT: inclusive range (see F_LO_OPEN) */
    unsigned flags;
    const char *const *choices;     /* K_STR: allowed words, NULL-terminated; NULL = any */
    const struct key *sub;          /* K_GROUP: its keys, ended by a NULL name */
};

#define OFF(f)  offsetof(struct porta_config, f)
#define SZ(f)   sizeof(((struct porta_config *)0)->f)
#define GROUP(n, keys) { .name = n, .type = K_GROUP, .sub = keys }
#define INT(n, f, lo, hi) { .name = n, .type = K_INT, .off = OFF(f), .ilo = lo, .ihi = hi }
#define I64(n, f, lo, hi) { .name = n, .type = K_I64, .off = OFF(f), .ilo = lo, .ihi = hi }
#define FLT(n, f, lo, hi, fl) \
    { .name = n, .type = K_FLOAT, .off = OFF(f), .flo = lo, .fhi = hi, .flags = fl }
#define BOOL(n, f) { .name = n, .type = K_BOOL, .off = OFF(f) }
#define STR(n, f, fl) { .name = n, .type = K_STR, .off = OFF(f), .size = SZ(f), .flags = fl }
#define ENUM(n, f, ch) { .name = n, .type = K_STR, .off = OFF(f), .size = SZ(f), .choices = ch }
#define END { .name = NULL }

static const char *const backend_names[] = { "cpu", "opencl", "hip", NULL };
static const char *const kernel_names[] = { "auto", "avx512", "avx2", "scalar", NULL };
static const char *const kv_names[] = { "f32", "f16", NULL };
static const char *const level_names[] = { "debug", "info", "warn", "error", NULL };

static const struct key model_keys[] = {
    STR("path", model.path, 0),
    STR("alias", model.alias, 0),
    INT("n_ctx", model.n_ctx, 1, PORTA_CFG_MAX_N_CTX),
    INT("n_batch", model.n_batch, 1, 65536),
    ENUM("kv_type", model.kv_type, kv_names),
    STR("chat_template", model.chat_template, F_NONEMPTY | F_WORD),
    END
};
static const struct key cpu_keys[] = {
    INT("threads", backend.cpu.threads, 0, 1024),
    ENUM("kernels", backend.cpu.kernels, kernel_names),
    BOOL("amx", backend.cpu.amx),
    END
};
static const struct key opencl_keys[] = {
    INT("platform", backend.opencl.platform, -1, 1024),
    INT("device", backend.opencl.device, -1, 1024),
    STR("device_name", backend.opencl.device_name, 0),
    STR("kernel_dir", backend.opencl.kernel_dir, 0),
    STR("cache_dir", backend.opencl.cache_dir, 0),
    BOOL("clblast", backend.opencl.clblast),
    BOOL("row_packs", backend.opencl.row_packs),
    END
};
static const struct key hip_keys[] = {
    INT("device", backend.hip.device, -1, 1024),
    INT("weight_cache_mb", backend.hip.weight_cache_mb, 0, INT_MAX),
    END
};
static const struct key backend_keys[] = {
    { .name = "order", .type = K_ORDER, .off = OFF(backend.order) },
    GROUP("cpu", cpu_keys),
    GROUP("opencl", opencl_keys),
    GROUP("hip", hip_keys),
    { .name = "layers", .type = K_LAYERS, .off = OFF(backend.layers) },
    END
};
static const struct key server_keys[] = {
    STR("host", server.host, F_NONEMPTY),
    INT("port", server.port, 1, 65535),
    STR("api_key", server.api_key, 0),
    INT("slots", server.slots, 1, 256),
    INT("queue", server.queue, 0, 65536),
    INT("max_body_kb", server.max_body_kb, 1, 1 << 20),
    INT("max_tokens", server.max_tokens, 1, INT_MAX),
    INT("timeout_s", server.timeout_s, 0, INT_MAX),
    END
};
static const struct key sampling_keys[] = {
    FLT("temperature", sampling.temperature, 0, INFINITY, 0),
    FLT("top_p", sampling.top_p, 0, 1, F_LO_OPEN),
    INT("top_k", sampling.top_k, 0, INT_MAX),
    FLT("min_p", sampling.min_p, 0, 1, 0),
    FLT("repetition_penalty", sampling.repetition_penalty, 0, INFINITY, F_LO_OPEN),
    FLT("presence_penalty", sampling.presence_penalty, -2, 2, 0),
    FLT("frequency_penalty", sampling.frequency_penalty, -2, 2, 0),
    I64("seed", sampling.seed, -1, LLONG_MAX),
    INT("max_tokens", sampling.max_tokens, 1, INT_MAX),
    END
};
static const struct key log_keys[] = {
    ENUM("level", log.level, level_names),
    END
};
static const struct key root_keys[] = {
    GROUP("model", model_keys),
    GROUP("backend", backend_keys),
    GROUP("server", server_keys),
    GROUP("sampling", sampling_keys),
    GROUP("log", log_keys),
    END
};

/* The keys of one backend.layers entry; offsets into struct porta_layer_range. */
static const struct key range_keys[] = {
    { .name = "backend", .type = K_STR, .off = offsetof(struct porta_layer_range, backend),
      .size = PORTA_CFG_WORD_MAX, .choices = backend_names },
    { .name = "from", .type = K_INT, .off = offsetof(struct porta_layer_range, from),
      .ilo = 0, .ihi = PORTA_CFG_MAX_LAYER },
    { .name = "to", .type = K_INT, .off = offsetof(struct porta_layer_range, to),
      .ilo = 0, .ihi = PORTA_CFG_MAX_LAYER },
    END
};

/* ---- messages ---- */

/* "who" is the message prefix naming the source and key: "config/x.cfg:12: model.n_ctx"
 * or "command line: model.n_ctx". */
#define WHO_MAX (PORTA_CFG_PATH_MAX + 320)
#define KEYPATH_MAX 256

__attribute__((format(printf, 2, 3)))
static int bad(const char *who, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    porta_err("%s: %s", who, msg);
    return PORTA_E_CONFIG;
}

/* "cpu, opencl, hip" */
static const char *join(const char *const *words, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; words[i]; i++) {
        int w = snprintf(buf + len, n - len, "%s%s", i ? ", " : "", words[i]);
        if (w < 0 || (size_t)w >= n - len)
            break;
        len += (size_t)w;
    }
    return buf;
}

static const char *key_list(const struct key *keys, char *buf, size_t n)
{
    const char *names[32];
    int i = 0;
    for (; keys[i].name && i < 31; i++)
        names[i] = keys[i].name;
    names[i] = NULL;
    return join(names, buf, n);
}

static const char *type_name(int t)
{
    switch (t) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "nothing";
    }
}

/* ---- the checks every value goes through, whatever its source ---- */

static int put_int(void *base, const struct key *k, const char *who, long long v)
{
    if (v < k->ilo || v > k->ihi) {
        long long unbounded = k->type == K_I64 ? LLONG_MAX : INT_MAX;
        if (k->ihi == unbounded)
            return bad(who, "%lld must be >= %lld", v, k->ilo);
        return bad(who, "%lld must be in %lld..%lld", v, k->ilo, k->ihi);
    }
    if (k->type == K_I64)
        *(int64_t *)((char *)base + k->off) = v;
    else
        *(int *)((char *)base + k->off) = (int)v;
    return 0;
}

static int put_float(void *base, const struct key *k, const char *who, double v)
{
    if (!isfinite(v))
        return bad(who, "%g is not a finite number", v);
    bool lo_open = k->flags & F_LO_OPEN;
    bool low = lo_open ? !(v > k->flo) : v < k->flo;
    if (low || v > k->fhi) {
        if (isinf(k->fhi))
            return bad(who, "%g must be %s %g", v, lo_open ? ">" : ">=", k->flo);
        return bad(who, "%g must be in %c%g, %g]", v, lo_open ? '(' : '[', k->flo, k->fhi);
    }
    float f = (float)v;
    if (f == 0)
        f = 0;                      /* no -0: the dump prints it as an integer 0 */
    *(float *)((char *)base + k->off) = f;
    return 0;
}

/* Copies s into a zero-filled buffer of n bytes; the caller checked the length. */
static void set_str(char *dst, size_t n, const char *s)
{
    size_t len = strlen(s);
    memcpy(dst, s, len);
    memset(dst + len, 0, n - len);
}

static int check_choice(const char *who, const char *s, const char *const *choices)
{
    for (int i = 0; choices[i]; i++)
        if (!strcmp(s, choices[i]))
            return 0;
    char list[128];
    return bad(who, "\"%.64s\" is not one of %s", s, join(choices, list, sizeof list));
}

static int put_str(void *base, const struct key *k, const char *who, const char *s)
{
    if (k->choices && check_choice(who, s, k->choices))
        return PORTA_E_CONFIG;
    size_t len = strlen(s);
    if (len >= k->size)
        return bad(who, "string of %zu bytes, at most %zu allowed", len, k->size - 1);
    if ((k->flags & F_NONEMPTY) && len == 0)
        return bad(who, "must not be empty");
    if (k->flags & F_WORD)
        for (size_t i = 0; i < len; i++)
            if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) ||
                  strchr("._-", s[i])))
                return bad(who, "\"%.64s\": only a-z, 0-9, '.', '_' and '-' are allowed", s);
    set_str((char *)base + k->off, k->size, s);
    return 0;
}

/* Appends one backend name to an order list being built. */
static int order_add(char (*order)[PORTA_CFG_WORD_MAX], int *n, const char *who, const char *s)
{
    if (check_choice(who, s, backend_names))
        return PORTA_E_CONFIG;
    for (int i = 0; i < *n; i++)
        if (!strcmp(order[i], s))
            return bad(who, "\"%s\" is listed twice", s);
    if (*n >= PORTA_CFG_MAX_ORDER)
        return bad(who, "more than %d entries", PORTA_CFG_MAX_ORDER);
    set_str(order[(*n)++], PORTA_CFG_WORD_MAX, s);
    return 0;
}

/* Appends one complete layer range, checking it against those before it. */
static int range_add(struct porta_layer_range *ranges, int *n, const char *who,
                     const struct porta_layer_range *r)
{
    if (*n >= PORTA_CFG_MAX_RANGES)
        return bad(who, "more than %d ranges", PORTA_CFG_MAX_RANGES);
    if (r->from > r->to)
        return bad(who, "from %d is greater than to %d", r->from, r->to);
    for (int i = 0; i < *n; i++)
        if (r->from <= ranges[i].to && ranges[i].from <= r->to)
            return bad(who, "layers %d..%d overlap backend.layers[%d] (layers %d..%d)", r->from,
                       r->to, i, ranges[i].from, ranges[i].to);
    ranges[(*n)++] = *r;
    return 0;
}

/* ---- reading a libconfig tree ---- */

/* libconfig records an @include'd file by the name written in the @include; show it joined
 * to the directory of the main file, where it was looked up. */
static void display_name(char *out, size_t n, const char *file, const char *sf)
{
    const char *slash = strrchr(file, '/');
    if (!sf || !strcmp(sf, file))
        snprintf(out, n, "%s", file);
    else if (sf[0] != '/' && slash)
        snprintf(out, n, "%.*s/%s", (int)(slash - file), file, sf);
    else
        snprintf(out, n, "%s", sf);
}

static void where(char *who, const config_setting_t *s, const char *file, const char *keypath)
{
    char name[PORTA_CFG_PATH_MAX];
    display_name(name, sizeof name, file, config_setting_source_file(s));
    snprintf(who, WHO_MAX, "%s:%u: %s", name, config_setting_source_line(s), keypath);
}

static int walk(const config_setting_t *grp, const struct key *keys, void *base,
                const char *file, const char *prefix);

static int read_order(const config_setting_t *s, void *base,
                      const char *file, const char *keypath, const char *who)
{
    char order[PORTA_CFG_MAX_ORDER][PORTA_CFG_WORD_MAX];
    int n = 0, len = config_setting_length(s);
    if (len == 0)
        return bad(who, "must name at least one backend");
    if (len > PORTA_CFG_MAX_ORDER)
        return bad(who, "%d entries, at most %d (each of cpu, opencl, hip once)", len,
                   PORTA_CFG_MAX_ORDER);
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char ewho[WHO_MAX], epath[KEYPATH_MAX + 16];
        snprintf(epath, sizeof epath, "%s[%d]", keypath, i);
        where(ewho, e, file, epath);
        if (config_setting_type(e) != CONFIG_TYPE_STRING)
            return bad(ewho, "expected a string, got %s", type_name(config_setting_type(e)));
        if (order_add(order, &n, ewho, config_setting_get_string(e)))
            return PORTA_E_CONFIG;
    }
    struct porta_config *cfg = base;
    memset(cfg->backend.order, 0, sizeof cfg->backend.order);
    memcpy(cfg->backend.order, order, sizeof order[0] * (size_t)n);
    cfg->backend.n_order = n;
    return 0;
}

static int read_layers(const config_setting_t *s, void *base, const char *file,
                       const char *keypath, const char *who)
{
    struct porta_layer_range ranges[PORTA_CFG_MAX_RANGES];
    int n = 0, len = config_setting_length(s);
    if (len > PORTA_CFG_MAX_RANGES)
        return bad(who, "%d ranges, at most %d", len, PORTA_CFG_MAX_RANGES);
    memset(ranges, 0, sizeof ranges);
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char ewho[WHO_MAX], epath[KEYPATH_MAX + 16];
        snprintf(epath, sizeof epath, "%s[%d]", keypath, i);
        where(ewho, e, file, epath);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP)
            return bad(ewho, "expected a group { backend = ...; from = ...; to = ...; }, got %s",
                       type_name(config_setting_type(e)));
        struct porta_layer_range r;
        memset(&r, 0, sizeof r);
        r.from = r.to = -1;             /* -1: absent, the schema never stores it */
        int rc = walk(e, range_keys, &r, file, epath);
        if (rc)
            return rc;
        const char *missing = !r.backend[0] ? "backend" : r.from < 0 ? "from"
                              : r.to < 0 ? "to" : NULL;
        if (missing)
            return bad(ewho, "missing key \"%s\"", missing);
        if (range_add(ranges, &n, ewho, &r))
            return PORTA_E_CONFIG;
    }
    struct porta_config *cfg = base;
    memcpy(cfg->backend.layers, ranges, sizeof ranges);
    cfg->backend.n_layers = n;
    return 0;
}

static int apply(const config_setting_t *s, const struct key *k, void *base, const char *file,
                 const char *keypath)
{
    char who[WHO_MAX];
    int t = config_setting_type(s);
    bool is_int = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
    where(who, s, file, keypath);
    switch (k->type) {
    case K_GROUP:
        if (t != CONFIG_TYPE_GROUP)
            return bad(who, "expected a group, got %s", type_name(t));
        return walk(s, k->sub, base, file, keypath);
    case K_INT:
    case K_I64:
        if (!is_int)
            return bad(who, "expected an integer, got %s", type_name(t));
        return put_int(base, k, who, config_setting_get_int64(s));
    case K_FLOAT:
        if (is_int)
            return put_float(base, k, who, (double)config_setting_get_int64(s));
        if (t != CONFIG_TYPE_FLOAT)
            return bad(who, "expected a number, got %s", type_name(t));
        return put_float(base, k, who, config_setting_get_float(s));
    case K_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            return bad(who, "expected a boolean (true or false), got %s", type_name(t));
        *(bool *)((char *)base + k->off) = config_setting_get_bool(s) != 0;
        return 0;
    case K_STR:
        if (t != CONFIG_TYPE_STRING)
            return bad(who, "expected a string, got %s", type_name(t));
        return put_str(base, k, who, config_setting_get_string(s));
    case K_ORDER:
        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
            return bad(who, "expected an array of backend names, got %s", type_name(t));
        return read_order(s, base, file, keypath, who);
    case K_LAYERS:
        /* () is a list; an empty [] parses as an array and means the same */
        if (t != CONFIG_TYPE_LIST && !(t == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0))
            return bad(who, "expected a list of ranges ( { ... }, ... ), got %s", type_name(t));
        return read_layers(s, base, file, keypath, who);
    }
    return bad(who, "internal error: unknown key type");
}

static const struct key *find_key(const struct key *keys, const char *name)
{
    for (int i = 0; keys[i].name; i++)
        if (!strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

/* Applies every setting of a group; prefix is the group's key path ("" at the root). */
static int walk(const config_setting_t *grp, const struct key *keys, void *base,
                const char *file, const char *prefix)
{
    int len = config_setting_length(grp);
    for (int i = 0; i < len; i++) {
        const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        char keypath[KEYPATH_MAX];
        snprintf(keypath, sizeof keypath, "%s%s%s", prefix, *prefix ? "." : "", name);
        const struct key *k = find_key(keys, name);
        if (!k) {
            char who[WHO_MAX], list[256];
            where(who, s, file, keypath);
            return bad(who, "unknown key (known here: %s)", key_list(keys, list, sizeof list));
        }
        int rc = apply(s, k, base, file, keypath);
        if (rc)
            return rc;
    }
    return 0;
}

/* libconfig 1.5 reads an integer literal beyond a signed 32-bit int without its L suffix as a
 * truncated int, silently. Scan the text (outside strings and comments) and refuse such
 * literals instead. */
static int check_int_literals(const char *text, const char *file)
{
    int line = 1;
    for (const char *p = text; *p;) {
        if (*p == '\n') {
            line++;
            p++;
        } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
                line += *p == '\n';
            p += *p ? 2 : 0;
        } else if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                line += *p == '\n';
                if (*p == '\\' && p[1])
                    p++;
            }
            p += *p ? 1 : 0;
        } else if (isalpha((unsigned char)*p) || *p == '*' || *p == '@') {
            while (isalnum((unsigned char)*p) || strchr("_*-@", *p))
                p++;
        } else if (isdigit((unsigned char)*p) ||
                   ((*p == '-' || *p == '+') && isdigit((unsigned char)p[1]))) {
            const char *q = p + 1;
            bool fl = false, hex = (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'));
            while (isalnum((unsigned char)*q) || *q == '.' ||
                   ((*q == '-' || *q == '+') && !hex && (q[-1] == 'e' || q[-1] == 'E'))) {
                fl |= *q == '.' || (!hex && (*q == 'e' || *q == 'E'));
                q++;
            }
            if (!fl && q[-1] != 'L') {
                errno = 0;
                long long v = strtoll(p, NULL, hex ? 16 : 10);
                bool big = errno == ERANGE || v < INT_MIN || v > INT_MAX;
                if (big) {
                    int n = (int)(q - p) > 40 ? 40 : (int)(q - p);
                    porta_err("%s:%d: integer %.*s does not fit in a signed 32-bit int; write "
                              "%.*sL for a 64-bit integer", file, line, n, p, n, p);
                    return PORTA_E_CONFIG;
                }
            }
            p = q;
        } else {
            p++;
        }
    }
    return 0;
}

/* Reads the whole file (for the literal scan) and reports why it cannot be. */
static int read_text(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, len = 0;
    if (!f) {
        porta_err("%s: cannot open: %s", path, strerror(errno));
        return PORTA_E_IO;
    }
    for (;;) {
        if (cap - len < 4096) {
            if (cap >= (16u << 20)) {
                porta_err("%s: larger than 16 MiB, not a config file", path);
                goto fail_cfg;
            }
            char *nb = realloc(buf, cap + 65536);
            if (!nb) {
                porta_err("%s: out of memory reading it", path);
                free(buf);
                fclose(f);
                return PORTA_E_NOMEM;
            }
            buf = nb;
            cap += 65536;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        porta_err("%s: cannot read: %s", path, strerror(errno));
        free(buf);
        fclose(f);
        return PORTA_E_IO;
    }
    fclose(f);
    buf[len] = 0;
    if (strlen(buf) != len) {
        porta_err("%s: contains a NUL byte, not a config file", path);
        free(buf);
        return PORTA_E_CONFIG;
    }
    *out = buf;
    return 0;
fail_cfg:
    free(buf);
    fclose(f);
    return PORTA_E_CONFIG;
}

int porta_config_load(const char *path, struct porta_config *cfg)
{
    struct porta_config tmp;
    config_t c;
    char *text = NULL, dir[PORTA_CFG_PATH_MAX];
    int rc;
    if (!path || !cfg) {
        porta_err("porta_config_load: NULL %s", path ? "config" : "path");
        return PORTA_E_INVAL;
    }
    rc = read_text(path, &text);
    if (rc)
        return rc;
    rc = check_int_literals(text, path);
    free(text);
    if (rc)
        return rc;

    porta_config_defaults(&tmp);
    config_init(&c);
    /* @include "x.cfg" is relative to this file's directory, not to the CWD */
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        slash[slash == dir ? 1 : 0] = 0;
        config_set_include_dir(&c, dir);
    }
    if (!config_read_file(&c, path)) {
        if (config_error_type(&c) == CONFIG_ERR_FILE_IO) {
            porta_err("%s: cannot read (a directory, or an @include that cannot be opened)",
                      path);
            rc = PORTA_E_IO;
        } else {
            char name[PORTA_CFG_PATH_MAX];
            display_name(name, sizeof name, path, config_error_file(&c));
            porta_err("%s:%d: %s", name, config_error_line(&c), config_error_text(&c));
            rc = PORTA_E_CONFIG;
        }
        goto fail;
    }
    rc = walk(config_root_setting(&c), root_keys, &tmp, path, "");
    if (rc)
        goto fail;
    config_destroy(&c);
    memcpy(cfg, &tmp, sizeof tmp);
    return 0;
fail:
    config_destroy(&c);
    return rc;
}

/* ---- command-line overrides ---- */

static int parse_int(const char *who, const char *s, long long *v)
{
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    if (end == s || *end || isspace((unsigned char)*s))
        return bad(who, "\"%.64s\" is not an integer", s);
    if (errno == ERANGE)
        return bad(who, "%.64s is out of range", s);
    return 0;
}

static int parse_bool(const char *who, const char *s, bool *v)
{
    static const char *const yes[] = { "true", "yes", "on", "1", NULL };
    static const char *const no[] = { "false", "no", "off", "0", NULL };
    for (int i = 0; yes[i]; i++) {
        if (!strcasecmp(s, yes[i])) {
            *v = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *v = false;
            return 0;
        }
    }
    return bad(who, "\"%.64s\" is not a boolean (true/false, yes/no, on/off, 1/0)", s);
}

/* Splits s at commas into trimmed pieces (modifies s); returns the count or -1 if > max. */
static int split(char *s, char **pieces, int max)
{
    int n = 0;
    for (char *p = s;;) {
        char *c = strchr(p, ',');
        if (c)
            *c = 0;
        while (isspace((unsigned char)*p))
            p++;
        char *e = p + strlen(p);
        while (e > p && isspace((unsigned char)e[-1]))
            *--e = 0;
        if (n == max)
            return -1;
        pieces[n++] = p;
        if (!c)
            return n;
        p = c + 1;
    }
}

static int set_order(struct porta_config *cfg, const char *who, const char *value)
{
    char buf[256], *names[PORTA_CFG_MAX_ORDER];
    char order[PORTA_CFG_MAX_ORDER][PORTA_CFG_WORD_MAX];
    int n = 0;
    if (strlen(value) >= sizeof buf)
        return bad(who, "list too long");
    snprintf(buf, sizeof buf, "%s", value);
    int cnt = split(buf, names, PORTA_CFG_MAX_ORDER);
    if (cnt < 0)
        return bad(who, "more than %d entries (each of cpu, opencl, hip once)",
                   PORTA_CFG_MAX_ORDER);
    for (int i = 0; i < cnt; i++)
        if (order_add(order, &n, who, names[i]))
            return PORTA_E_CONFIG;
    memset(cfg->backend.order, 0, sizeof cfg->backend.order);
    memcpy(cfg->backend.order, order, sizeof order[0] * (size_t)n);
    cfg->backend.n_order = n;
    return 0;
}

/* "hip:0-19,cpu:20-27" or "cpu:5" (one layer); "" = no ranges. */
static int set_layers(struct porta_config *cfg, const char *who, const char *value)
{
    char buf[2048], *items[PORTA_CFG_MAX_RANGES];
    struct porta_layer_range ranges[PORTA_CFG_MAX_RANGES];
    int n = 0, cnt = 0;
    memset(ranges, 0, sizeof ranges);
    if (strlen(value) >= sizeof buf)
        return bad(who, "list too long");
    snprintf(buf, sizeof buf, "%s", value);
    if (buf[strspn(buf, " \t")]) {
        cnt = split(buf, items, PORTA_CFG_MAX_RANGES);
        if (cnt < 0)
            return bad(who, "more than %d ranges", PORTA_CFG_MAX_RANGES);
    }
    for (int i = 0; i < cnt; i++) {
        char ewho[WHO_MAX + 16];
        snprintf(ewho, sizeof ewho, "%s[%d]", who, i);
        struct porta_layer_range r;
        char *colon = strchr(items[i], ':'), *end;
        memset(&r, 0, sizeof r);
        if (!colon)
            return bad(ewho, "\"%.64s\" is not backend:from-to", items[i]);
        *colon = 0;
        if (check_choice(ewho, items[i], backend_names))
            return PORTA_E_CONFIG;
        set_str(r.backend, sizeof r.backend, items[i]);
        const char *num = colon + 1;
        errno = 0;
        long a = strtol(num, &end, 10), b = a;
        if (*end == '-' && end > num)
            b = strtol(end + 1, &end, 10);
        if (end == num || *end || !isdigit((unsigned char)*num) || errno ||
            a > PORTA_CFG_MAX_LAYER || b < 0 || b > PORTA_CFG_MAX_LAYER)
            return bad(ewho, "\"%.64s\" is not a layer range from-to within 0..%d", num,
                       PORTA_CFG_MAX_LAYER);
        r.from = (int)a;
        r.to = (int)b;
        if (range_add(ranges, &n, ewho, &r))
            return PORTA_E_CONFIG;
    }
    memcpy(cfg->backend.layers, ranges, sizeof ranges);
    cfg->backend.n_layers = n;
    return 0;
}

int porta_config_set(struct porta_config *cfg, const char *key, const char *value)
{
    char who[WHO_MAX];
    const struct key *keys = root_keys, *k = NULL;
    struct porta_config tmp;
    int rc = 0;
    if (!cfg || !key || !value) {
        porta_err("command line: %s: no value", key ? key : "(no key)");
        return PORTA_E_CONFIG;
    }
    snprintf(who, sizeof who, "command line: %s", key);
    /* walk the dotted path through the schema */
    for (const char *p = key;;) {
        size_t len = strcspn(p, ".");
        k = NULL;
        for (int i = 0; keys && keys[i].name; i++)
            if (strlen(keys[i].name) == len && !strncmp(keys[i].name, p, len))
                k = &keys[i];
        if (!k)
            return bad(who, "unknown key");
        if (!p[len])
            break;
        if (k->type != K_GROUP)
            return bad(who, "unknown key");
        keys = k->sub;
        p += len + 1;
    }
    if (k->type == K_GROUP) {
        char list[256];
        return bad(who, "is a group; name one of its keys: %s", key_list(k->sub, list,
                                                                          sizeof list));
    }
    memcpy(&tmp, cfg, sizeof tmp);
    switch (k->type) {
    case K_INT:
    case K_I64: {
        long long v;
        rc = parse_int(who, value, &v);
        if (!rc)
            rc = put_int(&tmp, k, who, v);
        break;
    }
    case K_FLOAT: {
        char *end;
        double v = strtod(value, &end);
        if (end == value || *end || isspace((unsigned char)*value))
            rc = bad(who, "\"%.64s\" is not a number", value);
        else
            rc = put_float(&tmp, k, who, v);
        break;
    }
    case K_BOOL: {
        bool v = false;
        rc = parse_bool(who, value, &v);
        if (!rc)
            *(bool *)((char *)&tmp + k->off) = v;
        break;
    }
    case K_STR:
        rc = put_str(&tmp, k, who, value);
        break;
    case K_ORDER:
        rc = set_order(&tmp, who, value);
        break;
    case K_LAYERS:
        rc = set_layers(&tmp, who, value);
        break;
    case K_GROUP:
        break;
    }
    if (rc)
        return rc;
    memcpy(cfg, &tmp, sizeof tmp);
    return 0;
}

/* ---- defaults, dump, comparison ---- */

void porta_config_defaults(struct porta_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    set_str(cfg->model.path, sizeof cfg->model.path, "models/smollm2-135m-instruct-q4_1.gguf");
    set_str(cfg->model.alias, sizeof cfg->model.alias, "smollm2");
    cfg->model.n_ctx = 4096;
    cfg->model.n_batch = 64;
    set_str(cfg->model.kv_type, sizeof cfg->model.kv_type, "f16");
    set_str(cfg->model.chat_template, sizeof cfg->model.chat_template, "auto");

    for (int i = 0; backend_names[i]; i++)          /* auto order: hip, opencl, cpu */
        set_str(cfg->backend.order[i], PORTA_CFG_WORD_MAX, backend_names[2 - i]);
    cfg->backend.n_order = 3;
    cfg->backend.cpu.threads = 0;
    set_str(cfg->backend.cpu.kernels, sizeof cfg->backend.cpu.kernels, "auto");
    cfg->backend.cpu.amx = true;
    cfg->backend.opencl.platform = -1; /* auto: the first GPU or accelerator */
    cfg->backend.opencl.device = -1;
    cfg->backend.opencl.clblast = true;
    cfg->backend.opencl.row_packs = true;
    cfg->backend.hip.device = 0;
    cfg->backend.hip.weight_cache_mb = 8192;
    cfg->backend.n_layers = 0;

    set_str(cfg->server.host, sizeof cfg->server.host, "127.0.0.1");
    cfg->server.port = 8080;
    cfg->server.slots = 4;
    cfg->server.queue = 64;
    cfg->server.max_body_kb = 1024;
    cfg->server.max_tokens = 4096;
    cfg->server.timeout_s = 600;

    cfg->sampling.temperature = 0.7f;
    cfg->sampling.top_p = 0.95f;
    cfg->sampling.top_k = 40;
    cfg->sampling.min_p = 0.05f;
    cfg->sampling.repetition_penalty = 1.0f;
    cfg->sampling.presence_penalty = 0.0f;
    cfg->sampling.frequency_penalty = 0.0f;
    cfg->sampling.seed = -1;
    cfg->sampling.max_tokens = 256;

    set_str(cfg->log.level, sizeof cfg->log.level, "info");
}

static void dump_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\x%02x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void dump_keys(FILE *f, const struct key *keys, const struct porta_config *cfg, int ind)
{
    for (int i = 0; keys[i].name; i++) {
        const struct key *k = &keys[i];
        const char *p = (const char *)cfg + k->off;
        fprintf(f, "%*s%s = ", ind, "", k->name);
        switch (k->type) {
        case K_GROUP:
            fputs("{\n", f);
            dump_keys(f, k->sub, cfg, ind + 2);
            fprintf(f, "%*s};\n", ind, "");
            continue;
        case K_INT:
            fprintf(f, "%d", *(const int *)p);
            break;
        case K_I64: {
            long long v = *(const int64_t *)p;
            fprintf(f, "%lld%s", v, v < INT_MIN || v > INT_MAX ? "L" : "");
            break;
        }
        case K_FLOAT: {
            char num[48];
            snprintf(num, sizeof num, "%.9g", (double)*(const float *)p);
            if (!strpbrk(num, ".e"))            /* libconfig reads "1" as an integer */
                strcat(num, ".0");
            fputs(num, f);
            break;
        }
        case K_BOOL:
            fputs(*(const bool *)p ? "true" : "false", f);
            break;
        case K_STR:
            dump_str(f, p);
            break;
        case K_ORDER:
            fputc('[', f);
            for (int j = 0; j < cfg->backend.n_order; j++) {
                fputs(j ? ", " : " ", f);
                dump_str(f, cfg->backend.order[j]);
            }
            fputs(" ]", f);
            break;
        case K_LAYERS:
            fputc('(', f);
            for (int j = 0; j < cfg->backend.n_layers; j++) {
                const struct porta_layer_range *r = &cfg->backend.layers[j];
                fprintf(f, "%s\n%*s{ backend = ", j ? "," : "", ind + 2, "");
                dump_str(f, r->backend);
                fprintf(f, "; from = %d; to = %d; }", r->from, r->to);
            }
            fprintf(f, cfg->backend.n_layers ? "\n%*s)" : " )", ind, "");
            break;
        }
        fputs(";\n", f);
    }
}

int porta_config_dump(const struct porta_config *cfg, FILE *f)
{
    fputs("# porta configuration: the effective values (defaults, file, flags)\n", f);
    dump_keys(f, root_keys, cfg, 0);
    if (fflush(f) != 0 || ferror(f)) {
        porta_err("config dump: write failed: %s", strerror(errno));
        return PORTA_E_IO;
    }
    return 0;
}

static bool keys_equal(const struct key *keys, const struct porta_config *a,
                       const struct porta_config *b)
{
    for (int i = 0; keys[i].name; i++) {
        const struct key *k = &keys[i];
        const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
        bool eq = true;
        switch (k->type) {
        case K_GROUP: eq = keys_equal(k->sub, a, b); break;
        case K_INT: eq = *(const int *)pa == *(const int *)pb; break;
        case K_I64: eq = *(const int64_t *)pa == *(const int64_t *)pb; break;
        case K_FLOAT: eq = *(const float *)pa == *(const float *)pb; break;
        case K_BOOL: eq = *(const bool *)pa == *(const bool *)pb; break;
        case K_STR: eq = !strcmp(pa, pb); break;
        case K_ORDER:
            eq = a->backend.n_order == b->backend.n_order;
            for (int j = 0; eq && j < a->backend.n_order; j++)
                eq = !strcmp(a->backend.order[j], b->backend.order[j]);
            break;
        case K_LAYERS:
            eq = a->backend.n_layers == b->backend.n_layers;
            for (int j = 0; eq && j < a->backend.n_layers; j++) {
                const struct porta_layer_range *ra = &a->backend.layers[j];
                const struct porta_layer_range *rb = &b->backend.layers[j];
                eq = !strcmp(ra->backend, rb->backend) && ra->from == rb->from &&
                     ra->to == rb->to;
            }
            break;
        }
        if (!eq)
            return false;
    }
    return true;
}

bool porta_config_equal(const struct porta_config *a, const struct porta_config *b)
{
    return keys_equal(root_keys, a, b);
}

enum porta_dtype porta_config_kv_dtype(const struct porta_config *cfg)
{
    return strcmp(cfg->model.kv_type, "f32") ? PORTA_F16 : PORTA_F32;
}

enum porta_log_level porta_config_log_level(const struct porta_config *cfg)
{
    for (int i = 0; level_names[i]; i++)
        if (!strcmp(cfg->log.level, level_names[i]))
            return (enum porta_log_level)i;
    return PORTA_LOG_INFO;
}

static const char *or_null(const char *s) { return s[0] ? s : NULL; }

int porta_config_backend_cfg(const struct porta_config *cfg, const char *backend,
                             struct porta_backend_cfg *out)
{
    memset(out, 0, sizeof *out);
    out->threads = cfg->backend.cpu.threads;
    out->cpu_kernels = cfg->backend.cpu.kernels;
    out->cpu_no_amx = !cfg->backend.cpu.amx;
    if (!strcmp(backend, "cpu"))
        return 0;
    if (!strcmp(backend, "opencl")) {
        out->platform = cfg->backend.opencl.platform;
        out->device = cfg->backend.opencl.device;
        out->device_name = or_null(cfg->backend.opencl.device_name);
        out->kernel_dir = or_null(cfg->backend.opencl.kernel_dir);
        out->cache_dir = or_null(cfg->backend.opencl.cache_dir);
        out->clblast = cfg->backend.opencl.clblast;
        out->opencl_no_row_packs = !cfg->backend.opencl.row_packs;
        return 0;
    }
    if (!strcmp(backend, "hip")) {
        out->device = cfg->backend.hip.device;
        return 0;
    }
    return PORTA_E_NOTFOUND;
}

int porta_config_check_layers(const struct porta_config *cfg, int n_layer)
{
    for (int i = 0; i < cfg->backend.n_layers; i++) {
        const struct porta_layer_range *r = &cfg->backend.layers[i];
        if (r->to >= n_layer) {
            porta_err("backend.layers[%d]: layers %d..%d, but the model has %d layers (0..%d)", i,
                      r->from, r->to, n_layer, n_layer - 1);
            return PORTA_E_INVAL;
        }
    }
    return 0;
}
