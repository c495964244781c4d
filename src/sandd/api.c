/*
 * The HTTP API of SPEC section 5: a route table matched on path segments, bearer-key auth,
 * invocation (blocking, ?async=1, single grain), execution records, app logs (with follow), and
 * JSON errors for every bad input. Handlers answer at once or from a later loop callback; nothing
 * here blocks.
 */
#include "sandd_internal.h"

#include "sand/protocol.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMP "api"

#define MAX_SEGMENTS   8
#define JSON_MAX_DEPTH 512
#define LOG_PAGE       1000

typedef struct route_ctx {
    sand_daemon *d;
    sand_http_req_t *req;
    const char *seg[MAX_SEGMENTS]; /* decoded path segments */
    size_t nseg;
} route_ctx_t;

typedef void (*route_fn)(route_ctx_t *c);

typedef struct route {
    const char *method;
    const char *pattern; /* segments; "*" matches any one segment */
    route_fn fn;
    bool no_auth;
} route_t;

/* ---- helpers ------------------------------------------------------------------------------ */

/* Constant-time comparison of the presented key with ours. */
static bool key_ok(const sand_daemon *d, const char *auth)
{
    if (!auth || strncmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *k = auth + 7;
    size_t a = strlen(k), b = strlen(d->key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned)(k[i % (a ? a : 1)] ^ d->key[i]);
    return diff == 0 && a == b;
}

static bool query_flag(sand_http_req_t *req, const char *name)
{
    char v[16];
    int n = sand_http_query_get(req, name, v, sizeof(v));
    return n >= 0 && (n == 0 || strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

/* ---- invocation ----------------------------------------------------------------------------- */

typedef struct waiter {
    sand_daemon *d;
    sand_http_req_t *req;
    char id[33];
} waiter_t;

static void waiter_req_closed(sand_http_req_t *req, void *ud)
{
    waiter_t *w = ud;
    if (w->d->engine)
        sand_engine_forget_waiter(w->d->engine, w->id);
    w->d->waiters--;
    free(w);
}

static void invocation_done(sand_engine_t *eng, const sand_exec_t *x, int status, void *ud)
{
    waiter_t *w = ud;
    sand_http_req_t *req = w->req;
    sand_http_req_on_close(req, NULL, NULL);
    w->d->waiters--;
    char hdr[96];
    snprintf(hdr, sizeof(hdr), "X-Sand-Execution-Id: %s\r\n", w->id);
    if (status < 0 || !x) {
        sand_http_respond_error(req, 503, "shutting_down", "sandd is stopping");
        free(w);
        return;
    }
    size_t len;
    if (sand_exec_status(x) == SAND_EXEC_SUCCEEDED) {
        const char *out = sand_exec_output(x, &len);
        sand_http_respond(req, 200, "application/json", out, len, hdr);
    } else {
        const char *e = sand_exec_error(x, &len);
        sand_bytes_t b;
        sand_bytes_init(&b, len + 256);
        sand_bytes_appends(&b, "{\"error\":");
        sand_bytes_append(&b, e ? e : "null", e ? len : 4);
        sand_bytes_appendf(&b, ",\"execution_id\":\"%s\",\"status\":\"%s\"}", w->id,
                           sand_exec_status_name(sand_exec_status(x)));
        int code = sand_exec_status(x) == SAND_EXEC_TIMED_OUT ? 504 : 502;
        char *body = sand_bytes_steal(&b, &len);
        sand_http_respond_take(req, code, "application/json", body, len, hdr);
    }
    free(w);
}

static void invoke(route_ctx_t *c, app_entry_t *a, const sand_workflow_t *wf, const sand_grain_t *g)
{
    size_t len;
    const char *body = sand_http_req_body(c->req, &len);
    if (len == 0) {
        body = "{}";
        len = 2;
    }
    if (!sand_json_depth_ok(body, len, JSON_MAX_DEPTH)) {
        sand_http_respond_error(c->req, 400, "invalid_json",
                                "the event nests deeper than 512 levels");
        return;
    }
    json_error_t jerr;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
    if (!v) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        sand_http_respond_error(c->req, 400, "invalid_json", msg);
        return;
    }
    json_decref(v);
    bool async = query_flag(c->req, "async");
    waiter_t *w = NULL;
    if (!async) {
        w = calloc(1, sizeof(*w));
        if (!w) {
            sand_http_respond_error(c->req, 500, "internal", "out of memory");
            return;
        }
        w->d = c->d;
        w->req = c->req;
    }
    char id[33];
    sand_err err;
    metrics_invoked(c->d, a->name, wf ? wf->name : g->name);
    if (sand_engine_start(c->d->engine, a->model, wf, g, body, len, w ? invocation_done : NULL, w,
                          id, &err) < 0) {
        free(w);
        sand_http_respond_error(c->req, 503, "unavailable", err.msg);
        return;
    }
    if (async) {
        char resp[96], hdr[96];
        int n = snprintf(resp, sizeof(resp), "{\"execution_id\":\"%s\"}", id);
        snprintf(hdr, sizeof(hdr), "X-Sand-Execution-Id: %s\r\n", id);
        sand_http_respond(c->req, 202, "application/json", resp, (size_t)n, hdr);
        return;
    }
    sand_strlcpy(w->id, id, sizeof(w->id));
    c->d->waiters++;
    sand_http_req_on_close(c->req, waiter_req_closed, w);
}

static app_entry_t *find_app(route_ctx_t *c)
{
    app_entry_t *a = apps_get(c->d, c->seg[2]);
    if (!a || a->state == APP_DELETING || !a->model) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown app '%s'", c->seg[2]);
        sand_http_respond_error(c->req, 404, "not_found", msg);
        return NULL;
    }
    return a;
}

static void r_invoke_workflow(route_ctx_t *c)
{
    app_entry_t *a = find_app(c);
    if (!a)
        return;
    const sand_workflow_t *wf = sand_app_workflow(a->model, c->seg[4]);
    if (!wf) {
        char msg[200];
        snprintf(msg, sizeof(msg), "unknown workflow '%s' of app '%s'", c->seg[4], a->name);
        sand_http_respond_error(c->req, 404, "not_found", msg);
        return;
    }
    invoke(c, a, wf, NULL);
}

static void r_invoke_grain(route_ctx_t *c)
{
    app_entry_t *a = find_app(c);
    if (!a)
        return;
    const sand_grain_t *g = sand_app_grain(a->model, c->seg[4]);
    if (!g) {
        char msg[200];
        snprintf(msg, sizeof(msg), "unknown grain '%s' of app '%s'", c->seg[4], a->name);
        sand_http_respond_error(c->req, 404, "not_found", msg);
        return;
    }
    invoke(c, a, NULL, g);
}

/* ---- executions ----------------------------------------------------------------------------- */

typedef struct lookup_job {
    sand_http_req_t *req;
    char id[64];
    bool gone;
} lookup_job_t;

static void lookup_req_closed(sand_http_req_t *req, void *ud)
{
    lookup_job_t *j = ud;
    j->gone = true;
}

static void lookup_done(int status, const char *json, size_t len, void *ud)
{
    lookup_job_t *j = ud;
    if (!j->gone) {
        sand_http_req_on_close(j->req, NULL, NULL);
        if (status == 0) {
            sand_http_respond(j->req, 200, "application/json", json, len, NULL);
        } else {
            char msg[128];
            snprintf(msg, sizeof(msg), "unknown execution '%s'", j->id);
            sand_http_respond_error(j->req, 404, "not_found", msg);
        }
    }
    free(j);
}

static void r_execution(route_ctx_t *c)
{
    const char *id = c->seg[2];
    size_t n = strlen(id);
    bool ok = n > 0 && n <= 32;
    for (size_t i = 0; ok && i < n; i++)
        ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
    if (!ok) {
        sand_http_respond_error(c->req, 404, "not_found", "unknown execution");
        return;
    }
    lookup_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        sand_http_respond_error(c->req, 500, "internal", "out of memory");
        return;
    }
    j->req = c->req;
    sand_strlcpy(j->id, id, sizeof(j->id));
    sand_http_req_on_close(c->req, lookup_req_closed, j);
    sand_engine_lookup(c->d->engine, id, lookup_done, j);
}

