/*
 * The HTTP/1.1 transport: a libuv TCP listener, one connection object per accepted socket
 * holding its http_parser, a fixed input buffer and a reusable request, and the response writer.
 * Requests on a connection are handled strictly one at a time: the parser is paused when a
 * message is complete and resumed when its response has been queued, so pipelined input simply
 * waits in the input buffer. Responses are written with uv_try_write() of head and body in one
 * call; only what the socket does not take at once is copied into a write request, so the usual
 * small response costs no allocation and no copy. Connections close through shutdown and a short
 * lingering read, so an error answer sent before the body was read reaches the client instead of
 * being lost to a reset. docs/internals/http.md explains the lifecycle.
 */
#include "sand/http.h"

#include "frontend_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How long a closing connection keeps reading (and discarding) after its last response. */
#define LINGER_MS 2000
/* Largest response head (status line and headers) the owner may ask for. */
#define MAX_HEAD (1024 * 1024)
/* A recycled request keeps a body buffer up to this size; larger ones are released. */
#define KEEP_BODY_CAP (64 * 1024)

typedef struct wreq {
    uv_write_t w;
    sand_http_conn_t *conn;
    size_t len;  /* bytes queued by this request */
    char *owned; /* a body the library took ownership of */
    char data[]; /* copied bytes */
} wreq;

typedef enum framing {
    FRAME_LENGTH,  /* Content-Length */
    FRAME_CHUNKED, /* Transfer-Encoding: chunked */
    FRAME_NONE,    /* neither: 1xx/204/304, or an HTTP/1.0 stream ended by closing */
} framing;

static void conn_close(sand_http_conn_t *c);
static void conn_process(sand_http_conn_t *c);
static void conn_update_reading(sand_http_conn_t *c);
static void on_timer(uv_timer_t *t);

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t now_ms(sand_http_conn_t *c)
{
    return uv_now(c->srv->loop);
}

static int append_u64(sand_bytes_t *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return sand_bytes_append(b, tmp + i, sizeof(tmp) - i);
}

const char *sand_http_status_text(int status)
{
    const char *s = http_status_str((enum http_status)status);
    return (!s || s[0] == '<') ? "Unknown" : s;
}

static bool status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* Builds the response head into c->head. conn_hdr is the Connection header value or NULL. */
static int build_head(sand_http_conn_t *c, int status, const char *ct, framing fr, size_t len,
                      const char *conn_hdr, const char *extra)
{
    sand_bytes_t *h = &c->head;
    int rc = 0;
    sand_bytes_reset(h);
    rc |= sand_bytes_append(h, "HTTP/1.1 ", 9);
    rc |= append_u64(h, (uint64_t)status);
    rc |= sand_bytes_append(h, " ", 1);
    rc |= sand_bytes_appends(h, sand_http_status_text(status));
    rc |= sand_bytes_append(h, "\r\n", 2);
    if (ct) {
        rc |= sand_bytes_append(h, "Content-Type: ", 14);
        rc |= sand_bytes_appends(h, ct);
        rc |= sand_bytes_append(h, "\r\n", 2);
    }
    if (fr == FRAME_LENGTH) {
        rc |= sand_bytes_append(h, "Content-Length: ", 16);
        rc |= append_u64(h, len);
        rc |= sand_bytes_append(h, "\r\n", 2);
    } else if (fr == FRAME_CHUNKED) {
        rc |= sand_bytes_appends(h, "Transfer-Encoding: chunked\r\n");
    }
    if (conn_hdr) {
        rc |= sand_bytes_append(h, "Connection: ", 12);
        rc |= sand_bytes_appends(h, conn_hdr);
        rc |= sand_bytes_append(h, "\r\n", 2);
    }
    if (extra)
        rc |= sand_bytes_appends(h, extra);
    rc |= sand_bytes_append(h, "\r\n", 2);
    return rc < 0 ? SAND_ETOOBIG : 0;
}

/* ---- writing ----------------------------------------------------------------------------- */

static void on_write(uv_write_t *w, int status)
{
    wreq *wr = SAND_CONTAINER_OF(w, wreq, w);
    sand_http_conn_t *c = wr->conn;
    c->out_queued -= wr->len;
    c->pending_writes--;
    free(wr->owned);
    free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->last_active = now_ms(c);
    /* Pipelined requests wait while too much output is queued; go on once it has drained. */
    if (!c->req && c->in_off < c->in_len)
        conn_process(c);
    conn_update_reading(c);
}

