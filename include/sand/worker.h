/*
 * The shared grain worker core (library sand_worker): everything a grain worker does that does
 * not depend on the language. It reads its configuration from the environment (SAND_ENV_* in
 * protocol.h), loads app.yaml, asks the runtime to load the grain's code once, then runs one
 * poll() loop: takes events from the grain's queue (its own pending entries first), hands each to
 * a pre-forked grain instance (or runs it in place in reuse mode), collects the instance's
 * outcome over a pipe, enforces timeout and memory limits, and routes the result in one
 * MULTI/EXEC (docs/internals/protocol.md). A runtime (Python, C) plugs in through
 * sand_worker_runtime_t and reports what its handler did through the sand_worker_ctx_* calls.
 * The worker loop is single-threaded; every callback runs on its only thread, in the worker
 * process (load, before_fork, after_fork with child=false, interrupt) or in the grain instance
 * (after_fork with child=true, invoke). A runtime that cannot fork (Java) sets threads: invoke()
 * then runs on instance threads of the worker (thread_start/thread_stop too), one event at a
 * time per thread.
 */
#ifndef SAND_WORKER_H
#define SAND_WORKER_H

#include "sand/common.h"
#include "sand/grain.h"
#include "sand/workflow.h"

#define SAND_WORKER_LOG_LINE_MAX      (16 * 1024)        /* one log line, bytes */
#define SAND_WORKER_LOG_BYTES_MAX     (1024 * 1024)      /* stdout+stderr logged per instance */
#define SAND_WORKER_OUTPUT_MAX        (64 * 1024 * 1024) /* outcome frames per instance */
#define SAND_WORKER_VALUE_MAX_DEFAULT (64LL * 1024 * 1024)

/* What the runtime is told about the grain it serves. All borrowed from the worker, valid for
 * the worker's lifetime. */
typedef struct sand_worker_info {
    const sand_app_t *app;
    const sand_grain_t *grain;
    const char *bundle;    /* absolute bundle directory */
    const char *code_path; /* bundle + grain->code */
} sand_worker_info_t;

typedef struct sand_worker_runtime {
    const char *name;            /* "python", "c" */
    const char *load_error_type; /* error type of every event when load failed ("ImportError") */
    /* Loads the grain's code, once, in the worker before any fork. Returns 0 and *state, or < 0
     * with a message in err (the worker then stays up and fails each event with
     * load_error_type and that message; detail, when not NULL, is kept as the traceback and
     * freed by the worker). */
    int (*load)(const sand_worker_info_t *info, void **state, char **detail, sand_err *err);
    /* Called around every fork() (may be NULL). */
    void (*before_fork)(void *state);
    void (*after_fork)(void *state, bool child);
    /* Runs the handler once for ev. Reports through sand_worker_ctx_started/finished/output/
     * fail; returning without reporting an output or a failure counts as "Crashed". */
    void (*invoke)(void *state, sand_context *ctx, const sand_event *ev);
    /* Releases state at worker shutdown, in the worker (may be NULL). Called also when load
     * failed but left a state behind. */
    void (*unload)(void *state);

    /* ---- threads mode (Java): set threads = true and the core runs each event's invoke() on
     * an instance thread of the worker process instead of a forked instance: at most the
     * grain's concurrency of them at once, kept in a pool and reused. before_fork/after_fork are
     * then never called. invoke() runs on the instance thread and must leave nothing behind
     * that a later event on the same thread could observe. */
    bool threads;
    /* Called on each new instance thread before its first invoke() (attach to the runtime).
     * Returns the thread's token, handed back to thread_stop and interrupt (may be NULL). */
    void *(*thread_start)(void *state);
    /* Called on the instance thread right before it exits (detach). May be NULL. */
    void (*thread_stop)(void *state, void *token);
    /* Asks the handler running on the thread of token to stop. Called on the worker's loop
     * thread while the instance thread is inside invoke() for the event that must stop (the
     * core holds the thread's lock, so the thread cannot move on to another event meanwhile):
     * force = false when the instance timed out (Thread.interrupt()), true when it is abandoned
     * after SAND_WORKER_THREAD_GRACE_MS more (a last attempt such as Thread.stop()). Must not
     * block. */
    void (*interrupt)(void *state, void *token, bool force);
} sand_worker_runtime_t;

/* Threads mode: how long an interrupted instance thread may take to end before its slot is
 * released and the thread is abandoned (it keeps running; its outcome is discarded). */
#define SAND_WORKER_THREAD_GRACE_MS 1000

/* The program: parses --grain NAME (or SAND_GRAIN), loads the app and the code, runs the loop
 * until SIGTERM/SIGINT. Returns the process exit code (0 on a clean stop, 1 when Redis is lost
 * or the configuration is wrong; the supervisor restarts the worker and it re-reads its pending
 * entries). Runs on the main thread and never returns before shutdown. */
int sand_worker_main(int argc, char **argv, const sand_worker_runtime_t *rt);

/* ---- reporting, called by a runtime's invoke() inside the instance ----------------------- */

/* Records the epoch microseconds right before / right after the user's handler. */
void sand_worker_ctx_started(sand_context *ctx);
void sand_worker_ctx_finished(sand_context *ctx);

/* The handler succeeded with this output (one JSON value, len bytes). */
void sand_worker_ctx_output(sand_context *ctx, const char *json, size_t len);

/* The handler failed. type is the exception class or "Error"; traceback may be NULL. */
void sand_worker_ctx_fail(sand_context *ctx, const char *type, const char *message,
                          const char *traceback);

/* The message recorded by sand_ctx_error(), or NULL. Owned by ctx. */
const char *sand_worker_ctx_error_message(const sand_context *ctx);

/* The value size limit of the data layer (SAND_VALUE_MAX, default 64 MiB). */
size_t sand_worker_ctx_value_max(const sand_context *ctx);

/* Writes raw bytes as one log line of the given kind: "log" (context.log), or "stdout",
 * "stderr", "system" for runtimes that capture an instance's output themselves (threads
 * mode); any other kind is logged as "log". */
void sand_worker_ctx_log_line(sand_context *ctx, const char *kind, const char *line, size_t len);

#endif
