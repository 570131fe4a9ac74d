/* test_config.c - config loading: defaults, the shipped config/ files, one exact
 * "file:line: key: what" message per kind of error, command-line overrides, dump round trip. */
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"
#include "porta.h"

/* ---- helpers ---- */

static char g_msg[2048];
static int g_nmsg;

static void capture(enum porta_log_level level, const char *msg, void *user)
{
    if (level >= PORTA_LOG_WARN) {
        snprintf(g_msg, sizeof g_msg, "%s", msg);
        g_nmsg++;
    }
}

static void setup(void)
{
    g_msg[0] = 0;
    g_nmsg = 0;
    porta_log_set_sink(capture, NULL);
}

static void teardown(void) { porta_log_set_sink(NULL, NULL); }

/* Writes text to a new temp file; its path goes to path (>= 64 bytes). */
static void write_tmp(char *path, const char *text)
{
    strcpy(path, "/tmp/porta_cfg_XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t n = strlen(text);
    ck_assert_int_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
}

/* Loads text from a temp file; returns the status, the message is in g_msg. */
static int load_text(const char *text, struct porta_config *cfg, char *path)
{
    write_tmp(path, text);
    g_msg[0] = 0;
    g_nmsg = 0;
    int rc = porta_config_load(path, cfg);
    unlink(path);
    return rc;
}

/* ---- defaults and shipped files ---- */

START_TEST(test_defaults)
{
    struct porta_config c;
    porta_config_defaults(&c);
    ck_assert_str_eq(c.model.path, "models/smollm2-135m-instruct-q4_1.gguf");
    ck_assert_str_eq(c.model.alias, "smollm2");
    ck_assert_int_eq(c.model.n_ctx, 4096);
    ck_assert_int_eq(c.model.n_batch, 64);
    ck_assert_str_eq(c.model.kv_type, "f16");
    ck_assert_str_eq(c.model.chat_template, "auto");
    ck_assert_int_eq(c.backend.n_order, 3);
    ck_assert_str_eq(c.backend.order[0], "hip");
    ck_assert_str_eq(c.backend.order[1], "opencl");
    ck_assert_str_eq(c.backend.order[2], "cpu");
    ck_assert_int_eq(c.backend.cpu.threads, 0);
    ck_assert_str_eq(c.backend.cpu.kernels, "auto");
    ck_assert_int_eq(c.backend.opencl.platform, -1); /* auto: GPUs and accelerators */
    ck_assert_int_eq(c.backend.opencl.device, -1);
    ck_assert_str_eq(c.backend.opencl.device_name, "");
    ck_assert(c.backend.opencl.clblast);
    ck_assert_int_eq(c.backend.hip.weight_cache_mb, 8192);
    ck_assert_int_eq(c.backend.n_layers, 0);
    ck_assert_str_eq(c.server.host, "127.0.0.1");
    ck_assert_int_eq(c.server.port, 8080);
    ck_assert_str_eq(c.server.api_key, "");
    ck_assert_int_eq(c.server.slots, 4);
    ck_assert_int_eq(c.server.queue, 64);
    ck_assert_int_eq(c.server.max_body_kb, 1024);
    ck_assert_int_eq(c.server.max_tokens, 4096);
    ck_assert_int_eq(c.server.timeout_s, 600);
    ck_assert_float_eq(c.sampling.temperature, 0.7f);
    ck_assert_float_eq(c.sampling.top_p, 0.95f);
    ck_assert_int_eq(c.sampling.top_k, 40);
    ck_assert_float_eq(c.sampling.min_p, 0.05f);
    ck_assert_float_eq(c.sampling.repetition_penalty, 1.0f);
    ck_assert_float_eq(c.sampling.presence_penalty, 0.0f);
    ck_assert_float_eq(c.sampling.frequency_penalty, 0.0f);
    ck_assert(c.sampling.seed == -1);
    ck_assert_int_eq(c.sampling.max_tokens, 256);
    ck_assert_str_eq(c.log.level, "info");
    ck_assert_int_eq(porta_config_kv_dtype(&c), PORTA_F16);
    ck_assert_int_eq(porta_config_log_level(&c), PORTA_LOG_INFO);
}
END_TEST

START_TEST(test_shipped_files)
{
    struct porta_config c, d;
    porta_config_defaults(&d);

    /* default.cfg shows the built-in defaults: loading it changes nothing */
    memset(&c, 0x5a, sizeof c);
    ck_assert_int_eq(porta_config_load("config/default.cfg", &c), 0);
    ck_assert(porta_config_equal(&c, &d));

    ck_assert_int_eq(porta_config_load("config/cpu.cfg", &c), 0);
    ck_assert_int_eq(c.backend.n_order, 1);
    ck_assert_str_eq(c.backend.order[0], "cpu");
    ck_assert_int_eq(c.server.slots, 2);

    ck_assert_int_eq(porta_config_load("config/opencl.cfg", &c), 0);
    ck_assert_int_eq(c.backend.n_order, 2);
    ck_assert_str_eq(c.backend.order[0], "opencl");
    ck_assert_str_eq(c.backend.order[1], "cpu");
    ck_assert_int_eq(c.backend.opencl.platform, 0); /* explicit: takes PoCL too */
    ck_assert_int_eq(c.backend.opencl.device, 0);

    ck_assert_int_eq(porta_config_load("config/hip.cfg", &c), 0);
    ck_assert_int_eq(c.backend.n_order, 3);
    ck_assert_str_eq(c.backend.order[0], "hip");
    ck_assert_str_eq(c.backend.order[1], "opencl");
    ck_assert_str_eq(c.backend.order[2], "cpu");
    ck_assert_int_eq(c.model.n_ctx, 8192);
    ck_assert_int_eq(c.model.n_batch, 256);
    ck_assert_int_eq(g_nmsg, 0);
}
END_TEST

START_TEST(test_partial_file_and_values)
{
    struct porta_config c;
    char path[64];
    int rc = load_text("# comment\n"
                       "model = { n_ctx = 2048; kv_type = \"f32\"; };\n"
                       "sampling: { temperature = 1; top_p = 1.0; seed = 12345678901L; };\n"
                       "backend = {\n"
                       "  order = ( \"cpu\", \"hip\" );\n"
                       "  layers = ( { backend = \"hip\"; from = 0; to = 19; },\n"
                       "             { to = 27; from = 20; backend = \"cpu\"; } );\n"
                       "  opencl = { clblast = false; device_name = \"gfx\\\"90a\"; };\n"
                       "};\n"
                       "log = { level = \"debug\"; };\n",
                       &c, path);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, g_msg);
    ck_assert_int_eq(c.model.n_ctx, 2048);
    ck_assert_int_eq(c.model.n_batch, 64);          /* untouched: default */
    ck_assert_int_eq(porta_config_kv_dtype(&c), PORTA_F32);
    ck_assert_float_eq(c.sampling.temperature, 1.0f); /* an integer for a float key */
    ck_assert_float_eq(c.sampling.top_p, 1.0f);
    ck_assert(c.sampling.seed == 12345678901LL);
    ck_assert_int_eq(c.backend.n_order, 2);
    ck_assert_str_eq(c.backend.order[0], "cpu");
    ck_assert_str_eq(c.backend.order[1], "hip");
    ck_assert_int_eq(c.backend.n_layers, 2);
    ck_assert_str_eq(c.backend.layers[0].backend, "hip");
    ck_assert_int_eq(c.backend.layers[0].from, 0);
    ck_assert_int_eq(c.backend.layers[0].to, 19);
    ck_assert_str_eq(c.backend.layers[1].backend, "cpu");
    ck_assert_int_eq(c.backend.layers[1].from, 20);
    ck_assert_int_eq(c.backend.layers[1].to, 27);
    ck_assert(!c.backend.opencl.clblast);
    ck_assert_str_eq(c.backend.opencl.device_name, "gfx\"90a");
    ck_assert_int_eq(porta_config_log_level(&c), PORTA_LOG_DEBUG);
    ck_assert_int_eq(g_nmsg, 0);
}
END_TEST

