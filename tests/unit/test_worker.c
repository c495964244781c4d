/*
 * Tests of the grain workers (runtimes/core, runtimes/python, runtimes/c) against a real
 * redis-server on a private unix socket: the bundle in tests/unit/data/worker is copied to a
 * temp dir, one sand-worker-python / sand-worker-c per grain is started from the build tree,
 * events are XADDed to the grains' queues as sandd would, and the host agent stream (LQHA), the
 * queues, the log stream and the data layer keys are read back to check every rule of
 * docs/internals/protocol.md. With SAND_BENCH_HOP=N set, it also measures hop latency over N
 * two-step executions (fork and reuse) and the private memory of 50 sleeping instances.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "sand/common.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define APP     "wt"
#define WAIT_MS 15000

#include "worker_harness.h"

typedef struct worker_proc {
    const char *grain;
    const char *runtime;
    pid_t pid;
} worker_proc;

static char tmpdir[256], sock[300], bundle[300];
static pid_t redis_pid;
static worker_proc workers[] = {
    {"pa", "python", 0},     {"pb", "python", 0},   {"pc", "python", 0},
    {"pj", "python", 0},     {"pto", "python", 0},  {"pslow", "python", 0},
    {"pflaky", "python", 0}, {"pbad", "python", 0}, {"ca", "c", 0},
};

static pid_t start_worker(const char *runtime, const char *grain, const char *instance)
{
    char bin[512];
    snprintf(bin, sizeof(bin), SAND_BINARY_DIR "/bin/sand-worker-%s", runtime);
    pid_t pid = fork();
    if (pid == 0) {
        char url[400];
        snprintf(url, sizeof(url), "unix:%s", sock);
        setenv("SAND_REDIS", url, 1);
        setenv("SAND_APP", APP, 1);
        setenv("SAND_BUNDLE", bundle, 1);
        setenv("SAND_INSTANCE", instance, 1);
        setenv("SAND_VALUE_MAX", "2Mi", 1);
        setenv("SAND_LOG_LEVEL", "warn", 1);
        /* under ASan, let a grain's SIGSEGV kill the instance as it does in production */
        setenv("ASAN_OPTIONS", "handle_segv=0", 1);
        setenv("LSAN_OPTIONS", "suppressions=" SAND_SOURCE_DIR "/tests/unit/data/worker/lsan.supp",
               1);
        execl(bin, bin, "--grain", grain, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void stop_worker(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    waitpid(pid, NULL, 0);
}

/* ---- setup --------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sand-test-worker-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(sock, sizeof(sock), "%s/redis.sock", tmpdir);
    snprintf(bundle, sizeof(bundle), "%s/bundle", tmpdir);
    char *cp[] = {"cp", "-r", SAND_SOURCE_DIR "/tests/unit/data/worker", bundle, NULL};
    if (run_argv(cp) != 0)
        return -1;
    redis_pid = fork();
    if (redis_pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && !rc; i++) {
        usleep(10 * 1000);
        redisContext *c = redisConnectUnix(sock);
        if (c && !c->err)
            rc = c;
        else if (c)
            redisFree(c);
    }
    if (!rc)
        return -1;
    for (size_t i = 0; i < SAND_ARRAY_LEN(workers); i++)
        workers[i].pid = start_worker(workers[i].runtime, workers[i].grain, "fork");
    return 0;
}

static int group_teardown(void **state)
{
    for (size_t i = 0; i < SAND_ARRAY_LEN(workers); i++)
        stop_worker(workers[i].pid, SIGTERM);
    if (rc)
        redisFree(rc);
    stop_worker(redis_pid, SIGTERM);
    char *rm[] = {"rm", "-rf", tmpdir, NULL};
    run_argv(rm);
    return 0;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_python_output(void **state)
{
    fields f = {0};
    send_event("pa", "x-py", "", "pa", 1, "{\"op\":\"ids\"}");
    ha_wait("x-py", "end", "ok", &f);
    assert_string_equal(fget(&f, "st"), "succeeded");
    assert_string_equal(fget(&f, "g"), "pa");
    assert_true(atoll(fget(&f, "pid")) > 0);
    assert_true(atoll(fget(&f, "f")) >= atoll(fget(&f, "b")));
    json_t *o = jparse(fget(&f, "o"));
    assert_string_equal(json_string_value(json_object_get(o, "app")), APP);
    assert_string_equal(json_string_value(json_object_get(o, "grain")), "pa");
    assert_string_equal(json_string_value(json_object_get(o, "step")), "pa");
    assert_string_equal(json_string_value(json_object_get(o, "x")), "x-py");
    assert_int_equal(json_integer_value(json_object_get(o, "attempt")), 1);
    assert_true(json_is_true(json_object_get(o, "left")));
    json_decref(o);
    /* the entry was acknowledged and deleted in the same transaction */
    redisReply *r = cmd("XLEN sand:" APP ":q:pa");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    fields_free(&f);
}

