/*
 * Unit tests of the app.yaml loader and validator: a table of documents, each with the exact
 * diagnostics it must produce (text, line and column) or, for valid ones, a check of the model
 * built from it (defaults, preds, joins, terminal and result steps, retry, catch). Generated
 * documents cover the limits (size, alias expansions, nesting, "billion laughs"); bundles made
 * in a temporary directory cover code paths that escape through symlinks.
 */
#define _GNU_SOURCE /* vasprintf */
#include "sand/workflow.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define FIXTURES SAND_SOURCE_DIR "/tests/unit/data/workflow"
#define BUNDLE   FIXTURES "/bundle"

/* Five python grains and the start of one workflow `w`: its body starts on line 9. */
#define APP                                                                                        \
    "app: demo\n"                                                                                  \
    "grains:\n"                                                                                    \
    "  a: {runtime: python, code: a.py}\n"                                                         \
    "  b: {runtime: python, code: b.py}\n"                                                         \
    "  c: {runtime: python, code: c.py}\n"                                                         \
    "  d: {runtime: python, code: d.py}\n"                                                         \
    "workflows:\n"                                                                                 \
    "  w:\n"

struct tcase {
    const char *name;
    const char *yaml;
    const char *dir;                    /* bundle directory, NULL to skip the file checks */
    const char *want;                   /* exact diagnostics; NULL: the document is valid */
    void (*check)(const sand_app_t *a); /* model checks for valid documents */
};

/* ---- helpers ----------------------------------------------------------------------------- */

/* Loads text and returns the formatted diagnostics (caller frees); *app gets the model. */
static char *load(const char *text, size_t len, const char *dir, sand_app_t **app, int *rc)
{
    sand_diags_t d;
    sand_diags_init(&d);
    sand_err err = {0};
    *rc = sand_app_load_text(text, len, dir, NULL, app, &d, &err);
    sand_bytes_t out;
    sand_bytes_init(&out, 1 << 20);
    assert_int_equal(sand_diags_format(&d, "app.yaml", &out), 0);
    if (*rc == 0) {
        assert_int_equal(d.len, 0);
        assert_non_null(*app);
    } else {
        assert_int_equal(*rc, SAND_EINVAL);
        assert_null(*app);
        assert_true(d.len > 0);
        /* The summary names the count and the first problem. */
        assert_non_null(strstr(err.msg, d.items[0].msg));
    }
    sand_diags_release(&d);
    char *s = sand_bytes_steal(&out, NULL);
    return s ? s : strdup("");
}

static void run_case(void **state)
{
    const struct tcase *c = *state;
    sand_app_t *app = NULL;
    int rc;
    char *got;
    if (c->yaml) {
        got = load(c->yaml, strlen(c->yaml), c->dir, &app, &rc);
    } else {
        sand_err err;
        rc = sand_app_load(c->dir, NULL, &app, NULL, &err);
        got = strdup(rc == 0 ? "" : err.msg);
    }
    if (c->want) {
        assert_string_equal(got, c->want);
    } else {
        assert_string_equal(got, "");
        assert_int_equal(rc, 0);
        if (c->check)
            c->check(app);
    }
    sand_app_free(app);
    free(got);
}

static const sand_step_t *step(const sand_app_t *a, const char *wf, const char *name)
{
    const sand_workflow_t *w = sand_app_workflow(a, wf);
    assert_non_null(w);
    const sand_step_t *s = sand_workflow_step(w, name);
    assert_non_null(s);
    return s;
}

static bool has_pred(const sand_step_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_preds; i++)
        if (strcmp(s->preds[i]->name, name) == 0)
            return true;
    return false;
}

/* ---- model checks of the valid cases ----------------------------------------------------- */

static void check_defaults(const sand_app_t *a)
{
    assert_string_equal(a->name, "tiny");
    assert_null(a->root);
    assert_int_equal(a->n_grains, 1);
    assert_int_equal(a->n_workflows, 0);
    const sand_grain_t *g = sand_app_grain(a, "only");
    assert_non_null(g);
    assert_int_equal(g->runtime, SAND_RT_PYTHON);
    assert_string_equal(g->code, "main.py");
    assert_string_equal(g->handler, "handle");
    assert_int_equal(g->timeout_ms, 60000);
    assert_int_equal(g->memory, 0);
    assert_int_equal(g->concurrency, 100);
    assert_null(g->jvm_options);
    assert_int_equal(g->line, 3);
    assert_null(sand_app_grain(a, "other"));
}

static void check_spec_example(const sand_app_t *a)
{
    assert_string_equal(a->name, "image-pipeline");
    assert_int_equal(a->n_grains, 4);
    const sand_grain_t *ex = sand_app_grain(a, "extract");
    assert_int_equal(ex->timeout_ms, 30000);
    assert_int_equal(ex->memory, 256 * 1024 * 1024);
    assert_int_equal(ex->concurrency, 100);
    const sand_grain_t *st = sand_app_grain(a, "store");
    assert_int_equal(st->runtime, SAND_RT_JAVA);
    assert_string_equal(st->handler, "example.Store");
    assert_int_equal(sand_app_grain(a, "resize")->runtime, SAND_RT_C);
    assert_string_equal(sand_app_grain(a, "resize")->handler, "resize_handle");

    const sand_workflow_t *w = sand_app_workflow(a, "process");
    assert_non_null(w);
    assert_int_equal(w->n_steps, 4);
    assert_string_equal(w->start->name, "extract");
    assert_non_null(w->result);
    assert_string_equal(w->result->name, "collect");
    const sand_step_t *e = step(a, "process", "extract");
    assert_int_equal(e->n_next, 2);
    assert_string_equal(e->next[0]->name, "thumb");
    assert_string_equal(e->next[1]->name, "store");
    assert_int_equal(e->n_preds, 0);
    assert_false(e->terminal);
    assert_ptr_equal(e->grain, ex);
    const sand_step_t *t = step(a, "process", "thumb");
    assert_string_equal(t->grain->name, "resize");
    assert_int_equal(t->n_preds, 1);
    assert_true(has_pred(t, "extract"));
    const sand_step_t *c = step(a, "process", "collect");
    assert_int_equal(c->n_preds, 2); /* a join */
    assert_true(has_pred(c, "thumb"));
    assert_true(has_pred(c, "store"));
    assert_true(c->terminal);
    assert_string_equal(c->grain->name, "collect");
    for (size_t i = 0; i < w->n_steps; i++)
        assert_int_equal(w->steps[i]->index, (int)i);
    assert_int_equal(c->index, 3);
    assert_int_equal(c->line, 30);
    assert_int_equal(w->timeout_ms, 0);
}