/* ---- one exact message per kind of error ---- */

struct err_case {
    const char *text;
    int status;
    const char *msg;            /* "%s" stands for the temp file's path */
};

static const struct err_case err_cases[] = {
    /* unknown keys, at every level */
    { "foo = 1;\n", PORTA_E_CONFIG,
      "%s:1: foo: unknown key (known here: model, backend, server, sampling, log)" },
    { "model = {\n  n_ctx = 4096;\n  nctx = 1;\n};\n", PORTA_E_CONFIG,
      "%s:3: model.nctx: unknown key (known here: path, alias, n_ctx, n_batch, kv_type, "
      "chat_template)" },
    { "backend = { cpu = { threads = 2;\n  thread = 4; }; };\n", PORTA_E_CONFIG,
      "%s:2: backend.cpu.thread: unknown key (known here: threads, kernels, amx)" },
    { "backend = { layers = (\n  { backend = \"cpu\"; from = 0; to = 3; },\n"
      "  { backend = \"cpu\"; from = 4; to = 5;\n    upto = 9; } ); };\n", PORTA_E_CONFIG,
      "%s:4: backend.layers[1].upto: unknown key (known here: backend, from, to)" },
    /* wrong types */
    { "model = { n_ctx = \"4096\"; };\n", PORTA_E_CONFIG,
      "%s:1: model.n_ctx: expected an integer, got a string" },
    { "\nmodel = { n_ctx = 4096.0; };\n", PORTA_E_CONFIG,
      "%s:2: model.n_ctx: expected an integer, got a float" },
    { "sampling = { top_p = \"0.9\"; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.top_p: expected a number, got a string" },
    { "model = { path = 5; };\n", PORTA_E_CONFIG,
      "%s:1: model.path: expected a string, got an integer" },
    { "backend = { opencl = { clblast = 1; }; };\n", PORTA_E_CONFIG,
      "%s:1: backend.opencl.clblast: expected a boolean (true or false), got an integer" },
    { "model = 5;\n", PORTA_E_CONFIG, "%s:1: model: expected a group, got an integer" },
    { "backend = { order = \"cpu\"; };\n", PORTA_E_CONFIG,
      "%s:1: backend.order: expected an array of backend names, got a string" },
    { "backend = { order = ( \"cpu\", 1 ); };\n", PORTA_E_CONFIG,
      "%s:1: backend.order[1]: expected a string, got an integer" },
    { "backend = { layers = { backend = \"cpu\"; }; };\n", PORTA_E_CONFIG,
      "%s:1: backend.layers: expected a list of ranges ( { ... }, ... ), got a group" },
    { "backend = { layers = ( 1 ); };\n", PORTA_E_CONFIG,
      "%s:1: backend.layers[0]: expected a group { backend = ...; from = ...; to = ...; }, "
      "got an integer" },
    /* bad values */
    { "model = { n_ctx = 0; };\n", PORTA_E_CONFIG, "%s:1: model.n_ctx: 0 must be in 1..2097152" },
    { "model = { n_ctx = 100000000; };\n", PORTA_E_CONFIG,
      "%s:1: model.n_ctx: 100000000 must be in 1..2097152" },
    { "model = { n_ctx = 10000000000; };\n", PORTA_E_CONFIG,
      "%s:1: integer 10000000000 does not fit in a signed 32-bit int; write 10000000000L for "
      "a 64-bit integer" },
    { "# 10000000000 in a comment is fine\nsampling = { top_k = 1; /* 99999999999 */\n"
      "  seed = 0xFFFFFFFF; };\n", PORTA_E_CONFIG,
      "%s:3: integer 0xFFFFFFFF does not fit in a signed 32-bit int; write 0xFFFFFFFFL for a "
      "64-bit integer" },
    { "model = { n_ctx = 10000000000L; };\n", PORTA_E_CONFIG,
      "%s:1: model.n_ctx: 10000000000 must be in 1..2097152" },
    { "server = {\n  port = 70000;\n};\n", PORTA_E_CONFIG,
      "%s:2: server.port: 70000 must be in 1..65535" },
    { "server = { port = 0; };\n", PORTA_E_CONFIG, "%s:1: server.port: 0 must be in 1..65535" },
    { "server = { host = \"\"; };\n", PORTA_E_CONFIG, "%s:1: server.host: must not be empty" },
    { "# hip\n\nbackend:\n{\n  order = [ \"cuda\",\n            \"cpu\" ];\n};\n",
      PORTA_E_CONFIG, "%s:5: backend.order[0]: \"cuda\" is not one of cpu, opencl, hip" },
    { "backend = { order = [ \"cpu\",\n  \"metal\" ]; };\n", PORTA_E_CONFIG,
      "%s:2: backend.order[1]: \"metal\" is not one of cpu, opencl, hip" },
    { "backend = { order = [ \"cpu\", \"hip\", \"opencl\", \"cpu\" ]; };\n", PORTA_E_CONFIG,
      "%s:1: backend.order: 4 entries, at most 3 (each of cpu, opencl, hip once)" },
    { "backend = { order = [ \"cpu\", \"cpu\" ]; };\n", PORTA_E_CONFIG,
      "%s:1: backend.order[1]: \"cpu\" is listed twice" },
    { "backend = { order = [ ]; };\n", PORTA_E_CONFIG,
      "%s:1: backend.order: must name at least one backend" },
    { "backend = { cpu = { kernels = \"sse\"; }; };\n", PORTA_E_CONFIG,
      "%s:1: backend.cpu.kernels: \"sse\" is not one of auto, avx512, avx2, scalar" },
    { "backend = { cpu = { threads = -1; }; };\n", PORTA_E_CONFIG,
      "%s:1: backend.cpu.threads: -1 must be in 0..1024" },
    { "model = { kv_type = \"q8_0\"; };\n", PORTA_E_CONFIG,
      "%s:1: model.kv_type: \"q8_0\" is not one of f32, f16" },
    { "model = { chat_template = \"Chat ML\"; };\n", PORTA_E_CONFIG,
      "%s:1: model.chat_template: \"Chat ML\": only a-z, 0-9, '.', '_' and '-' are allowed" },
    { "log = { level = \"verbose\"; };\n", PORTA_E_CONFIG,
      "%s:1: log.level: \"verbose\" is not one of debug, info, warn, error" },
    { "sampling = { temperature = -0.5; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.temperature: -0.5 must be >= 0" },
    { "sampling = { top_p = 0.0; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.top_p: 0 must be in (0, 1]" },
    { "sampling = { top_p = 1.5; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.top_p: 1.5 must be in (0, 1]" },
    { "sampling = { min_p = -0.1; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.min_p: -0.1 must be in [0, 1]" },
    { "sampling = { repetition_penalty = 0; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.repetition_penalty: 0 must be > 0" },
    { "sampling = { frequency_penalty = 2.5; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.frequency_penalty: 2.5 must be in [-2, 2]" },
    { "sampling = { temperature = 1e999; };\n", PORTA_E_CONFIG,
      "%s:1: sampling.temperature: inf is not a finite number" },
    { "sampling = { seed = -2; };\n", PORTA_E_CONFIG, "%s:1: sampling.seed: -2 must be >= -1" },
    /* layer ranges */
    { "backend = { layers = (\n  { backend = \"hip\"; from = 0; to = 19; },\n"
      "  { backend = \"cpu\"; from = 15; to = 27; } ); };\n", PORTA_E_CONFIG,
      "%s:3: backend.layers[1]: layers 15..27 overlap backend.layers[0] (layers 0..19)" },
    { "backend = { layers = ( { backend = \"cpu\"; from = 20; to = 19; } ); };\n",
      PORTA_E_CONFIG, "%s:1: backend.layers[0]: from 20 is greater than to 19" },
    { "backend = { layers = ( { backend = \"cpu\"; from = 0; } ); };\n", PORTA_E_CONFIG,
      "%s:1: backend.layers[0]: missing key \"to\"" },
    { "backend = { layers = (\n  { backend = \"cuda\"; from = 0; to = 3; } ); };\n",
      PORTA_E_CONFIG, "%s:2: backend.layers[0].backend: \"cuda\" is not one of cpu, opencl, hip" },
    { "backend = { layers = ( { backend = \"cpu\"; from = -1; to = 3; } ); };\n",
      PORTA_E_CONFIG, "%s:1: backend.layers[0].from: -1 must be in 0..65535" },
    /* strings too long for their buffer */
    { "model = { alias = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; };\n",
      PORTA_E_CONFIG, "%s:1: model.alias: string of 248 bytes, at most 127 allowed" },
    /* libconfig syntax errors */
    { "model = {\n  n_ctx = ;\n};\n", PORTA_E_CONFIG, "%s:2: syntax error" },
    { "log = { level = \"info\"; };\nlog = { level = \"info\"; };\n", PORTA_E_CONFIG,
      "%s:2: duplicate setting name" },
};