static void test_c_output(void **state)
{
    fields f = {0};
    send_event("ca", "x-c", "", "ca", 1, "{\"op\":\"echo\",\"v\":[1,2]}");
    ha_wait("x-c", "end", "ok", &f);
    json_t *o = jparse(fget(&f, "o"));
    assert_int_equal(json_array_size(json_object_get(json_object_get(o, "echo"), "v")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "attempt")), 1);
    json_decref(o);
    fields_free(&f);

    send_event("ca", "x-c-fail", "", "ca", 1, "{\"op\":\"fail\"}");
    ha_wait("x-c-fail", "end", "fail", &f);
    o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "Error");
    assert_string_equal(json_string_value(json_object_get(o, "message")),
                        "failed on purpose in ca");
    json_decref(o);
    fields_free(&f);

    send_event("ca", "x-c-garbage", "", "ca", 1, "{\"op\":\"garbage\"}");
    ha_wait("x-c-garbage", "end", "fail", &f);
    o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "message")),
                        "handler output is not valid JSON");
    json_decref(o);
    fields_free(&f);
}

static void test_sequence(void **state)
{
    fields f = {0};
    send_event("pa", "x-seq", "seq", "s1", 1, "{\"op\":\"echo\",\"v\":7}");
    ha_wait("x-seq", "s", "s1", &f);
    assert_string_equal(fget(&f, "st"), "succeeded");
    assert_null(fget(&f, "end"));
    json_t *n = jparse(fget(&f, "n"));
    assert_int_equal(json_array_size(n), 1);
    json_t *h = json_array_get(n, 0);
    assert_string_equal(json_string_value(json_object_get(h, "s")), "s2");
    assert_string_equal(json_string_value(json_object_get(h, "g")), "pb");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(h, "e"), "v")), 7);
    char hop_id[64];
    sand_strlcpy(hop_id, json_string_value(json_object_get(h, "i")), sizeof(hop_id));
    json_decref(n);
    fields_free(&f);

    ha_wait("x-seq", "end", "ok", &f);
    assert_string_equal(fget(&f, "s"), "s2");
    assert_string_equal(fget(&f, "i"), hop_id); /* b's queue received the hop */
    json_t *o = jparse(fget(&f, "o"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "b"), "v")), 7);
    json_decref(o);
    fields_free(&f);
}

static void test_fanout_join(void **state)
{
    fields f = {0};
    send_event("pa", "x-fan", "fan", "f1", 1, "{\"op\":\"echo\",\"v\":1}");
    ha_wait("x-fan", "end", "ok", &f);
    assert_string_equal(fget(&f, "s"), "f4");
    /* the join ran once, with both predecessors' outputs */
    assert_int_equal(ha_count("x-fan", "s", "f4", NULL), 1);
    assert_int_equal(ha_count("x-fan", "s", "f2", NULL), 1);
    assert_int_equal(ha_count("x-fan", "s", "f3", NULL), 1);
    assert_non_null(strchr(fget(&f, "i"), '+'));
    json_t *o = jparse(fget(&f, "o"));
    json_t *ev = json_object_get(o, "c");
    assert_int_equal(json_object_size(ev), 2);
    json_t *b = json_object_get(json_object_get(ev, "f2"), "b");
    assert_int_equal(json_integer_value(json_object_get(b, "v")), 1);
    json_t *c = json_object_get(json_object_get(ev, "f3"), "c");
    assert_int_equal(json_integer_value(json_object_get(c, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "f3"), "step")),
                        "f3");
    json_decref(o);
    fields_free(&f);
    redisReply *r = cmd("EXISTS sand:" APP ":j:x-fan:f4");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

static void test_dynamic_next(void **state)
{
    fields f = {0};
    send_event("pa", "x-dyn", "dyn", "d1", 1, "{\"op\":\"next\",\"to\":[\"d3\"]}");
    ha_wait("x-dyn", "end", "ok", &f);
    assert_string_equal(fget(&f, "s"), "d3");
    json_t *o = jparse(fget(&f, "o"));
    json_t *ev = json_object_get(o, "c");
    assert_string_equal(json_string_value(json_object_get(ev, "via")), "d1");
    json_decref(o);
    fields_free(&f);
    assert_int_equal(ha_count("x-dyn", "s", "d2", NULL), 0); /* the static next was replaced */

    send_event("pa", "x-dyn-bad", "dyn", "d1", 1, "{\"op\":\"badnext\"}");
    ha_wait("x-dyn-bad", "end", "fail", &f);
    o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "ValueError");
    assert_non_null(strstr(json_string_value(json_object_get(o, "message")), "nosuchstep"));
    json_decref(o);
    fields_free(&f);
}

