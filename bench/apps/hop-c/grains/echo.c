/* Echoes its event: the smallest C grain, for the hop latency of the C runtime. */
#include <sand/grain.h>

int echo_handle(const sand_event *in, sand_context *ctx, sand_buf *out)
{
    return sand_buf_append(out, in->data, in->len);
}
