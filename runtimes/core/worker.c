/*
 * The grain worker's loop (see include/sand/worker.h and docs/internals/protocol.md). One
 * process, one thread, one poll() loop over: a Redis connection that blocks in XREADGROUP on
 * the grain's queue (only while there are free instance slots, asking for as many events as
 * there are free slots), the outcome/stdout/stderr pipes of every live grain instance, a
 * self-pipe for SIGCHLD/SIGTERM, and timers (instance timeouts, memory polling, retry backoff).
 * A second Redis connection carries the writes (routing MULTI/EXEC, log lines), pipelined and
 * flushed once per loop turn. fork() stays off the worker's loop: a zygote process, forked from
 * the worker once the grain's code is loaded, forks spare instances ahead of time and hands them
 * to the worker (pid, pidfd and pipe ends over a socket); a spare waits on its event pipe, the
 * worker writes the event to it and asks for the next spare. Instances allocate from the
 * instance heap (heap.c) rather than from the worker's shared pages. A runtime that cannot fork
 * (Java, rt->threads) runs each event on an instance thread instead, taken from a pool of at most
 * `concurrency` threads; the thread reports over a pipe exactly as a forked instance does, and
 * closes its end of that pipe when it is done with the event, so the loop sees the same EOF as for
 * a process.
 */
#define _GNU_SOURCE
#include "sand/worker.h"

#include "worker_internal.h"
#include "sand/protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sched.h>
#include <unistd.h>

#define COMP          "worker"
#define SPARE_POOL    4 /* spares kept ready in zygote mode */
#define READ_BLOCK_MS 1000
#define MEM_POLL_MS   20
#define KEY_MAX       512

enum { KILL_NONE = 0, KILL_TIMEOUT = 1, KILL_MEMORY = 2, KILL_OUTPUT = 3 };

/* One event taken from the grain's queue (a stream entry). */
typedef struct entry {
    char sid[48];
    char *id, *exec, *wf, *step, *event;
    size_t event_len;
    int attempt;
    int64_t queued_us, deadline_us;
} entry_t;

/* A failed event waiting for its retry backoff; it stays pending in the stream meanwhile. */
typedef struct retry {
    sand_list_t link;
    entry_t *ent;
    char *error;
    int64_t started_us, finished_us;
    pid_t pid;
    int64_t due_mono;
} retry_t;

struct tslot;

/* A grain instance: the spare (no event yet) or a running one. */
typedef struct inst {
    sand_list_t link;
    pid_t pid;
    int pidfd; /* forked by the zygote: its pidfd, or -1 */
    int fd_ev, fd_res, fd_std[2];
    bool zyg; /* forked by the zygote, which reaps it and reports its exit */
    bool spare, reaped;
    bool watched; /* its pipes are in the loop's epoll set */
    bool routed;  /* the outcome is routed; ent is then a stub for log tagging */
    int wstatus;
    entry_t *ent;
    sand_bytes_t res;
    sand_bytes_t line[2];
    bool line_skip[2];
    size_t logged;
    bool truncated;
    int64_t handoff_us, kill_at_mono;
    int killed;
    sand_outcome_t oc;
    struct tslot *slot; /* threads mode: the thread running the event, else NULL */
    void *job;          /* threads mode: the job handed to slot (compared, never followed) */
    int64_t grace_mono; /* threads mode: when a killed instance's thread is abandoned */
} inst_t;

typedef struct worker {
    const sand_worker_runtime_t *rt;
    void *rt_state;
    char *load_error, *load_detail;
    sand_app_t *app;
    const sand_grain_t *grain;
    const char *app_name;
    char *code_path;
    char qkey[KEY_MAX], hakey[KEY_MAX], logkey[KEY_MAX];
    bool reuse, global_bus, threads;
    int64_t log_max;
    size_t value_max;
    const char *redis_url, *redis_user, *redis_pass;
    redisContext *rd, *wr;
    bool rd_busy, pel_mode;
    char cursor[48];
    int wr_pending;
    sand_list_t insts;
    int running;
    inst_t *spares[SPARE_POOL]; /* ready spare instances, oldest first */
    int nspares;
    int zfd;            /* fork mode: the socket to the zygote, or -1 (the worker forks) */
    pid_t zpid;         /* the zygote */
    int zasked;         /* spares asked of the zygote and not received yet */
    bool zwatched;      /* zfd is in the loop's epoll set (see zygote_needed()) */
    sand_vec_t waiting; /* entries read while no spare was ready (zygote mode) */
    sand_list_t retries;
    sand_list_t idle; /* threads mode: idle instance threads (tslot_t) */
    int sig_rfd;
    bool stop, fatal;
    bool draining;           /* SIGTERM: no new events; running instances finish (bounded) */
    int64_t dispatched_mono; /* when the last event was handed to a forked instance */
    bool once;               /* SAND_ONCE: serve one event, then exit (cold-start baseline) */
    int64_t once_idle_until; /* monotonic: a once-worker that got no event by then exits */
    char consumer[64];       /* consumer name in the queue's group */
    int64_t drain_until;     /* monotonic us */
    int64_t next_mem_poll;
    sand_dl_t dl;
} worker_t;

#define SPARE_DELAY_US 1000             /* longest deferral of the next spare fork while busy */
#define ONCE_IDLE_US   (30 * 1000000LL) /* a once-worker that got no event exits after this */
#define DRAIN_US       (5 * 1000000LL)  /* longest wait for running instances at SIGTERM */

/* The write end of the self-pipe; the only state a signal handler can reach. */
static int sig_wfd = -1;
/* The loop's epoll instance (the worker's; -1 in its children). Tags of its fixed members; an
 * instance's pipes are tagged with the inst_t's address plus the pipe (0 outcome, 1 stdout,
 * 2 stderr). */
static int ep_fd = -1;
enum { EP_SIGNAL = 1, EP_READ = 2, EP_ZYGOTE = 3 };
static volatile sig_atomic_t sig_stop;

static void on_signal(int sig)
{
    int saved = errno;
    if (sig == SIGTERM || sig == SIGINT)
        sig_stop = 1;
    char c = (char)sig;
    if (sig_wfd >= 0 && write(sig_wfd, &c, 1) < 0) {
        /* a full pipe already holds a wake-up */
    }
    errno = saved;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* ---- entries ------------------------------------------------------------------------- */

static void entry_free(entry_t *e)
{
    if (!e)
        return;
    free(e->id);
    free(e->exec);
    free(e->wf);
    free(e->step);
    free(e->event);
    free(e);
}

/* Builds an entry from a stream entry reply [sid, [f, v, ...]]. Returns NULL for a deleted
 * entry (nil fields) or on allocation failure; *sid receives the id either way. */
static entry_t *entry_parse(worker_t *w, const redisReply *r, char *sid, size_t sidlen)
{
    sid[0] = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return NULL;
    sand_strlcpy(sid, r->element[0]->str, sidlen);
    const redisReply *f = r->element[1];
    if (f->type != REDIS_REPLY_ARRAY)
        return NULL;
    entry_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    sand_strlcpy(e->sid, sid, sizeof(e->sid));
    e->attempt = 1;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        char **slot = NULL;
        if (strcmp(k->str, SAND_F_ID) == 0)
            slot = &e->id;
        else if (strcmp(k->str, SAND_F_EXEC) == 0)
            slot = &e->exec;
        else if (strcmp(k->str, SAND_F_WORKFLOW) == 0)
            slot = &e->wf;
        else if (strcmp(k->str, SAND_F_STEP) == 0)
            slot = &e->step;
        else if (strcmp(k->str, SAND_F_EVENT) == 0) {
            free(e->event);
            e->event = sand_strndup(v->str, v->len);
            e->event_len = v->len;
        } else {
            int64_t n;
            sand_err err;
            if (sand_parse_int(v->str, 0, INT64_MAX, &n, &err) < 0)
                continue;
            if (strcmp(k->str, SAND_F_ATTEMPT) == 0 && n >= 1 && n < INT_MAX)
                e->attempt = (int)n;
            else if (strcmp(k->str, SAND_F_QUEUED) == 0)
                e->queued_us = n;
            else if (strcmp(k->str, SAND_F_DEADLINE) == 0)
                e->deadline_us = n;
        }
        if (slot) {
            free(*slot);
            *slot = sand_strndup(v->str, v->len);
        }
    }
    if (!e->id)
        e->id = sand_strdup(sid);
    if (!e->exec)
        e->exec = sand_strdup("");
    if (!e->wf)
        e->wf = sand_strdup("");
    if (!e->step)
        e->step = sand_strdup(w->grain->name);
    if (!e->event) {
        e->event = sand_strdup("null");
        e->event_len = 4;
    }
    if (!e->id || !e->exec || !e->wf || !e->step || !e->event) {
        entry_free(e);
        return NULL;
    }
    return e;
}

/* ---- the write connection ------------------------------------------------------------ */

/* A command being built: arguments are borrowed until wr_cmd() copies them. */
typedef struct cmd {
    int argc;
    const char *argv[48];
    size_t lens[48];
    char nums[16][24];
    int nnums;
} cmd_t;

static void arg(cmd_t *c, const char *s, size_t n)
{
    if (c->argc < (int)SAND_ARRAY_LEN(c->argv)) {
        c->argv[c->argc] = s;
        c->lens[c->argc++] = n;
    }
}

static void args(cmd_t *c, const char *s)
{
    arg(c, s, strlen(s));
}

static void argi(cmd_t *c, int64_t v)
{
    if (c->nnums >= (int)SAND_ARRAY_LEN(c->nums))
        return;
    char *p = c->nums[c->nnums++];
    snprintf(p, 24, "%lld", (long long)v);
    args(c, p);
}

static void wr_cmd(worker_t *w, cmd_t *c)
{
    if (redisAppendCommandArgv(w->wr, c->argc, c->argv, c->lens) == REDIS_OK)
        w->wr_pending++;
    memset(c, 0, offsetof(cmd_t, nums));
    c->nnums = 0;
}

/* Reads the pending replies of the write connection: those already received (block false) or
 * all of them. Errors are logged (an EXEC that failed leaves its event pending, so it runs
 * again after a restart). A lost connection is fatal: the supervisor restarts the worker, which
 * re-reads its pending entries. */
static void wr_lost(worker_t *w)
{
    SAND_ERROR(COMP, "redis write connection lost: %s", w->wr->errstr);
    w->fatal = w->stop = true;
    w->wr_pending = 0;
}

