/* porta.h - status codes, logging and element types shared by every module.
 * Everything public in porta is prefixed porta_ / PORTA_. */
#ifndef PORTA_H
#define PORTA_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Status codes: 0 is success, every error is negative. */
enum porta_status {
    PORTA_OK            = 0,
    PORTA_E_NOMEM       = -1,
    PORTA_E_FORMAT      = -2,  /* malformed input file or data */
    PORTA_E_CONFIG      = -3,  /* bad configuration value */
    PORTA_E_DEVICE      = -4,  /* device / driver error */
    PORTA_E_UNSUPPORTED = -5,  /* valid but not implemented here */
    PORTA_E_IO          = -6,  /* file system error */
    PORTA_E_NOTFOUND    = -7,  /* a key / tensor / backend that is absent */
    PORTA_E_INVAL       = -8,  /* bad argument from the caller */
    PORTA_E_RANGE       = -9,  /* value outside its allowed range */
};

/* Name of a status code ("PORTA_E_FORMAT"); never NULL. */
const char *porta_strerror(int status);

enum porta_log_level { PORTA_LOG_DEBUG = 0, PORTA_LOG_INFO, PORTA_LOG_WARN, PORTA_LOG_ERROR };

/* Logs one line to the current sink (stderr by default) if level >= the threshold. */
void porta_log(enum porta_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void porta_vlog(enum porta_log_level level, const char *fmt, va_list ap);
void porta_log_set_level(enum porta_log_level level);
/* Replaces the sink; NULL restores stderr. Used by tests to capture messages. */
typedef void (*porta_log_fn)(enum porta_log_level level, const char *msg, void *user);
void porta_log_set_sink(porta_log_fn fn, void *user);
/* The last message logged at WARN or above (thread-local), for tests and the CLI. */
const char *porta_log_last_error(void);
/* While on (per thread), WARN and ERROR messages are logged at INFO and still kept as the last
 * error: for attempts whose failure is expected and handled, like a backend in backend.order
 * that a later one replaces. */
void porta_log_demote(bool on);

#define porta_err(...)  porta_log(PORTA_LOG_ERROR, __VA_ARGS__)
#define porta_warn(...) porta_log(PORTA_LOG_WARN, __VA_ARGS__)
#define porta_info(...) porta_log(PORTA_LOG_INFO, __VA_ARGS__)
#define porta_dbg(...)  porta_log(PORTA_LOG_DEBUG, __VA_ARGS__)

/* Element / block types. The numeric values are GGUF's ggml_type ids, so a type read from a
 * GGUF file maps directly; values GGUF defines but porta does not support are rejected. */
enum porta_dtype {
    PORTA_F32  = 0,
    PORTA_F16  = 1,
    PORTA_Q4_0 = 2,
    PORTA_Q4_1 = 3,
    PORTA_Q5_0 = 6,
    PORTA_Q5_1 = 7,
    PORTA_Q8_0 = 8,
    PORTA_Q8_1 = 9,
    PORTA_Q2_K = 10,
    PORTA_Q3_K = 11,
    PORTA_Q4_K = 12,
    PORTA_Q5_K = 13,
    PORTA_Q6_K = 14,
    PORTA_Q8_K = 15,
    PORTA_I8   = 24,
    PORTA_I16  = 25,
    PORTA_I32  = 26,
    PORTA_BF16 = 30,
    PORTA_DTYPE_COUNT = 40, /* upper bound of the id space, not a type */
};

/* Checked arithmetic: return false on overflow and leave *out unspecified. */
static inline bool porta_mul_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool porta_add_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Monotonic clock in seconds. */
double porta_time_s(void);

#endif /* PORTA_H */