/* Writes bufs in order. owned, when not NULL, is the base of the last buffer and is freed once
 * written (also on failure). Returns 0 or SAND_ECANCELED when the socket is unusable; the caller
 * then closes the connection. */
static int conn_write(sand_http_conn_t *c, const uv_buf_t *bufs, unsigned n, char *owned)
{
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (c->closing) {
        free(owned);
        return SAND_ECANCELED;
    }
    if (c->pending_writes == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r < 0 && r != UV_EAGAIN) {
            free(owned);
            return SAND_ECANCELED;
        }
        if (r > 0)
            done = (size_t)r;
    }
    c->last_active = now_ms(c);
    if (done == total) {
        free(owned);
        return 0;
    }
    /* Copy what the socket did not take, except the owned body, which is referenced. */
    size_t skip = done, copy = 0;
    unsigned ncopy = owned ? n - 1 : n;
    for (unsigned i = 0; i < ncopy; i++) {
        size_t l = bufs[i].len;
        size_t s = skip < l ? skip : l;
        skip -= s;
        copy += l - s;
    }
    wreq *wr = malloc(sizeof(*wr) + copy);
    if (!wr) {
        free(owned);
        return SAND_ECANCELED;
    }
    skip = done;
    size_t o = 0;
    for (unsigned i = 0; i < ncopy; i++) {
        size_t l = bufs[i].len;
        size_t s = skip < l ? skip : l;
        skip -= s;
        memcpy(wr->data + o, bufs[i].base + s, l - s);
        o += l - s;
    }
    uv_buf_t out[2];
    unsigned nout = 0;
    if (copy)
        out[nout++] = uv_buf_init(wr->data, (unsigned)copy);
    if (owned)
        out[nout++] = uv_buf_init(bufs[n - 1].base + skip, (unsigned)(bufs[n - 1].len - skip));
    wr->conn = c;
    wr->len = total - done;
    wr->owned = owned;
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, out, nout, on_write) < 0) {
        free(owned);
        free(wr);
        return SAND_ECANCELED;
    }
    c->pending_writes++;
    c->out_queued += wr->len;
    return 0;
}

/* ---- connection lifecycle ---------------------------------------------------------------- */

static void srv_handle_closed(sand_http_server_t *srv)
{
    if (--srv->handles > 0 || !srv->closing)
        return;
    if (srv->close_cb)
        srv->close_cb(srv, srv->close_ud);
    free(srv);
}

static void on_srv_handle_closed(uv_handle_t *h)
{
    srv_handle_closed(h->data);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    sand_http_conn_t *c = h->data;
    sand_http_server_t *srv = c->srv;
    if (h == (uv_handle_t *)&c->tcp) {
        /* The owner learns about the lost connection here, from the loop, never from inside a
         * call it made itself. */
        sand_http_req_t *req = c->req;
        c->req = NULL;
        if (req) {
            req->conn = NULL;
            if (req->state == REQ_PARSING) {
                sand__http_req_free(req);
            } else if (req->on_close) {
                req->in_on_close = true;
                req->on_close(req, req->on_close_ud);
                sand__http_req_free(req);
            }
        }
    }
    if (--c->handles == 0) {
        sand__http_req_free(c->spare);
        sand_bytes_release(&c->head);
        free(c);
    }
    srv_handle_closed(srv);
}

static void conn_close(sand_http_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->reading = false;
    sand_list_remove(&c->resume);
    sand_list_remove(&c->link);
    c->srv->nconns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    sand_http_conn_t *c = s->handle->data;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    c->draining = true;
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
    conn_update_reading(c);
}

