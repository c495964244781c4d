/*
 * The in-sandbox supervisor, PID 1 of every sandbox: it starts one grain worker per grain of the
 * app (or of the grains it was told to run), restarts a crashed worker with exponential backoff,
 * reaps every child including orphans it never started, forwards SIGTERM/SIGINT to the workers
 * and exits when they are gone, and reports each worker's status to the app's Redis hash
 * sand:{app}:sup and its starts and exits to the log stream sand:{app}:log. Single-threaded: one
 * poll() loop over a signalfd.
 */
#ifndef SAND_SUPERVISOR_H
#define SAND_SUPERVISOR_H

#include "sand/common.h"

/* Grace period between forwarding SIGTERM to the workers and SIGKILL; shorter than the
 * driver's own grace so the supervisor still exits on its own and cleans up. */
#define SAND_SUP_GRACE_MS 5000

/* Worker restart backoff: first delay, cap, and the uptime after which a worker counts as
 * healthy again (the delay resets to the first value). */
#define SAND_SUP_BACKOFF_MIN_MS 100
#define SAND_SUP_BACKOFF_MAX_MS 10000
#define SAND_SUP_HEALTHY_MS     60000

/* The name of the variable that tells a worker its grain (added to the supervisor's own
 * environment for each worker). */
#define SAND_SUP_ENV_GRAIN "SAND_GRAIN"

typedef struct sand_sup_opts {
    int64_t grace_ms; /* 0 = SAND_SUP_GRACE_MS */
} sand_sup_opts_t;

/* Runs the supervisor with the configuration in the environment (SAND_APP, SAND_BUNDLE,
 * SAND_GRAINS, SAND_BIN_DIR, SAND_REDIS, SAND_REDIS_USER, SAND_REDIS_PASS, SAND_LOG_MAX) until
 * SIGTERM or SIGINT stops it and every worker is gone. Returns the process exit code: 0 after a
 * clean stop, 2 when the configuration or app.yaml is unusable, 1 on a system failure. */
int sand_sup_run(const sand_sup_opts_t *opts);

#endif