static void wr_replies(worker_t *w, bool block)
{
    while (w->wr_pending > 0) {
        redisReply *r = NULL;
        if (redisReaderGetReply(w->wr->reader, (void **)&r) != REDIS_OK) {
            wr_lost(w);
            return;
        }
        if (!r) {
            int avail = 0;
            if (!block && (ioctl(w->wr->fd, FIONREAD, &avail) < 0 || avail <= 0))
                return;
            if (redisBufferRead(w->wr) != REDIS_OK) {
                wr_lost(w);
                return;
            }
            continue;
        }
        w->wr_pending--;
        if (r->type == REDIS_REPLY_ERROR)
            SAND_WARN(COMP, "redis: %s", r->str);
        else if (r->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i < r->elements; i++)
                if (r->element[i]->type == REDIS_REPLY_ERROR)
                    SAND_WARN(COMP, "redis (in transaction): %s", r->element[i]->str);
        freeReplyObject(r);
    }
}

/* Sends the commands queued on the write connection. Their replies are not waited for: they
 * are read as they come, on the loop's later turns (wr_replies()), so routing an outcome
 * costs the worker no round trip to Redis and no sleep. */
static void wr_flush(worker_t *w)
{
    int done = 0;
    while (!done && !w->stop)
        if (redisBufferWrite(w->wr, &done) != REDIS_OK) {
            wr_lost(w);
            return;
        }
    wr_replies(w, false);
}

static void log_line(worker_t *w, const entry_t *e, const char *kind, const char *line, size_t len)
{
    cmd_t c = {0};
    args(&c, "XADD");
    args(&c, w->logkey);
    args(&c, "MAXLEN");
    args(&c, "~");
    argi(&c, w->log_max);
    args(&c, "*");
    args(&c, SAND_F_LOG_TIME);
    argi(&c, sand_now_us());
    args(&c, SAND_F_LOG_KIND);
    args(&c, kind);
    args(&c, SAND_F_LOG_MSG);
    arg(&c, line, len);
    args(&c, SAND_F_GRAIN);
    args(&c, w->grain->name);
    args(&c, SAND_F_STEP);
    args(&c, e ? e->step : "");
    args(&c, SAND_F_EXEC);
    args(&c, e ? e->exec : "");
    wr_cmd(w, &c);
}

/* ---- routing ------------------------------------------------------------------------- */

static void new_id(char out[17])
{
    if (sand_random_hex(out, 8) < 0)
        snprintf(out, 17, "%016llx", (unsigned long long)sand_now_us());
}

/* Appends the command that delivers event json to step t (a join goes through the join
 * script), and its description to the n array, unless the bus is global (then the n entry is
 * the only copy and sandd delivers it). */
static void hop(worker_t *w, const entry_t *e, const sand_step_t *from, const sand_step_t *t,
                int attempt, const char *id, const char *json, size_t len, sand_bytes_t *n)
{
    char q[KEY_MAX];
    cmd_t c = {0};
    snprintf(q, sizeof(q), SAND_KEY_QUEUE_FMT, w->app_name, t->grain->name);
    if (!w->global_bus && t->n_preds > 1 && from) {
        char jk[KEY_MAX];
        int64_t ttl = 3600 * 1000;
        if (e->deadline_us > 0) {
            int64_t left = (e->deadline_us - sand_now_us()) / 1000 + 60000;
            ttl = left > 60000 ? left : 60000;
        }
        snprintf(jk, sizeof(jk), SAND_KEY_JOIN_FMT, w->app_name, e->exec, t->name);
        args(&c, "EVAL");
        args(&c, SAND_LUA_JOIN);
        args(&c, "2");
        args(&c, jk);
        args(&c, q);
        args(&c, from->name);
        args(&c, id);
        arg(&c, json, len);
        argi(&c, (int64_t)t->n_preds);
        argi(&c, ttl);
        args(&c, e->exec);
        args(&c, e->wf);
        args(&c, t->name);
        argi(&c, sand_now_us());
        argi(&c, e->deadline_us);
        wr_cmd(w, &c);
    } else if (!w->global_bus) {
        args(&c, "XADD");
        args(&c, q);
        args(&c, "*");
        args(&c, SAND_F_ID);
        args(&c, id);
        args(&c, SAND_F_EXEC);
        args(&c, e->exec);
        args(&c, SAND_F_WORKFLOW);
        args(&c, e->wf);
        args(&c, SAND_F_STEP);
        args(&c, t->name);
        args(&c, SAND_F_ATTEMPT);
        argi(&c, attempt);
        args(&c, SAND_F_QUEUED);
        argi(&c, sand_now_us());
        args(&c, SAND_F_DEADLINE);
        argi(&c, e->deadline_us);
        args(&c, SAND_F_EVENT);
        arg(&c, json, len);
        wr_cmd(w, &c);
    }
    sand_bytes_appends(n, n->len > 1 ? ",{\"i\":" : "{\"i\":");
    sand_bytes_append_json_str(n, id, strlen(id));
    sand_bytes_appends(n, ",\"s\":");
    sand_bytes_append_json_str(n, t->name, strlen(t->name));
    sand_bytes_appends(n, ",\"g\":");
    sand_bytes_append_json_str(n, t->grain->name, strlen(t->grain->name));
    sand_bytes_appendf(n, ",\"a\":%d,\"e\":", attempt);
    sand_bytes_append(n, json, len);
    sand_bytes_appends(n, "}");
}

/* What to write in the host agent entry. */
typedef struct report {
    const char *status;
    const char *error;
    const char *end;
    const char *output;
    size_t output_len;
    int64_t started_us, finished_us;
    pid_t pid;
} report_t;

/* Ends the transaction opened by the caller's MULTI: acknowledges and deletes the consumed
 * entry, writes the host agent entry, EXEC, and waits for the replies (one round trip). */
static void commit(worker_t *w, const entry_t *e, const report_t *rep, sand_bytes_t *n)
{
    cmd_t c = {0};
    args(&c, "XACK");
    args(&c, w->qkey);
    args(&c, SAND_GROUP_WORKERS);
    args(&c, e->sid);
    wr_cmd(w, &c);
    args(&c, "XDEL");
    args(&c, w->qkey);
    args(&c, e->sid);
    wr_cmd(w, &c);
    args(&c, "XADD");
    args(&c, w->hakey);
    args(&c, "*");
    args(&c, SAND_F_TYPE);
    args(&c, "step");
    args(&c, SAND_F_ID);
    args(&c, e->id);
    args(&c, SAND_F_EXEC);
    args(&c, e->exec);
    args(&c, SAND_F_WORKFLOW);
    args(&c, e->wf);
    args(&c, SAND_F_STEP);
    args(&c, e->step);
    args(&c, SAND_F_GRAIN);
    args(&c, w->grain->name);
    args(&c, SAND_F_ATTEMPT);
    argi(&c, e->attempt);
    args(&c, SAND_F_STATUS);
    args(&c, rep->status);
    args(&c, SAND_F_QUEUED);
    argi(&c, e->queued_us);
    args(&c, SAND_F_STARTED);
    argi(&c, rep->started_us);
    args(&c, SAND_F_FINISHED);
    argi(&c, rep->finished_us);
    args(&c, SAND_F_PID);
    argi(&c, rep->pid);
    if (rep->error) {
        args(&c, SAND_F_ERROR);
        args(&c, rep->error);
    }
    if (n && n->len > 2) {
        args(&c, SAND_F_NEXT);
        arg(&c, n->data, n->len);
    }
    if (rep->end) {
        args(&c, SAND_F_END);
        args(&c, rep->end);
    }
    if (rep->output) {
        args(&c, SAND_F_OUTPUT);
        arg(&c, rep->output, rep->output_len);
    }
    wr_cmd(w, &c);
    args(&c, "EXEC");
    wr_cmd(w, &c);
    wr_flush(w);
}

static void multi(worker_t *w)
{
    cmd_t c = {0};
    args(&c, "MULTI");
    wr_cmd(w, &c);
}

/* Builds the error object {"step","grain","type","message","traceback"?,"signal"?,"attempt"}
 * from the instance's ERROR frame (or type/message when the worker decided the failure).
 * Returns malloc'd JSON text or NULL. */
static char *error_object(worker_t *w, const entry_t *e, const char *frame, const char *type,
                          const char *message, int sig)
{
    json_t *o = NULL;
    if (frame && !type) {
        json_error_t jerr;
        o = json_loads(frame, 0, &jerr);
        if (o && !json_is_object(o)) {
            json_decref(o);
            o = NULL;
        }
    }
    if (!o) {
        o = json_object();
        json_object_set_new(o, "type", json_string(type ? type : "Error"));
        json_object_set_new(o, "message", json_string(message ? message : ""));
    }
    json_object_set_new(o, "step", json_string(e->step));
    json_object_set_new(o, "grain", json_string(w->grain->name));
    if (sig > 0)
        json_object_set_new(o, "signal", json_integer(sig));
    json_object_set_new(o, "attempt", json_integer(e->attempt));
    char *text = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    return text;
}

static void retry_commit(worker_t *w, retry_t *r)
{
    const entry_t *e = r->ent;
    sand_bytes_t n;
    sand_bytes_init(&n, SIZE_MAX);
    sand_bytes_appends(&n, "[");
    multi(w);
    const sand_workflow_t *wf = sand_app_workflow(w->app, e->wf);
    const sand_step_t *s = wf ? sand_workflow_step(wf, e->step) : NULL;
    if (s)
        hop(w, e, NULL, s, e->attempt + 1, e->id, e->event, e->event_len, &n);
    sand_bytes_appends(&n, "]");
    report_t rep = {.status = "retrying",
                    .error = r->error,
                    .started_us = r->started_us,
                    .finished_us = r->finished_us,
                    .pid = r->pid};
    commit(w, e, &rep, &n);
    sand_bytes_release(&n);
}

/* Routes the outcome of one instance (protocol.md, "What a worker does when an instance
 * ends"). fail_type/fail_msg/sig describe a failure the worker observed itself (timeout,
 * crash); otherwise the outcome's frames decide. Takes ownership of e. */
