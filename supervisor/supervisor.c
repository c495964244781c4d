/*
 * The supervisor's loop (see supervisor.h): grain workers are started with posix_spawn, every
 * signal arrives through one signalfd, poll() sleeps until the next signal or deadline (a
 * restart due, the shutdown grace, a Redis reconnect). Reporting to Redis is best effort: a
 * hiredis synchronous connection with a short timeout; while Redis is unreachable the
 * supervisor keeps supervising and publishes every worker's current status once it reconnects.
 */
#include "supervisor.h"

#include "sand/protocol.h"
#include "sand/workflow.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#define LOG_COMP         "supervisor"
#define REDIS_TIMEOUT_MS 1000
#define REDIS_RETRY_MS   1000
#define DEFAULT_LOG_MAX  10000
#define ORPHAN_REAP_MS   1000

extern char **environ;

typedef enum wstate { W_IDLE, W_RUNNING, W_RESTARTING, W_FAILED } wstate_t;

static const char *const wstate_names[] = {"stopped", "running", "restarting", "failed"};

typedef struct worker {
    char grain[SAND_NAME_MAX];
    const char *runtime;
    char exe[4096];
    pid_t pid;
    wstate_t state;
    int restarts;
    int64_t started_us;   /* epoch, reported */
    int64_t started_mono; /* for the uptime that resets the backoff */
    int64_t backoff_ms;   /* delay of the next restart */
    int64_t restart_at;   /* monotonic us, when state is W_RESTARTING */
} worker_t;

#define PUBLISH_INTERVAL_US (2 * 1000000)

typedef struct sup {
    const char *app;
    const char *bundle;
    const char *bin_dir;
    worker_t *workers;
    size_t n_workers;
    redisContext *redis;
    const char *redis_url, *redis_user, *redis_pass;
    int64_t redis_retry_at; /* monotonic us; 0 = connect now */
    bool redis_stale;       /* statuses changed while Redis was unreachable */
    int64_t log_max;
    bool stopping;
    int64_t kill_at; /* monotonic us: SIGKILL what is left */
    bool killed;
    int64_t grace_ms;
    int64_t publish_at; /* next periodic re-publication of every worker's status */
    bool once;          /* cold mode: workers serve one event each; exit when they are done */
} sup_t;

/* ---- Redis reporting --------------------------------------------------------------------- */

static void redis_drop(sup_t *s, const char *why)
{
    if (s->redis) {
        SAND_WARN(LOG_COMP, "redis '%s': %s (will retry)", s->redis_url, why);
        redisFree(s->redis);
        s->redis = NULL;
    }
    s->redis_stale = true;
    s->redis_retry_at = sand_mono_us() + REDIS_RETRY_MS * 1000;
}

