/* config.h - porta's run-time configuration: one plain struct with every key and its
 * default, read from a libconfig file over the defaults, overridden by command-line flags,
 * every key validated with a "file:line: key: what is wrong" message. */
#ifndef PORTA_CONFIG_H
#define PORTA_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "porta.h"

struct porta_backend_cfg;

#define PORTA_CFG_PATH_MAX   1024   /* file and directory paths */
#define PORTA_CFG_NAME_MAX   128    /* aliases, host names, device names, template names */
#define PORTA_CFG_SECRET_MAX 256    /* server.api_key */
#define PORTA_CFG_WORD_MAX   16     /* enumerated words: "opencl", "avx512", "f16", "info" */
#define PORTA_CFG_MAX_ORDER  3      /* backend.order: each of cpu, opencl, hip at most once */
#define PORTA_CFG_MAX_RANGES 32     /* backend.layers entries */
#define PORTA_CFG_MAX_N_CTX  (1 << 21)
#define PORTA_CFG_MAX_LAYER  65535  /* highest layer index a range may name */

/* One entry of backend.layers: layers from..to (inclusive) run on `backend`. */
struct porta_layer_range {
    char backend[PORTA_CFG_WORD_MAX];   /* "cpu" | "opencl" | "hip" */
    int from, to;                       /* 0 <= from <= to <= PORTA_CFG_MAX_LAYER */
};

/* The effective configuration. Strings live in fixed buffers (always NUL-terminated, the
 * unused tail zeroed), so the struct can be copied and compared freely and nothing is freed.
 * Key names below are the file's keys: model.path is `model.path` in the file and in
 * porta_config_set(). */
struct porta_config {
    struct {
        /* A relative path is kept as written and resolved against the current working
         * directory when the model is opened (as llama.cpp's -m does), not against the
         * config file's directory. "" = none given. */
        char path[PORTA_CFG_PATH_MAX];
        char alias[PORTA_CFG_NAME_MAX];         /* name reported by the server; "" = file name */
        int n_ctx;                              /* 1..PORTA_CFG_MAX_N_CTX tokens per sequence */
        int n_batch;                            /* 1..65536 tokens per prefill chunk */
        char kv_type[PORTA_CFG_WORD_MAX];       /* "f32" | "f16" */
        char chat_template[PORTA_CFG_NAME_MAX]; /* "auto" (from GGUF metadata) or a name that
                                                 * core/chat.c knows; [a-z0-9._-] only */
    } model;
    struct {
        char order[PORTA_CFG_MAX_ORDER][PORTA_CFG_WORD_MAX]; /* tried in turn, first wins */
        int n_order;                                         /* 1..PORTA_CFG_MAX_ORDER */
        struct {
            int threads;                        /* 0 = all cores, else 1..1024 */
            char kernels[PORTA_CFG_WORD_MAX];   /* "auto" | "avx512" | "avx2" | "scalar" */
            bool amx;                           /* AMX tiles for avx512 prefill when present */
        } cpu;
        struct {
            int platform, device;               /* indices; -1 = first usable */
            char device_name[PORTA_CFG_NAME_MAX]; /* substring match; "" = by index */
            char kernel_dir[PORTA_CFG_PATH_MAX];  /* development only; "" = embedded kernels */
            char cache_dir[PORTA_CFG_PATH_MAX];   /* compiled-kernel cache; "" = default */
            bool clblast;                       /* CLBlast for prefill GEMM when available */
            bool row_packs;                     /* CPU devices: matrices repacked by rows */
        } opencl;
        struct {
            int device;                         /* index; -1 = first usable */
            int weight_cache_mb;                /* device weight cache; 0 = size it from the
                                                 * free device memory */
        } hip;
        /* Optional per-layer placement; none = every layer on the first backend that opens.
         * Ranges never overlap (checked); they are kept in the order written. */
        struct porta_layer_range layers[PORTA_CFG_MAX_RANGES];
        int n_layers;
    } backend;
    struct {
        char host[PORTA_CFG_NAME_MAX];          /* listen address, non-empty */
        int port;                               /* 1..65535 */
        char api_key[PORTA_CFG_SECRET_MAX];     /* "" = no authentication */
        int slots;                              /* parallel sequences, 1..256 */
        int queue;                              /* waiting requests beyond the slots, 0..65536 */
        int max_body_kb;                        /* request body limit, 1..1048576 */
        int max_tokens;                         /* cap on a request's max_tokens, >= 1 */
        int timeout_s;                          /* per request; 0 = none */
    } server;
    struct {
        float temperature;                      /* >= 0; 0 = greedy */
        float top_p;                            /* (0, 1] */
        int top_k;                              /* >= 0; 0 = off */
        float min_p;                            /* [0, 1] */
        float repetition_penalty;               /* > 0; 1 = off */
        float presence_penalty;                 /* [-2, 2] */
        float frequency_penalty;                /* [-2, 2] */
        int64_t seed;                           /* -1 = random, else >= 0 */
        int max_tokens;                         /* default generation length, >= 1 */
    } sampling;
    struct {
        char level[PORTA_CFG_WORD_MAX];         /* "debug" | "info" | "warn" | "error" */
    } log;
};

