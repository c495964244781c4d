/*
 * The grain instance's side of the worker: the functions of include/sand/grain.h (exported by
 * the worker executables so that C grains link against nothing, and called by the Python
 * extension type too), the data layer (context.put/get/delete on lazily opened Redis
 * connections), and the frames that report the outcome to the worker. Everything here runs on
 * the single thread of a grain instance (or of the worker in reuse mode), or on an instance
 * thread in threads mode, where each thread has its own context and data layer connections.
 */
#include "worker_internal.h"

#include "sand/protocol.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

redisContext *sand__redis_connect(const char *url, const char *user, const char *pass,
                                  sand_err *err)
{
    redisContext *c;
    struct timeval tv = {5, 0};

    sand_endpoint_t ep;
    if (sand_endpoint_parse(url, &ep, err) < 0)
        return NULL;
    c = ep.unix_socket ? redisConnectUnixWithTimeout(ep.path, tv)
                       : redisConnectWithTimeout(ep.host, ep.port, tv);
    if (!c)
        return sand_err_set(err, SAND_ENOMEM, "redis '%s': out of memory", url), NULL;
    if (c->err) {
        sand_err_set(err, SAND_EBUS, "redis '%s': %s", url, c->errstr);
        redisFree(c);
        return NULL;
    }
    if (pass && *pass) {
        redisReply *r = (user && *user) ? redisCommand(c, "AUTH %s %s", user, pass)
                                        : redisCommand(c, "AUTH %s", pass);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            sand_err_set(err, SAND_EPERM, "redis '%s': auth: %s", url, r ? r->str : c->errstr);
            if (r)
                freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
}

void sand__dl_release(sand_dl_t *dl)
{
    for (int i = 0; i < 2; i++) {
        if (dl->conn[i])
            redisFree(dl->conn[i]);
        dl->conn[i] = NULL;
    }
}

static void write_all(sand_context *ctx, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0 && !ctx->gone) {
        ssize_t w = write(ctx->fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (!ctx->thread)
                _exit(0);     /* the worker is gone: nobody reads this outcome */
            ctx->gone = true; /* the instance was timed out and abandoned */
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

void sand__frame_send(sand_context *ctx, int type, const void *a, size_t alen, const void *b,
                      size_t blen)
{
    uint32_t len = (uint32_t)(1 + alen + blen);
    uint8_t t = (uint8_t)type;

    if (ctx->fd < 0) {
        if (sand_bytes_append(ctx->buf, &len, 4) < 0 || sand_bytes_append(ctx->buf, &t, 1) < 0 ||
            sand_bytes_append(ctx->buf, a, alen) < 0 ||
            (blen && sand_bytes_append(ctx->buf, b, blen) < 0))
            SAND_WARN("worker", "outcome of '%s' over its limit, frame dropped", ctx->grain);
        return;
    }
    /* A forked instance holds its outcome (times, output or error, next steps) until its end,
     * when its stdout and stderr are closed already: the worker then reads the outcome and
     * every end of file in one wake-up. Log lines go at once. Frames beyond the hold's limit
     * are sent as they come (the worker then stops the instance for its oversized output). */
    if (ctx->hold && type != SAND_FRAME_LOG && type != SAND_FRAME_LOGK) {
        size_t before = ctx->hold->len;
        if (sand_bytes_append(ctx->hold, &len, 4) == 0 &&
            sand_bytes_append(ctx->hold, &t, 1) == 0 &&
            sand_bytes_append(ctx->hold, a, alen) == 0 &&
            (!blen || sand_bytes_append(ctx->hold, b, blen) == 0))
            return;
        ctx->hold->len = before;
        sand__frame_flush(ctx);
    }
    /* The start and finish times wait for the next frame (sand__frame_flush() at the latest):
     * the worker then wakes once for "finished + output" rather than once per frame. */
    if ((type == SAND_FRAME_START || type == SAND_FRAME_FINISH) && alen == 8 && !blen &&
        ctx->pend_len + 13 <= sizeof(ctx->pend)) {
        memcpy(ctx->pend + ctx->pend_len, &len, 4);
        ctx->pend[ctx->pend_len + 4] = (char)t;
        memcpy(ctx->pend + ctx->pend_len + 5, a, 8);
        ctx->pend_len += 13;
        return;
    }
    /* One write for small frames keeps the worker's reads whole; big ones go in pieces. */
    if (alen + blen <= 4096) {
        char tmp[sizeof(ctx->pend) + 4 + 1 + 4096];
        size_t o = ctx->pend_len;
        memcpy(tmp, ctx->pend, o);
        ctx->pend_len = 0;
        memcpy(tmp + o, &len, 4);
        tmp[o + 4] = (char)t;
        if (alen)
            memcpy(tmp + o + 5, a, alen);
        if (blen)
            memcpy(tmp + o + 5 + alen, b, blen);
        write_all(ctx, tmp, o + 5 + alen + blen);
        return;
    }
    sand__frame_flush(ctx);
    char hdr[5];
    memcpy(hdr, &len, 4);
    hdr[4] = (char)t;
    write_all(ctx, hdr, 5);
    write_all(ctx, a, alen);
    if (blen)
        write_all(ctx, b, blen);
}

void sand__frame_flush(sand_context *ctx)
{
    if (ctx->fd >= 0 && ctx->hold) {
        sand_bytes_t *h = ctx->hold;
        ctx->hold = NULL; /* from here on frames go out as they come */
        if (h->len)
            write_all(ctx, h->data, h->len);
        sand_bytes_reset(h);
    }
    if (ctx->fd >= 0 && ctx->pend_len) {
        size_t n = ctx->pend_len;
        ctx->pend_len = 0;
        write_all(ctx, ctx->pend, n);
    }
}

/* ---- reporting ----------------------------------------------------------------------- */

static void send_time(sand_context *ctx, int type)
{
    int64_t us = sand_now_us();
    sand__frame_send(ctx, type, &us, sizeof(us), NULL, 0);
}

void sand_worker_ctx_started(sand_context *ctx)
{
    send_time(ctx, SAND_FRAME_START);
}

void sand_worker_ctx_finished(sand_context *ctx)
{
    send_time(ctx, SAND_FRAME_FINISH);
}

void sand_worker_ctx_output(sand_context *ctx, const char *json, size_t len)
{
    if (ctx->reported)
        return;
    ctx->reported = true;
    sand__frame_send(ctx, SAND_FRAME_OUTPUT, json, len, NULL, 0);
}

/* A JSON string of user-provided text; bytes that are not valid UTF-8 become '?' so that the
 * error object always serialises. */
static json_t *json_str_lossy(const char *s)
{
    json_t *v = json_string(s);
    if (v)
        return v;
    char *copy = sand_strdup(s);
    if (!copy)
        return json_string("");
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

void sand_worker_ctx_fail(sand_context *ctx, const char *type, const char *message,
                          const char *traceback)
{
    if (ctx->reported)
        return;
    ctx->reported = true;
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(type ? type : "Error"));
    json_object_set_new(o, "message", json_str_lossy(message ? message : ""));
    if (traceback)
        json_object_set_new(o, "traceback", json_str_lossy(traceback));
    char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!text) {
        static const char fallback[] = "{\"type\":\"Error\",\"message\":\"out of memory\"}";
        sand__frame_send(ctx, SAND_FRAME_ERROR, fallback, sizeof(fallback) - 1, NULL, 0);
        return;
    }
    sand__frame_send(ctx, SAND_FRAME_ERROR, text, strlen(text), NULL, 0);
    free(text);
}

const char *sand_worker_ctx_error_message(const sand_context *ctx)
{
    return ctx->error_msg;
}

size_t sand_worker_ctx_value_max(const sand_context *ctx)
{
    return ctx->value_max;
}

void sand_worker_ctx_log_line(sand_context *ctx, const char *kind, const char *line, size_t len)
{
    if (len > SAND_WORKER_LOG_LINE_MAX)
        len = SAND_WORKER_LOG_LINE_MAX;
    if (kind && (strcmp(kind, "stdout") == 0 || strcmp(kind, "stderr") == 0 ||
                 strcmp(kind, "system") == 0)) {
        sand__frame_send(ctx, SAND_FRAME_LOGK, kind, strlen(kind) + 1, line, len);
        return;
    }
    sand__frame_send(ctx, SAND_FRAME_LOG, line, len, NULL, 0);
}

/* ---- grain.h ------------------------------------------------------------------------- */

int sand_buf_append(sand_buf *out, const void *data, size_t n)
{
    return sand_bytes_append(&out->b, data, n);
}

int sand_buf_appendf(sand_buf *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sand_bytes_vappendf(&out->b, fmt, ap);
    va_end(ap);
    return rc;
}

void sand_ctx_log(sand_context *ctx, const char *fmt, ...)
{
    char line[SAND_WORKER_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    sand_worker_ctx_log_line(ctx, "log", line, len);
}

void sand_ctx_error(sand_context *ctx, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    free(ctx->error_msg);
    ctx->error_msg = sand_strdup(msg);
}

const char *sand_ctx_app(const sand_context *ctx)
{
    return ctx->app;
}

const char *sand_ctx_grain(const sand_context *ctx)
{
    return ctx->grain;
}

const char *sand_ctx_step(const sand_context *ctx)
{
    return ctx->step;
}

const char *sand_ctx_workflow(const sand_context *ctx)
{
    return ctx->workflow;
}

const char *sand_ctx_execution_id(const sand_context *ctx)
{
    return ctx->exec;
}

int sand_ctx_attempt(const sand_context *ctx)
{
    return ctx->attempt;
}

int64_t sand_ctx_remaining_ms(const sand_context *ctx)
{
    int64_t left = (ctx->kill_at_us - sand_now_us()) / 1000;
    return left > 0 ? left : 0;
}

int sand_ctx_next(sand_context *ctx, const char *step, const char *json, size_t len)
{
    if (!step || !ctx->wf || !sand_workflow_step(ctx->wf, step))
        return SAND_GRAIN_EINVAL;
    json_error_t jerr;
    json_t *v = json_loadb(json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v)
        return SAND_GRAIN_EINVAL;
    json_decref(v);
    uint32_t sl = (uint32_t)strlen(step);
    char head[4 + SAND_NAME_MAX];
    memcpy(head, &sl, 4);
    memcpy(head + 4, step, sl);
    sand__frame_send(ctx, SAND_FRAME_NEXT, head, 4 + sl, json, len);
    return 0;
}

/* Returns the connection for scope, opening it on first use, or NULL. */
static redisContext *dl_conn(sand_context *ctx, int scope)
{
    sand_dl_t *dl = ctx->dl;
    if (scope != SAND_SCOPE_LOCAL && scope != SAND_SCOPE_GLOBAL)
        return NULL;
    if (dl->conn[scope] && dl->conn[scope]->err) {
        redisFree(dl->conn[scope]);
        dl->conn[scope] = NULL;
    }
    if (!dl->conn[scope]) {
        sand_err err = {0};
        dl->conn[scope] =
            sand__redis_connect(dl->url[scope], dl->user[scope], dl->pass[scope], &err);
        if (!dl->conn[scope])
            SAND_WARN("worker", "data layer: %s", err.msg);
    }
    return dl->conn[scope];
}

/* Runs one single-key command on scope's store. A Redis Cluster answers MOVED or ASK when the
 * key lives on another node: MOVED makes that node this scope's connection (later keys of the
 * same slot go straight there), ASK runs the command once there after ASKING. Returns the reply
 * (caller frees) or NULL when no answer could be had. */
static redisReply *dl_command(sand_context *ctx, int scope, int argc, const char **argv,
                              const size_t *lens)
{
    sand_dl_t *dl = ctx->dl;
    redisContext *c = dl_conn(ctx, scope);
    for (int hop = 0; c && hop < 8; hop++) {
        redisReply *r = redisCommandArgv(c, argc, argv, lens);
        if (!r || r->type != REDIS_REPLY_ERROR)
            return r;
        bool moved = strncmp(r->str, "MOVED ", 6) == 0, ask = strncmp(r->str, "ASK ", 4) == 0;
        const char *addr = strrchr(r->str, ' ');
        if ((!moved && !ask) || !addr)
            return r;
        char url[300];
        snprintf(url, sizeof(url), "tcp://%s", addr + 1);
        freeReplyObject(r);
        sand_err err = {0};
        redisContext *n = sand__redis_connect(url, dl->user[scope], dl->pass[scope], &err);
        if (!n) {
            SAND_WARN("worker", "data layer: %s", err.msg);
            return NULL;
        }
        if (moved) {
            redisFree(dl->conn[scope]);
            dl->conn[scope] = c = n;
            continue;
        }
        redisReply *a = redisCommand(n, "ASKING");
        if (a)
            freeReplyObject(a);
        r = redisCommandArgv(n, argc, argv, lens);
        redisFree(n);
        return r;
    }
    return NULL;
}

static int dl_key(sand_context *ctx, const char *key, int scope, sand_bytes_t *k)
{
    if (!key || (scope != SAND_SCOPE_LOCAL && scope != SAND_SCOPE_GLOBAL))
        return SAND_GRAIN_EINVAL;
    sand_bytes_init(k, 4096 + strlen(key));
    return sand_bytes_appendf(k,
                              scope == SAND_SCOPE_LOCAL ? SAND_KEY_LOCAL_FMT : SAND_KEY_GLOBAL_FMT,
                              ctx->app, key) < 0
               ? SAND_GRAIN_ENOMEM
               : 0;
}

int sand_ctx_put(sand_context *ctx, const char *key, const void *val, size_t len, int scope)
{
    sand_bytes_t k;
    int rc;
    if (len > ctx->value_max)
        return SAND_GRAIN_ETOOBIG;
    if (!val && len)
        return SAND_GRAIN_EINVAL;
    if ((rc = dl_key(ctx, key, scope, &k)) < 0)
        return rc;
    const char *argv[] = {"SET", k.data, val ? val : ""};
    size_t lens[] = {3, k.len, len};
    redisReply *r = dl_command(ctx, scope, 3, argv, lens);
    sand_bytes_release(&k);
    rc = (r && r->type != REDIS_REPLY_ERROR) ? 0 : SAND_GRAIN_EIO;
    if (r)
        freeReplyObject(r);
    return rc;
}

int sand_ctx_get(sand_context *ctx, const char *key, void **val, size_t *len, int scope)
{
    sand_bytes_t k;
    int rc;
    *val = NULL;
    *len = 0;
    if ((rc = dl_key(ctx, key, scope, &k)) < 0)
        return rc;
    const char *argv[] = {"GET", k.data};
    size_t lens[] = {3, k.len};
    redisReply *r = dl_command(ctx, scope, 2, argv, lens);
    sand_bytes_release(&k);
    if (!r || r->type == REDIS_REPLY_ERROR)
        rc = SAND_GRAIN_EIO;
    else if (r->type == REDIS_REPLY_NIL)
        rc = SAND_GRAIN_ENOTFOUND;
    else if (r->type != REDIS_REPLY_STRING)
        rc = SAND_GRAIN_EIO;
    else if (!(*val = malloc(r->len + 1)))
        rc = SAND_GRAIN_ENOMEM;
    else {
        memcpy(*val, r->str, r->len);
        ((char *)*val)[r->len] = 0;
        *len = r->len;
        rc = 0;
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

int sand_ctx_delete(sand_context *ctx, const char *key, int scope)
{
    sand_bytes_t k;
    int rc;
    if ((rc = dl_key(ctx, key, scope, &k)) < 0)
        return rc;
    const char *argv[] = {"DEL", k.data};
    size_t lens[] = {3, k.len};
    redisReply *r = dl_command(ctx, scope, 2, argv, lens);
    sand_bytes_release(&k);
    rc = (r && r->type != REDIS_REPLY_ERROR) ? 0 : SAND_GRAIN_EIO;
    if (r)
        freeReplyObject(r);
    return rc;
}

/* ---- outcome ------------------------------------------------------------------------- */

void sand__outcome_init(sand_outcome_t *o)
{
    memset(o, 0, sizeof(*o));
    sand_vec_init(&o->next_steps);
    sand_vec_init(&o->next_events);
}

void sand__outcome_release(sand_outcome_t *o)
{
    free(o->output);
    free(o->error);
    sand_vec_release(&o->next_steps, free);
    sand_vec_release(&o->next_events, free);
    sand__outcome_init(o);
}
