/*
 * Application sandboxes: a driver interface that sandd uses on its single libuv loop to start,
 * stop, watch and re-adopt the sandbox of each application, with two drivers behind it. The
 * "process" driver runs the in-sandbox supervisor as a detached process group on the host (no
 * isolation: development and tests only); the "docker" driver runs it as PID 1 of a container
 * created through the Docker Engine API on /var/run/docker.sock. Either way the first process of
 * a sandbox is `sand-supervisor`, which starts one grain worker per grain. Nothing here forks
 * without exec; every function runs on the loop thread unless it says otherwise. The Docker
 * driver performs its HTTP calls on one private worker thread (blocking libcurl over the unix
 * socket, one request at a time in FIFO order) that reports each result back to the loop with
 * uv_async_send, so no call here ever blocks the loop on Docker.
 *
 * Async contract (libuv's): if a function that takes a callback returns an error, the callback
 * is never called; if it returns 0 the callback runs exactly once on the loop thread, also at
 * driver close, then with SAND_ECANCELED.
 */
#ifndef SAND_SANDBOX_H
#define SAND_SANDBOX_H

#include "sand/common.h"

#include <sys/types.h>
#include <uv.h>

typedef struct sand_sbx_driver sand_sbx_driver_t;
typedef struct sand_sbx sand_sbx_t;

typedef enum sand_sbx_kind {
    SAND_SBX_PROCESS = 0, /* plain processes on the host, no isolation */
    SAND_SBX_DOCKER = 1,  /* one container per sandbox */
} sand_sbx_kind_t;

typedef enum sand_sbx_granularity {
    SAND_SBX_GRAN_APPLICATION = 0, /* one sandbox per app, all its grains inside (SAND) */
    SAND_SBX_GRAN_GRAIN = 1,       /* one sandbox per grain (benchmark baseline) */
} sand_sbx_granularity_t;

typedef enum sand_sbx_state {
    SAND_SBX_STARTING = 0, /* requested; docker: container being created/started */
    SAND_SBX_RUNNING = 1,  /* the supervisor runs */
    SAND_SBX_STOPPING = 2, /* sand_sbx_stop() in progress */
    SAND_SBX_STOPPED = 3,  /* stopped on request; nothing of it is left */
    SAND_SBX_EXITED = 4,   /* died on its own (exit_cb was called) or failed to start */
} sand_sbx_state_t;

/* exit_cb status when the sandbox was adopted from a previous sandd and is not our child, so its
 * exit code cannot be known. */
#define SAND_SBX_EXIT_UNKNOWN 1000

/* Default grace period between SIGTERM (docker: stop) and SIGKILL. */
#define SAND_SBX_STOP_GRACE_MS 10000

/* Driver options. All strings are borrowed during sand_sbx_driver_open() only (copied). */
typedef struct sand_sbx_opts {
    const char *kind;          /* "process" | "docker" | "auto" (NULL = "auto"): docker when the
                                  Docker socket answers GET /_ping, else process with a warning */
    const char *data_dir;      /* sandd's data dir; pid files go to data_dir/apps/APP/ */
    const char *bin_dir;       /* holds sand-supervisor and sand-worker-* */
    const char *lib_dir;       /* runtime files (sand.jar, python package); may be NULL */
    const char *image;         /* docker: image to run; NULL or "" = the base image the driver
                                  builds locally at first use ("sand-base:1") */
    const char *granularity;   /* "application" (NULL) | "grain": see sand_sbx_driver_granularity */
    int64_t memory;            /* default per-sandbox memory limit in bytes (0 = none) */
    int64_t pids;              /* default per-sandbox pids limit (0 = none) */
    const char *redis_socket;  /* host path of the local bus Redis unix socket; exported to the
                                  sandbox as SAND_REDIS=unix:PATH (docker: its directory is
                                  bind-mounted and PATH is the path inside); NULL = do not set */
    const char *docker_socket; /* NULL = /var/run/docker.sock */
    int64_t stop_grace_ms;     /* 0 = SAND_SBX_STOP_GRACE_MS */
    int64_t watch_interval_ms; /* liveness poll of adopted sandboxes; 0 = 500 ms */
} sand_sbx_opts_t;

/* What to run. Borrowed during sand_sbx_start() only (copied). */
typedef struct sand_sbx_spec {
    const char *app;           /* app name (SAND_APP) */
    int64_t version;           /* deployed version of the app (docker label sand.version) */
    const char *bundle_dir;    /* unpacked bundle; read-only inside (docker: mounted at /app) */
    const char *const *grains; /* NULL-terminated grain names to run; NULL = every grain of the
                                  app. With granularity grain sandd starts one sandbox per grain
                                  and passes a one-element list. */
    const char *const *env;    /* NULL-terminated "K=V" strings: SAND_ENV_* values including the
                                  app's Redis ACL user and password. The driver sets SAND_APP,
                                  SAND_BUNDLE, SAND_GRAINS, SAND_BIN_DIR, SAND_LIB_DIR and
                                  SAND_REDIS itself; entries with those names here are ignored. */
    int64_t memory;            /* bytes; 0 = the driver default; docker only (process: ignored) */
    int64_t pids;              /* 0 = the driver default; docker only (process: ignored) */
} sand_sbx_spec_t;

