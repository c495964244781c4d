/*
 * Tests of the HTTP server library (sand_frontend): the server runs on a libuv loop in the test
 * thread while a client thread speaks HTTP/1.1 over plain blocking sockets, so every byte on the
 * wire is under the test's control (pipelining in one write, broken framing, early disconnects).
 * Each test ends by closing the server and asserting uv_loop_close() == 0, so a leaked handle
 * fails the test; ASan builds catch leaked or reused requests.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sand/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_BODY   1024
#define UPLOAD_MAX (4 * 1024 * 1024)
#define BIG_LEN    (3 * 1024 * 1024)

/* ---- server side (loop thread) ----------------------------------------------------------- */

typedef struct fixture fixture;

struct fixture {
    uv_loop_t loop;
    sand_http_server_t *srv;
    int port;
    uv_async_t done;
    pthread_t thread;
    void (*client)(fixture *f);
    bool server_closed;
    sand_http_req_t *kept; /* a request left unanswered on purpose */
    struct cconn *hung[2]; /* client sockets left open across a server close */
    atomic_int handled;
    atomic_int on_close_count;
    atomic_int client_ok; /* set by the client thread when it got through its script */
};

typedef struct delayed {
    uv_timer_t timer;
    sand_http_req_t *req;
    fixture *f;
    int ticks;
    bool stream;
} delayed;

static void delayed_closed(uv_handle_t *h)
{
    free(h->data);
}

