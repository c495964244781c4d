/*
 * Start-up and shutdown of the host agent: data directory and API key, the embedded local bus
 * (redis-server) and global bus (sand-kafka) or external ones, the bus clients, the execution
 * engine, the sandbox driver, the deployed apps, the LQHA reader and the HTTP frontend, wired on
 * one libuv loop. Start-up may block (it runs before anything is served); after it, nothing does.
 */
#include "sandd_internal.h"

#include "sand/protocol.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMP "sandd"
#define SAND_BACKUP_LINGER_MS                                                                      \
    50 /* producer batching of the global-bus backups (hierarchical mode) */

static int mkdir_p(const char *path, mode_t mode, sand_err *err)
{
    char tmp[PATH_MAX];
    if (sand_strlcpy(tmp, path, sizeof(tmp)) >= sizeof(tmp))
        return sand_err_set(err, SAND_EINVAL, "path '%s' is too long", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return sand_err_errno(err, SAND_EIO, "mkdir '%s'", tmp);
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return sand_err_errno(err, SAND_EIO, "mkdir '%s'", tmp);
    return 0;
}

/* Reads the API key, creating it (32 random bytes, hex, mode 0600) on first start. */
static int load_api_key(sand_daemon *d, sand_err *err)
{
    char path[PATH_MAX];
    if (d->cfg.api_key_file[0])
        sand_strlcpy(path, d->cfg.api_key_file, sizeof(path));
    else
        sand_fmt(path, sizeof(path), "%s/api.key", d->data_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        char key[65];
        if (sand_random_hex(key, 32) < 0)
            return sand_err_set(err, SAND_EIO, "cannot generate an API key");
        int wfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (wfd < 0)
            return sand_err_errno(err, SAND_EIO, "create '%s'", path);
        key[64] = '\n';
        ssize_t w = write(wfd, key, 65);
        close(wfd);
        if (w != 65)
            return sand_err_errno(err, SAND_EIO, "write '%s'", path);
        SAND_INFO(COMP, "created API key file %s", path);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return sand_err_errno(err, SAND_EIO, "open '%s'", path);
    ssize_t n = read(fd, d->key, sizeof(d->key) - 1);
    close(fd);
    if (n <= 0)
        return sand_err_set(err, SAND_EINVAL, "API key file '%s' is empty", path);
    d->key[n] = '\0';
    while (n > 0 && (d->key[n - 1] == '\n' || d->key[n - 1] == '\r' || d->key[n - 1] == ' '))
        d->key[--n] = '\0';
    if (n < 16)
        return sand_err_set(err, SAND_EINVAL, "API key in '%s' is shorter than 16 characters",
                            path);
    return 0;
}

/* The directory of the running executable: sand-supervisor, sand-worker-* and sand-kafka live
 * next to sandd. */
static int find_bin_dir(sand_daemon *d, sand_err *err)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0)
        return sand_err_errno(err, SAND_EIO, "readlink /proc/self/exe");
    exe[n] = '\0';
    sand_strlcpy(d->bin_dir, dirname(exe), sizeof(d->bin_dir));
    const char *env = getenv("SAND_LIB_DIR");
    if (env && *env) {
        sand_strlcpy(d->lib_dir, env, sizeof(d->lib_dir));
    } else {
        /* build tree: build/bin -> build/lib; install: PREFIX/bin -> PREFIX/lib/sand */
        char cand[PATH_MAX + 16];
        snprintf(cand, sizeof(cand), "%s/../lib/sand", d->bin_dir);
        if (access(cand, F_OK) != 0)
            snprintf(cand, sizeof(cand), "%s/../lib", d->bin_dir);
        if (!realpath(cand, d->lib_dir))
            sand_strlcpy(d->lib_dir, d->bin_dir, sizeof(d->lib_dir));
    }
    return 0;
}

#define KEY_EPOCH       "sandd:epoch" /* present while the local bus holds sandd's state */
#define REPLAY_QUIET_US (1500 * 1000) /* replay ends after this long without a record */
#define REPLAY_MIN_US   (3 * 1000 * 1000)