static void route(worker_t *w, entry_t *e, const sand_outcome_t *oc, pid_t pid,
                  const char *fail_type, const char *fail_msg, int sig, int64_t fallback_start)
{
    const sand_workflow_t *wf = e->wf[0] ? sand_app_workflow(w->app, e->wf) : NULL;
    const sand_step_t *step = wf ? sand_workflow_step(wf, e->step) : NULL;
    bool ok = !fail_type && !oc->error && oc->output;
    char msg[256];
    report_t rep = {.pid = pid,
                    .started_us = oc->started_us ? oc->started_us : fallback_start,
                    .finished_us = oc->finished_us ? oc->finished_us : sand_now_us()};
    sand_bytes_t n;
    sand_bytes_init(&n, SIZE_MAX);
    sand_bytes_appends(&n, "[");

    if (e->wf[0] && !step) {
        snprintf(msg, sizeof(msg), "unknown step '%s' of workflow '%s'", e->step, e->wf);
        fail_type = "Error";
        fail_msg = msg;
        ok = false;
    } else if (!ok && !fail_type && !oc->error) {
        fail_type = "Crashed";
        fail_msg = "instance exited without reporting a result";
    }

    if (ok) {
        multi(w);
        size_t nt = oc->next_steps.len ? oc->next_steps.len : (step ? step->n_next : 0);
        for (size_t i = 0; i < nt; i++) {
            const sand_step_t *t;
            const char *json = oc->output;
            size_t len = oc->output_len;
            char id[17];
            if (oc->next_steps.len) {
                t = sand_workflow_step(wf, oc->next_steps.items[i]);
                json = oc->next_events.items[i];
                len = strlen(json);
            } else {
                t = step->next[i];
            }
            if (!t)
                continue;
            new_id(id);
            hop(w, e, step, t, 1, id, json, len, &n);
        }
        sand_bytes_appends(&n, "]");
        rep.status = "succeeded";
        if (nt == 0) {
            rep.end = "ok";
            rep.output = oc->output;
            rep.output_len = oc->output_len;
        }
        commit(w, e, &rep, &n);
        entry_free(e);
        sand_bytes_release(&n);
        return;
    }

    char *err = error_object(w, e, oc->error, fail_type, fail_msg, sig);
    if (step && e->attempt < 1 + step->retry_max) {
        retry_t *r = calloc(1, sizeof(*r));
        if (r) {
            r->ent = e;
            r->error = err;
            r->started_us = rep.started_us;
            r->finished_us = rep.finished_us;
            r->pid = pid;
            r->due_mono = sand_mono_us() + step->retry_backoff_ms * 1000;
            sand_list_insert_tail(&w->retries, &r->link);
            sand_bytes_release(&n);
            return;
        }
    }
    multi(w);
    if (step && step->catch_step) {
        char id[17];
        new_id(id);
        hop(w, e, step, step->catch_step, 1, id, err ? err : "null", err ? strlen(err) : 4, &n);
        rep.status = "caught";
    } else {
        rep.status = "failed";
        rep.end = "fail";
    }
    sand_bytes_appends(&n, "]");
    rep.error = err ? err : "{\"type\":\"Error\",\"message\":\"out of memory\"}";
    commit(w, e, &rep, &n);
    free(err);
    entry_free(e);
    sand_bytes_release(&n);
}

/* ---- frames -------------------------------------------------------------------------- */

/* Consumes the complete frames at the start of buf into oc (log lines go to the log stream).
 * Returns 0, or -1 when a frame announces a length over the limit. */
static int frames_parse(worker_t *w, const entry_t *e, sand_bytes_t *buf, sand_outcome_t *oc)
{
    size_t off = 0;
    int rc = 0;
    while (buf->len - off >= 4) {
        uint32_t len;
        memcpy(&len, buf->data + off, 4);
        if (len == 0 || len > SAND_WORKER_OUTPUT_MAX) {
            rc = -1;
            off = buf->len;
            break;
        }
        if (buf->len - off - 4 < len)
            break;
        const char *p = buf->data + off + 5;
        size_t plen = len - 1;
        switch ((uint8_t)buf->data[off + 4]) {
        case SAND_FRAME_START:
            if (plen == 8)
                memcpy(&oc->started_us, p, 8);
            break;
        case SAND_FRAME_FINISH:
            if (plen == 8)
                memcpy(&oc->finished_us, p, 8);
            break;
        case SAND_FRAME_OUTPUT:
            free(oc->output);
            oc->output = sand_strndup(p, plen);
            oc->output_len = oc->output ? plen : 0;
            break;
        case SAND_FRAME_ERROR:
            free(oc->error);
            oc->error = sand_strndup(p, plen);
            break;
        case SAND_FRAME_NEXT: {
            uint32_t sl;
            if (plen < 4)
                break;
            memcpy(&sl, p, 4);
            if (sl >= SAND_NAME_MAX || plen - 4 < sl)
                break;
            char *s = sand_strndup(p + 4, sl);
            char *j = sand_strndup(p + 4 + sl, plen - 4 - sl);
            if (s && j && sand_vec_push(&oc->next_steps, s) == 0) {
                if (sand_vec_push(&oc->next_events, j) == 0)
                    break;
                free(sand_vec_remove(&oc->next_steps, oc->next_steps.len - 1));
                break;
            }
            free(s);
            free(j);
            break;
        }
        case SAND_FRAME_LOG:
            log_line(w, e, "log", p, plen);
            break;
        case SAND_FRAME_LOGK: {
            const char *nul = memchr(p, 0, plen);
            if (nul)
                log_line(w, e, p, nul + 1, plen - (size_t)(nul + 1 - p));
            break;
        }
        default:
            break;
        }
        off += 4 + len;
    }
    sand_bytes_consume(buf, off);
    return rc;
}

/* ---- instances ----------------------------------------------------------------------- */

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void ep_add(int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (ep_fd >= 0 && fd >= 0 && epoll_ctl(ep_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
        SAND_ERROR(COMP, "epoll_ctl: %s", strerror(errno));
}

/* Closes one of an instance's pipes, leaving the loop's epoll set first: a process forked
 * meanwhile may hold the same pipe, which would keep it (and its tag) in the set. */
static void close_inst_fd(inst_t *in, int *fd)
{
    if (*fd >= 0 && in->watched)
        epoll_ctl(ep_fd, EPOLL_CTL_DEL, *fd, NULL);
    close_fd(fd);
}

/* Puts a running instance's outcome and output pipes in the loop's epoll set. */
static void watch_inst(inst_t *in)
{
    if (ep_fd < 0)
        return;
    ep_add(in->fd_res, (uint64_t)(uintptr_t)in);
    ep_add(in->fd_std[0], (uint64_t)(uintptr_t)in | 1);
    ep_add(in->fd_std[1], (uint64_t)(uintptr_t)in | 2);
    in->watched = true;
}

/* Takes the instance's pipes out of the epoll set (they stay open). */
static void unwatch_inst(inst_t *in)
{
    if (!in->watched)
        return;
    int fds[3] = {in->fd_res, in->fd_std[0], in->fd_std[1]};
    for (int k = 0; k < 3; k++)
        if (fds[k] >= 0)
            epoll_ctl(ep_fd, EPOLL_CTL_DEL, fds[k], NULL);
    in->watched = false;
}

static void inst_free(inst_t *in)
{
    close_fd(&in->pidfd);
    unwatch_inst(in);
    close_fd(&in->fd_ev);
    close_fd(&in->fd_res);
    close_fd(&in->fd_std[0]);
    close_fd(&in->fd_std[1]);
    sand_bytes_release(&in->res);
    sand_bytes_release(&in->line[0]);
    sand_bytes_release(&in->line[1]);
    sand__outcome_release(&in->oc);
    entry_free(in->ent);
    free(in);
}

static bool read_u32_str(const char **p, const char *end, const char **s, size_t *len)
{
    uint32_t n;
    if (end - *p < 4)
        return false;
    memcpy(&n, *p, 4);
    *p += 4;
    if ((size_t)(end - *p) < n)
        return false;
    *s = *p;
    *len = n;
    *p += n;
    return true;
}

static bool read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* Runs one event through the runtime with ctx already pointing at its frame sink. */
static void run_event(worker_t *w, sand_context *ctx, const char *event, size_t len)
{
    sand_event ev = {event, len};
    if (w->load_error) {
        sand_worker_ctx_started(ctx);
        sand_worker_ctx_finished(ctx);
        sand_worker_ctx_fail(ctx, w->rt->load_error_type, w->load_error, w->load_detail);
        return;
    }
    w->rt->invoke(w->rt_state, ctx, &ev);
}

static void ctx_setup(worker_t *w, sand_context *ctx, const char *exec, const char *wf,
                      const char *step, int attempt, int64_t kill_at_us)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->app = w->app_name;
    ctx->grain = w->grain->name;
    ctx->exec = exec;
    ctx->workflow = wf;
    ctx->step = step;
    ctx->attempt = attempt;
    ctx->kill_at_us = kill_at_us;
    ctx->wf = wf[0] ? sand_app_workflow(w->app, wf) : NULL;
    ctx->value_max = w->value_max;
    ctx->dl = &w->dl;
    ctx->fd = -1;
}

/* The body of a spare instance after fork(): waits for its event, runs it, reports, exits.
 * Never returns. */
static void __attribute__((noreturn)) child_main(worker_t *w, int fd_ev, int fd_res)
{
    uint32_t total;
    /* Still a spare: the heap chunk the event will be read into takes its copy-on-write fault
     * now, not on the event's path. */
    char *warm = malloc(8192);
    if (warm) {
        memset(warm, 0, 8192);
        __asm__ volatile("" : : "r"(warm) : "memory");
        free(warm);
    }
    if (!read_full(fd_ev, &total, 4) || total > (uint32_t)SAND_WORKER_OUTPUT_MAX)
        _exit(0);
    char *buf = malloc((size_t)total + 1);
    if (!buf || !read_full(fd_ev, buf, total))
        _exit(0);
    buf[total] = 0; /* the event is the last field: grains may treat it as a C string */
    close(fd_ev);
    const char *p = buf, *end = buf + total, *f[6];
    size_t fl[6];
    for (int i = 0; i < 6; i++)
        if (!read_u32_str(&p, end, &f[i], &fl[i]))
            _exit(0);
    /* The fields are NUL-separated in the payload for this very use. */
    int attempt = 1;
    int64_t kill_at = 0;
    memcpy(&attempt, f[3], fl[3] >= sizeof(int) ? sizeof(int) : 0);
    memcpy(&kill_at, f[4], fl[4] >= 8 ? 8 : 0);
    sand_context ctx;
    sand_bytes_t hold;
    sand_bytes_init(&hold, (size_t)SAND_WORKER_OUTPUT_MAX + 16);
    ctx_setup(w, &ctx, f[0], f[1], f[2], attempt, kill_at);
    ctx.fd = fd_res;
    ctx.hold = &hold;
    run_event(w, &ctx, f[5], fl[5]);
    /* Buffered stdout and stderr first, then the outcome, all at once: nothing is written after
     * it, so the worker, once it has the outcome, no longer listens to this instance (its end
     * of files would be one more wake-up each). */
    fflush(stdout);
    fflush(stderr);
    sand__frame_flush(&ctx);
    /* The outcome is sent. Tearing down a copy of an interpreter costs more CPU than most
     * handlers: do it at idle priority, so that it never delays the next hop's instance (on
     * two cores this took about 100 us off the hop's p50). */
    struct sched_param sp = {0};
    sched_setscheduler(0, SCHED_IDLE, &sp);
    _exit(0);
}

static int make_pipe(int fds[2])
{
    return pipe2(fds, O_CLOEXEC);
}

/* Executables without malloc.c (the Java worker, which never forks) keep glibc's malloc. */
__attribute__((weak)) void sand__malloc_instance(void)
{
}

/* fds of the zygote that its instances must not keep */
static int zyg_fd = -1, zyg_sfd = -1;
/* glibc is set up for instances already (in the zygote, which forks them) */
static bool malloc_tuned;

/* glibc in an instance: buffers up to 32 MiB (a data-layer value, hiredis' command and reply
 * buffers) come from the heap and stay there once freed, instead of an mmap and munmap each
 * time, which faults every page in again (a 1 MiB put + get: 1.7 -> 0.7 ms). Done once in the
 * zygote rather than in each instance: mallopt() consolidates the heap's free chunks, which in
 * an instance wrote (and copied) pages shared with its parent. */
static void tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    malloc_tuned = true;
}

