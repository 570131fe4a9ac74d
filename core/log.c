/* log.c - porta_log(), status names and the clock. One sink for the whole process;
 * the last error message is kept per thread so the CLI can print it in one line. */
#include "porta.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static enum porta_log_level g_level = PORTA_LOG_INFO;
static porta_log_fn g_sink;
static void *g_sink_user;
static _Thread_local char t_last[1024];
static _Thread_local bool t_demote;

const char *porta_strerror(int status)
{
    switch (status) {
    case PORTA_OK: return "PORTA_OK";
    case PORTA_E_NOMEM: return "PORTA_E_NOMEM";
    case PORTA_E_FORMAT: return "PORTA_E_FORMAT";
    case PORTA_E_CONFIG: return "PORTA_E_CONFIG";
    case PORTA_E_DEVICE: return "PORTA_E_DEVICE";
    case PORTA_E_UNSUPPORTED: return "PORTA_E_UNSUPPORTED";
    case PORTA_E_IO: return "PORTA_E_IO";
    case PORTA_E_NOTFOUND: return "PORTA_E_NOTFOUND";
    case PORTA_E_INVAL: return "PORTA_E_INVAL";
    case PORTA_E_RANGE: return "PORTA_E_RANGE";
    default: return "PORTA_E_UNKNOWN";
    }
}

void porta_log_set_level(enum porta_log_level level) { g_level = level; }

void porta_log_set_sink(porta_log_fn fn, void *user)
{
    g_sink = fn;
    g_sink_user = user;
}

const char *porta_log_last_error(void) { return t_last; }

void porta_log_demote(bool on) { t_demote = on; }

void porta_vlog(enum porta_log_level level, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (level >= PORTA_LOG_WARN) {
        memcpy(t_last, msg, sizeof t_last);
        if (t_demote)
            level = PORTA_LOG_INFO;
    }
    if (level < g_level)
        return;
    if (g_sink) {
        g_sink(level, msg, g_sink_user);
        return;
    }
    static const char *const tags[] = { "debug", "info", "warning", "error" };
    fprintf(stderr, "porta: %s: %s\n", tags[level], msg);
}

void porta_log(enum porta_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    porta_vlog(level, fmt, ap);
    va_end(ap);
}

double porta_time_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
