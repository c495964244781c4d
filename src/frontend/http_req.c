/*
 * The request object of the HTTP server: how the parser's pieces of request target and header
 * lines are stored in one bounded buffer per request (offsets while the buffer may still grow,
 * pointers once the header block is complete), the read-only accessors handlers use, and
 * percent-decoding of query parameters and path segments. Requests are reused across the
 * messages of one connection, so a keep-alive connection allocates nothing per request once its
 * buffers have grown to fit.
 */
#include "sand/http.h"

#include "frontend_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sand__http_req_reset(sand_http_req_t *req, sand_http_conn_t *conn)
{
    req->conn = conn;
    req->state = REQ_PARSING;
    req->phase = HDR_URL;
    req->keep_alive = false;
    req->head = false;
    req->http10 = false;
    req->in_on_close = false;
    req->method = HTTP_GET;
    sand_bytes_reset(&req->hdr);
    req->url_len = 0;
    req->path = "/";
    req->query = "";
    req->nh = 0;
    sand_bytes_reset(&req->body);
    req->data = NULL;
    req->on_close = NULL;
    req->on_close_ud = NULL;
}

void sand__http_req_free(sand_http_req_t *req)
{
    if (!req)
        return;
    sand_bytes_release(&req->hdr);
    sand_bytes_release(&req->body);
    free(req->hv);
    free(req);
}

int sand__http_req_add_url(sand_http_req_t *req, const char *at, size_t n)
{
    int rc = sand_bytes_append(&req->hdr, at, n);
    if (rc == 0)
        req->url_len += n;
    return rc;
}

int sand__http_req_add_field(sand_http_req_t *req, const char *at, size_t n, size_t max_headers)
{
    int rc;
    if (req->phase == HDR_DONE) /* trailers after a chunked body are not kept */
        return 0;
    if (req->phase != HDR_FIELD) {
        /* A new header line: terminate the url or the previous value. */
        if ((rc = sand_bytes_append(&req->hdr, "", 1)) < 0)
            return rc;
        if (req->nh >= max_headers)
            return SAND_ETOOBIG;
        if (req->nh == req->hv_cap) {
            size_t cap = req->hv_cap ? req->hv_cap * 2 : 16;
            sand_http_hdr *hv = realloc(req->hv, cap * sizeof(*hv));
            if (!hv)
                return SAND_ENOMEM;
            req->hv = hv;
            req->hv_cap = cap;
        }
        req->hv[req->nh].name_off = (uint32_t)req->hdr.len;
        req->hv[req->nh].value_off = UINT32_MAX;
        req->nh++;
        req->phase = HDR_FIELD;
    }
    return sand_bytes_append(&req->hdr, at, n);
}

int sand__http_req_add_value(sand_http_req_t *req, const char *at, size_t n)
{
    int rc;
    if (req->phase == HDR_DONE)
        return 0;
    if (req->phase == HDR_FIELD) {
        if ((rc = sand_bytes_append(&req->hdr, "", 1)) < 0)
            return rc;
        req->hv[req->nh - 1].value_off = (uint32_t)req->hdr.len;
        req->phase = HDR_VALUE;
    }
    return sand_bytes_append(&req->hdr, at, n);
}

/* Splits the stored target into path and query in place: "/a/b?x=1#f" -> "/a/b", "x=1". An
 * absolute-form target ("http://host/a?x") keeps only its path and query. */
static void split_target(sand_http_req_t *req)
{
    char *url = req->hdr.data;
    char *end = url + req->url_len;
    char *hash = memchr(url, '#', req->url_len);
    if (hash) {
        *hash = '\0';
        end = hash;
    }
    char *q = memchr(url, '?', (size_t)(end - url));
    if (q) {
        *q = '\0';
        req->query = q + 1;
        end = q;
    }
    req->path = url;
    if (url[0] != '/' && url[0] != '*') {
        /* absolute-form: skip "scheme://authority" */
        char *sep = strstr(url, "://");
        char *slash = sep ? strchr(sep + 3, '/') : NULL;
        req->path = slash ? slash : "/";
    }
}

