/*
 * Prometheus metrics: invocation and outcome counters and latency histograms per workflow and per
 * step (fed by the engine's observer on the loop thread), and, gathered when scraped, queue
 * depths, in-flight instances, sandbox memory and grain worker RSS.
 */
#include "sandd_internal.h"

#include "sand/protocol.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_s[SAND_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                   0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                   1,      2.5,     5,      10};

static void hist_add(hist_t *h, int64_t us)
{
    double s = (double)(us < 0 ? 0 : us) / 1e6;
    size_t i = 0;
    while (i < SAND_HIST_BUCKETS && s > bucket_s[i])
        i++;
    h->counts[i]++;
    h->n++;
    h->sum_s += s;
}

static metric_series_t *series(sand_daemon *d, const char *app, const char *wf, const char *step)
{
    char key[3 * SAND_NAME_MAX + 4];
    snprintf(key, sizeof(key), "%s/%s/%s", app, wf, step);
    metric_series_t *m = sand_map_get(&d->series, key);
    if (m)
        return m;
    m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    sand_strlcpy(m->app, app, sizeof(m->app));
    sand_strlcpy(m->workflow, wf, sizeof(m->workflow));
    sand_strlcpy(m->step, step, sizeof(m->step));
    if (sand_map_set(&d->series, key, m, NULL) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

void metrics_invoked(sand_daemon *d, const char *app, const char *workflow)
{
    metric_series_t *m = series(d, app, workflow, "");
    if (m)
        m->invocations++;
}

void metrics_step_done(const char *app, const char *workflow, const char *step, const char *status,
                       int64_t queued_us, int64_t started_us, int64_t finished_us, void *ud)
{
    sand_daemon *d = ud;
    metric_series_t *m = series(d, app, workflow[0] ? workflow : step, step);
    if (!m)
        return;
    m->invocations++;
    if (strcmp(status, "succeeded") == 0)
        m->succeeded++;
    else
        m->failed++;
    if (started_us && finished_us)
        hist_add(&m->latency, finished_us - started_us);
    if (queued_us && started_us)
        hist_add(&m->queue_wait, started_us - queued_us);
}

void metrics_exec_done(const char *app, const char *workflow, sand_exec_status_t status,
                       int64_t started_us, int64_t finished_us, void *ud)
{
    sand_daemon *d = ud;
    metric_series_t *m = series(d, app, workflow, "");
    if (!m)
        return;
    if (status == SAND_EXEC_SUCCEEDED)
        m->succeeded++;
    else if (status == SAND_EXEC_TIMED_OUT)
        m->timed_out++;
    else
        m->failed++;
    hist_add(&m->latency, finished_us - started_us);
}

static void emit_hist(sand_bytes_t *b, const char *name, const char *labels, const hist_t *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < SAND_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        sand_bytes_appendf(b, "%s_bucket{%s,le=\"%g\"} %" PRIu64 "\n", name, labels, bucket_s[i],
                           cum);
    }
    cum += h->counts[SAND_HIST_BUCKETS];
    sand_bytes_appendf(b, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
    sand_bytes_appendf(b, "%s_sum{%s} %.6f\n%s_count{%s} %" PRIu64 "\n", name, labels, h->sum_s,
                       name, labels, h->n);
}

typedef struct scrape {
    sand_daemon *d;
    sand_http_req_t *req;
    sand_bytes_t out;
    size_t pending;
} scrape_t;

static void scrape_closed(sand_http_req_t *req, void *ud)
{
    scrape_t *s = ud;
    s->req = NULL;
}

static void scrape_step(scrape_t *s)
{
    if (--s->pending > 0)
        return;
    if (s->req) {
        sand_http_req_on_close(s->req, NULL, NULL);
        size_t len;
        char *body = sand_bytes_steal(&s->out, &len);
        sand_http_respond_take(s->req, 200, "text/plain; version=0.0.4", body, len, NULL);
    }
    sand_bytes_release(&s->out);
    free(s);
}

struct depth_probe {
    scrape_t *s;
    char app[SAND_NAME_MAX];
};

static void depth_cb(const char *grain, int64_t queued, int64_t in_flight, void *ud)
{
    struct depth_probe *p = ud;
    sand_bytes_appendf(&p->s->out,
                       "sand_queue_depth{app=\"%s\",grain=\"%s\"} %" PRId64 "\n"
                       "sand_live_instances{app=\"%s\",grain=\"%s\"} %" PRId64 "\n",
                       p->app, grain, queued, p->app, grain, in_flight);
    scrape_step(p->s);
    free(p);
}

/* Resident set size of a host pid, from /proc; 0 when unknown. */
static int64_t rss_bytes(int64_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%" PRId64 "/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int64_t kb = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtoll(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

struct sup_probe {
    scrape_t *s;
    char app[SAND_NAME_MAX];
};

static void sup_cb(sand_lbus_t *lbus, int status, const redisReply *reply, const char *errstr,
                   void *ud)
{
    struct sup_probe *p = ud;
    bool host_pids = sand_sbx_driver_kind(p->s->d->sbx) == SAND_SBX_PROCESS;
    if (status == 0 && reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            json_t *w = json_loadb(reply->element[i + 1]->str, reply->element[i + 1]->len, 0, NULL);
            int64_t pid = json_integer_value(json_object_get(w, "pid"));
            int64_t restarts = json_integer_value(json_object_get(w, "restarts"));
            sand_bytes_appendf(
                &p->s->out, "sand_worker_restarts{app=\"%s\",grain=\"%.*s\"} %" PRId64 "\n", p->app,
                (int)reply->element[i]->len, reply->element[i]->str, restarts);
            if (host_pids && pid > 0)
                sand_bytes_appendf(
                    &p->s->out, "sand_worker_rss_bytes{app=\"%s\",grain=\"%.*s\"} %" PRId64 "\n",
                    p->app, (int)reply->element[i]->len, reply->element[i]->str, rss_bytes(pid));
            json_decref(w);
        }
    }
    scrape_step(p->s);
    free(p);
}

struct mem_probe {
    scrape_t *s;
    char app[SAND_NAME_MAX];
};

static void mem_cb(sand_sbx_t *sbx, int status, const sand_sbx_stats_t *st, void *ud)
{
    struct mem_probe *p = ud;
    if (status == 0 && st)
        sand_bytes_appendf(
            &p->s->out, "sand_sandbox_memory_bytes{app=\"%s\",sandbox=\"%s\"} %" PRId64 "\n",
            p->app, sand_sbx_grains(sbx)[0] ? sand_sbx_grains(sbx) : "app", st->memory);
    scrape_step(p->s);
    free(p);
}

void metrics_serve(sand_daemon *d, sand_http_req_t *req)
{
    scrape_t *s = calloc(1, sizeof(*s));
    if (!s) {
        sand_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    s->d = d;
    s->req = req;
    sand_bytes_init(&s->out, 64 << 20);
    sand_bytes_t *b = &s->out;
    sand_bytes_appends(b, "# HELP sand_invocations_total Invocations per workflow, and instances "
                          "per step.\n# TYPE sand_invocations_total counter\n");
    size_t it = 0;
    void *v;
    char labels[256];
    while (sand_map_next(&d->series, &it, NULL, &v)) {
        metric_series_t *m = v;
        if (m->step[0])
            snprintf(labels, sizeof(labels), "app=\"%s\",workflow=\"%s\",step=\"%s\"", m->app,
                     m->workflow, m->step);
        else
            snprintf(labels, sizeof(labels), "app=\"%s\",workflow=\"%s\"", m->app, m->workflow);
        sand_bytes_appendf(b, "sand_invocations_total{%s} %" PRIu64 "\n", labels, m->invocations);
        sand_bytes_appendf(b, "sand_errors_total{%s} %" PRIu64 "\n", labels,
                           m->failed + m->timed_out);
        if (!m->step[0])
            sand_bytes_appendf(b, "sand_timeouts_total{%s} %" PRIu64 "\n", labels, m->timed_out);
    }
    sand_bytes_appends(b, "# TYPE sand_execution_seconds histogram\n"
                          "# TYPE sand_step_seconds histogram\n"
                          "# TYPE sand_step_queue_seconds histogram\n");
    it = 0;
    while (sand_map_next(&d->series, &it, NULL, &v)) {
        metric_series_t *m = v;
        if (m->step[0]) {
            snprintf(labels, sizeof(labels), "app=\"%s\",workflow=\"%s\",step=\"%s\"", m->app,
                     m->workflow, m->step);
            emit_hist(b, "sand_step_seconds", labels, &m->latency);
            emit_hist(b, "sand_step_queue_seconds", labels, &m->queue_wait);
        } else if (m->latency.n) {
            snprintf(labels, sizeof(labels), "app=\"%s\",workflow=\"%s\"", m->app, m->workflow);
            emit_hist(b, "sand_execution_seconds", labels, &m->latency);
        }
    }
    sand_engine_stats_t es;
    sand_engine_stats(d->engine, &es);
    sand_gbus_stats_t gs;
    sand_gbus_stats(d->gbus, &gs);
    sand_bytes_appendf(b,
                       "sand_executions_running %" PRIu64 "\n"
                       "sand_executions_total{status=\"succeeded\"} %" PRIu64 "\n"
                       "sand_executions_total{status=\"failed\"} %" PRIu64 "\n"
                       "sand_executions_total{status=\"timed_out\"} %" PRIu64 "\n"
                       "sand_agent_entries_total %" PRIu64 "\n"
                       "sand_global_bus_produced_total %" PRIu64 "\n"
                       "sand_global_bus_delivered_total %" PRIu64 "\n"
                       "sand_global_bus_failed_total %" PRIu64 "\n"
                       "sand_global_bus_consumed_total %" PRIu64 "\n"
                       "sand_http_connections %zu\n",
                       es.running, es.succeeded, es.failed, es.timed_out, es.agent_entries,
                       gs.produced, gs.delivered, gs.delivery_failed, gs.consumed,
                       sand_http_server_conn_count(d->http));
    sand_http_req_on_close(req, scrape_closed, s);
    s->pending = 1;
    it = 0;
    while (sand_map_next(&d->apps, &it, NULL, &v)) {
        app_entry_t *a = v;
        if (!a->model)
            continue;
        for (size_t i = 0; i < a->model->n_grains; i++) {
            struct depth_probe *p = calloc(1, sizeof(*p));
            if (!p)
                continue;
            p->s = s;
            sand_strlcpy(p->app, a->name, sizeof(p->app));
            s->pending++;
            if (apps_queue_depth(d, a->name, a->model->grains[i]->name, depth_cb, p) < 0) {
                s->pending--;
                free(p);
            }
        }
        struct sup_probe *p = calloc(1, sizeof(*p));
        if (p) {
            p->s = s;
            sand_strlcpy(p->app, a->name, sizeof(p->app));
            char key[128];
            snprintf(key, sizeof(key), SAND_KEY_SUP_FMT, a->name);
            s->pending++;
            if (sand_lbus_command(d->lbus, sup_cb, p, "HGETALL %s", key) < 0) {
                s->pending--;
                free(p);
            }
        }
        for (size_t i = 0; i < a->sandboxes.len; i++) {
            struct mem_probe *mp = calloc(1, sizeof(*mp));
            if (!mp)
                continue;
            mp->s = s;
            sand_strlcpy(mp->app, a->name, sizeof(mp->app));
            s->pending++;
            if (sand_sbx_stats(a->sandboxes.items[i], mem_cb, mp) < 0) {
                s->pending--;
                free(mp);
            }
        }
    }
    scrape_step(s);
}

void metrics_release(sand_daemon *d)
{
    sand_map_release(&d->series, free);
}
