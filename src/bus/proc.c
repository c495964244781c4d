/*
 * Process and file helpers for the embedded services: pid files, a liveness test that reaps our
 * own dead children (a SIGKILLed redis-server we spawned stays a zombie, and kill(pid, 0) would
 * call it alive), detached spawning with posix_spawn (sandd runs threads, so no bare fork), and
 * atomic small-file writes. Blocking, start-up paths only.
 */
#define _GNU_SOURCE 1 /* POSIX_SPAWN_SETSID */
#include "bus_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

void sand__sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int sand__read_small_file(const char *path, char *buf, size_t cap, sand_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return sand_err_set(err, SAND_ENOTFOUND, "'%s' does not exist", path);
        return sand_err_errno(err, SAND_EIO, "open '%s'", path);
    }
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            return sand_err_errno(err, SAND_EIO, "read '%s'", path);
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    return (int)len;
}

pid_t sand__read_pidfile(const char *path)
{
    char buf[32];
    int64_t v;
    if (sand__read_small_file(path, buf, sizeof(buf), NULL) <= 0)
        return 0;
    if (sand_parse_int(buf, 1, INT32_MAX, &v, NULL) < 0)
        return 0;
    return (pid_t)v;
}

bool sand__proc_alive(pid_t pid, const char *comm)
{
    char path[64], buf[256];
    if (pid <= 0)
        return false;
    /* A dead child of ours is a zombie until reaped: reap it so it reads as gone. */
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (sand__read_small_file(path, buf, sizeof(buf), NULL) <= 0)
        return false;
    /* "pid (comm) S ...": comm may contain spaces or parentheses, so find the last ')'. */
    char *open_paren = strchr(buf, '(');
    char *close_paren = strrchr(buf, ')');
    if (!open_paren || !close_paren || close_paren < open_paren || close_paren[1] != ' ')
        return false;
    char state = close_paren[2];
    if (state == 'Z' || state == 'X' || state == 'x')
        return false;
    size_t clen = strlen(comm);
    /* The kernel truncates comm to 15 bytes. */
    if (clen > 15)
        clen = 15;
    return (size_t)(close_paren - open_paren - 1) >= clen &&
           memcmp(open_paren + 1, comm, clen) == 0;
}

int sand__spawn_detached(char *const argv[], const char *out_path, pid_t *pid, sand_err *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc;

    if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
        errno = rc;
        return sand_err_errno(err, SAND_ENOMEM, "spawn '%s'", argv[0]);
    }
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        errno = rc;
        return sand_err_errno(err, SAND_ENOMEM, "spawn '%s'", argv[0]);
    }
    const char *out = out_path ? out_path : "/dev/null";
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);

    /* A new session so that a signal to sandd's process group (Ctrl-C, a supervisor killing
     * the group) does not take the service down with it; default signal mask and dispositions
     * because sandd blocks or handles some signals itself. */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    if (strchr(argv[0], '/'))
        rc = posix_spawn(pid, argv[0], &fa, &attr, argv, environ);
    else
        rc = posix_spawnp(pid, argv[0], &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        errno = rc;
        return sand_err_errno(err, SAND_EIO, "spawn '%s'", argv[0]);
    }
    return 0;
}

int sand__proc_stop(pid_t pid, int wait_ms)
{
    if (pid <= 0 || kill(pid, SIGTERM) < 0)
        return 0;
    for (int waited = 0; waited < wait_ms; waited += 10) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && kill(pid, 0) < 0)
            return 0;
        sand__sleep_ms(10);
    }
    kill(pid, SIGKILL);
    for (int waited = 0; waited < 1000; waited += 10) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && kill(pid, 0) < 0))
            return 0;
        sand__sleep_ms(10);
    }
    return SAND_ETIMEDOUT;
}

int sand__write_file_atomic(const char *path, const char *data, size_t len, int mode, sand_err *err)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= sizeof(tmp))
        return sand_err_set(err, SAND_ETOOBIG, "path '%s' is too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return sand_err_errno(err, SAND_EIO, "create '%s'", tmp);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            sand_err_errno(err, SAND_EIO, "write '%s'", tmp);
            close(fd);
            unlink(tmp);
            return SAND_EIO;
        }
        off += (size_t)n;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        sand_err_errno(err, SAND_EIO, "write '%s'", path);
        unlink(tmp);
        return SAND_EIO;
    }
    return 0;
}