int sand__http_req_headers_done(sand_http_req_t *req)
{
    int rc;
    if (req->phase == HDR_DONE)
        return 0;
    if ((rc = sand_bytes_append(&req->hdr, "", 1)) < 0)
        return rc;
    req->phase = HDR_DONE;
    if (!req->hdr.data)
        return SAND_EINVAL;
    split_target(req);
    for (size_t i = 0; i < req->nh; i++) {
        sand_http_hdr *h = &req->hv[i];
        h->name = req->hdr.data + h->name_off;
        if (h->value_off == UINT32_MAX) {
            h->value = "";
            continue;
        }
        char *v = req->hdr.data + h->value_off;
        size_t n = strlen(v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            v[--n] = '\0';
        while (*v == ' ' || *v == '\t')
            v++;
        h->value = v;
    }
    return 0;
}

/* ---- accessors --------------------------------------------------------------------------- */

const char *sand_http_req_method(const sand_http_req_t *req)
{
    return http_method_str(req->method);
}

enum http_method sand_http_req_method_id(const sand_http_req_t *req)
{
    return req->method;
}

const char *sand_http_req_path(const sand_http_req_t *req)
{
    return req->path;
}

const char *sand_http_req_query(const sand_http_req_t *req)
{
    return req->query;
}

const char *sand_http_req_header(const sand_http_req_t *req, const char *name)
{
    if (req->phase != HDR_DONE)
        return NULL;
    for (size_t i = 0; i < req->nh; i++)
        if (strcasecmp(req->hv[i].name, name) == 0)
            return req->hv[i].value;
    return NULL;
}

size_t sand_http_req_header_count(const sand_http_req_t *req)
{
    return req->phase == HDR_DONE ? req->nh : 0;
}

void sand_http_req_header_at(const sand_http_req_t *req, size_t i, const char **name,
                             const char **value)
{
    *name = req->hv[i].name;
    *value = req->hv[i].value;
}

const char *sand_http_req_body(const sand_http_req_t *req, size_t *len)
{
    *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

char *sand_http_req_body_steal(sand_http_req_t *req, size_t *len)
{
    if (req->body.len == 0) {
        *len = 0;
        return NULL;
    }
    return sand_bytes_steal(&req->body, len);
}

void sand_http_req_set_data(sand_http_req_t *req, void *data)
{
    req->data = data;
}

void *sand_http_req_data(const sand_http_req_t *req)
{
    return req->data;
}

void sand_http_req_on_close(sand_http_req_t *req, sand_http_req_close_cb cb, void *ud)
{
    req->on_close = cb;
    req->on_close_ud = ud;
}

/* ---- percent-decoding -------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int sand_http_pct_decode(const char *src, size_t n, bool plus_is_space, char *buf, size_t len)
{
    size_t o = 0;
    int rc = 0;
    if (len == 0)
        return SAND_ETOOBIG;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(src[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(src[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                rc = SAND_EINVAL;
                break;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (o + 1 >= len) {
            rc = SAND_ETOOBIG;
            break;
        }
        buf[o++] = c;
    }
    buf[o] = '\0';
    if (rc < 0)
        return rc;
    return o > INT32_MAX ? SAND_ETOOBIG : (int)o;
}

int sand_http_query_get(const sand_http_req_t *req, const char *name, char *buf, size_t len)
{
    const char *p = req->query;
    size_t nlen = strlen(name);
    while (*p) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        /* Names are compared decoded so "a%5Fb" matches "a_b". */
        char key[256];
        int kn = sand_http_pct_decode(p, (size_t)(kend - p), true, key, sizeof(key));
        if (kn >= 0 && (size_t)kn == nlen && memcmp(key, name, nlen) == 0) {
            if (!eq) {
                if (len == 0)
                    return SAND_ETOOBIG;
                buf[0] = '\0';
                return 0;
            }
            return sand_http_pct_decode(eq + 1, (size_t)(end - eq - 1), true, buf, len);
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    return SAND_ENOTFOUND;
}
