/*
 * Text formatting for sandctl: tolerant JSON getters (the server's descriptions may lack fields),
 * times and sizes, padded tables, the execution summary, the per-step trace timeline, log lines
 * and error objects. Pure functions over parsed JSON, so they are unit-tested without a server.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *sand__cli_jstr(const json_t *obj, const char *key, const char *fallback)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : fallback;
}

int64_t sand__cli_jint(const json_t *obj, const char *key, int64_t fallback)
{
    const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_real(v))
        return (int64_t)json_real_value(v);
    return fallback;
}

void sand__cli_format_time(int64_t us, char *buf, size_t n)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    if (us <= 0 || !localtime_r(&secs, &tm)) {
        snprintf(buf, n, "-");
        return;
    }
    char day[32];
    strftime(day, sizeof(day), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03d", day, (int)((us % 1000000) / 1000));
}

void sand__cli_format_bytes(int64_t bytes, char *buf, size_t n)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) {
        snprintf(buf, n, "%" PRId64 " B", bytes);
        return;
    }
    double v = (double)bytes;
    size_t u = 0;
    v /= 1024.0;
    while (v >= 1024.0 && u + 1 < SAND_ARRAY_LEN(units)) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, n, "%.1f %s", v, units[u]);
}

/* ---- tables -------------------------------------------------------------------------------- */

void sand__cli_table_init(sand_cli_table_t *t, size_t ncols)
{
    t->ncols = ncols;
    sand_vec_init(&t->cells);
}

int sand__cli_table_add(sand_cli_table_t *t, ...)
{
    va_list ap;
    va_start(ap, t);
    int rc = 0;
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = va_arg(ap, const char *);
        char *copy = sand_strdup(s ? s : "-");
        if (!copy || sand_vec_push(&t->cells, copy) < 0) {
            free(copy);
            rc = SAND_ENOMEM;
        }
    }
    va_end(ap);
    return rc;
}

void sand__cli_table_print(const sand_cli_table_t *t, FILE *f)
{
    if (!t->ncols)
        return;
    size_t rows = t->cells.len / t->ncols;
    size_t *w = calloc(t->ncols, sizeof(size_t));
    if (!w)
        return;
    for (size_t r = 0; r < rows; r++)
        for (size_t col = 0; col < t->ncols; col++) {
            size_t len = strlen(t->cells.items[r * t->ncols + col]);
            if (len > w[col])
                w[col] = len;
        }
    for (size_t r = 0; r < rows; r++) {
        for (size_t col = 0; col < t->ncols; col++) {
            const char *s = t->cells.items[r * t->ncols + col];
            if (col + 1 == t->ncols)
                fprintf(f, "%s\n", s);
            else
                fprintf(f, "%-*s  ", (int)w[col], s);
        }
    }
    free(w);
}

void sand__cli_table_release(sand_cli_table_t *t)
{
    sand_vec_release(&t->cells, free);
}

/* ---- executions ---------------------------------------------------------------------------- */

int sand_cli_format_error(const json_t *error, sand_bytes_t *out)
{
    const char *step = sand__cli_jstr(error, "step", NULL);
    const char *type = sand__cli_jstr(error, "type", "Error");
    const char *msg = sand__cli_jstr(error, "message", "");
    int rc;
    if (step)
        rc = sand_bytes_appendf(out, "step '%s' failed: %s", step, type);
    else
        rc = sand_bytes_appendf(out, "failed: %s", type);
    if (rc == 0 && *msg)
        rc = sand_bytes_appendf(out, ": %s", msg);
    return rc;
}

/* Appends v as compact JSON, cut at max bytes with a note. */
static int append_json_cut(sand_bytes_t *out, const json_t *v, size_t max)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        return sand_bytes_appends(out, "-");
    size_t n = strlen(s);
    int rc;
    if (n <= max)
        rc = sand_bytes_append(out, s, n);
    else
        rc = sand_bytes_appendf(out, "%.*s... (%zu bytes; --json shows all)", (int)max, s, n);
    free(s);
    return rc;
}

