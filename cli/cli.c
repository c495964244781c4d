/*
 * sandctl's entry: global options (--server, --key, --json, --help, also accepted after the
 * command), the server URL and API key defaults (SAND_SERVER, SAND_API_KEY, the key file of a
 * local sandd), and dispatch through one table of {name, fn, usage, help}, which also produces
 * `sandctl --help` and `sandctl COMMAND --help`.
 */
#include "cli.h"

#include "cli_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const sand_cli_cmd_t COMMANDS[] = {
    {"validate", sand__cli_cmd_validate, "validate DIR",
     "Checks DIR/app.yaml and the files it names without contacting a server. Prints a one-line\n"
     "summary; on errors prints every problem as DIR/app.yaml:LINE:COL: message and exits 2.\n"
     "With --json prints the compiled app description."},
    {"deploy", sand__cli_cmd_deploy, "deploy DIR",
     "Validates DIR, packs it as a tar.gz and uploads it (POST /v1/apps). Waits up to 120 s for\n"
     "the app's sandbox to be ready, showing progress on stderr, then prints the app and the URL\n"
     "of each workflow. With --json prints the app description."},
    {"invoke", sand__cli_cmd_invoke,
     "invoke APP [WORKFLOW] [-d JSON | -f FILE | -] [--async] [--grain G]",
     "Runs a workflow (or one grain with --grain) with a JSON event (default {}; '-' reads stdin)\n"
     "and prints the result JSON. WORKFLOW may be left out when the app has exactly one.\n"
     "--async prints the execution id at once. A failed execution prints\n"
     "\"step 'x' failed: Type: message\" (the error JSON with --json) on stderr and exits 1.\n"
     "  -d, --data JSON   the event\n"
     "  -f, --file FILE   read the event from FILE ('-' for stdin)\n"
     "      --async       do not wait for the result\n"
     "      --grain G     invoke grain G alone"},
    {"get", sand__cli_cmd_get, "get EXECUTION_ID [--trace]",
     "Prints an execution record: a summary, or the record with --json. --trace adds the\n"
     "per-step timeline: wait (queued->started), run (started->finished), offset from the\n"
     "execution start, worker pid and a bar.\n"
     "      --trace       show the per-step timeline"},
    {"ls", sand__cli_cmd_ls, "ls", "Lists the deployed apps: name, grains, workflows, state."},
    {"status", sand__cli_cmd_status, "status [APP]",
     "With APP: the sandbox (driver, id, state, memory) and, per grain, runtime, worker pids,\n"
     "state, restarts, queue depth and memory. Without: the daemon's health and the app list."},
    {"logs", sand__cli_cmd_logs, "logs APP [-f] [--grain G] [--since US]",
     "Prints the app's log lines as \"TIME grain [execution] message\" (JSON lines with --json).\n"
     "  -f, --follow      keep printing new lines until interrupted\n"
     "      --grain G     only grain G\n"
     "      --since US    only lines after US (microseconds since the epoch)"},
    {"rm", sand__cli_cmd_rm, "rm APP",
     "Deletes the app: stops its sandbox, drops its queues and data."},
    {"help", NULL, "help [COMMAND]", "Shows the help of sandctl or of one command."},
};

static const char GLOBAL_HELP[] =
    "Global options (before or after the command):\n"
    "  --server URL   sandd's address (default $SAND_SERVER or " SAND_CLI_DEFAULT_SERVER ")\n"
    "  --key KEY      API key (default $SAND_API_KEY, else $SAND_DATA_DIR/api.key or\n"
    "                 /var/lib/sand/api.key)\n"
    "  --json         machine-readable output\n"
    "  -h, --help     this help\n"
    "Exit codes: 0 ok, 1 the workflow failed or the server answered no, 2 usage or validation\n"
    "error, 3 server unreachable or API key refused.\n";

const sand_cli_cmd_t *sand__cli_find_cmd(const char *name)
{
    for (size_t i = 0; i < SAND_ARRAY_LEN(COMMANDS); i++)
        if (!strcmp(COMMANDS[i].name, name))
            return &COMMANDS[i];
    return NULL;
}

static void print_main_help(FILE *f)
{
    fprintf(f, "usage: sandctl [--server URL] [--key KEY] [--json] COMMAND ...\n\nCommands:\n");
    for (size_t i = 0; i < SAND_ARRAY_LEN(COMMANDS); i++)
        fprintf(f, "  %s\n", COMMANDS[i].usage);
    fprintf(f, "\n%s\nRun 'sandctl COMMAND --help' for a command's options.\n", GLOBAL_HELP);
}

void sand__cli_print_cmd_help(FILE *f, const sand_cli_cmd_t *cmd)
{
    fprintf(f, "usage: sandctl [global options] %s\n\n%s\n\n%s", cmd->usage, cmd->help,
            GLOBAL_HELP);
}

