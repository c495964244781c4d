/*
 * The bounded byte buffer: every byte a peer controls is stored in one of these, so exceeding a
 * limit is an ordinary error and never an overflow.
 */
#include "sand/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sand_bytes_init(sand_bytes_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void sand_bytes_release(sand_bytes_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void sand_bytes_reset(sand_bytes_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int reserve(sand_bytes_t *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return SAND_ETOOBIG;
    size_t need = b->len + extra + 1; /* room for the NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return SAND_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int sand_bytes_append(sand_bytes_t *b, const void *p, size_t n)
{
    int rc = reserve(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int sand_bytes_appends(sand_bytes_t *b, const char *s)
{
    return sand_bytes_append(b, s, strlen(s));
}

int sand_bytes_vappendf(sand_bytes_t *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return SAND_EINVAL;
    int rc = reserve(b, (size_t)n);
    if (rc < 0)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int sand_bytes_appendf(sand_bytes_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sand_bytes_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int sand_bytes_append_json_str(sand_bytes_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = b->len;
    int rc = sand_bytes_append(b, "\"", 1);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            rc = sand_bytes_append(b, esc, 2);
        } else if (c == '\n') {
            rc = sand_bytes_append(b, "\\n", 2);
        } else if (c == '\r') {
            rc = sand_bytes_append(b, "\\r", 2);
        } else if (c == '\t') {
            rc = sand_bytes_append(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            rc = sand_bytes_append(b, esc, 6);
        } else {
            rc = sand_bytes_append(b, &s[i], 1);
        }
    }
    if (rc == 0)
        rc = sand_bytes_append(b, "\"", 1);
    if (rc < 0) {
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
    }
    return rc;
}

void sand_bytes_consume(sand_bytes_t *b, size_t n)
{
    if (n >= b->len) {
        sand_bytes_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *sand_bytes_steal(sand_bytes_t *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    if (!p)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
