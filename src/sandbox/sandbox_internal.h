/*
 * Private declarations shared by the generic sandbox layer (sandbox.c) and its drivers
 * (process.c, docker.c): the driver vtable, the driver and sandbox structs, and helpers for the
 * environment and the pid-file directory. Everything here runs on the loop thread except the
 * Docker HTTP thread's own functions, which say so.
 */
#ifndef SAND_SANDBOX_INTERNAL_H
#define SAND_SANDBOX_INTERNAL_H

#include "sand/sandbox.h"

#define SBX_LOG "sandbox"

/* Driver operations. Every function runs on the loop thread. */
typedef struct sbx_ops {
    int (*open)(sand_sbx_driver_t *drv, sand_err *err);
    /* Fills the driver-specific parts of an already initialised sbx and starts it. */
    int (*start)(sand_sbx_t *sbx, const sand_sbx_spec_t *spec, sand_err *err);
    /* Begins a stop; must end with sand__sbx_stop_done(). */
    void (*stop)(sand_sbx_t *sbx);
    int (*stats)(sand_sbx_t *sbx, sand_sbx_stats_cb cb, void *ud);
    /* NULL when the supervisor's pids are host pids already (process driver). */
    int (*worker_pids)(sand_sbx_t *sbx, sand_sbx_worker_pids_cb cb, void *ud);
    int (*adopt_all)(sand_sbx_driver_t *drv, sand_sbx_adopt_cb found, sand_sbx_done_cb done,
                     void *ud, sand_err *err);
    /* Releases the driver-specific parts of sbx; returns the number of libuv handles being
     * closed (the generic layer frees sbx after that many sand__sbx_handle_closed() calls). */
    int (*release_sbx)(sand_sbx_t *sbx);
    /* Cancels pending driver work; returns the number of handles being closed. */
    int (*close)(sand_sbx_driver_t *drv);
} sbx_ops_t;

struct sand_sbx_driver {
    uv_loop_t *loop;
    sand_sbx_kind_t kind;
    sand_sbx_granularity_t gran;
    const sbx_ops_t *ops;
    char *data_dir, *bin_dir, *lib_dir, *image, *redis_socket, *docker_socket;
    int64_t memory, pids, stop_grace_ms, watch_interval_ms;
    sand_list_t sandboxes; /* every live sand_sbx_t, through sbx->node */
    bool closing;
    int pending_closes; /* driver handles whose close callback is due */
    int n_sbx;          /* sand_sbx_t objects not yet freed */
    sand_sbx_done_cb close_cb;
    void *close_ud;
    void *priv; /* driver-specific state */
};

struct sand_sbx {
    sand_sbx_driver_t *drv;
    sand_list_t node;
    char *app;
    char *grains; /* comma-separated; "" = all */
    int64_t version;
    char id[80];
    pid_t pid;
    sand_sbx_state_t state;
    bool adopted;
    bool freed;     /* the owner called sand_sbx_free(): release when idle */
    bool releasing; /* handles are being closed */
    int pending_closes;
    sand_sbx_exit_cb exit_cb;
    void *exit_ud;
    sand_sbx_stop_cb stop_cb;
    void *stop_ud;
    int pending_ops; /* stats and other requests in flight (docker) that still reference sbx */
    void *priv;
};

extern const sbx_ops_t sand__sbx_process_ops;
extern const sbx_ops_t sand__sbx_docker_ops;

/* Allocates a sandbox object linked into drv (state STARTING). Returns NULL on ENOMEM. */
sand_sbx_t *sand__sbx_new(sand_sbx_driver_t *drv, const char *app, int64_t version,
                          const char *grains);
/* Records the sandbox's death (state EXITED) and calls exit_cb unless a stop was requested. */
void sand__sbx_exited(sand_sbx_t *sbx, int status);
/* Completes a stop: state STOPPED, calls and clears stop_cb. */
void sand__sbx_stop_done(sand_sbx_t *sbx, int status);
/* A libuv handle owned by sbx has finished closing. */
void sand__sbx_handle_closed(sand_sbx_t *sbx);
/* A libuv handle owned by the driver has finished closing. */
void sand__drv_handle_closed(sand_sbx_driver_t *drv);
/* Frees sbx now if the owner released it and nothing references it any more. */
void sand__sbx_maybe_release(sand_sbx_t *sbx);
/* Whether drv already has a sandbox with this id. */
bool sand__sbx_known(sand_sbx_driver_t *drv, const char *id);

/* Joins spec->grains with commas into a new string ("" for NULL). NULL on ENOMEM. */
char *sand__sbx_join_grains(const char *const *grains);
/* Builds the NULL-terminated environment of a supervisor: spec->env without the names the driver
 * owns, then those names with the given values (bundle, bin, lib, redis as seen inside the
 * sandbox), then PATH/LANG from sandd's environment when spec->env lacks them. The caller frees
 * the result with sand__sbx_env_free(). NULL on ENOMEM. */
char **sand__sbx_env_build(const sand_sbx_spec_t *spec, const char *grains, const char *bundle,
                           const char *bin_dir, const char *lib_dir, const char *redis);
void sand__sbx_env_free(char **env);
/* Blocking GET /_ping on the Docker socket with a 1 s timeout (used once by "auto" at open).
 * Returns 0 when the daemon answers OK, else < 0 with err set. */
int sand__docker_ping(const char *socket_path, sand_err *err);
/* Creates dir and its parents (mode 0755). Returns 0 or SAND_EIO. */
int sand__mkdir_p(const char *dir, sand_err *err);

#endif
