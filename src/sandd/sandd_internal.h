/*
 * The host agent daemon's private declarations: struct sand_daemon (all daemon state hangs off
 * it, reached from handle->data), the deployed-app registry, and the functions the daemon's files
 * share (HTTP routes in api.c, app lifecycle in apps.c, metrics in metrics.c, start-up and
 * shutdown in daemon.c). Everything runs on the one libuv loop thread.
 */
#ifndef SAND_SANDD_INTERNAL_H
#define SAND_SANDD_INTERNAL_H

#include "sand/bus.h"
#include "sand/common.h"
#include "sand/config.h"
#include "sand/engine.h"
#include "sand/http.h"
#include "sand/sandbox.h"
#include "sand/workflow.h"

#include <limits.h>
#include <uv.h>

#define SAND_VERSION "0.1.0"

typedef enum app_state {
    APP_STARTING = 0, /* sandbox requested, workers not all reported yet */
    APP_READY = 1,
    APP_FAILED = 2, /* the sandbox could not be started */
    APP_DELETING = 3,
} app_state_t;

typedef struct sand_daemon sand_daemon;

/* One deployed app. */
typedef struct app_entry {
    sand_daemon *d;
    char name[SAND_NAME_MAX];
    int64_t version;
    sand_app_t *model;
    char dir[PATH_MAX]; /* the bundle of the current version */
    char acl_user[SAND_NAME_MAX + 8];
    char acl_pass[65];
    app_state_t state;
    char failure[256];
    sand_vec_t sandboxes; /* sand_sbx_t*: one (application) or one per grain */
    int64_t deployed_us;
    int64_t sandbox_restarts;
    uv_timer_t *restart_timer; /* pending restart of a dead sandbox, NULL when none */
    bool busy;                 /* a deploy or delete is in progress */
} app_entry_t;

/* Latency histogram with fixed bucket bounds in microseconds. */
#define SAND_HIST_BUCKETS 16
typedef struct hist {
    uint64_t counts[SAND_HIST_BUCKETS + 1]; /* last: +Inf */
    uint64_t n;
    double sum_s;
} hist_t;

typedef struct metric_series {
    char app[SAND_NAME_MAX];
    char workflow[SAND_NAME_MAX];
    char step[SAND_NAME_MAX]; /* "" for a workflow series */
    uint64_t invocations, succeeded, failed, timed_out;
    hist_t latency;    /* workflow: end to end; step: handler run time */
    hist_t queue_wait; /* step: queued -> started (includes the hop) */
} metric_series_t;

struct sand_daemon {
    uv_loop_t *loop;
    sand_cfg cfg;
    char key[80];
    char data_dir[PATH_MAX];
    char run_dir[PATH_MAX];
    char apps_dir[PATH_MAX];
    char bin_dir[PATH_MAX];
    char lib_dir[PATH_MAX];
    char redis_endpoint[PATH_MAX];
    char redis_sock[PATH_MAX]; /* "" when the local bus is not on a unix socket */
    char redis_pass[128];
    char redis_run_id[48];
    char kafka_brokers[SAND_CFG_STR];
    sand_lbus_t *lbus;
    sand_lbus_reader_t *reader;
    sand_gbus_t *gbus;
    sand_sbx_driver_t *sbx;
    sand_http_server_t *http;
    sand_engine_t *engine;
    sand_gbus_t *replay;        /* consumer reading backups again after a lost local bus */
    int64_t replay_started_us;  /* monotonic */
    int64_t replay_last_us;     /* monotonic time of the last record read back */
    int64_t lbus_down_since_us; /* monotonic; 0 while connected */
    sand_map_t apps;            /* name -> app_entry_t */
    sand_map_t series;          /* "app/workflow/step" -> metric_series_t */
    sand_map_t assigned;        /* global-bus topics in the consumer's assignment */
    sand_map_t offsets;    /* "topic\npartition" -> int64_t*: highest handled offset to commit */
    sand_list_t followers; /* log followers */
    uv_signal_t sigterm, sigint;
    uv_timer_t follow_timer;
    int64_t started_us;
    size_t waiters; /* blocking invocations waiting for their execution */
    int64_t drain_deadline_us;
    bool draining; /* SIGTERM: new requests get 503, waiters finish, then stop */
    bool serving;
    bool stopping;
    int exit_code;
};

/* daemon.c */
int sandd_start(sand_daemon *d, sand_err *err);
void sandd_stop(sand_daemon *d);
/* Stops the embedded services and every sandbox recorded in data_dir (sandd --shutdown-all). */
int sandd_shutdown_all(const char *data_dir, sand_err *err);

/* api.c */
void api_handle(sand_http_req_t *req, void *ud);
size_t api_body_limit(sand_http_req_t *req, void *ud);
void api_follow_tick(uv_timer_t *t);
void api_close_followers(sand_daemon *d);

/* apps.c */
const sand_app_t *apps_lookup_model(const char *name, void *ud);
app_entry_t *apps_get(sand_daemon *d, const char *name);
/* Loads every app deployed before (start-up), prepares its Redis state and starts or adopts
 * its sandboxes. Blocking for the loading part; sandboxes start asynchronously. */
int apps_restore(sand_daemon *d, sand_err *err);
/* POST /v1/apps: the request body is the bundle. Answers req. */
void apps_deploy(sand_daemon *d, sand_http_req_t *req);
void apps_delete(sand_daemon *d, app_entry_t *a, sand_http_req_t *req);
/* GET /v1/apps/{app}: the description with live worker states and queue depths. */
void apps_describe(sand_daemon *d, app_entry_t *a, sand_http_req_t *req);
void apps_list(sand_daemon *d, sand_http_req_t *req);
/* Events of a grain's queue not taken yet, and taken but not finished (live instances). cb runs
 * once (loop thread) unless this returns < 0. */
typedef void (*queue_depth_cb)(const char *grain, int64_t queued, int64_t in_flight, void *ud);
int apps_queue_depth(sand_daemon *d, const char *app, const char *grain, queue_depth_cb cb,
                     void *ud);
void apps_close_all(sand_daemon *d);
/* Engine hook: an event entered grain's queue; in cold mode (sandbox.cold: on) a sandbox whose
 * worker serves that one event is started for it. */
void apps_cold_start(const char *app, const char *grain, void *ud);

/* metrics.c */
void metrics_step_done(const char *app, const char *workflow, const char *step, const char *status,
                       int64_t queued_us, int64_t started_us, int64_t finished_us, void *ud);
void metrics_exec_done(const char *app, const char *workflow, sand_exec_status_t status,
                       int64_t started_us, int64_t finished_us, void *ud);
void metrics_invoked(sand_daemon *d, const char *app, const char *workflow);
void metrics_serve(sand_daemon *d, sand_http_req_t *req);
void metrics_release(sand_daemon *d);

#endif
