/*
 * sandctl, the command-line client of sandd (SPEC section 6). The program is a thin main() over
 * the library sand_cli: global options, a command table {name, fn, usage, help}, an HTTP layer
 * over libcurl that maps transport failures and HTTP statuses to the documented exit codes, and
 * the text formatting of apps, executions, traces and log lines. Everything runs on the main
 * thread of a short-lived process; nothing here is thread-safe.
 */
#ifndef SAND_CLI_H
#define SAND_CLI_H

#include "sand/common.h"

#include <jansson.h>
#include <stdio.h>

/* Exit codes (SPEC section 6). */
enum {
    SAND_CLI_OK = 0,
    SAND_CLI_FAILED = 1,      /* the workflow ran and failed, or the server answered no */
    SAND_CLI_USAGE = 2,       /* usage or validation error, or a 400 from the server */
    SAND_CLI_UNREACHABLE = 3, /* server unreachable or API key refused */
};

#define SAND_CLI_DEFAULT_SERVER "http://127.0.0.1:8080"
#define SAND_CLI_MAX_RESPONSE   (64 << 20) /* largest response body kept in memory */
#define SAND_CLI_MAX_EVENT      (64 << 20) /* largest event read from -f or stdin */
#define SAND_CLI_DEPLOY_WAIT_MS 120000     /* how long deploy waits for the sandbox */

/* Per-invocation state, filled from the global options and the environment. */
typedef struct sand_cli {
    char server[512]; /* base URL without trailing slash */
    char key[512];    /* API key; "" when none was found */
    bool key_loaded;  /* key resolution has run */
    const char *key_opt;
    bool json;
    FILE *out; /* stdout */
    FILE *err; /* stderr */
} sand_cli_t;

/* Runs sandctl with argv (argv[0] is the program name) and returns the exit code. */
int sand_cli_main(int argc, char **argv);

/* ---- internal, shared by the command files ------------------------------------------------ */

/* Prints "sandctl: MESSAGE" on c->err and returns code. */
int sand__cli_fail(sand_cli_t *c, int code, const char *fmt, ...) SAND_PRINTF(3, 4);

/* An HTTP response: status and body (bounded by SAND_CLI_MAX_RESPONSE). */
typedef struct sand_cli_resp {
    long status;
    sand_bytes_t body;
    char execution_id[128]; /* X-Sand-Execution-Id, "" when absent */
} sand_cli_resp_t;

void sand__cli_resp_init(sand_cli_resp_t *r);
void sand__cli_resp_release(sand_cli_resp_t *r);

/* Called with each complete line of a streamed response (without the newline). */
typedef void (*sand_cli_line_cb)(sand_cli_t *c, const char *line, size_t len, void *ud);

/* Sends METHOD server+path with an optional body (ctype may be NULL) and the API key. When
 * line_cb is set the body is streamed to it line by line instead of being kept in resp->body.
 * timeout_ms 0 = no overall limit. Returns SAND_CLI_OK when any HTTP response arrived (the caller
 * judges resp->status), else prints the transport failure and returns SAND_CLI_UNREACHABLE (or
 * SAND_CLI_FAILED when the response was too large). */
int sand__cli_request(sand_cli_t *c, const char *method, const char *path, const char *ctype,
                      const void *body, size_t len, long timeout_ms, sand_cli_line_cb line_cb,
                      void *ud, sand_cli_resp_t *resp);

/* For a non-2xx response: prints "sandctl: WHAT: server message (HTTP N)" and returns the exit
 * code for the status (401 -> 3; 400, 405, 413, 414, 415, 422 -> 2; others -> 1). */
int sand__cli_http_error(sand_cli_t *c, const sand_cli_resp_t *resp, const char *what);

/* Appends "/" + the URL-escaped segment to out. Returns 0 or < 0. */
int sand__cli_path_segment(sand_bytes_t *out, const char *segment);

/* Parses a JSON response body; prints an error and returns NULL when it is not JSON. */
json_t *sand__cli_parse_body(sand_cli_t *c, const sand_cli_resp_t *resp, const char *what);

/* Prints v as indented JSON followed by a newline. */
void sand__cli_print_json(FILE *f, const json_t *v);

/* ---- formatting (format.c); pure functions over parsed JSON ------------------------------- */

/* Tolerant getters: missing or mistyped fields give the fallback. */
const char *sand__cli_jstr(const json_t *obj, const char *key, const char *fallback);
int64_t sand__cli_jint(const json_t *obj, const char *key, int64_t fallback);

/* "2026-11-27 18:08:53.123" in local time, from microseconds since the epoch. */
void sand__cli_format_time(int64_t us, char *buf, size_t n);
/* "512 B", "1.5 KiB", "45.2 MiB". */
void sand__cli_format_bytes(int64_t bytes, char *buf, size_t n);

/* A text table: cells are copied; columns are padded to their widest cell. */
typedef struct sand_cli_table {
    size_t ncols;
    sand_vec_t cells; /* row-major char* */
} sand_cli_table_t;

void sand__cli_table_init(sand_cli_table_t *t, size_t ncols);
/* Adds one row of ncols strings (NULL prints as "-"). Returns 0 or SAND_ENOMEM. */
int sand__cli_table_add(sand_cli_table_t *t, ...);
void sand__cli_table_print(const sand_cli_table_t *t, FILE *f);
void sand__cli_table_release(sand_cli_table_t *t);

/* Appends the per-step timeline of an execution record (GET /v1/executions/ID) to out: one row
 * per step with step, grain, attempt, status, wait (queued->started), run (started->finished),
 * offset of the start from the execution start (ms), pid and a bar of width bar_width where '.'
 * is waiting and '#' running. Returns 0 or < 0 (out over its limit). */
int sand_cli_format_trace(const json_t *record, int bar_width, sand_bytes_t *out);

/* Appends the readable summary of an execution record to out. */
int sand_cli_format_execution(const json_t *record, sand_bytes_t *out);

/* Formats one log line object as "TIME grain [exec] message" into out (no newline). */
int sand_cli_format_log_line(const json_t *line, sand_bytes_t *out);

/* "step 'x' failed: Type: message" for an error object. */
int sand_cli_format_error(const json_t *error, sand_bytes_t *out);

#endif