static void delayed_on_close(sand_http_req_t *req, void *ud)
{
    delayed *d = ud;
    atomic_fetch_add(&d->f->on_close_count, 1);
    /* Answering from inside on_close must be refused without freeing req. */
    assert_int_equal(sand_http_respond(req, 200, NULL, "x", 1, NULL), SAND_ECANCELED);
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void delayed_fire(uv_timer_t *t)
{
    delayed *d = t->data;
    if (d->stream && d->ticks > 0) {
        char chunk[16];
        int n = snprintf(chunk, sizeof(chunk), "tick%d;", d->ticks);
        assert_int_equal(sand_http_stream_write(d->req, chunk, (size_t)n), 0);
        d->ticks--;
        return;
    }
    uv_timer_stop(t);
    if (d->stream)
        assert_int_equal(sand_http_stream_end(d->req), 0);
    else
        assert_int_equal(sand_http_respond(d->req, 200, "text/plain", "delayed", 7, NULL), 0);
    uv_close((uv_handle_t *)t, delayed_closed);
}

static void start_delayed(fixture *f, sand_http_req_t *req, uint64_t ms, bool stream)
{
    delayed *d = calloc(1, sizeof(*d));
    assert_non_null(d);
    d->req = req;
    d->f = f;
    d->stream = stream;
    d->ticks = stream ? 3 : 0;
    uv_timer_init(&f->loop, &d->timer);
    d->timer.data = d;
    sand_http_req_on_close(req, delayed_on_close, d);
    uv_timer_start(&d->timer, delayed_fire, ms, stream ? ms : 0);
}

static size_t body_limit(sand_http_req_t *req, void *ud)
{
    const char *path = sand_http_req_path(req);
    if (strcmp(path, "/small") == 0)
        return 10;
    if (strcmp(path, "/upload") == 0)
        return UPLOAD_MAX;
    return MAX_BODY;
}

static void handler(sand_http_req_t *req, void *ud)
{
    fixture *f = ud;
    const char *path = sand_http_req_path(req);
    char buf[256];
    atomic_fetch_add(&f->handled, 1);

    if (strncmp(path, "/echo", 5) == 0 || strcmp(path, "/small") == 0) {
        size_t blen;
        const char *body = sand_http_req_body(req, &blen);
        const char *ct = sand_http_req_header(req, "content-type");
        char out[2048];
        int n = snprintf(out, sizeof(out), "%s %s ct=%s body=%.*s", sand_http_req_method(req), path,
                         ct ? ct : "-", (int)blen, body);
        assert_int_equal(
            sand_http_respond(req, 200, "text/plain", out, (size_t)n, "X-Test: yes\r\n"), 0);
    } else if (strcmp(path, "/delay") == 0) {
        int64_t ms = 50;
        if (sand_http_query_get(req, "ms", buf, sizeof(buf)) >= 0)
            ms = strtoll(buf, NULL, 10);
        start_delayed(f, req, (uint64_t)ms, false);
    } else if (strcmp(path, "/stream") == 0) {
        assert_int_equal(sand_http_stream_begin(req, 200, "text/plain", "X-Stream: 1\r\n"), 0);
        assert_int_equal(sand_http_stream_begin(req, 200, "text/plain", NULL), SAND_EINVAL);
        start_delayed(f, req, 10, true);
    } else if (strcmp(path, "/query") == 0) {
        int n = sand_http_query_get(req, "name", buf, sizeof(buf));
        if (n == SAND_ENOTFOUND)
            sand_http_respond_error(req, 404, "not_found", "no \"name\" parameter");
        else if (n < 0)
            sand_http_respond_error(req, 400, "bad_query", sand_err_name(n));
        else
            sand_http_respond(req, 200, "text/plain", buf, (size_t)n, NULL);
    } else if (strcmp(path, "/error") == 0) {
        assert_int_equal(sand_http_respond_error(req, 404, "not_found", "no \"app\"\n here"), 0);
    } else if (strcmp(path, "/upload") == 0) {
        size_t len;
        char *body = sand_http_req_body_steal(req, &len);
        uint64_t sum = 0;
        for (size_t i = 0; i < len; i++)
            sum = sum * 31 + (unsigned char)body[i];
        free(body);
        int n = snprintf(buf, sizeof(buf), "%zu %llu", len, (unsigned long long)sum);
        assert_int_equal(sand_http_respond(req, 201, "text/plain", buf, (size_t)n, NULL), 0);
    } else if (strcmp(path, "/big") == 0) {
        char *big = malloc(BIG_LEN);
        assert_non_null(big);
        for (size_t i = 0; i < BIG_LEN; i++)
            big[i] = (char)('a' + i % 26);
        assert_int_equal(
            sand_http_respond_take(req, 200, "application/octet-stream", big, BIG_LEN, NULL), 0);
    } else if (strcmp(path, "/nocontent") == 0) {
        assert_int_equal(sand_http_respond(req, 204, NULL, NULL, 0, NULL), 0);
    } else if (strcmp(path, "/hang") == 0) {
        /* Kept unanswered with no on_close: the test answers it after the server is gone. */
        f->kept = req;
    } else if (strcmp(path, "/hang-notify") == 0) {
        start_delayed(f, req, 60000, false);
    } else {
        sand_http_respond_error(req, 404, "not_found", "no such path");
    }
}

static void on_done(uv_async_t *a)
{
    uv_stop(a->loop);
}

static int setup_opts(void **state, const sand_http_opts_t *extra)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    sand_http_opts_t opts = {0};
    if (extra)
        opts = *extra;
    opts.handler = handler;
    opts.body_limit = body_limit;
    opts.ud = f;
    opts.max_body = MAX_BODY;
    sand_err err = {0};
    int rc = sand_http_server_open(&f->loop, "127.0.0.1:0", &opts, &f->srv, &err);
    assert_int_equal(rc, 0);
    f->port = sand_http_server_port(f->srv);
    assert_true(f->port > 0);
    uv_async_init(&f->loop, &f->done, on_done);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_opts(state, NULL);
}

static int setup_small(void **state)
{
    sand_http_opts_t o = {.max_conns = 2, .idle_ms = 150};
    return setup_opts(state, &o);
}

