/*
 * The application model: app.yaml loaded with libyaml (line and column kept for every node),
 * validated against every rule of SPEC section 3, and compiled into the graph that sandd and the
 * grain workers execute. The model is immutable after sand_app_load(); it is shared read-only by
 * the host agent (routing at the entry, execution records) and by every grain worker (routing
 * after an instance: next, fan-out, join, retry, catch).
 */
#ifndef SAND_WORKFLOW_H
#define SAND_WORKFLOW_H

#include "sand/common.h"

#define SAND_NAME_MAX 64 /* names are at most 63 characters (SPEC section 3) */

typedef enum sand_runtime {
    SAND_RT_PYTHON = 0,
    SAND_RT_JAVA = 1,
    SAND_RT_C = 2,
} sand_runtime;

typedef struct sand_grain {
    char name[SAND_NAME_MAX];
    sand_runtime runtime;
    char *code;          /* path relative to the bundle root, normalised, never escapes it */
    char *handler;       /* python: function (default "handle"); java: class; c: symbol */
    int64_t timeout_ms;  /* default 60000 */
    int64_t memory;      /* bytes per instance; 0 = no limit */
    int64_t concurrency; /* default 100 */
    char *jvm_options;   /* java only: extra JVM options, space separated (may be NULL) */
    int line;            /* where it is defined in app.yaml */
} sand_grain_t;

typedef struct sand_step sand_step_t;

struct sand_step {
    char name[SAND_NAME_MAX];
    sand_grain_t *grain; /* borrowed from the app */
    sand_step_t **next;  /* static successors (fan-out when > 1); NULL when n_next == 0 */
    size_t n_next;
    sand_step_t **preds; /* static predecessors through next edges; a join when n_preds > 1 */
    size_t n_preds;
    sand_step_t *catch_step; /* NULL when no catch */
    int retry_max;           /* extra runs after the first (0 = none) */
    int64_t retry_backoff_ms;
    bool terminal; /* no next */
    int index;     /* position in the workflow's steps array */
    int line;
};

typedef struct sand_workflow {
    char name[SAND_NAME_MAX];
    sand_step_t *start;
    sand_step_t *result; /* the one terminal step reachable from start through next edges */
    sand_step_t **steps; /* all steps, in app.yaml order */
    size_t n_steps;
    int64_t timeout_ms; /* optional `timeout:` of the workflow; 0 = daemon default */
    int line;
} sand_workflow_t;

typedef struct sand_app {
    char name[SAND_NAME_MAX];
    char *root;            /* absolute path of the bundle directory */
    sand_grain_t **grains; /* in app.yaml order */
    size_t n_grains;
    sand_workflow_t **workflows;
    size_t n_workflows;
} sand_app_t;

/* One validation problem: "app.yaml:LINE:COL: message naming the field". */
typedef struct sand_diag {
    int line, col;
    char msg[240];
} sand_diag_t;

typedef struct sand_diags {
    sand_diag_t *items;
    size_t len, cap;
} sand_diags_t;

void sand_diags_init(sand_diags_t *d);
void sand_diags_release(sand_diags_t *d);
/* Formats every diagnostic as "FILE:LINE:COL: msg\n" into out. */
int sand_diags_format(const sand_diags_t *d, const char *file, sand_bytes_t *out);

typedef struct sand_app_limits {
    int64_t max_yaml_bytes;   /* default 1 MiB */
    int max_alias_expansions; /* default 1000 */
    int max_depth;            /* default 64 */
} sand_app_limits_t;

/* Loads and validates DIR/app.yaml (code paths are checked against the files in DIR).
 * limits may be NULL for the defaults. On success returns 0 and *out (free with sand_app_free).
 * On validation failure returns SAND_EINVAL, *out = NULL, and every problem found in diags (not
 * only the first); err gets a one-line summary. Other failures (I/O) return < 0 with err set. */
int sand_app_load(const char *dir, const sand_app_limits_t *limits, sand_app_t **out,
                  sand_diags_t *diags, sand_err *err);

/* Same, from YAML text in memory; code files are resolved against dir (may be NULL to skip the
 * file-existence checks, as the fuzzer does). */
int sand_app_load_text(const char *text, size_t len, const char *dir,
                       const sand_app_limits_t *limits, sand_app_t **out, sand_diags_t *diags,
                       sand_err *err);

void sand_app_free(sand_app_t *app);

sand_grain_t *sand_app_grain(const sand_app_t *app, const char *name);
sand_workflow_t *sand_app_workflow(const sand_app_t *app, const char *name);
sand_step_t *sand_workflow_step(const sand_workflow_t *wf, const char *name);

const char *sand_runtime_name(sand_runtime rt);

/* Describes the app as JSON text (grains with runtime/code/handler/timeout_ms/memory/
 * concurrency; workflows with start, result and steps with next/catch/retry/preds) for the
 * HTTP API. Appends to out. */
int sand_app_describe_json(const sand_app_t *app, sand_bytes_t *out);

#endif
