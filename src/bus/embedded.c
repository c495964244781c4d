/*
 * The embedded services: a private redis-server (local bus and local data layer) and the
 * sand-kafka program (librdkafka's mock cluster, the global bus), each started detached in a new
 * session so a sandd crash leaves them running, and found again on restart through pid files in
 * the run directory. Reattaching is only done after the service answered (Redis: AUTH + PING;
 * Kafka: a metadata request); a pid file naming a dead or foreign process is replaced.
 * Everything here blocks and runs once at start-up, before the loop serves requests.
 */
#include "sand/bus.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "bus_internal.h"

#define REDISD_WAIT_MS 5000
#define KAFKAD_WAIT_MS 10000

/* ---- redis-server ------------------------------------------------------------------------- */

static int join_path(char *out, size_t cap, const char *dir, const char *name, sand_err *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
        return sand_err_set(err, SAND_ETOOBIG, "path '%s/%s' is too long", dir, name);
    return 0;
}

/* Connects to the socket, authenticates and reads run_id. Returns 0 or < 0 with err. */
static int redis_probe(const char *sock, const char *pass, char *run_id, size_t run_id_len,
                       sand_err *err)
{
    struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
    redisContext *c = redisConnectUnixWithTimeout(sock, tv);
    redisReply *r = NULL;
    int rc = SAND_EBUS;

    if (!c)
        return sand_err_set(err, SAND_ENOMEM, "redis connect '%s'", sock);
    if (c->err) {
        sand_err_set(err, SAND_EBUS, "redis connect '%s': %s", sock, c->errstr);
        goto error;
    }
    redisSetTimeout(c, tv);
    r = redisCommand(c, "AUTH %s", pass);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        sand_err_set(err, SAND_EBUS, "redis auth on '%s': %s", sock, r ? r->str : c->errstr);
        goto error;
    }
    freeReplyObject(r);
    r = redisCommand(c, "PING");
    if (!r || r->type != REDIS_REPLY_STATUS) {
        sand_err_set(err, SAND_EBUS, "redis ping on '%s': %s", sock,
                     r && r->str ? r->str : c->errstr);
        goto error;
    }
    freeReplyObject(r);
    r = redisCommand(c, "INFO server");
    if (!r || r->type != REDIS_REPLY_STRING) {
        sand_err_set(err, SAND_EBUS, "redis info on '%s': %s", sock,
                     r && r->str ? r->str : c->errstr);
        goto error;
    }
    const char *p = strstr(r->str, "run_id:");
    if (!p) {
        sand_err_set(err, SAND_EBUS, "redis info on '%s' has no run_id", sock);
        goto error;
    }
    p += strlen("run_id:");
    size_t n = strcspn(p, "\r\n");
    if (n >= run_id_len)
        n = run_id_len - 1;
    memcpy(run_id, p, n);
    run_id[n] = '\0';
    rc = 0;
error:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* Reads run_dir/redis.pass or creates it (0600, 32 random bytes as hex). */
static int redis_password(const char *path, char *pass, size_t cap, sand_err *err)
{
    int n = sand__read_small_file(path, pass, cap, err);
    if (n == 64)
        return 0;
    if (n >= 0)
        return sand_err_set(err, SAND_EINVAL, "'%s' does not hold a 64-character password", path);
    if (n != SAND_ENOTFOUND)
        return n;
    sand_err_clear(err);
    if (sand_random_hex(pass, 32) < 0)
        return sand_err_set(err, SAND_EIO, "no random bytes for the redis password");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return sand_err_errno(err, SAND_EIO, "create '%s'", path);
    ssize_t w = write(fd, pass, 64);
    if (close(fd) < 0 || w != 64) {
        unlink(path);
        return sand_err_errno(err, SAND_EIO, "write '%s'", path);
    }
    return 0;
}

static int redis_write_conf(const char *run_dir, const sand_redisd_t *r, sand_err *err)
{
    char path[4096];
    sand_bytes_t conf;
    int rc;

    if ((rc = join_path(path, sizeof(path), run_dir, "redis.conf", err)) < 0)
        return rc;
    sand_bytes_init(&conf, 64 * 1024);
    /* Quoted because run_dir may contain spaces; redis.conf strings take C-like escapes, and a
     * run dir with quotes in its name is refused rather than escaped. */
    if (strpbrk(run_dir, "\"\\\n")) {
        sand_bytes_release(&conf);
        return sand_err_set(err, SAND_EINVAL, "run dir '%s' has a quote or newline", run_dir);
    }
    rc = sand_bytes_appendf(&conf,
                            "# written by sandd on every start; edits are lost\n"
                            "port 0\n"
                            "unixsocket \"%s\"\n"
                            "unixsocketperm 777\n"
                            "save \"\"\n"
                            "appendonly no\n"
                            "daemonize no\n"
                            "requirepass %s\n"
                            "logfile \"%s/redis.log\"\n"
                            "dir \"%s\"\n",
                            r->sock, r->pass, run_dir, run_dir);
    if (rc == 0)
        rc = sand__write_file_atomic(path, conf.data, conf.len, 0600, err);
    else
        sand_err_set(err, rc, "redis.conf for '%s' is too big", run_dir);
    sand_bytes_release(&conf);
    return rc;
}

