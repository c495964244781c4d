/*
 * The process sandbox driver: the supervisor runs as a plain host process, detached from sandd
 * (its own session and process group, so it survives a sandd crash), with cwd = the bundle and
 * stdout/stderr appended to data_dir/apps/APP/sandbox[-GRAINS].log. It isolates nothing and is
 * meant for development and tests. A pid file next to the log records pid, start time (to tell
 * a reused pid apart), version and grains, so a restarted sandd can adopt what it left running.
 * Our own children are watched through libuv's process handles; adopted ones through a timer
 * that polls waitpid/kill/proc. Runs on the loop thread.
 */
#include "sandbox_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SUPERVISOR_NAME "sand-supervisor"
#define GROUP_POLL_MS   20
#define GROUP_DRAIN_MS  2000 /* after the supervisor is gone, wait this long for the group */
#define PIDFILE_MAX     4096

typedef struct stats_req {
    sand_list_t node;
    uv_timer_t timer;
    sand_sbx_t *sbx;
    sand_sbx_stats_cb cb;
    void *ud;
    bool canceled;
} stats_req_t;

typedef struct proc_drv {
    uv_timer_t watch; /* liveness of adopted sandboxes */
    bool watching;
    uv_timer_t adopt; /* runs an adopt_all scan off the caller's stack */
    bool adopt_pending;
    sand_sbx_adopt_cb adopt_found;
    sand_sbx_done_cb adopt_done;
    void *adopt_ud;
    sand_list_t stats;  /* stats_req_t in flight */
    int closing_timers; /* watch and adopt: pd goes after both close callbacks */
} proc_drv_t;

typedef struct proc_sbx {
    uv_process_t proc;
    bool proc_init;   /* uv_spawn was called: the handle must be closed */
    bool proc_exited; /* libuv reported the exit of our child */
    uv_timer_t timer; /* stop: grace deadline and group polling */
    bool timer_init;
    int64_t stop_started_ms;
    int64_t dead_since_ms; /* when the supervisor was seen gone during a stop; 0 = not yet */
    bool killed;           /* SIGKILL sent to the group */
    unsigned long long starttime;
    char *pidfile;
} proc_sbx_t;

/* ---- /proc helpers ----------------------------------------------------------------------- */

/* Reads the fields after "(comm)" of /proc/PID/stat into buf; returns a pointer to the state
 * field, or NULL when the process does not exist. */
static const char *proc_stat_fields(pid_t pid, char *buf, size_t size)
{
    char path[64];
    ssize_t n;
    int fd;
    char *rp;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return NULL;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    if (!(rp = strrchr(buf, ')')) || rp[1] != ' ')
        return NULL;
    return rp + 2;
}

/* Field k (0 = state) after the comm of /proc/PID/stat, as an unsigned number. */
static bool proc_stat_field(const char *fields, int k, unsigned long long *out)
{
    const char *p = fields;
    char *end;
    for (int i = 0; i < k; i++) {
        if (!(p = strchr(p, ' ')))
            return false;
        p++;
    }
    errno = 0;
    *out = strtoull(p, &end, 10);
    return errno == 0 && end != p;
}

static unsigned long long proc_starttime(pid_t pid)
{
    char buf[1024];
    unsigned long long v = 0;
    const char *f = proc_stat_fields(pid, buf, sizeof(buf));
    if (!f || !proc_stat_field(f, 19, &v))
        return 0;
    return v;
}

/* Whether pid is gone (reaped, a zombie, or reused by another process). Reaps it when it is a
 * child without a libuv handle (a sandbox of a previous driver instance in this process); the
 * status is stored in *status when known, else SAND_SBX_EXIT_UNKNOWN. */
