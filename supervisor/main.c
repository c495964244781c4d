/*
 * sand-supervisor: the first process of every sandbox. Its configuration comes from the
 * environment (see supervisor.h); the command line only carries --app and --grains so that the
 * host can recognise a sandbox's supervisor in /proc when it re-adopts it after a restart, and
 * --grace-ms for the shutdown grace period.
 */
#include "supervisor.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: sand-supervisor [--app APP] [--grains G1,G2] [--grace-ms MS]\n"
                 "configuration comes from SAND_APP, SAND_BUNDLE, SAND_GRAINS, SAND_BIN_DIR,\n"
                 "SAND_REDIS, SAND_REDIS_USER, SAND_REDIS_PASS and SAND_LOG_MAX\n");
}

int main(int argc, char **argv)
{
    sand_sup_opts_t opts = {0};

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if ((!strcmp(argv[i], "--app") || !strcmp(argv[i], "--grains")) && i + 1 < argc) {
            i++; /* markers for /proc; the environment is authoritative */
            continue;
        }
        if (!strcmp(argv[i], "--grace-ms") && i + 1 < argc) {
            sand_err err;
            if (sand_parse_int(argv[++i], 1, 3600 * 1000, &opts.grace_ms, &err) < 0) {
                fprintf(stderr, "sand-supervisor: --grace-ms: %s\n", err.msg);
                return 2;
            }
            continue;
        }
        fprintf(stderr, "sand-supervisor: unknown argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    return sand_sup_run(&opts);
}
