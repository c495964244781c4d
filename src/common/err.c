/*
 * The error convention of STYLE.md: a caller-owned sand_err that leaf code fills and each layer
 * above wraps with its own context, so the final message reads outermost-first.
 */
#include "sand/common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* dst = a ": " b (or just a when b is empty), truncated to size. */
static void join(char *dst, size_t size, const char *a, const char *b)
{
    size_t n = sand_strlcpy(dst, a, size);
    if (!b[0] || n + 2 >= size)
        return;
    memcpy(dst + n, ": ", 3);
    sand_strlcpy(dst + n + 2, b, size - n - 2);
}

int sand_err_set(sand_err *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int sand_err_wrap(sand_err *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    char prefix[sizeof(err->msg)];
    char old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    join(err->msg, sizeof(err->msg), prefix, old);
    if (code != 0)
        err->code = code;
    return err->code;
}

int sand_err_errno(sand_err *err, int code, const char *fmt, ...)
{
    int saved = errno;
    if (!err)
        return code;
    char what[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    join(err->msg, sizeof(err->msg), what, strerror(saved));
    err->code = code;
    errno = saved;
    return code;
}

void sand_err_clear(sand_err *err)
{
    if (!err)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

const char *sand_err_name(int code)
{
    static const char *const names[] = {
        "OK",     "EINVAL",    "ENOMEM", "ETOOBIG", "ENOTFOUND", "EIO",
        "EEXIST", "ETIMEDOUT", "EBUS",   "EPERM",   "ECANCELED", "EBUSY",
    };
    int i = -code;
    if (i < 0 || (size_t)i >= SAND_ARRAY_LEN(names))
        return "EUNKNOWN";
    return names[i];
}