static void on_replay_record(sand_gbus_t *gbus, const sand_gbus_record_t *rec, void *ud)
{
    sand_daemon *d = ud;
    d->replay_last_us = sand_mono_us();
    if (d->engine)
        sand_engine_replay_add(d->engine, rec);
}

/* The local bus came back empty: read every app topic of the global bus from its start with a
 * consumer of its own (no committed offsets), so that on_tick() can re-deliver what was in
 * flight (replay_end()). */
static void replay_begin(sand_daemon *d)
{
    if (d->replay || d->apps.len == 0)
        return;
    char group[48], rnd[17];
    sand_random_hex(rnd, 8);
    snprintf(group, sizeof(group), "sand-replay-%s", rnd);
    sand_gbus_opts o = {.brokers = d->kafka_brokers,
                        .group_id = group,
                        .client_id = "sandd-replay",
                        .assign = true,
                        .record_cb = on_replay_record,
                        .ud = d};
    sand_err err;
    if (sand_gbus_open(d->loop, &o, &d->replay, &err) < 0) {
        SAND_ERROR(COMP, "replay from the global bus: %s", err.msg);
        return;
    }
    size_t it = 0;
    void *v;
    while (sand_map_next(&d->apps, &it, NULL, &v)) {
        app_entry_t *a = v;
        for (size_t i = 0; i < a->model->n_grains; i++) {
            char topic[256];
            snprintf(topic, sizeof(topic), SAND_TOPIC_FMT, a->name, a->model->grains[i]->name);
            if (sand_gbus_assign(d->replay, topic, (int)d->cfg.global_bus_partitions, &err) < 0)
                SAND_WARN(COMP, "replay: %s", err.msg);
        }
    }
    d->replay_started_us = d->replay_last_us = sand_mono_us();
    SAND_WARN(COMP, "the local bus lost its state: replaying in-flight events from the global bus");
}

static void replay_end(sand_daemon *d)
{
    sand_gbus_close(d->replay, 0, NULL, NULL);
    d->replay = NULL;
    size_t n = d->engine ? sand_engine_replay_finish(d->engine) : 0;
    SAND_INFO(COMP, "replay done: %zu event(s) delivered again from the global bus", n);
}

static void epoch_cb(sand_lbus_t *lbus, int status, const redisReply *reply, const char *errstr,
                     void *ud)
{
    sand_daemon *d = ud;
    /* SET NX answers OK only when the marker was missing: a new, empty Redis */
    if (status == 0 && reply && reply->type == REDIS_REPLY_STATUS && !d->stopping)
        replay_begin(d);
}

static void check_epoch(sand_daemon *d)
{
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)sand_now_us());
    sand_lbus_command(d->lbus, epoch_cb, d, "SET " KEY_EPOCH " %s NX", now);
}

static void on_lbus_state(sand_lbus_t *lbus, bool up, void *ud)
{
    sand_daemon *d = ud;
    if (!up) {
        if (d->serving)
            SAND_WARN(COMP, "local bus connection lost; reconnecting");
        if (!d->lbus_down_since_us)
            d->lbus_down_since_us = sand_mono_us();
        return;
    }
    d->lbus_down_since_us = 0;
    if (d->serving) {
        SAND_INFO(COMP, "local bus reconnected; restoring app users and queues");
        apps_restore(d, NULL);
        check_epoch(d);
    }
}

/* The embedded redis-server is part of sandd: if it died, start it again (same socket and
 * password; its state is rebuilt from the apps and the global bus). */
static void supervise_redis(sand_daemon *d)
{
    if (strcmp(d->cfg.local_bus_redis, "embedded") != 0 || !d->lbus_down_since_us ||
        sand_mono_us() - d->lbus_down_since_us < 2 * 1000 * 1000)
        return;
    sand_redisd_t r;
    sand_err err;
    if (sand_redisd_ensure(d->run_dir, &r, &err) < 0) {
        SAND_ERROR(COMP, "embedded redis: %s", err.msg);
    } else if (r.started) {
        SAND_WARN(COMP, "embedded redis-server was gone: started it again (pid %d)", (int)r.pid);
        sand_strlcpy(d->redis_run_id, r.run_id, sizeof(d->redis_run_id));
    }
    d->lbus_down_since_us = sand_mono_us();
}