/* Forks a spare instance that blocks on its event pipe, from the worker or from the zygote
 * (whichever calls). Returns the child's pid and the parent's ends of its pipes in fds (event,
 * outcome, stdout, stderr), or -1. */
static pid_t spawn_spare(worker_t *w, int fds[4])
{
    int ev[2] = {-1, -1}, res[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
    if (make_pipe(ev) < 0 || make_pipe(res) < 0 || make_pipe(out) < 0 || make_pipe(errp) < 0) {
        SAND_ERROR(COMP, "pipe: %s", strerror(errno));
        goto error;
    }
    pid_t parent = getpid();
    if (w->rt->before_fork && !w->load_error)
        w->rt->before_fork(w->rt_state);
    pid_t pid = fork();
    if (pid < 0) {
        SAND_ERROR(COMP, "fork: %s", strerror(errno));
        if (w->rt->after_fork && !w->load_error)
            w->rt->after_fork(w->rt_state, false);
        goto error;
    }
    if (pid == 0) {
        sand__malloc_instance();
        /* The instance dies with its parent: a new worker re-runs the pending event. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (sched_getscheduler(0) == SCHED_BATCH) {
            struct sched_param other = {0};
            sched_setscheduler(0, SCHED_OTHER, &other);
        }
        if (getppid() != parent)
            _exit(0);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* Drop every descriptor of the worker: Redis is used only by the worker parent, and a
         * sibling's pipe held open here would hide that sibling's EOF. */
        close_fd(&w->sig_rfd);
        close_fd(&sig_wfd);
        close_fd(&zyg_fd);
        close_fd(&zyg_sfd);
        close_fd(&ep_fd);
        if (w->rd)
            close(w->rd->fd);
        if (w->wr)
            close(w->wr->fd);
        sand_list_t *pos, *tmp;
        sand_list_foreach_safe(pos, tmp, &w->insts)
        {
            inst_t *o = SAND_CONTAINER_OF(pos, inst_t, link);
            close_fd(&o->fd_ev);
            close_fd(&o->fd_res);
            close_fd(&o->fd_std[0]);
            close_fd(&o->fd_std[1]);
        }
        dup2(out[1], STDOUT_FILENO);
        dup2(errp[1], STDERR_FILENO);
        close(out[0]);
        close(out[1]);
        close(errp[0]);
        close(errp[1]);
        close(ev[1]);
        close(res[0]);
        if (!malloc_tuned)
            tune_malloc();
        if (!w->load_error) {
            /* the instance's allocators first: the runtime's own reinitialisation after fork
             * (CPython allocates a new lock for each of its locks) then writes fresh pages */
            if (w->rt->instance_start)
                w->rt->instance_start(w->rt_state);
            if (w->rt->after_fork)
                w->rt->after_fork(w->rt_state, true);
        }
        child_main(w, ev[0], res[1]);
    }
    if (w->rt->after_fork && !w->load_error)
        w->rt->after_fork(w->rt_state, false);
    close(ev[0]);
    close(res[1]);
    close(out[1]);
    close(errp[1]);
    fds[0] = ev[1];
    fds[1] = res[0];
    fds[2] = out[0];
    fds[3] = errp[0];
    return pid;
error:
    for (int i = 0; i < 2; i++) {
        close_fd(&ev[i]);
        close_fd(&res[i]);
        close_fd(&out[i]);
        close_fd(&errp[i]);
    }
    return -1;
}

/* Makes a spare of a forked process: a child of the worker, or of the zygote (zyg, with its
 * pidfd or -1). Takes the fds. */
static int spare_adopt(worker_t *w, pid_t pid, bool zyg, int pidfd, int fds[4])
{
    inst_t *in = calloc(1, sizeof(*in));
    if (!in || w->nspares == SPARE_POOL) {
        free(in);
        if (pidfd >= 0)
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        else if (!zyg && kill(pid, SIGKILL) == 0)
            waitpid(pid, NULL, 0); /* a child of the worker: reap it now */
        for (int i = 0; i < 4; i++)
            close(fds[i]);
        if (pidfd >= 0)
            close(pidfd);
        return SAND_ENOMEM;
    }
    in->pid = pid;
    in->zyg = zyg;
    in->pidfd = pidfd;
    in->fd_ev = fds[0];
    in->fd_res = fds[1];
    in->fd_std[0] = fds[2];
    in->fd_std[1] = fds[3];
    set_nonblock(in->fd_res);
    set_nonblock(in->fd_std[0]);
    set_nonblock(in->fd_std[1]);
    in->spare = true;
    sand_bytes_init(&in->res, (size_t)SAND_WORKER_OUTPUT_MAX + 16);
    sand_bytes_init(&in->line[0], SAND_WORKER_LOG_LINE_MAX);
    sand_bytes_init(&in->line[1], SAND_WORKER_LOG_LINE_MAX);
    sand__outcome_init(&in->oc);
    sand_list_insert_tail(&w->insts, &in->link);
    w->spares[w->nspares++] = in;
    return 0;
}

/* Forks a spare instance from the worker itself. Returns 0 or < 0. */
static int fork_spare(worker_t *w)
{
    int fds[4];
    pid_t pid = spawn_spare(w, fds);
    if (pid < 0)
        return SAND_EIO;
    return spare_adopt(w, pid, false, -1, fds);
}

static inst_t *spare_take(worker_t *w)
{
    if (w->nspares == 0)
        return NULL;
    inst_t *in = w->spares[0];
    memmove(&w->spares[0], &w->spares[1], (size_t)(w->nspares - 1) * sizeof(w->spares[0]));
    w->nspares--;
    return in;
}

static void spare_forget(worker_t *w, inst_t *in)
{
    for (int i = 0; i < w->nspares; i++) {
        if (w->spares[i] == in) {
            memmove(&w->spares[i], &w->spares[i + 1],
                    (size_t)(w->nspares - i - 1) * sizeof(w->spares[0]));
            w->nspares--;
            return;
        }
    }
}

/* ---- the zygote -----------------------------------------------------------------------------
 * In fork mode the worker does not fork its instances itself. A zygote, forked from the worker
 * once the grain's code is loaded, forks them on request ('S' from the worker), passes the
 * worker each spare's pid, pidfd and pipe ends over a SOCK_SEQPACKET socket (SCM_RIGHTS), reaps
 * them and reports every exit status. The worker's loop then never waits for a fork() (about
 * 0.25 ms of page-table copying for a CPython worker, which delayed whatever event arrived in
 * the meantime), and its own pages are no longer write-protected by each fork (every page the
 * loop then wrote took a copy-on-write fault: ~70 per event). The zygote dies with the worker
 * (PR_SET_PDEATHSIG) and its instances with it; a worker whose zygote died exits, and the next
 * worker re-reads the pending events. */

typedef struct zmsg {
    char type; /* 'S' a spare (with its fds), 'X' an exit */
    pid_t pid;
    int status;
} zmsg_t;

static void zsend(int fd, const zmsg_t *m, const int *fds, int nfds)
{
    struct iovec iov = {(void *)m, sizeof(*m)};
    union {
        char buf[CMSG_SPACE(5 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    while (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR)
            _exit(0); /* the worker is gone */
    }
}

static void __attribute__((noreturn)) zygote_main(worker_t *w, int fd)
{
    /* Not the worker's: its Redis connections, signal pipe and handlers. */
    close_fd(&w->sig_rfd);
    close_fd(&sig_wfd);
    if (w->rd) {
        redisFree(w->rd);
        w->rd = NULL;
    }
    if (w->wr) {
        redisFree(w->wr);
        w->wr = NULL;
    }
    tune_malloc();
    /* Its large private regions (the Python heap, libpython's data, glibc's heap) onto a file,
     * mapped privately in place: a fork then copies none of their page table entries and an
     * instance maps only the pages it touches (filemem.c). The zygote writes none of them again
     * but for a few pages around each fork. */
    long moved = sand__memory_to_file(64 << 10);
    if (moved < 0)
        SAND_WARN(COMP, "zygote of '%s': memory stays anonymous: %s", w->grain->name,
                  strerror(errno));
    /* Its forks are for later events: never preempt the tasks on the path of the current one
     * (instances switch back to SCHED_OTHER; see spawn_spare()). */
    struct sched_param batch = {0};
    sched_setscheduler(0, SCHED_BATCH, &batch);
    signal(SIGTERM, SIG_IGN); /* it ends when the worker closes the socket */
    signal(SIGINT, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    signal(SIGCHLD, SIG_DFL);
    zyg_fd = fd;
    zyg_sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (zyg_sfd < 0)
        _exit(1);
    for (;;) {
        struct pollfd p[2] = {{.fd = zyg_fd, .events = POLLIN}, {.fd = zyg_sfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            _exit(1);
        if (p[1].revents) {
            struct signalfd_siginfo si;
            while (read(zyg_sfd, &si, sizeof(si)) > 0) {
            }
            int st;
            pid_t pid;
            while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
                zmsg_t m = {'X', pid, st};
                zsend(zyg_fd, &m, NULL, 0);
            }
        }
        if (p[0].revents) {
            char req[16];
            ssize_t n = recv(zyg_fd, req, sizeof(req), 0);
            if (n <= 0 && !(n < 0 && errno == EINTR))
                _exit(0);
            for (ssize_t i = 0; i < n; i++) {
                int fds[5];
                pid_t pid = spawn_spare(w, fds);
                if (pid < 0) {
                    zmsg_t m = {'S', -1, 0};
                    zsend(zyg_fd, &m, NULL, 0);
                    continue;
                }
                fds[4] = (int)syscall(SYS_pidfd_open, pid, 0);
                zmsg_t m = {'S', pid, 0};
                zsend(zyg_fd, &m, fds, fds[4] >= 0 ? 5 : 4);
                for (int k = 0; k < 5; k++)
                    if (fds[k] >= 0)
                        close(fds[k]);
            }
        }
    }
}

/* Forks the zygote. Returns 0, or < 0 (the worker then forks its instances itself). */
static int zygote_start(worker_t *w)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
        return SAND_EIO;
    pid_t parent = getpid();
    if (w->rt->before_fork && !w->load_error)
        w->rt->before_fork(w->rt_state);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        close(sp[0]);
        if (w->rt->after_fork && !w->load_error)
            w->rt->after_fork(w->rt_state, true);
        zygote_main(w, sp[1]);
    }
    if (w->rt->after_fork && !w->load_error)
        w->rt->after_fork(w->rt_state, false);
    close(sp[1]);
    if (pid < 0) {
        close(sp[0]);
        return SAND_EIO;
    }
    set_nonblock(sp[0]);
    w->zfd = sp[0];
    w->zpid = pid;
    return 0;
}

/* Asks the zygote for spares until the pool (ready + asked) is full for the free slots. */
static void zygote_ask(worker_t *w)
{
    int slots = w->grain->concurrency - w->running - (int)w->waiting.len;
    int want = slots < SPARE_POOL ? slots : SPARE_POOL;
    if (w->draining || w->stop)
        want = 0;
    while (w->nspares + w->zasked < want) {
        char c = 'S';
        if (send(w->zfd, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
            return; /* full or gone: asked again next turn, or the zygote's exit is seen */
        w->zasked++;
    }
}

static void dispatch_fork(worker_t *w, entry_t *e);
static void inst_done(worker_t *w, inst_t *in);

/* Reads what the zygote sent: new spares (handed the waiting events first) and exits. */
static void zygote_readable(worker_t *w)
{
    for (;;) {
        zmsg_t m;
        int fds[5];
        union {
            char buf[CMSG_SPACE(5 * sizeof(int))];
            struct cmsghdr align;
        } u;
        struct iovec iov = {&m, sizeof(m)};
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u)};
        ssize_t n = recvmsg(w->zfd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n != (ssize_t)sizeof(m)) {
            SAND_ERROR(COMP, "the zygote of '%s' is gone", w->grain->name);
            w->fatal = w->stop = true;
            return;
        }
        int nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                if (nfds > 5)
                    nfds = 5;
                memcpy(fds, CMSG_DATA(c), (size_t)nfds * sizeof(int));
            }
        }
        if (m.type == 'S') {
            if (w->zasked > 0)
                w->zasked--;
            if (m.pid < 0 || nfds < 4) {
                for (int i = 0; i < nfds; i++)
                    close(fds[i]);
                SAND_ERROR(COMP, "the zygote of '%s' cannot fork", w->grain->name);
                usleep(100 * 1000);
                continue;
            }
            if (spare_adopt(w, m.pid, true, nfds == 5 ? fds[4] : -1, fds) == 0 && w->waiting.len)
                dispatch_fork(w, sand_vec_remove(&w->waiting, 0));
        } else if (m.type == 'X') {
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            sand_list_t *pos, *tmp;
            sand_list_foreach_safe(pos, tmp, &w->insts)
            {
                inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
                if (in->pid == m.pid && in->zyg && !in->reaped) {
                    in->reaped = true;
                    in->wstatus = m.status;
                    inst_done(w, in);
                    break;
                }
            }
        }
    }
}

static int64_t kill_at_us(worker_t *w, const entry_t *e, int64_t now)
{
    int64_t at = now + w->grain->timeout_ms * 1000;
    if (e->deadline_us > 0 && e->deadline_us < at)
        at = e->deadline_us;
    return at;
}

static void put_field(sand_bytes_t *b, const void *p, size_t n)
{
    uint32_t l = (uint32_t)n;
    sand_bytes_append(b, &l, 4);
    sand_bytes_append(b, p, n);
}

/* Hands e to the spare instance; the spare becomes a running instance. */
static void dispatch_fork(worker_t *w, entry_t *e)
{
    inst_t *in = spare_take(w);
    int64_t now = sand_now_us();
    int64_t at = kill_at_us(w, e, now);
    sand_bytes_t msg;
    sand_bytes_init(&msg, SIZE_MAX);
    uint32_t zero = 0;
    sand_bytes_append(&msg, &zero, 4);
    /* exec, workflow and step go NUL-terminated so the child can use them in place */
    put_field(&msg, e->exec, strlen(e->exec) + 1);
    put_field(&msg, e->wf, strlen(e->wf) + 1);
    put_field(&msg, e->step, strlen(e->step) + 1);
    put_field(&msg, &e->attempt, sizeof(int));
    put_field(&msg, &at, 8);
    put_field(&msg, e->event, e->event_len);
    uint32_t total = (uint32_t)(msg.len - 4);
    memcpy(msg.data, &total, 4);
    in->spare = false;
    watch_inst(in);
    in->ent = e;
    in->handoff_us = now;
    in->kill_at_mono = sand_mono_us() + (at - now);
    w->dispatched_mono = sand_mono_us();
    w->running++;
    const char *p = msg.data;
    size_t left = msg.len;
    while (left > 0) {
        ssize_t n = write(in->fd_ev, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the spare died: its reaping reports Crashed */
        p += n;
        left -= (size_t)n;
    }
    close_fd(&in->fd_ev);
    sand_bytes_release(&msg);
}

/* Runs e inside the worker itself (reuse mode), then routes it. */
static void dispatch_reuse(worker_t *w, entry_t *e)
{
    sand_bytes_t frames;
    sand_outcome_t oc;
    sand_context ctx;
    int64_t now = sand_now_us();
    sand_bytes_init(&frames, (size_t)SAND_WORKER_OUTPUT_MAX + 16);
    sand__outcome_init(&oc);
    ctx_setup(w, &ctx, e->exec, e->wf, e->step, e->attempt, kill_at_us(w, e, now));
    ctx.buf = &frames;
    run_event(w, &ctx, e->event, e->event_len);
    free(ctx.error_msg);
    frames_parse(w, e, &frames, &oc);
    sand_bytes_release(&frames);
    route(w, e, &oc, getpid(), NULL, NULL, 0, now);
    sand__outcome_release(&oc);
}

/* Turns bytes from an instance's stdout/stderr into bounded log lines. */
static void std_bytes(worker_t *w, inst_t *in, int which, const char *p, size_t n, bool eof)
{
    const char *kind = which == 0 ? "stdout" : "stderr";
    sand_bytes_t *line = &in->line[which];
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (!in->line_skip[which]) {
            size_t room = SAND_WORKER_LOG_LINE_MAX - line->len;
            size_t k = take < room ? take : room;
            sand_bytes_append(line, p, k);
            if (k < take)
                in->line_skip[which] = true; /* the rest of an overlong line is dropped */
        }
        bool tail_of_cut = nl && line->len == 0 && in->line_skip[which];
        if ((nl && !tail_of_cut) || line->len == SAND_WORKER_LOG_LINE_MAX) {
            bool cut = line->len == SAND_WORKER_LOG_LINE_MAX;
            if (in->logged < SAND_WORKER_LOG_BYTES_MAX && !(cut && in->truncated)) {
                log_line(w, in->ent, kind, line->data, line->len);
                in->logged += line->len + 1;
            }
            if ((cut || in->logged >= SAND_WORKER_LOG_BYTES_MAX) && !in->truncated) {
                in->truncated = true;
                static const char t[] = "output truncated";
                log_line(w, in->ent, "system", t, sizeof(t) - 1);
            }
            sand_bytes_reset(line);
        }
        if (nl)
            in->line_skip[which] = false;
        p += take + (nl ? 1 : 0);
        n -= take + (nl ? 1 : 0);
    }
    if (eof && line->len > 0) {
        if (in->logged < SAND_WORKER_LOG_BYTES_MAX)
            log_line(w, in->ent, kind, line->data, line->len);
        sand_bytes_reset(line);
    }
}

/* Signals a forked instance: through its pidfd when the zygote forked it (its pid may be
 * reaped and reused before the worker hears of the exit), else by pid (a child of the worker,
 * not reaped yet). */
static void signal_inst(inst_t *in, int sig)
{
    if (in->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, in->pidfd, sig, NULL, 0);
    else
        kill(in->pid, sig);
}

static void kill_inst(inst_t *in, int why)
{
    if (in->killed || in->reaped)
        return;
    in->killed = why;
    signal_inst(in, SIGKILL);
}

static void inst_route(worker_t *w, inst_t *in);
static void thread_kill(worker_t *w, inst_t *in, int why);

/* Reads what is available on one of the instance's pipes; closes it on EOF. */
static void inst_read(worker_t *w, inst_t *in, int *fd, int which)
{
    char buf[65536];
    for (int rounds = 0; rounds < 64 && *fd >= 0; rounds++) {
        ssize_t n = read(*fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (which >= 0)
                std_bytes(w, in, which, "", 0, true);
            else if (in->slot)
                in->reaped = true; /* the thread closed its end: it is done with the event */
            close_inst_fd(in, fd);
            return;
        }
        if (which >= 0) {
            std_bytes(w, in, which, buf, (size_t)n, false);
        } else if (sand_bytes_append(&in->res, buf, (size_t)n) < 0 ||
                   frames_parse(w, in->ent, &in->res, &in->oc) < 0) {
            sand_bytes_reset(&in->res);
            close_inst_fd(in, fd);
            if (in->slot)
                thread_kill(w, in, KILL_OUTPUT);
            else
                kill_inst(in, KILL_OUTPUT);
            return;
        } else if (!in->routed && !in->killed && (in->oc.output || in->oc.error)) {
            inst_route(w, in);
        }
    }
}

/* Keeps only what log lines need (execution id and step) once the entry went to route(). */
static entry_t *entry_stub(const entry_t *e)
{
    entry_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->exec = sand_strdup(e->exec);
    s->step = sand_strdup(e->step);
    if (!s->exec || !s->step) {
        entry_free(s);
        return NULL;
    }
    return s;
}

/* Routes the instance's event: as soon as it reported its outcome (the process may still be
 * exiting; waiting for its exit would put the teardown of its address space on the path of the
 * hop), or when it was reaped without one. */
static void inst_route(worker_t *w, inst_t *in)
{
    const char *type = NULL, *msg = NULL;
    char buf[160];
    int sig = in->reaped && WIFSIGNALED(in->wstatus) ? WTERMSIG(in->wstatus) : 0;
    if (in->routed || in->spare)
        return;
    /* stdout/stderr written before the outcome are in their pipes already: log them first */
    for (int i = 0; i < 2; i++)
        inst_read(w, in, &in->fd_std[i], i);
    if (in->killed == KILL_TIMEOUT) {
        type = "Timeout";
        snprintf(buf, sizeof(buf),
                 "instance %s after %lld ms (grain timeout %lld ms or execution deadline)",
                 in->slot ? "interrupted" : "killed",
                 (long long)((sand_now_us() - in->handoff_us) / 1000),
                 (long long)w->grain->timeout_ms);
        msg = buf;
        sig = 0;
    } else if (in->killed == KILL_MEMORY) {
        type = "MemoryLimit";
        snprintf(buf, sizeof(buf), "instance exceeded its memory limit of %lld bytes",
                 (long long)w->grain->memory);
        msg = buf;
        sig = 0;
    } else if (in->killed == KILL_OUTPUT) {
        type = "Error";
        msg = "instance output over the limit";
        sig = 0;
    } else if (in->oc.output || in->oc.error) {
        sig = 0;
    } else if (sig) {
        type = "Crashed";
        snprintf(buf, sizeof(buf), "instance killed by signal %d (%s)", sig, strsignal(sig));
        msg = buf;
    } else if (in->slot) {
        type = "Crashed";
        msg = "instance thread ended without reporting a result";
    } else {
        type = "Crashed";
        snprintf(buf, sizeof(buf), "instance exited with status %d without reporting a result",
                 WIFEXITED(in->wstatus) ? WEXITSTATUS(in->wstatus) : -1);
        msg = buf;
    }
    entry_t *e = in->ent;
    in->ent = entry_stub(e);
    in->routed = true;
    if (!in->slot)
        w->running--; /* a thread keeps its slot until it is done with the event */
    route(w, e, &in->oc, in->pid, type, msg, sig, in->handoff_us);
    /* A forked instance writes nothing after its outcome: the rest of its pipes (their ends of
     * file) is read when its exit is known. A thread's end of file is its release. */
    if (!in->slot)
        unwatch_inst(in);
}

/* An instance was reaped: drain its pipes, route its event if not done yet, free it. */
static void inst_done(worker_t *w, inst_t *in)
{
    while (in->fd_res >= 0)
        inst_read(w, in, &in->fd_res, -1);
    for (int i = 0; i < 2; i++)
        inst_read(w, in, &in->fd_std[i], i);
    sand_list_remove(&in->link);
    if (in->spare) {
        spare_forget(w, in);
        if (!w->stop)
            SAND_WARN(COMP, "spare instance %d of '%s' ended (status %d)", (int)in->pid,
                      w->grain->name, in->wstatus);
        inst_free(in);
        return;
    }
    inst_route(w, in);
    inst_free(in);
}

/* ---- instance threads (threads mode) --------------------------------------------------- */

/* What an instance thread needs to run one event: copies, so that the loop may route and free
 * the entry while the thread is still inside the handler. */
typedef struct tjob {
    char *exec, *wf, *step, *event;
    size_t event_len;
    int attempt;
    int64_t kill_at_us;
    int fd; /* the write end of the instance's outcome pipe, closed by the thread */
} tjob_t;

/* An instance thread. While the loop owns it, it is either idle (in w->idle) or running the
 * job of one instance (inst->slot). Once the loop sets quit or abandoned it forgets the slot,
 * and the thread frees it when it exits. */
typedef struct tslot {
    sand_list_t link;
    worker_t *w; /* followed only inside invoke() of a job the loop still owns */
    const sand_worker_runtime_t *rt;
    void *rt_state;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tjob_t *job;          /* under mu: the event being run, NULL when idle */
    bool quit, abandoned; /* under mu */
    bool started;         /* under mu: thread_start returned token */
    void *token;
    sand_dl_t dl; /* this thread's own data layer connections */
} tslot_t;

/* Threads the loop abandoned that are still running (any thread may read or write it). */
static _Atomic int threads_abandoned;

static void tjob_free(tjob_t *j)
{
    if (!j)
        return;
    free(j->exec);
    free(j->wf);
    free(j->step);
    free(j->event);
    free(j);
}

static void slot_free(tslot_t *s)
{
    sand__dl_release(&s->dl);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* Runs one job on the instance thread, with its own context and data layer connections. */
static void slot_run(tslot_t *s, tjob_t *j)
{
    sand_context ctx;
    ctx_setup(s->w, &ctx, j->exec, j->wf, j->step, j->attempt, j->kill_at_us);
    ctx.fd = j->fd;
    ctx.thread = true;
    ctx.dl = &s->dl;
    run_event(s->w, &ctx, j->event, j->event_len);
    sand__frame_flush(&ctx);
    free(ctx.error_msg);
}

/* The body of an instance thread: waits for a job, runs it, clears it and closes the outcome
 * pipe (which tells the loop the thread is free again), until quit or abandoned. */
static void *slot_main(void *arg)
{
    tslot_t *s = arg;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, NULL); /* the loop thread handles them */
    void *token = s->rt->thread_start ? s->rt->thread_start(s->rt_state) : NULL;
    pthread_mutex_lock(&s->mu);
    s->token = token;
    s->started = true;
    for (;;) {
        while (!s->job && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        tjob_t *j = s->job;
        if (!j)
            break;
        pthread_mutex_unlock(&s->mu);
        slot_run(s, j);
        pthread_mutex_lock(&s->mu);
        s->job = NULL; /* from here on the loop cannot interrupt this thread for j */
        bool gone = s->abandoned;
        pthread_mutex_unlock(&s->mu);
        close(j->fd);
        tjob_free(j);
        pthread_mutex_lock(&s->mu);
        if (gone)
            break;
    }
    bool abandoned = s->abandoned;
    pthread_mutex_unlock(&s->mu);
    if (s->rt->thread_stop)
        s->rt->thread_stop(s->rt_state, token);
    if (abandoned)
        threads_abandoned--;
    slot_free(s);
    return NULL;
}

/* Starts a new idle instance thread. Returns it, or NULL. */
static tslot_t *slot_new(worker_t *w)
{
    tslot_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->w = w;
    s->rt = w->rt;
    s->rt_state = w->load_error ? NULL : w->rt_state;
    s->dl = w->dl;
    s->dl.conn[0] = s->dl.conn[1] = NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (w->load_error) {
        /* nothing to attach to: every event fails with the load error without the runtime */
        static const sand_worker_runtime_t bare = {.name = "none"};
        s->rt = &bare;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, slot_main, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        SAND_ERROR(COMP, "cannot start an instance thread: %s", strerror(rc));
        slot_free(s);
        return NULL;
    }
    return s;
}

/* Hands e to an idle instance thread (started on demand). */
static void dispatch_thread(worker_t *w, entry_t *e)
{
    int64_t now = sand_now_us();
    int64_t at = kill_at_us(w, e, now);
    int res[2] = {-1, -1};
    tslot_t *s = NULL;
    tjob_t *j = calloc(1, sizeof(*j));
    inst_t *in = calloc(1, sizeof(*in));
    if (!sand_list_empty(&w->idle)) {
        s = SAND_CONTAINER_OF(w->idle.next, tslot_t, link);
        sand_list_remove(&s->link);
    } else {
        s = slot_new(w);
    }
    if (!j || !in || !s || make_pipe(res) < 0 || !(j->exec = sand_strdup(e->exec)) ||
        !(j->wf = sand_strdup(e->wf)) || !(j->step = sand_strdup(e->step)) ||
        !(j->event = sand_strndup(e->event, e->event_len))) {
        sand_outcome_t oc;
        sand__outcome_init(&oc);
        if (s)
            sand_list_insert_tail(&w->idle, &s->link);
        close_fd(&res[0]);
        close_fd(&res[1]);
        tjob_free(j);
        free(in);
        route(w, e, &oc, getpid(), "Error", "cannot start a grain instance thread", 0, now);
        return;
    }
    j->event_len = e->event_len;
    j->attempt = e->attempt;
    j->kill_at_us = at;
    j->fd = res[1];
    in->pid = getpid();
    in->fd_ev = -1;
    in->pidfd = -1;
    in->fd_res = res[0];
    in->fd_std[0] = in->fd_std[1] = -1;
    set_nonblock(in->fd_res);
    sand_bytes_init(&in->res, (size_t)SAND_WORKER_OUTPUT_MAX + 16);
    sand_bytes_init(&in->line[0], SAND_WORKER_LOG_LINE_MAX);
    sand_bytes_init(&in->line[1], SAND_WORKER_LOG_LINE_MAX);
    sand__outcome_init(&in->oc);
    in->ent = e;
    in->slot = s;
    in->job = j;
    in->handoff_us = now;
    in->kill_at_mono = sand_mono_us() + (at - now);
    sand_list_insert_tail(&w->insts, &in->link);
    watch_inst(in);
    w->running++;
    pthread_mutex_lock(&s->mu);
    s->job = j;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The instance timed out (or its output went over the limit): interrupt its thread if it is
 * still running the event, and route the failure now; the slot stays taken until the thread
 * ends or the grace period runs out. Loop thread. */
static void thread_kill(worker_t *w, inst_t *in, int why)
{
    if (in->killed)
        return;
    in->killed = why;
    in->grace_mono = sand_mono_us() + SAND_WORKER_THREAD_GRACE_MS * 1000LL;
    tslot_t *s = in->slot;
    pthread_mutex_lock(&s->mu);
    if (s->job == in->job && s->started && s->rt->interrupt)
        s->rt->interrupt(s->rt_state, s->token, false);
    pthread_mutex_unlock(&s->mu);
    inst_route(w, in);
}

/* The instance's thread is done with its event (or abandoned): release the slot. */
static void thread_done(worker_t *w, inst_t *in, bool abandon)
{
    tslot_t *s = in->slot;
    sand_list_remove(&in->link);
    inst_route(w, in);
    w->running--;
    pthread_mutex_lock(&s->mu);
    bool busy = s->job == in->job;
    if (abandon && busy) {
        s->abandoned = true;
        threads_abandoned++;
        if (s->started && s->rt->interrupt)
            s->rt->interrupt(s->rt_state, s->token, true);
    }
    pthread_mutex_unlock(&s->mu);
    if (abandon && busy) {
        int n = threads_abandoned;
        SAND_WARN(COMP,
                  "grain '%s': an instance thread ignored its interrupt for %d ms; forced to "
                  "stop and released (%d such threads not ended yet)",
                  w->grain->name, SAND_WORKER_THREAD_GRACE_MS, n);
        /* threads that ignore even the forced stop (stuck in native code) would pile up:
         * past the grain's concurrency only a new process gets the CPU back */
        if (n > w->grain->concurrency) {
            SAND_ERROR(COMP,
                       "grain '%s': %d instance threads cannot be stopped; restarting "
                       "the worker",
                       w->grain->name, n);
            w->fatal = w->stop = true;
        }
    } else {
        sand_list_insert_tail(&w->idle, &s->link);
    }
    in->slot = NULL;
    inst_free(in);
}

static void reap_threads(worker_t *w)
{
    int64_t now = sand_mono_us();
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &w->insts)
    {
        inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
        if (in->reaped)
            thread_done(w, in, false);
        else if (!in->killed && now >= in->kill_at_mono)
            thread_kill(w, in, KILL_TIMEOUT);
        else if (in->killed && now >= in->grace_mono)
            thread_done(w, in, true);
    }
}

/* Shutdown: idle threads exit, busy ones are abandoned (their events stay pending and run
 * again in the next worker). Threads are never joined: the process exits right after. */
static void shutdown_threads(worker_t *w)
{
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &w->insts)
    {
        inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
        tslot_t *s = in->slot;
        pthread_mutex_lock(&s->mu);
        if (s->job == in->job)
            s->abandoned = true;
        else
            s->quit = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        sand_list_remove(&in->link);
        in->slot = NULL;
        inst_free(in);
    }
    w->running = 0;
    sand_list_foreach_safe(pos, tmp, &w->idle)
    {
        tslot_t *s = SAND_CONTAINER_OF(pos, tslot_t, link);
        sand_list_remove(&s->link);
        pthread_mutex_lock(&s->mu);
        s->quit = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

static void reap(worker_t *w)
{
    if (w->threads) {
        reap_threads(w);
        return;
    }
    if (w->zfd >= 0 && waitpid(w->zpid, NULL, WNOHANG) == w->zpid) {
        SAND_ERROR(COMP, "the zygote of '%s' died", w->grain->name);
        if (w->zwatched)
            epoll_ctl(ep_fd, EPOLL_CTL_DEL, w->zfd, NULL);
        close_fd(&w->zfd);
        w->fatal = w->stop = true;
    }
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &w->insts)
    {
        inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
        if (in->zyg)
            continue; /* the zygote reports its exit */
        int st;
        pid_t r = waitpid(in->pid, &st, WNOHANG);
        if (r == in->pid || (r < 0 && errno == ECHILD)) {
            in->reaped = true;
            in->wstatus = r == in->pid ? st : 0;
            inst_done(w, in);
        }
    }
}

/* Resident set size of pid in bytes, or -1. */
static int64_t rss_bytes(pid_t pid)
{
    char path[64], buf[128];
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    unsigned long long size, res;
    if (sscanf(buf, "%llu %llu", &size, &res) != 2)
        return -1;
    return (int64_t)res * sysconf(_SC_PAGESIZE);
}

static void check_limits(worker_t *w)
{
    int64_t now = sand_mono_us();
    /* threads share the worker's memory: the JVM heap is bounded by its options instead */
    bool mem = w->grain->memory > 0 && now >= w->next_mem_poll && !w->threads;
    if (mem)
        w->next_mem_poll = now + MEM_POLL_MS * 1000;
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &w->insts)
    {
        inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
        if (in->spare || in->killed || in->slot)
            continue; /* instance threads: reap_threads() */
        if (now >= in->kill_at_mono)
            kill_inst(in, KILL_TIMEOUT);
        else if (mem && rss_bytes(in->pid) > w->grain->memory)
            kill_inst(in, KILL_MEMORY);
    }
    sand_list_foreach_safe(pos, tmp, &w->retries)
    {
        retry_t *r = SAND_CONTAINER_OF(pos, retry_t, link);
        if (now < r->due_mono)
            continue;
        sand_list_remove(&r->link);
        retry_commit(w, r);
        entry_free(r->ent);
        free(r->error);
        free(r);
    }
}

/* Milliseconds poll() may sleep before a timer is due. */
static int poll_timeout(worker_t *w)
{
    int64_t now = sand_mono_us(), due = now + 1000 * 1000;
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &w->insts)
    {
        inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
        if (in->slot && in->killed && in->grace_mono < due)
            due = in->grace_mono;
        if (in->spare || in->killed)
            continue;
        if (in->kill_at_mono < due)
            due = in->kill_at_mono;
        if (w->grain->memory > 0 && !w->threads && w->next_mem_poll < due)
            due = w->next_mem_poll;
    }
    sand_list_foreach_safe(pos, tmp, &w->retries)
    {
        retry_t *r = SAND_CONTAINER_OF(pos, retry_t, link);
        if (r->due_mono < due)
            due = r->due_mono;
    }
    if (!w->reuse && !w->threads && w->zfd < 0 && !w->nspares && !w->draining &&
        w->dispatched_mono + SPARE_DELAY_US < due)
        due = w->dispatched_mono + SPARE_DELAY_US; /* the deferred spare fork */
    int64_t ms = (due - now + 999) / 1000;
    return ms < 0 ? 0 : (int)ms;
}

