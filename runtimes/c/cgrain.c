/*
 * The C runtime of the grain worker: loads the grain's shared object once with dlopen() (a .c
 * file is first compiled into a cached .so with the system compiler, only when the cache is
 * older than the source), looks up the handler symbol, and calls it in each forked instance
 * with the event, the context and an output buffer. The output must be one JSON value (checked
 * with jansson); a non-zero return fails the instance with type "Error" and the message given to
 * sand_ctx_error(). Runs on the worker's only thread.
 */
#include "sand/worker.h"

#include "../core/worker_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
extern const sand_worker_runtime_t sand_c_runtime;

typedef int (*grain_fn)(const sand_event *in, sand_context *ctx, sand_buf *out);

typedef struct c_state {
    void *dl;
    grain_fn fn;
} c_state_t;

/* Referenced from main.c so that the linker keeps every grain.h function in the executable. */
void *const sand_c_exports[] = {
    (void *)sand_buf_append,       (void *)sand_buf_appendf,
    (void *)sand_ctx_log,          (void *)sand_ctx_put,
    (void *)sand_ctx_get,          (void *)sand_ctx_delete,
    (void *)sand_ctx_next,         (void *)sand_ctx_error,
    (void *)sand_ctx_app,          (void *)sand_ctx_grain,
    (void *)sand_ctx_step,         (void *)sand_ctx_workflow,
    (void *)sand_ctx_execution_id, (void *)sand_ctx_attempt,
    (void *)sand_ctx_remaining_ms, NULL,
};

static int64_t mtime_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        return -1;
    return (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
}

/* The directory holding sand/grain.h: SAND_LIB_DIR/include when installed, else the source
 * tree's include/. */
static void include_dir(char *out, size_t n)
{
    const char *lib = getenv("SAND_LIB_DIR");
    if (lib && *lib) {
        snprintf(out, n, "%s/include/sand/grain.h", lib);
        if (access(out, R_OK) == 0) {
            snprintf(out, n, "%s/include", lib);
            return;
        }
    }
    snprintf(out, n, "%s", SAND_SOURCE_INCLUDE);
}

/* Picks the cache file for the compiled grain: <bundle>/.sand-cache/<grain>.so when the
 * bundle is writable, else $TMPDIR/sand-cache-<uid>/<app>-<grain>.so. */
static int cache_path(const sand_worker_info_t *info, char *out, size_t n, sand_err *err)
{
    snprintf(out, n, "%s/.sand-cache", info->bundle);
    if (mkdir(out, 0755) == 0 || errno == EEXIST) {
        if (access(out, W_OK) == 0) {
            snprintf(out, n, "%s/.sand-cache/%s.so", info->bundle, info->grain->name);
            return 0;
        }
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(out, n, "%s/sand-cache-%d", tmp && *tmp ? tmp : "/tmp", (int)getuid());
    if (mkdir(out, 0700) < 0 && errno != EEXIST)
        return sand_err_errno(err, SAND_EIO, "mkdir '%s'", out);
    snprintf(out, n, "%s/sand-cache-%d/%s-%s.so", tmp && *tmp ? tmp : "/tmp", (int)getuid(),
             info->app->name, info->grain->name);
    return 0;
}

/* Compiles src into so (through a temporary file renamed into place). */
static int compile(const char *src, const char *so, sand_err *err)
{
    char inc[4096], incflag[4200], tmp[4200];
    include_dir(inc, sizeof(inc));
    snprintf(incflag, sizeof(incflag), "-I%s", inc);
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", so, (int)getpid());
    char *argv[] = {"cc", "-O2", "-shared", "-fPIC", incflag, (char *)src, "-o", tmp, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "cc", NULL, NULL, argv, environ);
    if (rc != 0)
        return sand_err_set(err, SAND_EIO, "cannot run cc: %s", strerror(rc));
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return sand_err_errno(err, SAND_EIO, "waitpid cc");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        unlink(tmp);
        return sand_err_set(err, SAND_EINVAL, "compiling '%s' failed (see the worker's stderr)",
                            src);
    }
    if (rename(tmp, so) < 0) {
        unlink(tmp);
        return sand_err_errno(err, SAND_EIO, "rename '%s'", tmp);
    }
    return 0;
}

