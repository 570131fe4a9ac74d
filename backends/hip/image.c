/* image.c - reads the headers of the GPU code objects embedded in porta: clang offload
 * bundles (hipcc --genco; one entry per target) and NVIDIA fatbins (nvcc -fatbin; one image
 * per architecture). Only the target names are read: the runtime loads the code itself.
 * Pure C, no GPU runtime: `porta devices` and the tests use it on any machine. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "porta.h"
#include "hip.h"

#define BUNDLE_MAGIC "__CLANG_OFFLOAD_BUNDLE__"
#define FATBIN_MAGIC 0xBA55ED50u
#define MAX_ID 512                  /* longest bundle entry id taken as sane */

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Layout: magic, u64 entry count, then per entry u64 offset, u64 size, u64 id length, id
 * bytes; the code objects follow. Every field is checked against n before it is read. */
static int bundle_targets(const unsigned char *d, size_t n, porta_hip_target_cb cb, void *user)
{
    size_t at = sizeof BUNDLE_MAGIC - 1;
    if (n < at + 8)
        goto bad;
    uint64_t count = rd64(d + at);
    at += 8;
    if (count > (n - at) / 24)          /* each entry needs at least 24 header bytes */
        goto bad;
    int found = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (n - at < 24)
            goto bad;
        uint64_t off = rd64(d + at), size = rd64(d + at + 8), idlen = rd64(d + at + 16);
        at += 24;
        if (idlen == 0 || idlen > MAX_ID || idlen > n - at || off > n || size > n - off)
            goto bad;
        char id[MAX_ID + 1];
        memcpy(id, d + at, idlen);
        id[idlen] = 0;
        at += idlen;
        if (strncmp(id, "host-", 5) == 0)
            continue;
        /* "<kind>-<triple>--<target id>": the target id after the last "--" */
        const char *t = id, *s;
        while ((s = strstr(t, "--")) != NULL)
            t = s + 2;
        if (cb)
            cb(user, t);
        found++;
    }
    return found;
bad:
    porta_err("hip: embedded code object: the clang offload bundle header is truncated or "
              "inconsistent (%zu bytes)", n);
    return PORTA_E_FORMAT;
}

/* Layout (as nvcc writes it): u32 magic, u16 version, u16 header size, u64 size of the
 * entries; each entry: u16 kind (1 PTX, 2 ELF), u16 version, u32 header size, u64 payload
 * size, ..., u32 architecture (80 = sm_80) at byte 28 of its header. */
static int fatbin_targets(const unsigned char *d, size_t n, porta_hip_target_cb cb, void *user)
{
    if (n < 16)
        goto bad;
    size_t hs = rd16(d + 6);
    uint64_t total = rd64(d + 8);
    if (hs < 16 || hs > n || total > n - hs)
        goto bad;
    size_t at = hs, end = hs + (size_t)total;
    int found = 0;
    while (at < end) {
        if (end - at < 32)
            goto bad;
        unsigned kind = rd16(d + at);
        size_t eh = rd32(d + at + 4);
        uint64_t payload = rd64(d + at + 8);
        unsigned arch = rd32(d + at + 28);
        if (eh < 32 || eh > end - at || payload > end - at - eh || (kind != 1 && kind != 2))
            goto bad;
        char name[32];
        snprintf(name, sizeof name, "%s_%u", kind == 2 ? "sm" : "compute", arch);
        if (cb)
            cb(user, name);
        found++;
        at += eh + (size_t)payload;
    }
    return found;
bad:
    porta_err("hip: embedded code object: the fatbin header is truncated or inconsistent "
              "(%zu bytes)", n);
    return PORTA_E_FORMAT;
}

int porta_hip_image_targets(const unsigned char *data, size_t n, porta_hip_target_cb cb,
                            void *user)
{
    if (data && n >= sizeof BUNDLE_MAGIC - 1 &&
        memcmp(data, BUNDLE_MAGIC, sizeof BUNDLE_MAGIC - 1) == 0)
        return bundle_targets(data, n, cb, user);
    if (data && n >= 4 && rd32(data) == FATBIN_MAGIC)
        return fatbin_targets(data, n, cb, user);
    porta_err("hip: embedded code object (%zu bytes) is neither a clang offload bundle nor an "
              "NVIDIA fatbin", n);
    return PORTA_E_FORMAT;
}

struct join {
    char *buf;
    size_t n, len;
};

static void join_one(void *user, const char *target)
{
    struct join *j = user;
    if (j->len + 1 >= j->n)
        return;
    int w = snprintf(j->buf + j->len, j->n - j->len, "%s%s", j->len ? " " : "", target);
    if (w > 0)
        j->len = j->len + (size_t)w < j->n ? j->len + (size_t)w : j->n - 1;
}

int porta_hip_targets(char *buf, size_t n)
{
    struct join j = { buf, n, 0 };
    int total = 0;
    if (n)
        buf[0] = 0;
    for (int i = 0; porta_hip_images[i].name; i++) {
        int rc = porta_hip_image_targets(porta_hip_images[i].data, porta_hip_images[i].size,
                                         n ? join_one : NULL, &j);
        if (rc < 0)
            return rc;
        total += rc;
    }
    return total;
}