/* ---- apps --------------------------------------------------------------------------------- */

static void r_apps_list(route_ctx_t *c)
{
    apps_list(c->d, c->req);
}

static void r_apps_deploy(route_ctx_t *c)
{
    apps_deploy(c->d, c->req);
}

static void r_app_get(route_ctx_t *c)
{
    app_entry_t *a = find_app(c);
    if (a)
        apps_describe(c->d, a, c->req);
}

static void r_app_delete(route_ctx_t *c)
{
    app_entry_t *a = find_app(c);
    if (a)
        apps_delete(c->d, a, c->req);
}

/* ---- logs --------------------------------------------------------------------------------- */

typedef struct follower {
    sand_list_t link;
    sand_daemon *d;
    sand_http_req_t *req;
    char app[SAND_NAME_MAX];
    char grain[SAND_NAME_MAX];
    char last_id[48]; /* last stream id sent ("" = none) */
    int64_t since_us;
    bool follow;
    bool in_flight; /* an XRANGE is outstanding */
    bool gone;      /* the client went away while a read was in flight */
} follower_t;

static void follower_free(follower_t *f)
{
    sand_list_remove(&f->link);
    free(f);
}

static void follower_closed(sand_http_req_t *req, void *ud)
{
    follower_t *f = ud;
    f->req = NULL;
    if (f->in_flight)
        f->gone = true;
    else
        follower_free(f);
}