/* The last response is queued: flush it, shut the write side down, then linger. */
static void conn_finish(sand_http_conn_t *c)
{
    if (c->closing || c->finishing)
        return;
    c->finishing = true;
    conn_update_reading(c);
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

static void on_timer(uv_timer_t *t)
{
    sand_http_conn_t *c = t->data;
    if (c->draining) {
        conn_close(c);
        return;
    }
    uint64_t now = now_ms(c), idle = c->srv->opts.idle_ms;
    /* Waiting for the owner's answer is not idleness; waiting for a peer that reads nothing is. */
    if (c->req && c->req->state != REQ_PARSING && c->out_queued == 0)
        c->last_active = now;
    if (now - c->last_active >= idle) {
        conn_close(c);
        return;
    }
    uv_timer_start(t, on_timer, idle - (now - c->last_active), 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sand_http_conn_t *c = h->data;
    if (c->draining) {
        *buf = uv_buf_init(c->in, sizeof(c->in));
        return;
    }
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof(c->in) - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sand_http_conn_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF or error: the peer is gone (a half-close counts as gone, see http.md). */
        conn_close(c);
        return;
    }
    c->last_active = now_ms(c);
    if (c->draining)
        return;
    c->in_len += (size_t)nread;
    conn_process(c);
    conn_update_reading(c);
}

static void conn_update_reading(sand_http_conn_t *c)
{
    if (c->closing)
        return;
    bool want = c->draining || (!c->finishing && c->in_len - c->in_off < sizeof(c->in) &&
                                c->out_queued <= c->srv->opts.max_output);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    sand_http_server_t *srv = server->data;
    if (status < 0) {
        SAND_WARN("http", "accept: %s", uv_strerror(status));
        return;
    }
    sand_http_conn_t *c = malloc(sizeof(*c));
    if (!c) {
        SAND_ERROR("http", "accept: out of memory");
        return;
    }
    memset(c, 0, offsetof(sand_http_conn_t, in));
    c->srv = srv;
    sand_bytes_init(&c->head, MAX_HEAD);
    sand_list_init(&c->resume);
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    srv->handles += 2;
    sand_list_insert_tail(&srv->conns, &c->link);
    srv->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || srv->nconns > srv->opts.max_conns) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->last_active = now_ms(c);
    uv_timer_start(&c->timer, on_timer, srv->opts.idle_ms, 0);
    conn_update_reading(c);
}

/* ---- requests and parsing ---------------------------------------------------------------- */

static void req_recycle(sand_http_conn_t *c, sand_http_req_t *req)
{
    if (c->spare) {
        sand__http_req_free(req);
        return;
    }
    if (req->body.cap > KEEP_BODY_CAP)
        sand_bytes_release(&req->body);
    req->state = REQ_PARSING; /* a stray second answer is refused, not sent */
    c->spare = req;
}

static void on_resume_idle(uv_idle_t *h);

static void conn_schedule_resume(sand_http_conn_t *c)
{
    sand_http_server_t *srv = c->srv;
    if (!sand_list_empty(&c->resume) || srv->closing)
        return;
    if (sand_list_empty(&srv->resume))
        uv_idle_start(&srv->resume_idle, on_resume_idle);
    sand_list_insert_tail(&srv->resume, &c->resume);
}

/* The response of req has been queued (or failed with rc < 0): detach and recycle req, then
 * either go on with the next request or finish the connection. */
static void req_complete(sand_http_req_t *req, int rc)
{
    sand_http_conn_t *c = req->conn;
    bool keep = req->keep_alive && !c->srv->closing;
    c->req = NULL;
    req_recycle(c, req);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    if (!keep) {
        conn_finish(c);
        return;
    }
    if (!c->in_dispatch && c->in_off < c->in_len)
        conn_schedule_resume(c);
    conn_update_reading(c);
}

static int fail(sand_http_conn_t *c, int status, const char *code, const char *fmt, ...)
    SAND_PRINTF(4, 5);

static int fail(sand_http_conn_t *c, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail_msg, sizeof(c->fail_msg), fmt, ap);
    va_end(ap);
    c->fail_status = status;
    c->fail_code = code;
    return -1;
}

static int store_fail(sand_http_conn_t *c, int rc)
{
    if (rc == SAND_ENOMEM)
        return fail(c, 503, "unavailable", "out of memory");
    return fail(c, 400, "bad_request", "request header is too large (max %zu bytes, %zu lines)",
                c->srv->opts.max_header, c->srv->opts.max_headers);
}