static void check_retry_catch(const sand_app_t *a)
{
    const sand_workflow_t *w = sand_app_workflow(a, "w");
    const sand_step_t *s = step(a, "w", "a");
    assert_int_equal(s->retry_max, 2);
    assert_int_equal(s->retry_backoff_ms, 100);
    assert_non_null(s->catch_step);
    assert_string_equal(s->catch_step->name, "oops");
    const sand_step_t *b = step(a, "w", "b");
    assert_int_equal(b->retry_max, 10);
    assert_int_equal(b->retry_backoff_ms, 0);
    assert_null(b->catch_step);
    const sand_step_t *oops = step(a, "w", "oops");
    assert_true(oops->terminal); /* reached only through catch: may be terminal */
    assert_int_equal(oops->n_preds, 0);
    assert_string_equal(oops->grain->name, "c");
    assert_string_equal(w->result->name, "b");
    assert_int_equal(w->timeout_ms, 120000);
}

static void check_loop(const sand_app_t *a)
{
    const sand_step_t *s = step(a, "w", "a");
    assert_int_equal(s->n_preds, 1); /* b loops back */
    assert_string_equal(s->preds[0]->name, "b");
    assert_string_equal(sand_app_workflow(a, "w")->result->name, "c");
    assert_string_equal(sand_app_workflow(a, "w")->start->name, "a");
}

static void check_aliases(const sand_app_t *a)
{
    assert_int_equal(a->n_grains, 3);
    const sand_grain_t *y = sand_app_grain(a, "y");
    assert_string_equal(y->code, "shared.py");
    assert_int_equal(y->timeout_ms, 5000);
    assert_int_equal(sand_app_grain(a, "z")->concurrency, 7);
}

static void check_values(const sand_app_t *a)
{
    const sand_grain_t *g = sand_app_grain(a, "g");
    assert_int_equal(g->timeout_ms, 5000); /* a bare integer is seconds */
    assert_int_equal(g->memory, 1048576);
    assert_int_equal(g->concurrency, 10000);
    const sand_grain_t *j = sand_app_grain(a, "j");
    assert_string_equal(j->jvm_options, "-Xmx64m -Xss1m");
    assert_string_equal(j->code, "lib/classes");
    assert_int_equal(j->timeout_ms, 3600000);
    assert_int_equal(j->concurrency, 1);
    assert_int_equal(j->memory, 2000000);
    const sand_grain_t *c = sand_app_grain(a, "c_1");
    assert_string_equal(c->code, "native/lib.so");
    assert_string_equal(c->handler, "handle");
    assert_string_equal(sand_app_grain(a, "p")->code, ".");
}

static void check_single_step(const sand_app_t *a)
{
    const sand_workflow_t *w = sand_app_workflow(a, "w");
    assert_int_equal(w->n_steps, 1);
    assert_ptr_equal(w->start, w->result);
    assert_true(w->start->terminal);
    assert_string_equal(w->start->grain->name, "a");
    assert_null(w->start->next);
}

static void check_fixture(const sand_app_t *a)
{
    assert_non_null(a->root);
    assert_true(a->root[0] == '/');
    assert_string_equal(sand_app_grain(a, "pkg")->code, "grains/pkg");
    assert_int_equal(sand_app_grain(a, "classes")->runtime, SAND_RT_JAVA);
    assert_string_equal(sand_app_workflow(a, "main")->result->name, "pkg");
}

/* ---- the table --------------------------------------------------------------------------- */

