/*
 * The command table and option plumbing shared by sandctl's command files. Each command is a
 * function over its own argv (argv[0] is the command name) that returns the exit code; the
 * options --json, --server, --key and --help are accepted by every command through
 * SAND_CLI_COMMON_OPTS and sand__cli_common_opt().
 */
#ifndef SAND_CLI_INTERNAL_H
#define SAND_CLI_INTERNAL_H

#include "cli.h"

#include <getopt.h>

typedef struct sand_cli_cmd sand_cli_cmd_t;

/* Runs a command. Returns the exit code. */
typedef int (*sand_cli_cmd_fn)(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);

struct sand_cli_cmd {
    const char *name;
    sand_cli_cmd_fn fn; /* NULL for "help", handled by the dispatcher */
    const char *usage;
    const char *help;
};

/* getopt_long ids of the long-only options (above every short option character). */
enum {
    OPT_JSON = 256,
    OPT_SERVER,
    OPT_KEY,
    OPT_VERSION,
    OPT_ASYNC,
    OPT_GRAIN,
    OPT_SINCE,
    OPT_TRACE,
};

#define SAND_CLI_COMMON_OPTS                                                                       \
    {"json", no_argument, NULL, OPT_JSON}, {"server", required_argument, NULL, OPT_SERVER},        \
        {"key", required_argument, NULL, OPT_KEY},                                                 \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

/* Handles a common option or a getopt error for cmd. Returns -1 when parsing should go on, else
 * the exit code to return (0 after --help). */
int sand__cli_common_opt(sand_cli_t *c, const sand_cli_cmd_t *cmd, int opt, char **argv);

/* Prints "sandctl: CMD: MESSAGE (see 'sandctl CMD --help')" and returns SAND_CLI_USAGE. */
int sand__cli_usage(sand_cli_t *c, const char *cmd, const char *fmt, ...) SAND_PRINTF(3, 4);

int sand__cli_set_server(sand_cli_t *c, const char *url);
/* Resolves the API key once: --key, SAND_API_KEY, SAND_DATA_DIR/api.key, /var/lib/sand/api.key. */
void sand__cli_load_key(sand_cli_t *c);
const sand_cli_cmd_t *sand__cli_find_cmd(const char *name);
void sand__cli_print_cmd_help(FILE *f, const sand_cli_cmd_t *cmd);

int sand__cli_cmd_validate(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);
int sand__cli_cmd_deploy(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);
int sand__cli_cmd_invoke(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);
int sand__cli_cmd_get(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);
int sand__cli_cmd_ls(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);
int sand__cli_cmd_status(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);
int sand__cli_cmd_logs(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);
int sand__cli_cmd_rm(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv);

#endif