static int on_message_begin(http_parser *p)
{
    sand_http_conn_t *c = p->data;
    sand_http_req_t *req = c->req;
    if (!req) {
        req = c->spare;
        c->spare = NULL;
        if (!req) {
            req = calloc(1, sizeof(*req));
            if (!req)
                return fail(c, 503, "unavailable", "out of memory");
            sand_bytes_init(&req->hdr, 0);
            sand_bytes_init(&req->body, 0);
        }
        c->req = req;
    }
    sand__http_req_reset(req, c);
    req->hdr.max = c->srv->opts.max_header;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    sand_http_conn_t *c = p->data;
    int rc = sand__http_req_add_url(c->req, at, n);
    return rc < 0 ? store_fail(c, rc) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    sand_http_conn_t *c = p->data;
    int rc = sand__http_req_add_field(c->req, at, n, c->srv->opts.max_headers);
    return rc < 0 ? store_fail(c, rc) : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    sand_http_conn_t *c = p->data;
    int rc = sand__http_req_add_value(c->req, at, n);
    return rc < 0 ? store_fail(c, rc) : 0;
}

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static int on_headers_complete(http_parser *p)
{
    sand_http_conn_t *c = p->data;
    sand_http_server_t *srv = c->srv;
    sand_http_req_t *req = c->req;
    int rc = sand__http_req_headers_done(req);
    if (rc < 0)
        return store_fail(c, rc);
    req->method = (enum http_method)p->method;
    req->head = req->method == HTTP_HEAD;
    req->http10 = p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0);
    req->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    size_t limit =
        srv->opts.body_limit ? srv->opts.body_limit(req, srv->opts.ud) : srv->opts.max_body;
    req->body.max = limit;
    bool has_length = (p->flags & F_CONTENTLENGTH) != 0;
    if (has_length && p->content_length > limit)
        return fail(c, 413, "payload_too_large", "request body is %llu bytes (max %zu)",
                    (unsigned long long)p->content_length, limit);
    const char *expect = sand_http_req_header(req, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && !req->http10) {
        uv_buf_t b = uv_buf_init((char *)continue_line, sizeof(continue_line) - 1);
        if (conn_write(c, &b, 1, NULL) < 0)
            return fail(c, 400, "bad_request", "connection lost");
    }
    if (has_length && p->content_length > 0 && req->body.cap < p->content_length + 1) {
        /* The length is known and within the limit: one allocation instead of doublings. */
        char *d = realloc(req->body.data, (size_t)p->content_length + 1);
        if (!d)
            return fail(c, 503, "unavailable", "out of memory");
        req->body.data = d;
        req->body.cap = (size_t)p->content_length + 1;
        d[req->body.len] = '\0';
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    sand_http_conn_t *c = p->data;
    sand_http_req_t *req = c->req;
    int rc = sand_bytes_append(&req->body, at, n);
    if (rc == SAND_ETOOBIG)
        return fail(c, 413, "payload_too_large", "request body is over %zu bytes", req->body.max);
    if (rc < 0)
        return fail(c, 503, "unavailable", "out of memory");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    sand_http_conn_t *c = p->data;
    c->req->keep_alive = c->req->keep_alive && http_should_keep_alive(p) && !p->upgrade;
    /* One request at a time: the rest of the input waits until this one is answered. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Answers a protocol error with a JSON body and Connection: close, then finishes the
 * connection. */
static void conn_fail(sand_http_conn_t *c, int status, const char *code, const char *msg)
{
    if (c->req && c->req->state == REQ_PARSING) {
        req_recycle(c, c->req);
        c->req = NULL;
    }
    sand_bytes_t body;
    sand_bytes_init(&body, 4096);
    int rc = sand_bytes_appends(&body, "{\"error\":{\"code\":");
    rc |= sand_bytes_append_json_str(&body, code, strlen(code));
    rc |= sand_bytes_appends(&body, ",\"message\":");
    rc |= sand_bytes_append_json_str(&body, msg, strlen(msg));
    rc |= sand_bytes_appends(&body, "}}");
    if (rc < 0 ||
        build_head(c, status, "application/json", FRAME_LENGTH, body.len, "close", NULL) < 0) {
        sand_bytes_release(&body);
        conn_close(c);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->head.data, (unsigned)c->head.len),
                        uv_buf_init(body.data, (unsigned)body.len)};
    size_t len;
    char *owned = sand_bytes_steal(&body, &len);
    if (conn_write(c, bufs, 2, owned) < 0) {
        conn_close(c);
        return;
    }
    conn_finish(c);
}