static void test_exception(void **state)
{
    fields f = {0};
    send_event("pa", "x-exc", "", "pa", 1, "{\"op\":\"raise\",\"n\":42}");
    ha_wait("x-exc", "end", "fail", &f);
    assert_string_equal(fget(&f, "st"), "failed");
    json_t *o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "ValueError");
    assert_string_equal(json_string_value(json_object_get(o, "message")), "bad thing 42");
    assert_string_equal(json_string_value(json_object_get(o, "step")), "pa");
    assert_string_equal(json_string_value(json_object_get(o, "grain")), "pa");
    assert_int_equal(json_integer_value(json_object_get(o, "attempt")), 1);
    const char *tb = json_string_value(json_object_get(o, "traceback"));
    assert_non_null(tb);
    assert_non_null(strstr(tb, "Traceback"));
    assert_non_null(strstr(tb, "pa.py"));
    json_decref(o);
    fields_free(&f);

    send_event("pa", "x-nojson", "", "pa", 1, "{\"op\":\"nojson\"}");
    ha_wait("x-nojson", "end", "fail", &f);
    o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "TypeError");
    json_decref(o);
    fields_free(&f);

    send_event("pbad", "x-import", "", "pbad", 1, "{}");
    ha_wait("x-import", "end", "fail", &f);
    o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "ImportError");
    assert_non_null(
        strstr(json_string_value(json_object_get(o, "message")), "no_such_module_anywhere"));
    json_decref(o);
    fields_free(&f);
}

static void test_crashes(void **state)
{
    fields f = {0};
    send_event("pa", "x-exit", "", "pa", 1, "{\"op\":\"exit\"}");
    ha_wait("x-exit", "end", "fail", &f);
    json_t *o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "Crashed");
    assert_null(json_object_get(o, "signal"));
    json_decref(o);
    fields_free(&f);

    send_event("ca", "x-segv", "", "ca", 1, "{\"op\":\"segv\"}");
    ha_wait("x-segv", "end", "fail", &f);
    o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "Crashed");
    assert_int_equal(json_integer_value(json_object_get(o, "signal")), SIGSEGV);
    json_decref(o);
    fields_free(&f);

    /* both workers live on */
    send_event("ca", "x-after-segv", "", "ca", 1, "{\"op\":\"echo\"}");
    ha_wait("x-after-segv", "end", "ok", NULL);
    send_event("pa", "x-after-exit", "", "pa", 1, "{\"op\":\"echo\"}");
    ha_wait("x-after-exit", "end", "ok", NULL);
}

static void test_timeout(void **state)
{
    fields f = {0};
    send_event("pto", "x-to", "", "pto", 1, "{\"op\":\"sleep\",\"s\":30}");
    ha_wait("x-to", "end", "fail", &f);
    json_t *o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "Timeout");
    json_decref(o);
    fields_free(&f);
    send_event("pto", "x-to-next", "", "pto", 1, "{\"op\":\"echo\",\"v\":3}");
    ha_wait("x-to-next", "end", "ok", &f);
    fields_free(&f);
}

static void test_retry(void **state)
{
    fields f = {0};
    send_event("pflaky", "x-retry", "retry", "r1", 1, "{\"op\":\"flaky\"}");
    ha_wait("x-retry", "end", "ok", &f);
    assert_string_equal(fget(&f, "a"), "2");
    json_t *o = jparse(fget(&f, "o"));
    assert_int_equal(json_integer_value(json_object_get(o, "attempt")), 2);
    json_decref(o);
    fields_free(&f);
    ha_wait("x-retry", "st", "retrying", &f);
    assert_string_equal(fget(&f, "a"), "1");
    o = jparse(fget(&f, "r"));
    assert_string_equal(json_string_value(json_object_get(o, "type")), "RuntimeError");
    json_decref(o);
    fields_free(&f);
}

