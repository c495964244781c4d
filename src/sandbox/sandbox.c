/*
 * The generic half of the sandbox layer: opening and closing a driver, the life cycle of sandbox
 * objects (start, stop, exit reporting, release after the last libuv close callback), accessors,
 * and the supervisor environment shared by both drivers. Driver-specific work is delegated
 * through the sbx_ops_t vtable, so sandd sees one interface whichever driver runs. Everything
 * runs on the loop thread.
 */
#include "sand/sandbox.h"

#include "sandbox_internal.h"

#include "sand/protocol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *dup_or_null(const char *s)
{
    return s && *s ? sand_strdup(s) : NULL;
}

static void driver_free(sand_sbx_driver_t *drv)
{
    free(drv->data_dir);
    free(drv->bin_dir);
    free(drv->lib_dir);
    free(drv->image);
    free(drv->redis_socket);
    free(drv->docker_socket);
    free(drv);
}

const char *sand_sbx_kind_name(sand_sbx_kind_t kind)
{
    return kind == SAND_SBX_DOCKER ? "docker" : "process";
}

const char *sand_sbx_state_name(sand_sbx_state_t st)
{
    static const char *const names[] = {"starting", "running", "stopping", "stopped", "exited"};
    return (size_t)st < SAND_ARRAY_LEN(names) ? names[st] : "unknown";
}

int sand_sbx_driver_open(uv_loop_t *loop, const sand_sbx_opts_t *opts, sand_sbx_driver_t **out,
                         sand_err *err)
{
    const char *kind = opts->kind ? opts->kind : "auto";
    sand_sbx_driver_t *drv;
    int rc;

    *out = NULL;
    if (!opts->data_dir || !opts->bin_dir)
        return sand_err_set(err, SAND_EINVAL, "sandbox driver needs data_dir and bin_dir");
    if (strcmp(kind, "auto") && strcmp(kind, "process") && strcmp(kind, "docker"))
        return sand_err_set(err, SAND_EINVAL, "unknown sandbox driver '%s'", kind);
    if (opts->granularity && *opts->granularity && strcmp(opts->granularity, "application") &&
        strcmp(opts->granularity, "grain"))
        return sand_err_set(err, SAND_EINVAL, "unknown sandbox granularity '%s'",
                            opts->granularity);
    if (!(drv = calloc(1, sizeof(*drv))))
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    drv->loop = loop;
    sand_list_init(&drv->sandboxes);
    drv->gran = opts->granularity && !strcmp(opts->granularity, "grain")
                    ? SAND_SBX_GRAN_GRAIN
                    : SAND_SBX_GRAN_APPLICATION;
    drv->memory = opts->memory;
    drv->pids = opts->pids;
    drv->stop_grace_ms = opts->stop_grace_ms > 0 ? opts->stop_grace_ms : SAND_SBX_STOP_GRACE_MS;
    drv->watch_interval_ms = opts->watch_interval_ms > 0 ? opts->watch_interval_ms : 500;
    drv->data_dir = sand_strdup(opts->data_dir);
    drv->bin_dir = sand_strdup(opts->bin_dir);
    drv->lib_dir = dup_or_null(opts->lib_dir);
    drv->image = dup_or_null(opts->image);
    drv->redis_socket = dup_or_null(opts->redis_socket);
    drv->docker_socket = sand_strdup(
        opts->docker_socket && *opts->docker_socket ? opts->docker_socket : "/var/run/docker.sock");
    if (!drv->data_dir || !drv->bin_dir || !drv->docker_socket ||
        (opts->lib_dir && *opts->lib_dir && !drv->lib_dir) ||
        (opts->image && *opts->image && !drv->image) ||
        (opts->redis_socket && *opts->redis_socket && !drv->redis_socket)) {
        driver_free(drv);
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    }

    if (!strcmp(kind, "docker")) {
        if ((rc = sand__docker_ping(drv->docker_socket, err)) < 0) {
            driver_free(drv);
            return sand_err_wrap(err, rc, "docker sandbox driver");
        }
        drv->kind = SAND_SBX_DOCKER;
    } else if (!strcmp(kind, "process")) {
        drv->kind = SAND_SBX_PROCESS;
    } else {
        sand_err probe = {0};
        if (sand__docker_ping(drv->docker_socket, &probe) == 0) {
            drv->kind = SAND_SBX_DOCKER;
        } else {
            drv->kind = SAND_SBX_PROCESS;
            SAND_WARN(SBX_LOG,
                      "no docker daemon answers on '%s' (%s): falling back to the "
                      "process driver",
                      drv->docker_socket, probe.msg);
        }
    }
    drv->ops = drv->kind == SAND_SBX_DOCKER ? &sand__sbx_docker_ops : &sand__sbx_process_ops;
    if ((rc = drv->ops->open(drv, err)) < 0) {
        sand_sbx_kind_t opened = drv->kind;
        driver_free(drv);
        return sand_err_wrap(err, rc, "open %s sandbox driver", sand_sbx_kind_name(opened));
    }
    *out = drv;
    return 0;
}

