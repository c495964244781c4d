#include <sand/grain.h>

int resize_handle(const sand_event *in, sand_context *ctx, sand_buf *out)
{
    return sand_buf_append(out, in->data, in->len);
}
