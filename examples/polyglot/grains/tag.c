/* Step 3 (C): appends "c" to the path of shout's output. The event is compact JSON ending in
 * `]}` (the path array closes the object), so the grain splices `,"c"` in before that end. */
#include <sand/grain.h>
#include <string.h>

int tag_handle(const sand_event *in, sand_context *ctx, sand_buf *out)
{
    if (in->len < 2 || memcmp(in->data + in->len - 2, "]}", 2) != 0) {
        sand_ctx_error(ctx, "expected an object ending with the path array");
        return 1;
    }
    sand_ctx_log(ctx, "tag: %zu bytes from %s", in->len, sand_ctx_step(ctx));
    int rc = sand_buf_append(out, in->data, in->len - 2);
    if (rc == 0)
        rc = sand_buf_append(out, ",\"c\"]}", 6);
    return rc;
}