static void dispatch(sand_http_conn_t *c)
{
    sand_http_req_t *req = c->req;
    req->state = REQ_HANDLER;
    c->in_dispatch = true;
    c->srv->opts.handler(req, c->srv->opts.ud);
    c->in_dispatch = false;
}

/* Parses buffered input and dispatches complete requests, one at a time, until the input is
 * used up, a request is waiting for its answer, or the connection is finishing. */
static void conn_process(sand_http_conn_t *c)
{
    while (!c->closing && !c->finishing && c->in_off < c->in_len) {
        if (c->req && c->req->state != REQ_PARSING)
            return;
        if (c->out_queued > c->srv->opts.max_output)
            return;
        if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
            http_parser_pause(&c->parser, 0);
        size_t n = http_parser_execute(&c->parser, &parser_settings, c->in + c->in_off,
                                       c->in_len - c->in_off);
        c->in_off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->fail_status) {
            conn_fail(c, c->fail_status, c->fail_code, c->fail_msg);
            return;
        }
        if (e == HPE_PAUSED) {
            dispatch(c);
            continue;
        }
        if (e == HPE_INVALID_METHOD) {
            conn_fail(c, 405, "method_not_allowed", "unknown request method");
            return;
        }
        if (e == HPE_HEADER_OVERFLOW) {
            conn_fail(c, 400, "bad_request", "request header is too large");
            return;
        }
        if (e != HPE_OK) {
            char msg[160];
            snprintf(msg, sizeof(msg), "malformed request: %s", http_errno_description(e));
            conn_fail(c, 400, "bad_request", msg);
            return;
        }
    }
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
}

static void on_resume_idle(uv_idle_t *h)
{
    sand_http_server_t *srv = h->data;
    while (!sand_list_empty(&srv->resume)) {
        sand_http_conn_t *c = SAND_CONTAINER_OF(srv->resume.next, sand_http_conn_t, resume);
        sand_list_remove(&c->resume);
        conn_process(c);
        conn_update_reading(c);
    }
    uv_idle_stop(h);
}

/* ---- responses --------------------------------------------------------------------------- */

/* Checks that req may be answered now. Returns 1 when it may, or a code <= 0 to return, after
 * freeing req when the connection is gone (the owner is done with it). */
static int answer_check(sand_http_req_t *req, req_state want)
{
    if (req->state != want)
        return SAND_EINVAL;
    if (req->in_on_close)
        return SAND_ECANCELED;
    sand_http_conn_t *c = req->conn;
    if (!c) {
        sand__http_req_free(req);
        return SAND_ECANCELED;
    }
    if (c->closing) {
        c->req = NULL;
        sand__http_req_free(req);
        return SAND_ECANCELED;
    }
    return 1;
}

static const char *conn_header(const sand_http_req_t *req, bool keep)
{
    if (!keep)
        return "close";
    return req->http10 ? "keep-alive" : NULL;
}

static int respond(sand_http_req_t *req, int status, const char *ct, const char *body, size_t len,
                   char *owned, const char *extra)
{
    if (status < 100 || status > 999) {
        free(owned);
        return SAND_EINVAL;
    }
    int rc = answer_check(req, REQ_HANDLER);
    if (rc <= 0) {
        free(owned);
        return rc;
    }
    sand_http_conn_t *c = req->conn;
    req->keep_alive = req->keep_alive && !c->srv->closing;
    bool with_body = status_has_body(status);
    if ((rc = build_head(c, status, ct, with_body ? FRAME_LENGTH : FRAME_NONE, len,
                         conn_header(req, req->keep_alive), extra)) < 0) {
        free(owned);
        return SAND_EINVAL;
    }
    uv_buf_t bufs[2];
    unsigned n = 0;
    bufs[n++] = uv_buf_init(c->head.data, (unsigned)c->head.len);
    if (with_body && !req->head && len > 0) {
        bufs[n++] = uv_buf_init((char *)body, (unsigned)len);
    } else {
        free(owned);
        owned = NULL;
    }
    rc = conn_write(c, bufs, n, owned);
    req_complete(req, rc);
    return rc;
}

