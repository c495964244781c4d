/*
 * Executions: entry (paper steps 0-2), the host agent's queue (5b, 8, 9), global-bus backups and
 * flags (6a/6b, 10a/10b), records, deadlines and the answer to the client (11). See
 * docs/architecture.md for the step-by-step mapping and docs/internals/protocol.md for the wire
 * format. Nothing here waits for Kafka or for Redis before the next hop can run: workers publish
 * hops themselves; the engine only observes, backs up and records.
 */
#include "sand/engine.h"
#include "sand/protocol.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define COMP "engine"

#define KEY_RUNNING "sandd:running" /* set of ids of running executions */
#define TICK_MS     100

typedef struct step_rec {
    char step[SAND_NAME_MAX];
    char grain[SAND_NAME_MAX];
    char status[16];
    int attempt;
    int64_t queued_us, started_us, finished_us;
    int64_t pid;
} step_rec_t;

struct sand_exec {
    char id[33];
    char app[SAND_NAME_MAX];
    char workflow[SAND_NAME_MAX]; /* "" for a direct grain invocation */
    char grain[SAND_NAME_MAX];    /* the grain of a direct invocation */
    sand_exec_status_t status;
    char *input, *output, *error;
    size_t input_len, output_len, error_len;
    int64_t started_us, finished_us, deadline_us;
    sand_vec_t steps; /* step_rec_t* */
    sand_list_t link; /* running list, or finished LRU */
    sand_exec_done_cb done;
    void *done_ud;
};

struct sand_engine {
    sand_engine_opts_t o;
    sand_map_t execs;     /* id -> sand_exec (running and recently finished) */
    sand_map_t replay;    /* event id -> json_t* backup still `processing` (replay only) */
    sand_list_t running;  /* by start time */
    sand_list_t finished; /* oldest first */
    size_t n_finished;
    uv_timer_t tick;
    uint64_t rng;
    sand_engine_stats_t stats;
    bool closing;
};

/* ---- small helpers --------------------------------------------------------------------- */