static const struct tcase cases[] = {
    /* valid documents and their models */
    {"grains_only_defaults",
     "app: tiny\n"
     "grains:\n"
     "  only:\n"
     "    runtime: python\n"
     "    code: main.py\n",
     NULL, NULL, check_defaults},
    {"spec_example_fan_out_and_join",
     "app: image-pipeline\n"
     "description: the example of the specification\n"
     "grains:\n"
     "  extract:\n"
     "    runtime: python\n"
     "    code: grains/extract.py\n"
     "    handler: handle\n"
     "    timeout: 30s\n"
     "    memory: 256Mi\n"
     "    concurrency: 100\n"
     "  store:\n"
     "    runtime: java\n"
     "    code: grains/store.jar\n"
     "    handler: example.Store\n"
     "  resize:\n"
     "    runtime: c\n"
     "    code: grains/resize.so\n"
     "    handler: resize_handle\n"
     "  collect:\n"
     "    runtime: python\n"
     "    code: grains/collect\n"
     "workflows:\n"
     "  process:\n"
     "    description: resize and store\n"
     "    start: extract\n"
     "    steps:\n"
     "      extract:   { grain: extract,   next: [thumb, store] }\n"
     "      thumb:     { grain: resize,    next: collect }\n"
     "      store:     { grain: store,     next: collect }\n"
     "      collect:   { grain: collect }\n",
     NULL, NULL, check_spec_example},
    {"retry_and_terminal_catch_step",
     APP "    start: a\n"
         "    timeout: 2m\n"
         "    steps:\n"
         "      a: {next: b, retry: {max: 2, backoff: 100ms}, catch: oops}\n"
         "      b: {retry: {max: 10}}\n"
         "      oops: {grain: c, description: reached only on errors}\n",
     NULL, NULL, check_retry_catch},
    {"cycle_with_a_way_out",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: b}\n"
         "      b: {next: [a, c]}\n"
         "      c:\n",
     NULL, NULL, check_loop},
    {"anchors_and_aliases",
     "app: aliases\n"
     "grains:\n"
     "  x: &g {runtime: python, code: ./shared.py, timeout: &t 5s}\n"
     "  y: *g\n"
     "  z: {runtime: python, code: z.py, timeout: *t, concurrency: 7}\n",
     NULL, NULL, check_aliases},
    {"values_of_every_type",
     "app: v\n"
     "grains:\n"
     "  g: {runtime: python, code: g.py, timeout: 5, memory: 1048576, concurrency: 10000}\n"
     "  j: {runtime: java, code: lib/classes/, handler: a.b.C$Inner, timeout: 1h,\n"
     "      jvm_options: \"-Xmx64m -Xss1m\", concurrency: 1, memory: 2M}\n"
     "  c_1: {runtime: c, code: native//lib.so}\n"
     "  p: {runtime: python, code: ./}\n",
     NULL, NULL, check_values},
    {"single_step_is_start_and_result",
     APP "    start: a\n"
         "    steps:\n"
         "      a:\n",
     NULL, NULL, check_single_step},
    {"bundle_with_every_code_layout", NULL, BUNDLE, NULL, check_fixture},

    /* malformed YAML and the document shape */
    {"malformed_flow",
     "app: demo\n"
     "grains:\n"
     "  a: {runtime: python, code: [a.py\n",
     NULL,
     "app.yaml:4:1: malformed YAML: did not find expected ',' or ']' (while parsing a flow "
     "sequence at line 3, column 30)\n",
     NULL},
    {"malformed_tab",
     "app: demo\n"
     "grains:\n"
     "\ta: 1\n",
     NULL,
     "app.yaml:3:1: malformed YAML: found character that cannot start any token (while "
     "scanning for the next token at line 3, column 1)\n",
     NULL},
    {"two_documents", "app: demo\n---\napp: x\n", NULL,
     "app.yaml:2:1: more than one YAML document (app.yaml holds exactly one)\n", NULL},
    {"empty_document", "# nothing but a comment\n", NULL,
     "app.yaml:1:1: empty document (expected a mapping with app and grains)\n", NULL},
    {"top_level_sequence", "- app\n- grains\n", NULL,
     "app.yaml:1:1: expected a mapping with app and grains at the top level, got a "
     "sequence\n",
     NULL},
    {"invalid_utf8", "app: demo\ndescription: \"\xff\"\n", NULL,
     "app.yaml:1:1: malformed YAML: invalid leading UTF-8 octet at byte 24\n", NULL},
    {"unknown_anchor",
     "app: demo\n"
     "grains:\n"
     "  a: {runtime: python, code: *nope}\n",
     NULL, "app.yaml:3:30: unknown anchor 'nope'\n", NULL},
    {"unsupported_tag",
     "app: demo\n"
     "grains:\n"
     "  a: {runtime: !python/name python, code: a.py}\n",
     NULL, "app.yaml:3:16: unsupported tag '!python/name' on value 'python'\n", NULL},

    /* top-level keys */
    {"missing_app_and_grains", "description: nothing else\n", NULL,
     "app.yaml:1:1: missing required key 'app' (the application's name)\n"
     "app.yaml:1:1: missing required key 'grains'\n",
     NULL},
    {"app_name_and_unknown_keys",
     "app: My_App\n"
     "version: 2\n"
     "grains: {a: {runtime: c, code: a.c}}\n"
     "description: {text: no}\n",
     NULL,
     "app.yaml:1:6: app: invalid application name 'My_App' (expected [a-z0-9][a-z0-9-]{0,62})\n"
     "app.yaml:2:1: unknown key 'version' (expected app, grains, workflows, description)\n"
     "app.yaml:4:14: description: expected a string, got a mapping\n",
     NULL},
    {"grains_empty_and_workflows_empty",
     "app: demo\n"
     "grains: {}\n"
     "workflows:\n",
     NULL,
     "app.yaml:2:9: grains: no grains (an app needs at least one)\n"
     "app.yaml:3:1: workflows: no workflows (leave the key out for an app with grains only)\n",
     NULL},
    {"grains_wrong_type", "app: demo\ngrains: [a, b]\n", NULL,
     "app.yaml:2:9: grains: expected a mapping of grain names to grains, got a sequence\n", NULL},

    /* grains */
    {"unknown_runtime",
     "app: image-pipeline\n"
     "grains:\n"
     "  extract:\n"
     "    runtime: python\n"
     "    code: grains/extract.py\n"
     "  resize:\n"
     "    runtime: rust\n"
     "    code: grains/resize.so\n",
     NULL,
     "app.yaml:7:14: grains.resize.runtime: unknown runtime 'rust' (expected python, java or "
     "c)\n",
     NULL},
    {"grain_missing_fields_and_bad_name",
     "app: demo\n"
     "grains:\n"
     "  Resize: {runtime: c, code: r.c}\n"
     "  empty:\n"
     "  store: {runtime: java, code: s.jar}\n"
     "  x: {runtime: 3, code: [x.py], colour: red}\n",
     NULL,
     "app.yaml:3:3: grains: invalid grain name 'Resize' (expected [a-z0-9_][a-z0-9_-]{0,62})\n"
     "app.yaml:4:3: grains.empty: expected a mapping with runtime and code, got null\n"
     "app.yaml:5:3: grains.store: missing required key 'handler' (the java class, e.g. "
     "example.Store)\n"
     "app.yaml:6:16: grains.x.runtime: expected a runtime (python, java or c), got an integer\n"
     "app.yaml:6:25: grains.x.code: expected a path, got a sequence\n"
     "app.yaml:6:33: grains.x: unknown key 'colour' (expected runtime, code, handler, timeout, "
     "memory, concurrency, jvm_options, description)\n",
     NULL},
    {"grain_missing_runtime_and_code",
     "app: demo\n"
     "grains:\n"
     "  a:\n"
     "    handler: handle\n",
     NULL,
     "app.yaml:3:3: grains.a: missing required key 'runtime' (python, java or c)\n"
     "app.yaml:3:3: grains.a: missing required key 'code' (a file or directory of the "
     "bundle)\n",
     NULL},
    {"grain_limits",
     "app: demo\n"
     "grains:\n"
     "  a:\n"
     "    runtime: python\n"
     "    code: a.py\n"
     "    timeout: 0s\n"
     "    memory: 512Ki\n"
     "    concurrency: 0\n"
     "  b: {runtime: python, code: b.py, timeout: 2h, memory: lots, concurrency: 10001}\n"
     "  c: {runtime: python, code: c.py, timeout: soon, memory: [1], concurrency: \"5\"}\n",
     NULL,
     "app.yaml:6:14: grains.a.timeout: timeout must be more than 0 and at most 1h (got '0s')\n"
     "app.yaml:7:13: grains.a.memory: memory '512Ki' is below the minimum of 1Mi\n"
     "app.yaml:8:18: grains.a.concurrency: 0 is out of range [1, 10000]\n"
     "app.yaml:9:45: grains.b.timeout: timeout must be more than 0 and at most 1h (got '2h')\n"
     "app.yaml:9:57: grains.b.memory: invalid size 'lots' (expected e.g. 64Mi, 1Gi)\n"
     "app.yaml:9:76: grains.b.concurrency: 10001 is out of range [1, 10000]\n"
     "app.yaml:10:45: grains.c.timeout: invalid duration 'soon' (expected e.g. 100ms, 30s, 2m, "
     "1h)\n"
     "app.yaml:10:59: grains.c.memory: expected a size (e.g. 256Mi), got a sequence\n"
     "app.yaml:10:77: grains.c.concurrency: expected an integer, got a string\n",
     NULL},
    {"handlers_and_jvm_options",
     "app: demo\n"
     "grains:\n"
     "  p: {runtime: python, code: p.py, handler: my-func, jvm_options: -Xmx1g}\n"
     "  j: {runtime: java, code: j.jar, handler: example..Store}\n"
     "  c: {runtime: c, code: c.so, handler: 9lives}\n"
     "  k: {runtime: java, code: k.jar, handler: [a]}\n",
     NULL,
     "app.yaml:3:45: grains.p.handler: invalid python function name 'my-func'\n"
     "app.yaml:3:67: grains.p.jvm_options: only java grains take jvm_options (this one is "
     "python)\n"
     "app.yaml:4:44: grains.j.handler: invalid java class name 'example..Store' (expected e.g. "
     "example.Store)\n"
     "app.yaml:5:40: grains.c.handler: invalid C symbol name '9lives'\n"
     "app.yaml:6:44: grains.k.handler: expected a string, got a sequence\n",
     NULL},
    {"code_path_escapes",
     "app: demo\n"
     "grains:\n"
     "  a: {runtime: python, code: /srv/app/a.py}\n"
     "  b: {runtime: python, code: lib/../../b.py}\n"
     "  c: {runtime: python, code: \"\"}\n"
     "  d: {runtime: c, code: d.py}\n"
     "  e: {runtime: c, code: \"e\\0.c\"}\n",
     NULL,
     "app.yaml:3:30: grains.a.code: absolute path '/srv/app/a.py' (code must be relative to "
     "the bundle)\n"
     "app.yaml:4:30: grains.b.code: path 'lib/../../b.py' has a '..' component (code must stay "
     "inside the bundle)\n"
     "app.yaml:5:30: grains.c.code: empty path\n"
     "app.yaml:6:25: grains.d.code: 'd.py' is not a .so or .c file\n"
     "app.yaml:7:25: grains.e.code: value contains a NUL character\n",
     NULL},
    {"code_files_checked_in_the_bundle",
     "app: demo\n"
     "grains:\n"
     "  missing: {runtime: python, code: grains/missing.py}\n"
     "  notpy: {runtime: python, code: grains/notes.txt}\n"
     "  nomain: {runtime: python, code: grains/nomain}\n"
     "  notjar: {runtime: java, code: grains/extract.py, handler: a.B}\n"
     "  cdir: {runtime: c, code: grains/pkg}\n"
     "  under: {runtime: python, code: grains/extract.py/x}\n",
     BUNDLE,
     "app.yaml:3:36: grains.missing.code: 'grains/missing.py' does not exist in the bundle\n"
     "app.yaml:4:34: grains.notpy.code: 'grains/notes.txt' is not a .py file or a directory "
     "with main.py\n"
     "app.yaml:5:35: grains.nomain.code: directory 'grains/nomain' has no main.py (python code "
     "is a .py file or a directory with main.py)\n"
     "app.yaml:6:33: grains.notjar.code: 'grains/extract.py' is not a .jar file or a "
     "directory\n"
     "app.yaml:7:28: grains.cdir.code: 'grains/pkg' is not a .so or .c file\n"
     "app.yaml:8:34: grains.under.code: 'grains/extract.py/x' does not exist in the bundle\n",
     NULL},
    {"duplicate_keys_and_names",
     "app: demo\n"
     "grains:\n"
     "  a: {runtime: python, code: a.py, runtime: java}\n"
     "  a: {runtime: python, code: other.py}\n"
     "workflows:\n"
     "  w:\n"
     "    start: a\n"
     "    steps:\n"
     "      a: {}\n"
     "      a: {next: a}\n"
     "  w: {start: a, steps: {a: }}\n"
     "app: again\n",
     NULL,
     "app.yaml:3:36: grains.a: duplicate key 'runtime' (first defined at line 3)\n"
     "app.yaml:4:3: grains: duplicate grain 'a' (first defined at line 3)\n"
     "app.yaml:10:7: workflows.w.steps: duplicate step 'a' (first defined at line 9)\n"
     "app.yaml:11:3: workflows: duplicate workflow 'w' (first defined at line 6)\n"
     "app.yaml:12:1: duplicate key 'app' (first defined at line 1)\n",
     NULL},
    {"non_string_keys",
     "app: demo\n"
     "grains:\n"
     "  5: {runtime: c, code: a.c}\n"
     "  [x]: {runtime: c, code: b.c}\n",
     NULL,
     "app.yaml:3:3: grains: grain name must be a string, got an integer\n"
     "app.yaml:4:3: grains: grain name must be a string, got a sequence\n",
     NULL},
    {"merge_keys_are_not_supported",
     "app: demo\n"
     "grains:\n"
     "  base: &base {runtime: python, code: a.py}\n"
     "  other:\n"
     "    <<: *base\n",
     NULL,
     "app.yaml:4:3: grains.other: missing required key 'runtime' (python, java or c)\n"
     "app.yaml:4:3: grains.other: missing required key 'code' (a file or directory of the "
     "bundle)\n"
     "app.yaml:5:5: grains.other: unknown key '<<' (expected runtime, code, handler, timeout, "
     "memory, concurrency, jvm_options, description)\n",
     NULL},

    /* workflows: fields and names */
    {"unknown_next_step",
     "app: image-pipeline\n"
     "grains:\n"
     "  extract: {runtime: python, code: extract.py}\n"
     "  resize: {runtime: python, code: resize.py}\n"
     "  store: {runtime: python, code: store.py}\n"
     "  collect: {runtime: python, code: collect.py}\n"
     "workflows:\n"
     "  process:\n"
     "    start: extract\n"
     "    steps:\n"
     "      extract:\n"
     "        next: [thumb, store]\n"
     "      thumb:\n"
     "        grain: resize\n"
     "        next: thumbs\n"
     "      store:\n"
     "        next: collect\n"
     "      collect:\n",
     NULL, "app.yaml:15:15: workflows.process.steps.thumb.next: unknown step 'thumbs'\n", NULL},
    {"unknown_targets_and_self_catch",
     APP "    start: z\n"
         "    steps:\n"
         "      a: {next: [b, nope, b], catch: a}\n"
         "      b: {catch: gone}\n",
     NULL,
     "app.yaml:9:12: workflows.w.start: unknown step 'z'\n"
     "app.yaml:11:21: workflows.w.steps.a.next[1]: unknown step 'nope'\n"
     "app.yaml:11:27: workflows.w.steps.a.next[2]: step 'b' is listed twice\n"
     "app.yaml:11:38: workflows.w.steps.a.catch: a step cannot catch its own errors\n"
     "app.yaml:12:18: workflows.w.steps.b.catch: unknown step 'gone'\n",
     NULL},
    {"wrong_types_in_steps",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: 5, retry: \"x\", catch: [b]}\n"
         "      b: {next: [], grain: 7}\n"
         "      c: [a]\n",
     NULL,
     "app.yaml:11:17: workflows.w.steps.a.next: expected a step name or a list of step names, "
     "got an integer\n"
     "app.yaml:11:27: workflows.w.steps.a.retry: expected a mapping {max: N, backoff: "
     "DURATION}, got a string\n"
     "app.yaml:11:39: workflows.w.steps.a.catch: expected a step name, got a sequence\n"
     "app.yaml:12:17: workflows.w.steps.b.next: empty list (leave next out to make the step "
     "terminal)\n"
     "app.yaml:12:28: workflows.w.steps.b.grain: expected a grain name, got an integer\n"
     "app.yaml:13:10: workflows.w.steps.c: expected a mapping (grain, next, catch, retry), got "
     "a sequence\n",
     NULL},
    {"retry_values",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: b, retry: {max: 11, backoff: 2h}}\n"
         "      b: {next: c, retry: {backoff: 1s, tries: 3}}\n"
         "      c: {retry: {max: -1, backoff: fast}}\n",
     NULL,
     "app.yaml:11:33: workflows.w.steps.a.retry.max: 11 is out of range [0, 10]\n"
     "app.yaml:11:46: workflows.w.steps.a.retry.backoff: backoff must be at most 1h (got "
     "'2h')\n"
     "app.yaml:12:27: workflows.w.steps.b.retry: missing required key 'max' (extra runs after "
     "the first, 0..10)\n"
     "app.yaml:12:41: workflows.w.steps.b.retry: unknown key 'tries' (expected max, backoff)\n"
     "app.yaml:13:24: workflows.w.steps.c.retry.max: -1 is out of range [0, 10]\n"
     "app.yaml:13:37: workflows.w.steps.c.retry.backoff: invalid duration 'fast' (expected e.g. "
     "100ms, 30s, 2m, 1h)\n",
     NULL},
    {"step_grains",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: thumb, grain: resize}\n"
         "      thumb: {}\n",
     NULL,
     "app.yaml:11:31: workflows.w.steps.a.grain: unknown grain 'resize'\n"
     "app.yaml:12:7: workflows.w.steps.thumb: no grain named 'thumb' (set grain: to one of the "
     "app's grains)\n",
     NULL},
    {"workflow_shape",
     APP "    timeout: 0s\n"
         "    colour: blue\n"
         "  v: {start: a, steps: {}}\n"
         "  u: {steps: {a: }}\n"
         "  t:\n"
         "  s: {start: a}\n"
         "  Bad: {start: a, steps: {a: }}\n",
     NULL,
     "app.yaml:8:3: workflows.w: missing required key 'steps'\n"
     "app.yaml:8:3: workflows.w: missing required key 'start'\n"
     "app.yaml:9:14: workflows.w.timeout: timeout must be more than 0\n"
     "app.yaml:10:5: workflows.w: unknown key 'colour' (expected start, steps, timeout, "
     "description)\n"
     "app.yaml:11:24: workflows.v.steps: no steps (a workflow needs at least one)\n"
     "app.yaml:12:3: workflows.u: missing required key 'start'\n"
     "app.yaml:13:3: workflows.t: expected a mapping with start and steps, got null\n"
     "app.yaml:14:3: workflows.s: missing required key 'steps'\n"
     "app.yaml:15:3: workflows: invalid workflow name 'Bad' (expected [a-z0-9_][a-z0-9_-]{0,62})"
     "\n",
     NULL},
    {"invalid_step_name",
     APP "    start: A\n"
         "    steps:\n"
         "      A: {grain: a}\n",
     NULL,
     "app.yaml:11:7: workflows.w.steps: invalid step name 'A' (expected "
     "[a-z0-9_][a-z0-9_-]{0,62})\n",
     NULL},

    /* workflows: graph rules */
    {"unreachable_step",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: b}\n"
         "      b: {}\n"
         "      c: {next: b}\n",
     NULL,
     "app.yaml:13:7: workflows.w.steps.c: step is not reachable from start step 'a' (through "
     "next or catch)\n",
     NULL},
    {"fan_out_not_joined",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: [b, c]}\n"
         "      b: {}\n"
         "      c: {}\n",
     NULL,
     "app.yaml:8:3: workflows.w: 2 terminal steps are reachable from start through next: 'b', "
     "'c' (exactly one may be: join a fan-out before the end)\n",
     NULL},
    {"cycle_without_a_way_out",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: b}\n"
         "      b: {next: c}\n"
         "      c: {next: b}\n",
     NULL,
     "app.yaml:8:3: workflows.w: no terminal step (a step without next) is reachable from start "
     "step 'a' through next\n"
     "app.yaml:12:7: workflows.w.steps.b: cycle through 'b', 'c' has no way out (no terminal "
     "step is reachable through next)\n",
     NULL},
    {"dead_cycle_behind_catch",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {catch: h}\n"
         "      h: {grain: b, next: h}\n",
     NULL,
     "app.yaml:12:7: workflows.w.steps.h: cycle through 'h' has no way out (no terminal step "
     "is reachable through next)\n",
     NULL},
    {"catch_into_a_join",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: [b, c], catch: d}\n"
         "      b: {next: d}\n"
         "      c: {next: d}\n"
         "      d: {}\n",
     NULL,
     "app.yaml:11:32: workflows.w.steps.a.catch: catch target 'd' is a join (it has 2 "
     "predecessors through next)\n",
     NULL},
    {"catch_handler_feeding_a_join",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: b, catch: h}\n"
         "      h: {grain: c, next: b}\n"
         "      b: {}\n",
     NULL,
     "app.yaml:13:7: workflows.w.steps.b: join waits for 'h', which runs only after an error "
     "(through catch), so it would never run\n",
     NULL},
    {"start_is_a_join",
     APP "    start: a\n"
         "    steps:\n"
         "      a: {next: [b, c]}\n"
         "      b: {next: [a, d]}\n"
         "      c: {next: a}\n"
         "      d: {}\n",
     NULL,
     "app.yaml:9:12: workflows.w.start: start step 'a' is a join (it has 2 predecessors through "
     "next)\n",
     NULL},
    {"errors_everywhere_all_reported",
     "app: Demo\n"
     "grains:\n"
     "  a: {runtime: go, code: a.go}\n"
     "  b: {runtime: python, code: /b.py}\n"
     "workflows:\n"
     "  w:\n"
     "    start: a\n"
     "    steps:\n"
     "      a: {next: x}\n"
     "  v:\n"
     "    start: a\n"
     "    steps:\n"
     "      a: {next: [b, a]}\n"
     "      b: {}\n"
     "      c: {grain: a}\n",
     NULL,
     "app.yaml:1:6: app: invalid application name 'Demo' (expected [a-z0-9][a-z0-9-]{0,62})\n"
     "app.yaml:3:16: grains.a.runtime: unknown runtime 'go' (expected python, java or c)\n"
     "app.yaml:4:30: grains.b.code: absolute path '/b.py' (code must be relative to the "
     "bundle)\n"
     "app.yaml:9:17: workflows.w.steps.a.next: unknown step 'x'\n"
     "app.yaml:15:7: workflows.v.steps.c: step is not reachable from start step 'a' (through "
     "next or catch)\n",
     NULL},
};