START_TEST(test_errors)
{
    const struct err_case *ec = &err_cases[_i];
    struct porta_config c, before;
    char path[64], want[1024];
    porta_config_defaults(&c);
    c.model.n_ctx = 777;                    /* shows that *cfg is untouched on error */
    memcpy(&before, &c, sizeof c);
    int rc = load_text(ec->text, &c, path);
    snprintf(want, sizeof want, ec->msg, path);
    ck_assert_msg(rc == ec->status, "case %d: rc %d (%s), want %d", _i, rc, g_msg, ec->status);
    ck_assert_str_eq(g_msg, want);
    ck_assert_int_eq(g_nmsg, 1);
    ck_assert(porta_config_equal(&c, &before));
    ck_assert_int_eq(c.model.n_ctx, 777);
}
END_TEST

START_TEST(test_io_errors)
{
    struct porta_config c;
    char want[256];
    porta_config_defaults(&c);
    int rc = porta_config_load("/nonexistent/porta.cfg", &c);
    ck_assert_int_eq(rc, PORTA_E_IO);
    ck_assert_str_eq(g_msg, "/nonexistent/porta.cfg: cannot open: No such file or directory");

    char dir[] = "/tmp/porta_cfgdir_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    rc = porta_config_load(dir, &c);
    ck_assert_int_eq(rc, PORTA_E_IO);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", dir);
    ck_assert_str_eq(g_msg, want);
    rmdir(dir);
}
END_TEST