/* Memory and process figures of a running sandbox. */
typedef struct sand_sbx_stats {
    int64_t memory;       /* bytes in use (docker: cgroup usage minus inactive file cache;
                             process: sum of RSS of the process group) */
    int64_t memory_limit; /* bytes; 0 = none */
    int64_t pids;         /* processes in the sandbox */
} sand_sbx_stats_t;

/* The sandbox died without being asked to stop, or an asynchronous start failed. status: 0..255
 * the supervisor's exit code, 128+N killed by signal N, SAND_SBX_EXIT_UNKNOWN for an adopted
 * sandbox, or a negative sand error code when starting failed. Runs on the loop thread after the
 * state became SAND_SBX_EXITED; sbx stays valid until sand_sbx_free(). Not called after
 * sand_sbx_stop() was requested. */
typedef void (*sand_sbx_exit_cb)(sand_sbx_t *sbx, int status, void *ud);

/* sand_sbx_stop() finished: status 0 (state STOPPED, nothing of the sandbox is left) or < 0
 * (SAND_ECANCELED at driver close, or the error that prevented removal). */
typedef void (*sand_sbx_stop_cb)(sand_sbx_t *sbx, int status, void *ud);

/* One sandbox found by sand_sbx_adopt_all(), in state RUNNING. The callee either keeps it by
 * installing a non-NULL exit callback with sand_sbx_set_exit_cb() (it then owns sbx as if it had
 * started it), or removes it (orphans of deleted or outdated apps) with sand_sbx_stop() followed
 * by sand_sbx_free() (immediately or in the stop callback). A sandbox neither kept nor stopped
 * when the callback returns is left running and its object is freed by the driver. */
typedef void (*sand_sbx_adopt_cb)(sand_sbx_t *sbx, void *ud);

/* Generic completion: status 0 or < 0 (sand error code). */
typedef void (*sand_sbx_done_cb)(sand_sbx_driver_t *drv, int status, const char *msg, void *ud);

/* Stats result: status 0 and st filled, or < 0 and st NULL. */
typedef void (*sand_sbx_stats_cb)(sand_sbx_t *sbx, int status, const sand_sbx_stats_t *st,
                                  void *ud);

/* ---- driver ------------------------------------------------------------------------------ */

/* Opens a driver on loop. "auto" probes the Docker socket (a blocking GET /_ping with a 1 s
 * timeout, once, before sandd serves anything). The process driver logs one loud warning that
 * it isolates nothing. The docker driver starts its HTTP thread; it builds its base image lazily
 * before the first container start. Returns 0 and *out, or < 0 with err set (e.g. "docker"
 * requested but the socket does not answer). */
int sand_sbx_driver_open(uv_loop_t *loop, const sand_sbx_opts_t *opts, sand_sbx_driver_t **out,
                         sand_err *err);

/* Closes the driver: pending callbacks run with SAND_ECANCELED, handles are closed and the
 * memory, including every sand_sbx_t still known (callers must drop their pointers), is freed
 * after the last libuv close callback (run the loop). Running sandboxes are NOT stopped: they
 * are detached and can be adopted by the next driver. cb (may be NULL) runs once when
 * everything is released. */
void sand_sbx_driver_close(sand_sbx_driver_t *drv, sand_sbx_done_cb cb, void *ud);

sand_sbx_kind_t sand_sbx_driver_kind(const sand_sbx_driver_t *drv);
/* "process" or "docker", static storage. */
const char *sand_sbx_kind_name(sand_sbx_kind_t kind);
/* The configured granularity: with GRAIN, sandd starts one sandbox per grain. */
sand_sbx_granularity_t sand_sbx_driver_granularity(const sand_sbx_driver_t *drv);

/* ---- sandboxes --------------------------------------------------------------------------- */

/* Starts a sandbox running sand-supervisor for spec. Process driver: synchronous (uv_spawn of
 * bin_dir/sand-supervisor, detached in its own session and process group, cwd = bundle dir,
 * pid file data_dir/apps/APP/sandbox[-GRAINS].pid written before returning); state RUNNING on
 * return. Docker driver: returns at once with state STARTING; create + start run on the HTTP
 * thread; state becomes RUNNING when the container runs; a failure is reported through exit_cb
 * with a negative status. Returns 0 and *out (the caller owns it: sand_sbx_free()), or < 0 with
 * err set and nothing started. exit_cb may be NULL. */