static void on_record(sand_gbus_t *gbus, const sand_gbus_record_t *rec, void *ud)
{
    sand_daemon *d = ud;
    if (d->engine)
        sand_engine_on_record(d->engine, rec);
    /* remember the position; commit_offsets() commits it in batches */
    char key[300];
    if (sand_fmt(key, sizeof(key), "%s\n%d", rec->topic, (int)rec->partition) < 0)
        return;
    int64_t *off = sand_map_get(&d->offsets, key);
    if (!off) {
        off = malloc(sizeof(*off));
        if (!off || sand_map_set(&d->offsets, key, off, NULL) < 0) {
            free(off);
            return;
        }
        *off = -1;
    }
    if (rec->offset > *off)
        *off = rec->offset;
}

/* Commits the highest handled offset of every partition that moved since the last tick. The
 * records of the global bus are handled as soon as they are read (events are enqueued, backups
 * need no action), so the committed position only has to trail the reads. */
static void commit_offsets(sand_daemon *d)
{
    size_t it = 0;
    const char *key;
    void *v;
    while (sand_map_next(&d->offsets, &it, &key, &v)) {
        int64_t *off = v;
        const char *nl = strchr(key, '\n');
        if (*off < 0 || !nl)
            continue;
        char topic[256];
        size_t n = (size_t)(nl - key);
        if (n >= sizeof(topic))
            continue;
        memcpy(topic, key, n);
        topic[n] = '\0';
        if (sand_gbus_commit(d->gbus, topic, (int32_t)strtol(nl + 1, NULL, 10), *off, NULL) == 0)
            *off = -1;
    }
}

static void on_tick(uv_timer_t *t)
{
    sand_daemon *d = t->data;
    api_follow_tick(t);
    if (d->gbus)
        commit_offsets(d);
    if (d->draining && (d->waiters == 0 || sand_mono_us() > d->drain_deadline_us))
        sandd_stop(d);
    if (d->serving)
        supervise_redis(d);
    int64_t now = sand_mono_us();
    if (d->replay && now - d->replay_started_us > REPLAY_MIN_US &&
        now - d->replay_last_us > REPLAY_QUIET_US)
        replay_end(d);
}

static void on_agent_entry(sand_lbus_reader_t *r, const sand_lbus_entry_t *e, void *ud)
{
    sand_daemon *d = ud;
    sand_engine_on_agent_entry(d->engine, e);
}

#define DRAIN_MS 10000

static void on_signal(uv_signal_t *s, int signum)
{
    sand_daemon *d = s->data;
    if (d->draining || signum == SIGINT) {
        SAND_INFO(COMP, "signal %d: stopping", signum);
        sandd_stop(d);
        return;
    }
    /* let blocking invocations in flight get their answers (bounded), refuse new work */
    SAND_INFO(COMP, "signal %d: draining %zu waiting invocation(s), then stopping", signum,
              d->waiters);
    d->draining = true;
    d->drain_deadline_us = sand_mono_us() + DRAIN_MS * 1000;
}