static void on_server_closed(sand_http_server_t *srv, void *ud)
{
    fixture *f = ud;
    f->server_closed = true;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sand_http_server_close(f->srv, on_server_closed, f);
    uv_close((uv_handle_t *)&f->done, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_true(f->server_closed);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void *client_main(void *arg)
{
    fixture *f = arg;
    f->client(f);
    atomic_store(&f->client_ok, 1);
    uv_async_send(&f->done);
    return NULL;
}

/* Runs the loop while fn runs in a client thread; returns when the client is done. A failed
 * assertion in the client aborts the process, which fails the test as well. */
static void run_client(fixture *f, void (*fn)(fixture *f))
{
    f->client = fn;
    atomic_store(&f->client_ok, 0);
    assert_int_equal(pthread_create(&f->thread, NULL, client_main, f), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pthread_join(f->thread, NULL);
    assert_int_equal(atomic_load(&f->client_ok), 1);
}

/* ---- client side (client thread) --------------------------------------------------------- */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: client check failed: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct cconn {
    int fd;
    size_t len;
    size_t cap;
    char *buf;
} cconn;

typedef struct resp {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
} resp;

static cconn *cc_open_cap(int port, size_t cap)
{
    cconn *c = malloc(sizeof(*c));
    CHECK(c);
    c->len = 0;
    c->cap = cap;
    c->buf = malloc(cap);
    CHECK(c->buf);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c->fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    return c;
}

static cconn *cc_open(int port)
{
    return cc_open_cap(port, 65536);
}

static void cc_close(cconn *c)
{
    close(c->fd);
    free(c->buf);
    free(c);
}

static void cc_send(cconn *c, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void cc_sends(cconn *c, const char *s)
{
    cc_send(c, s, strlen(s));
}

/* Reads more bytes; returns the count, 0 on EOF, < 0 on error or timeout. */
static ssize_t cc_fill(cconn *c)
{
    CHECK(c->len < c->cap);
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

static void cc_consume(cconn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static bool cc_need(cconn *c, size_t n)
{
    while (c->len < n)
        if (cc_fill(c) <= 0)
            return false;
    return true;
}

/* Value of header name in r->head (copied to out), or NULL. */
static const char *rhdr(const resp *r, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line && line[2] != '\r' && line[2] != '\0') {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(end - v);
            if (vl >= size)
                vl = size - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        line = end;
    }
    return NULL;
}

/* Reads one response. Returns false if the connection ended before a full response. */
static bool cc_response(cconn *c, resp *r, bool head_request)
{
    char *end;
    memset(r, 0, sizeof(*r));
    for (;;) {
        end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end)
            break;
        if (cc_fill(c) <= 0)
            return false;
    }
    size_t hl = (size_t)(end - c->buf) + 4;
    CHECK(hl < sizeof(r->head));
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    cc_consume(c, hl);
    CHECK(sscanf(r->head, "HTTP/1.1 %d", &r->status) == 1);
    char v[64];
    r->body = malloc(c->cap + 1);
    CHECK(r->body);
    if (head_request || r->status == 204 || r->status == 304 || r->status < 200)
        return true;
    if (rhdr(r, "Transfer-Encoding", v, sizeof(v))) {
        CHECK(strcmp(v, "chunked") == 0);
        for (;;) {
            char *eol;
            while (!(eol = c->len ? memmem(c->buf, c->len, "\r\n", 2) : NULL))
                if (cc_fill(c) <= 0)
                    return false;
            size_t size = strtoul(c->buf, NULL, 16);
            cc_consume(c, (size_t)(eol - c->buf) + 2);
            if (!cc_need(c, size + 2))
                return false;
            memcpy(r->body + r->body_len, c->buf, size);
            r->body_len += size;
            CHECK(memcmp(c->buf + size, "\r\n", 2) == 0);
            cc_consume(c, size + 2);
            if (size == 0)
                return true;
        }
    }
    if (rhdr(r, "Content-Length", v, sizeof(v))) {
        size_t n = strtoul(v, NULL, 10);
        if (!cc_need(c, n))
            return false;
        memcpy(r->body, c->buf, n);
        r->body_len = n;
        cc_consume(c, n);
        return true;
    }
    while (cc_fill(c) > 0) {
    }
    memcpy(r->body, c->buf, c->len);
    r->body_len = c->len;
    c->len = 0;
    return true;
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

static bool body_is(const resp *r, const char *s)
{
    return r->body_len == strlen(s) && memcmp(r->body, s, r->body_len) == 0;
}

/* True when the server closes the connection (EOF or reset) within the receive timeout. */
static bool cc_closed(cconn *c)
{
    char tmp[4096];
    for (;;) {
        ssize_t n = recv(c->fd, tmp, sizeof(tmp), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            return false;
    }
}

/* One request on a fresh connection; the response must close the connection. */
static void expect_error(fixture *f, const char *request, int status, const char *code)
{
    cconn *c = cc_open(f->port);
    cc_sends(c, request);
    resp r;
    CHECK(cc_response(c, &r, false));
    if (r.status != status)
        fprintf(stderr, "expected %d, got %s\n", status, r.head);
    CHECK(r.status == status);
    char v[256];
    CHECK(rhdr(&r, "Connection", v, sizeof(v)) && strcmp(v, "close") == 0);
    CHECK(rhdr(&r, "Content-Type", v, sizeof(v)) && strcmp(v, "application/json") == 0);
    char want[128];
    snprintf(want, sizeof(want), "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    r.body[r.body_len] = '\0';
    CHECK(strncmp(r.body, want, strlen(want)) == 0);
    CHECK(cc_closed(c));
    resp_free(&r);
    cc_close(c);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void client_keepalive(fixture *f)
{
    cconn *c = cc_open(f->port);
    for (int i = 0; i < 3; i++) {
        char req[256], want[256], v[64];
        snprintf(req, sizeof(req),
                 "POST /echo/%d HTTP/1.1\r\nHost: x\r\nContent-Type: text/x\r\n"
                 "Content-Length: 5\r\n\r\nhello",
                 i);
        cc_sends(c, req);
        resp r;
        CHECK(cc_response(c, &r, false));
        CHECK(r.status == 200);
        snprintf(want, sizeof(want), "POST /echo/%d ct=text/x body=hello", i);
        CHECK(body_is(&r, want));
        CHECK(rhdr(&r, "X-Test", v, sizeof(v)) && strcmp(v, "yes") == 0);
        CHECK(rhdr(&r, "Connection", v, sizeof(v)) == NULL);
        resp_free(&r);
    }
    cc_close(c);
}

static void test_keepalive(void **state)
{
    fixture *f = *state;
    run_client(f, client_keepalive);
    assert_int_equal(atomic_load(&f->handled), 3);
}

static void client_pipelining(fixture *f)
{
    cconn *c = cc_open(f->port);
    /* The first request is answered later from a timer: the second must wait its turn. */
    cc_sends(c, "GET /delay?ms=60 HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /echo/2 HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /echo/3 HTTP/1.1\r\nHost: x\r\n\r\n");
    resp r;
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && body_is(&r, "delayed"));
    resp_free(&r);
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && body_is(&r, "GET /echo/2 ct=- body="));
    resp_free(&r);
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && body_is(&r, "GET /echo/3 ct=- body="));
    resp_free(&r);
    cc_close(c);
}

static void test_pipelining(void **state)
{
    fixture *f = *state;
    run_client(f, client_pipelining);
    assert_int_equal(atomic_load(&f->handled), 3);
}

static void client_too_large(fixture *f)
{
    /* Content-Length over the limit: refused right after the headers, the body never sent. */
    expect_error(f, "POST /echo HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", 413,
                 "payload_too_large");
    /* The per-request limit from body_limit. */
    expect_error(f, "POST /small HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world", 413,
                 "payload_too_large");
    /* Chunked: refused when the sum crosses the limit. */
    char req[2048];
    char chunk[700];
    memset(chunk, 'x', 600);
    chunk[600] = '\0';
    snprintf(req, sizeof(req),
             "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n%s\r\n258\r\n%s\r\n"
             "0\r\n\r\n",
             chunk, chunk);
    expect_error(f, req, 413, "payload_too_large");
    /* Expect: 100-continue over the limit gets 413 instead of 100. */
    expect_error(f, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
                 413, "payload_too_large");
}

static void test_too_large(void **state)
{
    fixture *f = *state;
    run_client(f, client_too_large);
    assert_int_equal(atomic_load(&f->handled), 0);
}

static void client_expect_continue(fixture *f)
{
    cconn *c = cc_open(f->port);
    cc_sends(c, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    resp r;
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 100);
    resp_free(&r);
    cc_sends(c, "abc");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && body_is(&r, "POST /echo ct=- body=abc"));
    resp_free(&r);
    cc_close(c);
}

static void test_expect_continue(void **state)
{
    fixture *f = *state;
    run_client(f, client_expect_continue);
}

static void client_bad_framing(fixture *f)
{
    expect_error(f, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                 400, "bad_request");
    expect_error(f, "POST /echo HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello", 400, "bad_request");
    expect_error(f,
                 "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
                 400, "bad_request");
    expect_error(f,
                 "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n",
                 400, "bad_request");
    expect_error(f, "GET /echo HTTP/1.1\r\nThis is not a header\r\n\r\n", 400, "bad_request");
    /* A header block over max_header (16 KiB by default). */
    char *big = malloc(20000 + 100);
    CHECK(big);
    int n = snprintf(big, 100, "GET /echo HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'a', 20000);
    memcpy(big + n + 20000, "\r\n\r\n", 5);
    expect_error(f, big, 400, "bad_request");
    free(big);
    expect_error(f, "FOO /echo HTTP/1.1\r\n\r\n", 405, "method_not_allowed");
}

static void test_bad_framing(void **state)
{
    fixture *f = *state;
    run_client(f, client_bad_framing);
    assert_int_equal(atomic_load(&f->handled), 0);
}

static void client_delayed(fixture *f)
{
    cconn *c = cc_open(f->port);
    cc_sends(c, "GET /delay?ms=30 HTTP/1.1\r\n\r\n");
    resp r;
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && body_is(&r, "delayed"));
    resp_free(&r);
    cc_close(c);
    CHECK(atomic_load(&f->on_close_count) == 0);
}

static void test_delayed(void **state)
{
    fixture *f = *state;
    run_client(f, client_delayed);
    assert_int_equal(atomic_load(&f->on_close_count), 0);
}

static void client_disconnect(fixture *f)
{
    cconn *c = cc_open(f->port);
    cc_sends(c, "GET /delay?ms=5000 HTTP/1.1\r\n\r\n");
    while (atomic_load(&f->handled) == 0)
        usleep(1000);
    cc_close(c);
    for (int i = 0; i < 2000 && atomic_load(&f->on_close_count) == 0; i++)
        usleep(1000);
    CHECK(atomic_load(&f->on_close_count) == 1);
}

static void test_disconnect_on_close(void **state)
{
    fixture *f = *state;
    run_client(f, client_disconnect);
    assert_int_equal(atomic_load(&f->on_close_count), 1);
}

static void client_stream(fixture *f)
{
    cconn *c = cc_open(f->port);
    resp r;
    char v[64];
    for (int i = 0; i < 2; i++) { /* twice: the connection stays usable after a stream */
        cc_sends(c, "GET /stream HTTP/1.1\r\n\r\n");
        CHECK(cc_response(c, &r, false));
        CHECK(r.status == 200);
        CHECK(rhdr(&r, "Transfer-Encoding", v, sizeof(v)) && strcmp(v, "chunked") == 0);
        CHECK(rhdr(&r, "X-Stream", v, sizeof(v)) && strcmp(v, "1") == 0);
        CHECK(rhdr(&r, "Content-Length", v, sizeof(v)) == NULL);
        CHECK(body_is(&r, "tick3;tick2;tick1;"));
        resp_free(&r);
    }
    cc_close(c);
    /* An HTTP/1.0 peer gets the raw bytes, delimited by the end of the connection. */
    c = cc_open(f->port);
    cc_sends(c, "GET /stream HTTP/1.0\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200);
    CHECK(rhdr(&r, "Transfer-Encoding", v, sizeof(v)) == NULL);
    CHECK(body_is(&r, "tick3;tick2;tick1;"));
    resp_free(&r);
    cc_close(c);
}

static void test_stream(void **state)
{
    fixture *f = *state;
    run_client(f, client_stream);
    assert_int_equal(atomic_load(&f->on_close_count), 0);
}

#define NCONC 100

static void client_concurrent(fixture *f)
{
    cconn **cs = calloc(NCONC, sizeof(*cs));
    CHECK(cs);
    for (int i = 0; i < NCONC; i++) {
        char req[128];
        cs[i] = cc_open(f->port);
        snprintf(req, sizeof(req), "GET /echo/%d HTTP/1.1\r\n\r\n", i);
        cc_sends(cs[i], req);
    }
    for (int i = 0; i < NCONC; i++) {
        char want[128];
        resp r;
        CHECK(cc_response(cs[i], &r, false));
        snprintf(want, sizeof(want), "GET /echo/%d ct=- body=", i);
        CHECK(r.status == 200 && body_is(&r, want));
        resp_free(&r);
    }
    for (int i = 0; i < NCONC; i++)
        cc_close(cs[i]);
    free(cs);
}

static void test_concurrent(void **state)
{
    fixture *f = *state;
    run_client(f, client_concurrent);
    assert_int_equal(atomic_load(&f->handled), NCONC);
}

static void client_query(fixture *f)
{
    static const struct {
        const char *target;
        int status;
        const char *body;
    } cases[] = {
        {"/query?name=a%20b+c", 200, "a b c"}, {"/query?x=1&name=%E2%82%AC&y", 200, "\xE2\x82\xAC"},
        {"/query?na%6De=v", 200, "v"},         {"/query?name", 200, ""},
        {"/query?names=1", 404, NULL},         {"/query", 404, NULL},
        {"/query?name=%zz", 400, NULL},        {"/query?name=%4", 400, NULL},
        {"/query?name=ok#frag", 200, "ok"},
    };
    cconn *c = cc_open(f->port);
    for (size_t i = 0; i < SAND_ARRAY_LEN(cases); i++) {
        char req[256];
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\n\r\n", cases[i].target);
        cc_sends(c, req);
        resp r;
        CHECK(cc_response(c, &r, false));
        if (r.status != cases[i].status)
            fprintf(stderr, "%s: got %d\n", cases[i].target, r.status);
        CHECK(r.status == cases[i].status);
        if (cases[i].body)
            CHECK(body_is(&r, cases[i].body));
        resp_free(&r);
    }
    cc_close(c);
}

static void test_query(void **state)
{
    fixture *f = *state;
    run_client(f, client_query);
}

static void test_pct_decode(void **state)
{
    static const struct {
        const char *in;
        bool plus;
        int rc;
        const char *out;
    } cases[] = {
        {"abc", false, 3, "abc"},
        {"a%2Fb", false, 3, "a/b"},
        {"a+b", false, 3, "a+b"},
        {"a+b", true, 3, "a b"},
        {"%41%42", false, 2, "AB"},
        {"%", false, SAND_EINVAL, NULL},
        {"%4", false, SAND_EINVAL, NULL},
        {"%g1", false, SAND_EINVAL, NULL},
        {"", false, 0, ""},
    };
    char buf[16];
    for (size_t i = 0; i < SAND_ARRAY_LEN(cases); i++) {
        int rc =
            sand_http_pct_decode(cases[i].in, strlen(cases[i].in), cases[i].plus, buf, sizeof(buf));
        assert_int_equal(rc, cases[i].rc);
        if (cases[i].out)
            assert_string_equal(buf, cases[i].out);
    }
    assert_int_equal(sand_http_pct_decode("abcdef", 6, false, buf, 4), SAND_ETOOBIG);
    assert_string_equal(buf, "abc");
    assert_string_equal(sand_http_status_text(404), "Not Found");
    assert_string_equal(sand_http_status_text(799), "Unknown");
}

static void client_errors_and_misc(fixture *f)
{
    cconn *c = cc_open(f->port);
    resp r;
    char v[64];
    /* The JSON error helper escapes its message and keeps the connection. */
    cc_sends(c, "GET /error HTTP/1.1\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 404);
    CHECK(
        body_is(&r, "{\"error\":{\"code\":\"not_found\",\"message\":\"no \\\"app\\\"\\n here\"}}"));
    CHECK(rhdr(&r, "Content-Type", v, sizeof(v)) && strcmp(v, "application/json") == 0);
    resp_free(&r);
    /* HEAD: the length of the body that GET would get, and no body. */
    cc_sends(c, "HEAD /echo HTTP/1.1\r\n\r\n");
    CHECK(cc_response(c, &r, true));
    CHECK(r.status == 200);
    CHECK(rhdr(&r, "Content-Length", v, sizeof(v)) && strcmp(v, "21") == 0);
    resp_free(&r);
    /* 204 carries no Content-Length. */
    cc_sends(c, "DELETE /nocontent HTTP/1.1\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 204 && rhdr(&r, "Content-Length", v, sizeof(v)) == NULL);
    resp_free(&r);
    /* Absolute-form target. */
    cc_sends(c, "GET http://localhost/echo/abs?q=1 HTTP/1.1\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && body_is(&r, "GET /echo/abs ct=- body="));
    resp_free(&r);
    /* Connection: close is honoured. */
    cc_sends(c, "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && rhdr(&r, "Connection", v, sizeof(v)) && strcmp(v, "close") == 0);
    resp_free(&r);
    CHECK(cc_closed(c));
    cc_close(c);

    /* HTTP/1.0: closes by default, keeps alive when asked. */
    c = cc_open(f->port);
    cc_sends(c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && rhdr(&r, "Connection", v, sizeof(v)) &&
          strcasecmp(v, "keep-alive") == 0);
    resp_free(&r);
    cc_sends(c, "GET /echo HTTP/1.0\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && rhdr(&r, "Connection", v, sizeof(v)) && strcmp(v, "close") == 0);
    resp_free(&r);
    CHECK(cc_closed(c));
    cc_close(c);
}

static void test_errors_and_misc(void **state)
{
    fixture *f = *state;
    run_client(f, client_errors_and_misc);
}

static void client_large_bodies(fixture *f)
{
    /* A 3 MiB upload under a 4 MiB per-request limit, with a 3 MiB answer on the same
     * connection: both sides go through partial writes and the output queue. */
    cconn *c = cc_open_cap(f->port, BIG_LEN + 65536);
    size_t n = 3 * 1024 * 1024 + 17;
    char *body = malloc(n);
    CHECK(body);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        body[i] = (char)(i * 7 % 251);
        sum = sum * 31 + (unsigned char)body[i];
    }
    char head[128], want[64];
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", n);
    cc_sends(c, head);
    cc_send(c, body, n);
    free(body);
    resp r;
    CHECK(cc_response(c, &r, false));
    snprintf(want, sizeof(want), "%zu %llu", n, (unsigned long long)sum);
    CHECK(r.status == 201 && body_is(&r, want));
    resp_free(&r);
    cc_sends(c, "GET /big HTTP/1.1\r\n\r\n");
    CHECK(cc_response(c, &r, false));
    CHECK(r.status == 200 && r.body_len == BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i++)
        CHECK(r.body[i] == (char)('a' + i % 26));
    resp_free(&r);
    cc_close(c);
}

static void test_large_bodies(void **state)
{
    fixture *f = *state;
    run_client(f, client_large_bodies);
}

static void client_limits(fixture *f)
{
    /* max_conns = 2: a third connection is accepted and closed at once. */
    cconn *a = cc_open(f->port);
    cconn *b = cc_open(f->port);
    resp r;
    cc_sends(a, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK(cc_response(a, &r, false) && r.status == 200);
    resp_free(&r);
    cc_sends(b, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK(cc_response(b, &r, false) && r.status == 200);
    resp_free(&r);
    cconn *c = cc_open(f->port);
    CHECK(cc_closed(c));
    cc_close(c);
    /* idle_ms = 150: both idle connections are closed by the server. */
    CHECK(cc_closed(a));
    CHECK(cc_closed(b));
    cc_close(a);
    cc_close(b);
}

static void test_limits(void **state)
{
    fixture *f = *state;
    run_client(f, client_limits);
    assert_int_equal(sand_http_server_conn_count(f->srv), 0);
}

static void client_hang(fixture *f)
{
    cconn *a = cc_open(f->port);
    cconn *b = cc_open(f->port);
    cc_sends(a, "GET /hang HTTP/1.1\r\n\r\n");
    cc_sends(b, "GET /hang-notify HTTP/1.1\r\n\r\n");
    while (atomic_load(&f->handled) < 2)
        usleep(1000);
    /* The sockets stay open until the server has closed: the test closes them. */
    f->hung[0] = a;
    f->hung[1] = b;
}

static void test_close_with_pending(void **state)
{
    fixture *f = *state;
    run_client(f, client_hang);
    /* The clients have gone; close the server with both requests still unanswered. The one
     * with on_close is told; the other stays allocated until it is answered. */
    sand_http_server_close(f->srv, on_server_closed, f);
    uv_close((uv_handle_t *)&f->done, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_true(f->server_closed);
    assert_int_equal(atomic_load(&f->on_close_count), 1);
    assert_non_null(f->kept);
    assert_string_equal(sand_http_req_path(f->kept), "/hang");
    assert_int_equal(sand_http_respond(f->kept, 200, NULL, "late", 4, NULL), SAND_ECANCELED);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    cc_close(f->hung[0]);
    cc_close(f->hung[1]);
    free(f);
}

static void test_open_errors(void **state)
{
    uv_loop_t loop;
    sand_http_server_t *srv = NULL, *srv2 = NULL;
    sand_err err = {0};
    sand_http_opts_t opts = {.handler = handler};
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(sand_http_server_open(&loop, "127.0.0.1", &opts, &srv, &err), SAND_EINVAL);
    assert_int_equal(sand_http_server_open(&loop, "[::1:80", &opts, &srv, &err), SAND_EINVAL);
    assert_int_equal(sand_http_server_open(&loop, "127.0.0.1:99999", &opts, &srv, &err),
                     SAND_EINVAL);
    assert_int_equal(sand_http_server_open(&loop, "nohost:80", &opts, &srv, &err), SAND_EINVAL);
    sand_http_opts_t none = {0};
    assert_int_equal(sand_http_server_open(&loop, "127.0.0.1:0", &none, &srv, &err), SAND_EINVAL);
    /* A port in use fails with EIO and leaves nothing on the loop once it has run. */
    assert_int_equal(sand_http_server_open(&loop, "127.0.0.1:0", &opts, &srv, &err), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", sand_http_server_port(srv));
    assert_int_equal(sand_http_server_open(&loop, addr, &opts, &srv2, &err), SAND_EIO);
    assert_non_null(strstr(err.msg, addr));
    /* IPv6 loopback, when the host has it. */
    if (sand_http_server_open(&loop, "[::1]:0", &opts, &srv2, &err) == 0) {
        assert_true(sand_http_server_port(srv2) > 0);
        sand_http_server_close(srv2, NULL, NULL);
    }
    sand_http_server_close(srv, NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_on_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_and_misc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup_small, teardown),
        cmocka_unit_test_setup(test_close_with_pending, setup),
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_open_errors),
    };
    sand_log_set_level(SAND_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
