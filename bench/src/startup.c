/*
 * Handler start-up timer for bench/startup. Two modes, each printing one sample per line in
 * microseconds (wall clock from the start request until the handler process has exited and
 * been reaped):
 *   sand-bench-startup fork N          fork() a child that runs a tiny JSON handler and exits
 *   sand-bench-startup exec N CMD...   posix_spawn CMD (stdout to /dev/null) and wait for it
 * The exec mode is also how docker run / docker exec are timed (CMD is the docker CLI).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* What a forked C instance does: format a small JSON reply, as a grain would. */
static void tiny_handler(int fd)
{
    char out[64];
    int len = snprintf(out, sizeof(out), "{\"pid\":%d,\"ok\":true}\n", (int)getpid());
    if (len > 0 && write(fd, out, (size_t)len) < 0)
        _exit(1);
}

static int run_fork(long n, int devnull)
{
    for (long i = 0; i < n; i++) {
        int64_t t0 = now_us();
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            tiny_handler(devnull);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "sand-bench-startup: child failed\n");
            return 1;
        }
        printf("%lld\n", (long long)(now_us() - t0));
    }
    return 0;
}

static int run_exec(long n, char **argv)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    for (long i = 0; i < n; i++) {
        int64_t t0 = now_us();
        pid_t pid;
        int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        if (rc != 0) {
            fprintf(stderr, "sand-bench-startup: spawn %s: %s\n", argv[0], strerror(rc));
            return 1;
        }
        int st;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "sand-bench-startup: %s failed (status %d)\n", argv[0], st);
            return 1;
        }
        printf("%lld\n", (long long)(now_us() - t0));
        fflush(stdout);
    }
    posix_spawn_file_actions_destroy(&fa);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "fork") && strcmp(argv[1], "exec")) ||
        (!strcmp(argv[1], "exec") && argc < 4)) {
        fprintf(stderr, "usage: sand-bench-startup fork N | exec N CMD [ARG...]\n");
        return 2;
    }
    long n = strtol(argv[2], NULL, 10);
    if (n <= 0)
        n = 1;
    if (!strcmp(argv[1], "fork")) {
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        return run_fork(n, devnull);
    }
    return run_exec(n, argv + 3);
}