static int open_buses(sand_daemon *d, sand_err *err)
{
    const char *redis = d->cfg.local_bus_redis;
    if (strcmp(redis, "embedded") == 0) {
        sand_redisd_t r;
        if (sand_redisd_ensure(d->run_dir, &r, err) < 0)
            return sand_err_wrap(err, 0, "embedded redis");
        sand_strlcpy(d->redis_endpoint, r.endpoint, sizeof(d->redis_endpoint));
        sand_strlcpy(d->redis_sock, r.sock, sizeof(d->redis_sock));
        sand_strlcpy(d->redis_pass, r.pass, sizeof(d->redis_pass));
        sand_strlcpy(d->redis_run_id, r.run_id, sizeof(d->redis_run_id));
        SAND_INFO(COMP, "local bus: %s redis-server pid %d at %s",
                  r.started ? "started" : "reattached to", (int)r.pid, r.sock);
    } else {
        sand_strlcpy(d->redis_endpoint, redis, sizeof(d->redis_endpoint));
        if (strncmp(redis, "unix:", 5) == 0)
            sand_strlcpy(d->redis_sock, redis + 5, sizeof(d->redis_sock));
        const char *pass = getenv("SAND_REDIS_PASSWORD");
        sand_strlcpy(d->redis_pass, pass ? pass : "", sizeof(d->redis_pass));
    }
    if (strcmp(d->cfg.global_bus_kafka, "embedded") == 0) {
        if (sand_kafkad_ensure(d->run_dir, d->bin_dir, d->kafka_brokers, sizeof(d->kafka_brokers),
                               err) < 0)
            return sand_err_wrap(err, 0, "embedded kafka");
        SAND_INFO(COMP, "global bus: embedded Kafka at %s", d->kafka_brokers);
    } else {
        sand_strlcpy(d->kafka_brokers, d->cfg.global_bus_kafka, sizeof(d->kafka_brokers));
    }

    sand_lbus_opts lo = {.endpoint = d->redis_endpoint,
                         .password = d->redis_pass[0] ? d->redis_pass : NULL,
                         .name = "sandd",
                         .state_cb = on_lbus_state,
                         .state_ud = d};
    if (sand_lbus_open(d->loop, &lo, &d->lbus, err) < 0)
        return sand_err_wrap(err, 0, "local bus");
    /* start-up may wait for the first connection: nothing is served yet */
    int64_t deadline = sand_mono_us() + 10 * 1000000;
    while (!sand_lbus_connected(d->lbus) && sand_mono_us() < deadline)
        uv_run(d->loop, UV_RUN_ONCE);
    if (!sand_lbus_connected(d->lbus))
        return sand_err_set(err, SAND_EBUS, "local bus '%s' does not answer", d->redis_endpoint);

    /* In hierarchical mode nothing waits for a produce: the backups are batched for 50 ms,
     * which keeps the broker's work per event small (librdkafka's mock cluster scans its
     * partition log linearly on every fetch, one entry per batch). In global mode every hop
     * goes through Kafka and keeps the default 5 ms. */
    bool global_mode = strcmp(d->cfg.bus_mode, "global") == 0;
    sand_gbus_opts go = {.brokers = d->kafka_brokers,
                         .client_id = "sandd",
                         .linger_ms = global_mode ? 0 : SAND_BACKUP_LINGER_MS,
                         .default_partitions = (int)d->cfg.global_bus_partitions,
                         .from_latest = false,
                         .assign = true,
                         .record_cb = on_record,
                         .ud = d};
    if (sand_gbus_open(d->loop, &go, &d->gbus, err) < 0)
        return sand_err_wrap(err, 0, "global bus");
    return 0;
}

static void recovered(int status, void *ud)
{
    sand_daemon *d = ud;
    if (status < 0)
        SAND_WARN(COMP, "could not reload running executions from the local bus");
    sand_err err;
    sand_lbus_reader_opts ro = {.endpoint = d->redis_endpoint,
                                .password = d->redis_pass[0] ? d->redis_pass : NULL,
                                .block_ms = 200,
                                .entry_cb = on_agent_entry,
                                .ud = d};
    if (sand_lbus_reader_open(d->loop, &ro, &d->reader, &err) < 0) {
        SAND_ERROR(COMP, "agent queue reader: %s", err.msg);
        d->exit_code = 1;
        sandd_stop(d);
        return;
    }
    size_t it = 0;
    void *v;
    while (sand_map_next(&d->apps, &it, NULL, &v)) {
        app_entry_t *a = v;
        char key[128];
        snprintf(key, sizeof(key), SAND_KEY_AGENT_FMT, a->name);
        sand_lbus_reader_add(d->reader, key, NULL);
    }
}

