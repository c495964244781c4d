/*
 * Tests of the process sandbox driver and sand-supervisor against a real redis-server on a
 * private unix socket: a sandbox for a bundle with two python grains runs one worker per grain
 * (their pids appear in sand:{app}:sup), a killed worker is restarted with restarts=1, a killed
 * supervisor is reported through exit_cb, stopping leaves no process behind, a missing worker
 * binary is reported as failed, and a second driver instance adopts a sandbox left running by
 * the first. The grain workers are this test binary itself, started through a symlink named
 * sand-worker-python (it then just sleeps until SIGTERM), so the test needs no Python runtime.
 * The docker driver runs against a fake Engine API on a private unix socket (no Docker needed):
 * its create request carries the documented hardening, a container becomes RUNNING with its id
 * and pid, stats subtract the inactive file cache, worker pids are translated to host pids
 * through the top call, an exit is reported with the container's
 * exit code and the dead container removed, stop means stop + delete, a container left running
 * is adopted by a new driver, and closing with a start in flight calls nothing back; a docker
 * driver without a daemon fails to open while "auto" falls back to the process driver.
 */
#include "sand/sandbox.h"

#include "sand/protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

extern char **environ;

static char g_tmp[256];
static char g_sock[320];
static char g_bin[320];
static char g_data[320];
static char g_bundle[320];
static char g_bundle_c[320];
static pid_t g_redis = -1;

/* ---- the stub grain worker --------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;

static void on_term(int sig)
{
    g_stop = 1;
}

static int stub_worker_main(void)
{
    signal(SIGTERM, on_term);
    while (!g_stop)
        pause();
    return 0;
}

/* ---- a minimal RESP client (the test must not depend on the code under test) ------------- */

static int redis_fd(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (strlen(g_sock) >= sizeof(a.sun_path)) {
        close(fd);
        return -1;
    }
    memcpy(a.sun_path, g_sock, strlen(g_sock) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Sends a command; stores a bulk/status/integer reply's text in out ("" for nil). Returns the
 * reply type character or 0 on I/O failure. */
static char redis_call(char *out, size_t outsz, int argc, ...)
{
    char buf[8192];
    size_t len = 0;
    va_list ap;
    int fd = redis_fd();
    ssize_t n;
    char type = 0, *crlf;

    out[0] = '\0';
    if (fd < 0)
        return 0;
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "*%d\r\n", argc);
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        const char *a = va_arg(ap, const char *);
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "$%zu\r\n%s\r\n", strlen(a), a);
    }
    va_end(ap);
    if (write(fd, buf, len) != (ssize_t)len) {
        close(fd);
        return 0;
    }
    len = 0;
    while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0) {
        len += (size_t)n;
        buf[len] = '\0';
        if (!(crlf = strstr(buf, "\r\n")))
            continue;
        type = buf[0];
        if (type == '$') {
            long bl = strtol(buf + 1, NULL, 10);
            if (bl < 0)
                break;
            if (len < (size_t)(crlf - buf) + 2 + (size_t)bl + 2)
                continue;
            snprintf(out, outsz, "%.*s", (int)bl, crlf + 2);
        } else {
            snprintf(out, outsz, "%.*s", (int)(crlf - buf - 1), buf + 1);
        }
        break;
    }
    close(fd);
    return type;
}

typedef struct wstatus {
    int pid;
    int restarts;
    char state[32];
} wstatus_t;

static bool sup_status(const char *app, const char *grain, wstatus_t *st)
{
    char key[128], json[1024];
    const char *p;
    snprintf(key, sizeof(key), SAND_KEY_SUP_FMT, app);
    memset(st, 0, sizeof(*st));
    if (redis_call(json, sizeof(json), 3, "HGET", key, grain) != '$' || !json[0])
        return false;
    if ((p = strstr(json, "\"pid\":")))
        st->pid = atoi(p + 6);
    if ((p = strstr(json, "\"restarts\":")))
        st->restarts = atoi(p + 11);
    if ((p = strstr(json, "\"state\":\"")))
        sscanf(p + 9, "%31[a-z]", st->state);
    return true;
}

/* ---- loop helpers ------------------------------------------------------------------------ */

typedef bool (*pred_fn)(void *ud);

typedef struct waiter {
    pred_fn pred;
    void *ud;
    bool ok;
    int64_t deadline;
} waiter_t;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void waiter_tick(uv_timer_t *t)
{
    waiter_t *w = t->data;
    if ((w->ok = w->pred(w->ud)) || mono_ms() >= w->deadline) {
        uv_timer_stop(t);
        uv_stop(t->loop);
    }
}

/* Runs the loop until pred holds (checked every 20 ms) or timeout_ms passes. */
static bool run_until(uv_loop_t *loop, pred_fn pred, void *ud, int timeout_ms)
{
    uv_timer_t t;
    waiter_t w = {pred, ud, false, mono_ms() + timeout_ms};
    uv_timer_init(loop, &t);
    t.data = &w;
    uv_timer_start(&t, waiter_tick, 0, 20);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return w.ok;
}

