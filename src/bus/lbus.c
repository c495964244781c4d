/*
 * The local bus connection: one hiredis async context driven by hiredis' libuv adapter on
 * sandd's loop. The object outlives its connections: when Redis goes away it reconnects with
 * exponential backoff and authenticates again (AUTH is the first command of every connection,
 * so commands issued while connecting are pipelined behind it). While no connection exists,
 * commands fail on the next loop iteration instead of queueing without bound. The per-command
 * bookkeeping (callback and user data) comes from a free list, so the steady state allocates
 * only what hiredis itself allocates.
 */
#include "sand/bus.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>

enum lbus_state {
    LBUS_DOWN,       /* no context; the reconnect timer runs */
    LBUS_CONNECTING, /* context exists, AUTH not answered yet; commands are pipelined */
    LBUS_UP,
    LBUS_CLOSED,
};

struct lreq {
    sand_lbus_t *lbus;
    sand_lbus_reply_cb cb;
    void *ud;
    bool group_create;  /* XGROUP CREATE: BUSYGROUP is success, other errors are failures */
    const char *errstr; /* for commands failed without being sent */
    sand_list_t link;   /* free list or the fail-fast queue */
};

struct sand_lbus {
    uv_loop_t *loop;
    redisAsyncContext *ac;
    enum lbus_state state;
    char *path; /* unix socket, or NULL for TCP */
    char *host;
    int port;
    char *user, *password, *name;
    int min_ms, max_ms, backoff_ms;
    sand_lbus_state_cb state_cb;
    void *state_ud;
    uv_timer_t timer; /* reconnect */
    uv_idle_t idle;   /* runs the fail-fast queue */
    sand_list_t failed;
    sand_list_t free_reqs;
    int open_handles;
    void (*close_cb)(void *ud);
    void *close_ud;
    char err[160]; /* why the last connection ended */
};

static void lbus_connect(sand_lbus_t *lb);

static void on_reconnect_timer(uv_timer_t *t)
{
    lbus_connect(t->data);
}

static struct lreq *req_get(sand_lbus_t *lb)
{
    struct lreq *q;
    if (!sand_list_empty(&lb->free_reqs)) {
        q = SAND_CONTAINER_OF(lb->free_reqs.next, struct lreq, link);
        sand_list_remove(&q->link);
    } else {
        q = malloc(sizeof(*q));
        if (!q)
            return NULL;
        sand_list_init(&q->link);
    }
    q->lbus = lb;
    q->cb = NULL;
    q->ud = NULL;
    q->group_create = false;
    q->errstr = NULL;
    return q;
}

static void req_put(sand_lbus_t *lb, struct lreq *q)
{
    sand_list_insert_tail(&lb->free_reqs, &q->link);
}

static void run_failed(sand_lbus_t *lb, int status)
{
    while (!sand_list_empty(&lb->failed)) {
        struct lreq *q = SAND_CONTAINER_OF(lb->failed.next, struct lreq, link);
        sand_list_remove(&q->link);
        sand_lbus_reply_cb cb = q->cb;
        void *ud = q->ud;
        const char *why = status == SAND_ECANCELED ? "local bus closed" : q->errstr;
        req_put(lb, q);
        cb(lb, status, NULL, why, ud);
    }
}

static void on_idle(uv_idle_t *h)
{
    sand_lbus_t *lb = h->data;
    uv_idle_stop(h);
    run_failed(lb, SAND_EBUS);
}

/* Queues cb to fail on the next loop iteration (never from inside the caller's call). */
static void fail_later(sand_lbus_t *lb, struct lreq *q, const char *why)
{
    q->errstr = why;
    sand_list_insert_tail(&lb->failed, &q->link);
    uv_idle_start(&lb->idle, on_idle);
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct lreq *q = priv;
    sand_lbus_t *lb = q->lbus;
    sand_lbus_reply_cb cb = q->cb;
    void *ud = q->ud;
    bool group_create = q->group_create;
    redisReply *reply = r;
    req_put(lb, q);

    if (!reply) {
        const char *why = lb->state == LBUS_CLOSED ? "local bus closed"
                          : ac->err                ? ac->errstr
                                                   : "connection to redis lost";
        cb(lb, lb->state == LBUS_CLOSED ? SAND_ECANCELED : SAND_EBUS, NULL, why, ud);
        return;
    }
    if (group_create && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "BUSYGROUP", 9) != 0) {
        cb(lb, SAND_EBUS, reply, reply->str, ud);
        return;
    }
    cb(lb, 0, reply, NULL, ud);
}