static uint64_t next_random(sand_engine_t *eng)
{
    uint64_t z = (eng->rng += 0x9e3779b97f4a7c15ULL); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void new_exec_id(sand_engine_t *eng, char *out)
{
    /* time-ordered: 13 hex digits of microseconds, then 11 random ones */
    snprintf(out, 33, "%013" PRIx64 "%011" PRIx64,
             (uint64_t)((uint64_t)sand_now_us() & 0xfffffffffffffULL),
             (uint64_t)(next_random(eng) & 0xfffffffffffULL));
}

static void new_event_id(sand_engine_t *eng, char *out)
{
    snprintf(out, 17, "%016" PRIx64, next_random(eng));
}

static char *dup_bytes(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static int64_t field_int(const sand_lbus_entry_t *e, const char *name)
{
    size_t n;
    const char *v = sand_lbus_entry_get(e, name, &n);
    if (!v || n == 0 || n > 20)
        return 0;
    char buf[24];
    memcpy(buf, v, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

/* Copies a field into a fixed buffer (truncating); "" when absent. */
static void field_str(const sand_lbus_entry_t *e, const char *name, char *out, size_t size)
{
    size_t n;
    const char *v = sand_lbus_entry_get(e, name, &n);
    if (!v)
        n = 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(out, v, n);
    out[n] = '\0';
}

const char *sand_exec_status_name(sand_exec_status_t st)
{
    static const char *const names[] = {"running", "succeeded", "failed", "timed_out"};
    return (unsigned)st < SAND_ARRAY_LEN(names) ? names[st] : "unknown";
}

const char *sand_exec_id(const sand_exec_t *x)
{
    return x->id;
}

sand_exec_status_t sand_exec_status(const sand_exec_t *x)
{
    return x->status;
}

const char *sand_exec_output(const sand_exec_t *x, size_t *len)
{
    if (len)
        *len = x->output_len;
    return x->output;
}

const char *sand_exec_error(const sand_exec_t *x, size_t *len)
{
    if (len)
        *len = x->error_len;
    return x->error;
}

bool sand_json_depth_ok(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

/* ---- records --------------------------------------------------------------------------- */

static int append_raw_or_null(sand_bytes_t *b, const char *json, size_t len)
{
    return json ? sand_bytes_append(b, json, len) : sand_bytes_appends(b, "null");
}

int sand_exec_record_json(const sand_exec_t *x, sand_bytes_t *b)
{
    int rc = sand_bytes_appendf(b, "{\"execution_id\":\"%s\",\"app\":\"%s\",\"workflow\":", x->id,
                                x->app);
    if (x->workflow[0])
        rc |= sand_bytes_appendf(b, "\"%s\"", x->workflow);
    else
        rc |= sand_bytes_appendf(b, "null,\"grain\":\"%s\"", x->grain);
    rc |= sand_bytes_appendf(b, ",\"status\":\"%s\",\"input\":", sand_exec_status_name(x->status));
    rc |= append_raw_or_null(b, x->input, x->input_len);
    rc |= sand_bytes_appends(b, ",\"output\":");
    rc |= append_raw_or_null(b, x->output, x->output_len);
    rc |= sand_bytes_appends(b, ",\"error\":");
    rc |= append_raw_or_null(b, x->error, x->error_len);
    rc |= sand_bytes_appendf(b, ",\"started_us\":%" PRId64 ",\"finished_us\":", x->started_us);
    if (x->finished_us)
        rc |= sand_bytes_appendf(b, "%" PRId64, x->finished_us);
    else
        rc |= sand_bytes_appends(b, "null");
    rc |= sand_bytes_appendf(b, ",\"deadline_us\":%" PRId64 ",\"steps\":[", x->deadline_us);
    for (size_t i = 0; i < x->steps.len; i++) {
        const step_rec_t *s = x->steps.items[i];
        rc |= sand_bytes_appendf(
            b,
            "%s{\"step\":\"%s\",\"grain\":\"%s\",\"attempt\":%d,\"status\":\"%s\","
            "\"queued_us\":%" PRId64 ",\"started_us\":%" PRId64 ",\"finished_us\":%" PRId64
            ",\"pid\":%" PRId64 "}",
            i ? "," : "", s->step, s->grain, s->attempt, s->status, s->queued_us, s->started_us,
            s->finished_us, s->pid);
    }
    rc |= sand_bytes_appends(b, "]}");
    return rc ? SAND_ENOMEM : 0;
}

static void exec_free(sand_exec_t *x)
{
    if (!x)
        return;
    free(x->input);
    free(x->output);
    free(x->error);
    sand_vec_release(&x->steps, free);
    free(x);
}

/* Writes the record to Redis (fire and forget: a lost write only loses history). */
static void persist(sand_engine_t *eng, sand_exec_t *x)
{
    sand_bytes_t b;
    sand_bytes_init(&b, SIZE_MAX / 2);
    if (sand_exec_record_json(x, &b) == 0) {
        char key[64];
        char px[24];
        snprintf(key, sizeof(key), SAND_KEY_EXEC_FMT, x->id);
        snprintf(px, sizeof(px), "%" PRId64, eng->o.retention_ms);
        const char *argv[] = {"SET", key, b.data, "PX", px};
        size_t lens[] = {3, strlen(key), b.len, 2, strlen(px)};
        sand_lbus_command_argv(eng->o.lbus, NULL, NULL, 5, argv, lens);
        if (x->status == SAND_EXEC_RUNNING)
            sand_lbus_command(eng->o.lbus, NULL, NULL, "SADD " KEY_RUNNING " %s", x->id);
        else
            sand_lbus_command(eng->o.lbus, NULL, NULL, "SREM " KEY_RUNNING " %s", x->id);
    }
    sand_bytes_release(&b);
}

static void remember_finished(sand_engine_t *eng, sand_exec_t *x)
{
    sand_list_insert_tail(&eng->finished, &x->link);
    eng->n_finished++;
    size_t max = eng->o.max_finished_in_memory ? eng->o.max_finished_in_memory : 4096;
    while (eng->n_finished > max) {
        sand_exec_t *old = SAND_CONTAINER_OF(eng->finished.next, sand_exec_t, link);
        sand_list_remove(&old->link);
        eng->n_finished--;
        sand_map_del(&eng->execs, old->id);
        exec_free(old);
    }
}

/* Moves x to its final state exactly once, records it, answers the waiter. Takes ownership of
 * payload (output or error JSON). */
static void finalize(sand_engine_t *eng, sand_exec_t *x, sand_exec_status_t st, char *payload,
                     size_t len)
{
    if (x->status != SAND_EXEC_RUNNING) {
        free(payload);
        return;
    }
    x->status = st;
    x->finished_us = sand_now_us();
    if (st == SAND_EXEC_SUCCEEDED) {
        x->output = payload;
        x->output_len = len;
        eng->stats.succeeded++;
    } else {
        x->error = payload;
        x->error_len = len;
        if (st == SAND_EXEC_TIMED_OUT)
            eng->stats.timed_out++;
        else
            eng->stats.failed++;
    }
    eng->stats.running--;
    sand_list_remove(&x->link);
    remember_finished(eng, x);
    persist(eng, x);
    if (eng->o.observer.exec_done)
        eng->o.observer.exec_done(x->app, x->workflow[0] ? x->workflow : x->grain, st,
                                  x->started_us, x->finished_us, eng->o.observer.ud);
    sand_exec_done_cb cb = x->done;
    x->done = NULL;
    if (cb)
        cb(eng, x, 0, x->done_ud);
}

/* An engine-made error object (the instance never ran or the execution as a whole failed). */
static char *error_object(const char *step, const char *grain, const char *type,
                          const char *message, size_t *len)
{
    sand_bytes_t b;
    sand_bytes_init(&b, 1 << 20);
    sand_bytes_appends(&b, "{\"step\":");
    sand_bytes_append_json_str(&b, step, strlen(step));
    sand_bytes_appends(&b, ",\"grain\":");
    sand_bytes_append_json_str(&b, grain, strlen(grain));
    sand_bytes_appendf(&b, ",\"type\":\"%s\",\"message\":", type);
    sand_bytes_append_json_str(&b, message, strlen(message));
    sand_bytes_appends(&b, ",\"attempt\":1}");
    return sand_bytes_steal(&b, len);
}

/* ---- global bus ------------------------------------------------------------------------ */

static void produce(sand_engine_t *eng, const char *app, const char *grain, const char *key,
                    const sand_bytes_t *value)
{
    char topic[160];
    sand_err err;
    snprintf(topic, sizeof(topic), SAND_TOPIC_FMT, app, grain);
    if (sand_gbus_produce(eng->o.gbus, topic, key, strlen(key), value->data, value->len, &err) < 0)
        SAND_WARN(COMP, "global bus: %s", err.msg);
    else
        eng->stats.backups++;
}

/* A `processing` backup (hierarchical) or an `event` to deliver (global mode) of one event. */
static void produce_event(sand_engine_t *eng, const char *flag, const char *app, const char *grain,
                          const char *id, const char *exec, const char *wf, const char *step,
                          int attempt, int64_t deadline, const char *pred, const char *event,
                          size_t event_len)
{
    sand_bytes_t v;
    sand_bytes_init(&v, SIZE_MAX / 2);
    sand_bytes_appendf(&v,
                       "{\"flag\":\"%s\",\"app\":\"%s\",\"grain\":\"%s\",\"i\":\"%s\",\"x\":\"%s\","
                       "\"w\":\"%s\",\"s\":\"%s\",\"a\":%d,\"q\":%" PRId64 ",\"d\":%" PRId64,
                       flag, app, grain, id, exec, wf, step, attempt, sand_now_us(), deadline);
    if (pred)
        sand_bytes_appendf(&v, ",\"p\":\"%s\"", pred);
    sand_bytes_appends(&v, ",\"e\":");
    sand_bytes_append(&v, event, event_len);
    if (sand_bytes_appends(&v, "}") == 0)
        produce(eng, app, grain, id, &v);
    sand_bytes_release(&v);
}

static void produce_finished(sand_engine_t *eng, const char *app, const char *grain,
                             const char *ids, size_t ids_len)
{
    const char *p = ids, *end = ids + ids_len;
    while (p < end) {
        const char *plus = memchr(p, '+', (size_t)(end - p));
        size_t n = plus ? (size_t)(plus - p) : (size_t)(end - p);
        char id[40];
        if (n > 0 && n < sizeof(id)) {
            memcpy(id, p, n);
            id[n] = '\0';
            sand_bytes_t v;
            sand_bytes_init(&v, 1024);
            sand_bytes_appendf(
                &v, "{\"flag\":\"finished\",\"app\":\"%s\",\"grain\":\"%s\",\"i\":\"%s\"}", app,
                grain, id);
            produce(eng, app, grain, id, &v);
            sand_bytes_release(&v);
        }
        p += n + 1;
    }
}

/* ---- local bus ------------------------------------------------------------------------- */

struct deliver_ctx {
    sand_engine_t *eng;
    char id[33];
};

static void deliver_cb(sand_lbus_t *lbus, int status, const redisReply *reply, const char *errstr,
                       void *ud)
{
    struct deliver_ctx *c = ud;
    sand_engine_t *eng = c->eng;
    const char *why =
        status < 0 ? errstr : (reply && reply->type == REDIS_REPLY_ERROR ? reply->str : NULL);
    if (why && !eng->closing) {
        sand_exec_t *x = sand_map_get(&eng->execs, c->id);
        SAND_WARN(COMP, "execution %s: enqueue failed: %s", c->id, why);
        if (x && x->status == SAND_EXEC_RUNNING) {
            size_t len;
            char msg[300];
            snprintf(msg, sizeof(msg), "local bus refused the event: %s", why);
            char *e = error_object("", x->grain, "BusError", msg, &len);
            finalize(eng, x, SAND_EXEC_FAILED, e, len);
        }
    }
    free(c);
}

/* XADDs one event to the queue of step's grain, or runs the join script when step is a join. */
static int enqueue(sand_engine_t *eng, const char *app, const sand_step_t *step, const char *grain,
                   const char *event_id, const char *exec, const char *wf, const char *step_name,
                   int attempt, int64_t deadline, const char *pred, const char *event,
                   size_t event_len)
{
    char queue[200], q[24], d[24], a[12];
    snprintf(queue, sizeof(queue), SAND_KEY_QUEUE_FMT, app, grain);
    snprintf(q, sizeof(q), "%" PRId64, sand_now_us());
    snprintf(d, sizeof(d), "%" PRId64, deadline);
    snprintf(a, sizeof(a), "%d", attempt);
    struct deliver_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return SAND_ENOMEM;
    c->eng = eng;
    sand_strlcpy(c->id, exec, sizeof(c->id));
    int rc;
    if (step && step->n_preds > 1 && pred) {
        char jkey[256], npreds[12], ttl[24];
        snprintf(jkey, sizeof(jkey), SAND_KEY_JOIN_FMT, app, exec, step_name);
        snprintf(npreds, sizeof(npreds), "%zu", step->n_preds);
        snprintf(ttl, sizeof(ttl), "%" PRId64, eng->o.default_timeout_ms * 2);
        const char *argv[] = {"EVAL", SAND_LUA_JOIN, "2",  jkey, queue,     pred, event_id, event,
                              npreds, ttl,           exec, wf,   step_name, q,    d};
        size_t lens[SAND_ARRAY_LEN(argv)];
        for (size_t i = 0; i < SAND_ARRAY_LEN(argv); i++)
            lens[i] = strlen(argv[i]);
        lens[7] = event_len;
        rc = sand_lbus_command_argv(eng->o.lbus, deliver_cb, c, (int)SAND_ARRAY_LEN(argv), argv,
                                    lens);
    } else {
        const char *argv[] = {"XADD",   queue,         "*",       SAND_F_ID,
                              event_id, SAND_F_EXEC,   exec,      SAND_F_WORKFLOW,
                              wf,       SAND_F_STEP,   step_name, SAND_F_ATTEMPT,
                              a,        SAND_F_QUEUED, q,         SAND_F_DEADLINE,
                              d,        SAND_F_EVENT,  event};
        size_t lens[SAND_ARRAY_LEN(argv)];
        for (size_t i = 0; i < SAND_ARRAY_LEN(argv); i++)
            lens[i] = strlen(argv[i]);
        lens[SAND_ARRAY_LEN(argv) - 1] = event_len;
        rc = sand_lbus_command_argv(eng->o.lbus, deliver_cb, c, (int)SAND_ARRAY_LEN(argv), argv,
                                    lens);
    }
    if (rc < 0)
        free(c);
    else if (eng->o.enqueued)
        eng->o.enqueued(app, grain, eng->o.enqueued_ud);
    return rc;
}

/* ---- start ----------------------------------------------------------------------------- */

int sand_engine_start(sand_engine_t *eng, const sand_app_t *app, const sand_workflow_t *wf,
                      const sand_grain_t *grain, const char *input, size_t len,
                      sand_exec_done_cb done, void *ud, char *id_out, sand_err *err)
{
    if (eng->closing)
        return sand_err_set(err, SAND_ECANCELED, "shutting down");
    sand_exec_t *x = calloc(1, sizeof(*x));
    if (!x || !(x->input = dup_bytes(input, len))) {
        free(x);
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    }
    x->input_len = len;
    new_exec_id(eng, x->id);
    sand_strlcpy(x->app, app->name, sizeof(x->app));
    const sand_step_t *start = wf ? wf->start : NULL;
    if (wf)
        sand_strlcpy(x->workflow, wf->name, sizeof(x->workflow));
    const sand_grain_t *g = start ? start->grain : grain;
    sand_strlcpy(x->grain, g->name, sizeof(x->grain));
    int64_t timeout = wf && wf->timeout_ms ? wf->timeout_ms : eng->o.default_timeout_ms;
    x->started_us = sand_now_us();
    x->deadline_us = x->started_us + timeout * 1000;
    x->status = SAND_EXEC_RUNNING;
    sand_vec_init(&x->steps);
    x->done = done;
    x->done_ud = ud;
    if (sand_map_set(&eng->execs, x->id, x, NULL) < 0) {
        exec_free(x);
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    }
    sand_list_insert_tail(&eng->running, &x->link);
    eng->stats.started++;
    eng->stats.running++;
    persist(eng, x);

    char event_id[17];
    new_event_id(eng, event_id);
    const char *step_name = start ? start->name : g->name;
    const char *wf_name = wf ? wf->name : "";
    if (eng->o.global_mode) {
        produce_event(eng, "event", app->name, g->name, event_id, x->id, wf_name, step_name, 1,
                      x->deadline_us, NULL, input, len);
        eng->stats.forwarded++;
    } else {
        /* steps 0-2: straight to the first grain's local queue; the backup goes to its global
         * queue asynchronously and never delays the entry */
        int rc = enqueue(eng, app->name, NULL, g->name, event_id, x->id, wf_name, step_name, 1,
                         x->deadline_us, NULL, input, len);
        if (rc < 0) {
            sand_err_set(err, rc, "local bus: cannot enqueue");
            x->done = NULL;
            size_t elen;
            char *e = error_object(step_name, g->name, "BusError", "local bus unavailable", &elen);
            finalize(eng, x, SAND_EXEC_FAILED, e, elen);
            return rc;
        }
        produce_event(eng, "processing", app->name, g->name, event_id, x->id, wf_name, step_name, 1,
                      x->deadline_us, NULL, input, len);
    }
    sand_strlcpy(id_out, x->id, 33);
    return 0;
}

void sand_engine_forget_waiter(sand_engine_t *eng, const char *id)
{
    sand_exec_t *x = sand_map_get(&eng->execs, id);
    if (x)
        x->done = NULL;
}

/* ---- the host agent's queue (LQHA) ------------------------------------------------------ */

static void ack_agent_entry(sand_engine_t *eng, const sand_lbus_entry_t *e)
{
    const char *argv[4];
    size_t lens[4];
    argv[0] = "XACK";
    argv[1] = e->key;
    lens[1] = e->keylen;
    argv[2] = SAND_GROUP_AGENT;
    argv[3] = e->id;
    lens[0] = 4;
    lens[2] = strlen(SAND_GROUP_AGENT);
    lens[3] = e->idlen;
    sand_lbus_command_argv(eng->o.lbus, NULL, NULL, 4, argv, lens);
    const char *dargv[] = {"XDEL", e->key, e->id};
    size_t dlens[] = {4, e->keylen, e->idlen};
    sand_lbus_command_argv(eng->o.lbus, NULL, NULL, 3, dargv, dlens);
}

/* The app name of an LQHA key "sand:{app}:ha". */
static bool app_of_key(const sand_lbus_entry_t *e, char *app, size_t size)
{
    if (e->keylen < 9 || memcmp(e->key, "sand:", 5) != 0)
        return false;
    size_t n = e->keylen - 5 - 3;
    if (n == 0 || n >= size || memcmp(e->key + e->keylen - 3, ":ha", 3) != 0)
        return false;
    memcpy(app, e->key + 5, n);
    app[n] = '\0';
    return true;
}

/* Backs up (or forwards) the events an instance produced (its LQHA entry's "n"). */
static void handle_produced(sand_engine_t *eng, const char *app, const sand_exec_t *x,
                            const char *pred_step, const char *n, size_t nlen)
{
    json_error_t jerr;
    json_t *arr = json_loadb(n, nlen, JSON_DECODE_ANY, &jerr);
    if (!json_is_array(arr)) {
        SAND_WARN(COMP, "execution %s: malformed produced events: %s", x->id, jerr.text);
        json_decref(arr);
        return;
    }
    size_t i;
    json_t *ev;
    json_array_foreach(arr, i, ev)
    {
        const char *id = json_string_value(json_object_get(ev, "i"));
        const char *step = json_string_value(json_object_get(ev, "s"));
        const char *grain = json_string_value(json_object_get(ev, "g"));
        json_int_t attempt = json_integer_value(json_object_get(ev, "a"));
        json_t *payload = json_object_get(ev, "e");
        if (!id || !step || !grain || !payload)
            continue;
        char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            continue;
        if (!eng->o.global_mode && eng->o.enqueued)
            eng->o.enqueued(app, grain, eng->o.enqueued_ud); /* the worker queued it itself */
        if (eng->o.global_mode) {
            produce_event(eng, "event", app, grain, id, x->id, x->workflow, step,
                          attempt ? (int)attempt : 1, x->deadline_us, pred_step, text,
                          strlen(text));
            eng->stats.forwarded++;
        } else {
            produce_event(eng, "processing", app, grain, id, x->id, x->workflow, step,
                          attempt ? (int)attempt : 1, x->deadline_us, pred_step, text,
                          strlen(text));
        }
        free(text);
    }
    json_decref(arr);
}

void sand_engine_on_agent_entry(sand_engine_t *eng, const sand_lbus_entry_t *e)
{
    char app[SAND_NAME_MAX], id[33], grain[SAND_NAME_MAX], step[SAND_NAME_MAX];
    eng->stats.agent_entries++;
    if (!app_of_key(e, app, sizeof(app))) {
        ack_agent_entry(eng, e);
        return;
    }
    field_str(e, SAND_F_EXEC, id, sizeof(id));
    field_str(e, SAND_F_GRAIN, grain, sizeof(grain));
    field_str(e, SAND_F_STEP, step, sizeof(step));
    sand_exec_t *x = sand_map_get(&eng->execs, id);

    size_t ids_len;
    const char *ids = sand_lbus_entry_get(e, SAND_F_ID, &ids_len);
    /* 10b: the consumed event(s) are done; flag them on the global bus */
    if (ids && !eng->o.global_mode)
        produce_finished(eng, app, grain, ids, ids_len);

    if (!x || x->status != SAND_EXEC_RUNNING) {
        /* a duplicate (at-least-once delivery) or an execution that already ended: the first
         * final state stands */
        ack_agent_entry(eng, e);
        return;
    }
    step_rec_t *s = calloc(1, sizeof(*s));
    if (s) {
        sand_strlcpy(s->step, step, sizeof(s->step));
        sand_strlcpy(s->grain, grain, sizeof(s->grain));
        field_str(e, SAND_F_STATUS, s->status, sizeof(s->status));
        s->attempt = (int)field_int(e, SAND_F_ATTEMPT);
        s->queued_us = field_int(e, SAND_F_QUEUED);
        s->started_us = field_int(e, SAND_F_STARTED);
        s->finished_us = field_int(e, SAND_F_FINISHED);
        s->pid = field_int(e, SAND_F_PID);
        if (sand_vec_push(&x->steps, s) < 0)
            free(s);
        else if (eng->o.observer.step_done)
            eng->o.observer.step_done(app, x->workflow, s->step, s->status, s->queued_us,
                                      s->started_us, s->finished_us, eng->o.observer.ud);
    }
    size_t nlen;
    const char *n = sand_lbus_entry_get(e, SAND_F_NEXT, &nlen);
    if (n && nlen > 2)
        handle_produced(eng, app, x, step, n, nlen);

    size_t endlen;
    const char *end = sand_lbus_entry_get(e, SAND_F_END, &endlen);
    if (end && endlen == 2 && memcmp(end, "ok", 2) == 0) {
        size_t olen;
        const char *o = sand_lbus_entry_get(e, SAND_F_OUTPUT, &olen);
        char *out = o ? dup_bytes(o, olen) : dup_bytes("null", 4);
        finalize(eng, x, SAND_EXEC_SUCCEEDED, out, o ? olen : 4);
    } else if (end && endlen == 4 && memcmp(end, "fail", 4) == 0) {
        size_t rlen;
        const char *r = sand_lbus_entry_get(e, SAND_F_ERROR, &rlen);
        char *err;
        if (r) {
            err = dup_bytes(r, rlen);
        } else {
            err = error_object(step, grain, "Error", "the step failed", &rlen);
        }
        finalize(eng, x, SAND_EXEC_FAILED, err, rlen);
    }
    ack_agent_entry(eng, e);
}

/* ---- global bus records ------------------------------------------------------------------ */

/* Delivers the event of a global-bus record (parsed) to its local queue, or to the join script
 * when its step is a join. */
static void deliver_record(sand_engine_t *eng, json_t *v)
{
    const char *app = json_string_value(json_object_get(v, "app"));
    const char *grain = json_string_value(json_object_get(v, "grain"));
    const char *id = json_string_value(json_object_get(v, "i"));
    const char *exec = json_string_value(json_object_get(v, "x"));
    const char *wf = json_string_value(json_object_get(v, "w"));
    const char *step = json_string_value(json_object_get(v, "s"));
    const char *pred = json_string_value(json_object_get(v, "p"));
    int attempt = (int)json_integer_value(json_object_get(v, "a"));
    int64_t deadline = json_integer_value(json_object_get(v, "d"));
    json_t *payload = json_object_get(v, "e");
    const sand_app_t *model = app ? eng->o.app_lookup(app, eng->o.app_ud) : NULL;
    char *text = payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (model && grain && id && exec && wf && step && text) {
        const sand_workflow_t *w = wf[0] ? sand_app_workflow(model, wf) : NULL;
        const sand_step_t *st = w ? sand_workflow_step(w, step) : NULL;
        enqueue(eng, app, st, grain, id, exec, wf, step, attempt ? attempt : 1, deadline, pred,
                text, strlen(text));
    }
    free(text);
}

void sand_engine_on_record(sand_engine_t *eng, const sand_gbus_record_t *rec)
{
    if (!eng->o.global_mode || rec->vallen < 16 ||
        memcmp(rec->value, "{\"flag\":\"event\"", 15) != 0)
        return; /* backups and flags are read back only for recovery */
    json_error_t jerr;
    json_t *v = json_loadb(rec->value, rec->vallen, 0, &jerr);
    if (!v)
        return;
    deliver_record(eng, v);
    json_decref(v);
}

/* ---- recovery of a lost local bus --------------------------------------------------------- */

static void decref_cb(void *p)
{
    json_decref(p);
}

void sand_engine_replay_add(sand_engine_t *eng, const sand_gbus_record_t *rec)
{
    json_error_t jerr;
    json_t *v = json_loadb(rec->value, rec->vallen, 0, &jerr);
    const char *flag = json_string_value(json_object_get(v, "flag"));
    const char *id = json_string_value(json_object_get(v, "i"));
    if (!flag || !id) {
        json_decref(v);
        return;
    }
    void *old = NULL;
    if (strcmp(flag, "processing") == 0) {
        sand_map_set(&eng->replay, id, v, &old);
        json_decref(old);
        return;
    }
    if (strcmp(flag, "finished") == 0)
        json_decref(sand_map_del(&eng->replay, id));
    json_decref(v);
}

size_t sand_engine_replay_finish(sand_engine_t *eng)
{
    size_t n = 0, it = 0;
    void *val;
    while (sand_map_next(&eng->replay, &it, NULL, &val)) {
        json_t *v = val;
        const char *exec = json_string_value(json_object_get(v, "x"));
        const char *app = json_string_value(json_object_get(v, "app"));
        if (!exec || !app || strlen(exec) >= 33)
            continue;
        sand_exec_t *x = sand_map_get(&eng->execs, exec);
        if (x && x->status != SAND_EXEC_RUNNING)
            continue; /* already final: its pending events are duplicates */
        if (!x && (x = calloc(1, sizeof(*x)))) {
            /* the record was lost with the local bus: track the execution again from what the
             * backup says, so that its completion is recorded */
            sand_strlcpy(x->id, exec, sizeof(x->id));
            sand_strlcpy(x->app, app, sizeof(x->app));
            sand_strlcpy(x->workflow, json_string_value(json_object_get(v, "w")) ?: "",
                         sizeof(x->workflow));
            sand_strlcpy(x->grain, json_string_value(json_object_get(v, "grain")) ?: "",
                         sizeof(x->grain));
            x->started_us = json_integer_value(json_object_get(v, "q"));
            x->deadline_us = json_integer_value(json_object_get(v, "d"));
            x->status = SAND_EXEC_RUNNING;
            sand_vec_init(&x->steps);
            if (sand_map_set(&eng->execs, x->id, x, NULL) < 0) {
                exec_free(x);
                continue;
            }
            sand_list_insert_tail(&eng->running, &x->link);
            eng->stats.running++;
            persist(eng, x);
        }
        deliver_record(eng, v);
        n++;
    }
    sand_map_release(&eng->replay, decref_cb);
    sand_map_init(&eng->replay);
    return n;
}

/* ---- deadlines --------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    sand_engine_t *eng = t->data;
    int64_t now = sand_now_us();
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &eng->running)
    {
        sand_exec_t *x = SAND_CONTAINER_OF(pos, sand_exec_t, link);
        if (x->deadline_us > now)
            continue;
        char msg[160];
        snprintf(msg, sizeof(msg), "execution did not finish within %" PRId64 " ms",
                 (x->deadline_us - x->started_us) / 1000);
        size_t len;
        const step_rec_t *last = x->steps.len ? x->steps.items[x->steps.len - 1] : NULL;
        char *e = error_object(last ? last->step : "", last ? last->grain : x->grain, "Timeout",
                               msg, &len);
        finalize(eng, x, SAND_EXEC_TIMED_OUT, e, len);
    }
}

/* ---- lookup ------------------------------------------------------------------------------ */

struct lookup_ctx {
    sand_exec_lookup_cb cb;
    void *ud;
};

static void lookup_reply(sand_lbus_t *lbus, int status, const redisReply *reply, const char *errstr,
                         void *ud)
{
    struct lookup_ctx *c = ud;
    if (status == 0 && reply && reply->type == REDIS_REPLY_STRING)
        c->cb(0, reply->str, reply->len, c->ud);
    else
        c->cb(SAND_ENOTFOUND, NULL, 0, c->ud);
    free(c);
}

void sand_engine_lookup(sand_engine_t *eng, const char *id, sand_exec_lookup_cb cb, void *ud)
{
    sand_exec_t *x = sand_map_get(&eng->execs, id);
    if (x) {
        sand_bytes_t b;
        sand_bytes_init(&b, SIZE_MAX / 2);
        if (sand_exec_record_json(x, &b) == 0)
            cb(0, b.data, b.len, ud);
        else
            cb(SAND_ENOMEM, NULL, 0, ud);
        sand_bytes_release(&b);
        return;
    }
    struct lookup_ctx *c = malloc(sizeof(*c));
    if (!c) {
        cb(SAND_ENOMEM, NULL, 0, ud);
        return;
    }
    c->cb = cb;
    c->ud = ud;
    char key[64];
    snprintf(key, sizeof(key), SAND_KEY_EXEC_FMT, id);
    if (sand_lbus_command(eng->o.lbus, lookup_reply, c, "GET %s", key) < 0) {
        free(c);
        cb(SAND_ENOTFOUND, NULL, 0, ud);
    }
}

/* ---- recovery ---------------------------------------------------------------------------- */

/* Rebuilds a running execution from its persisted record. */
static void restore(sand_engine_t *eng, const char *json, size_t len)
{
    json_error_t jerr;
    json_t *r = json_loadb(json, len, 0, &jerr);
    const char *id = json_string_value(json_object_get(r, "execution_id"));
    const char *status = json_string_value(json_object_get(r, "status"));
    if (!id || !status || strcmp(status, "running") != 0 || sand_map_get(&eng->execs, id)) {
        json_decref(r);
        return;
    }
    sand_exec_t *x = calloc(1, sizeof(*x));
    char *input = json_dumps(json_object_get(r, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
    if (!x || !input) {
        free(x);
        free(input);
        json_decref(r);
        return;
    }
    sand_strlcpy(x->id, id, sizeof(x->id));
    sand_strlcpy(x->app, json_string_value(json_object_get(r, "app")) ?: "", sizeof(x->app));
    sand_strlcpy(x->workflow, json_string_value(json_object_get(r, "workflow")) ?: "",
                 sizeof(x->workflow));
    sand_strlcpy(x->grain, json_string_value(json_object_get(r, "grain")) ?: "", sizeof(x->grain));
    x->input = input;
    x->input_len = strlen(input);
    x->started_us = json_integer_value(json_object_get(r, "started_us"));
    x->deadline_us = json_integer_value(json_object_get(r, "deadline_us"));
    x->status = SAND_EXEC_RUNNING;
    sand_vec_init(&x->steps);
    if (sand_map_set(&eng->execs, x->id, x, NULL) < 0) {
        exec_free(x);
    } else {
        sand_list_insert_tail(&eng->running, &x->link);
        eng->stats.running++;
    }
    json_decref(r);
}

struct recover_ctx {
    sand_engine_t *eng;
    void (*done)(int, void *);
    void *ud;
    size_t pending;
    int status;
};

static void recover_step(struct recover_ctx *c)
{
    if (--c->pending == 0) {
        SAND_INFO(COMP, "recovered %" PRIu64 " running execution(s)", c->eng->stats.running);
        c->done(c->status, c->ud);
        free(c);
    }
}

static void recover_get_cb(sand_lbus_t *lbus, int status, const redisReply *reply,
                           const char *errstr, void *ud)
{
    struct recover_ctx *c = ud;
    if (status == 0 && reply && reply->type == REDIS_REPLY_STRING)
        restore(c->eng, reply->str, reply->len);
    recover_step(c);
}

static void recover_members_cb(sand_lbus_t *lbus, int status, const redisReply *reply,
                               const char *errstr, void *ud)
{
    struct recover_ctx *c = ud;
    if (status < 0 || !reply || reply->type != REDIS_REPLY_ARRAY) {
        c->status = SAND_EBUS;
        recover_step(c);
        return;
    }
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *m = reply->element[i];
        if (m->type != REDIS_REPLY_STRING || m->len > 32)
            continue;
        char key[64];
        snprintf(key, sizeof(key), SAND_KEY_EXEC_FMT, m->str);
        c->pending++;
        if (sand_lbus_command(lbus, recover_get_cb, c, "GET %s", key) < 0)
            c->pending--;
    }
    recover_step(c);
}

int sand_engine_recover(sand_engine_t *eng, void (*done)(int status, void *ud), void *ud,
                        sand_err *err)
{
    struct recover_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    c->eng = eng;
    c->done = done;
    c->ud = ud;
    c->pending = 1;
    int rc = sand_lbus_command(eng->o.lbus, recover_members_cb, c, "SMEMBERS " KEY_RUNNING);
    if (rc < 0) {
        free(c);
        return sand_err_set(err, rc, "local bus: cannot read running executions");
    }
    return 0;
}

void sand_engine_fail_app(sand_engine_t *eng, const char *app, const char *why)
{
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &eng->running)
    {
        sand_exec_t *x = SAND_CONTAINER_OF(pos, sand_exec_t, link);
        if (strcmp(x->app, app) != 0)
            continue;
        size_t len;
        char *e = error_object("", x->grain, "AppDeleted", why, &len);
        finalize(eng, x, SAND_EXEC_FAILED, e, len);
    }
}

/* ---- lifecycle --------------------------------------------------------------------------- */

int sand_engine_new(const sand_engine_opts_t *opts, sand_engine_t **out, sand_err *err)
{
    sand_engine_t *eng = calloc(1, sizeof(*eng));
    if (!eng)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    eng->o = *opts;
    sand_map_init(&eng->execs);
    sand_map_init(&eng->replay);
    sand_list_init(&eng->running);
    sand_list_init(&eng->finished);
    if (getrandom(&eng->rng, sizeof(eng->rng), 0) != sizeof(eng->rng))
        eng->rng = (uint64_t)sand_now_us();
    uv_timer_init(opts->loop, &eng->tick);
    eng->tick.data = eng;
    uv_timer_start(&eng->tick, on_tick, TICK_MS, TICK_MS);
    *out = eng;
    return 0;
}

static void free_exec_cb(void *p)
{
    exec_free(p);
}

static void on_tick_closed(uv_handle_t *h)
{
    sand_engine_t *eng = h->data;
    sand_map_release(&eng->execs, free_exec_cb);
    sand_map_release(&eng->replay, decref_cb);
    free(eng);
}

void sand_engine_close(sand_engine_t *eng)
{
    if (!eng)
        return;
    eng->closing = true;
    size_t it = 0;
    void *v;
    while (sand_map_next(&eng->execs, &it, NULL, &v)) {
        sand_exec_t *x = v;
        sand_exec_done_cb cb = x->done;
        x->done = NULL;
        if (cb)
            cb(eng, NULL, SAND_ECANCELED, x->done_ud);
    }
    uv_timer_stop(&eng->tick);
    uv_close((uv_handle_t *)&eng->tick, on_tick_closed);
}

void sand_engine_stats(const sand_engine_t *eng, sand_engine_stats_t *out)
{
    *out = eng->stats;
}