/* ---- the read connection ------------------------------------------------------------- */

static int free_slots(worker_t *w)
{
    if (w->reuse || w->once)
        return w->once && (w->draining || w->running) ? 0 : 1;
    int64_t n = w->grain->concurrency - w->running - (int64_t)w->waiting.len;
    return n > 0 ? (int)n : 0;
}

static void group_create(worker_t *w)
{
    wr_flush(w);
    wr_replies(w, true); /* the reply read next must be this command's */
    redisReply *r =
        redisCommand(w->wr, "XGROUP CREATE %s %s 0 MKSTREAM", w->qkey, SAND_GROUP_WORKERS);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
        SAND_WARN(COMP, "create group on '%s': %s", w->qkey, r->str);
    if (r)
        freeReplyObject(r);
}

static bool spare_due(const worker_t *w)
{
    if (w->reuse || w->threads || w->zfd >= 0 || w->nspares || w->draining)
        return false;
    return w->running == 0 || sand_mono_us() - w->dispatched_mono >= SPARE_DELAY_US;
}

static void maybe_read(worker_t *w)
{
    int n = free_slots(w);
    if (w->rd_busy || n == 0 || w->stop || w->draining)
        return;
    cmd_t c = {0};
    args(&c, "XREADGROUP");
    args(&c, "GROUP");
    args(&c, SAND_GROUP_WORKERS);
    args(&c, w->consumer);
    args(&c, "COUNT");
    argi(&c, n);
    if (!w->pel_mode) {
        args(&c, "BLOCK");
        argi(&c, READ_BLOCK_MS);
    }
    args(&c, "STREAMS");
    args(&c, w->qkey);
    args(&c, w->pel_mode ? w->cursor : ">");
    if (redisAppendCommandArgv(w->rd, c.argc, c.argv, c.lens) != REDIS_OK)
        goto lost;
    int done = 0;
    while (!done)
        if (redisBufferWrite(w->rd, &done) != REDIS_OK)
            goto lost;
    w->rd_busy = true;
    return;
lost:
    SAND_ERROR(COMP, "redis read connection lost: %s", w->rd->errstr);
    w->fatal = w->stop = true;
}