static void set_down(sand_lbus_t *lb, const char *why)
{
    bool was_up = lb->state == LBUS_UP;
    lb->ac = NULL;
    if (lb->state == LBUS_CLOSED)
        return;
    lb->state = LBUS_DOWN;
    sand_strlcpy(lb->err, why, sizeof(lb->err));
    SAND_DEBUG("bus", "redis '%s' down (%s), retry in %d ms", lb->path ? lb->path : lb->host, why,
               lb->backoff_ms);
    uv_timer_start(&lb->timer, on_reconnect_timer, (uint64_t)lb->backoff_ms, 0);
    lb->backoff_ms = lb->backoff_ms * 2 > lb->max_ms ? lb->max_ms : lb->backoff_ms * 2;
    if (was_up && lb->state_cb)
        lb->state_cb(lb, false, lb->state_ud);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sand_lbus_t *lb = ac->data;
    if (status != REDIS_OK && lb->ac == ac)
        set_down(lb, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    sand_lbus_t *lb = ac->data;
    if (lb->ac == ac)
        set_down(lb, status == REDIS_OK ? "disconnected" : ac->errstr);
}

/* Answer to the AUTH (or the PING that follows it): the connection is usable. */
static void on_ready(redisAsyncContext *ac, void *r, void *priv)
{
    sand_lbus_t *lb = ac->data;
    redisReply *reply = r;
    (void)priv;
    if (!reply || lb->ac != ac || lb->state != LBUS_CONNECTING)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        SAND_ERROR("bus", "redis '%s' refused authentication: %s", lb->path ? lb->path : lb->host,
                   reply->str);
        /* Deferred by hiredis until this callback returns; commands pipelined behind the AUTH
         * get their (NOAUTH) answers or a NULL reply, never silence. */
        redisAsyncFree(lb->ac);
        set_down(lb, "authentication refused");
        return;
    }
    lb->state = LBUS_UP;
    lb->backoff_ms = lb->min_ms;
    lb->err[0] = '\0';
    if (lb->state_cb)
        lb->state_cb(lb, true, lb->state_ud);
}