static void test_catch(void **state)
{
    fields f = {0};
    send_event("pa", "x-catch", "catching", "c1", 1, "{\"op\":\"raise\",\"n\":5}");
    ha_wait("x-catch", "end", "ok", &f);
    assert_string_equal(fget(&f, "s"), "c2");
    json_t *o = jparse(fget(&f, "o"));
    json_t *e = json_object_get(o, "c");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "ValueError");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "bad thing 5");
    assert_string_equal(json_string_value(json_object_get(e, "step")), "c1");
    json_decref(o);
    fields_free(&f);
    assert_int_equal(ha_count("x-catch", "st", "caught", NULL), 1);
}

static void test_pending_reread(void **state)
{
    worker_proc *w = &workers[5];
    assert_string_equal(w->grain, "pslow");
    send_event("pslow", "x-pel", "", "pslow", 1, "{\"op\":\"sleep\",\"s\":0.4}");
    /* wait until the worker has taken it */
    for (int i = 0; i < 500; i++) {
        redisReply *r = cmd("XPENDING sand:" APP ":q:pslow workers");
        long long n = r->element[0]->integer;
        freeReplyObject(r);
        if (n == 1)
            break;
        usleep(10 * 1000);
    }
    stop_worker(w->pid, SIGKILL);
    usleep(600 * 1000); /* the orphaned instance died with its worker and reported nothing */
    assert_int_equal(ha_count("x-pel", "x", NULL, NULL), 0);
    w->pid = start_worker(w->runtime, w->grain, "fork");
    fields f = {0};
    ha_wait("x-pel", "end", "ok", &f);
    fields_free(&f);
    assert_int_equal(ha_count("x-pel", "x", NULL, NULL), 1);
}

static void test_data_layer(void **state)
{
    fields f = {0};
    send_event("pa", "x-dl", "", "pa", 1, "{\"op\":\"dl\"}");
    ha_wait("x-dl", "end", "ok", &f);
    json_t *o = jparse(fget(&f, "o"));
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "big") == 0)
            assert_string_equal(json_string_value(v), "ValueError");
        else if (!json_is_true(v))
            fail_msg("python data layer check '%s' failed", k);
    }
    assert_int_equal(json_object_size(o), 7);
    json_decref(o);
    fields_free(&f);
    redisReply *r = cmd("GET sand:" APP ":dl:pykeep");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "h\xc3\xa9");
    freeReplyObject(r);

    send_event("ca", "x-cdl", "", "ca", 1, "{\"op\":\"dl\"}");
    ha_wait("x-cdl", "end", "ok", &f);
    assert_string_equal(fget(&f, "o"), "{\"dl\":true}");
    fields_free(&f);
    r = cmd("GET sand:" APP ":dl:ckeep");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, 3);
    assert_memory_equal(r->str, "\0\1\2", 3);
    freeReplyObject(r);
}

static void test_logs(void **state)
{
    send_event("pa", "x-log", "", "pa", 1, "{\"op\":\"print\"}");
    ha_wait("x-log", "end", "ok", NULL);
    send_event("ca", "x-clog", "", "ca", 1, "{\"op\":\"echo\"}");
    ha_wait("x-clog", "end", "ok", NULL);
    bool out = false, err = false, clog = false;
    redisReply *r = cmd("XRANGE sand:" APP ":log - +");
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *kv = r->element[i]->element[1];
        const char *kind = NULL, *msg = NULL, *x = NULL, *g = NULL;
        for (size_t j = 0; j + 1 < kv->elements; j += 2) {
            const char *key = kv->element[j]->str, *val = kv->element[j + 1]->str;
            if (strcmp(key, "k") == 0)
                kind = val;
            else if (strcmp(key, "m") == 0)
                msg = val;
            else if (strcmp(key, "x") == 0)
                x = val;
            else if (strcmp(key, "g") == 0)
                g = val;
        }
        if (!kind || !msg || !x || !g)
            continue;
        if (strcmp(x, "x-log") == 0 && strcmp(kind, "stdout") == 0 &&
            strcmp(msg, "printed x-log") == 0 && strcmp(g, "pa") == 0)
            out = true;
        if (strcmp(x, "x-log") == 0 && strcmp(kind, "stderr") == 0 && strcmp(msg, "to stderr") == 0)
            err = true;
        if (strcmp(x, "x-clog") == 0 && strcmp(kind, "log") == 0 && strstr(msg, "ca got") == msg)
            clog = true;
    }
    freeReplyObject(r);
    assert_true(out);
    assert_true(err);
    assert_true(clog);
}

/* ---- measurements (SAND_BENCH_HOP=N) --------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Runs n two-step executions of wf one after the other and prints the hop latency: the
 * second instance's started_us minus the first's finished_us. */