int sand_cli_format_execution(const json_t *rec, sand_bytes_t *out)
{
    char when[64];
    int64_t started = sand__cli_jint(rec, "started_us", 0);
    int64_t finished = sand__cli_jint(rec, "finished_us", 0);
    const json_t *steps = json_object_get(rec, "steps");
    size_t nsteps = json_is_array(steps) ? json_array_size(steps) : 0;
    size_t retried = 0;
    for (size_t i = 0; i < nsteps; i++)
        if (sand__cli_jint(json_array_get(steps, i), "attempt", 1) > 1)
            retried++;

    sand__cli_format_time(started, when, sizeof(when));
    int rc = sand_bytes_appendf(
        out,
        "execution  %s\napp        %s\nworkflow   %s\nstatus     %s\n"
        "started    %s\n",
        sand__cli_jstr(rec, "execution_id", "-"), sand__cli_jstr(rec, "app", "-"),
        sand__cli_jstr(rec, "workflow", "-"), sand__cli_jstr(rec, "status", "-"), when);
    if (rc == 0 && started > 0 && finished >= started)
        rc = sand_bytes_appendf(out, "duration   %.1f ms\n", (double)(finished - started) / 1e3);
    if (rc == 0)
        rc = sand_bytes_appendf(out, "steps      %zu", nsteps);
    if (rc == 0 && retried)
        rc = sand_bytes_appendf(out, " (%zu retries)", retried);
    if (rc == 0)
        rc = sand_bytes_appends(out, "\n");
    const json_t *input = json_object_get(rec, "input");
    if (rc == 0 && input && !json_is_null(input)) {
        rc = sand_bytes_appends(out, "input      ");
        if (rc == 0)
            rc = append_json_cut(out, input, 400);
        if (rc == 0)
            rc = sand_bytes_appends(out, "\n");
    }
    const json_t *output = json_object_get(rec, "output");
    if (rc == 0 && output && !json_is_null(output)) {
        rc = sand_bytes_appends(out, "output     ");
        if (rc == 0)
            rc = append_json_cut(out, output, 400);
        if (rc == 0)
            rc = sand_bytes_appends(out, "\n");
    }
    const json_t *error = json_object_get(rec, "error");
    if (rc == 0 && json_is_object(error)) {
        rc = sand_bytes_appends(out, "error      ");
        if (rc == 0)
            rc = sand_cli_format_error(error, out);
        if (rc == 0)
            rc = sand_bytes_appends(out, "\n");
    }
    return rc;
}

typedef struct trace_row {
    const json_t *step;
    int64_t key; /* sort key: queued, else started */
    size_t index;
} trace_row;