sand_sbx_kind_t sand_sbx_driver_kind(const sand_sbx_driver_t *drv)
{
    return drv->kind;
}

sand_sbx_granularity_t sand_sbx_driver_granularity(const sand_sbx_driver_t *drv)
{
    return drv->gran;
}

static void driver_maybe_done(sand_sbx_driver_t *drv)
{
    if (!drv->closing || drv->pending_closes > 0 || drv->n_sbx > 0)
        return;
    if (drv->close_cb)
        drv->close_cb(drv, 0, "", drv->close_ud);
    driver_free(drv);
}

void sand__drv_handle_closed(sand_sbx_driver_t *drv)
{
    drv->pending_closes--;
    driver_maybe_done(drv);
}

void sand_sbx_driver_close(sand_sbx_driver_t *drv, sand_sbx_done_cb cb, void *ud)
{
    sand_list_t *pos, *tmp;

    if (drv->closing)
        return;
    drv->closing = true;
    drv->close_cb = cb;
    drv->close_ud = ud;
    /* Pending stops complete with ECANCELED; the sandboxes themselves keep running, detached. */
    sand_list_foreach_safe(pos, tmp, &drv->sandboxes)
    {
        sand_sbx_t *sbx = SAND_CONTAINER_OF(pos, sand_sbx_t, node);
        if (sbx->stop_cb) {
            sand_sbx_stop_cb scb = sbx->stop_cb;
            sbx->stop_cb = NULL;
            scb(sbx, SAND_ECANCELED, sbx->stop_ud);
        }
        sbx->exit_cb = NULL;
    }
    drv->pending_closes += drv->ops->close(drv);
    sand_list_foreach_safe(pos, tmp, &drv->sandboxes)
    {
        sand_sbx_t *sbx = SAND_CONTAINER_OF(pos, sand_sbx_t, node);
        sbx->freed = true;
        sand__sbx_maybe_release(sbx);
    }
    driver_maybe_done(drv);
}

/* ---- sandbox objects --------------------------------------------------------------------- */

sand_sbx_t *sand__sbx_new(sand_sbx_driver_t *drv, const char *app, int64_t version,
                          const char *grains)
{
    sand_sbx_t *sbx = calloc(1, sizeof(*sbx));
    if (!sbx)
        return NULL;
    sbx->app = sand_strdup(app);
    sbx->grains = sand_strdup(grains ? grains : "");
    if (!sbx->app || !sbx->grains) {
        free(sbx->app);
        free(sbx->grains);
        free(sbx);
        return NULL;
    }
    sbx->drv = drv;
    sbx->version = version;
    sbx->state = SAND_SBX_STARTING;
    sand_list_insert_tail(&drv->sandboxes, &sbx->node);
    drv->n_sbx++;
    return sbx;
}

bool sand__sbx_known(sand_sbx_driver_t *drv, const char *id)
{
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &drv->sandboxes)
    {
        sand_sbx_t *sbx = SAND_CONTAINER_OF(pos, sand_sbx_t, node);
        if (!strcmp(sbx->id, id) && sbx->state != SAND_SBX_STOPPED && sbx->state != SAND_SBX_EXITED)
            return true;
    }
    return false;
}

static void sbx_free_memory(sand_sbx_t *sbx)
{
    sand_sbx_driver_t *drv = sbx->drv;
    free(sbx->priv);
    free(sbx->app);
    free(sbx->grains);
    free(sbx);
    drv->n_sbx--;
    driver_maybe_done(drv);
}

void sand__sbx_handle_closed(sand_sbx_t *sbx)
{
    if (--sbx->pending_closes == 0 && sbx->releasing)
        sbx_free_memory(sbx);
}

void sand__sbx_maybe_release(sand_sbx_t *sbx)
{
    if (!sbx->freed || sbx->releasing || sbx->pending_ops > 0)
        return;
    if (sbx->state == SAND_SBX_STOPPING && !sbx->drv->closing)
        return;
    sbx->releasing = true;
    sand_list_remove(&sbx->node);
    sbx->pending_closes += sbx->drv->ops->release_sbx(sbx);
    if (sbx->pending_closes == 0)
        sbx_free_memory(sbx);
}

void sand__sbx_exited(sand_sbx_t *sbx, int status)
{
    if (sbx->state == SAND_SBX_STOPPED || sbx->state == SAND_SBX_EXITED)
        return;
    if (sbx->state == SAND_SBX_STOPPING)
        return; /* the stop path reports through stop_cb */
    sbx->state = SAND_SBX_EXITED;
    sbx->pid = 0;
    SAND_WARN(SBX_LOG, "sandbox of '%s' (%s) exited with status %d", sbx->app,
              sbx->id[0] ? sbx->id : "not created", status);
    if (sbx->exit_cb)
        sbx->exit_cb(sbx, status, sbx->exit_ud);
}