/* ---- generated documents: the limits ----------------------------------------------------- */

static char *printf_alloc(const char *fmt, ...) SAND_PRINTF(1, 2);
static char *printf_alloc(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    assert_true(vasprintf(&s, fmt, ap) >= 0);
    va_end(ap);
    return s;
}

static void expect_text(const char *text, size_t len, const char *dir, const char *want)
{
    sand_app_t *app = NULL;
    int rc;
    char *got = load(text, len, dir, &app, &rc);
    assert_string_equal(got, want);
    sand_app_free(app);
    free(got);
}

static void test_size_limit(void **state)
{
    const char *head = "app: big\ngrains: {a: {runtime: c, code: a.c}}\n#";
    size_t max = 1024 * 1024;
    char *text = malloc(max + 2);
    assert_non_null(text);
    memset(text, 'x', max + 1);
    memcpy(text, head, strlen(head));
    text[max - 1] = '\n';
    /* Exactly 1 MiB (a comment pads it) is accepted. */
    expect_text(text, max, NULL, "");
    /* One byte more is refused before parsing. */
    expect_text(text, max + 1, NULL, "app.yaml:1:1: app.yaml is 1048577 bytes (max 1048576)\n");
    /* A caller may lower the limit. */
    sand_app_limits_t lim = {.max_yaml_bytes = 16};
    sand_diags_t d;
    sand_diags_init(&d);
    sand_app_t *app;
    assert_int_equal(sand_app_load_text(text, 17, NULL, &lim, &app, &d, NULL), SAND_EINVAL);
    assert_int_equal(d.len, 1);
    assert_string_equal(d.items[0].msg, "app.yaml is 17 bytes (max 16)");
    sand_diags_release(&d);
    free(text);
}