/* Runs one command; returns the reply (caller frees) or NULL after dropping the connection. */
static redisReply *redis_cmd(sup_t *s, int argc, const char **argv)
{
    redisReply *r;
    if (!s->redis)
        return NULL;
    r = redisCommandArgv(s->redis, argc, argv, NULL);
    if (!r) {
        redis_drop(s, s->redis->errstr[0] ? s->redis->errstr : "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR)
        SAND_WARN(LOG_COMP, "redis refused %s: %s", argv[0], r->str);
    return r;
}

static void publish_worker(sup_t *s, worker_t *w);

static bool redis_connect(sup_t *s)
{
    struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
    redisReply *r;

    if (s->redis)
        return true;
    if (!s->redis_url || sand_mono_us() < s->redis_retry_at)
        return false;
    sand_endpoint_t ep;
    sand_err err;
    if (sand_endpoint_parse(s->redis_url, &ep, &err) < 0) {
        SAND_ERROR(LOG_COMP, "bad %s: %s", SAND_ENV_REDIS, err.msg);
        s->redis_url = NULL;
        return false;
    }
    s->redis = ep.unix_socket ? redisConnectUnixWithTimeout(ep.path, tv)
                              : redisConnectWithTimeout(ep.host, ep.port, tv);
    if (!s->redis || s->redis->err) {
        const char *why = s->redis ? s->redis->errstr : "out of memory";
        if (s->redis)
            SAND_WARN(LOG_COMP, "redis '%s': %s (will retry)", s->redis_url, why);
        if (s->redis)
            redisFree(s->redis);
        s->redis = NULL;
        s->redis_stale = true;
        s->redis_retry_at = sand_mono_us() + REDIS_RETRY_MS * 1000;
        return false;
    }
    fcntl(s->redis->fd, F_SETFD, FD_CLOEXEC); /* workers must not inherit our connection */
    redisSetTimeout(s->redis, tv);
    if (s->redis_pass && *s->redis_pass) {
        const char *argv[3] = {"AUTH", s->redis_user, s->redis_pass};
        bool with_user = s->redis_user && *s->redis_user;
        if (!with_user)
            argv[1] = s->redis_pass;
        if (!(r = redis_cmd(s, with_user ? 3 : 2, argv)))
            return false;
        if (r->type == REDIS_REPLY_ERROR) {
            freeReplyObject(r);
            redis_drop(s, "authentication refused");
            return false;
        }
        freeReplyObject(r);
    }
    SAND_INFO(LOG_COMP, "connected to redis '%s'", s->redis_url);
    if (s->redis_stale) {
        s->redis_stale = false;
        for (size_t i = 0; i < s->n_workers && s->redis; i++)
            publish_worker(s, &s->workers[i]);
    }
    return s->redis != NULL;
}

static void publish_worker(sup_t *s, worker_t *w)
{
    char key[128], json[512];
    const char *argv[4];
    redisReply *r;

    if (!redis_connect(s)) {
        s->redis_stale = true;
        return;
    }
    snprintf(key, sizeof(key), SAND_KEY_SUP_FMT, s->app);
    snprintf(json, sizeof(json),
             "{\"pid\":%d,\"state\":\"%s\",\"restarts\":%d,\"started_us\":%lld,"
             "\"runtime\":\"%s\"}",
             w->state == W_RUNNING ? (int)w->pid : 0, wstate_names[w->state], w->restarts,
             (long long)w->started_us, w->runtime);
    argv[0] = "HSET";
    argv[1] = key;
    argv[2] = w->grain;
    argv[3] = json;
    if ((r = redis_cmd(s, 4, argv)))
        freeReplyObject(r);
}

/* One "system" line for the app's log stream, and the same on stderr. */
static void app_log(sup_t *s, const char *grain, const char *fmt, ...) SAND_PRINTF(3, 4);

static void app_log(sup_t *s, const char *grain, const char *fmt, ...)
{
    char key[128], msg[1024], ts[32], maxlen[32];
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    SAND_INFO(LOG_COMP, "%s", msg);
    if (!redis_connect(s))
        return;
    snprintf(key, sizeof(key), SAND_KEY_LOG_FMT, s->app);
    snprintf(ts, sizeof(ts), "%lld", (long long)sand_now_us());
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)s->log_max);
    const char *argv[] = {"XADD",          key,      "MAXLEN",        "~",
                          maxlen,          "*",      SAND_F_LOG_TIME, ts,
                          SAND_F_LOG_KIND, "system", SAND_F_GRAIN,    grain ? grain : "",
                          SAND_F_LOG_MSG,  msg};
    if ((r = redis_cmd(s, (int)SAND_ARRAY_LEN(argv), argv)))
        freeReplyObject(r);
}

/* ---- workers ----------------------------------------------------------------------------- */

/* environ plus SAND_GRAIN=grain (replacing an inherited one), and LD_BIND_NOW=1 for workers
 * that fork their instances (bind_now): every shared library's symbols are then bound once in
 * the worker, instead of lazily in each instance (a copy-on-write fault on a GOT page and a
 * symbol lookup per first call). Caller frees the array and the last entry it allocated. */
static char **worker_env(const char *grain, bool bind_now, char **own)
{
    size_t n = 0, k = 0, len = strlen(SAND_SUP_ENV_GRAIN);
    char **env;
    sand_bytes_t b;

    while (environ[n])
        n++;
    if (!(env = calloc(n + 3, sizeof(*env))))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if ((strncmp(environ[i], SAND_SUP_ENV_GRAIN, len) || environ[i][len] != '=') &&
            strncmp(environ[i], "LD_BIND_NOW=", 12))
            env[k++] = environ[i];
    if (bind_now)
        env[k++] = "LD_BIND_NOW=1";
    sand_bytes_init(&b, 256);
    if (sand_bytes_appendf(&b, "%s=%s", SAND_SUP_ENV_GRAIN, grain) < 0) {
        free(env);
        return NULL;
    }
    *own = env[k++] = sand_bytes_steal(&b, NULL);
    env[k] = NULL;
    return env;
}