int sand_http_respond(sand_http_req_t *req, int status, const char *content_type, const void *body,
                      size_t len, const char *extra_headers)
{
    return respond(req, status, content_type, body, len, NULL, extra_headers);
}

int sand_http_respond_take(sand_http_req_t *req, int status, const char *content_type, char *body,
                           size_t len, const char *extra_headers)
{
    if (!body || len == 0) {
        free(body);
        return respond(req, status, content_type, NULL, 0, NULL, extra_headers);
    }
    return respond(req, status, content_type, body, len, body, extra_headers);
}

int sand_http_respond_error(sand_http_req_t *req, int status, const char *code, const char *message)
{
    if (req->state != REQ_HANDLER)
        return SAND_EINVAL;
    sand_bytes_t b;
    sand_bytes_init(&b, SIZE_MAX / 2);
    int rc = sand_bytes_appends(&b, "{\"error\":{\"code\":");
    rc |= sand_bytes_append_json_str(&b, code, strlen(code));
    rc |= sand_bytes_appends(&b, ",\"message\":");
    rc |= sand_bytes_append_json_str(&b, message, strlen(message));
    rc |= sand_bytes_appends(&b, "}}");
    if (rc < 0) {
        sand_bytes_release(&b);
        return respond(req, 500, NULL, NULL, 0, NULL, NULL);
    }
    size_t len;
    char *body = sand_bytes_steal(&b, &len);
    return respond(req, status, "application/json", body, len, body, NULL);
}

int sand_http_stream_begin(sand_http_req_t *req, int status, const char *content_type,
                           const char *extra_headers)
{
    if (status < 200 || status > 999)
        return SAND_EINVAL;
    int rc = answer_check(req, REQ_HANDLER);
    if (rc <= 0)
        return rc;
    sand_http_conn_t *c = req->conn;
    /* An HTTP/1.0 peer knows no chunks: the stream is the rest of the connection. */
    req->keep_alive = req->keep_alive && !c->srv->closing && !req->http10;
    if ((rc = build_head(c, status, content_type, req->http10 ? FRAME_NONE : FRAME_CHUNKED, 0,
                         conn_header(req, req->keep_alive), extra_headers)) < 0)
        return SAND_EINVAL;
    uv_buf_t b = uv_buf_init(c->head.data, (unsigned)c->head.len);
    if (conn_write(c, &b, 1, NULL) < 0) {
        c->req = NULL;
        sand__http_req_free(req);
        conn_close(c);
        return SAND_ECANCELED;
    }
    req->state = REQ_STREAMING;
    return 0;
}

int sand_http_stream_write(sand_http_req_t *req, const void *data, size_t len)
{
    if (req->state != REQ_STREAMING)
        return SAND_EINVAL;
    sand_http_conn_t *c = req->conn;
    if (!c || c->closing || req->in_on_close)
        return SAND_ECANCELED;
    if (len == 0 || req->head)
        return 0;
    if (c->out_queued > c->srv->opts.max_output)
        return SAND_EBUSY;
    char size[24];
    uv_buf_t bufs[3];
    unsigned n = 0;
    if (req->http10) {
        bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    } else {
        int sn = snprintf(size, sizeof(size), "%zx\r\n", len);
        bufs[n++] = uv_buf_init(size, (unsigned)sn);
        bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
        bufs[n++] = uv_buf_init((char *)"\r\n", 2);
    }
    if (conn_write(c, bufs, n, NULL) < 0) {
        /* req stays attached: its on_close runs from the loop unless it is ended first. */
        conn_close(c);
        return SAND_ECANCELED;
    }
    return 0;
}

int sand_http_stream_end(sand_http_req_t *req)
{
    static const char last_chunk[] = "0\r\n\r\n";
    int rc = answer_check(req, REQ_STREAMING);
    if (rc <= 0)
        return rc;
    sand_http_conn_t *c = req->conn;
    rc = 0;
    if (!req->http10 && !req->head) {
        uv_buf_t b = uv_buf_init((char *)last_chunk, sizeof(last_chunk) - 1);
        rc = conn_write(c, &b, 1, NULL);
    }
    req_complete(req, rc);
    return rc;
}

/* ---- server ------------------------------------------------------------------------------ */