static void lbus_connect(sand_lbus_t *lb)
{
    if (lb->state == LBUS_CLOSED)
        return;
    redisAsyncContext *ac =
        lb->path ? redisAsyncConnectUnix(lb->path) : redisAsyncConnect(lb->host, lb->port);
    if (!ac) {
        set_down(lb, "out of memory");
        return;
    }
    if (ac->err) {
        char why[sizeof(lb->err)];
        sand_strlcpy(why, ac->errstr, sizeof(why));
        redisAsyncFree(ac);
        set_down(lb, why);
        return;
    }
    ac->data = lb;
    if (redisLibuvAttach(ac, lb->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        set_down(lb, "cannot attach to the loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    lb->ac = ac;
    lb->state = LBUS_CONNECTING;

    /* AUTH first, then the name, then a PING whose answer marks the connection up. */
    if (lb->password) {
        const char *argv[3] = {"AUTH", lb->user ? lb->user : lb->password, lb->password};
        redisAsyncCommandArgv(ac, on_ready, NULL, lb->user ? 3 : 2, argv, NULL);
    }
    if (lb->name)
        redisAsyncCommand(ac, NULL, NULL, "CLIENT SETNAME %s", lb->name);
    if (!lb->password)
        redisAsyncCommand(ac, on_ready, NULL, "PING");
}

static int parse_endpoint(sand_lbus_t *lb, const char *ep, sand_err *err)
{
    sand_endpoint_t e;
    if (sand_endpoint_parse(ep, &e, err) < 0)
        return SAND_EINVAL;
    if (e.unix_socket)
        lb->path = sand_strdup(e.path);
    else
        lb->host = sand_strdup(e.host);
    lb->port = e.port;
    return lb->path || lb->host ? 0 : sand_err_set(err, SAND_ENOMEM, "endpoint '%s'", ep);
}

static void lbus_free(sand_lbus_t *lb)
{
    while (!sand_list_empty(&lb->free_reqs)) {
        struct lreq *q = SAND_CONTAINER_OF(lb->free_reqs.next, struct lreq, link);
        sand_list_remove(&q->link);
        free(q);
    }
    free(lb->path);
    free(lb->host);
    free(lb->user);
    free(lb->password);
    free(lb->name);
    free(lb);
}

int sand_lbus_open(uv_loop_t *loop, const sand_lbus_opts *opts, sand_lbus_t **out, sand_err *err)
{
    int rc;
    if (!opts || !opts->endpoint)
        return sand_err_set(err, SAND_EINVAL, "local bus endpoint missing");
    sand_lbus_t *lb = calloc(1, sizeof(*lb));
    if (!lb)
        return sand_err_set(err, SAND_ENOMEM, "local bus");
    lb->loop = loop;
    sand_list_init(&lb->failed);
    sand_list_init(&lb->free_reqs);
    if ((rc = parse_endpoint(lb, opts->endpoint, err)) < 0)
        goto error;
    if ((opts->user && !(lb->user = sand_strdup(opts->user))) ||
        (opts->password && !(lb->password = sand_strdup(opts->password))) ||
        (opts->name && !(lb->name = sand_strdup(opts->name)))) {
        rc = sand_err_set(err, SAND_ENOMEM, "local bus");
        goto error;
    }
    lb->min_ms = opts->reconnect_min_ms > 0 ? opts->reconnect_min_ms : 50;
    lb->max_ms = opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : 2000;
    if (lb->max_ms < lb->min_ms)
        lb->max_ms = lb->min_ms;
    lb->backoff_ms = lb->min_ms;
    lb->state_cb = opts->state_cb;
    lb->state_ud = opts->state_ud;
    uv_timer_init(loop, &lb->timer);
    uv_idle_init(loop, &lb->idle);
    lb->timer.data = lb;
    lb->idle.data = lb;
    lb->open_handles = 2;
    lb->state = LBUS_DOWN;
    lbus_connect(lb);
    *out = lb;
    return 0;
error:
    lbus_free(lb);
    return rc;
}

bool sand_lbus_connected(const sand_lbus_t *lbus)
{
    return lbus->state == LBUS_UP;
}

/* Common path of the command variants once arguments are known to be sendable. */
static struct lreq *begin_command(sand_lbus_t *lb, sand_lbus_reply_cb cb, void *ud, int *rc)
{
    *rc = 0;
    if (lb->state == LBUS_CLOSED) {
        *rc = SAND_ECANCELED;
        return NULL;
    }
    if (!cb)
        return NULL;
    struct lreq *q = req_get(lb);
    if (!q) {
        *rc = SAND_ENOMEM;
        return NULL;
    }
    q->cb = cb;
    q->ud = ud;
    return q;
}

int sand_lbus_command_argv(sand_lbus_t *lbus, sand_lbus_reply_cb cb, void *ud, int argc,
                           const char **argv, const size_t *argvlen)
{
    int rc;
    if (argc < 1)
        return SAND_EINVAL;
    struct lreq *q = begin_command(lbus, cb, ud, &rc);
    if (rc < 0)
        return rc;
    if (lbus->state == LBUS_DOWN || !lbus->ac) {
        if (q)
            fail_later(lbus, q, "not connected to redis");
        return 0;
    }
    if (redisAsyncCommandArgv(lbus->ac, q ? on_reply : NULL, q, argc, argv, argvlen) != REDIS_OK) {
        if (q)
            fail_later(lbus, q, "redis connection is closing");
    }
    return 0;
}

int sand_lbus_command(sand_lbus_t *lbus, sand_lbus_reply_cb cb, void *ud, const char *fmt, ...)
{
    int rc;
    struct lreq *q = begin_command(lbus, cb, ud, &rc);
    if (rc < 0)
        return rc;
    if (lbus->state == LBUS_DOWN || !lbus->ac) {
        if (q)
            fail_later(lbus, q, "not connected to redis");
        return 0;
    }
    va_list ap;
    va_start(ap, fmt);
    int hr = redisvAsyncCommand(lbus->ac, q ? on_reply : NULL, q, fmt, ap);
    va_end(ap);
    if (hr != REDIS_OK) {
        if (!q)
            return 0;
        /* hiredis refuses a bad format and a closing connection alike; only the latter is
         * worth a callback, but the contract promises one either way once we return 0. */
        fail_later(lbus, q, lbus->ac->c.err ? lbus->ac->c.errstr : "redis command refused");
    }
    return 0;
}

int sand_lbus_ensure_group(sand_lbus_t *lbus, const char *key, const char *group,
                           sand_lbus_reply_cb cb, void *ud)
{
    int rc;
    const char *argv[] = {"XGROUP", "CREATE", key, group, "$", "MKSTREAM"};
    struct lreq *q = begin_command(lbus, cb, ud, &rc);
    if (rc < 0)
        return rc;
    if (q)
        q->group_create = true;
    if (lbus->state == LBUS_DOWN || !lbus->ac) {
        if (q)
            fail_later(lbus, q, "not connected to redis");
        return 0;
    }
    if (redisAsyncCommandArgv(lbus->ac, q ? on_reply : NULL, q, (int)SAND_ARRAY_LEN(argv), argv,
                              NULL) != REDIS_OK &&
        q)
        fail_later(lbus, q, "redis connection is closing");
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    sand_lbus_t *lb = h->data;
    if (--lb->open_handles > 0)
        return;
    /* Commands failed while closing may have queued more; they are cancelled too. */
    run_failed(lb, SAND_ECANCELED);
    if (lb->close_cb)
        lb->close_cb(lb->close_ud);
    lbus_free(lb);
}

void sand_lbus_close(sand_lbus_t *lbus, void (*close_cb)(void *ud), void *ud)
{
    if (lbus->state == LBUS_CLOSED)
        return;
    lbus->state = LBUS_CLOSED;
    lbus->close_cb = close_cb;
    lbus->close_ud = ud;
    uv_timer_stop(&lbus->timer);
    redisAsyncContext *ac = lbus->ac;
    lbus->ac = NULL;
    /* Runs every pending reply callback with a NULL reply (SAND_ECANCELED), now or, when called
     * from inside a hiredis callback, as soon as that callback returns. */
    if (ac)
        redisAsyncFree(ac);
    run_failed(lbus, SAND_ECANCELED);
    uv_close((uv_handle_t *)&lbus->timer, on_handle_closed);
    uv_close((uv_handle_t *)&lbus->idle, on_handle_closed);
}