static void worker_fail(sup_t *s, worker_t *w, const char *why)
{
    w->state = W_FAILED;
    w->pid = 0;
    app_log(s, w->grain, "grain '%s': worker '%s' cannot start: %s; not restarting", w->grain,
            w->exe, why);
    publish_worker(s, w);
}

static void worker_start(sup_t *s, worker_t *w)
{
    posix_spawnattr_t attr;
    sigset_t empty, deflt;
    char *argv[] = {w->exe, "--grain", w->grain, NULL};
    char *own = NULL;
    char **env;
    pid_t pid;
    int rc;

    if (access(w->exe, X_OK) < 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s (is the %s runtime built?)", strerror(errno), w->runtime);
        worker_fail(s, w, why);
        return;
    }
    /* the JVM is not forked: binding all of libjvm at start would only slow it down */
    bool forks = strcmp(w->runtime, "java") != 0;
    if (!(env = worker_env(w->grain, forks, &own))) {
        worker_fail(s, w, "out of memory");
        return;
    }
    sigemptyset(&empty);
    sigemptyset(&deflt);
    sigaddset(&deflt, SIGTERM);
    sigaddset(&deflt, SIGINT);
    sigaddset(&deflt, SIGHUP);
    sigaddset(&deflt, SIGCHLD);
    sigaddset(&deflt, SIGPIPE);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &deflt);
    rc = posix_spawn(&pid, w->exe, NULL, &attr, argv, env);
    posix_spawnattr_destroy(&attr);
    free(own);
    free(env);
    if (rc != 0) {
        worker_fail(s, w, strerror(rc));
        return;
    }
    w->pid = pid;
    w->state = W_RUNNING;
    w->started_us = sand_now_us();
    w->started_mono = sand_mono_us();
    app_log(s, w->grain, "grain '%s': worker started (pid %d, %s, restarts %d)", w->grain, (int)pid,
            w->runtime, w->restarts);
    publish_worker(s, w);
}

static void worker_exited(sup_t *s, worker_t *w, int st)
{
    char how[64];
    int64_t now = sand_mono_us();
    int64_t uptime_ms = (now - w->started_mono) / 1000;

    if (WIFSIGNALED(st))
        snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(st));
    else
        snprintf(how, sizeof(how), "exited with code %d", WEXITSTATUS(st));
    w->pid = 0;
    if (s->once) {
        /* cold mode: the worker served its one event (or failed with it: a restarted worker
         * could not take it back, its pending entry belongs to the consumer that died); the
         * sandbox ends with it */
        w->state = W_IDLE;
        publish_worker(s, w);
        return;
    }
    if (s->stopping) {
        w->state = W_IDLE;
        app_log(s, w->grain, "grain '%s': worker %s (stopping)", w->grain, how);
        return;
    }
    if (uptime_ms >= SAND_SUP_HEALTHY_MS)
        w->backoff_ms = SAND_SUP_BACKOFF_MIN_MS;
    w->restarts++;
    w->state = W_RESTARTING;
    w->restart_at = now + w->backoff_ms * 1000;
    app_log(s, w->grain, "grain '%s': worker %s after %lld ms; restart %d in %lld ms", w->grain,
            how, (long long)uptime_ms, w->restarts, (long long)w->backoff_ms);
    w->backoff_ms =
        w->backoff_ms * 2 > SAND_SUP_BACKOFF_MAX_MS ? SAND_SUP_BACKOFF_MAX_MS : w->backoff_ms * 2;
    publish_worker(s, w);
}

static void reap(sup_t *s)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (size_t i = 0; i < s->n_workers; i++) {
            if (s->workers[i].pid == pid && s->workers[i].state == W_RUNNING) {
                worker_exited(s, &s->workers[i], st);
                break;
            }
        }
        /* anything else is an orphan (a grain instance whose worker died): reaped, nothing more */
    }
}

static size_t workers_alive(const sup_t *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_workers; i++)
        n += s->workers[i].state == W_RUNNING;
    return n;
}

static bool workers_restarting(const sup_t *s)
{
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->workers[i].state == W_RESTARTING)
            return true;
    return false;
}

static void begin_stop(sup_t *s, int sig)
{
    if (s->stopping)
        return;
    s->stopping = true;
    s->kill_at = sand_mono_us() + s->grace_ms * 1000;
    app_log(s, NULL, "supervisor of '%s': signal %d, stopping %zu worker(s)", s->app, sig,
            workers_alive(s));
    for (size_t i = 0; i < s->n_workers; i++) {
        worker_t *w = &s->workers[i];
        if (w->state == W_RUNNING)
            kill(w->pid, SIGTERM);
        else if (w->state == W_RESTARTING)
            w->state = W_IDLE;
    }
}

