/* cli.h - shared pieces of the porta command-line tool: option parsing over the config,
 * opening backend + model + context from a config, and the per-command entry points. */
#ifndef PORTA_CLI_H
#define PORTA_CLI_H

#include "backend.h"
#include "config.h"
#include "model.h"

#define CLI_MAX_STAGES 16

/* What every model-loading command opens. With backend.layers, a stage per run of
 * consecutive layers on one backend: model and ctx are the first stage's (the contexts are
 * linked, so porta_forward(ctx) runs them all); be is the first backend of the order. */
struct cli_engine {
    struct porta_backend *be;
    struct porta_model *model;
    struct porta_ctx *ctx;
    int n_stages;                   /* 1 without per-layer placement */
    struct porta_model *stage_model[CLI_MAX_STAGES];
    struct porta_ctx *stage_ctx[CLI_MAX_STAGES];
    struct porta_backend *extra_be[3];  /* other backends that backend.layers opened */
    int n_extra;
};

/* Loads -c/--config (if any) over the defaults, then applies the common flags found in argv
 * (-m, --backend, -t, --ctx, --batch, --kv-type, --kernels, ...). Flags the caller handles
 * itself are left for it: *rest receives the remaining arguments (in order), *n_rest their
 * count. Returns 0 or an error (logged). */
int cli_parse(int argc, char **argv, struct porta_config *cfg, char ***rest, int *n_rest);
/* Opens the first backend of cfg's order, the model and (n_seq > 0) a context; with
 * backend.layers, the backends it names (one that does not open leaves its layers on the
 * first backend, logged) and a model and context per stage. */
int cli_engine_open(const struct porta_config *cfg, int n_seq, struct cli_engine *e);
void cli_engine_close(struct cli_engine *e);
/* Reads a token-id list (JSON array or whitespace/comma separated) from a file ("-" = stdin). */
int cli_read_ids(const char *path, int32_t **ids, int *n);
/* Writes the model-loading progress bar when stderr is a terminal. */
void cli_progress(const char *what, double frac);

int cmd_devices(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_synth(int argc, char **argv);

#endif /* PORTA_CLI_H */
