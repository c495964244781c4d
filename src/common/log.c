/*
 * Levelled logging. The sink and the level are the only process-wide mutable state in sand
 * (STYLE.md); both are set at start-up before any thread exists.
 */
#include "sand/common.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void stderr_sink(sand_log_level level, const char *line, void *ud);

static sand_log_sink_cb g_sink = stderr_sink;
static void *g_sink_ud;
static sand_log_level g_level = SAND_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

static void stderr_sink(sand_log_level level, const char *line, void *ud)
{
    fprintf(stderr, "%s\n", line);
}

void sand_log_set_sink(sand_log_sink_cb sink, void *ud)
{
    g_sink = sink ? sink : stderr_sink;
    g_sink_ud = sink ? ud : NULL;
}

void sand_log_set_level(sand_log_level level)
{
    g_level = level;
}

sand_log_level sand_log_get_level(void)
{
    return g_level;
}

int sand_log_parse_level(const char *s, sand_log_level *out)
{
    for (size_t i = 0; i < SAND_ARRAY_LEN(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (sand_log_level)i;
            return 0;
        }
    }
    return SAND_EINVAL;
}

void sand_log(sand_log_level level, const char *component, const char *fmt, ...)
{
    if (level < g_level || level >= SAND_LOG_OFF)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], component);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    g_sink(level, line, g_sink_ud);
}