/* n grains; the first anchors its runtime and code, every other one uses both through aliases,
 * extra more alias uses in the app's description. */
static char *aliases_doc(int n, int extra)
{
    sand_bytes_t b;
    sand_bytes_init(&b, 1 << 20);
    sand_bytes_appends(&b, "app: &name many\ngrains:\n  g0: {runtime: &r python, code: &c a.py}\n");
    for (int i = 1; i < n; i++)
        sand_bytes_appendf(&b, "  g%d: {runtime: *r, code: *c}\n", i);
    if (extra)
        sand_bytes_appends(&b, "workflows:\n  w: {start: g0, description: *name, steps: {g0: }}\n");
    return sand_bytes_steal(&b, NULL);
}

static void test_alias_limit(void **state)
{
    /* 500 grains x 2 aliases = exactly 1000 alias uses: accepted. */
    char *ok = aliases_doc(501, 0);
    expect_text(ok, strlen(ok), NULL, "");
    free(ok);
    /* One more use (the 1001st) is refused where it happens. */
    char *over = aliases_doc(501, 1);
    expect_text(over, strlen(over), NULL,
                "app.yaml:505:31: too many alias expansions (more than 1000)\n");
    free(over);
}

static void test_billion_laughs(void **state)
{
    /* Each level refers 9 times to the previous: fully expanded this is 9^9 strings. Counting an
     * alias use with the uses inside its target stops it at the 4th level, without expanding. */
    const char *doc = "app: lol\n"
                      "description: [&a [lol, lol, lol, lol, lol, lol, lol, lol, lol],\n"
                      "  &b [*a, *a, *a, *a, *a, *a, *a, *a, *a],\n"
                      "  &c [*b, *b, *b, *b, *b, *b, *b, *b, *b],\n"
                      "  &d [*c, *c, *c, *c, *c, *c, *c, *c, *c],\n"
                      "  &e [*d, *d, *d, *d, *d, *d, *d, *d, *d],\n"
                      "  &f [*e, *e, *e, *e, *e, *e, *e, *e, *e],\n"
                      "  &g [*f, *f, *f, *f, *f, *f, *f, *f, *f],\n"
                      "  &h [*g, *g, *g, *g, *g, *g, *g, *g, *g],\n"
                      "  &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]]\n"
                      "grains: {}\n";
    expect_text(doc, strlen(doc), NULL,
                "app.yaml:6:7: too many alias expansions (more than 1000)\n");
}