static void hop_series(const char *wf, const char *g1, int n)
{
    int64_t *lat = calloc((size_t)n, sizeof(*lat));
    char last[64] = "$";
    redisReply *r = cmd("XREVRANGE sand:" APP ":ha + - COUNT 1");
    if (r->elements)
        sand_strlcpy(last, r->element[0]->element[0]->str, sizeof(last));
    freeReplyObject(r);
    for (int i = 0; i < n; i++) {
        char exec[64];
        int64_t f1 = 0, b2 = 0;
        snprintf(exec, sizeof(exec), "%s-%d", wf, i);
        send_event(g1, exec, wf, "h1", 1, "{\"op\":\"echo\"}");
        while (!b2) {
            r = cmd("XREAD COUNT 10 BLOCK 5000 STREAMS sand:" APP ":ha %s", last);
            assert_int_equal(r->type, REDIS_REPLY_ARRAY);
            redisReply *list = r->element[0]->element[1];
            for (size_t k = 0; k < list->elements; k++) {
                redisReply *kv = list->element[k]->element[1];
                sand_strlcpy(last, list->element[k]->element[0]->str, sizeof(last));
                const char *s = "", *x = "", *b = "0", *fin = "0";
                for (size_t j = 0; j + 1 < kv->elements; j += 2) {
                    const char *key = kv->element[j]->str, *val = kv->element[j + 1]->str;
                    if (!strcmp(key, "s"))
                        s = val;
                    else if (!strcmp(key, "x"))
                        x = val;
                    else if (!strcmp(key, "b"))
                        b = val;
                    else if (!strcmp(key, "f"))
                        fin = val;
                }
                if (strcmp(x, exec) != 0)
                    continue;
                if (!strcmp(s, "h1"))
                    f1 = atoll(fin);
                else if (!strcmp(s, "h2"))
                    b2 = atoll(b);
            }
            freeReplyObject(r);
        }
        lat[i] = b2 - f1;
    }
    qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
    printf("hop latency %-5s over %d two-step executions: p50 %lld us, p99 %lld us\n", wf, n,
           (long long)lat[n / 2], (long long)lat[(n * 99) / 100]);
    free(lat);
}

/* Private_Dirty kB of pid from /proc/PID/smaps_rollup, or -1. */
static long private_dirty_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Private_Dirty: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static void test_bench(void **state)
{
    const char *env = getenv("SAND_BENCH_HOP");
    if (!env)
        skip();
    int n = atoi(env) > 0 ? atoi(env) : 1000;
    pid_t w[5] = {start_worker("python", "hb1", "fork"), start_worker("python", "hb2", "fork"),
                  start_worker("python", "hr1", "reuse"), start_worker("python", "hr2", "reuse"),
                  start_worker("python", "pmem", "fork")};
    usleep(500 * 1000);
    hop_series("hop", "hb1", n);
    hop_series("hopr", "hr1", n);

    /* 50 concurrent sleeping instances of a small grain */
    for (int i = 0; i < 50; i++) {
        char exec[32];
        snprintf(exec, sizeof(exec), "mem-%d", i);
        send_event("pmem", exec, "", "pmem", 1, "{\"op\":\"sleep\",\"s\":3}");
    }
    char path[64], buf[8192];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)w[4], (int)w[4]);
    int kids = 0;
    for (int tries = 0; tries < 200 && kids < 51; tries++) {
        usleep(20 * 1000);
        FILE *f = fopen(path, "r");
        size_t len = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        buf[len] = 0;
        kids = 0;
        for (char *p = buf; *p; p++)
            kids += *p == ' ';
    }
    usleep(300 * 1000);
    long total = 0, count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
        long kb = private_dirty_kb((pid_t)atoi(tok));
        if (kb >= 0) {
            total += kb;
            count++;
        }
    }
    printf("private dirty memory: %ld instances (50 sleeping + 1 spare), %.2f MB each; "
           "worker %.2f MB\n",
           count, count ? total / 1024.0 / (double)count : 0.0, private_dirty_kb(w[4]) / 1024.0);
    assert_true(count >= 50);
    for (int i = 0; i < 5; i++)
        stop_worker(w[i], SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_output),  cmocka_unit_test(test_c_output),
        cmocka_unit_test(test_sequence),       cmocka_unit_test(test_fanout_join),
        cmocka_unit_test(test_dynamic_next),   cmocka_unit_test(test_exception),
        cmocka_unit_test(test_crashes),        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_retry),          cmocka_unit_test(test_catch),
        cmocka_unit_test(test_pending_reread), cmocka_unit_test(test_data_layer),
        cmocka_unit_test(test_logs),           cmocka_unit_test(test_bench),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