static int c_load(const sand_worker_info_t *info, void **state, char **detail, sand_err *err)
{
    char so[4096];
    const char *path = info->code_path;
    size_t pl = strlen(path);
    *state = NULL;
    *detail = NULL;
    if (pl > 2 && strcmp(path + pl - 2, ".c") == 0) {
        if (cache_path(info, so, sizeof(so), err) < 0)
            return err->code;
        int64_t src_m = mtime_of(path), so_m = mtime_of(so);
        if (src_m < 0)
            return sand_err_errno(err, SAND_ENOTFOUND, "code '%s'", path);
        if (so_m < src_m && compile(path, so, err) < 0)
            return err->code;
        path = so;
    }
    c_state_t *st = calloc(1, sizeof(*st));
    if (!st)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    *state = st;
    st->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!st->dl)
        return sand_err_set(err, SAND_EINVAL, "dlopen '%s': %s", path, dlerror());
    const char *sym =
        info->grain->handler && *info->grain->handler ? info->grain->handler : "handle";
    st->fn = (grain_fn)dlsym(st->dl, sym);
    if (!st->fn)
        return sand_err_set(err, SAND_ENOTFOUND, "symbol '%s' not found in '%s'", sym, path);
    return 0;
}

static void c_invoke(void *state, sand_context *ctx, const sand_event *ev)
{
    c_state_t *st = state;
    sand_buf out;
    sand_bytes_init(&out.b, SAND_WORKER_OUTPUT_MAX);
    sand_worker_ctx_started(ctx);
    int rc = st->fn(ev, ctx, &out);
    sand_worker_ctx_finished(ctx);
    if (rc != 0) {
        char msg[64];
        const char *m = sand_worker_ctx_error_message(ctx);
        if (!m) {
            snprintf(msg, sizeof(msg), "handler returned %d", rc);
            m = msg;
        }
        sand_worker_ctx_fail(ctx, "Error", m, NULL);
    } else if (out.b.len == 0) {
        sand_worker_ctx_output(ctx, "null", 4);
    } else {
        json_error_t jerr;
        json_t *v = json_loadb(out.b.data, out.b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (v) {
            json_decref(v);
            sand_worker_ctx_output(ctx, out.b.data, out.b.len);
        } else {
            sand_worker_ctx_fail(ctx, "Error", "handler output is not valid JSON", NULL);
        }
    }
    sand_bytes_release(&out.b);
}

/* In the spare, before its event: the output buffer's heap pages and jansson's parser (which
 * checks every output) take their copy-on-write and code faults here rather than between the
 * event's arrival and its outcome. */
static void c_instance_start(void *state)
{
    (void)state;
    sand_bytes_t b;
    sand_bytes_init(&b, SAND_WORKER_OUTPUT_MAX);
    static const char doc[] = "{\"warm\": [1, 2.5, \"x\", true, null]}";
    for (int i = 0; i < 64; i++)
        sand_bytes_append(&b, " ", 1);
    sand_bytes_append(&b, doc, sizeof(doc) - 1);
    json_error_t jerr;
    json_t *v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    json_decref(v);
    sand_bytes_release(&b);
}

static void c_unload(void *state)
{
    c_state_t *st = state;
    if (st->dl)
        dlclose(st->dl);
    free(st);
}

const sand_worker_runtime_t sand_c_runtime = {
    .name = "c",
    .load_error_type = "LoadError",
    .load = c_load,
    .instance_start = c_instance_start,
    .invoke = c_invoke,
    .unload = c_unload,
};