/* @include names a file beside the including one, whatever the working directory. */
START_TEST(test_include_relative)
{
    char dir[] = "/tmp/porta_cfgdir_XXXXXX", a[128], b[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(a, sizeof a, "%s/main.cfg", dir);
    snprintf(b, sizeof b, "%s/part.cfg", dir);
    FILE *f = fopen(b, "w");
    fputs("server = {\n  port = 99999;\n};\n", f);
    fclose(f);
    f = fopen(a, "w");
    fputs("model = { n_ctx = 512; };\n@include \"part.cfg\"\n", f);
    fclose(f);
    struct porta_config c;
    porta_config_defaults(&c);
    int rc = porta_config_load(a, &c);
    ck_assert_int_eq(rc, PORTA_E_CONFIG);
    /* the message names the included file and its line */
    char want[512];
    snprintf(want, sizeof want, "%s:2: server.port: 99999 must be in 1..65535", b);
    ck_assert_str_eq(g_msg, want);

    /* a syntax error inside the included file names it too */
    f = fopen(b, "w");
    fputs("server = {\n\n  port = = 1;\n};\n", f);
    fclose(f);
    ck_assert_int_eq(porta_config_load(a, &c), PORTA_E_CONFIG);
    snprintf(want, sizeof want, "%s:3: syntax error", b);
    ck_assert_str_eq(g_msg, want);

    /* and a good one loads */
    f = fopen(b, "w");
    fputs("server = { port = 9090; };\n", f);
    fclose(f);
    ck_assert_int_eq(porta_config_load(a, &c), 0);
    ck_assert_int_eq(c.model.n_ctx, 512);
    ck_assert_int_eq(c.server.port, 9090);

    /* a missing included file is an error, not ignored */
    unlink(b);
    ck_assert_int_eq(porta_config_load(a, &c), PORTA_E_CONFIG);
    snprintf(want, sizeof want, "%s:2: cannot open include file", a);
    ck_assert_str_eq(g_msg, want);
    unlink(a);
    rmdir(dir);
}
END_TEST

/* ---- command-line overrides ---- */

START_TEST(test_set)
{
    struct porta_config c;
    porta_config_defaults(&c);
    ck_assert_int_eq(porta_config_set(&c, "model.n_ctx", "1024"), 0);
    ck_assert_int_eq(c.model.n_ctx, 1024);
    ck_assert_int_eq(porta_config_set(&c, "sampling.temperature", "0.25"), 0);
    ck_assert_float_eq(c.sampling.temperature, 0.25f);
    ck_assert_int_eq(porta_config_set(&c, "sampling.temperature", "0"), 0);
    ck_assert_float_eq(c.sampling.temperature, 0.0f);
    ck_assert_int_eq(porta_config_set(&c, "sampling.seed", "12345678901"), 0);
    ck_assert(c.sampling.seed == 12345678901LL);
    ck_assert_int_eq(porta_config_set(&c, "backend.cpu.threads", "2"), 0);
    ck_assert_int_eq(c.backend.cpu.threads, 2);
    ck_assert_int_eq(porta_config_set(&c, "backend.order", "opencl, cpu"), 0);
    ck_assert_int_eq(c.backend.n_order, 2);
    ck_assert_str_eq(c.backend.order[0], "opencl");
    ck_assert_str_eq(c.backend.order[1], "cpu");
    ck_assert_str_eq(c.backend.order[2], "");
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.clblast", "off"), 0);
    ck_assert(!c.backend.opencl.clblast);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.clblast", "TRUE"), 0);
    ck_assert(c.backend.opencl.clblast);
    ck_assert_int_eq(porta_config_set(&c, "model.path", "/abs/x.gguf"), 0);
    ck_assert_str_eq(c.model.path, "/abs/x.gguf");
    ck_assert_int_eq(porta_config_set(&c, "server.api_key", ""), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.layers", "hip:0-19, cpu:20-27,opencl:28"), 0);
    ck_assert_int_eq(c.backend.n_layers, 3);
    ck_assert_str_eq(c.backend.layers[1].backend, "cpu");
    ck_assert_int_eq(c.backend.layers[1].from, 20);
    ck_assert_int_eq(c.backend.layers[1].to, 27);
    ck_assert_int_eq(c.backend.layers[2].from, 28);
    ck_assert_int_eq(c.backend.layers[2].to, 28);
    ck_assert_int_eq(porta_config_set(&c, "backend.layers", ""), 0);
    ck_assert_int_eq(c.backend.n_layers, 0);
    ck_assert_int_eq(g_nmsg, 0);
}
END_TEST

struct set_case {
    const char *key, *value, *msg;
};

static const struct set_case set_cases[] = {
    { "sampling.temperature", "-1", "command line: sampling.temperature: -1 must be >= 0" },
    { "sampling.temperature", "warm", "command line: sampling.temperature: \"warm\" is not a number" },
    { "sampling.top_p", "0", "command line: sampling.top_p: 0 must be in (0, 1]" },
    { "sampling.top_p", "nan", "command line: sampling.top_p: nan is not a finite number" },
    { "model.n_ctx", "4k", "command line: model.n_ctx: \"4k\" is not an integer" },
    { "model.n_ctx", "", "command line: model.n_ctx: \"\" is not an integer" },
    { "model.n_ctx", "99999999999999999999", "command line: model.n_ctx: 99999999999999999999 is out of range" },
    { "model.n_ctx", "-5", "command line: model.n_ctx: -5 must be in 1..2097152" },
    { "model.nctx", "5", "command line: model.nctx: unknown key" },
    { "model.n_ctx.x", "5", "command line: model.n_ctx.x: unknown key" },
    { "model", "5", "command line: model: is a group; name one of its keys: path, alias, n_ctx, "
      "n_batch, kv_type, chat_template" },
    { "server.port", "65536", "command line: server.port: 65536 must be in 1..65535" },
    { "backend.order", "hip,cuda", "command line: backend.order: \"cuda\" is not one of cpu, opencl, hip" },
    { "backend.order", "cpu,cpu", "command line: backend.order: \"cpu\" is listed twice" },
    { "backend.order", "cpu,hip,opencl,cpu", "command line: backend.order: more than 3 entries "
      "(each of cpu, opencl, hip once)" },
    { "backend.order", "", "command line: backend.order: \"\" is not one of cpu, opencl, hip" },
    { "backend.cpu.kernels", "neon", "command line: backend.cpu.kernels: \"neon\" is not one of "
      "auto, avx512, avx2, scalar" },
    { "backend.opencl.clblast", "maybe", "command line: backend.opencl.clblast: \"maybe\" is not a "
      "boolean (true/false, yes/no, on/off, 1/0)" },
    { "backend.layers", "hip:0-19,cpu:15-27", "command line: backend.layers[1]: layers 15..27 "
      "overlap backend.layers[0] (layers 0..19)" },
    { "backend.layers", "cpu:5-2", "command line: backend.layers[0]: from 5 is greater than to 2" },
    { "backend.layers", "cpu", "command line: backend.layers[0]: \"cpu\" is not backend:from-to" },
    { "backend.layers", "cpu:x", "command line: backend.layers[0]: \"x\" is not a layer range "
      "from-to within 0..65535" },
    { "backend.layers", "gpu:1-2", "command line: backend.layers[0]: \"gpu\" is not one of cpu, "
      "opencl, hip" },
    { "log.level", "trace", "command line: log.level: \"trace\" is not one of debug, info, warn, error" },
};

START_TEST(test_set_errors)
{
    const struct set_case *sc = &set_cases[_i];
    struct porta_config c, before;
    porta_config_defaults(&c);
    memcpy(&before, &c, sizeof c);
    g_msg[0] = 0;
    ck_assert_int_eq(porta_config_set(&c, sc->key, sc->value), PORTA_E_CONFIG);
    ck_assert_str_eq(g_msg, sc->msg);
    ck_assert(porta_config_equal(&c, &before));
}
END_TEST

START_TEST(test_set_long_string)
{
    struct porta_config c;
    char big[PORTA_CFG_PATH_MAX + 8];
    porta_config_defaults(&c);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ck_assert_int_eq(porta_config_set(&c, "model.path", big), PORTA_E_CONFIG);
    ck_assert_str_eq(g_msg, "command line: model.path: string of 1031 bytes, at most 1023 allowed");
    big[PORTA_CFG_PATH_MAX - 1] = 0;        /* exactly fills the buffer */
    ck_assert_int_eq(porta_config_set(&c, "model.path", big), 0);
    ck_assert_uint_eq(strlen(c.model.path), PORTA_CFG_PATH_MAX - 1);
}
END_TEST

/* ---- dump ---- */

/* Dumps c to a temp file, loads it back, checks equality and that a second dump is identical. */
static void round_trip(const struct porta_config *c)
{
    char path[64];
    strcpy(path, "/tmp/porta_cfg_XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_int_eq(porta_config_dump(c, f), 0);
    fclose(f);
    size_t n1 = 0;
    char *text1 = tu_read_file(path, &n1);
    ck_assert_ptr_nonnull(text1);

    struct porta_config back;
    memset(&back, 0, sizeof back);
    int rc = porta_config_load(path, &back);
    ck_assert_msg(rc == 0, "reload: %s\n%s", g_msg, text1);
    ck_assert_msg(porta_config_equal(c, &back), "dump does not load back equal:\n%s", text1);

    f = fopen(path, "w");
    ck_assert_int_eq(porta_config_dump(&back, f), 0);
    fclose(f);
    char *text2 = tu_read_file(path, NULL);
    ck_assert_str_eq(text1, text2);
    free(text1);
    free(text2);
    unlink(path);
}

START_TEST(test_dump_round_trip)
{
    struct porta_config c;
    porta_config_defaults(&c);
    round_trip(&c);

    /* every kind of value away from its default, awkward strings and floats included */
    ck_assert_int_eq(porta_config_set(&c, "model.path", "dir with space/\"q\"\\m.gguf"), 0);
    ck_assert_int_eq(porta_config_set(&c, "model.alias", "tab\there\nnl \x01 \x7f caf\xc3\xa9"), 0);
    ck_assert_int_eq(porta_config_set(&c, "model.chat_template", "chatml"), 0);
    ck_assert_int_eq(porta_config_set(&c, "model.kv_type", "f32"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.order", "cpu,hip"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.layers", "hip:0-3,cpu:4-9,opencl:12-12"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.clblast", "false"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.platform", "-1"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.cache_dir", "/var/cache/porta"), 0);
    ck_assert_int_eq(porta_config_set(&c, "server.api_key", "s3cr#t // not a comment"), 0);
    ck_assert_int_eq(porta_config_set(&c, "sampling.temperature", "0.1"), 0);
    ck_assert_int_eq(porta_config_set(&c, "sampling.top_p", "0.333333343"), 0);
    ck_assert_int_eq(porta_config_set(&c, "sampling.min_p", "1e-7"), 0);
    ck_assert_int_eq(porta_config_set(&c, "sampling.repetition_penalty", "123456.789"), 0);
    ck_assert_int_eq(porta_config_set(&c, "sampling.presence_penalty", "-0"), 0);
    ck_assert_int_eq(porta_config_set(&c, "sampling.frequency_penalty", "-1.999"), 0);
    ck_assert_int_eq(porta_config_set(&c, "sampling.seed", "9223372036854775807"), 0);
    ck_assert_int_eq(porta_config_set(&c, "log.level", "error"), 0);
    round_trip(&c);

    ck_assert_int_eq(porta_config_set(&c, "sampling.seed", "2147483648"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.layers", "cpu:0-0"), 0);
    round_trip(&c);

    /* the equality used above does see differences */
    struct porta_config d;
    memcpy(&d, &c, sizeof d);
    ck_assert(porta_config_equal(&c, &d));
    d.backend.layers[0].to = 1;
    ck_assert(!porta_config_equal(&c, &d));
    memcpy(&d, &c, sizeof d);
    d.sampling.min_p = nextafterf(d.sampling.min_p, 1.0f);
    ck_assert(!porta_config_equal(&c, &d));
    memcpy(&d, &c, sizeof d);
    d.server.api_key[0] ^= 1;
    ck_assert(!porta_config_equal(&c, &d));
}
END_TEST

/* ---- mapping to the backend open parameters ---- */

START_TEST(test_backend_cfg)
{
    struct porta_config c;
    struct porta_backend_cfg b;
    porta_config_defaults(&c);
    ck_assert_int_eq(porta_config_set(&c, "backend.cpu.threads", "3"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.cpu.kernels", "avx2"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.device_name", "gfx1030"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.device", "2"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.hip.device", "1"), 0);

    ck_assert_int_eq(porta_config_backend_cfg(&c, "cpu", &b), 0);
    ck_assert_int_eq(b.threads, 3);
    ck_assert_str_eq(b.cpu_kernels, "avx2");
    ck_assert(!b.cpu_no_amx);                   /* AMX on by default */
    ck_assert_int_eq(porta_config_set(&c, "backend.cpu.amx", "false"), 0);
    ck_assert_int_eq(porta_config_backend_cfg(&c, "cpu", &b), 0);
    ck_assert(b.cpu_no_amx);
    ck_assert_int_eq(porta_config_backend_cfg(&c, "opencl", &b), 0);
    ck_assert(b.clblast);                       /* CLBlast for GPU prefill by default */
    ck_assert(!b.opencl_no_row_packs);          /* row packs on CPU devices by default */
    ck_assert_int_eq(b.device, 2);
    ck_assert_str_eq(b.device_name, "gfx1030");
    ck_assert_ptr_null(b.kernel_dir);
    ck_assert_ptr_null(b.cache_dir);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.clblast", "false"), 0);
    ck_assert_int_eq(porta_config_set(&c, "backend.opencl.row_packs", "false"), 0);
    ck_assert_int_eq(porta_config_backend_cfg(&c, "opencl", &b), 0);
    ck_assert(!b.clblast);
    ck_assert(b.opencl_no_row_packs);
    ck_assert_int_eq(porta_config_backend_cfg(&c, "hip", &b), 0);
    ck_assert_int_eq(b.device, 1);
    ck_assert_ptr_null(b.device_name);
    ck_assert_int_eq(porta_config_backend_cfg(&c, "cuda", &b), PORTA_E_NOTFOUND);
}
END_TEST

/* backend.layers past the model's last layer is an error, never silently ignored */
START_TEST(test_check_layers)
{
    struct porta_config c;
    porta_config_defaults(&c);
    ck_assert_int_eq(porta_config_check_layers(&c, 28), 0);                 /* none: fine */
    ck_assert_int_eq(porta_config_set(&c, "backend.layers", "cpu:0-19,opencl:20-27"), 0);
    ck_assert_int_eq(porta_config_check_layers(&c, 28), 0);
    ck_assert_int_eq(porta_config_check_layers(&c, 20), PORTA_E_INVAL);      /* past 19 */
    ck_assert_int_eq(porta_config_set(&c, "backend.layers", "hip:5"), 0);
    ck_assert_int_eq(porta_config_check_layers(&c, 6), 0);
    ck_assert_int_eq(porta_config_check_layers(&c, 5), PORTA_E_INVAL);
}
END_TEST

/* device_name picks a device by a case-blind substring of its name */
START_TEST(test_device_name_matches)
{
    ck_assert(porta_device_name_matches("AMD Radeon RX 6800 (gfx1030)", "gfx1030"));
    ck_assert(porta_device_name_matches("NVIDIA GeForce RTX 4090", "rtx"));
    ck_assert(porta_device_name_matches("pthread-skylake", ""));
    ck_assert(porta_device_name_matches("", ""));
    ck_assert(!porta_device_name_matches("gfx90", "gfx906"));     /* pattern longer than the rest */
    ck_assert(!porta_device_name_matches("Intel UHD", "amd"));
    ck_assert(!porta_device_name_matches("", "x"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_shipped_files);
    tcase_add_test(tc, test_partial_file_and_values);
    tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof err_cases / sizeof err_cases[0]));
    tcase_add_test(tc, test_io_errors);
    tcase_add_test(tc, test_include_relative);
    tcase_add_test(tc, test_set);
    tcase_add_loop_test(tc, test_set_errors, 0, (int)(sizeof set_cases / sizeof set_cases[0]));
    tcase_add_test(tc, test_set_long_string);
    tcase_add_test(tc, test_dump_round_trip);
    tcase_add_test(tc, test_backend_cfg);
    tcase_add_test(tc, test_check_layers);
    tcase_add_test(tc, test_device_name_matches);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