void sand__sbx_stop_done(sand_sbx_t *sbx, int status)
{
    sand_sbx_stop_cb cb = sbx->stop_cb;
    void *ud = sbx->stop_ud;

    sbx->state = status == 0 ? SAND_SBX_STOPPED : SAND_SBX_EXITED;
    sbx->pid = 0;
    sbx->stop_cb = NULL;
    if (cb)
        cb(sbx, status, ud);
    sand__sbx_maybe_release(sbx);
}

int sand_sbx_start(sand_sbx_driver_t *drv, const sand_sbx_spec_t *spec, sand_sbx_exit_cb exit_cb,
                   void *ud, sand_sbx_t **out, sand_err *err)
{
    sand_sbx_t *sbx;
    char *grains;
    int rc;

    *out = NULL;
    if (drv->closing)
        return sand_err_set(err, SAND_ECANCELED, "sandbox driver is closing");
    if (!spec->app || !*spec->app || !spec->bundle_dir)
        return sand_err_set(err, SAND_EINVAL, "sandbox spec needs app and bundle_dir");
    if (!(grains = sand__sbx_join_grains(spec->grains)))
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    sbx = sand__sbx_new(drv, spec->app, spec->version, grains);
    free(grains);
    if (!sbx)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    sbx->exit_cb = exit_cb;
    sbx->exit_ud = ud;
    if ((rc = drv->ops->start(sbx, spec, err)) < 0) {
        sbx->exit_cb = NULL;
        sbx->state = SAND_SBX_EXITED;
        sbx->freed = true;
        sand__sbx_maybe_release(sbx);
        return sand_err_wrap(err, rc, "start sandbox of '%s'", spec->app);
    }
    *out = sbx;
    return 0;
}

int sand_sbx_stop(sand_sbx_t *sbx, sand_sbx_stop_cb cb, void *ud)
{
    if (sbx->state == SAND_SBX_STOPPING)
        return SAND_EBUSY;
    sbx->stop_cb = cb;
    sbx->stop_ud = ud;
    if (sbx->state == SAND_SBX_STOPPED) {
        sand__sbx_stop_done(sbx, 0);
        return 0;
    }
    sbx->state = SAND_SBX_STOPPING;
    sbx->drv->ops->stop(sbx);
    return 0;
}

void sand_sbx_free(sand_sbx_t *sbx)
{
    if (!sbx)
        return;
    sbx->freed = true;
    sbx->exit_cb = NULL;
    sbx->stop_cb = NULL;
    sand__sbx_maybe_release(sbx);
}

void sand_sbx_set_exit_cb(sand_sbx_t *sbx, sand_sbx_exit_cb exit_cb, void *ud)
{
    sbx->exit_cb = exit_cb;
    sbx->exit_ud = ud;
}

sand_sbx_state_t sand_sbx_state(const sand_sbx_t *sbx)
{
    return sbx->state;
}

const char *sand_sbx_id(const sand_sbx_t *sbx)
{
    return sbx->id;
}

pid_t sand_sbx_supervisor_pid(const sand_sbx_t *sbx)
{
    return sbx->pid;
}

const char *sand_sbx_app(const sand_sbx_t *sbx)
{
    return sbx->app;
}

int64_t sand_sbx_version(const sand_sbx_t *sbx)
{
    return sbx->version;
}

const char *sand_sbx_grains(const sand_sbx_t *sbx)
{
    return sbx->grains;
}

sand_sbx_driver_t *sand_sbx_driver(const sand_sbx_t *sbx)
{
    return sbx->drv;
}

bool sand_sbx_adopted(const sand_sbx_t *sbx)
{
    return sbx->adopted;
}

int sand_sbx_stats(sand_sbx_t *sbx, sand_sbx_stats_cb cb, void *ud)
{
    if (sbx->state != SAND_SBX_RUNNING || sbx->drv->closing)
        return SAND_ENOTFOUND;
    return sbx->drv->ops->stats(sbx, cb, ud);
}

int sand_sbx_worker_pids(sand_sbx_t *sbx, sand_sbx_worker_pids_cb cb, void *ud)
{
    if (!sbx->drv->ops->worker_pids)
        return SAND_EINVAL;
    if (sbx->state != SAND_SBX_RUNNING || sbx->drv->closing)
        return SAND_ENOTFOUND;
    return sbx->drv->ops->worker_pids(sbx, cb, ud);
}