int sand_redisd_ensure(const char *run_dir, sand_redisd_t *out, sand_err *err)
{
    char pidfile[4096], passfile[4096], conf[4096];
    int rc;

    memset(out, 0, sizeof(*out));
    if ((size_t)snprintf(out->sock, sizeof(out->sock), "%s/redis.sock", run_dir) >=
        sizeof(out->sock))
        return sand_err_set(err, SAND_ETOOBIG, "socket path for run dir '%s' is too long", run_dir);
    snprintf(out->endpoint, sizeof(out->endpoint), "unix:%s", out->sock);
    if ((rc = join_path(pidfile, sizeof(pidfile), run_dir, "redis.pid", err)) < 0 ||
        (rc = join_path(passfile, sizeof(passfile), run_dir, "redis.pass", err)) < 0 ||
        (rc = join_path(conf, sizeof(conf), run_dir, "redis.conf", err)) < 0)
        return rc;
    if ((rc = redis_password(passfile, out->pass, sizeof(out->pass), err)) < 0)
        return sand_err_wrap(err, rc, "redis password");

    pid_t old = sand__read_pidfile(pidfile);
    if (old > 0 && sand__proc_alive(old, "redis-server")) {
        sand_err probe;
        sand_err_clear(&probe);
        if (redis_probe(out->sock, out->pass, out->run_id, sizeof(out->run_id), &probe) == 0) {
            out->pid = old;
            out->started = false;
            return 0;
        }
        /* Ours by the pid file but not answering: replace it rather than run two. */
        SAND_WARN("bus", "redis-server %d does not answer (%s): restarting it", (int)old,
                  probe.msg);
        sand__proc_stop(old, 2000);
    }

    if ((rc = redis_write_conf(run_dir, out, err)) < 0)
        return sand_err_wrap(err, rc, "start redis-server");
    char *argv[] = {"redis-server", conf, NULL};
    pid_t pid;
    rc = sand__spawn_detached(argv, NULL, &pid, err);
    if (rc < 0 && access("/usr/bin/redis-server", X_OK) == 0) {
        sand_err_clear(err);
        argv[0] = "/usr/bin/redis-server";
        rc = sand__spawn_detached(argv, NULL, &pid, err);
    }
    if (rc < 0)
        return sand_err_wrap(err, rc, "start redis-server");

    sand_err probe;
    sand_err_clear(&probe);
    for (int waited = 0;; waited += 20) {
        if (redis_probe(out->sock, out->pass, out->run_id, sizeof(out->run_id), &probe) == 0)
            break;
        if (!sand__proc_alive(pid, "redis-server"))
            return sand_err_set(err, SAND_EBUS, "redis-server exited at start (see '%s/redis.log')",
                                run_dir);
        if (waited >= REDISD_WAIT_MS) {
            sand__proc_stop(pid, 1000);
            return sand_err_set(err, SAND_ETIMEDOUT, "redis-server did not answer within %d ms: %s",
                                REDISD_WAIT_MS, probe.msg);
        }
        sand__sleep_ms(20);
    }
    char pidtext[32];
    int n = snprintf(pidtext, sizeof(pidtext), "%d\n", (int)pid);
    if ((rc = sand__write_file_atomic(pidfile, pidtext, (size_t)n, 0644, err)) < 0) {
        sand__proc_stop(pid, 1000);
        return sand_err_wrap(err, rc, "start redis-server");
    }
    out->pid = pid;
    out->started = true;
    SAND_INFO("bus", "started redis-server %d on '%s'", (int)pid, out->sock);
    return 0;
}

