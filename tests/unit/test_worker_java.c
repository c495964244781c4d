/*
 * Tests of the Java grain worker (runtimes/java on the threads mode of runtimes/core) against a
 * real redis-server on a private unix socket: a bundle with the test grain jar built by CMake
 * (runtimes/java/test/wt/JGrain.java) is written to a temp dir, one sand-worker-java per grain
 * is started from the build tree, events are XADDed to the grains' queues as sandd would, and
 * the host agent stream (LQHA), the log stream and the data layer keys are read back. Checks:
 * output and ids, exceptions (class, message, stack trace), invalid output, timeouts of a
 * sleeping and of a spinning handler with the worker serving on, the concurrency bound, the
 * data layer (0 B, 1 B, 1 MiB, local and global), captured stdout/stderr and context.log, a
 * two-step workflow and dynamic routing. The JVM does not run under AddressSanitizer, so the
 * whole group is skipped in sanitizer builds. With SAND_BENCH_HOP=N it also measures hop latency
 * over N two-step Java executions.
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

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define APP     "wt"
#define WAIT_MS 20000

#include "worker_harness.h"

static const char app_yaml[] =
    "app: wt\n"
    "grains:\n"
    "  ja: {runtime: java, code: grains/jgrain.jar, handler: wt.JGrain, concurrency: 2,\n"
    "       timeout: 1s, jvm_options: \"-Xmx64m -XX:+UseSerialGC\"}\n"
    "  jb: {runtime: java, code: grains/jgrain.jar, handler: wt.JGrain}\n"
    "  jc: {runtime: java, code: grains/jgrain.jar, handler: wt.JGrain, concurrency: 2}\n"
    "  jbad: {runtime: java, code: grains/jgrain.jar, handler: wt.NoSuchGrain}\n"
    "  jh1: {runtime: java, code: grains/jgrain.jar, handler: wt.JGrain}\n"
    "  jh2: {runtime: java, code: grains/jgrain.jar, handler: wt.JGrain}\n"
    "workflows:\n"
    "  seq:\n"
    "    start: j1\n"
    "    steps:\n"
    "      j1: {grain: jb, next: j2}\n"
    "      j2: {grain: jb}\n"
    "  dyn:\n"
    "    start: j1\n"
    "    steps:\n"
    "      j1: {grain: jb, next: j2}\n"
    "      j2: {grain: jb, next: j3}\n"
    "      j3: {grain: jb}\n"
    "  hop:\n"
    "    start: h1\n"
    "    steps:\n"
    "      h1: {grain: jh1, next: h2}\n"
    "      h2: {grain: jh2}\n";

typedef struct worker_proc {
    const char *grain;
    pid_t pid;
} worker_proc;

static char tmpdir[256], sock[300], bundle[300];
static pid_t redis_pid;
static worker_proc workers[] = {{"ja", 0}, {"jb", 0}, {"jc", 0}, {"jbad", 0}};

static pid_t start_worker(const char *grain)
{
    pid_t pid = fork();
    if (pid == 0) {
        char url[400];
        snprintf(url, sizeof(url), "unix:%s", sock);
        setenv("SAND_REDIS", url, 1);
        setenv("SAND_APP", APP, 1);
        setenv("SAND_BUNDLE", bundle, 1);
        setenv("SAND_VALUE_MAX", "2Mi", 1);
        setenv("SAND_LOG_LEVEL", "warn", 1);
        setenv("SAND_LIB_DIR", SAND_BINARY_DIR "/lib", 1);
        execl(SAND_BINARY_DIR "/bin/sand-worker-java", "sand-worker-java", "--grain", grain,
              (char *)NULL);
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

/* The error object of exec's failed execution. */
static json_t *failure(const char *exec)
{
    fields f = {0};
    ha_wait(exec, "end", "fail", &f);
    assert_string_equal(fget(&f, "st"), "failed");
    json_t *o = jparse(fget(&f, "r"));
    fields_free(&f);
    return o;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    if (!s)
        fail_msg("no string '%s'", k);
    return s;
}