int sand_sbx_start(sand_sbx_driver_t *drv, const sand_sbx_spec_t *spec, sand_sbx_exit_cb exit_cb,
                   void *ud, sand_sbx_t **out, sand_err *err);

/* Stops the sandbox: SIGTERM to the supervisor (process driver: to its whole process group),
 * SIGKILL to the group after the grace period; docker: POST /containers/ID/stop?t=GRACE then
 * DELETE. Removes the pid file. cb (may be NULL) runs once when nothing is left. Stopping an
 * exited or stopped sandbox completes with status 0. Returns 0, or SAND_EBUSY when a stop is
 * already in progress (cb not called). */
int sand_sbx_stop(sand_sbx_t *sbx, sand_sbx_stop_cb cb, void *ud);

/* Releases the caller's handle. A sandbox that still runs is detached, not stopped (a later
 * driver may adopt it). A stop in progress continues but its callback is not called; pending
 * stats callbacks still run, and the memory goes after them. No exit_cb runs after this. NULL is
 * a no-op. */
void sand_sbx_free(sand_sbx_t *sbx);

/* Replaces the exit callback (used to keep an adopted sandbox). */
void sand_sbx_set_exit_cb(sand_sbx_t *sbx, sand_sbx_exit_cb exit_cb, void *ud);

sand_sbx_state_t sand_sbx_state(const sand_sbx_t *sbx);
const char *sand_sbx_state_name(sand_sbx_state_t st);
/* Process driver: the supervisor pid in decimal; docker: the container id (64 hex). Owned by
 * sbx; "" while a docker container is being created. */
const char *sand_sbx_id(const sand_sbx_t *sbx);
/* Pid of the supervisor as seen from the host; 0 when not known yet or gone. */
pid_t sand_sbx_supervisor_pid(const sand_sbx_t *sbx);
const char *sand_sbx_app(const sand_sbx_t *sbx);
int64_t sand_sbx_version(const sand_sbx_t *sbx);
/* The comma-separated grains the sandbox runs; "" = every grain of the app. */
const char *sand_sbx_grains(const sand_sbx_t *sbx);
sand_sbx_driver_t *sand_sbx_driver(const sand_sbx_t *sbx);
/* True when the sandbox came from sand_sbx_adopt_all() rather than sand_sbx_start(). */
bool sand_sbx_adopted(const sand_sbx_t *sbx);

/* Reads memory and process figures (docker: GET /containers/ID/stats?stream=false; process:
 * /proc of the process group). cb runs once, always asynchronously. Returns 0 or < 0 (not
 * running: SAND_ENOTFOUND; cb not called). */
int sand_sbx_stats(sand_sbx_t *sbx, sand_sbx_stats_cb cb, void *ud);

/* One grain worker of a sandbox as seen from the host. */
typedef struct sand_sbx_worker_pid {
    const char *grain; /* owned by the driver, valid during the callback only */
    pid_t pid;         /* host pid */
} sand_sbx_worker_pid_t;

/* Worker pids result: status 0 and n entries (n may be 0), or < 0 and workers NULL. */
typedef void (*sand_sbx_worker_pids_cb)(sand_sbx_t *sbx, int status,
                                        const sand_sbx_worker_pid_t *workers, size_t n, void *ud);

/* Host pids of the grain workers of a running sandbox. The supervisor reports the pids it sees,
 * which inside a container are those of the container's PID namespace; this translates them.
 * Docker driver: GET /containers/ID/top, a worker being a direct child of the supervisor whose
 * command line holds "--grain NAME". cb runs once, always asynchronously, on the loop thread.
 * Returns 0, SAND_ENOTFOUND when not running, or SAND_EINVAL for the process driver, whose
 * supervisor already reports host pids (cb not called). */
int sand_sbx_worker_pids(sand_sbx_t *sbx, sand_sbx_worker_pids_cb cb, void *ud);

/* Finds the sandboxes a previous driver instance (a crashed or restarted sandd) left running:
 * process driver: data_dir/apps/APP/sandbox*.pid whose pid is still a sand-supervisor of that
 * app (stale pid files are removed); docker: containers labelled sand.app, sand.version and
 * sand.grains (exited ones are removed). found runs once per sandbox (see sand_sbx_adopt_cb);
 * then done runs once with 0 or an error. Adopted sandboxes that are not our children are
 * watched by a timer (kill(pid, 0)); their death is reported through exit_cb with
 * SAND_SBX_EXIT_UNKNOWN. Sandboxes this driver already knows are not reported again. Returns 0,
 * or < 0 (callbacks not called). */
int sand_sbx_adopt_all(sand_sbx_driver_t *drv, sand_sbx_adopt_cb found, sand_sbx_done_cb done,
                       void *ud, sand_err *err);

#endif