static void test_nesting_limit(void **state)
{
    /* The top-level mapping is level 1: 63 nested sequences make 64 levels (accepted by the
     * parser, refused by the schema), 64 make 65 (refused where level 65 opens). */
    char open64[65], close64[65];
    memset(open64, '[', 64);
    memset(close64, ']', 64);
    open64[64] = close64[64] = '\0';
    char *ok = printf_alloc("app: deep\ndescription: %.63s%.63s\ngrains: {a: {runtime: c, code: "
                            "a.c}}\n",
                            open64, close64);
    expect_text(ok, strlen(ok), NULL,
                "app.yaml:2:14: description: expected a string, got a sequence\n");
    char *deep = printf_alloc("app: deep\ndescription: %s%s\ngrains: {a: {runtime: c, code: "
                              "a.c}}\n",
                              open64, close64);
    expect_text(deep, strlen(deep), NULL, "app.yaml:2:77: nesting deeper than 64 levels\n");
    /* A deep block structure is stopped the same way, and a caller may lower the limit. */
    sand_app_limits_t lim = {.max_depth = 2};
    sand_diags_t d;
    sand_diags_init(&d);
    sand_app_t *app;
    const char *three = "app: x\ngrains:\n  a:\n    runtime: c\n";
    assert_int_equal(sand_app_load_text(three, strlen(three), NULL, &lim, &app, &d, NULL),
                     SAND_EINVAL);
    assert_int_equal(d.len, 1);
    assert_int_equal(d.items[0].line, 4);
    assert_string_equal(d.items[0].msg, "nesting deeper than 2 levels");
    sand_diags_release(&d);
    /* However high a caller sets it, the limit stays within what the loader can handle. */
    lim.max_depth = 1000000000;
    char *huge = malloc(2 * 1100 + 1);
    assert_non_null(huge);
    memset(huge, '[', 1100);
    memset(huge + 1100, ']', 1100);
    huge[2200] = '\0';
    assert_int_equal(sand_app_load_text(huge, 2200, NULL, &lim, &app, &d, NULL), SAND_EINVAL);
    assert_int_equal(d.len, 1);
    assert_int_equal(d.items[0].col, 1025);
    assert_string_equal(d.items[0].msg, "nesting deeper than 1024 levels");
    sand_diags_release(&d);
    free(huge);
    free(ok);
    free(deep);
}