static void ack_deleted(worker_t *w, const char *sid)
{
    cmd_t c = {0};
    args(&c, "XACK");
    args(&c, w->qkey);
    args(&c, SAND_GROUP_WORKERS);
    args(&c, sid);
    wr_cmd(w, &c);
}

static void on_read_reply(worker_t *w, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOGROUP", 7) == 0) {
            group_create(w);
        } else {
            SAND_ERROR(COMP, "read '%s': %s", w->qkey, r->str);
            usleep(100 * 1000);
        }
        return;
    }
    size_t got = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
        const redisReply *list = r->element[0]->element[1];
        for (size_t i = 0; list->type == REDIS_REPLY_ARRAY && i < list->elements; i++) {
            char sid[48];
            entry_t *e = entry_parse(w, list->element[i], sid, sizeof(sid));
            got++;
            if (w->pel_mode && sid[0])
                sand_strlcpy(w->cursor, sid, sizeof(w->cursor));
            if (!e) {
                if (sid[0])
                    ack_deleted(w, sid); /* deleted while pending: nothing left to run */
                continue;
            }
            if (w->reuse) {
                dispatch_reuse(w, e);
            } else if (w->threads) {
                dispatch_thread(w, e);
            } else if (w->zfd >= 0 && !w->nspares) {
                /* the zygote is forking one: the event waits for it */
                if (sand_vec_push(&w->waiting, e) < 0) {
                    w->fatal = w->stop = true;
                    entry_free(e);
                }
            } else if (w->nspares || fork_spare(w) == 0) {
                /* normally a spare is waiting; only a burst forks on the event's path */
                dispatch_fork(w, e);
            } else {
                w->fatal = w->stop = true;
                SAND_ERROR(COMP, "cannot fork a grain instance");
                entry_free(e);
            }
            if (w->once && !w->draining) {
                /* its one event: finish it (within the grain's timeout), then exit */
                w->draining = true;
                w->drain_until = sand_mono_us() + (w->grain->timeout_ms + 5000) * 1000;
            }
        }
    }
    if (w->pel_mode && got == 0) {
        w->pel_mode = false;
        SAND_DEBUG(COMP, "'%s': pending entries done, reading new events", w->qkey);
    }
}