static void follower_end(follower_t *f)
{
    if (f->req) {
        sand_http_req_on_close(f->req, NULL, NULL);
        sand_http_stream_end(f->req);
        f->req = NULL;
    }
    follower_free(f);
}

static void logs_read(follower_t *f);

/* Appends one log entry as a JSON line; returns false when it is filtered out. */
static bool log_line(follower_t *f, const redisReply *entry, sand_bytes_t *out)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2)
        return false;
    const redisReply *fields = entry->element[1];
    const char *vals[6] = {0};
    size_t lens[6] = {0};
    static const char *const names[6] = {SAND_F_LOG_TIME, SAND_F_GRAIN,    SAND_F_STEP,
                                         SAND_F_EXEC,     SAND_F_LOG_KIND, SAND_F_LOG_MSG};
    for (size_t i = 0; fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2) {
        for (int k = 0; k < 6; k++) {
            if (strlen(names[k]) == fields->element[i]->len &&
                memcmp(names[k], fields->element[i]->str, fields->element[i]->len) == 0) {
                vals[k] = fields->element[i + 1]->str;
                lens[k] = fields->element[i + 1]->len;
            }
        }
    }
    int64_t t = vals[0] ? strtoll(vals[0], NULL, 10) : 0;
    if (t < f->since_us)
        return false;
    if (f->grain[0] &&
        (!vals[1] || strlen(f->grain) != lens[1] || memcmp(f->grain, vals[1], lens[1]) != 0))
        return false;
    sand_bytes_appendf(out, "{\"time_us\":%" PRId64 ",\"grain\":", t);
    sand_bytes_append_json_str(out, vals[1] ? vals[1] : "", lens[1]);
    sand_bytes_appends(out, ",\"step\":");
    sand_bytes_append_json_str(out, vals[2] ? vals[2] : "", lens[2]);
    sand_bytes_appends(out, ",\"execution_id\":");
    sand_bytes_append_json_str(out, vals[3] ? vals[3] : "", lens[3]);
    sand_bytes_appends(out, ",\"kind\":");
    sand_bytes_append_json_str(out, vals[4] ? vals[4] : "", lens[4]);
    sand_bytes_appends(out, ",\"message\":");
    sand_bytes_append_json_str(out, vals[5] ? vals[5] : "", lens[5]);
    sand_bytes_appends(out, "}\n");
    return true;
}