/* Fills *cfg with the built-in defaults (those shown in config/default.cfg). */
void porta_config_defaults(struct porta_config *cfg);

/* Sets *cfg to the defaults overlaid with the file at `path`. Keys absent from the file keep
 * their defaults. Returns 0; PORTA_E_IO (the file cannot be opened or read; message names the
 * path and the reason); PORTA_E_CONFIG for a syntax error or any unknown key, wrong type or
 * bad value, logged as "path:line: key.path: what is wrong". On error *cfg is unchanged.
 * Integers beyond 32 bits must carry libconfig's L suffix (a plain one is rejected rather than
 * truncated). @include paths are relative to the file's directory. */
int porta_config_load(const char *path, struct porta_config *cfg);

/* Overrides one key from text, as a command-line flag does: `key` is a dotted path
 * ("model.n_ctx", "backend.cpu.threads", "sampling.temperature"), `value` the flag's text.
 * Lists: "backend.order" takes "hip,opencl,cpu"; "backend.layers" takes
 * "hip:0-19,cpu:20-27" ("" clears it). Booleans take true/false/yes/no/on/off/1/0.
 * Same checks as the file; errors are logged as "command line: key: what is wrong".
 * Returns 0 or PORTA_E_CONFIG (unknown key, unparsable or bad value; *cfg unchanged). */
int porta_config_set(struct porta_config *cfg, const char *key, const char *value);

/* Writes the whole effective configuration to f in libconfig syntax; loading that text back
 * gives a configuration porta_config_equal() to cfg. Returns 0 or PORTA_E_IO. */
int porta_config_dump(const struct porta_config *cfg, FILE *f);

/* True when every key of a and b has the same value. */
bool porta_config_equal(const struct porta_config *a, const struct porta_config *b);

/* model.kv_type as a dtype: PORTA_F32 or PORTA_F16. */
enum porta_dtype porta_config_kv_dtype(const struct porta_config *cfg);

/* log.level as a porta log level. */
enum porta_log_level porta_config_log_level(const struct porta_config *cfg);

/* Fills the open parameters of the named backend ("cpu" | "opencl" | "hip") from cfg. The
 * string fields point into cfg (NULL where the key is ""), so cfg must outlive *out's use.
 * Returns 0 or PORTA_E_NOTFOUND for another name. */
int porta_config_backend_cfg(const struct porta_config *cfg, const char *backend,
                             struct porta_backend_cfg *out);

/* Checks backend.layers against the model's layer count: a range past the last layer is an
 * error (logged, naming the range), not silently ignored. Returns 0 or PORTA_E_INVAL. */
int porta_config_check_layers(const struct porta_config *cfg, int n_layer);

#endif /* PORTA_CONFIG_H */