static bool flag_set(void *ud)
{
    return *(bool *)ud;
}

typedef struct both_q {
    const char *app;
    int min_restarts_a;
    int old_pid_a;
} both_q;

/* Both grains running with live pids (and grain a restarted at least min_restarts_a times with a
 * pid other than old_pid_a). */
static bool both_running(void *ud)
{
    both_q *q = ud;
    wstatus_t a, b;
    return sup_status(q->app, "a", &a) && sup_status(q->app, "b", &b) &&
           !strcmp(a.state, "running") && !strcmp(b.state, "running") && a.pid > 0 && b.pid > 0 &&
           kill(a.pid, 0) == 0 && kill(b.pid, 0) == 0 && a.restarts >= q->min_restarts_a &&
           a.pid != q->old_pid_a;
}

static bool pid_gone(pid_t pid)
{
    char path[64], buf[512];
    int fd;
    ssize_t n;
    char *rp;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((fd = open(path, O_RDONLY)) < 0)
        return true;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    rp = strrchr(buf, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static bool pid_gone_pred(void *ud)
{
    return pid_gone(*(pid_t *)ud);
}

/* ---- fixture ----------------------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_bundle(const char *dir, const char *yaml)
{
    char p[512];
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/grains", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/grains/a.py", dir);
    write_file(p, "def handle(e, c):\n    return e\n");
    snprintf(p, sizeof(p), "%s/grains/b.py", dir);
    write_file(p, "def handle(e, c):\n    return e\n");
    snprintf(p, sizeof(p), "%s/grains/r.c", dir);
    write_file(p, "int h(void) { return 0; }\n");
    snprintf(p, sizeof(p), "%s/app.yaml", dir);
    write_file(p, yaml);
}

static int setup(void **state)
{
    char self[512], p[512], sup[512];
    ssize_t n;
    char *argv[] = {"redis-server", "--port", "0", "--unixsocket", g_sock, "--save", "",
                    "--appendonly", "no",     NULL};

    snprintf(g_tmp, sizeof(g_tmp), "/tmp/sand-test-sandbox-XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    snprintf(g_sock, sizeof(g_sock), "%s/redis.sock", g_tmp);
    snprintf(g_bin, sizeof(g_bin), "%s/bin", g_tmp);
    snprintf(g_data, sizeof(g_data), "%s/data", g_tmp);
    snprintf(g_bundle, sizeof(g_bundle), "%s/bundle", g_tmp);
    snprintf(g_bundle_c, sizeof(g_bundle_c), "%s/bundle-c", g_tmp);
    mkdir(g_bin, 0755);
    mkdir(g_data, 0755);
    if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0)
        return -1;
    self[n] = '\0';
    snprintf(p, sizeof(p), "%s/sand-worker-python", g_bin);
    if (symlink(self, p) < 0)
        return -1;
    snprintf(sup, sizeof(sup), "%s/bin/sand-supervisor", SAND_BINARY_DIR);
    snprintf(p, sizeof(p), "%s/sand-supervisor", g_bin);
    if (symlink(sup, p) < 0)
        return -1;
    make_bundle(g_bundle, "app: demo\n"
                          "grains:\n"
                          "  a: { runtime: python, code: grains/a.py }\n"
                          "  b: { runtime: python, code: grains/b.py }\n");
    make_bundle(g_bundle_c, "app: democ\n"
                            "grains:\n"
                            "  a: { runtime: python, code: grains/a.py }\n"
                            "  r: { runtime: c, code: grains/r.c, handler: h }\n");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int src = posix_spawnp(&g_redis, "redis-server", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (src != 0)
        return -1;
    for (int i = 0; i < 500 && access(g_sock, F_OK) < 0; i++)
        usleep(10000);
    char out[64];
    for (int i = 0; i < 200 && redis_call(out, sizeof(out), 1, "PING") != '+'; i++)
        usleep(10000);
    return access(g_sock, F_OK);
}

static int teardown(void **state)
{
    char cmd[512];
    if (g_redis > 0) {
        kill(g_redis, SIGTERM);
        waitpid(g_redis, NULL, 0);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
    return WEXITSTATUS(system(cmd)) == 0 ? 0 : -1;
}

static sand_sbx_driver_t *open_driver(uv_loop_t *loop, const char *kind)
{
    sand_sbx_driver_t *drv = NULL;
    sand_err err = {0};
    sand_sbx_opts_t o = {.kind = kind,
                         .data_dir = g_data,
                         .bin_dir = g_bin,
                         .redis_socket = g_sock,
                         .stop_grace_ms = 3000,
                         .watch_interval_ms = 50};
    int rc = sand_sbx_driver_open(loop, &o, &drv, &err);
    if (rc < 0)
        print_error("open: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(drv);
    return drv;
}

static void close_driver(uv_loop_t *loop, sand_sbx_driver_t *drv)
{
    sand_sbx_driver_close(drv, NULL, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
}

static const char *const g_env[] = {"SAND_LOG_MAX=100", NULL};

static sand_sbx_t *start_demo(sand_sbx_driver_t *drv, const char *app, const char *bundle,
                              sand_sbx_exit_cb cb, void *ud)
{
    sand_sbx_t *sbx = NULL;
    sand_err err = {0};
    sand_sbx_spec_t spec = {.app = app, .version = 7, .bundle_dir = bundle, .env = g_env};
    int rc = sand_sbx_start(drv, &spec, cb, ud, &sbx, &err);
    if (rc < 0)
        print_error("start: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return sbx;
}

typedef struct stop_res {
    bool done;
    int status;
} stop_res;

static void on_stopped(sand_sbx_t *sbx, int status, void *ud)
{
    stop_res *r = ud;
    r->done = true;
    r->status = status;
}

static void stop_and_check(uv_loop_t *loop, sand_sbx_t *sbx, const char *app)
{
    stop_res r = {0};
    wstatus_t a, b;
    pid_t sup = sand_sbx_supervisor_pid(sbx);
    bool have_a = sup_status(app, "a", &a), have_b = sup_status(app, "b", &b);

    assert_int_equal(sand_sbx_stop(sbx, on_stopped, &r), 0);
    assert_int_equal(sand_sbx_stop(sbx, on_stopped, &r), SAND_EBUSY);
    assert_true(run_until(loop, flag_set, &r.done, 15000));
    assert_int_equal(r.status, 0);
    assert_int_equal(sand_sbx_state(sbx), SAND_SBX_STOPPED);
    /* nothing of the sandbox is left: supervisor, workers, process group */
    assert_true(pid_gone(sup));
    if (have_a && a.pid > 0)
        assert_true(pid_gone(a.pid));
    if (have_b && b.pid > 0)
        assert_true(pid_gone(b.pid));
    assert_true(kill(-sup, 0) < 0 && errno == ESRCH);
}

/* ---- tests ------------------------------------------------------------------------------- */

typedef struct exit_res {
    bool called;
    int status;
} exit_res;

static void on_exit_cb(sand_sbx_t *sbx, int status, void *ud)
{
    exit_res *r = ud;
    r->called = true;
    r->status = status;
}

static void test_start_restart_stop(void **state)
{
    uv_loop_t loop;
    sand_sbx_driver_t *drv;
    sand_sbx_t *sbx;
    exit_res ex = {0};
    both_q q = {"demo", 0, -1};
    wstatus_t a, b, a2;
    char pidfile[512], out[64], key[128];
    pid_t sup;

    assert_int_equal(uv_loop_init(&loop), 0);
    drv = open_driver(&loop, "process");
    assert_int_equal(sand_sbx_driver_kind(drv), SAND_SBX_PROCESS);
    sbx = start_demo(drv, "demo", g_bundle, on_exit_cb, &ex);
    assert_int_equal(sand_sbx_state(sbx), SAND_SBX_RUNNING);
    sup = sand_sbx_supervisor_pid(sbx);
    assert_true(sup > 0);
    assert_int_equal(atoi(sand_sbx_id(sbx)), sup);
    assert_string_equal(sand_sbx_app(sbx), "demo");
    assert_int_equal(sand_sbx_version(sbx), 7);
    assert_string_equal(sand_sbx_grains(sbx), "");
    /* detached: its own session and process group */
    assert_int_equal(getpgid(sup), sup);
    assert_int_equal(getsid(sup), sup);
    snprintf(pidfile, sizeof(pidfile), "%s/apps/demo/sandbox.pid", g_data);
    assert_int_equal(access(pidfile, F_OK), 0);

    /* both workers run, reported in Redis, inside the sandbox's process group */
    assert_true(run_until(&loop, both_running, &q, 10000));
    assert_true(sup_status("demo", "a", &a));
    assert_true(sup_status("demo", "b", &b));
    assert_int_not_equal(a.pid, b.pid);
    assert_int_equal(getpgid(a.pid), sup);
    assert_int_equal(getpgid(b.pid), sup);
    assert_int_equal(a.restarts, 0);
    /* the supervisor logged the starts to the app's log stream */
    snprintf(key, sizeof(key), SAND_KEY_LOG_FMT, "demo");
    assert_int_equal(redis_call(out, sizeof(out), 2, "XLEN", key), ':');
    assert_true(atoi(out) >= 3);

    /* a killed worker is restarted, with restarts=1 and a new pid; the other is untouched */
    assert_int_equal(kill(a.pid, SIGKILL), 0);
    q.min_restarts_a = 1;
    q.old_pid_a = a.pid;
    assert_true(run_until(&loop, both_running, &q, 10000));
    assert_true(sup_status("demo", "a", &a2));
    assert_int_equal(a2.restarts, 1);
    assert_int_not_equal(a2.pid, a.pid);
    assert_true(sup_status("demo", "b", &b));
    assert_int_equal(b.restarts, 0);

    stop_and_check(&loop, sbx, "demo");
    assert_false(ex.called); /* a requested stop is not an unexpected exit */
    assert_int_not_equal(access(pidfile, F_OK), 0);
    sand_sbx_free(sbx);
    close_driver(&loop, drv);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_supervisor_killed(void **state)
{
    uv_loop_t loop;
    sand_sbx_driver_t *drv;
    sand_sbx_t *sbx;
    exit_res ex = {0};
    both_q q = {"demo", 0, -1};
    wstatus_t a;
    pid_t sup;

    assert_int_equal(uv_loop_init(&loop), 0);
    drv = open_driver(&loop, "process");
    sbx = start_demo(drv, "demo", g_bundle, on_exit_cb, &ex);
    sup = sand_sbx_supervisor_pid(sbx);
    assert_true(run_until(&loop, both_running, &q, 10000));
    assert_true(sup_status("demo", "a", &a));

    assert_int_equal(kill(sup, SIGKILL), 0);
    assert_true(run_until(&loop, flag_set, &ex.called, 10000));
    assert_int_equal(ex.status, 128 + SIGKILL);
    assert_int_equal(sand_sbx_state(sbx), SAND_SBX_EXITED);
    /* its orphaned workers are killed so they do not compete with a replacement */
    assert_true(run_until(&loop, pid_gone_pred, &a.pid, 5000));

    sand_sbx_free(sbx);
    close_driver(&loop, drv);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static bool failed_reported(void *ud)
{
    wstatus_t r, a;
    return sup_status("democ", "r", &r) && !strcmp(r.state, "failed") &&
           sup_status("democ", "a", &a) && !strcmp(a.state, "running");
}

static void test_missing_worker_binary(void **state)
{
    uv_loop_t loop;
    sand_sbx_driver_t *drv;
    sand_sbx_t *sbx;
    wstatus_t r;
    char key[128], out[64];

    assert_int_equal(uv_loop_init(&loop), 0);
    drv = open_driver(&loop, "process");
    sbx = start_demo(drv, "democ", g_bundle_c, NULL, NULL);
    /* sand-worker-c does not exist in the bin dir: failed, while the python grain runs */
    assert_true(run_until(&loop, failed_reported, NULL, 10000));
    assert_true(sup_status("democ", "r", &r));
    assert_int_equal(r.restarts, 0);
    assert_int_equal(r.pid, 0);
    /* no restart loop: still failed with zero restarts a while later */
    usleep(400 * 1000);
    assert_true(sup_status("democ", "r", &r));
    assert_string_equal(r.state, "failed");
    assert_int_equal(r.restarts, 0);
    snprintf(key, sizeof(key), SAND_KEY_LOG_FMT, "democ");
    assert_int_equal(redis_call(out, sizeof(out), 2, "XLEN", key), ':');
    assert_true(atoi(out) >= 2);

    stop_and_check(&loop, sbx, "democ");
    sand_sbx_free(sbx);
    close_driver(&loop, drv);
    assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct adopt_res {
    sand_sbx_t *found[4];
    int n_found;
    bool done;
    int status;
    exit_res ex;
} adopt_res;

static void on_found(sand_sbx_t *sbx, void *ud)
{
    adopt_res *r = ud;
    if (r->n_found < 4)
        r->found[r->n_found++] = sbx;
    sand_sbx_set_exit_cb(sbx, on_exit_cb, &r->ex); /* keep it */
}

static void on_adopt_done(sand_sbx_driver_t *drv, int status, const char *msg, void *ud)
{
    adopt_res *r = ud;
    r->done = true;
    r->status = status;
}

static void test_adopt(void **state)
{
    uv_loop_t loop;
    sand_sbx_driver_t *drv;
    sand_sbx_t *sbx;
    both_q q = {"demo", 0, -1};
    adopt_res ar = {0};
    sand_err err = {0};
    const char *grains[] = {"a", "b", NULL};
    sand_sbx_spec_t spec = {
        .app = "demo", .version = 9, .bundle_dir = g_bundle, .grains = grains, .env = g_env};
    pid_t sup;

    assert_int_equal(uv_loop_init(&loop), 0);
    drv = open_driver(&loop, "process");
    assert_int_equal(sand_sbx_start(drv, &spec, NULL, NULL, &sbx, &err), 0);
    assert_string_equal(sand_sbx_grains(sbx), "a,b");
    sup = sand_sbx_supervisor_pid(sbx);
    assert_true(run_until(&loop, both_running, &q, 10000));

    /* sandd goes away without stopping its sandboxes */
    sand_sbx_free(sbx);
    close_driver(&loop, drv);
    assert_int_equal(kill(sup, 0), 0);

    /* a new instance finds it */
    drv = open_driver(&loop, "process");
    assert_int_equal(sand_sbx_adopt_all(drv, on_found, on_adopt_done, &ar, &err), 0);
    assert_true(run_until(&loop, flag_set, &ar.done, 5000));
    assert_int_equal(ar.status, 0);
    assert_int_equal(ar.n_found, 1);
    sbx = ar.found[0];
    assert_true(sand_sbx_adopted(sbx));
    assert_int_equal(sand_sbx_supervisor_pid(sbx), sup);
    assert_string_equal(sand_sbx_app(sbx), "demo");
    assert_int_equal(sand_sbx_version(sbx), 9);
    assert_string_equal(sand_sbx_grains(sbx), "a,b");
    assert_int_equal(sand_sbx_state(sbx), SAND_SBX_RUNNING);

    /* a second scan does not report it again */
    ar.done = false;
    assert_int_equal(sand_sbx_adopt_all(drv, on_found, on_adopt_done, &ar, &err), 0);
    assert_true(run_until(&loop, flag_set, &ar.done, 5000));
    assert_int_equal(ar.n_found, 1);

    /* the adopted sandbox still works and stops like a started one */
    stop_and_check(&loop, sbx, "demo");
    assert_false(ar.ex.called);
    sand_sbx_free(sbx);
    close_driver(&loop, drv);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the docker driver against a fake Engine API ----------------------------------------- */

/* A minimal Docker daemon on a unix socket, one connection at a time (the driver makes one
 * call at a time), answering "Connection: close". It keeps one container whose state the test
 * drives, and records what the driver asked for. */
typedef struct fake_docker {
    pthread_mutex_t mu;
    pthread_t thread;
    int lfd;
    char sock[400];
    int state; /* 0 no container, 1 running, 2 exited */
    int exit_code;
    char name[256];
    char create_body[16384];
    int n_create, n_stop, n_delete, n_stats;
} fake_docker_t;

static fake_docker_t g_fd;

static void fake_reply(int fd, int code, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     code, strlen(body));
    if (write(fd, head, (size_t)n) < 0 || write(fd, body, strlen(body)) < 0)
        return;
}

static void fake_serve(int fd)
{
    static char req[32768];
    char method[16] = "", path[2048] = "", out[4096];
    size_t len = 0, need = 0;
    char *hend = NULL, *cl;
    ssize_t n;

    while (len < sizeof(req) - 1 && (n = read(fd, req + len, sizeof(req) - 1 - len)) > 0) {
        len += (size_t)n;
        req[len] = '\0';
        if (!hend && (hend = strstr(req, "\r\n\r\n"))) {
            cl = strstr(req, "Content-Length:");
            need = (size_t)(hend - req) + 4 + (cl && cl < hend ? strtoul(cl + 15, NULL, 10) : 0);
        }
        if (hend && len >= need)
            break;
    }
    if (!hend || sscanf(req, "%15s %2047s", method, path) != 2)
        return;
    pthread_mutex_lock(&g_fd.mu);
    if (!strcmp(path, "/_ping")) {
        fake_reply(fd, 200, "OK");
    } else if (!strncmp(path, "/v1.41/images/", 14)) {
        fake_reply(fd, 200, "{}");
    } else if (!strncmp(path, "/v1.41/containers/create?name=", 30)) {
        sand_strlcpy(g_fd.name, path + 30, sizeof(g_fd.name));
        sand_strlcpy(g_fd.create_body, hend + 4, sizeof(g_fd.create_body));
        g_fd.state = 1;
        g_fd.n_create++;
        fake_reply(fd, 201,
                   "{\"Id\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
                   "abcdef\"}");
    } else if (!strncmp(path, "/v1.41/containers/json?", 23)) {
        if (!g_fd.state)
            fake_reply(fd, 200, "[]");
        else {
            snprintf(out, sizeof(out),
                     "[{\"Id\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                     "\",\"Names\":[\"/%s\"],\"State\":\"%s\",\"Labels\":{\"sand.app\":\"demo\","
                     "\"sand.version\":\"7\",\"sand.grains\":\"\",\"sand.data_dir\":\"%s\"}}]",
                     g_fd.name, g_fd.state == 1 ? "running" : "exited", g_data);
            fake_reply(fd, 200, out);
        }
    } else if (g_fd.state && strstr(path, g_fd.name)) {
        const char *rest = strstr(path, g_fd.name) + strlen(g_fd.name);
        if (!strcmp(method, "POST") && !strcmp(rest, "/start")) {
            fake_reply(fd, 204, "");
        } else if (!strcmp(method, "GET") && !strcmp(rest, "/json")) {
            snprintf(out, sizeof(out),
                     "{\"Id\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                     "\",\"State\":{\"Pid\":%d,\"ExitCode\":%d},\"HostConfig\":{\"Memory\":0}}",
                     g_fd.state == 1 ? 4242 : 0, g_fd.exit_code);
            fake_reply(fd, 200, out);
        } else if (!strncmp(rest, "/stats?", 7)) {
            g_fd.n_stats++;
            fake_reply(fd, 200,
                       "{\"memory_stats\":{\"usage\":1000000,\"limit\":5000000,\"stats\":{"
                       "\"inactive_file\":200000}},\"pids_stats\":{\"current\":3}}");
        } else if (!strcmp(rest, "/top")) {
            fake_reply(
                fd, 200,
                "{\"Titles\":[\"UID\",\"PID\",\"PPID\",\"C\",\"STIME\",\"TTY\",\"TIME\","
                "\"CMD\"],\"Processes\":["
                "[\"65534\",\"4242\",\"1\",\"0\",\"t\",\"?\",\"0\",\"/b/sand-supervisor "
                "--app demo\"],"
                "[\"65534\",\"4300\",\"4242\",\"0\",\"t\",\"?\",\"0\",\"/b/sand-worker-python "
                "--grain a\"],"
                "[\"65534\",\"4301\",\"4300\",\"0\",\"t\",\"?\",\"0\",\"/b/sand-worker-python "
                "--grain a\"],"
                "[\"65534\",\"4302\",\"4242\",\"0\",\"t\",\"?\",\"0\",\"/b/sand-worker-python "
                "--grain b\"]]}");
        } else if (!strncmp(rest, "/stop?", 6)) {
            g_fd.n_stop++;
            g_fd.state = 2;
            fake_reply(fd, 204, "");
        } else if (!strcmp(method, "DELETE")) {
            g_fd.n_delete++;
            g_fd.state = 0;
            fake_reply(fd, 204, "");
        } else {
            fake_reply(fd, 404, "{\"message\":\"unexpected\"}");
        }
    } else {
        if (!strcmp(method, "DELETE"))
            g_fd.n_delete++;
        fake_reply(fd, 404, "{\"message\":\"No such container\"}");
    }
    pthread_mutex_unlock(&g_fd.mu);
}

static void *fake_docker_main(void *arg)
{
    int fd;
    (void)arg;
    while ((fd = accept(g_fd.lfd, NULL, NULL)) >= 0) {
        fake_serve(fd);
        close(fd);
    }
    return NULL;
}

static void fake_docker_start(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memset(&g_fd, 0, sizeof(g_fd));
    pthread_mutex_init(&g_fd.mu, NULL);
    snprintf(g_fd.sock, sizeof(g_fd.sock), "%s/docker.sock", g_tmp);
    unlink(g_fd.sock);
    assert_true(strlen(g_fd.sock) < sizeof(a.sun_path));
    memcpy(a.sun_path, g_fd.sock, strlen(g_fd.sock) + 1);
    g_fd.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(g_fd.lfd >= 0);
    assert_int_equal(bind(g_fd.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(g_fd.lfd, 16), 0);
    assert_int_equal(pthread_create(&g_fd.thread, NULL, fake_docker_main, NULL), 0);
}

static void fake_docker_stop(void)
{
    shutdown(g_fd.lfd, SHUT_RDWR);
    pthread_join(g_fd.thread, NULL);
    close(g_fd.lfd);
    unlink(g_fd.sock);
    pthread_mutex_destroy(&g_fd.mu);
}

static sand_sbx_driver_t *open_fake_docker(uv_loop_t *loop)
{
    sand_sbx_driver_t *drv = NULL;
    sand_err err = {0};
    sand_sbx_opts_t o = {.kind = "docker",
                         .data_dir = g_data,
                         .bin_dir = g_bin,
                         .redis_socket = g_sock,
                         .docker_socket = g_fd.sock,
                         .memory = 64 << 20,
                         .pids = 100,
                         .watch_interval_ms = 50};
    int rc = sand_sbx_driver_open(loop, &o, &drv, &err);
    if (rc < 0)
        print_error("open: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(sand_sbx_driver_kind(drv), SAND_SBX_DOCKER);
    return drv;
}

static bool sbx_running(void *ud)
{
    return sand_sbx_state(ud) == SAND_SBX_RUNNING;
}

typedef struct stats_res {
    bool done;
    int status;
    sand_sbx_stats_t st;
} stats_res;

static void on_stats(sand_sbx_t *sbx, int status, const sand_sbx_stats_t *st, void *ud)
{
    stats_res *r = ud;
    r->done = true;
    r->status = status;
    if (st)
        r->st = *st;
}

typedef struct pids_res {
    bool done;
    int status;
    size_t n;
    char grain[4][16];
    pid_t pid[4];
} pids_res;

static void on_pids(sand_sbx_t *sbx, int status, const sand_sbx_worker_pid_t *w, size_t n, void *ud)
{
    pids_res *r = ud;
    r->done = true;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < 4; i++) {
        sand_strlcpy(r->grain[i], w[i].grain, sizeof(r->grain[i]));
        r->pid[i] = w[i].pid;
    }
}

static int fake_count(const int *field)
{
    int v;
    pthread_mutex_lock(&g_fd.mu);
    v = *field;
    pthread_mutex_unlock(&g_fd.mu);
    return v;
}

static void test_docker_fake_daemon(void **state)
{
    uv_loop_t loop;
    sand_sbx_driver_t *drv;
    sand_sbx_t *sbx;
    exit_res ex = {0};
    stats_res sr = {0};
    stop_res stp = {0};
    char want[512];

    signal(SIGPIPE, SIG_IGN); /* the fake daemon writes to connections the client may close */
    fake_docker_start();
    assert_int_equal(uv_loop_init(&loop), 0);
    drv = open_fake_docker(&loop);

    /* start: create + start on the HTTP thread, RUNNING once the loop hears back */
    sbx = start_demo(drv, "demo", g_bundle, on_exit_cb, &ex);
    assert_int_equal(sand_sbx_state(sbx), SAND_SBX_STARTING);
    assert_string_equal(sand_sbx_id(sbx), "");
    assert_true(run_until(&loop, sbx_running, sbx, 5000));
    assert_int_equal(strlen(sand_sbx_id(sbx)), 64);
    assert_int_equal(sand_sbx_supervisor_pid(sbx), 4242);
    /* the container is hardened as documented */
    pthread_mutex_lock(&g_fd.mu);
    assert_non_null(strstr(g_fd.name, "sand-demo-v7-"));
    assert_non_null(strstr(g_fd.create_body, "\"NetworkMode\":\"none\""));
    assert_non_null(strstr(g_fd.create_body, "\"ReadonlyRootfs\":true"));
    assert_non_null(strstr(g_fd.create_body, "\"CapDrop\":[\"ALL\"]"));
    assert_non_null(strstr(g_fd.create_body, "\"SecurityOpt\":[\"no-new-privileges\"]"));
    assert_non_null(strstr(g_fd.create_body, "\"User\":\"65534:65534\""));
    assert_non_null(strstr(g_fd.create_body, "\"Memory\":67108864"));
    assert_non_null(strstr(g_fd.create_body, "\"PidsLimit\":100"));
    assert_non_null(strstr(g_fd.create_body, "\"Init\":false"));
    assert_non_null(strstr(g_fd.create_body, "SAND_REDIS=unix:/run/sand/redis.sock"));
    assert_non_null(strstr(g_fd.create_body, "SAND_BUNDLE=/app"));
    assert_non_null(strstr(g_fd.create_body, "\"/tmp\":\"rw,exec,nosuid,nodev,size=256m"));
    snprintf(want, sizeof(want), "\"%s:/app:ro\"", g_bundle);
    assert_non_null(strstr(g_fd.create_body, want));
    snprintf(want, sizeof(want), "\"%s:/run/sand:ro\"", g_tmp);
    assert_non_null(strstr(g_fd.create_body, want));
    snprintf(want, sizeof(want), "\"sand.data_dir\":\"%s\"", g_data);
    assert_non_null(strstr(g_fd.create_body, want));
    assert_non_null(strstr(g_fd.create_body, "\"sand.version\":\"7\""));
    pthread_mutex_unlock(&g_fd.mu);

    /* stats: usage minus inactive file cache */
    assert_int_equal(sand_sbx_stats(sbx, on_stats, &sr), 0);
    assert_true(run_until(&loop, flag_set, &sr.done, 5000));
    assert_int_equal(sr.status, 0);
    assert_int_equal(sr.st.memory, 800000);
    assert_int_equal(sr.st.memory_limit, 5000000);
    assert_int_equal(sr.st.pids, 3);

    /* worker pids as seen from the host: direct children of the supervisor, not instances */
    pids_res pr = {0};
    assert_int_equal(sand_sbx_worker_pids(sbx, on_pids, &pr), 0);
    assert_true(run_until(&loop, flag_set, &pr.done, 5000));
    assert_int_equal(pr.status, 0);
    assert_int_equal(pr.n, 2);
    assert_string_equal(pr.grain[0], "a");
    assert_int_equal(pr.pid[0], 4300);
    assert_string_equal(pr.grain[1], "b");
    assert_int_equal(pr.pid[1], 4302);

    /* the container dies: the poll reports its exit code, the dead container is removed */
    pthread_mutex_lock(&g_fd.mu);
    g_fd.state = 2;
    g_fd.exit_code = 3;
    pthread_mutex_unlock(&g_fd.mu);
    assert_true(run_until(&loop, flag_set, &ex.called, 5000));
    assert_int_equal(ex.status, 3);
    assert_int_equal(sand_sbx_state(sbx), SAND_SBX_EXITED);
    sand_sbx_free(sbx);
    for (int i = 0; i < 100 && fake_count(&g_fd.n_delete) == 0; i++)
        uv_run(&loop, UV_RUN_NOWAIT), usleep(10000);
    assert_int_equal(fake_count(&g_fd.n_delete), 1);

    /* stop: docker stop then delete */
    memset(&ex, 0, sizeof(ex));
    sbx = start_demo(drv, "demo", g_bundle, on_exit_cb, &ex);
    assert_true(run_until(&loop, sbx_running, sbx, 5000));
    assert_int_equal(sand_sbx_stop(sbx, on_stopped, &stp), 0);
    assert_true(run_until(&loop, flag_set, &stp.done, 5000));
    assert_int_equal(stp.status, 0);
    assert_int_equal(sand_sbx_state(sbx), SAND_SBX_STOPPED);
    assert_int_equal(fake_count(&g_fd.n_stop), 1);
    assert_int_equal(fake_count(&g_fd.n_delete), 2);
    assert_false(ex.called);
    sand_sbx_free(sbx);

    /* a container left running is adopted by a new driver instance */
    sbx = start_demo(drv, "demo", g_bundle, NULL, NULL);
    assert_true(run_until(&loop, sbx_running, sbx, 5000));
    sand_sbx_free(sbx); /* detached, still running */
    close_driver(&loop, drv);
    drv = open_fake_docker(&loop);
    adopt_res ar = {0};
    assert_int_equal(sand_sbx_adopt_all(drv, on_found, on_adopt_done, &ar, NULL), 0);
    assert_true(run_until(&loop, flag_set, &ar.done, 5000));
    assert_int_equal(ar.status, 0);
    assert_int_equal(ar.n_found, 1);
    assert_true(sand_sbx_adopted(ar.found[0]));
    assert_string_equal(sand_sbx_app(ar.found[0]), "demo");
    assert_int_equal(sand_sbx_version(ar.found[0]), 7);
    assert_int_equal(strlen(sand_sbx_id(ar.found[0])), 64);
    sand_sbx_free(ar.found[0]);

    /* closing with work in flight cancels it: no callback after close, nothing leaks */
    memset(&ex, 0, sizeof(ex));
    memset(&sr, 0, sizeof(sr));
    sbx = start_demo(drv, "demo", g_bundle, on_exit_cb, &ex);
    close_driver(&loop, drv);
    assert_false(ex.called);
    assert_int_equal(uv_loop_close(&loop), 0);
    fake_docker_stop();
}

static void test_docker_unavailable(void **state)
{
    uv_loop_t loop;
    sand_sbx_driver_t *drv = NULL;
    sand_err err = {0};
    char sock[400];
    sand_sbx_opts_t o = {.kind = "docker", .data_dir = g_data, .bin_dir = g_bin};

    snprintf(sock, sizeof(sock), "%s/no-docker.sock", g_tmp);
    o.docker_socket = sock;
    assert_int_equal(uv_loop_init(&loop), 0);
    /* docker requested: open fails and says why */
    assert_true(sand_sbx_driver_open(&loop, &o, &drv, &err) < 0);
    assert_null(drv);
    assert_non_null(strstr(err.msg, "no-docker.sock"));
    /* auto: falls back to the process driver */
    o.kind = "auto";
    assert_int_equal(sand_sbx_driver_open(&loop, &o, &drv, &err), 0);
    assert_int_equal(sand_sbx_driver_kind(drv), SAND_SBX_PROCESS);
    close_driver(&loop, drv);
    (void)state;
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bad_options(void **state)
{
    uv_loop_t loop;
    sand_sbx_driver_t *drv = NULL;
    sand_sbx_t *sbx = NULL;
    sand_err err = {0};
    sand_sbx_opts_t o = {.kind = "vm", .data_dir = g_data, .bin_dir = g_bin};
    sand_sbx_spec_t spec = {.app = "demo", .bundle_dir = g_bundle};

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(sand_sbx_driver_open(&loop, &o, &drv, &err), SAND_EINVAL);
    assert_non_null(strstr(err.msg, "'vm'"));
    assert_null(drv);
    /* a missing supervisor binary fails the start synchronously and leaves nothing */
    o.kind = "process";
    o.bin_dir = g_data;
    assert_int_equal(sand_sbx_driver_open(&loop, &o, &drv, &err), 0);
    assert_int_equal(sand_sbx_start(drv, &spec, NULL, NULL, &sbx, &err), SAND_ENOTFOUND);
    assert_null(sbx);
    assert_non_null(strstr(err.msg, "sand-supervisor"));
    close_driver(&loop, drv);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (!strncmp(base, "sand-worker-", 12))
        return stub_worker_main();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_start_restart_stop),
        cmocka_unit_test(test_supervisor_killed),
        cmocka_unit_test(test_missing_worker_binary),
        cmocka_unit_test(test_adopt),
        cmocka_unit_test(test_docker_unavailable),
        cmocka_unit_test(test_docker_fake_daemon),
    };
    sand_log_set_level(SAND_LOG_ERROR);
    return cmocka_run_group_tests(tests, setup, teardown);
}
