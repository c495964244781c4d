/*
 * sandd: the host agent daemon. Parses the command line and the config file, then hands over to
 * daemon.c; everything else lives in the libraries. Exit codes: 0 clean stop, 1 runtime failure,
 * 2 bad command line or configuration (nothing started).
 */
#include "sandd_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sandd [-c FILE] [--data-dir DIR] [--listen ADDR:PORT] [--foreground]\n"
            "             [--log-level debug|info|warn|error]\n"
            "       sandd --print-config [-c FILE]   print the effective configuration\n"
            "       sandd --shutdown-all --data-dir DIR\n"
            "                                         stop the sandboxes, redis-server and Kafka\n"
            "                                         that sandd left running for DIR\n");
}

static FILE *g_logfile;

static void file_sink(sand_log_level level, const char *line, void *ud)
{
    fprintf(g_logfile, "%s\n", line);
    fflush(g_logfile);
}

/* Detaches from the terminal. Runs before any thread exists, so fork() without exec is safe. */
static int daemonize(const char *data_dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/sandd.log", data_dir);
    g_logfile = fopen(path, "a");
    if (!g_logfile) {
        fprintf(stderr, "sandd: cannot open log file '%s': %s\n", path, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    sand_log_set_sink(file_sink, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},    {"data-dir", required_argument, 0, 'd'},
        {"listen", required_argument, 0, 'l'},    {"foreground", no_argument, 0, 'f'},
        {"log-level", required_argument, 0, 'L'}, {"print-config", no_argument, 0, 'p'},
        {"shutdown-all", no_argument, 0, 's'},    {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},         {0, 0, 0, 0},
    };
    const char *config = NULL, *data_dir = NULL, *listen = NULL, *level = NULL;
    bool foreground = false, print = false, shutdown_all = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            data_dir = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'f':
            foreground = true;
            break;
        case 'L':
            level = optarg;
            break;
        case 'p':
            print = true;
            break;
        case 's':
            shutdown_all = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("sandd %s\n", SAND_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sandd: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    static sand_daemon d;
    sand_err err;
    sand_cfg_defaults(&d.cfg);
    if (config && sand_cfg_load(&d.cfg, config, &err) < 0) {
        fprintf(stderr, "sandd: %s\n", err.msg);
        return 2;
    }
    if ((data_dir && sand_cfg_set(&d.cfg, "data_dir", data_dir, &err) < 0) ||
        (listen && sand_cfg_set(&d.cfg, "listen", listen, &err) < 0) ||
        (level && sand_cfg_set(&d.cfg, "log_level", level, &err) < 0)) {
        fprintf(stderr, "sandd: %s\n", err.msg);
        return 2;
    }
    if (print) {
        sand_cfg_dump(&d.cfg, stdout);
        return 0;
    }
    if (shutdown_all)
        return sandd_shutdown_all(d.cfg.data_dir, &err) < 0 ? 1 : 0;
    sand_log_level lvl;
    if (sand_log_parse_level(d.cfg.log_level, &lvl) == 0)
        sand_log_set_level(lvl);
    if (!foreground) {
        mkdir(d.cfg.data_dir, 0700);
        if (daemonize(d.cfg.data_dir) < 0)
            return 1;
    }
    /* a client that goes away mid-write must not kill the daemon */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    d.loop = &loop;
    if (sandd_start(&d, &err) < 0) {
        sand_log(SAND_LOG_ERROR, "sandd", "cannot start: %s", err.msg);
        if (foreground)
            fprintf(stderr, "sandd: %s\n", err.msg);
        sandd_stop(&d);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    metrics_release(&d);
    sand_map_release(&d.offsets, free);
    sand_map_release(&d.assigned, NULL);
    int rc = uv_loop_close(&loop);
    if (rc != 0)
        sand_log(SAND_LOG_WARN, "sandd", "loop closed with handles left: %s", uv_strerror(rc));
    sand_log(SAND_LOG_INFO, "sandd", "stopped");
    return d.exit_code;
}