static int parse_listen(const char *listen, struct sockaddr_storage *ss, sand_err *err)
{
    char host[64];
    const char *port;
    bool v6 = false;
    if (!listen)
        return sand_err_set(err, SAND_EINVAL, "no listen address");
    if (listen[0] == '[') {
        const char *rb = strchr(listen, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - listen - 1) >= sizeof(host))
            return sand_err_set(err, SAND_EINVAL, "bad listen address '%s'", listen);
        memcpy(host, listen + 1, (size_t)(rb - listen - 1));
        host[rb - listen - 1] = '\0';
        port = rb + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host))
            return sand_err_set(err, SAND_EINVAL, "bad listen address '%s' (want HOST:PORT)",
                                listen);
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        port = colon + 1;
        if (strcmp(host, "localhost") == 0)
            sand_strlcpy(host, "127.0.0.1", sizeof(host));
    }
    int64_t p;
    if (sand_parse_int(port, 0, 65535, &p, err) < 0)
        return sand_err_wrap(err, SAND_EINVAL, "port of listen address '%s'", listen);
    int r = v6 ? uv_ip6_addr(host, (int)p, (struct sockaddr_in6 *)ss)
               : uv_ip4_addr(host, (int)p, (struct sockaddr_in *)ss);
    if (r < 0)
        return sand_err_set(err, SAND_EINVAL, "bad listen address '%s': %s", listen,
                            uv_strerror(r));
    return 0;
}

static void on_failed_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

int sand_http_server_open(uv_loop_t *loop, const char *listen, const sand_http_opts_t *opts,
                          sand_http_server_t **out, sand_err *err)
{
    struct sockaddr_storage ss;
    int rc, r;
    if (!opts || !opts->handler)
        return sand_err_set(err, SAND_EINVAL, "http server needs a handler");
    if ((rc = parse_listen(listen, &ss, err)) < 0)
        return rc;
    sand_http_server_t *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    srv->loop = loop;
    srv->opts = *opts;
    if (!srv->opts.max_body)
        srv->opts.max_body = SAND_HTTP_DEFAULT_MAX_BODY;
    if (!srv->opts.max_header)
        srv->opts.max_header = SAND_HTTP_DEFAULT_MAX_HEADER;
    if (!srv->opts.max_headers)
        srv->opts.max_headers = SAND_HTTP_DEFAULT_MAX_HEADERS;
    if (!srv->opts.max_conns)
        srv->opts.max_conns = SAND_HTTP_DEFAULT_MAX_CONNS;
    if (!srv->opts.idle_ms)
        srv->opts.idle_ms = SAND_HTTP_DEFAULT_IDLE_MS;
    if (!srv->opts.max_output)
        srv->opts.max_output = SAND_HTTP_DEFAULT_MAX_OUTPUT;
    sand_list_init(&srv->conns);
    sand_list_init(&srv->resume);
    if ((r = uv_tcp_init(loop, &srv->listener)) < 0) {
        free(srv);
        return sand_err_set(err, SAND_EIO, "listen on '%s': %s", listen, uv_strerror(r));
    }
    srv->listener.data = srv;
    r = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    if (r == 0)
        r = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
    if (r < 0) {
        uv_close((uv_handle_t *)&srv->listener, on_failed_listener_closed);
        return sand_err_set(err, SAND_EIO, "listen on '%s': %s", listen, uv_strerror(r));
    }
    srv->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    uv_idle_init(loop, &srv->resume_idle);
    srv->resume_idle.data = srv;
    srv->handles = 2;
    *out = srv;
    return 0;
}

int sand_http_server_port(const sand_http_server_t *srv)
{
    return srv->port;
}

size_t sand_http_server_conn_count(const sand_http_server_t *srv)
{
    return srv->nconns;
}

void sand_http_server_close(sand_http_server_t *srv, sand_http_server_close_cb close_cb, void *ud)
{
    srv->closing = true;
    srv->close_cb = close_cb;
    srv->close_ud = ud;
    uv_close((uv_handle_t *)&srv->listener, on_srv_handle_closed);
    uv_close((uv_handle_t *)&srv->resume_idle, on_srv_handle_closed);
    while (!sand_list_empty(&srv->conns))
        conn_close(SAND_CONTAINER_OF(srv->conns.next, sand_http_conn_t, link));
    while (!sand_list_empty(&srv->resume))
        sand_list_remove(srv->resume.next);
}