static bool proc_gone(pid_t pid, unsigned long long starttime, int *status)
{
    char buf[1024];
    const char *f;
    int st;

    *status = SAND_SBX_EXIT_UNKNOWN;
    if (waitpid(pid, &st, WNOHANG) == pid) {
        *status = WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
        return true;
    }
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    if (!(f = proc_stat_fields(pid, buf, sizeof(buf))))
        return true;
    if (f[0] == 'Z' || f[0] == 'X')
        return true;
    return starttime && proc_starttime(pid) != starttime;
}

/* Whether /proc/PID/cmdline is "…/sand-supervisor --app APP …". */
static bool proc_is_supervisor(pid_t pid, const char *app)
{
    char path[64], buf[4096];
    ssize_t n;
    int fd;
    const char *arg0, *base;
    bool app_ok = false;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    arg0 = buf;
    base = strrchr(arg0, '/');
    base = base ? base + 1 : arg0;
    if (strcmp(base, SUPERVISOR_NAME))
        return false;
    for (const char *p = buf; p < buf + n; p += strlen(p) + 1) {
        const char *next = p + strlen(p) + 1;
        if (!strcmp(p, "--app") && next < buf + n && !strcmp(next, app))
            app_ok = true;
    }
    return app_ok;
}

/* Whether the process group still has a member. */
static bool group_alive(pid_t pgid)
{
    return kill(-pgid, 0) == 0 || errno == EPERM;
}

/* ---- pid files --------------------------------------------------------------------------- */

/* data_dir/apps/APP/sandbox[-g1+g2].EXT into out. */
static int sbx_path(sand_sbx_driver_t *drv, const char *app, const char *grains, const char *ext,
                    sand_bytes_t *out)
{
    int rc = sand_bytes_appendf(out, "%s/apps/%s/sandbox", drv->data_dir, app);
    if (rc == 0 && *grains) {
        rc = sand_bytes_appends(out, "-");
        for (const char *g = grains; rc == 0 && *g; g++)
            rc = sand_bytes_append(out, *g == ',' ? "+" : g, 1);
    }
    if (rc == 0)
        rc = sand_bytes_appends(out, ext);
    return rc;
}