static void rd_readable(worker_t *w)
{
    if (redisBufferRead(w->rd) != REDIS_OK) {
        SAND_ERROR(COMP, "redis read connection lost: %s", w->rd->errstr);
        w->fatal = w->stop = true;
        return;
    }
    void *reply = NULL;
    if (redisReaderGetReply(w->rd->reader, &reply) != REDIS_OK) {
        SAND_ERROR(COMP, "redis protocol error on the read connection");
        w->fatal = w->stop = true;
        return;
    }
    if (!reply)
        return;
    w->rd_busy = false;
    on_read_reply(w, reply);
    freeReplyObject(reply);
}

/* ---- the loop ------------------------------------------------------------------------ */

/* Whether the loop must wake up for the zygote's messages: a spare is missing, or an instance
 * ended (or was killed) without an outcome and its exit status makes it. Otherwise the new
 * spares and the exits of instances already routed are read on the loop's next turn, which
 * saves two wake-ups per event under load. */
static bool zygote_needed(worker_t *w)
{
    if (w->nspares == 0 || w->waiting.len || w->draining || w->stop)
        return true;
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &w->insts)
    {
        inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
        if (!in->spare && !in->routed && !in->reaped && (in->fd_res < 0 || in->killed))
            return true;
    }
    return false;
}

static void loop(worker_t *w)
{
    struct epoll_event evs[64];
    if ((ep_fd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        SAND_ERROR(COMP, "epoll: %s", strerror(errno));
        w->fatal = true;
        return;
    }
    ep_add(w->sig_rfd, EP_SIGNAL);
    ep_add(w->rd->fd, EP_READ);
    while (!w->stop) {
        /* The next spare is forked when the worker is idle: after the instances in flight have
         * reported (so their outcomes are routed first, not after a fork), or SPARE_DELAY_US
         * after the last hand-off when instances keep running. */
        if (spare_due(w) && fork_spare(w) < 0) {
            usleep(100 * 1000);
            continue;
        }
        if (w->zfd >= 0)
            zygote_ask(w);
        maybe_read(w);
        wr_flush(w);
        if (w->stop)
            break;
        if (w->zfd >= 0) {
            bool need = zygote_needed(w);
            if (need != w->zwatched) {
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EP_ZYGOTE};
                epoll_ctl(ep_fd, need ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->zfd, &ev);
                w->zwatched = need;
            }
            if (!need)
                zygote_readable(w); /* what is there already, without a wake-up for it */
        }
        int n = epoll_wait(ep_fd, evs, (int)SAND_ARRAY_LEN(evs), poll_timeout(w));
        if (n < 0 && errno != EINTR) {
            SAND_ERROR(COMP, "epoll_wait: %s", strerror(errno));
            w->fatal = true;
            break;
        }
        /* Instances' pipes first: nothing here frees an instance (zygote_readable() and
         * reap() do), so every tag of this batch stays valid. */
        bool zyg = false, rd = false, sig = false;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == EP_SIGNAL || tag == EP_READ || tag == EP_ZYGOTE) {
                zyg |= tag == EP_ZYGOTE;
                rd |= tag == EP_READ;
                sig |= tag == EP_SIGNAL;
                continue;
            }
            inst_t *in = (inst_t *)(uintptr_t)(tag & ~(uint64_t)3);
            int which = (int)(tag & 3) - 1;
            int *fd = which < 0 ? &in->fd_res : &in->fd_std[which];
            if (*fd >= 0)
                inst_read(w, in, fd, which);
        }
        if (zyg && w->zfd >= 0)
            zygote_readable(w);
        if (rd)
            rd_readable(w); /* not busy: the connection closed (an error, which stops) */
        if (sig) {
            char drain[64];
            while (read(w->sig_rfd, drain, sizeof(drain)) > 0) {
            }
        }
        reap(w);
        check_limits(w);
        if (sig_stop && !w->draining) {
            /* stop taking events; let the instances in flight finish and be routed, so a
             * redeploy or a stop does not fail them (what is left is re-read by the next
             * worker from the pending entries) */
            w->draining = true;
            w->drain_until = sand_mono_us() + DRAIN_US;
        }
        if (w->draining && (w->running == 0 || sand_mono_us() > w->drain_until))
            w->stop = true;
        if (w->once && !w->draining && sand_mono_us() > w->once_idle_until)
            w->stop = true;
    }
}

