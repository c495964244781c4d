/*
 * Clocks, literal parsers (durations, sizes, integers) and string helpers shared by the config
 * loader, the workflow loader and the runtimes.
 */
#include "sand/common.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t sand_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sand_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Splits "123abc" into the number and the suffix; the number must be non-empty and fit. */
static int split_number(const char *s, int64_t *num, const char **suffix)
{
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return SAND_EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(p, &end, 10);
    if (errno == ERANGE || v < 0)
        return SAND_EINVAL;
    *num = v;
    *suffix = end;
    return 0;
}

struct unit {
    const char *suffix;
    int64_t mult;
};

static int parse_with_units(const char *s, const struct unit *units, size_t n, int64_t *out)
{
    int64_t num;
    const char *suffix;
    if (!s || split_number(s, &num, &suffix) < 0)
        return SAND_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(suffix, units[i].suffix) == 0) {
            if (units[i].mult && num > INT64_MAX / units[i].mult)
                return SAND_EINVAL;
            *out = num * units[i].mult;
            return 0;
        }
    }
    return SAND_EINVAL;
}

int sand_parse_duration_ms(const char *s, int64_t *ms, sand_err *err)
{
    static const struct unit units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    if (parse_with_units(s, units, SAND_ARRAY_LEN(units), ms) < 0)
        return sand_err_set(err, SAND_EINVAL,
                            "invalid duration '%s' (expected e.g. 100ms, 30s, 2m, 1h)", s ? s : "");
    return 0;
}

int sand_parse_size(const char *s, int64_t *bytes, sand_err *err)
{
    static const struct unit units[] = {
        {"", 1},
        {"B", 1},
        {"K", 1000},
        {"M", 1000 * 1000},
        {"G", 1000 * 1000 * 1000},
        {"Ki", 1024},
        {"Mi", 1024 * 1024},
        {"Gi", 1024 * 1024 * 1024},
        {"KiB", 1024},
        {"MiB", 1024 * 1024},
        {"GiB", 1024 * 1024 * 1024},
        {"KB", 1000},
        {"MB", 1000 * 1000},
        {"GB", 1000 * 1000 * 1000},
    };
    if (parse_with_units(s, units, SAND_ARRAY_LEN(units), bytes) < 0)
        return sand_err_set(err, SAND_EINVAL, "invalid size '%s' (expected e.g. 4096, 256Mi, 1Gi)",
                            s ? s : "");
    return 0;
}

int sand_parse_int(const char *s, int64_t min, int64_t max, int64_t *out, sand_err *err)
{
    if (!s || !*s)
        return sand_err_set(err, SAND_EINVAL, "expected an integer");
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || errno == ERANGE)
        return sand_err_set(err, SAND_EINVAL, "invalid integer '%s'", s);
    if (v < min || v > max)
        return sand_err_set(err, SAND_EINVAL, "%lld is out of range [%lld, %lld]", v,
                            (long long)min, (long long)max);
    *out = v;
    return 0;
}

int sand_endpoint_parse(const char *url, sand_endpoint_t *out, sand_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!url || !*url)
        return sand_err_set(err, SAND_EINVAL, "endpoint '' is empty");
    if (strncmp(url, "unix:", 5) == 0) {
        const char *p = url + 5;
        while (p[0] == '/' && p[1] == '/')
            p++;
        if (*p != '/')
            return sand_err_set(err, SAND_EINVAL, "endpoint '%s' needs an absolute path", url);
        if (sand_strlcpy(out->path, p, sizeof(out->path)) >= sizeof(out->path))
            return sand_err_set(err, SAND_EINVAL, "endpoint '%s': socket path too long", url);
        out->unix_socket = true;
        return 0;
    }
    const char *hp = strncmp(url, "tcp://", 6) == 0 ? url + 6 : url;
    const char *colon = strrchr(hp, ':');
    size_t hl = colon ? (size_t)(colon - hp) : strlen(hp);
    int64_t port = 6379;
    if (hl == 0 || hl >= sizeof(out->host) ||
        (colon && sand_parse_int(colon + 1, 1, 65535, &port, NULL) < 0))
        return sand_err_set(err, SAND_EINVAL,
                            "endpoint '%s' is neither unix:/path nor tcp://host:port", url);
    memcpy(out->host, hp, hl);
    out->host[hl] = '\0';
    out->port = (int)port;
    return 0;
}

int sand_fmt(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0)
        return SAND_EINVAL;
    return (size_t)n >= size ? SAND_ETOOBIG : n;
}

size_t sand_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

char *sand_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

char *sand_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int sand_random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[64];
    if (n > sizeof(buf))
        return SAND_EINVAL;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return SAND_EIO;
        }
        got += (size_t)r;
    }
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * n] = '\0';
    return 0;
}