/* SIGKILLs every remaining child (orphaned instances reparented to us) and reaps them. */
static void kill_children(void)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t self = getpid();

    if (d) {
        while ((de = readdir(d))) {
            char path[64], buf[512];
            char *end, *rp;
            long pid = strtol(de->d_name, &end, 10);
            int fd;
            ssize_t n;
            if (*end || pid <= 0)
                continue;
            snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
            if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                continue;
            n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n <= 0)
                continue;
            buf[n] = '\0';
            if ((rp = strrchr(buf, ')')) && rp[1] == ' ' && rp[2] && rp[3] == ' ' &&
                strtol(rp + 4, NULL, 10) == self)
                kill((pid_t)pid, SIGKILL);
        }
        closedir(d);
    }
    for (int64_t until = sand_mono_us() + ORPHAN_REAP_MS * 1000; sand_mono_us() < until;) {
        if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
            break;
        usleep(10000);
    }
}

/* ---- setup ------------------------------------------------------------------------------- */

static bool grain_listed(const char *list, const char *grain)
{
    size_t n = strlen(grain);
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && !strncmp(p, grain, n))
            return true;
        p = comma ? comma + 1 : p + len;
    }
    return false;
}

static int setup_workers(sup_t *s, const sand_app_t *app, const char *list)
{
    size_t cap = app->n_grains;
    if (!(s->workers = calloc(cap ? cap : 1, sizeof(*s->workers))))
        return -1;
    for (size_t i = 0; i < app->n_grains; i++) {
        const sand_grain_t *g = app->grains[i];
        worker_t *w;
        if (list && *list && !grain_listed(list, g->name))
            continue;
        w = &s->workers[s->n_workers++];
        sand_strlcpy(w->grain, g->name, sizeof(w->grain));
        w->runtime = sand_runtime_name(g->runtime);
        w->backoff_ms = SAND_SUP_BACKOFF_MIN_MS;
        snprintf(w->exe, sizeof(w->exe), "%s/sand-worker-%s", s->bin_dir, w->runtime);
    }
    /* a requested grain missing from app.yaml is a deploy mismatch worth a loud line */
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[SAND_NAME_MAX];
        bool found = false;
        snprintf(name, sizeof(name), "%.*s", (int)(len < sizeof(name) ? len : sizeof(name) - 1), p);
        for (size_t i = 0; i < s->n_workers; i++)
            found = found || !strcmp(s->workers[i].grain, name);
        if (!found)
            app_log(s, name, "grain '%s' is not defined in app.yaml of '%s'; not started", name,
                    s->app);
        p = comma ? comma + 1 : p + len;
    }
    return 0;
}

static int64_t next_deadline(const sup_t *s)
{
    int64_t t = INT64_MAX;
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->workers[i].state == W_RESTARTING && s->workers[i].restart_at < t)
            t = s->workers[i].restart_at;
    if (s->stopping && !s->killed && s->kill_at < t)
        t = s->kill_at;
    if (s->redis_stale && !s->redis && s->redis_url && s->redis_retry_at < t)
        t = s->redis_retry_at;
    if (!s->stopping && s->publish_at < t)
        t = s->publish_at;
    return t;
}