static int stop_service(const char *run_dir, const char *pidname, const char *comm, sand_err *err)
{
    char pidfile[4096];
    int rc;
    if ((rc = join_path(pidfile, sizeof(pidfile), run_dir, pidname, err)) < 0)
        return rc;
    pid_t pid = sand__read_pidfile(pidfile);
    if (pid > 0 && sand__proc_alive(pid, comm) && sand__proc_stop(pid, 5000) < 0)
        return sand_err_set(err, SAND_ETIMEDOUT, "%s %d does not stop", comm, (int)pid);
    unlink(pidfile);
    return 0;
}

int sand_redisd_stop(const char *run_dir, sand_err *err)
{
    return stop_service(run_dir, "redis.pid", "redis-server", err);
}

/* ---- sand-kafka --------------------------------------------------------------------------- */

/* Asks the brokers for cluster metadata with a short-lived producer. Returns 0 or < 0. */
static int kafka_probe(const char *bootstrap, int timeout_ms, sand_err *err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return sand_err_set(err, SAND_EINVAL, "kafka probe of '%s': %s", bootstrap, errstr);
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return sand_err_set(err, SAND_EBUS, "kafka probe of '%s': %s", bootstrap, errstr);
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    int rc = 0;
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = sand_err_set(err, SAND_EBUS, "kafka metadata from '%s': %s", bootstrap,
                          rd_kafka_err2str(kerr));
    else if (md->broker_cnt < 1)
        rc = sand_err_set(err, SAND_EBUS, "kafka metadata from '%s' lists no broker", bootstrap);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}

int sand_kafkad_ensure(const char *run_dir, const char *bin_dir, char *bootstrap, size_t len,
                       sand_err *err)
{
    char pidfile[4096], bsfile[4096], prog[4096], logfile[4096], bs[1024];
    int rc;

    if ((rc = join_path(pidfile, sizeof(pidfile), run_dir, "kafka.pid", err)) < 0 ||
        (rc = join_path(bsfile, sizeof(bsfile), run_dir, "kafka.bootstrap", err)) < 0 ||
        (rc = join_path(logfile, sizeof(logfile), run_dir, "kafka.log", err)) < 0 ||
        (rc = join_path(prog, sizeof(prog), bin_dir, "sand-kafka", err)) < 0)
        return rc;

    pid_t old = sand__read_pidfile(pidfile);
    if (old > 0 && sand__proc_alive(old, "sand-kafka")) {
        sand_err probe;
        sand_err_clear(&probe);
        if (sand__read_small_file(bsfile, bs, sizeof(bs), &probe) > 0 &&
            kafka_probe(bs, 2000, &probe) == 0) {
            if (sand_strlcpy(bootstrap, bs, len) >= len)
                return sand_err_set(err, SAND_ETOOBIG, "bootstrap list '%s' is too long", bs);
            return 0;
        }
        SAND_WARN("bus", "sand-kafka %d does not answer (%s): restarting it", (int)old, probe.msg);
        sand__proc_stop(old, 2000);
    }

    /* A stale bootstrap file would name the ports of a dead cluster. */
    unlink(bsfile);
    char *argv[] = {prog, "--run-dir", (char *)run_dir, NULL};
    pid_t pid;
    if ((rc = sand__spawn_detached(argv, logfile, &pid, err)) < 0)
        return sand_err_wrap(err, rc, "start sand-kafka");

    sand_err probe;
    sand_err_clear(&probe);
    sand_err_set(&probe, SAND_ENOTFOUND, "no '%s' yet", bsfile);
    int64_t deadline = sand_mono_us() + (int64_t)KAFKAD_WAIT_MS * 1000;
    for (;;) {
        if (sand__read_small_file(bsfile, bs, sizeof(bs), &probe) > 0 &&
            kafka_probe(bs, 1000, &probe) == 0)
            break;
        if (!sand__proc_alive(pid, "sand-kafka"))
            return sand_err_set(err, SAND_EBUS, "sand-kafka exited at start (see '%s')", logfile);
        if (sand_mono_us() > deadline) {
            sand__proc_stop(pid, 1000);
            return sand_err_set(err, SAND_ETIMEDOUT, "sand-kafka did not answer within %d ms: %s",
                                KAFKAD_WAIT_MS, probe.msg);
        }
        sand__sleep_ms(20);
    }
    if (sand_strlcpy(bootstrap, bs, len) >= len) {
        sand__proc_stop(pid, 1000);
        return sand_err_set(err, SAND_ETOOBIG, "bootstrap list '%s' is too long", bs);
    }
    SAND_INFO("bus", "started sand-kafka %d at '%s'", (int)pid, bs);
    return 0;
}

int sand_kafkad_stop(const char *run_dir, sand_err *err)
{
    return stop_service(run_dir, "kafka.pid", "sand-kafka", err);
}