/* ---- setup --------------------------------------------------------------------------- */

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int group_setup(void **state)
{
    if (UNDER_ASAN) {
        fprintf(stderr, "[  SKIP    ] test_worker_java: the JVM does not run under "
                        "AddressSanitizer; run these tests in a build without SAND_SANITIZE\n");
        return 0;
    }
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sand-test-wjava-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(sock, sizeof(sock), "%s/redis.sock", tmpdir);
    snprintf(bundle, sizeof(bundle), "%s/bundle", tmpdir);
    char path[400];
    snprintf(path, sizeof(path), "%s/grains", bundle);
    if (mkdir(bundle, 0755) < 0 || mkdir(path, 0755) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/app.yaml", bundle);
    if (write_file(path, app_yaml) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/grains/jgrain.jar", bundle);
    char *cp[] = {"cp", SAND_BINARY_DIR "/runtimes/java/sand-java-test.jar", path, NULL};
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
        workers[i].pid = start_worker(workers[i].grain);
    return 0;
}

static int group_teardown(void **state)
{
    if (UNDER_ASAN)
        return 0;
    for (size_t i = 0; i < SAND_ARRAY_LEN(workers); i++)
        stop_worker(workers[i].pid, SIGTERM);
    if (rc)
        redisFree(rc);
    stop_worker(redis_pid, SIGTERM);
    char *rm[] = {"rm", "-rf", tmpdir, NULL};
    run_argv(rm);
    return 0;
}

/* The JVM does not run under AddressSanitizer: every test skips itself there. */
#define SKIP_UNDER_ASAN()                                                                          \
    do {                                                                                           \
        if (UNDER_ASAN)                                                                            \
            skip();                                                                                \
    } while (0)

/* ---- tests --------------------------------------------------------------------------- */

static void test_output(void **state)
{
    SKIP_UNDER_ASAN();
    fields f = {0};
    send_event("jb", "x-ids", "", "jb", 1, "{\"op\":\"ids\"}");
    ha_wait("x-ids", "end", "ok", &f);
    assert_string_equal(fget(&f, "st"), "succeeded");
    assert_string_equal(fget(&f, "g"), "jb");
    assert_int_equal(atoi(fget(&f, "pid")), workers[1].pid); /* a thread of the worker */
    json_t *o = jparse(fget(&f, "o"));
    assert_string_equal(jstr(o, "app"), APP);
    assert_string_equal(jstr(o, "grain"), "jb");
    assert_string_equal(jstr(o, "step"), "jb");
    assert_string_equal(jstr(o, "wf"), "");
    assert_string_equal(jstr(o, "x"), "x-ids");
    assert_int_equal(json_integer_value(json_object_get(o, "attempt")), 1);
    assert_true(json_is_true(json_object_get(o, "left")));
    json_decref(o);
    fields_free(&f);
    redisReply *r = cmd("XLEN sand:" APP ":q:jb");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    /* non-ASCII and nested JSON survive the trip through Java strings */
    send_event("jb", "x-echo", "", "jb", 1,
               "{\"op\":\"echo\",\"s\":\"h\xc3\xa9 \xf0\x9f\x99\x82\"}");
    ha_wait("x-echo", "end", "ok", &f);
    o = jparse(fget(&f, "o"));
    assert_string_equal(jstr(json_object_get(o, "j"), "s"), "h\xc3\xa9 \xf0\x9f\x99\x82");
    json_decref(o);
    fields_free(&f);

    send_event("jb", "x-null", "", "jb", 1, "{\"op\":\"null\"}");
    ha_wait("x-null", "end", "ok", &f);
    assert_string_equal(fget(&f, "o"), "null");
    fields_free(&f);
}

static void test_exception(void **state)
{
    SKIP_UNDER_ASAN();
    send_event("jb", "x-exc", "", "jb", 1, "{\"op\":\"raise\"}");
    json_t *o = failure("x-exc");
    assert_string_equal(jstr(o, "type"), "java.lang.IllegalStateException");
    assert_string_equal(jstr(o, "message"), "bad thing in jb");
    assert_string_equal(jstr(o, "grain"), "jb");
    const char *tb = jstr(o, "traceback");
    assert_non_null(strstr(tb, "java.lang.IllegalStateException: bad thing in jb"));
    assert_non_null(strstr(tb, "at wt.JGrain.handle(JGrain.java:"));
    json_decref(o);

    send_event("jb", "x-nojson", "", "jb", 1, "{\"op\":\"nojson\"}");
    o = failure("x-nojson");
    assert_string_equal(jstr(o, "type"), "Error");
    assert_string_equal(jstr(o, "message"), "handler output is not valid JSON");
    json_decref(o);

    send_event("jbad", "x-noclass", "", "jbad", 1, "{}");
    o = failure("x-noclass");
    assert_string_equal(jstr(o, "type"), "LoadError");
    assert_non_null(strstr(jstr(o, "message"), "java.lang.ClassNotFoundException"));
    assert_non_null(strstr(jstr(o, "message"), "wt.NoSuchGrain"));
    json_decref(o);

    /* the worker lives on after an exception */
    send_event("jb", "x-after-exc", "", "jb", 1, "{\"op\":\"echo\"}");
    ha_wait("x-after-exc", "end", "ok", NULL);
}

static void test_timeout(void **state)
{
    SKIP_UNDER_ASAN();
    /* a handler that sleeps is interrupted at its timeout (1 s) */
    int64_t t0 = sand_mono_us();
    send_event("ja", "x-sleep", "", "ja", 1, "{\"op\":\"sleep\"}");
    json_t *o = failure("x-sleep");
    assert_string_equal(jstr(o, "type"), "Timeout");
    assert_non_null(strstr(jstr(o, "message"), "interrupted after"));
    json_decref(o);
    assert_true(sand_mono_us() - t0 < 10 * 1000 * 1000);
    send_event("ja", "x-after-sleep", "", "ja", 1, "{\"op\":\"echo\",\"v\":1}");
    ha_wait("x-after-sleep", "end", "ok", NULL);

    /* a handler that ignores interrupts: timed out all the same, and while its thread is
     * still spinning (the grace period) the other slot keeps serving */
    send_event("ja", "x-spin", "", "ja", 1, "{\"op\":\"spin\"}");
    o = failure("x-spin");
    assert_string_equal(jstr(o, "type"), "Timeout");
    json_decref(o);
    send_event("ja", "x-after-spin", "", "ja", 1, "{\"op\":\"echo\",\"v\":2}");
    ha_wait("x-after-spin", "end", "ok", NULL);
    /* once the grace period is over the spinning thread is stopped or abandoned; the worker
     * is still the same process and serves both slots again */
    usleep(1500 * 1000);
    assert_int_equal(kill(workers[0].pid, 0), 0);
    assert_int_equal(waitpid(workers[0].pid, NULL, WNOHANG), 0);
    send_event("ja", "x-after-grace1", "", "ja", 1, "{\"op\":\"conc\"}");
    send_event("ja", "x-after-grace2", "", "ja", 1, "{\"op\":\"conc\"}");
    ha_wait("x-after-grace1", "end", "ok", NULL);
    ha_wait("x-after-grace2", "end", "ok", NULL);
}

static void test_concurrency(void **state)
{
    SKIP_UNDER_ASAN();
    enum { N = 8 };
    char exec[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(exec[i], sizeof(exec[i]), "x-conc-%d", i);
        send_event("jc", exec[i], "", "jc", 1, "{\"op\":\"conc\"}");
    }
    int64_t most = 0;
    for (int i = 0; i < N; i++) {
        fields f = {0};
        ha_wait(exec[i], "end", "ok", &f);
        json_t *o = jparse(fget(&f, "o"));
        int64_t m = json_integer_value(json_object_get(o, "max"));
        assert_true(m >= 1 && m <= 2); /* the grain's concurrency */
        if (m > most)
            most = m;
        json_decref(o);
        fields_free(&f);
    }
    assert_int_equal(most, 2); /* and instances did run in parallel */
}

static void test_data_layer(void **state)
{
    SKIP_UNDER_ASAN();
    fields f = {0};
    send_event("jb", "x-dl", "", "jb", 1, "{\"op\":\"dl\"}");
    ha_wait("x-dl", "end", "ok", &f);
    json_t *o = jparse(fget(&f, "o"));
    static const char *const keys[] = {"jdl-local-0",  "jdl-local-1",  "jdl-local-1048576",
                                       "jdl-global-0", "jdl-global-1", "jdl-global-1048576",
                                       "text",         "absent"};
    for (size_t i = 0; i < SAND_ARRAY_LEN(keys); i++)
        if (!json_is_true(json_object_get(o, keys[i])))
            fail_msg("java data layer check '%s' failed: %s", keys[i], fget(&f, "o"));
    assert_string_equal(jstr(o, "big"), "IllegalArgumentException");
    assert_string_equal(jstr(o, "scope"), "rejected");
    json_decref(o);
    fields_free(&f);
    redisReply *r = cmd("GET sand:" APP ":dl:jkeep");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, 3);
    assert_memory_equal(r->str, "\0\1\xff", 3);
    freeReplyObject(r);
    r = cmd("GET sand:" APP ":dl:jtext");
    assert_string_equal(r->str, "h\xc3\xa9");
    freeReplyObject(r);
    r = cmd("EXISTS sand:" APP ":dl:jdl-local-1048576 sand:" APP ":dg:jdl-global-1");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

static void test_logs(void **state)
{
    SKIP_UNDER_ASAN();
    send_event("jb", "x-log", "", "jb", 1, "{\"op\":\"print\"}");
    ha_wait("x-log", "end", "ok", NULL);
    bool out = false, err = false, log = false;
    for (int tries = 0; tries < 100 && !(out && err && log); tries++) {
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
            if (!kind || !msg || !x || !g || strcmp(x, "x-log") != 0 || strcmp(g, "jb") != 0)
                continue;
            out |= strcmp(kind, "stdout") == 0 && strcmp(msg, "printed x-log") == 0;
            err |= strcmp(kind, "stderr") == 0 && strcmp(msg, "to stderr") == 0;
            log |= strcmp(kind, "log") == 0 && strcmp(msg, "jlog 7 in jb") == 0;
        }
        freeReplyObject(r);
        if (!(out && err && log))
            usleep(20 * 1000);
    }
    assert_true(out);
    assert_true(err);
    assert_true(log);
}

static void test_workflow(void **state)
{
    SKIP_UNDER_ASAN();
    fields f = {0};
    send_event("jb", "x-seq", "seq", "j1", 1, "{\"op\":\"echo\",\"v\":7}");
    ha_wait("x-seq", "end", "ok", &f);
    assert_string_equal(fget(&f, "s"), "j2");
    json_t *o = jparse(fget(&f, "o"));
    /* j2 got j1's output as its event */
    json_t *inner = json_object_get(json_object_get(o, "j"), "j");
    assert_int_equal(json_integer_value(json_object_get(inner, "v")), 7);
    assert_string_equal(jstr(json_object_get(o, "j"), "step"), "j1");
    assert_string_equal(jstr(o, "step"), "j2");
    json_decref(o);
    fields_free(&f);

    send_event("jb", "x-dyn", "dyn", "j1", 1, "{\"op\":\"next\"}");
    ha_wait("x-dyn", "end", "ok", &f);
    assert_string_equal(fget(&f, "s"), "j3");
    o = jparse(fget(&f, "o"));
    assert_string_equal(jstr(json_object_get(o, "j"), "via"), "j1");
    json_decref(o);
    fields_free(&f);
    assert_int_equal(ha_count("x-dyn", "s", "j2", NULL), 0);

    /* next() without a workflow raises IllegalArgumentException */
    send_event("jb", "x-nowf", "", "jb", 1, "{\"op\":\"next\"}");
    o = failure("x-nowf");
    assert_string_equal(jstr(o, "type"), "java.lang.IllegalArgumentException");
    assert_non_null(strstr(jstr(o, "message"), "no workflow"));
    json_decref(o);
}

/* ---- measurements (SAND_BENCH_HOP=N) --------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* n two-step executions of "hop" one after the other; the hop latency is the second
 * instance's started_us minus the first's finished_us (as bench/hop and test_worker do). */
static void test_bench(void **state)
{
    SKIP_UNDER_ASAN();
    const char *env = getenv("SAND_BENCH_HOP");
    if (!env)
        skip();
    int n = atoi(env) > 0 ? atoi(env) : 1000;
    pid_t w[2] = {start_worker("jh1"), start_worker("jh2")};
    int64_t *lat = calloc((size_t)n, sizeof(*lat));
    char last[64] = "$";
    /* warm up: the first events attach threads and JIT-compile the path */
    for (int i = 0; i < 200 + n; i++) {
        char exec[64];
        int64_t f1 = 0, b2 = 0;
        snprintf(exec, sizeof(exec), "hop-%d", i);
        send_event("jh1", exec, "hop", "h1", 1, "{\"op\":\"echo\"}");
        while (!b2) {
            redisReply *r = cmd("XREAD COUNT 10 BLOCK 20000 STREAMS sand:" APP ":ha %s", last);
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
        if (i >= 200)
            lat[i - 200] = b2 - f1;
    }
    qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
    printf("java hop latency over %d two-step executions: p50 %lld us, p99 %lld us\n", n,
           (long long)lat[n / 2], (long long)lat[(n * 99) / 100]);
    assert_true(lat[0] >= 0);
    free(lat);
    stop_worker(w[0], SIGTERM);
    stop_worker(w[1], SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output),     cmocka_unit_test(test_exception),
        cmocka_unit_test(test_timeout),    cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_data_layer), cmocka_unit_test(test_logs),
        cmocka_unit_test(test_workflow),   cmocka_unit_test(test_bench),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