int sand_sbx_adopt_all(sand_sbx_driver_t *drv, sand_sbx_adopt_cb found, sand_sbx_done_cb done,
                       void *ud, sand_err *err)
{
    if (drv->closing)
        return sand_err_set(err, SAND_ECANCELED, "sandbox driver is closing");
    return drv->ops->adopt_all(drv, found, done, ud, err);
}

/* ---- helpers shared by the drivers ------------------------------------------------------- */

char *sand__sbx_join_grains(const char *const *grains)
{
    sand_bytes_t b;
    sand_bytes_init(&b, 64 * 1024);
    if (sand_bytes_appends(&b, "") < 0)
        return NULL;
    for (size_t i = 0; grains && grains[i]; i++) {
        if ((i && sand_bytes_appends(&b, ",") < 0) || sand_bytes_appends(&b, grains[i]) < 0) {
            sand_bytes_release(&b);
            return NULL;
        }
    }
    return sand_bytes_steal(&b, NULL);
}

static const char *const owned_env[] = {SAND_ENV_APP,     SAND_ENV_BUNDLE,  SAND_ENV_GRAINS,
                                        SAND_ENV_BIN_DIR, SAND_ENV_LIB_DIR, SAND_ENV_REDIS};

static bool env_is(const char *entry, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(entry, name, n) && entry[n] == '=';
}

static int env_push(sand_vec_t *v, const char *name, const char *value)
{
    sand_bytes_t b;
    char *s;
    sand_bytes_init(&b, 1 << 20);
    if (sand_bytes_appendf(&b, "%s=%s", name, value ? value : "") < 0)
        return SAND_ENOMEM;
    s = sand_bytes_steal(&b, NULL);
    if (sand_vec_push(v, s) < 0) {
        free(s);
        return SAND_ENOMEM;
    }
    return 0;
}

char **sand__sbx_env_build(const sand_sbx_spec_t *spec, const char *grains, const char *bundle,
                           const char *bin_dir, const char *lib_dir, const char *redis)
{
    /* sanitizer options too, so that an instrumented build runs its sandboxes as configured */
    static const char *const passthrough[] = {"PATH",         "LANG",         "TZ",
                                              "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"};
    sand_vec_t v;
    bool ok = true;

    sand_vec_init(&v);
    for (size_t i = 0; ok && spec->env && spec->env[i]; i++) {
        bool owned = false;
        for (size_t k = 0; k < SAND_ARRAY_LEN(owned_env); k++)
            if (env_is(spec->env[i], owned_env[k]) &&
                (strcmp(owned_env[k], SAND_ENV_REDIS) || redis))
                owned = true;
        if (!owned) {
            char *s = sand_strdup(spec->env[i]);
            ok = s && sand_vec_push(&v, s) == 0;
            if (!ok)
                free(s);
        }
    }
    ok = ok && env_push(&v, SAND_ENV_APP, spec->app) == 0;
    ok = ok && env_push(&v, SAND_ENV_BUNDLE, bundle) == 0;
    ok = ok && env_push(&v, SAND_ENV_GRAINS, grains) == 0;
    ok = ok && env_push(&v, SAND_ENV_BIN_DIR, bin_dir) == 0;
    ok = ok && env_push(&v, SAND_ENV_LIB_DIR, lib_dir ? lib_dir : "") == 0;
    if (ok && redis) {
        sand_bytes_t b;
        sand_bytes_init(&b, 4096);
        ok = sand_bytes_appendf(&b, "unix:%s", redis) == 0 &&
             env_push(&v, SAND_ENV_REDIS, b.data) == 0;
        sand_bytes_release(&b);
    }
    for (size_t k = 0; ok && k < SAND_ARRAY_LEN(passthrough); k++) {
        bool present = false;
        const char *val = getenv(passthrough[k]);
        for (size_t i = 0; spec->env && spec->env[i]; i++)
            present = present || env_is(spec->env[i], passthrough[k]);
        if (!present && val)
            ok = env_push(&v, passthrough[k], val) == 0;
    }
    ok = ok && sand_vec_push(&v, NULL) == 0;
    if (!ok) {
        sand_vec_release(&v, free);
        return NULL;
    }
    return (char **)v.items;
}

void sand__sbx_env_free(char **env)
{
    if (!env)
        return;
    for (size_t i = 0; env[i]; i++)
        free(env[i]);
    free(env);
}

int sand__mkdir_p(const char *dir, sand_err *err)
{
    char path[4096];
    size_t n = sand_strlcpy(path, dir, sizeof(path));
    if (n >= sizeof(path))
        return sand_err_set(err, SAND_ETOOBIG, "path '%s' is too long", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return sand_err_errno(err, SAND_EIO, "mkdir '%s'", path);
        *p = '/';
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return sand_err_errno(err, SAND_EIO, "mkdir '%s'", path);
    return 0;
}