int sand_sup_run(const sand_sup_opts_t *opts)
{
    sup_t s = {0};
    sand_app_t *app = NULL;
    sand_diags_t diags;
    sand_err err = {0};
    sigset_t mask;
    int sfd, rc = 0;
    const char *grains = getenv(SAND_ENV_GRAINS);
    s.once = getenv(SAND_ENV_ONCE) != NULL;
    const char *log_max = getenv(SAND_ENV_LOG_MAX);

    s.app = getenv(SAND_ENV_APP);
    s.bundle = getenv(SAND_ENV_BUNDLE);
    s.bin_dir = getenv(SAND_ENV_BIN_DIR);
    s.redis_url = getenv(SAND_ENV_REDIS);
    s.redis_user = getenv(SAND_ENV_REDIS_USER);
    s.redis_pass = getenv(SAND_ENV_REDIS_PASS);
    s.grace_ms = opts && opts->grace_ms > 0 ? opts->grace_ms : SAND_SUP_GRACE_MS;
    s.log_max = DEFAULT_LOG_MAX;
    if (s.redis_url && !*s.redis_url)
        s.redis_url = NULL;
    if (log_max && sand_parse_int(log_max, 1, INT64_MAX, &s.log_max, NULL) < 0)
        s.log_max = DEFAULT_LOG_MAX;
    if (!s.app || !*s.app || !s.bundle || !*s.bundle || !s.bin_dir || !*s.bin_dir) {
        SAND_ERROR(LOG_COMP, "%s, %s and %s must be set", SAND_ENV_APP, SAND_ENV_BUNDLE,
                   SAND_ENV_BIN_DIR);
        return 2;
    }

    /* Signals first, so a SIGTERM racing with startup is not lost. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
        SAND_ERROR(LOG_COMP, "signalfd: %s", strerror(errno));
        return 1;
    }
    /* Outside a container we are not PID 1: become the reaper of orphaned grain instances. */
    if (getpid() != 1)
        prctl(PR_SET_CHILD_SUBREAPER, 1);

    sand_diags_init(&diags);
    if (sand_app_load(s.bundle, NULL, &app, &diags, &err) < 0) {
        sand_bytes_t out;
        sand_bytes_init(&out, 64 * 1024);
        sand_diags_format(&diags, "app.yaml", &out);
        app_log(&s, NULL, "supervisor of '%s': cannot load '%s/app.yaml': %s", s.app, s.bundle,
                err.msg);
        if (out.len)
            fprintf(stderr, "%s", out.data);
        sand_bytes_release(&out);
        sand_diags_release(&diags);
        close(sfd);
        if (s.redis)
            redisFree(s.redis);
        return 2;
    }
    sand_diags_release(&diags);
    if (setup_workers(&s, app, grains) < 0) {
        SAND_ERROR(LOG_COMP, "out of memory");
        sand_app_free(app);
        close(sfd);
        return 1;
    }
    app_log(&s, NULL, "supervisor of '%s' started (pid %d, %zu grain(s))", s.app, (int)getpid(),
            s.n_workers);
    for (size_t i = 0; i < s.n_workers; i++)
        worker_start(&s, &s.workers[i]);
    s.publish_at = sand_mono_us() + PUBLISH_INTERVAL_US;

    for (;;) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        struct signalfd_siginfo si;
        int64_t now = sand_mono_us(), deadline = next_deadline(&s);
        int timeout = deadline == INT64_MAX ? -1
                      : deadline <= now     ? 0
                                            : (int)((deadline - now + 999) / 1000);

        if ((s.stopping || s.once) && workers_alive(&s) == 0 && !workers_restarting(&s))
            break;
        if (poll(&pfd, 1, timeout) < 0 && errno != EINTR) {
            SAND_ERROR(LOG_COMP, "poll: %s", strerror(errno));
            rc = 1;
            break;
        }
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                begin_stop(&s, (int)si.ssi_signo);
        }
        reap(&s);
        now = sand_mono_us();
        for (size_t i = 0; i < s.n_workers; i++) {
            worker_t *w = &s.workers[i];
            if (w->state == W_RESTARTING && w->restart_at <= now && !s.stopping)
                worker_start(&s, w);
        }
        if (s.stopping && !s.killed && now >= s.kill_at) {
            s.killed = true;
            app_log(&s, NULL, "supervisor of '%s': workers ignored SIGTERM for %lld ms: SIGKILL",
                    s.app, (long long)s.grace_ms);
            for (size_t i = 0; i < s.n_workers; i++)
                if (s.workers[i].state == W_RUNNING)
                    kill(s.workers[i].pid, SIGKILL);
        }
        if (s.redis_stale && !s.redis && s.redis_url && now >= s.redis_retry_at)
            redis_connect(&s);
        /* Re-publish every worker's status now and then: the hash is the host agent's view of
         * this sandbox, and a write lost to a reconnect or raced by a replaced sandbox heals. */
        if (!s.stopping && now >= s.publish_at) {
            for (size_t i = 0; i < s.n_workers; i++)
                publish_worker(&s, &s.workers[i]);
            s.publish_at = now + PUBLISH_INTERVAL_US;
        }
    }

    kill_children();
    app_log(&s, NULL, "supervisor of '%s' stopped", s.app);
    if (s.redis)
        redisFree(s.redis);
    close(sfd);
    free(s.workers);
    sand_app_free(app);
    return rc;
}