static int cmp_rows(const void *a, const void *b)
{
    const trace_row *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

static void ms_cell(char *buf, size_t n, int64_t from, int64_t to)
{
    if (from > 0 && to >= from)
        snprintf(buf, n, "%.1f", (double)(to - from) / 1e3);
    else
        snprintf(buf, n, "-");
}

int sand_cli_format_trace(const json_t *rec, int bar_width, sand_bytes_t *out)
{
    const json_t *steps = json_object_get(rec, "steps");
    size_t n = json_is_array(steps) ? json_array_size(steps) : 0;
    if (n == 0)
        return sand_bytes_appends(out, "(no steps recorded)\n");
    if (bar_width < 10)
        bar_width = 10;
    if (bar_width > 200)
        bar_width = 200;

    trace_row *rows = calloc(n, sizeof(*rows));
    if (!rows)
        return SAND_ENOMEM;
    /* The span of the bars: from the execution start (or the first queued step) to its end (or
     * the last finished step). */
    int64_t t0 = sand__cli_jint(rec, "started_us", 0), t1 = sand__cli_jint(rec, "finished_us", 0);
    int64_t first = INT64_MAX, last = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_array_get(steps, i);
        int64_t q = sand__cli_jint(s, "queued_us", 0), st = sand__cli_jint(s, "started_us", 0),
                f = sand__cli_jint(s, "finished_us", 0);
        rows[i] = (trace_row){.step = s, .key = q > 0 ? q : st, .index = i};
        int64_t lo = q > 0 ? q : st;
        if (lo > 0 && lo < first)
            first = lo;
        int64_t hi = f > 0 ? f : st > 0 ? st : q;
        if (hi > last)
            last = hi;
    }
    qsort(rows, n, sizeof(*rows), cmp_rows);
    if (t0 <= 0 || (first != INT64_MAX && first < t0))
        t0 = first != INT64_MAX ? first : 0;
    if (t1 < last)
        t1 = last;
    double span = t1 > t0 ? (double)(t1 - t0) : 1.0;

    sand_cli_table_t t;
    sand__cli_table_init(&t, 9);
    int rc = sand__cli_table_add(&t, "STEP", "GRAIN", "ATTEMPT", "STATUS", "WAIT_MS", "RUN_MS",
                                 "OFFSET_MS", "PID", "TIMELINE");
    char *bar = malloc((size_t)bar_width + 3);
    if (!bar)
        rc = SAND_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const json_t *s = rows[i].step;
        int64_t q = sand__cli_jint(s, "queued_us", 0), st = sand__cli_jint(s, "started_us", 0),
                f = sand__cli_jint(s, "finished_us", 0), pid = sand__cli_jint(s, "pid", 0);
        char attempt[24], wait[32], run[32], off[32], pidbuf[24];
        snprintf(attempt, sizeof(attempt), "%" PRId64, sand__cli_jint(s, "attempt", 1));
        ms_cell(wait, sizeof(wait), q, st);
        ms_cell(run, sizeof(run), st, f);
        ms_cell(off, sizeof(off), t0, st);
        if (pid > 0)
            snprintf(pidbuf, sizeof(pidbuf), "%" PRId64, pid);
        else
            snprintf(pidbuf, sizeof(pidbuf), "-");

        /* '|' + bar_width cells + '|'; a cell covers span/bar_width microseconds */
        bar[0] = '|';
        memset(bar + 1, ' ', (size_t)bar_width);
        bar[bar_width + 1] = '|';
        bar[bar_width + 2] = '\0';
        int qa = q > 0 ? (int)((double)(q - t0) / span * bar_width) : -1;
        int sa = st > 0 ? (int)((double)(st - t0) / span * bar_width) : -1;
        int fa = f > 0 ? (int)((double)(f - t0) / span * bar_width) : bar_width;
        if (qa >= 0 && sa >= 0)
            for (int k = qa; k < sa && k < bar_width; k++)
                bar[1 + k] = '.';
        if (sa >= 0) {
            if (sa >= bar_width)
                sa = bar_width - 1;
            if (fa <= sa)
                fa = sa + 1;
            for (int k = sa; k < fa && k < bar_width; k++)
                bar[1 + k] = '#';
        }
        rc = sand__cli_table_add(&t, sand__cli_jstr(s, "step", "-"),
                                 sand__cli_jstr(s, "grain", "-"), attempt,
                                 sand__cli_jstr(s, "status", "-"), wait, run, off, pidbuf, bar);
    }
    if (rc == 0) {
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        if (!mem) {
            rc = SAND_ENOMEM;
        } else {
            sand__cli_table_print(&t, mem);
            fclose(mem);
            rc = sand_bytes_append(out, text, len);
            if (rc == 0)
                rc =
                    sand_bytes_appendf(out, "total %.1f ms; '.' queued, '#' running\n", span / 1e3);
            free(text);
        }
    }
    free(bar);
    free(rows);
    sand__cli_table_release(&t);
    return rc;
}

int sand_cli_format_log_line(const json_t *line, sand_bytes_t *out)
{
    char when[64];
    sand__cli_format_time(sand__cli_jint(line, "time_us", 0), when, sizeof(when));
    const char *msg = sand__cli_jstr(line, "message", "");
    size_t mlen = strlen(msg);
    while (mlen && (msg[mlen - 1] == '\n' || msg[mlen - 1] == '\r'))
        mlen--;
    const char *exec = sand__cli_jstr(line, "execution_id", NULL);
    return sand_bytes_appendf(out, "%s %s [%s] %.*s", when, sand__cli_jstr(line, "grain", "-"),
                              exec && *exec ? exec : "-", (int)mlen, msg);
}