/* ---- start and stop ------------------------------------------------------------------ */

static void shutdown_instances(worker_t *w)
{
    sand_list_t *pos, *tmp;
    if (w->threads)
        shutdown_threads(w);
    sand_list_foreach_safe(pos, tmp, &w->insts)
    {
        inst_t *in = SAND_CONTAINER_OF(pos, inst_t, link);
        signal_inst(in, SIGKILL);
        if (!in->zyg)
            waitpid(in->pid, NULL, 0); /* the zygote reaps its own */
        sand_list_remove(&in->link);
        if (!in->spare && !in->routed)
            w->running--;
        inst_free(in);
    }
    w->nspares = 0;
    sand_vec_release(&w->waiting, (void (*)(void *))entry_free);
    close_fd(&ep_fd);
    if (w->zfd >= 0) {
        close_fd(&w->zfd);
        kill(w->zpid, SIGKILL);
        waitpid(w->zpid, NULL, 0);
    }
    /* Events waiting for a retry stay pending in the stream; the next worker runs them. */
    sand_list_foreach_safe(pos, tmp, &w->retries)
    {
        retry_t *r = SAND_CONTAINER_OF(pos, retry_t, link);
        sand_list_remove(&r->link);
        entry_free(r->ent);
        free(r->error);
        free(r);
    }
}

static int setup_signals(worker_t *w)
{
    int sp[2];
    if (pipe2(sp, O_CLOEXEC | O_NONBLOCK) < 0)
        return SAND_EIO;
    w->sig_rfd = sp[0];
    sig_wfd = sp[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: sand-worker-* --grain NAME (environment: %s, %s, %s, %s, %s, %s)\n",
            SAND_ENV_REDIS, SAND_ENV_APP, SAND_ENV_BUNDLE, SAND_ENV_INSTANCE, SAND_ENV_BUS_MODE,
            SAND_ENV_REDIS_USER);
}

int sand_worker_main(int argc, char **argv, const sand_worker_runtime_t *rt)
{
    worker_t w;
    sand_err err = {0};
    const char *grain_name = getenv("SAND_GRAIN");
    int rc = 1;

    memset(&w, 0, sizeof(w));
    w.rt = rt;
    w.sig_rfd = -1;
    w.zfd = -1;
    sand_vec_init(&w.waiting);
    sand_list_init(&w.insts);
    sand_list_init(&w.retries);
    sand_list_init(&w.idle);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--grain") == 0 && i + 1 < argc)
            grain_name = argv[++i];
        else if (strncmp(argv[i], "--grain=", 8) == 0)
            grain_name = argv[i] + 8;
        else {
            usage();
            return 2;
        }
    }
    sand_log_level lvl;
    if (sand_log_parse_level(env_or("SAND_LOG_LEVEL", "info"), &lvl) == 0)
        sand_log_set_level(lvl);
    const char *bundle = getenv(SAND_ENV_BUNDLE);
    w.redis_url = getenv(SAND_ENV_REDIS);
    if (!grain_name || !*grain_name || !bundle || !w.redis_url) {
        usage();
        return 2;
    }
    w.redis_user = getenv(SAND_ENV_REDIS_USER);
    w.redis_pass = getenv(SAND_ENV_REDIS_PASS);
    w.reuse = strcmp(env_or(SAND_ENV_INSTANCE, "fork"), "reuse") == 0;
    w.global_bus = strcmp(env_or(SAND_ENV_BUS_MODE, "hierarchical"), "global") == 0;
    w.threads = rt->threads && !w.reuse;
    int64_t v;
    w.log_max = 10000;
    if (sand_parse_int(env_or(SAND_ENV_LOG_MAX, "10000"), 1, INT64_MAX, &v, &err) == 0)
        w.log_max = v;
    w.value_max = (size_t)SAND_WORKER_VALUE_MAX_DEFAULT;
    if (getenv(SAND_ENV_VALUE_MAX) && sand_parse_size(getenv(SAND_ENV_VALUE_MAX), &v, &err) == 0)
        w.value_max = (size_t)v;
    w.dl.url[0] = w.redis_url;
    w.dl.user[0] = w.redis_user;
    w.dl.pass[0] = w.redis_pass;
    w.dl.url[1] = env_or(SAND_ENV_GREDIS, w.redis_url);
    w.dl.user[1] = getenv(SAND_ENV_GREDIS) ? getenv(SAND_ENV_GREDIS_USER) : w.redis_user;
    w.dl.pass[1] = getenv(SAND_ENV_GREDIS) ? getenv(SAND_ENV_GREDIS_PASS) : w.redis_pass;

    sand_diags_t diags;
    sand_diags_init(&diags);
    if (sand_app_load(bundle, NULL, &w.app, &diags, &err) < 0) {
        sand_bytes_t text;
        sand_bytes_init(&text, 1 << 20);
        sand_diags_format(&diags, "app.yaml", &text);
        SAND_ERROR(COMP, "load app '%s': %s\n%s", bundle, err.msg, text.data ? text.data : "");
        sand_bytes_release(&text);
        sand_diags_release(&diags);
        return 2;
    }
    sand_diags_release(&diags);
    w.app_name = env_or(SAND_ENV_APP, w.app->name);
    w.grain = sand_app_grain(w.app, grain_name);
    if (!w.grain) {
        SAND_ERROR(COMP, "app '%s' has no grain '%s'", w.app->name, grain_name);
        goto out;
    }
    snprintf(w.qkey, sizeof(w.qkey), SAND_KEY_QUEUE_FMT, w.app_name, w.grain->name);
    snprintf(w.hakey, sizeof(w.hakey), SAND_KEY_AGENT_FMT, w.app_name);
    snprintf(w.logkey, sizeof(w.logkey), SAND_KEY_LOG_FMT, w.app_name);
    sand_bytes_t cp;
    sand_bytes_init(&cp, 8192);
    if (sand_bytes_appendf(&cp, "%s/%s", w.app->root ? w.app->root : bundle, w.grain->code) < 0) {
        sand_bytes_release(&cp);
        goto out;
    }
    w.code_path = sand_bytes_steal(&cp, NULL);

    if (setup_signals(&w) < 0)
        goto out;
    if (!(w.wr = sand__redis_connect(w.redis_url, w.redis_user, w.redis_pass, &err)) ||
        !(w.rd = sand__redis_connect(w.redis_url, w.redis_user, w.redis_pass, &err))) {
        SAND_ERROR(COMP, "%s", err.msg);
        goto out;
    }
    group_create(&w);

    sand_worker_info_t info = {w.app, w.grain, w.app->root ? w.app->root : bundle, w.code_path};
    sand_err lerr = {0};
    if (w.threads)
        json_object_seed(0); /* before any instance thread uses jansson */
    if (rt->load(&info, &w.rt_state, &w.load_detail, &lerr) < 0) {
        w.load_error = sand_strdup(lerr.msg);
        SAND_ERROR(COMP, "grain '%s': cannot load '%s': %s", w.grain->name, w.code_path, lerr.msg);
        log_line(&w, NULL, "system", lerr.msg, strlen(lerr.msg));
        if (w.load_detail)
            log_line(&w, NULL, "system", w.load_detail, strlen(w.load_detail));
    }
    if (!w.reuse && !w.threads && sand_worker_heap_reserve() < 0)
        SAND_WARN(COMP, "grain '%s': no address space for the instance heap: %s", w.grain->name,
                  strerror(errno));
    w.once = getenv(SAND_ENV_ONCE) != NULL;
    if (!w.reuse && !w.threads && !w.once && sand__text_to_hugepages() < 0)
        SAND_WARN(COMP, "grain '%s': code stays on small pages: %s", w.grain->name,
                  strerror(errno));
    /* a once-worker forks its single instance itself */
    if (!w.reuse && !w.threads && !w.once && zygote_start(&w) < 0)
        SAND_WARN(COMP, "grain '%s': no zygote (%s): the worker forks its instances itself",
                  w.grain->name, strerror(errno));
    if (w.threads) {
        /* one thread ready ahead of the first event, as the spare instance of fork mode */
        tslot_t *s = slot_new(&w);
        if (s)
            sand_list_insert_tail(&w.idle, &s->link);
    }
    if (w.once) {
        /* a private consumer: once-workers of one grain run side by side, each must read only
         * its own pending entries; it gives up when no event comes */
        snprintf(w.consumer, sizeof(w.consumer), "once-%d-%lld", (int)getpid(),
                 (long long)sand_now_us());
        w.once_idle_until = sand_mono_us() + ONCE_IDLE_US;
    } else {
        sand_strlcpy(w.consumer, SAND_CONSUMER_WORKER, sizeof(w.consumer));
    }
    w.pel_mode = !w.once;
    sand_strlcpy(w.cursor, w.once ? ">" : "0", sizeof(w.cursor));
    SAND_INFO(COMP, "grain '%s' of app '%s' (%s, %s) serving '%s'", w.grain->name, w.app_name,
              rt->name,
              w.reuse     ? "reuse"
              : w.threads ? "threads"
                          : "fork",
              w.qkey);
    loop(&w);
    rc = w.fatal ? 1 : 0;
out:
    shutdown_instances(&w);
    if (w.wr) {
        wr_flush(&w);
        wr_replies(&w, true);
        redisFree(w.wr);
    }
    if (w.rd)
        redisFree(w.rd);
    sand__dl_release(&w.dl);
    if (w.sig_rfd >= 0)
        close(w.sig_rfd);
    if (sig_wfd >= 0)
        close(sig_wfd);
    sig_wfd = -1;
    if (rt->unload && w.rt_state)
        rt->unload(w.rt_state);
    free(w.code_path);
    free(w.load_error);
    free(w.load_detail);
    sand_app_free(w.app);
    return rc;
}
