/*
 * The execution engine of the host agent: it starts executions (paper steps 0-2: the entry event
 * goes to the first grain's local queue, with a backup on the global bus), consumes the host
 * agent's local queues (LQHA, steps 5b/8/9), backs every produced event up on the global bus
 * flagged `processing` (6a/6b) and flags consumed events `finished` (10b), records per-step
 * progress, finalises each execution exactly once (succeeded, failed, timed_out) and answers the
 * waiting client (11). In bus.mode global it also forwards every hop through Kafka. Execution
 * records live in memory while running and recently finished, and in Redis (sandd:x:{id}) for
 * the retention period, so a restarted sandd continues executions that were in flight.
 * Everything runs on the daemon's libuv loop thread.
 */
#ifndef SAND_ENGINE_H
#define SAND_ENGINE_H

#include "sand/bus.h"
#include "sand/common.h"
#include "sand/workflow.h"

#include <uv.h>

typedef struct sand_engine sand_engine_t;
typedef struct sand_exec sand_exec_t;

typedef enum sand_exec_status {
    SAND_EXEC_RUNNING = 0,
    SAND_EXEC_SUCCEEDED = 1,
    SAND_EXEC_FAILED = 2,
    SAND_EXEC_TIMED_OUT = 3,
} sand_exec_status_t;

/* Finds the deployed model of an app by name (NULL when not deployed). */
typedef const sand_app_t *(*sand_engine_app_cb)(const char *app, void *ud);

/* Observes finished steps and executions (metrics). Runs on the loop thread. */
typedef struct sand_engine_observer {
    void (*step_done)(const char *app, const char *workflow, const char *step, const char *status,
                      int64_t queued_us, int64_t started_us, int64_t finished_us, void *ud);
    void (*exec_done)(const char *app, const char *workflow, sand_exec_status_t status,
                      int64_t started_us, int64_t finished_us, void *ud);
    void *ud;
} sand_engine_observer_t;

typedef struct sand_engine_opts {
    uv_loop_t *loop;
    sand_lbus_t *lbus; /* admin connection to the local bus (borrowed) */
    sand_gbus_t *gbus; /* global bus (borrowed) */
    bool global_mode;  /* bus.mode global: every hop through Kafka */
    int64_t default_timeout_ms;
    int64_t retention_ms;
    size_t max_finished_in_memory; /* 0 -> 4096 */
    sand_engine_app_cb app_lookup;
    void *app_ud;
    sand_engine_observer_t observer;
    /* Called for every event that enters a grain's local queue (entry, forwarded, and the hops
     * workers publish, seen in their LQHA entries); may be NULL. Cold mode starts a sandbox
     * per event from it. */
    void (*enqueued)(const char *app, const char *grain, void *ud);
    void *enqueued_ud;
} sand_engine_opts_t;

/* Runs once when an execution reaches a final state (or with exec NULL and status
 * SAND_ECANCELED at shutdown). exec is valid during the call only. */
typedef void (*sand_exec_done_cb)(sand_engine_t *eng, const sand_exec_t *exec, int status,
                                  void *ud);

int sand_engine_new(const sand_engine_opts_t *opts, sand_engine_t **out, sand_err *err);

/* Fails every waiter with SAND_ECANCELED, stops the timer; memory goes after the loop ran the
 * close callback. */
void sand_engine_close(sand_engine_t *eng);

/* Starts an execution of workflow wf of app (or of grain alone when wf is NULL) with the JSON
 * text input (len bytes; validated by the caller). When done is not NULL it runs once when the
 * execution is final (blocking invocations). Writes the new execution id to id_out (>= 33
 * bytes). Returns 0 or < 0 with err set (the execution was not started). */
int sand_engine_start(sand_engine_t *eng, const sand_app_t *app, const sand_workflow_t *wf,
                      const sand_grain_t *grain, const char *input, size_t len,
                      sand_exec_done_cb done, void *ud, char *id_out, sand_err *err);

/* Forgets the waiter of execution id (its client went away); the execution goes on. */
void sand_engine_forget_waiter(sand_engine_t *eng, const char *id);

/* Hands one LQHA entry to the engine (called by the daemon's stream reader). The engine
 * acknowledges it on the local bus once handled. */
void sand_engine_on_agent_entry(sand_engine_t *eng, const sand_lbus_entry_t *entry);

/* Hands one global-bus record to the engine (called by the daemon's Kafka consumer). */
void sand_engine_on_record(sand_engine_t *eng, const sand_gbus_record_t *rec);

/* Reloads the executions that were running when a previous sandd stopped (from Redis), then
 * calls done(status). Call once at start-up, before LQHA entries are handed over. */
int sand_engine_recover(sand_engine_t *eng, void (*done)(int status, void *ud), void *ud,
                        sand_err *err);

/* Recovery of a lost local bus (its Redis restarted empty): hand every record read back from
 * the start of the apps' global-bus topics to _add, then call _finish, which delivers again
 * every event backed up `processing` and never flagged `finished` whose execution is not final
 * (re-creating the records of executions the local bus had). Returns the number delivered. */
void sand_engine_replay_add(sand_engine_t *eng, const sand_gbus_record_t *rec);
size_t sand_engine_replay_finish(sand_engine_t *eng);

/* Fails every running execution of app (the app is being deleted). */
void sand_engine_fail_app(sand_engine_t *eng, const char *app, const char *why);

/* Looks up the record of execution id: cb gets status 0 and the record JSON text, or
 * SAND_ENOTFOUND. Runs once, possibly synchronously. */
typedef void (*sand_exec_lookup_cb)(int status, const char *json, size_t len, void *ud);
void sand_engine_lookup(sand_engine_t *eng, const char *id, sand_exec_lookup_cb cb, void *ud);

/* Accessors of an execution (valid during a done callback). */
const char *sand_exec_id(const sand_exec_t *x);
sand_exec_status_t sand_exec_status(const sand_exec_t *x);
const char *sand_exec_status_name(sand_exec_status_t st);
/* Output JSON (succeeded) or error object JSON (failed, timed_out); NULL when absent. */
const char *sand_exec_output(const sand_exec_t *x, size_t *len);
const char *sand_exec_error(const sand_exec_t *x, size_t *len);
/* Appends the execution record JSON (SPEC section 5) to out. */
int sand_exec_record_json(const sand_exec_t *x, sand_bytes_t *out);

typedef struct sand_engine_stats {
    uint64_t started, succeeded, failed, timed_out;
    uint64_t agent_entries, backups, forwarded, running;
} sand_engine_stats_t;
void sand_engine_stats(const sand_engine_t *eng, sand_engine_stats_t *out);

/* True when the JSON text nests at most max_depth levels of arrays and objects (SPEC: 512).
 * A linear scan that skips strings; it does not otherwise validate the text. */
bool sand_json_depth_ok(const char *text, size_t len, int max_depth);

#endif