static void test_too_many_errors(void **state)
{
    /* Thousands of bad grains: the report is capped instead of growing with the input. */
    sand_bytes_t b;
    sand_bytes_init(&b, 1 << 20);
    sand_bytes_appends(&b, "app: noisy\ngrains:\n");
    for (int i = 0; i < 5000; i++)
        sand_bytes_appendf(&b, "  g%d: {runtime: rust, code: a.rs}\n", i);
    sand_diags_t d;
    sand_diags_init(&d);
    sand_app_t *app;
    sand_err err;
    assert_int_equal(sand_app_load_text(b.data, b.len, NULL, NULL, &app, &d, &err), SAND_EINVAL);
    assert_int_equal(d.len, 201);
    assert_string_equal(d.items[200].msg, "too many errors (more than 200), stopping here");
    assert_string_equal(d.items[0].msg,
                        "grains.g0.runtime: unknown runtime 'rust' (expected python, java or c)");
    assert_non_null(strstr(err.msg, "201 errors"));
    sand_diags_release(&d);
    sand_bytes_release(&b);
}

/* ---- bundles on disk --------------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void test_symlink_escape(void **state)
{
    char tmpl[] = "/tmp/sand-wf-......";
    memset(tmpl + strlen(tmpl) - 6, 'X', 6); /* the six characters mkdtemp replaces */
    char *top = mkdtemp(tmpl);
    assert_non_null(top);
    char *bundle = printf_alloc("%s/bundle", top), *p;
    assert_int_equal(mkdir(bundle, 0755), 0);
    write_file(p = printf_alloc("%s/outside.py", top), "x = 1\n"), free(p);
    assert_int_equal(mkdir(p = printf_alloc("%s/outdir", top), 0755), 0), free(p);
    write_file(p = printf_alloc("%s/outdir/main.py", top), "x = 1\n"), free(p);
    assert_int_equal(mkdir(p = printf_alloc("%s/grains", bundle), 0755), 0), free(p);
    write_file(p = printf_alloc("%s/grains/ok.py", bundle), "x = 1\n"), free(p);
    assert_int_equal(symlink("../../outside.py", p = printf_alloc("%s/grains/evil.py", bundle)), 0),
        free(p);
    assert_int_equal(symlink(top, p = printf_alloc("%s/up", bundle)), 0), free(p);
    assert_int_equal(symlink("ok.py", p = printf_alloc("%s/grains/alias.py", bundle)), 0), free(p);
    assert_int_equal(mkdir(p = printf_alloc("%s/grains/pkg", bundle), 0755), 0), free(p);
    assert_int_equal(
        symlink("../../../outside.py", p = printf_alloc("%s/grains/pkg/main.py", bundle)), 0),
        free(p);
    const char *doc = "app: escape\n"
                      "grains:\n"
                      "  ok: {runtime: python, code: grains/alias.py}\n"
                      "  file: {runtime: python, code: grains/evil.py}\n"
                      "  dir: {runtime: python, code: up/outdir}\n"
                      "  main: {runtime: python, code: grains/pkg}\n";
    expect_text(doc, strlen(doc), bundle,
                "app.yaml:4:33: grains.file.code: 'grains/evil.py' resolves outside the bundle "
                "(through a symlink)\n"
                "app.yaml:5:32: grains.dir.code: 'up/outdir' resolves outside the bundle (through "
                "a symlink)\n"
                "app.yaml:6:33: grains.main.code: 'grains/pkg/main.py' resolves outside the bundle "
                "(through a symlink)\n");

    /* sand_app_load reads DIR/app.yaml and refuses a symlinked app.yaml. */
    write_file(p = printf_alloc("%s/app.yaml", bundle), "app: escape\ngrains:\n  ok: {runtime: "
                                                        "python, code: grains/ok.py}\n"),
        free(p);
    sand_app_t *app = NULL;
    sand_diags_t d;
    sand_diags_init(&d);
    sand_err err = {0};
    assert_int_equal(sand_app_load(bundle, NULL, &app, &d, &err), 0);
    assert_non_null(app);
    char *real = realpath(bundle, NULL);
    assert_string_equal(app->root, real);
    free(real);
    sand_app_free(app);
    assert_int_equal(unlink(p = printf_alloc("%s/app.yaml", bundle)), 0), free(p);
    assert_int_equal(symlink("../outside.py", p = printf_alloc("%s/app.yaml", bundle)), 0), free(p);
    assert_true(sand_app_load(bundle, NULL, &app, &d, &err) < 0);
    assert_null(app);
    assert_int_equal(d.len, 0);

    assert_int_equal(nftw(top, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    free(bundle);
}

static void test_load_dir(void **state)
{
    sand_app_t *app = NULL;
    sand_diags_t d;
    sand_diags_init(&d);
    sand_err err = {0};

    assert_int_equal(sand_app_load(BUNDLE, NULL, &app, &d, &err), 0);
    check_fixture(app);
    sand_app_free(app);

    assert_int_equal(sand_app_load(FIXTURES "/nowhere", NULL, &app, &d, &err), SAND_ENOTFOUND);
    assert_null(app);
    assert_non_null(strstr(err.msg, "no app.yaml"));
    assert_int_equal(d.len, 0);

    /* The example bundles of the repository: the pipeline is valid, every invalid one fails. */
    assert_int_equal(
        sand_app_load(SAND_SOURCE_DIR "/examples/image-pipeline", NULL, &app, &d, &err), 0);
    assert_string_equal(app->name, "image-pipeline");
    const sand_workflow_t *w = sand_app_workflow(app, "process");
    assert_non_null(w);
    assert_string_equal(w->start->name, "extract");
    assert_string_equal(w->result->name, "collect");
    assert_int_equal(sand_workflow_step(w, "collect")->n_preds, 2);
    assert_int_equal(sand_workflow_step(w, "transform")->n_next, 2);
    sand_app_free(app);
    static const struct {
        const char *dir, *want;
    } invalid[] = {
        {"bad-runtime",
         "app.yaml:8:14: grains.resize.runtime: unknown runtime 'rust' (expected python, java or "
         "c)\n"
         "app.yaml:10:3: grains.store: missing required key 'handler' (the java class, e.g. "
         "example.Store)\n"
         "app.yaml:13:5: grains.store: unknown key 'timout' (expected runtime, code, handler, "
         "timeout, memory, concurrency, jvm_options, description)\n"},
        {"unjoined-fan-out",
         "app.yaml:18:3: workflows.process: 2 terminal steps are reachable from start through "
         "next: 'thumbnail', 'store' (exactly one may be: join a fan-out before the end)\n"},
        {"code-escape",
         "app.yaml:6:11: grains.extract.code: path '../shared/extract.py' has a '..' component "
         "(code must stay inside the bundle)\n"
         "app.yaml:9:11: grains.store.code: absolute path '/usr/lib/sand/store.py' (code must be "
         "relative to the bundle)\n"},
    };
    for (size_t i = 0; i < SAND_ARRAY_LEN(invalid); i++) {
        char *dir = printf_alloc("%s/examples/invalid/%s", SAND_SOURCE_DIR, invalid[i].dir);
        sand_diags_release(&d);
        assert_int_equal(sand_app_load(dir, NULL, &app, &d, &err), SAND_EINVAL);
        assert_null(app);
        sand_bytes_t out;
        sand_bytes_init(&out, 1 << 16);
        assert_int_equal(sand_diags_format(&d, "app.yaml", &out), 0);
        assert_string_equal(out.data, invalid[i].want);
        sand_bytes_release(&out);
        free(dir);
    }
    sand_diags_release(&d);
}

static void test_describe_json(void **state)
{
    sand_app_t *app = NULL;
    int rc;
    char *got = load(cases[2].yaml, strlen(cases[2].yaml), NULL, &app, &rc);
    assert_int_equal(rc, 0);
    free(got);
    sand_bytes_t out;
    sand_bytes_init(&out, 1 << 20);
    assert_int_equal(sand_app_describe_json(app, &out), 0);
    assert_non_null(strstr(out.data, "\"app\":\"demo\""));
    assert_non_null(strstr(out.data, "{\"name\":\"a\",\"runtime\":\"python\",\"code\":\"a.py\","
                                     "\"handler\":\"handle\",\"timeout_ms\":60000,\"memory\":0,"
                                     "\"concurrency\":100,\"line\":3}"));
    assert_non_null(strstr(out.data, "\"start\":\"a\",\"result\":\"b\",\"timeout_ms\":120000"));
    assert_non_null(strstr(out.data,
                           "{\"name\":\"a\",\"grain\":\"a\",\"next\":[\"b\"],"
                           "\"preds\":[],\"join\":false,\"terminal\":false,"
                           "\"catch\":\"oops\",\"retry\":{\"max\":2,\"backoff_ms\":100}"));
    sand_bytes_release(&out);
    sand_app_free(app);
}

static void test_helpers(void **state)
{
    assert_string_equal(sand_runtime_name(SAND_RT_PYTHON), "python");
    assert_string_equal(sand_runtime_name(SAND_RT_JAVA), "java");
    assert_string_equal(sand_runtime_name(SAND_RT_C), "c");
    assert_null(sand_app_grain(NULL, "a"));
    assert_null(sand_app_workflow(NULL, "a"));
    assert_null(sand_workflow_step(NULL, "a"));
    sand_app_free(NULL);
    expect_text(NULL, 0, NULL,
                "app.yaml:1:1: empty document (expected a mapping with app and "
                "grains)\n");

    sand_diags_t d;
    sand_diags_init(&d);
    d.items = calloc(2, sizeof(*d.items));
    d.len = d.cap = 2;
    d.items[0] = (sand_diag_t){.line = 3, .col = 7};
    d.items[1] = (sand_diag_t){.line = 12, .col = 1};
    sand_strlcpy(d.items[0].msg, "first", sizeof(d.items[0].msg));
    sand_strlcpy(d.items[1].msg, "second", sizeof(d.items[1].msg));
    sand_bytes_t out;
    sand_bytes_init(&out, 1024);
    assert_int_equal(sand_diags_format(&d, "x/app.yaml", &out), 0);
    assert_string_equal(out.data, "x/app.yaml:3:7: first\nx/app.yaml:12:1: second\n");
    sand_bytes_release(&out);
    sand_diags_release(&d);
    assert_null(d.items);
    assert_int_equal(d.len, 0);
}

int main(void)
{
    size_t n = SAND_ARRAY_LEN(cases);
    struct CMUnitTest *tests = calloc(n + 9, sizeof(*tests));
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        tests[t].name = cases[i].name;
        tests[t].test_func = run_case;
        tests[t].initial_state = (void *)&cases[i];
        t++;
    }
    const struct CMUnitTest more[] = {
        cmocka_unit_test(test_size_limit),      cmocka_unit_test(test_alias_limit),
        cmocka_unit_test(test_billion_laughs),  cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_too_many_errors), cmocka_unit_test(test_symlink_escape),
        cmocka_unit_test(test_load_dir),        cmocka_unit_test(test_describe_json),
        cmocka_unit_test(test_helpers),
    };
    for (size_t i = 0; i < SAND_ARRAY_LEN(more); i++)
        tests[t++] = more[i];
    int rc = _cmocka_run_group_tests("workflow", tests, t, NULL, NULL);
    free(tests);
    return rc;
}
