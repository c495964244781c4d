/* Test grain in C: echo, crash, fail, invalid output, data layer. */
#include <sand/grain.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static int has(const sand_event *in, const char *op)
{
    return strstr(in->data, op) != NULL;
}

static int dl(sand_context *ctx, size_t n, int scope)
{
    char *v = malloc(n + 1), *got = NULL;
    size_t len = 0;
    int ok;
    for (size_t i = 0; i < n; i++)
        v[i] = (char)((i * 7 + 3) % 256);
    ok = sand_ctx_put(ctx, "ckey", v, n, scope) == 0 &&
         sand_ctx_get(ctx, "ckey", (void **)&got, &len, scope) == 0 && len == n &&
         memcmp(got, v, n) == 0 && sand_ctx_delete(ctx, "ckey", scope) == 0;
    free(got);
    got = NULL;
    ok = ok && sand_ctx_get(ctx, "ckey", (void **)&got, &len, scope) == SAND_GRAIN_ENOTFOUND;
    free(v);
    return ok;
}

int ca_handle(const sand_event *in, sand_context *ctx, sand_buf *out)
{
    sand_ctx_log(ctx, "ca got %zu bytes", in->len);
    if (has(in, "\"segv\"")) {
        raise(SIGSEGV);
        return 0;
    }
    if (has(in, "\"fail\"")) {
        sand_ctx_error(ctx, "failed on purpose in %s", sand_ctx_step(ctx));
        return 1;
    }
    if (has(in, "\"garbage\""))
        return sand_buf_append(out, "{not json", 9);
    if (has(in, "\"dl\"")) {
        int ok = dl(ctx, 0, SAND_SCOPE_LOCAL) && dl(ctx, 1, SAND_SCOPE_LOCAL) &&
                 dl(ctx, 1 << 20, SAND_SCOPE_LOCAL) && dl(ctx, 1 << 20, SAND_SCOPE_GLOBAL);
        sand_ctx_put(ctx, "ckeep", "\0\1\2", 3, SAND_SCOPE_LOCAL);
        return sand_buf_appendf(out, "{\"dl\":%s}", ok ? "true" : "false");
    }
    sand_buf_append(out, "{\"echo\":", 8);
    sand_buf_append(out, in->data, in->len);
    return sand_buf_appendf(out, ",\"attempt\":%d}", sand_ctx_attempt(ctx));
}