int sandd_start(sand_daemon *d, sand_err *err)
{
    d->started_us = sand_now_us();
    sand_map_init(&d->apps);
    sand_map_init(&d->series);
    sand_map_init(&d->offsets);
    sand_map_init(&d->assigned);
    sand_list_init(&d->followers);
    if (!realpath(d->cfg.data_dir, d->data_dir)) {
        if (mkdir_p(d->cfg.data_dir, 0700, err) < 0)
            return SAND_EIO;
        if (!realpath(d->cfg.data_dir, d->data_dir))
            return sand_err_errno(err, SAND_EIO, "data dir '%s'", d->cfg.data_dir);
    }
    if (sand_fmt(d->run_dir, sizeof(d->run_dir), "%s/run", d->data_dir) < 0 ||
        sand_fmt(d->apps_dir, sizeof(d->apps_dir), "%s/apps", d->data_dir) < 0)
        return sand_err_set(err, SAND_EINVAL, "data dir '%s' is too long", d->data_dir);
    if (mkdir_p(d->run_dir, 0700, err) < 0 || mkdir_p(d->apps_dir, 0711, err) < 0)
        return SAND_EIO;
    if (find_bin_dir(d, err) < 0 || load_api_key(d, err) < 0)
        return SAND_EINVAL;
    if (open_buses(d, err) < 0)
        return SAND_EBUS;

    sand_engine_opts_t eo = {.loop = d->loop,
                             .lbus = d->lbus,
                             .gbus = d->gbus,
                             .global_mode = strcmp(d->cfg.bus_mode, "global") == 0,
                             .default_timeout_ms = d->cfg.exec_timeout_ms,
                             .retention_ms = d->cfg.exec_retention_ms,
                             .app_lookup = apps_lookup_model,
                             .app_ud = d,
                             .observer = {metrics_step_done, metrics_exec_done, d},
                             .enqueued = apps_cold_start,
                             .enqueued_ud = d};
    if (sand_engine_new(&eo, &d->engine, err) < 0)
        return SAND_ENOMEM;

    char redis_sock[PATH_MAX];
    sand_strlcpy(redis_sock, d->redis_sock, sizeof(redis_sock));
    sand_sbx_opts_t so = {.kind = d->cfg.sandbox_driver,
                          .data_dir = d->data_dir,
                          .bin_dir = d->bin_dir,
                          .lib_dir = d->lib_dir,
                          .image = d->cfg.sandbox_image,
                          .granularity = d->cfg.sandbox_granularity,
                          .memory = d->cfg.sandbox_memory,
                          .pids = d->cfg.sandbox_pids,
                          .redis_socket = redis_sock[0] ? redis_sock : NULL};
    if (sand_sbx_driver_open(d->loop, &so, &d->sbx, err) < 0)
        return sand_err_wrap(err, 0, "sandbox driver");
    SAND_INFO(COMP, "sandbox driver: %s", sand_sbx_kind_name(sand_sbx_driver_kind(d->sbx)));

    if (apps_restore(d, err) < 0)
        return SAND_EIO;
    check_epoch(d); /* a Redis that restarted while sandd was down comes back empty */
    if (sand_engine_recover(d->engine, recovered, d, err) < 0)
        return SAND_EBUS;

    sand_http_opts_t ho = {.handler = api_handle,
                           .body_limit = api_body_limit,
                           .ud = d,
                           .max_body = (size_t)d->cfg.limits_invoke_body};
    if (sand_http_server_open(d->loop, d->cfg.listen, &ho, &d->http, err) < 0)
        return sand_err_wrap(err, 0, "listen on '%s'", d->cfg.listen);

    uv_signal_init(d->loop, &d->sigterm);
    uv_signal_init(d->loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_timer_init(d->loop, &d->follow_timer);
    d->follow_timer.data = d;
    uv_timer_start(&d->follow_timer, on_tick, 200, 200);
    d->serving = true;
    SAND_INFO(COMP, "sandd %s serving on %s (data %s, bus %s, %s instances)", SAND_VERSION,
              d->cfg.listen, d->data_dir, d->cfg.bus_mode, d->cfg.worker_instance);
    return 0;
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Stops serving and releases every handle; the loop then ends. Sandboxes, Redis and Kafka keep
 * running (they outlive sandd by design); `sandd --shutdown-all` stops them. */
void sandd_stop(sand_daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    d->serving = false;
    if (d->http) {
        sand_http_server_close(d->http, NULL, NULL);
        d->http = NULL;
    }
    api_close_followers(d);
    if (d->engine) {
        sand_engine_close(d->engine);
        d->engine = NULL;
    }
    if (d->reader) {
        sand_lbus_reader_close(d->reader, NULL, NULL);
        d->reader = NULL;
    }
    apps_close_all(d);
    if (d->sbx) {
        sand_sbx_driver_close(d->sbx, NULL, NULL);
        d->sbx = NULL;
    }
    if (d->replay) {
        sand_gbus_close(d->replay, 0, NULL, NULL);
        d->replay = NULL;
    }
    if (d->gbus) {
        commit_offsets(d);
        sand_gbus_close(d->gbus, 3000, NULL, NULL);
        d->gbus = NULL;
    }
    if (d->lbus) {
        sand_lbus_close(d->lbus, NULL, NULL);
        d->lbus = NULL;
    }
    close_handle((uv_handle_t *)&d->sigterm);
    close_handle((uv_handle_t *)&d->sigint);
    close_handle((uv_handle_t *)&d->follow_timer);
}

struct shutdown_ctx {
    size_t pending;
    bool scanned;
};

static void shutdown_stopped(sand_sbx_t *sbx, int status, void *ud)
{
    struct shutdown_ctx *c = ud;
    sand_sbx_free(sbx);
    c->pending--;
}

static void shutdown_found(sand_sbx_t *sbx, void *ud)
{
    struct shutdown_ctx *c = ud;
    SAND_INFO(COMP, "stopping sandbox %s of '%s'", sand_sbx_id(sbx), sand_sbx_app(sbx));
    if (sand_sbx_stop(sbx, shutdown_stopped, c) == 0)
        c->pending++;
}

static void shutdown_scanned(sand_sbx_driver_t *drv, int status, const char *msg, void *ud)
{
    struct shutdown_ctx *c = ud;
    c->scanned = true;
}

/* Stops what sandd leaves running on purpose (it outlives sandd so that a restart loses
 * nothing): the sandboxes of every app, found the way a restarted sandd adopts them (pid files
 * of the process driver, labelled containers of the docker driver), then the embedded Kafka and
 * redis-server. Runs its own short-lived loop. */
int sandd_shutdown_all(const char *data_dir, sand_err *err)
{
    char real[PATH_MAX], bin_dir[PATH_MAX], exe[PATH_MAX], run[PATH_MAX + 8];
    if (!realpath(data_dir, real))
        return sand_err_errno(err, SAND_EIO, "data dir '%s'", data_dir);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = '\0';
    sand_strlcpy(bin_dir, dirname(exe), sizeof(bin_dir));
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* both drivers: the sandd that ran here may have used either, whatever "auto" picks now */
    static const char *const kinds[] = {"process", "docker"};
    for (size_t k = 0; k < SAND_ARRAY_LEN(kinds); k++) {
        struct shutdown_ctx c = {0};
        sand_sbx_driver_t *drv;
        sand_err oerr;
        sand_sbx_opts_t so = {.kind = kinds[k], .data_dir = real, .bin_dir = bin_dir};
        if (sand_sbx_driver_open(&loop, &so, &drv, &oerr) < 0)
            continue;
        if (sand_sbx_adopt_all(drv, shutdown_found, shutdown_scanned, &c, &oerr) < 0)
            c.scanned = true;
        while (!c.scanned || c.pending > 0)
            if (uv_run(&loop, UV_RUN_ONCE) == 0 && c.pending == 0)
                break;
        sand_sbx_driver_close(drv, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&loop);
    snprintf(run, sizeof(run), "%s/run", real);
    sand_kafkad_stop(run, err);
    sand_redisd_stop(run, err);
    return 0;
}
