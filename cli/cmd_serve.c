/* cmd_serve.c - `porta serve -c CFG [-m MODEL] [--host H] [--port P] [--slots N] [--alias A]
 * [--api-key K] [--backend LIST]`: listens first (so /health says 503 while the model loads),
 * then loads the model with one sequence per slot and serves until SIGINT / SIGTERM. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "cli.h"
#include "server/server.h"
#include "tokenizer.h"

static int pick_template(const struct porta_config *cfg, const struct porta_model *m,
                         enum porta_chat_tmpl *out)
{
    if (strcmp(cfg->model.chat_template, "auto") != 0)
        return porta_chat_tmpl_from_name(cfg->model.chat_template, out);
    struct porta_str s;
    char *txt = NULL;
    if (porta_gguf_get_str(m->gguf, "tokenizer.chat_template", &s) == 0 &&
        (txt = malloc(s.len + 1))) {
        memcpy(txt, s.ptr, s.len);
        txt[s.len] = 0;
    }
    int rc = porta_chat_detect(txt, out);
    free(txt);
    return rc;
}

int cmd_serve(int argc, char **argv)
{
    struct porta_config cfg;
    char **rest = NULL;
    int n_rest;
    struct porta_server *srv = NULL;
    struct cli_engine e;
    struct porta_tokenizer *tok = NULL;
    memset(&e, 0, sizeof e);
    int rc = cli_parse(argc, argv, &cfg, &rest, &n_rest);
    if (rc)
        goto done;
    if (n_rest > 0) {
        porta_err("serve: unknown argument '%s' (see porta help)", rest[0]);
        rc = PORTA_E_INVAL;
        goto done;
    }
    if (!cfg.model.path[0]) {
        porta_err("serve: no model: pass -m FILE or set model.path in the config");
        rc = PORTA_E_INVAL;
        goto done;
    }
    /* every thread started from here on inherits this mask; main takes the signals */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((rc = porta_server_create(&cfg, &srv)))
        goto done;
    enum porta_chat_tmpl tmpl;
    if ((rc = cli_engine_open(&cfg, cfg.server.slots, &e)) ||
        (rc = porta_tokenizer_load(e.model->gguf, &tok)) ||
        (rc = pick_template(&cfg, e.model, &tmpl)) ||
        (rc = porta_server_attach(srv, e.model, e.ctx, tok, tmpl)))
        goto done;
    int sig = 0;
    sigwait(&sigs, &sig);
    porta_info("serve: %s received, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
done:
    porta_server_destroy(srv);
    porta_tokenizer_destroy(tok);
    cli_engine_close(&e);
    free(rest);
    return rc;
}
