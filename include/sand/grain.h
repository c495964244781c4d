/*
 * The C grain API (SPEC section 4): the only header a C grain includes. A grain is a function
 *     int handler(const sand_event *in, sand_context *ctx, sand_buf *out);
 * compiled into a shared object that sand-worker-c loads with dlopen() once, then calls in a
 * fresh forked grain instance per event. The functions below are exported by the worker
 * executable itself, so the shared object links against nothing. Every function runs on the
 * instance's only thread, inside the call to the handler; none may be used after it returns.
 */
#ifndef SAND_GRAIN_H
#define SAND_GRAIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The event: JSON text, not NUL-terminated in general (data[len] happens to be 0 today, but do
 * not rely on it). Owned by the runtime. */
typedef struct sand_event {
    const char *data;
    size_t len;
} sand_event;

typedef struct sand_context sand_context; /* opaque; valid during the handler call */
typedef struct sand_buf sand_buf;         /* opaque; the output, JSON text */

enum {
    SAND_SCOPE_LOCAL = 0,  /* the host's data layer: sand:{app}:dl:{key} */
    SAND_SCOPE_GLOBAL = 1, /* the global data layer: sand:{app}:dg:{key} */
};

/* Error codes returned by the functions below (negative; 0 is success). */
enum {
    SAND_GRAIN_OK = 0,
    SAND_GRAIN_EINVAL = -1,    /* bad argument: unknown step, invalid JSON, bad scope */
    SAND_GRAIN_ENOMEM = -2,    /* allocation failed */
    SAND_GRAIN_ETOOBIG = -3,   /* value over SAND_VALUE_MAX (default 64 MiB) or output over limit */
    SAND_GRAIN_ENOTFOUND = -4, /* sand_ctx_get: no such key */
    SAND_GRAIN_EIO = -5,       /* the data layer could not be reached */
};

/* Appends n bytes to the output. Returns 0, SAND_GRAIN_ENOMEM or SAND_GRAIN_ETOOBIG. The output
 * must be one JSON value when the handler returns 0 (an empty output counts as null). */
int sand_buf_append(sand_buf *out, const void *data, size_t n);

/* printf-style append to the output. Returns as sand_buf_append. */
int sand_buf_appendf(sand_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes one line to the app's log stream (kind "log"), tagged with grain, step and execution
 * id. Lines longer than 16 KiB are truncated. */
void sand_ctx_log(sand_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Stores len bytes (any binary content, len may be 0) under key in the given scope. Returns 0,
 * SAND_GRAIN_ETOOBIG (len over the value limit), SAND_GRAIN_EINVAL or SAND_GRAIN_EIO. */
int sand_ctx_put(sand_context *ctx, const char *key, const void *val, size_t len, int scope);

/* Reads the value stored under key. On success returns 0, *val is a malloc()'d buffer that the
 * caller frees with free() (always NUL-terminated after *len bytes, so text can be used
 * directly) and *len its length. Returns SAND_GRAIN_ENOTFOUND when the key is absent (*val =
 * NULL, *len = 0), or SAND_GRAIN_EINVAL / SAND_GRAIN_EIO / SAND_GRAIN_ENOMEM. */
int sand_ctx_get(sand_context *ctx, const char *key, void **val, size_t *len, int scope);

/* Deletes key. Returns 0 (also when it did not exist), SAND_GRAIN_EINVAL or SAND_GRAIN_EIO. */
int sand_ctx_delete(sand_context *ctx, const char *key, int scope);

/* Dynamic routing: sends json (len bytes, one JSON value) to step of the current workflow. The
 * calls made by one instance replace the step's static next. Returns 0, or SAND_GRAIN_EINVAL
 * when the step does not exist in the workflow (or there is no workflow) or json is invalid. */
int sand_ctx_next(sand_context *ctx, const char *step, const char *json, size_t len);

/* Sets the error message reported when the handler returns non-zero (type "Error"). */
void sand_ctx_error(sand_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Identity of the instance; strings owned by the runtime, valid during the handler call. */
const char *sand_ctx_app(const sand_context *ctx);
const char *sand_ctx_grain(const sand_context *ctx);
const char *sand_ctx_step(const sand_context *ctx);
const char *sand_ctx_workflow(const sand_context *ctx); /* "" for a direct grain invocation */
const char *sand_ctx_execution_id(const sand_context *ctx);
int sand_ctx_attempt(const sand_context *ctx); /* 1 on the first run, 2 on the first retry... */

/* Milliseconds left before the instance is killed (grain timeout or execution deadline). */
int64_t sand_ctx_remaining_ms(const sand_context *ctx);

#ifdef __cplusplus
}
#endif

#endif