static void logs_cb(sand_lbus_t *lbus, int status, const redisReply *reply, const char *errstr,
                    void *ud)
{
    follower_t *f = ud;
    f->in_flight = false;
    if (f->gone || !f->req) {
        follower_free(f);
        return;
    }
    if (status < 0 || !reply || reply->type != REDIS_REPLY_ARRAY) {
        follower_end(f);
        return;
    }
    sand_bytes_t out;
    sand_bytes_init(&out, 64 << 20);
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        log_line(f, e, &out);
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[0]->len < sizeof(f->last_id))
            snprintf(f->last_id, sizeof(f->last_id), "%.*s", (int)e->element[0]->len,
                     e->element[0]->str);
    }
    int rc = out.len ? sand_http_stream_write(f->req, out.data, out.len) : 0;
    sand_bytes_release(&out);
    if (rc == SAND_ECANCELED)
        return; /* on_close follows */
    if (reply->elements == LOG_PAGE)
        logs_read(f); /* more right away */
    else if (!f->follow)
        follower_end(f);
    /* following: the timer polls again */
}

static void logs_read(follower_t *f)
{
    char key[128], start[64];
    snprintf(key, sizeof(key), SAND_KEY_LOG_FMT, f->app);
    if (f->last_id[0])
        snprintf(start, sizeof(start), "(%s", f->last_id);
    else
        snprintf(start, sizeof(start), "%" PRId64, f->since_us / 1000);
    f->in_flight = true;
    if (sand_lbus_command(f->d->lbus, logs_cb, f, "XRANGE %s %s + COUNT %d", key, start, LOG_PAGE) <
        0) {
        f->in_flight = false;
        follower_end(f);
    }
}

void api_follow_tick(uv_timer_t *t)
{
    sand_daemon *d = t->data;
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &d->followers)
    {
        follower_t *f = SAND_CONTAINER_OF(pos, follower_t, link);
        if (f->follow && !f->in_flight && f->req)
            logs_read(f);
    }
}

void api_close_followers(sand_daemon *d)
{
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &d->followers)
    {
        follower_t *f = SAND_CONTAINER_OF(pos, follower_t, link);
        f->follow = false;
        if (f->req) {
            sand_http_req_t *req = f->req;
            f->req = NULL;
            sand_http_req_on_close(req, NULL, NULL);
            sand_http_stream_end(req);
        }
        if (!f->in_flight)
            follower_free(f);
        else
            f->gone = true;
    }
}

static void r_logs(route_ctx_t *c)
{
    app_entry_t *a = find_app(c);
    if (!a)
        return;
    follower_t *f = calloc(1, sizeof(*f));
    if (!f) {
        sand_http_respond_error(c->req, 500, "internal", "out of memory");
        return;
    }
    char since[32];
    if (sand_http_query_get(c->req, "since", since, sizeof(since)) > 0) {
        int64_t v;
        if (sand_parse_int(since, 0, INT64_MAX, &v, NULL) < 0) {
            free(f);
            sand_http_respond_error(c->req, 400, "invalid_query",
                                    "since must be microseconds since the epoch");
            return;
        }
        f->since_us = v;
    }
    if (sand_http_query_get(c->req, "grain", f->grain, sizeof(f->grain)) < 0)
        f->grain[0] = '\0';
    f->follow = query_flag(c->req, "follow");
    f->d = c->d;
    f->req = c->req;
    sand_strlcpy(f->app, a->name, sizeof(f->app));
    if (sand_http_stream_begin(c->req, 200, "application/x-ndjson", NULL) < 0) {
        free(f);
        sand_http_respond_error(c->req, 500, "internal", "cannot stream");
        return;
    }
    sand_list_insert_tail(&c->d->followers, &f->link);
    sand_http_req_on_close(c->req, follower_closed, f);
    logs_read(f);
}

/* ---- health and metrics --------------------------------------------------------------------- */

static void r_healthz(route_ctx_t *c)
{
    if (c->d->serving && sand_lbus_connected(c->d->lbus))
        sand_http_respond(c->req, 200, "text/plain", "ok\n", 3, NULL);
    else
        sand_http_respond(c->req, 503, "text/plain", "local bus down\n", 15, NULL);
}

static void r_metrics(route_ctx_t *c)
{
    metrics_serve(c->d, c->req);
}

/* ---- routing ----------------------------------------------------------------------------------
 */