static int pidfile_write(const char *path, sand_sbx_t *sbx, unsigned long long starttime,
                         sand_err *err)
{
    sand_bytes_t tmp, body;
    int fd, rc = 0;

    sand_bytes_init(&tmp, PIDFILE_MAX);
    sand_bytes_init(&body, PIDFILE_MAX);
    if (sand_bytes_appendf(&tmp, "%s.tmp", path) < 0 ||
        sand_bytes_appendf(&body, "pid=%d\nstart=%llu\napp=%s\nversion=%lld\ngrains=%s\n",
                           (int)sbx->pid, starttime, sbx->app, (long long)sbx->version,
                           sbx->grains) < 0) {
        rc = sand_err_set(err, SAND_ETOOBIG, "pid file '%s' too long", path);
        goto out;
    }
    if ((fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        rc = sand_err_errno(err, SAND_EIO, "create '%s'", tmp.data);
        goto out;
    }
    if (write(fd, body.data, body.len) != (ssize_t)body.len) {
        rc = sand_err_errno(err, SAND_EIO, "write '%s'", tmp.data);
        close(fd);
        unlink(tmp.data);
        goto out;
    }
    close(fd);
    if (rename(tmp.data, path) < 0) {
        rc = sand_err_errno(err, SAND_EIO, "rename '%s'", tmp.data);
        unlink(tmp.data);
    }
out:
    sand_bytes_release(&tmp);
    sand_bytes_release(&body);
    return rc;
}

typedef struct pidfile_info {
    pid_t pid;
    unsigned long long start;
    int64_t version;
    char app[256];
    char grains[1024];
} pidfile_info_t;

static bool pidfile_read(const char *path, pidfile_info_t *info)
{
    char buf[PIDFILE_MAX];
    ssize_t n;
    int fd;
    char *line, *nl;
    int64_t v;

    memset(info, 0, sizeof(*info));
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    for (line = buf; *line; line = nl ? nl + 1 : line + strlen(line)) {
        char *eq;
        if ((nl = strchr(line, '\n')))
            *nl = '\0';
        eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq++ = '\0';
        if (!strcmp(line, "pid") && sand_parse_int(eq, 1, INT32_MAX, &v, NULL) == 0)
            info->pid = (pid_t)v;
        else if (!strcmp(line, "start") && sand_parse_int(eq, 0, INT64_MAX, &v, NULL) == 0)
            info->start = (unsigned long long)v;
        else if (!strcmp(line, "version") &&
                 sand_parse_int(eq, INT64_MIN, INT64_MAX, &v, NULL) == 0)
            info->version = v;
        else if (!strcmp(line, "app"))
            sand_strlcpy(info->app, eq, sizeof(info->app));
        else if (!strcmp(line, "grains"))
            sand_strlcpy(info->grains, eq, sizeof(info->grains));
    }
    return info->pid > 0 && info->app[0];
}

/* ---- driver ------------------------------------------------------------------------------ */

static void watch_cb(uv_timer_t *t);

static int proc_open(sand_sbx_driver_t *drv, sand_err *err)
{
    proc_drv_t *pd = calloc(1, sizeof(*pd));
    if (!pd)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    sand_list_init(&pd->stats);
    uv_timer_init(drv->loop, &pd->watch);
    uv_timer_init(drv->loop, &pd->adopt);
    pd->watch.data = drv;
    pd->adopt.data = drv;
    drv->priv = pd;
    SAND_WARN(SBX_LOG,
              "*** process sandbox driver: applications run as plain host processes "
              "with NO isolation from each other or from the host; use it for development and "
              "tests only ***");
    return 0;
}

static void drv_timer_closed(uv_handle_t *h)
{
    sand_sbx_driver_t *drv = h->data;
    proc_drv_t *pd = drv->priv;
    if (--pd->closing_timers == 0) {
        free(pd);
        drv->priv = NULL;
    }
    sand__drv_handle_closed(drv);
}

static void stats_closed(uv_handle_t *h)
{
    stats_req_t *req = h->data;
    sand_sbx_t *sbx = req->sbx;
    sand_sbx_driver_t *drv = sbx->drv;
    free(req);
    sbx->pending_ops--;
    sand__sbx_maybe_release(sbx);
    sand__drv_handle_closed(drv);
}

static int proc_close(sand_sbx_driver_t *drv)
{
    proc_drv_t *pd = drv->priv;
    sand_list_t *pos, *tmp;
    int n = 0;

    sand_list_foreach_safe(pos, tmp, &pd->stats)
    {
        stats_req_t *req = SAND_CONTAINER_OF(pos, stats_req_t, node);
        sand_list_remove(&req->node);
        uv_timer_stop(&req->timer);
        req->cb(req->sbx, SAND_ECANCELED, NULL, req->ud);
        uv_close((uv_handle_t *)&req->timer, stats_closed);
        n++;
    }
    if (pd->adopt_pending) {
        pd->adopt_pending = false;
        if (pd->adopt_done)
            pd->adopt_done(drv, SAND_ECANCELED, "sandbox driver closed", pd->adopt_ud);
    }
    pd->closing_timers = 2;
    uv_close((uv_handle_t *)&pd->watch, drv_timer_closed);
    uv_close((uv_handle_t *)&pd->adopt, drv_timer_closed);
    return n + 2;
}

/* ---- sandbox life cycle ------------------------------------------------------------------ */

static void sbx_handle_closed(uv_handle_t *h)
{
    sand__sbx_handle_closed(h->data);
}

static int proc_release_sbx(sand_sbx_t *sbx)
{
    proc_sbx_t *ps = sbx->priv;
    int n = 0;
    if (!ps)
        return 0;
    if (ps->proc_init) {
        uv_close((uv_handle_t *)&ps->proc, sbx_handle_closed);
        n++;
    }
    if (ps->timer_init) {
        uv_close((uv_handle_t *)&ps->timer, sbx_handle_closed);
        n++;
    }
    free(ps->pidfile);
    ps->pidfile = NULL;
    /* ps embeds the handles: the generic layer frees it after their last close callback. */
    return n;
}

static void remove_pidfile(sand_sbx_t *sbx)
{
    proc_sbx_t *ps = sbx->priv;
    if (ps && ps->pidfile)
        unlink(ps->pidfile);
}

static void sbx_died(sand_sbx_t *sbx, int status)
{
    /* The supervisor normally takes its workers with it; if it was killed, they are orphans that
     * would keep consuming the app's queues next to the replacement sandbox. */
    if (sbx->pid > 0)
        kill(-sbx->pid, SIGKILL);
    remove_pidfile(sbx);
    sand__sbx_exited(sbx, status);
}

static void stop_tick(uv_timer_t *t);

static void on_child_exit(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    sand_sbx_t *sbx = proc->data;
    proc_sbx_t *ps = sbx->priv;
    int status = term_signal ? 128 + term_signal : (int)exit_status;

    ps->proc_exited = true;
    if (sbx->state == SAND_SBX_STOPPING) {
        uv_timer_start(&ps->timer, stop_tick, 0, GROUP_POLL_MS);
        return;
    }
    sbx_died(sbx, status);
}

static bool supervisor_gone(sand_sbx_t *sbx)
{
    proc_sbx_t *ps = sbx->priv;
    int status;
    if (ps->proc_init && !sbx->adopted)
        return ps->proc_exited;
    return proc_gone(sbx->pid, ps->starttime, &status);
}

static void stop_tick(uv_timer_t *t)
{
    sand_sbx_t *sbx = t->data;
    proc_sbx_t *ps = sbx->priv;
    int64_t now = (int64_t)uv_now(t->loop);
    pid_t pgid = sbx->pid;

    if (!supervisor_gone(sbx)) {
        if (!ps->killed && now - ps->stop_started_ms >= sbx->drv->stop_grace_ms) {
            SAND_WARN(SBX_LOG, "sandbox of '%s' (pid %d) ignored SIGTERM for %lld ms: SIGKILL",
                      sbx->app, (int)pgid, (long long)sbx->drv->stop_grace_ms);
            kill(-pgid, SIGKILL);
            ps->killed = true;
        }
        return;
    }
    if (!ps->dead_since_ms) {
        ps->dead_since_ms = now;
        kill(-pgid, SIGKILL); /* stragglers the supervisor could not reap */
    }
    if (group_alive(pgid) && now - ps->dead_since_ms < GROUP_DRAIN_MS)
        return;
    uv_timer_stop(&ps->timer);
    remove_pidfile(sbx);
    sand__sbx_stop_done(sbx, 0);
}

static void proc_stop(sand_sbx_t *sbx)
{
    proc_sbx_t *ps = sbx->priv;

    if (sbx->pid <= 0) {
        sand__sbx_stop_done(sbx, 0);
        return;
    }
    ps->stop_started_ms = (int64_t)uv_now(sbx->drv->loop);
    ps->dead_since_ms = 0;
    ps->killed = false;
    /* SIGTERM to the supervisor only (as docker stop does to PID 1): it asks the workers to
     * drain; the whole group gets SIGKILL only when the grace period is over */
    kill(sbx->pid, SIGTERM);
    uv_timer_start(&ps->timer, stop_tick, GROUP_POLL_MS, GROUP_POLL_MS);
}

static proc_sbx_t *proc_sbx_new(sand_sbx_t *sbx)
{
    proc_sbx_t *ps = calloc(1, sizeof(*ps));
    if (!ps)
        return NULL;
    sbx->priv = ps;
    uv_timer_init(sbx->drv->loop, &ps->timer);
    ps->timer.data = sbx;
    ps->timer_init = true;
    return ps;
}

static int proc_start(sand_sbx_t *sbx, const sand_sbx_spec_t *spec, sand_err *err)
{
    sand_sbx_driver_t *drv = sbx->drv;
    proc_sbx_t *ps;
    sand_bytes_t dir, exe, logp, pidp;
    char **env = NULL;
    char *args[6];
    int nargs = 0, logfd = -1, rc = 0;
    uv_process_options_t o;
    uv_stdio_container_t stdio[3];

    sand_bytes_init(&dir, 4096);
    sand_bytes_init(&exe, 4096);
    sand_bytes_init(&logp, 4096);
    sand_bytes_init(&pidp, 4096);
    if (!(ps = proc_sbx_new(sbx)))
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    if (sand_bytes_appendf(&dir, "%s/apps/%s", drv->data_dir, sbx->app) < 0 ||
        sand_bytes_appendf(&exe, "%s/%s", drv->bin_dir, SUPERVISOR_NAME) < 0 ||
        sbx_path(drv, sbx->app, sbx->grains, ".log", &logp) < 0 ||
        sbx_path(drv, sbx->app, sbx->grains, ".pid", &pidp) < 0) {
        rc = sand_err_set(err, SAND_ETOOBIG, "sandbox paths of '%s' are too long", sbx->app);
        goto out;
    }
    if (access(exe.data, X_OK) < 0) {
        rc = sand_err_errno(err, SAND_ENOTFOUND, "supervisor '%s'", exe.data);
        goto out;
    }
    if ((rc = sand__mkdir_p(dir.data, err)) < 0)
        goto out;
    if ((logfd = open(logp.data, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0) {
        rc = sand_err_errno(err, SAND_EIO, "open '%s'", logp.data);
        goto out;
    }
    if (!(env = sand__sbx_env_build(spec, sbx->grains, spec->bundle_dir, drv->bin_dir, drv->lib_dir,
                                    drv->redis_socket))) {
        rc = sand_err_set(err, SAND_ENOMEM, "out of memory");
        goto out;
    }
    args[nargs++] = exe.data;
    args[nargs++] = "--app";
    args[nargs++] = sbx->app;
    if (*sbx->grains) {
        args[nargs++] = "--grains";
        args[nargs++] = sbx->grains;
    }
    args[nargs] = NULL;

    memset(&o, 0, sizeof(o));
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = logfd;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = logfd;
    o.file = exe.data;
    o.args = args;
    o.env = env;
    o.cwd = spec->bundle_dir;
    o.flags = UV_PROCESS_DETACHED; /* setsid(): own session and process group, survives sandd */
    o.stdio_count = 3;
    o.stdio = stdio;
    o.exit_cb = on_child_exit;
    ps->proc.data = sbx;
    ps->proc_init = true;
    if ((rc = uv_spawn(drv->loop, &ps->proc, &o)) < 0) {
        rc = sand_err_set(err, SAND_EIO, "spawn '%s': %s", exe.data, uv_strerror(rc));
        goto out;
    }
    sbx->pid = ps->proc.pid;
    snprintf(sbx->id, sizeof(sbx->id), "%d", (int)sbx->pid);
    ps->starttime = proc_starttime(sbx->pid);
    sbx->state = SAND_SBX_RUNNING;
    ps->pidfile = sand_bytes_steal(&pidp, NULL);
    if ((rc = pidfile_write(ps->pidfile, sbx, ps->starttime, err)) < 0) {
        /* A sandbox we could not record would be invisible to the next sandd: do not keep it. */
        kill(-sbx->pid, SIGKILL);
        goto out;
    }
    SAND_INFO(SBX_LOG, "started sandbox of '%s' v%lld (grains: %s): supervisor pid %d", sbx->app,
              (long long)sbx->version, *sbx->grains ? sbx->grains : "all", (int)sbx->pid);
out:
    if (logfd >= 0)
        close(logfd);
    sand__sbx_env_free(env);
    sand_bytes_release(&dir);
    sand_bytes_release(&exe);
    sand_bytes_release(&logp);
    sand_bytes_release(&pidp);
    return rc;
}

/* ---- stats ------------------------------------------------------------------------------- */

static void stats_collect(pid_t pgid, sand_sbx_stats_t *st)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    long page = sysconf(_SC_PAGESIZE);

    memset(st, 0, sizeof(*st));
    if (!d)
        return;
    while ((de = readdir(d))) {
        char buf[1024];
        const char *f;
        unsigned long long pgrp, rss;
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        if (!(f = proc_stat_fields((pid_t)pid, buf, sizeof(buf))) ||
            !proc_stat_field(f, 2, &pgrp) || (pid_t)pgrp != pgid || !proc_stat_field(f, 21, &rss))
            continue;
        st->pids++;
        st->memory += (int64_t)rss * page;
    }
    closedir(d);
}

static void stats_fire(uv_timer_t *t)
{
    stats_req_t *req = t->data;
    sand_sbx_t *sbx = req->sbx;
    sand_sbx_stats_t st;

    sand_list_remove(&req->node);
    if (sbx->state == SAND_SBX_RUNNING) {
        stats_collect(sbx->pid, &st);
        req->cb(sbx, 0, &st, req->ud);
    } else {
        req->cb(sbx, SAND_ENOTFOUND, NULL, req->ud);
    }
    sbx->drv->pending_closes++;
    uv_close((uv_handle_t *)&req->timer, stats_closed);
}

static int proc_stats(sand_sbx_t *sbx, sand_sbx_stats_cb cb, void *ud)
{
    proc_drv_t *pd = sbx->drv->priv;
    stats_req_t *req = calloc(1, sizeof(*req));
    if (!req)
        return SAND_ENOMEM;
    req->sbx = sbx;
    req->cb = cb;
    req->ud = ud;
    uv_timer_init(sbx->drv->loop, &req->timer);
    req->timer.data = req;
    uv_timer_start(&req->timer, stats_fire, 0, 0);
    sand_list_insert_tail(&pd->stats, &req->node);
    sbx->pending_ops++;
    return 0;
}

/* ---- adoption ---------------------------------------------------------------------------- */

static void watch_cb(uv_timer_t *t)
{
    sand_sbx_driver_t *drv = t->data;
    sand_list_t *pos, *tmp;
    bool any = false;

    sand_list_foreach_safe(pos, tmp, &drv->sandboxes)
    {
        sand_sbx_t *sbx = SAND_CONTAINER_OF(pos, sand_sbx_t, node);
        proc_sbx_t *ps = sbx->priv;
        int status;
        if (!sbx->adopted || sbx->state != SAND_SBX_RUNNING)
            continue;
        if (proc_gone(sbx->pid, ps->starttime, &status))
            sbx_died(sbx, status);
        else
            any = true;
    }
    if (!any) {
        uv_timer_stop(t);
        ((proc_drv_t *)drv->priv)->watching = false;
    }
}

static void adopt_one(sand_sbx_driver_t *drv, const char *path, proc_drv_t *pd)
{
    pidfile_info_t info;
    sand_sbx_t *sbx;
    proc_sbx_t *ps;
    char id[32];
    int status;

    if (!pidfile_read(path, &info)) {
        SAND_WARN(SBX_LOG, "removing unreadable sandbox pid file '%s'", path);
        unlink(path);
        return;
    }
    snprintf(id, sizeof(id), "%d", (int)info.pid);
    if (sand__sbx_known(drv, id))
        return;
    if (proc_gone(info.pid, info.start, &status) || !proc_is_supervisor(info.pid, info.app)) {
        SAND_INFO(SBX_LOG, "sandbox of '%s' (pid %d) is gone: removing '%s'", info.app,
                  (int)info.pid, path);
        unlink(path);
        return;
    }
    if (!(sbx = sand__sbx_new(drv, info.app, info.version, info.grains)) ||
        !(ps = proc_sbx_new(sbx)) || !(ps->pidfile = sand_strdup(path))) {
        SAND_ERROR(SBX_LOG, "out of memory adopting '%s'", path);
        if (sbx) {
            sbx->freed = true;
            sand__sbx_maybe_release(sbx);
        }
        return;
    }
    sbx->adopted = true;
    sbx->pid = info.pid;
    sbx->state = SAND_SBX_RUNNING;
    ps->starttime = info.start;
    sand_strlcpy(sbx->id, id, sizeof(sbx->id));
    SAND_INFO(SBX_LOG, "found sandbox of '%s' v%lld (grains: %s), supervisor pid %d", sbx->app,
              (long long)sbx->version, *sbx->grains ? sbx->grains : "all", (int)sbx->pid);
    if (pd->adopt_found)
        pd->adopt_found(sbx, pd->adopt_ud);
    if (drv->closing)
        return;
    if (!sbx->freed && sbx->state == SAND_SBX_RUNNING && !sbx->exit_cb) {
        sbx->freed = true;
        sand__sbx_maybe_release(sbx);
    } else if (sbx->state == SAND_SBX_RUNNING && !pd->watching) {
        pd->watching = true;
        uv_timer_start(&pd->watch, watch_cb, (uint64_t)drv->watch_interval_ms,
                       (uint64_t)drv->watch_interval_ms);
    }
}

static void adopt_scan(uv_timer_t *t)
{
    sand_sbx_driver_t *drv = t->data;
    proc_drv_t *pd = drv->priv;
    sand_bytes_t apps;
    DIR *d;
    struct dirent *de;
    sand_sbx_done_cb done = pd->adopt_done;
    void *ud = pd->adopt_ud;

    pd->adopt_pending = false;
    sand_bytes_init(&apps, 4096);
    if (sand_bytes_appendf(&apps, "%s/apps", drv->data_dir) < 0 || !(d = opendir(apps.data))) {
        sand_bytes_release(&apps);
        if (done)
            done(drv, 0, "", ud);
        return;
    }
    while ((de = readdir(d)) && !drv->closing) {
        sand_bytes_t adir;
        DIR *ad;
        struct dirent *fe;
        if (de->d_name[0] == '.')
            continue;
        sand_bytes_init(&adir, 4096);
        if (sand_bytes_appendf(&adir, "%s/%s", apps.data, de->d_name) == 0 &&
            (ad = opendir(adir.data))) {
            while ((fe = readdir(ad)) && !drv->closing) {
                size_t n = strlen(fe->d_name);
                sand_bytes_t p;
                if (strncmp(fe->d_name, "sandbox", 7) || n < 11 ||
                    strcmp(fe->d_name + n - 4, ".pid"))
                    continue;
                sand_bytes_init(&p, 4096);
                if (sand_bytes_appendf(&p, "%s/%s", adir.data, fe->d_name) == 0)
                    adopt_one(drv, p.data, pd);
                sand_bytes_release(&p);
            }
            closedir(ad);
        }
        sand_bytes_release(&adir);
    }
    closedir(d);
    sand_bytes_release(&apps);
    if (!drv->closing && done)
        done(drv, 0, "", ud);
}

static int proc_adopt_all(sand_sbx_driver_t *drv, sand_sbx_adopt_cb found, sand_sbx_done_cb done,
                          void *ud, sand_err *err)
{
    proc_drv_t *pd = drv->priv;
    if (pd->adopt_pending)
        return sand_err_set(err, SAND_EBUSY, "a sandbox scan is already running");
    pd->adopt_pending = true;
    pd->adopt_found = found;
    pd->adopt_done = done;
    pd->adopt_ud = ud;
    uv_timer_start(&pd->adopt, adopt_scan, 0, 0);
    return 0;
}

const sbx_ops_t sand__sbx_process_ops = {
    .open = proc_open,
    .start = proc_start,
    .stop = proc_stop,
    .stats = proc_stats,
    .adopt_all = proc_adopt_all,
    .release_sbx = proc_release_sbx,
    .close = proc_close,
};
