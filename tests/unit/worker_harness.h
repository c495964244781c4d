/*
 * Helpers shared by the grain worker tests (test_worker.c, test_worker_java.c): running a
 * command, talking to the test's redis-server through the global connection rc, queueing an
 * event as sandd does, and reading the host agent's stream (LQHA) back. The including file
 * defines APP and WAIT_MS and owns rc.
 */
#ifndef SAND_TEST_WORKER_HARNESS_H
#define SAND_TEST_WORKER_HARNESS_H

#include <hiredis/hiredis.h>
#include <jansson.h>

static redisContext *rc;

SAND_UNUSED static int run_argv(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

SAND_UNUSED static redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

/* XADDs an event as sandd does and returns nothing; exec must be unique per test. */
SAND_UNUSED static void send_event(const char *grain, const char *exec, const char *wf,
                                   const char *step, int attempt, const char *event)
{
    char q[256], a[16], now[32];
    snprintf(q, sizeof(q), "sand:" APP ":q:%s", grain);
    snprintf(a, sizeof(a), "%d", attempt);
    snprintf(now, sizeof(now), "%lld", (long long)sand_now_us());
    redisReply *r = cmd("XADD %s * i %s x %s w %s s %s a %s q %s d 0 e %s", q, exec, exec, wf, step,
                        a, now, event);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
}

/* One LQHA entry as field -> value. */
typedef struct fields {
    int n;
    char *k[40], *v[40];
} fields;

SAND_UNUSED static void fields_free(fields *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->k[i]);
        free(f->v[i]);
    }
    f->n = 0;
}

SAND_UNUSED static const char *fget(const fields *f, const char *k)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->k[i], k) == 0)
            return f->v[i];
    return NULL;
}

/* Counts the LQHA entries of exec that have field key == value (value NULL: field present),
 * copying the last one into out (may be NULL). */
SAND_UNUSED static int ha_count(const char *exec, const char *key, const char *value, fields *out)
{
    redisReply *r = cmd("XRANGE sand:" APP ":ha - +");
    int count = 0;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *kv = r->element[i]->element[1];
        fields f = {0};
        for (size_t j = 0; j + 1 < kv->elements && f.n < 40; j += 2, f.n++) {
            f.k[f.n] = strdup(kv->element[j]->str);
            f.v[f.n] = strndup(kv->element[j + 1]->str, kv->element[j + 1]->len);
        }
        const char *x = fget(&f, "x"), *v = fget(&f, key);
        if (x && strcmp(x, exec) == 0 && v && (!value || strcmp(v, value) == 0)) {
            count++;
            if (out) {
                fields_free(out);
                *out = f;
                continue;
            }
        }
        fields_free(&f);
    }
    freeReplyObject(r);
    return count;
}

/* Waits until an LQHA entry of exec has key (== value when not NULL); fills out. */
SAND_UNUSED static void ha_wait(const char *exec, const char *key, const char *value, fields *out)
{
    for (int waited = 0; waited < WAIT_MS; waited += 10) {
        if (ha_count(exec, key, value, out) > 0)
            return;
        usleep(10 * 1000);
    }
    fail_msg("no LQHA entry for '%s' with %s=%s", exec, key, value ? value : "*");
}

SAND_UNUSED static json_t *jparse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v)
        fail_msg("invalid JSON '%s': %s", text, e.text);
    return v;
}

#endif
