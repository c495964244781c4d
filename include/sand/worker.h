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
    /* Called around every fork() (may be NULL): of the zygote by the worker, of each instance
     * by the zygote (or by the worker when it has no zygote). */
    void (*before_fork)(void *state);
    void (*after_fork)(void *state, bool child);
    /* Called in a new instance first thing after fork(), before after_fork(child = true) and
     * before it waits for its event (may be NULL): the process is a grain instance from now on
     * (e.g. switch to the instance heap, so that what after_fork() allocates lands there). */
    void (*instance_start)(void *state);
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

/* ---- the instance heap (heap.c), for runtimes that fork ------------------------------------
 * An allocator for what a forked grain instance allocates, carved from a region the worker
 * reserved and never touched, so that an instance writes a few fresh pages instead of the
 * worker's shared ones (docs/internals/instance-heap.md). Blocks that are not the heap's
 * ("foreign": allocated by the worker before the fork) are never written: free is a no-op and
 * realloc copies them. Each call names the allocator the block would otherwise come from (the
 * fallback): it serves the requests once the region is exhausted, and from then on also frees
 * foreign blocks. Thread-safe. The core reserves the region in fork mode before the first fork;
 * a runtime routes its allocations there in after_fork(child = true). */
typedef struct sand_heap_fallback {
    void *ctx;
    void *(*malloc)(void *ctx, size_t n);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *p, size_t n);
    void (*free)(void *ctx, void *p);
    /* The usable size of a foreign block (malloc_usable_size), or NULL when the fallback
     * cannot tell: realloc of a foreign block then goes to the fallback's realloc. */
    size_t (*usable)(void *ctx, void *p);
} sand_heap_fallback_t;

/* Reserves the region (virtual memory only), once, in the worker before its first fork.
 * Returns 0, or -1 when the address space cannot be reserved (instances then keep the worker's
 * allocators). */
int sand_worker_heap_reserve(void);

/* True when the region is reserved (the heap can serve this instance). */
bool sand_worker_heap_ready(void);

void *sand_worker_heap_malloc(const sand_heap_fallback_t *fb, size_t n);
void *sand_worker_heap_calloc(const sand_heap_fallback_t *fb, size_t nelem, size_t elsize);
void *sand_worker_heap_realloc(const sand_heap_fallback_t *fb, void *p, size_t n);
void sand_worker_heap_free(const sand_heap_fallback_t *fb, void *p);

/* An aligned block (align a power of two, at most 64 KiB) from the heap, or NULL when the
 * heap cannot serve it (the caller then asks its own allocator). */
void *sand_worker_heap_memalign(size_t align, size_t n);

/* True when p lies in the heap's region. */
bool sand_worker_heap_owns(const void *p);

/* Usable size of a heap block (p owned by the heap). */
size_t sand_worker_heap_usable(const void *p);

/* Bytes of the region taken so far (whole chunks, touched or not). */
size_t sand_worker_heap_used(void);

#endif