int sand__cli_usage(sand_cli_t *c, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sandctl: ", c->err);
    if (cmd)
        fprintf(c->err, "%s: ", cmd);
    vfprintf(c->err, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(c->err, " (see 'sandctl %s --help')\n", cmd);
    else
        fputs(" (see 'sandctl --help')\n", c->err);
    return SAND_CLI_USAGE;
}

int sand__cli_set_server(sand_cli_t *c, const char *url)
{
    const char *scheme = strstr(url, "://") ? "" : "http://";
    if (!*url ||
        (size_t)snprintf(c->server, sizeof(c->server), "%s%s", scheme, url) >= sizeof(c->server))
        return sand__cli_usage(c, NULL, "bad --server '%s'", url);
    if (strncmp(c->server, "http://", 7) && strncmp(c->server, "https://", 8))
        return sand__cli_usage(c, NULL, "--server '%s' must be an http:// or https:// URL", url);
    size_t n = strlen(c->server);
    while (n > 0 && c->server[n - 1] == '/')
        c->server[--n] = '\0';
    return 0;
}

int sand__cli_common_opt(sand_cli_t *c, const sand_cli_cmd_t *cmd, int opt, char **argv)
{
    switch (opt) {
    case OPT_JSON:
        c->json = true;
        return -1;
    case OPT_SERVER: {
        int rc = sand__cli_set_server(c, optarg);
        return rc ? rc : -1;
    }
    case OPT_KEY:
        c->key_opt = optarg;
        return -1;
    case 'h':
        sand__cli_print_cmd_help(c->out, cmd);
        return SAND_CLI_OK;
    case ':':
        return sand__cli_usage(c, cmd->name, "option '%s' needs a value", argv[optind - 1]);
    default:
        if (optopt)
            return sand__cli_usage(c, cmd->name, "unknown option '-%c'", optopt);
        return sand__cli_usage(c, cmd->name, "unknown option '%s'", argv[optind - 1]);
    }
}

/* Reads the first line of a key file into c->key. Returns true when a key was read. */
static bool read_key_file(sand_cli_t *c, const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char buf[sizeof(c->key)];
    bool ok = fgets(buf, sizeof(buf), f) != NULL;
    fclose(f);
    if (!ok)
        return false;
    size_t n = strcspn(buf, "\r\n \t");
    buf[n] = '\0';
    if (!n)
        return false;
    sand_strlcpy(c->key, buf, sizeof(c->key));
    return true;
}

void sand__cli_load_key(sand_cli_t *c)
{
    if (c->key_loaded)
        return;
    c->key_loaded = true;
    const char *env = getenv("SAND_API_KEY");
    if (c->key_opt) {
        sand_strlcpy(c->key, c->key_opt, sizeof(c->key));
    } else if (env && *env) {
        sand_strlcpy(c->key, env, sizeof(c->key));
    } else {
        const char *dir = getenv("SAND_DATA_DIR");
        char path[4096];
        if (dir && *dir) {
            snprintf(path, sizeof(path), "%s/api.key", dir);
            if (read_key_file(c, path))
                return;
        }
        read_key_file(c, "/var/lib/sand/api.key");
    }
}

static int run(sand_cli_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"server", required_argument, NULL, OPT_SERVER},
        {"key", required_argument, NULL, OPT_KEY},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    const char *env = getenv("SAND_SERVER");
    int rc = sand__cli_set_server(c, env && *env ? env : SAND_CLI_DEFAULT_SERVER);
    if (rc)
        return rc;

    optind = 0;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (o) {
        case OPT_JSON:
            c->json = true;
            break;
        case OPT_SERVER:
            if ((rc = sand__cli_set_server(c, optarg)))
                return rc;
            break;
        case OPT_KEY:
            c->key_opt = optarg;
            break;
        case 'h':
            print_main_help(c->out);
            return SAND_CLI_OK;
        case OPT_VERSION:
            fprintf(c->out, "sandctl 0.1.0\n");
            return SAND_CLI_OK;
        case ':':
            return sand__cli_usage(c, NULL, "option '%s' needs a value", argv[optind - 1]);
        default:
            return sand__cli_usage(c, NULL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        fprintf(c->err, "usage: sandctl [--server URL] [--key KEY] [--json] COMMAND ...\n");
        return sand__cli_usage(c, NULL, "missing COMMAND");
    }
    const char *name = argv[optind];
    const sand_cli_cmd_t *cmd = sand__cli_find_cmd(name);
    if (!cmd)
        return sand__cli_usage(c, NULL, "unknown command '%s'", name);
    if (!cmd->fn) { /* help [COMMAND] */
        if (optind + 1 >= argc) {
            print_main_help(c->out);
            return SAND_CLI_OK;
        }
        const sand_cli_cmd_t *about = sand__cli_find_cmd(argv[optind + 1]);
        if (!about)
            return sand__cli_usage(c, NULL, "unknown command '%s'", argv[optind + 1]);
        sand__cli_print_cmd_help(c->out, about);
        return SAND_CLI_OK;
    }
    return cmd->fn(c, cmd, argc - optind, argv + optind);
}

int sand_cli_main(int argc, char **argv)
{
    sand_cli_t c;
    memset(&c, 0, sizeof(c));
    c.out = stdout;
    c.err = stderr;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sandctl: cannot initialise libcurl\n");
        return SAND_CLI_FAILED;
    }
    int rc = run(&c, argc, argv);
    fflush(c.out);
    if (ferror(c.out) && rc == SAND_CLI_OK) {
        fprintf(stderr, "sandctl: write to stdout: %s\n", strerror(errno));
        rc = SAND_CLI_FAILED;
    }
    curl_global_cleanup();
    return rc;
}