static const route_t routes[] = {
    {"GET", "healthz", r_healthz, true},
    {"GET", "metrics", r_metrics, false},
    {"GET", "v1/apps", r_apps_list, false},
    {"POST", "v1/apps", r_apps_deploy, false},
    {"GET", "v1/apps/*", r_app_get, false},
    {"DELETE", "v1/apps/*", r_app_delete, false},
    {"POST", "v1/apps/*/workflows/*", r_invoke_workflow, false},
    {"POST", "v1/apps/*/grains/*", r_invoke_grain, false},
    {"GET", "v1/apps/*/logs", r_logs, false},
    {"GET", "v1/executions/*", r_execution, false},
};

/* Splits and percent-decodes the path into c->seg (storage in buf). Returns false when the path
 * is malformed (bad escape, too many segments, empty segment). */
static bool split_path(route_ctx_t *c, char *buf, size_t size)
{
    const char *p = sand_http_req_path(c->req);
    if (*p != '/')
        return false;
    p++;
    size_t used = 0;
    c->nseg = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 && !slash)
            break; /* trailing slash */
        if (n == 0 || c->nseg == MAX_SEGMENTS)
            return false;
        int dn = sand_http_pct_decode(p, n, false, buf + used, size - used);
        if (dn < 0 || memchr(buf + used, '/', (size_t)dn) || memchr(buf + used, '\0', (size_t)dn))
            return false;
        c->seg[c->nseg++] = buf + used;
        used += (size_t)dn + 1;
        p += n + (slash ? 1 : 0);
    }
    return true;
}

static bool match(const route_t *r, const route_ctx_t *c)
{
    const char *p = r->pattern;
    size_t i = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (i >= c->nseg)
            return false;
        if (!(n == 1 && *p == '*') && (strlen(c->seg[i]) != n || memcmp(c->seg[i], p, n) != 0))
            return false;
        i++;
        p += n + (slash ? 1 : 0);
    }
    return i == c->nseg;
}

static void respond_unauthorized(sand_http_req_t *req)
{
    static const char body[] =
        "{\"error\":{\"code\":\"unauthorized\",\"message\":\"unauthorized\"}}";
    sand_http_respond(req, 401, "application/json", body, sizeof(body) - 1,
                      "WWW-Authenticate: Bearer\r\n");
}

size_t api_body_limit(sand_http_req_t *req, void *ud)
{
    sand_daemon *d = ud;
    const char *path = sand_http_req_path(req);
    if (sand_http_req_method_id(req) == HTTP_POST && strcmp(path, "/v1/apps") == 0)
        return (size_t)d->cfg.limits_bundle;
    if (sand_http_req_method_id(req) == HTTP_POST)
        return (size_t)d->cfg.limits_invoke_body;
    return 64 * 1024;
}

void api_handle(sand_http_req_t *req, void *ud)
{
    sand_daemon *d = ud;
    route_ctx_t c = {.d = d, .req = req};
    char buf[4096];
    if (!split_path(&c, buf, sizeof(buf))) {
        sand_http_respond_error(req, 404, "not_found", "no such resource");
        return;
    }
    const char *method = sand_http_req_method(req);
    const route_t *path_match = NULL;
    for (size_t i = 0; i < SAND_ARRAY_LEN(routes); i++) {
        const route_t *r = &routes[i];
        if (!match(r, &c))
            continue;
        path_match = r;
        if (strcmp(r->method, method) != 0)
            continue;
        if (!r->no_auth && !key_ok(d, sand_http_req_header(req, "Authorization"))) {
            respond_unauthorized(req);
            return;
        }
        if (!d->serving || (d->draining && r->fn != r_healthz)) {
            sand_http_respond_error(req, 503, "unavailable", "sandd is not serving");
            return;
        }
        r->fn(&c);
        return;
    }
    if (path_match) {
        if (!path_match->no_auth && !key_ok(d, sand_http_req_header(req, "Authorization"))) {
            respond_unauthorized(req);
            return;
        }
        char msg[96];
        snprintf(msg, sizeof(msg), "method %s is not allowed here", method);
        sand_http_respond_error(req, 405, "method_not_allowed", msg);
        return;
    }
    if (!key_ok(d, sand_http_req_header(req, "Authorization"))) {
        respond_unauthorized(req);
        return;
    }
    sand_http_respond_error(req, 404, "not_found", "no such resource");
}
