/* buf.c - the server's growable byte buffers, UTF-8 repair for text that goes into JSON, and
 * the constant-time comparison used for the API key. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

static int reserve(struct srv_buf *b, size_t extra)
{
    size_t need;
    if (!porta_add_ok(b->n, extra, &need) || !porta_add_ok(need, 1, &need))
        return PORTA_E_NOMEM;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        if (!porta_mul_ok(cap, 2, &cap))
            return PORTA_E_NOMEM;
    char *p = realloc(b->p, cap);
    if (!p)
        return PORTA_E_NOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int srv_buf_add(struct srv_buf *b, const void *s, size_t n)
{
    int rc = reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int srv_buf_puts(struct srv_buf *b, const char *s)
{
    return srv_buf_add(b, s, strlen(s));
}

int srv_buf_printf(struct srv_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PORTA_E_INVAL;
    int rc = reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
    return 0;
}

void srv_buf_free(struct srv_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* length of the valid UTF-8 character at s (1..4), or 0 if the bytes do not form one */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (len > n)
        return 0;
    unsigned cp = c & (0x3f >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

int srv_buf_add_utf8(struct srv_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t l = utf8_char(u + i, n - i);
        if (l) {
            i += l;
            continue;
        }
        int rc = srv_buf_add(b, s + run, i - run);
        if (!rc)
            rc = srv_buf_add(b, "\xef\xbf\xbd", 3);
        if (rc)
            return rc;
        i++;
        run = i;
    }
    return srv_buf_add(b, s + run, n - run);
}

bool srv_ct_equal(const char *a, size_t na, const char *b, size_t nb)
{
    /* every byte of a is compared (against b cyclically), so the time depends on na only */
    volatile unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < na; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)(nb ? b[i % nb] : 0);
    return diff == 0;
}
