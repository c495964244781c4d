/*
 * Validates the YAML tree of an app.yaml against SPEC section 3 and builds the immutable model
 * (grains, workflows, steps with next/preds/catch/retry, the result step). Validation keeps
 * going after an error wherever the rest still makes sense, so that one deploy reports every
 * problem; each diagnostic names the line and column of the offending value (or of the key
 * whose value is missing) and the field path ("grains.resize.runtime: ..."). The graph rules
 * (reachability, one result step, cycles with a way out, no catch into a join) run per workflow
 * only once all of its names resolved, so a typo yields one error instead of a cascade.
 */
#define _GNU_SOURCE /* asprintf */
#include "sand/workflow.h"

#include "workflow_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_MAX_YAML_BYTES   (1024 * 1024)
#define DEFAULT_MAX_ALIASES      1000
#define DEFAULT_MAX_DEPTH        64
#define MAX_DEPTH_CAP            1024
#define GRAIN_TIMEOUT_DEFAULT_MS 60000
#define GRAIN_TIMEOUT_MAX_MS     (3600 * 1000)
#define GRAIN_MEMORY_MIN         (1024 * 1024)
#define CONCURRENCY_DEFAULT      100
#define CONCURRENCY_MAX          10000
#define RETRY_MAX                10
#define RETRY_BACKOFF_MAX_MS     (3600 * 1000)

/* Source positions of one step's fields, kept while building so that graph errors found after
 * all steps exist can still point at the right line. */
struct step_src {
    const sand__ynode *key;
    const sand__ynode *catch_node;
};

struct loader {
    sand_diags_t *diags;
    char *root_real; /* realpath of the bundle dir; NULL skips the file checks */
    sand_app_t *app;
    sand_map_t grains; /* name -> sand_grain_t * (borrowed from app) */
    char path[512];
    size_t path_len;
    bool nomem;
};

/* ---- diagnostics ------------------------------------------------------------------------- */

void sand_diags_init(sand_diags_t *d)
{
    d->items = NULL;
    d->len = d->cap = 0;
}

void sand_diags_release(sand_diags_t *d)
{
    free(d->items);
    sand_diags_init(d);
}

int sand_diags_format(const sand_diags_t *d, const char *file, sand_bytes_t *out)
{
    for (size_t i = 0; i < d->len; i++) {
        int rc = sand_bytes_appendf(out, "%s:%d:%d: %s\n", file, d->items[i].line, d->items[i].col,
                                    d->items[i].msg);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void diag_v(struct loader *L, int line, int col, const char *fmt, va_list ap)
{
    char msg[sizeof(((sand_diag_t *)0)->msg)];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    int rc = L->path_len ? sand__diag_add(L->diags, line, col, "%s: %s", L->path, msg)
                         : sand__diag_add(L->diags, line, col, "%s", msg);
    if (rc < 0)
        L->nomem = true;
}

/* Reports a problem at node n (its own position: for an alias, where the alias is used). */
static void SAND_PRINTF(3, 4) diag(struct loader *L, const sand__ynode *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_v(L, n ? n->line : 1, n ? n->col : 1, fmt, ap);
    va_end(ap);
}

/* Path segments are truncated so that a hostile key cannot crowd the message out. */
static size_t path_push(struct loader *L, const char *seg)
{
    size_t old = L->path_len;
    int n = snprintf(L->path + old, sizeof(L->path) - old, "%s%.64s", old ? "." : "", seg);
    if (n > 0)
        L->path_len = old + (size_t)n < sizeof(L->path) ? old + (size_t)n : sizeof(L->path) - 1;
    return old;
}

static size_t path_push_index(struct loader *L, size_t i)
{
    size_t old = L->path_len;
    int n = snprintf(L->path + old, sizeof(L->path) - old, "[%zu]", i);
    if (n > 0)
        L->path_len = old + (size_t)n < sizeof(L->path) ? old + (size_t)n : sizeof(L->path) - 1;
    return old;
}

static void path_pop(struct loader *L, size_t old)
{
    L->path_len = old;
    L->path[old] = '\0';
}

/* ---- node helpers ------------------------------------------------------------------------ */

static const char *kind_name(const sand__ynode *n)
{
    n = sand__ynode_deref(n);
    if (n->kind == SAND__Y_SEQ)
        return "a sequence";
    if (n->kind == SAND__Y_MAP)
        return "a mapping";
    switch (n->stype) {
    case SAND__YS_NULL:
        return "null";
    case SAND__YS_BOOL:
        return "a boolean";
    case SAND__YS_INT:
        return "an integer";
    case SAND__YS_FLOAT:
        return "a number";
    default:
        return "a string";
    }
}

static bool is_null(const sand__ynode *n)
{
    n = sand__ynode_deref(n);
    return n->kind == SAND__Y_SCALAR && n->stype == SAND__YS_NULL;
}

/* Text of a string scalar, or NULL after a diagnostic "expected WHAT, got ...". */
static const char *want_str(struct loader *L, const sand__ynode *v, const char *what)
{
    const sand__ynode *r = sand__ynode_deref(v);
    if (r->kind != SAND__Y_SCALAR || r->stype != SAND__YS_STR) {
        diag(L, v, "expected %s, got %s", what, kind_name(v));
        return NULL;
    }
    if (strlen(r->text) != r->len) {
        diag(L, v, "value contains a NUL character");
        return NULL;
    }
    return r->text;
}

/* Text of any scalar (descriptions accept numbers too), or NULL after a diagnostic. */
static const char *want_scalar(struct loader *L, const sand__ynode *v, const char *what)
{
    const sand__ynode *r = sand__ynode_deref(v);
    if (r->kind != SAND__Y_SCALAR) {
        diag(L, v, "expected %s, got %s", what, kind_name(v));
        return NULL;
    }
    return r->text;
}

static const sand__ynode *map_get(const sand__ynode *map, const char *key,
                                  const sand__ynode **keynode)
{
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const sand__ynode *k = sand__ynode_deref(map->items[i]);
        if (k->kind == SAND__Y_SCALAR && strcmp(k->text, key) == 0) {
            if (keynode)
                *keynode = map->items[i];
            return map->items[i + 1];
        }
    }
    return NULL;
}

static void list_keys(char *buf, size_t size, const char *const *keys, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < size; i++) {
        int w = snprintf(buf + off, size - off, "%s%s", i ? ", " : "", keys[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

/* Checks the keys of a mapping: each must be a string; duplicates are reported with the line of
 * the first; with allowed != NULL, keys outside the list are reported. noun names what a key is
 * ("key", "grain", "step", "workflow"). */
static void check_keys(struct loader *L, const sand__ynode *map, const char *const *allowed,
                       size_t n_allowed, const char *noun)
{
    sand_map_t seen;
    sand_map_init(&seen);
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const sand__ynode *kn = map->items[i];
        const sand__ynode *k = sand__ynode_deref(kn);
        if (k->kind != SAND__Y_SCALAR || k->stype != SAND__YS_STR || strlen(k->text) != k->len) {
            diag(L, kn, "%s name must be a string, got %s", noun, kind_name(kn));
            continue;
        }
        const sand__ynode *first = sand_map_get(&seen, k->text);
        if (first) {
            diag(L, kn, "duplicate %s '%.64s' (first defined at line %d)", noun, k->text,
                 first->line);
            continue;
        }
        if (sand_map_set(&seen, k->text, (void *)kn, NULL) < 0)
            L->nomem = true;
        if (!allowed)
            continue;
        bool ok = false;
        for (size_t j = 0; j < n_allowed && !ok; j++)
            ok = strcmp(k->text, allowed[j]) == 0;
        if (!ok) {
            char keys[160];
            list_keys(keys, sizeof(keys), allowed, n_allowed);
            diag(L, kn, "unknown key '%.64s' (expected %s)", k->text, keys);
        }
    }
    sand_map_release(&seen, NULL);
}

/* True when the key at items[i] is a string and the first of its name (duplicates and non-string
 * keys were reported by check_keys and are skipped by the builders). */
static bool key_usable(const sand__ynode *map, size_t i, sand_map_t *seen)
{
    const sand__ynode *k = sand__ynode_deref(map->items[i]);
    if (k->kind != SAND__Y_SCALAR || k->stype != SAND__YS_STR || strlen(k->text) != k->len)
        return false;
    return sand_map_get(seen, k->text) == NULL;
}

static bool name_ok(const char *s, bool app_name)
{
    size_t len = strlen(s);
    if (len == 0 || len >= SAND_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!app_name)
            ok = ok || c == '_';
        if (i > 0)
            ok = ok || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static bool ident_ok(const char *s, bool dotted)
{
    bool start = true;
    if (!*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (dotted && c == '$');
        if (dotted && c == '.') {
            if (start)
                return false;
            start = true;
            continue;
        }
        if (!(alpha || (!start && c >= '0' && c <= '9')))
            return false;
        start = false;
    }
    return !start;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

/* ---- value parsers ----------------------------------------------------------------------- */

static bool want_duration(struct loader *L, const sand__ynode *v, int64_t *ms)
{
    const sand__ynode *r = sand__ynode_deref(v);
    if (r->kind != SAND__Y_SCALAR || (r->stype != SAND__YS_STR && r->stype != SAND__YS_INT)) {
        diag(L, v, "expected a duration (e.g. 100ms, 30s, 2m), got %s", kind_name(v));
        return false;
    }
    sand_err e = {0};
    if (strlen(r->text) != r->len || sand_parse_duration_ms(r->text, ms, &e) < 0) {
        diag(L, v, "invalid duration '%.64s' (expected e.g. 100ms, 30s, 2m, 1h)", r->text);
        return false;
    }
    return true;
}

static bool want_int(struct loader *L, const sand__ynode *v, int64_t min, int64_t max, int64_t *out)
{
    const sand__ynode *r = sand__ynode_deref(v);
    if (r->kind != SAND__Y_SCALAR || r->stype != SAND__YS_INT) {
        diag(L, v, "expected an integer, got %s", kind_name(v));
        return false;
    }
    sand_err e = {0};
    if (sand_parse_int(r->text, min, max, out, &e) < 0) {
        diag(L, v, "%s", e.msg);
        return false;
    }
    return true;
}

/* ---- code paths -------------------------------------------------------------------------- */

/* Normalises a bundle-relative path ("./a//b/" -> "a/b", "." for the bundle root). Returns a
 * malloc'd string, or NULL after a diagnostic (absolute path, '..' component). */
static char *code_normalise(struct loader *L, const sand__ynode *v, const char *s)
{
    if (!*s) {
        diag(L, v, "empty path");
        return NULL;
    }
    if (s[0] == '/') {
        diag(L, v, "absolute path '%.128s' (code must be relative to the bundle)", s);
        return NULL;
    }
    size_t len = strlen(s);
    char *out = malloc(len + 2);
    if (!out) {
        L->nomem = true;
        return NULL;
    }
    size_t o = 0;
    for (const char *p = s; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            diag(L, v, "path '%.128s' has a '..' component (code must stay inside the bundle)", s);
            free(out);
            return NULL;
        }
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    if (o == 0)
        out[o++] = '.';
    out[o] = '\0';
    return out;
}

static bool inside_root(const char *root, const char *real)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return true;
    return strncmp(real, root, n) == 0 && (real[n] == '/' || real[n] == '\0');
}

/* Resolves rel inside the bundle. Returns the realpath (malloc'd) or NULL after a diagnostic. */
static char *resolve_in_bundle(struct loader *L, const sand__ynode *v, const char *rel,
                               const char *shown)
{
    char *full = NULL;
    if (asprintf(&full, "%s/%s", L->root_real, rel) < 0) {
        L->nomem = true;
        return NULL;
    }
    char *real = realpath(full, NULL);
    free(full);
    if (!real) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            diag(L, v, "'%.128s' does not exist in the bundle", shown);
        else
            diag(L, v, "cannot resolve '%.128s': %s", shown, strerror(errno));
        return NULL;
    }
    if (!inside_root(L->root_real, real)) {
        diag(L, v, "'%.128s' resolves outside the bundle (through a symlink)", shown);
        free(real);
        return NULL;
    }
    return real;
}

/* Checks that the code of grain g (runtime known) names the right kind of file. */
static void check_code_kind(struct loader *L, const sand__ynode *v, sand_grain_t *g)
{
    const char *c = g->code;
    bool is_dir = false, is_file = false;
    if (L->root_real) {
        char *real = resolve_in_bundle(L, v, c, c);
        if (!real)
            return;
        struct stat st;
        if (stat(real, &st) == 0) {
            is_dir = S_ISDIR(st.st_mode);
            is_file = S_ISREG(st.st_mode);
        }
        free(real);
        if (!is_dir && !is_file) {
            diag(L, v, "'%.128s' is not a regular file or a directory", c);
            return;
        }
    }
    bool known = L->root_real != NULL;
    switch (g->runtime) {
    case SAND_RT_PYTHON:
        if (is_file && !ends_with(c, ".py")) {
            diag(L, v, "'%.128s' is not a .py file or a directory with main.py", c);
        } else if (is_dir) {
            char *main_py = NULL;
            if (asprintf(&main_py, "%s/main.py", c) < 0) {
                L->nomem = true;
                return;
            }
            char *full = NULL, *real = NULL;
            if (asprintf(&full, "%s/%s", L->root_real, main_py) >= 0)
                real = realpath(full, NULL);
            struct stat st;
            if (!real || stat(real, &st) != 0 || !S_ISREG(st.st_mode))
                diag(L, v,
                     "directory '%.128s' has no main.py (python code is a .py file or a "
                     "directory with main.py)",
                     c);
            else if (!inside_root(L->root_real, real))
                diag(L, v, "'%.128s' resolves outside the bundle (through a symlink)", main_py);
            free(real);
            free(full);
            free(main_py);
        }
        break;
    case SAND_RT_JAVA:
        if (is_file && !ends_with(c, ".jar"))
            diag(L, v, "'%.128s' is not a .jar file or a directory", c);
        break;
    case SAND_RT_C:
        if ((known && !is_file) || !(ends_with(c, ".so") || ends_with(c, ".c")))
            diag(L, v, "'%.128s' is not a .so or .c file", c);
        break;
    }
}

/* ---- grains ------------------------------------------------------------------------------ */

static const char *const grain_keys[] = {"runtime", "code",        "handler",     "timeout",
                                         "memory",  "concurrency", "jvm_options", "description"};

static sand_grain_t *grain_new(const char *name, int line)
{
    sand_grain_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    sand_strlcpy(g->name, name, sizeof(g->name));
    g->timeout_ms = GRAIN_TIMEOUT_DEFAULT_MS;
    g->concurrency = CONCURRENCY_DEFAULT;
    g->line = line;
    return g;
}

static void grain_free(void *p)
{
    sand_grain_t *g = p;
    if (!g)
        return;
    free(g->code);
    free(g->handler);
    free(g->jvm_options);
    free(g);
}

static bool parse_runtime(struct loader *L, const sand__ynode *v, sand_runtime *rt)
{
    static const struct {
        const char *name;
        sand_runtime rt;
    } runtimes[] = {{"python", SAND_RT_PYTHON}, {"java", SAND_RT_JAVA}, {"c", SAND_RT_C}};
    const char *s = want_str(L, v, "a runtime (python, java or c)");
    if (!s)
        return false;
    for (size_t i = 0; i < SAND_ARRAY_LEN(runtimes); i++) {
        if (strcmp(s, runtimes[i].name) == 0) {
            *rt = runtimes[i].rt;
            return true;
        }
    }
    diag(L, v, "unknown runtime '%.64s' (expected python, java or c)", s);
    return false;
}

static void parse_handler(struct loader *L, const sand__ynode *kn, const sand__ynode *v,
                          sand_grain_t *g, bool rt_ok)
{
    if (!v) {
        if (rt_ok && g->runtime == SAND_RT_JAVA) {
            diag(L, kn, "missing required key 'handler' (the java class, e.g. example.Store)");
            return;
        }
        if (!(g->handler = sand_strdup("handle")))
            L->nomem = true;
        return;
    }
    size_t old = path_push(L, "handler");
    const char *s = want_str(L, v, "a string");
    if (s && rt_ok) {
        if (g->runtime == SAND_RT_JAVA && !ident_ok(s, true))
            diag(L, v, "invalid java class name '%.64s' (expected e.g. example.Store)", s);
        else if (g->runtime == SAND_RT_PYTHON && !ident_ok(s, false))
            diag(L, v, "invalid python function name '%.64s'", s);
        else if (g->runtime == SAND_RT_C && !ident_ok(s, false))
            diag(L, v, "invalid C symbol name '%.64s'", s);
        else if (!(g->handler = sand_strdup(s)))
            L->nomem = true;
    }
    path_pop(L, old);
}

static void parse_grain_fields(struct loader *L, const sand__ynode *kn, const sand__ynode *map,
                               sand_grain_t *g)
{
    check_keys(L, map, grain_keys, SAND_ARRAY_LEN(grain_keys), "key");
    const sand__ynode *v;
    size_t old;
    bool rt_ok = false;

    if (!(v = map_get(map, "runtime", NULL))) {
        diag(L, kn, "missing required key 'runtime' (python, java or c)");
    } else {
        old = path_push(L, "runtime");
        rt_ok = parse_runtime(L, v, &g->runtime);
        path_pop(L, old);
    }

    if (!(v = map_get(map, "code", NULL))) {
        diag(L, kn, "missing required key 'code' (a file or directory of the bundle)");
    } else {
        old = path_push(L, "code");
        const char *s = want_str(L, v, "a path");
        if (s && (g->code = code_normalise(L, v, s)) && rt_ok)
            check_code_kind(L, v, g);
        path_pop(L, old);
    }

    parse_handler(L, kn, map_get(map, "handler", NULL), g, rt_ok);

    if ((v = map_get(map, "timeout", NULL))) {
        old = path_push(L, "timeout");
        int64_t ms;
        if (want_duration(L, v, &ms)) {
            if (ms <= 0 || ms > GRAIN_TIMEOUT_MAX_MS)
                diag(L, v, "timeout must be more than 0 and at most 1h (got '%.64s')",
                     sand__ynode_deref(v)->text);
            else
                g->timeout_ms = ms;
        }
        path_pop(L, old);
    }

    if ((v = map_get(map, "memory", NULL))) {
        old = path_push(L, "memory");
        const sand__ynode *r = sand__ynode_deref(v);
        int64_t bytes;
        sand_err e = {0};
        if (r->kind != SAND__Y_SCALAR || (r->stype != SAND__YS_STR && r->stype != SAND__YS_INT))
            diag(L, v, "expected a size (e.g. 256Mi), got %s", kind_name(v));
        else if (strlen(r->text) != r->len || sand_parse_size(r->text, &bytes, &e) < 0)
            diag(L, v, "invalid size '%.64s' (expected e.g. 64Mi, 1Gi)", r->text);
        else if (bytes < GRAIN_MEMORY_MIN)
            diag(L, v, "memory '%.64s' is below the minimum of 1Mi", r->text);
        else
            g->memory = bytes;
        path_pop(L, old);
    }

    if ((v = map_get(map, "concurrency", NULL))) {
        old = path_push(L, "concurrency");
        want_int(L, v, 1, CONCURRENCY_MAX, &g->concurrency);
        path_pop(L, old);
    }

    if ((v = map_get(map, "jvm_options", NULL))) {
        old = path_push(L, "jvm_options");
        const char *s = want_str(L, v, "a string");
        if (s && rt_ok && g->runtime != SAND_RT_JAVA)
            diag(L, v, "only java grains take jvm_options (this one is %s)",
                 sand_runtime_name(g->runtime));
        else if (s && !(g->jvm_options = sand_strdup(s)))
            L->nomem = true;
        path_pop(L, old);
    }

    if ((v = map_get(map, "description", NULL))) {
        old = path_push(L, "description");
        want_scalar(L, v, "a string");
        path_pop(L, old);
    }
}

static void parse_grains(struct loader *L, const sand__ynode *v)
{
    size_t old = path_push(L, "grains");
    const sand__ynode *map = sand__ynode_deref(v);
    if (map->kind != SAND__Y_MAP) {
        diag(L, v, "expected a mapping of grain names to grains, got %s", kind_name(v));
        goto out;
    }
    if (map->n == 0) {
        diag(L, v, "no grains (an app needs at least one)");
        goto out;
    }
    check_keys(L, map, NULL, 0, "grain");
    size_t n = map->n / 2;
    if (!(L->app->grains = calloc(n, sizeof(*L->app->grains)))) {
        L->nomem = true;
        goto out;
    }
    for (size_t i = 0; i < map->n; i += 2) {
        if (!key_usable(map, i, &L->grains))
            continue;
        const sand__ynode *gk = map->items[i], *gv = map->items[i + 1];
        const char *name = sand__ynode_deref(gk)->text;
        if (!name_ok(name, false))
            diag(L, gk, "invalid grain name '%.64s' (expected [a-z0-9_][a-z0-9_-]{0,62})", name);
        sand_grain_t *g = grain_new(name, gk->line);
        if (!g || sand_map_set(&L->grains, name, g, NULL) < 0) {
            grain_free(g);
            L->nomem = true;
            goto out;
        }
        L->app->grains[L->app->n_grains++] = g;
        size_t o2 = path_push(L, name);
        const sand__ynode *gm = sand__ynode_deref(gv);
        if (gm->kind != SAND__Y_MAP)
            diag(L, is_null(gv) ? gk : gv, "expected a mapping with runtime and code, got %s",
                 kind_name(gv));
        else
            parse_grain_fields(L, gk, gm, g);
        path_pop(L, o2);
    }
out:
    path_pop(L, old);
}

/* ---- workflows --------------------------------------------------------------------------- */

static const char *const workflow_keys[] = {"start", "steps", "timeout", "description"};
static const char *const step_keys[] = {"grain", "next", "catch", "retry", "description"};
static const char *const retry_keys[] = {"max", "backoff"};

struct wf_build {
    sand_workflow_t *wf;
    sand_map_t steps; /* name -> sand_step_t * */
    struct step_src *src;
};

static void step_free(sand_step_t *s)
{
    if (!s)
        return;
    free(s->next);
    free(s->preds);
    free(s);
}

static void workflow_free(sand_workflow_t *wf)
{
    if (!wf)
        return;
    for (size_t i = 0; i < wf->n_steps; i++)
        step_free(wf->steps[i]);
    free(wf->steps);
    free(wf);
}

/* Resolves a step name given as value v (inside the current path). Returns NULL after a
 * diagnostic. */
static sand_step_t *resolve_step(struct loader *L, struct wf_build *B, const sand__ynode *v)
{
    const char *s = want_str(L, v, "a step name");
    if (!s)
        return NULL;
    sand_step_t *st = sand_map_get(&B->steps, s);
    if (!st)
        diag(L, v, "unknown step '%.64s'", s);
    return st;
}

static void parse_next(struct loader *L, struct wf_build *B, sand_step_t *st, const sand__ynode *v)
{
    const sand__ynode *r = sand__ynode_deref(v);
    if (r->kind == SAND__Y_SCALAR && r->stype == SAND__YS_STR) {
        sand_step_t *t = resolve_step(L, B, v);
        if (t && (st->next = malloc(sizeof(*st->next)))) {
            st->next[0] = t;
            st->n_next = 1;
        } else if (t) {
            L->nomem = true;
        }
        return;
    }
    if (r->kind != SAND__Y_SEQ) {
        diag(L, v, "expected a step name or a list of step names, got %s", kind_name(v));
        return;
    }
    if (r->n == 0) {
        diag(L, v, "empty list (leave next out to make the step terminal)");
        return;
    }
    /* listed[] keeps the duplicate check linear however long the list is. */
    bool *listed = calloc(B->wf->n_steps, sizeof(bool));
    if (!listed || !(st->next = calloc(r->n, sizeof(*st->next)))) {
        free(listed);
        L->nomem = true;
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        size_t old = path_push_index(L, i);
        sand_step_t *t = resolve_step(L, B, r->items[i]);
        bool dup = t && listed[t->index];
        if (t)
            listed[t->index] = true;
        if (dup)
            diag(L, r->items[i], "step '%s' is listed twice", t->name);
        else if (t)
            st->next[st->n_next++] = t;
        path_pop(L, old);
    }
    free(listed);
}

static void parse_retry(struct loader *L, sand_step_t *st, const sand__ynode *v)
{
    const sand__ynode *r = sand__ynode_deref(v);
    if (r->kind != SAND__Y_MAP) {
        diag(L, v, "expected a mapping {max: N, backoff: DURATION}, got %s", kind_name(v));
        return;
    }
    check_keys(L, r, retry_keys, SAND_ARRAY_LEN(retry_keys), "key");
    const sand__ynode *m = map_get(r, "max", NULL), *b = map_get(r, "backoff", NULL);
    if (!m) {
        diag(L, v, "missing required key 'max' (extra runs after the first, 0..10)");
    } else {
        size_t old = path_push(L, "max");
        int64_t n;
        if (want_int(L, m, 0, RETRY_MAX, &n))
            st->retry_max = (int)n;
        path_pop(L, old);
    }
    if (b) {
        size_t old = path_push(L, "backoff");
        int64_t ms;
        if (want_duration(L, b, &ms)) {
            if (ms > RETRY_BACKOFF_MAX_MS)
                diag(L, b, "backoff must be at most 1h (got '%.64s')", sand__ynode_deref(b)->text);
            else
                st->retry_backoff_ms = ms;
        }
        path_pop(L, old);
    }
}

static void parse_step_fields(struct loader *L, struct wf_build *B, size_t idx,
                              const sand__ynode *v)
{
    sand_step_t *st = B->wf->steps[idx];
    const sand__ynode *kn = B->src[idx].key;
    const sand__ynode *map = sand__ynode_deref(v);
    const sand__ynode *f;
    size_t old;
    if (map->kind != SAND__Y_MAP && !is_null(v)) {
        diag(L, v, "expected a mapping (grain, next, catch, retry), got %s", kind_name(v));
        return;
    }
    bool fields = map->kind == SAND__Y_MAP;
    if (fields)
        check_keys(L, map, step_keys, SAND_ARRAY_LEN(step_keys), "key");

    if (fields && (f = map_get(map, "grain", NULL))) {
        old = path_push(L, "grain");
        const char *s = want_str(L, f, "a grain name");
        if (s && !(st->grain = sand_map_get(&L->grains, s)))
            diag(L, f, "unknown grain '%.64s'", s);
        path_pop(L, old);
    } else if (!(st->grain = sand_map_get(&L->grains, st->name))) {
        diag(L, kn, "no grain named '%s' (set grain: to one of the app's grains)", st->name);
    }

    if (fields && (f = map_get(map, "next", NULL))) {
        old = path_push(L, "next");
        parse_next(L, B, st, f);
        path_pop(L, old);
    }

    if (fields && (f = map_get(map, "catch", NULL))) {
        old = path_push(L, "catch");
        sand_step_t *c = resolve_step(L, B, f);
        if (c == st)
            diag(L, f, "a step cannot catch its own errors");
        else
            st->catch_step = c;
        B->src[idx].catch_node = f;
        path_pop(L, old);
    }

    if (fields && (f = map_get(map, "retry", NULL))) {
        old = path_push(L, "retry");
        parse_retry(L, st, f);
        path_pop(L, old);
    }

    if (fields && (f = map_get(map, "description", NULL))) {
        old = path_push(L, "description");
        want_scalar(L, f, "a string");
        path_pop(L, old);
    }
}

static int compute_preds(sand_workflow_t *wf)
{
    for (size_t i = 0; i < wf->n_steps; i++)
        for (size_t j = 0; j < wf->steps[i]->n_next; j++)
            wf->steps[i]->next[j]->n_preds++;
    for (size_t i = 0; i < wf->n_steps; i++) {
        sand_step_t *s = wf->steps[i];
        if (s->n_preds && !(s->preds = calloc(s->n_preds, sizeof(*s->preds))))
            return SAND_ENOMEM;
        s->n_preds = 0;
    }
    for (size_t i = 0; i < wf->n_steps; i++)
        for (size_t j = 0; j < wf->steps[i]->n_next; j++) {
            sand_step_t *t = wf->steps[i]->next[j];
            t->preds[t->n_preds++] = wf->steps[i];
        }
    return 0;
}

/* Marks in seen[] every step reachable from start through next edges (and catch edges when
 * with_catch). queue must hold n_steps entries. */
static void reach(const sand_workflow_t *wf, bool with_catch, bool *seen, int *queue)
{
    size_t head = 0, tail = 0;
    seen[wf->start->index] = true;
    queue[tail++] = wf->start->index;
    while (head < tail) {
        const sand_step_t *s = wf->steps[queue[head++]];
        for (size_t j = 0; j <= s->n_next; j++) {
            const sand_step_t *t = j < s->n_next ? s->next[j] : with_catch ? s->catch_step : NULL;
            if (t && !seen[t->index]) {
                seen[t->index] = true;
                queue[tail++] = t->index;
            }
        }
    }
}

/* Writes "'a', 'b', ..." for the steps at the given indexes, as far as the buffer goes. */
static void names_of(const sand_workflow_t *wf, const int *idx, size_t n, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off + 1 < size; i++) {
        int w = snprintf(buf + off, size - off, "%s'%s'", off ? ", " : "", wf->steps[idx[i]]->name);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Reports every strongly connected component of the stuck steps (steps that cannot reach any
 * terminal step through next) that is a cycle: a loop with no way out. Iterative Tarjan. */
static int report_dead_cycles(struct loader *L, struct wf_build *B, const bool *stuck)
{
    sand_workflow_t *wf = B->wf;
    size_t n = wf->n_steps;
    int *idx = malloc(n * sizeof(int)), *low = malloc(n * sizeof(int));
    int *stack = malloc(n * sizeof(int));
    bool *on = calloc(n, sizeof(bool));
    struct call {
        int v;
        size_t e;
    } *cs = malloc(n * sizeof(*cs));
    int rc = 0;
    if (!idx || !low || !stack || !on || !cs) {
        rc = SAND_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = -1;
    int counter = 0;
    size_t sp = 0;
    for (size_t root = 0; root < n; root++) {
        if (!stuck[root] || idx[root] >= 0)
            continue;
        size_t csp = 0;
        idx[root] = low[root] = counter++;
        stack[sp++] = (int)root;
        on[root] = true;
        cs[csp++] = (struct call){(int)root, 0};
        while (csp) {
            struct call *f = &cs[csp - 1];
            int v = f->v;
            sand_step_t *s = wf->steps[v];
            if (f->e < s->n_next) {
                int w = s->next[f->e++]->index;
                if (!stuck[w])
                    continue;
                if (idx[w] < 0) {
                    idx[w] = low[w] = counter++;
                    stack[sp++] = w;
                    on[w] = true;
                    cs[csp++] = (struct call){w, 0};
                } else if (on[w] && idx[w] < low[v]) {
                    low[v] = idx[w];
                }
                continue;
            }
            if (low[v] == idx[v]) {
                size_t top = sp;
                int w;
                do {
                    w = stack[--sp];
                    on[w] = false;
                } while (w != v);
                /* The component is stack[sp..top): report it when it is a cycle. */
                bool self = false;
                for (size_t j = 0; j < s->n_next; j++)
                    self = self || s->next[j] == s;
                if (top - sp > 1 || self) {
                    qsort(stack + sp, top - sp, sizeof(int), cmp_int);
                    char names[160];
                    names_of(wf, stack + sp, top - sp, names, sizeof(names));
                    int first = stack[sp];
                    size_t old = path_push(L, "steps");
                    path_push(L, wf->steps[first]->name);
                    diag(L, B->src[first].key,
                         "cycle through %s has no way out (no terminal step is reachable "
                         "through next)",
                         names);
                    path_pop(L, old);
                }
            }
            csp--;
            if (csp && low[v] < low[cs[csp - 1].v])
                low[cs[csp - 1].v] = low[v];
        }
    }
out:
    free(idx);
    free(low);
    free(stack);
    free(on);
    free(cs);
    return rc;
}

/* The graph rules of SPEC section 3, run once every name of the workflow resolved. */
static int check_graph(struct loader *L, struct wf_build *B, const sand__ynode *wf_key)
{
    sand_workflow_t *wf = B->wf;
    size_t n = wf->n_steps;
    bool *all = calloc(n, sizeof(bool)), *viaNext = calloc(n, sizeof(bool));
    bool *alive = calloc(n, sizeof(bool)), *mark = calloc(n, sizeof(bool));
    int *queue = malloc(n * sizeof(int));
    int rc = 0;
    if (!all || !viaNext || !alive || !mark || !queue) {
        rc = SAND_ENOMEM;
        goto out;
    }
    reach(wf, true, all, queue);
    reach(wf, false, viaNext, queue);
    for (size_t i = 0; i < n; i++) {
        if (all[i])
            continue;
        size_t old = path_push(L, "steps");
        path_push(L, wf->steps[i]->name);
        diag(L, B->src[i].key, "step is not reachable from start step '%s' (through next or catch)",
             wf->start->name);
        path_pop(L, old);
    }

    /* A join on the normal path with a predecessor that only runs after an error would wait
     * for that predecessor on success and for the failed one on error: it could never run. */
    for (size_t i = 0; i < n; i++) {
        const sand_step_t *s = wf->steps[i];
        if (!viaNext[i] || s->n_preds < 2)
            continue;
        for (size_t j = 0; j < s->n_preds; j++) {
            int p = s->preds[j]->index;
            if (viaNext[p] || !all[p]) /* unreachable steps are reported on their own */
                continue;
            size_t old = path_push(L, "steps");
            path_push(L, s->name);
            diag(L, B->src[i].key,
                 "join waits for '%s', which runs only after an error (through catch), so it "
                 "would never run",
                 s->preds[j]->name);
            path_pop(L, old);
            break;
        }
    }

    size_t n_term = 0;
    for (size_t i = 0; i < n; i++) {
        mark[i] = viaNext[i] && wf->steps[i]->terminal;
        if (mark[i]) {
            n_term++;
            wf->result = wf->steps[i];
        }
    }
    if (n_term == 0) {
        diag(L, wf_key,
             "no terminal step (a step without next) is reachable from start step '%s' "
             "through next",
             wf->start->name);
    } else if (n_term > 1) {
        char names[160];
        size_t k = 0;
        for (size_t i = 0; i < n && k < 8; i++)
            if (mark[i])
                queue[k++] = (int)i;
        names_of(wf, queue, k, names, sizeof(names));
        diag(L, wf_key,
             "%zu terminal steps are reachable from start through next: %s (exactly one "
             "may be: join a fan-out before the end)",
             n_term, names);
        wf->result = NULL;
    }

    /* alive: can reach a terminal step through next (reverse search from every terminal). */
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < n; i++)
        if (wf->steps[i]->terminal) {
            alive[i] = true;
            queue[tail++] = (int)i;
        }
    while (head < tail) {
        const sand_step_t *s = wf->steps[queue[head++]];
        for (size_t j = 0; j < s->n_preds; j++)
            if (!alive[s->preds[j]->index]) {
                alive[s->preds[j]->index] = true;
                queue[tail++] = s->preds[j]->index;
            }
    }
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        mark[i] = all[i] && !alive[i];
        any = any || mark[i];
    }
    if (any)
        rc = report_dead_cycles(L, B, mark);
out:
    free(all);
    free(viaNext);
    free(alive);
    free(mark);
    free(queue);
    return rc;
}

static void parse_workflow(struct loader *L, const sand__ynode *wk, const sand__ynode *wv,
                           sand_workflow_t *wf)
{
    struct wf_build B = {.wf = wf};
    sand_map_init(&B.steps);
    size_t before = L->diags->len;
    const sand__ynode *map = sand__ynode_deref(wv);
    const sand__ynode *v, *steps_key = NULL, *start_node;
    size_t old;
    if (map->kind != SAND__Y_MAP) {
        diag(L, is_null(wv) ? wk : wv, "expected a mapping with start and steps, got %s",
             kind_name(wv));
        goto out;
    }
    check_keys(L, map, workflow_keys, SAND_ARRAY_LEN(workflow_keys), "key");

    if ((v = map_get(map, "timeout", NULL))) {
        old = path_push(L, "timeout");
        int64_t ms;
        if (want_duration(L, v, &ms)) {
            if (ms <= 0)
                diag(L, v, "timeout must be more than 0");
            else
                wf->timeout_ms = ms;
        }
        path_pop(L, old);
    }
    if ((v = map_get(map, "description", NULL))) {
        old = path_push(L, "description");
        want_scalar(L, v, "a string");
        path_pop(L, old);
    }

    const sand__ynode *steps_v = map_get(map, "steps", &steps_key);
    const sand__ynode *steps = steps_v ? sand__ynode_deref(steps_v) : NULL;
    if (!steps_v) {
        diag(L, wk, "missing required key 'steps'");
    } else if (steps->kind != SAND__Y_MAP || steps->n == 0) {
        old = path_push(L, "steps");
        if (steps->kind != SAND__Y_MAP)
            diag(L, is_null(steps_v) ? steps_key : steps_v,
                 "expected a mapping of step names to steps, got %s", kind_name(steps_v));
        else
            diag(L, steps_v, "no steps (a workflow needs at least one)");
        path_pop(L, old);
        steps = NULL;
    }
    if (steps) {
        old = path_push(L, "steps");
        check_keys(L, steps, NULL, 0, "step");
        size_t n = steps->n / 2;
        wf->steps = calloc(n, sizeof(*wf->steps));
        B.src = calloc(n, sizeof(*B.src));
        if (!wf->steps || !B.src) {
            L->nomem = true;
            path_pop(L, old);
            goto out;
        }
        for (size_t i = 0; i < steps->n; i += 2) {
            if (!key_usable(steps, i, &B.steps))
                continue;
            const sand__ynode *sk = steps->items[i];
            const char *name = sand__ynode_deref(sk)->text;
            if (!name_ok(name, false))
                diag(L, sk, "invalid step name '%.64s' (expected [a-z0-9_][a-z0-9_-]{0,62})", name);
            sand_step_t *st = calloc(1, sizeof(*st));
            if (!st || sand_map_set(&B.steps, name, st, NULL) < 0) {
                free(st);
                L->nomem = true;
                path_pop(L, old);
                goto out;
            }
            sand_strlcpy(st->name, name, sizeof(st->name));
            st->index = (int)wf->n_steps;
            st->line = sk->line;
            B.src[wf->n_steps].key = sk;
            wf->steps[wf->n_steps++] = st;
        }
        for (size_t i = 0, k = 0; i < steps->n; i += 2) {
            const sand__ynode *sk = sand__ynode_deref(steps->items[i]);
            if (k >= wf->n_steps || B.src[k].key != steps->items[i])
                continue;
            size_t o2 = path_push(L, sk->text);
            parse_step_fields(L, &B, k, steps->items[i + 1]);
            path_pop(L, o2);
            k++;
        }
        path_pop(L, old);
        for (size_t i = 0; i < wf->n_steps; i++)
            wf->steps[i]->terminal = wf->steps[i]->n_next == 0;
        if (compute_preds(wf) < 0) {
            L->nomem = true;
            goto out;
        }
        for (size_t i = 0; i < wf->n_steps; i++) {
            sand_step_t *c = wf->steps[i]->catch_step;
            if (c && c->n_preds > 1) {
                old = path_push(L, "steps");
                path_push(L, wf->steps[i]->name);
                path_push(L, "catch");
                diag(L, B.src[i].catch_node,
                     "catch target '%s' is a join (it has %zu predecessors through next)", c->name,
                     c->n_preds);
                path_pop(L, old);
            }
        }
    }

    if (!(start_node = map_get(map, "start", NULL))) {
        diag(L, wk, "missing required key 'start'");
    } else if (steps) {
        old = path_push(L, "start");
        wf->start = resolve_step(L, &B, start_node);
        if (wf->start && wf->start->n_preds > 1) {
            diag(L, start_node, "start step '%s' is a join (it has %zu predecessors through next)",
                 wf->start->name, wf->start->n_preds);
        }
        path_pop(L, old);
    } else {
        old = path_push(L, "start");
        want_str(L, start_node, "a step name");
        path_pop(L, old);
    }

    if (L->diags->len == before && !L->nomem && wf->start && check_graph(L, &B, wk) < 0)
        L->nomem = true;
out:
    free(B.src);
    sand_map_release(&B.steps, NULL);
}

static void parse_workflows(struct loader *L, const sand__ynode *kn, const sand__ynode *v)
{
    size_t old = path_push(L, "workflows");
    const sand__ynode *map = sand__ynode_deref(v);
    sand_map_t seen;
    sand_map_init(&seen);
    if (map->kind != SAND__Y_MAP || map->n == 0) {
        if (map->kind == SAND__Y_MAP || is_null(v))
            diag(L, is_null(v) ? kn : v,
                 "no workflows (leave the key out for an app with grains only)");
        else
            diag(L, v, "expected a mapping of workflow names to workflows, got %s", kind_name(v));
        goto out;
    }
    check_keys(L, map, NULL, 0, "workflow");
    if (!(L->app->workflows = calloc(map->n / 2, sizeof(*L->app->workflows)))) {
        L->nomem = true;
        goto out;
    }
    for (size_t i = 0; i < map->n; i += 2) {
        if (!key_usable(map, i, &seen))
            continue;
        const sand__ynode *wk = map->items[i];
        const char *name = sand__ynode_deref(wk)->text;
        if (!name_ok(name, false))
            diag(L, wk, "invalid workflow name '%.64s' (expected [a-z0-9_][a-z0-9_-]{0,62})", name);
        sand_workflow_t *wf = calloc(1, sizeof(*wf));
        if (!wf || sand_map_set(&seen, name, wf, NULL) < 0) {
            free(wf);
            L->nomem = true;
            goto out;
        }
        sand_strlcpy(wf->name, name, sizeof(wf->name));
        wf->line = wk->line;
        L->app->workflows[L->app->n_workflows++] = wf;
        size_t o2 = path_push(L, name);
        parse_workflow(L, wk, map->items[i + 1], wf);
        path_pop(L, o2);
        if (L->nomem)
            break;
    }
out:
    sand_map_release(&seen, NULL);
    path_pop(L, old);
}

/* ---- the app ----------------------------------------------------------------------------- */

static const char *const app_keys[] = {"app", "grains", "workflows", "description"};

static void parse_app(struct loader *L, const sand__ynode *root)
{
    if (!root) {
        sand__diag_add(L->diags, 1, 1, "empty document (expected a mapping with app and grains)");
        return;
    }
    const sand__ynode *map = sand__ynode_deref(root);
    if (map->kind != SAND__Y_MAP) {
        diag(L, root, "expected a mapping with app and grains at the top level, got %s",
             kind_name(root));
        return;
    }
    check_keys(L, map, app_keys, SAND_ARRAY_LEN(app_keys), "key");
    const sand__ynode *v, *k = NULL;
    size_t old;

    if (!(v = map_get(map, "app", NULL))) {
        diag(L, root, "missing required key 'app' (the application's name)");
    } else {
        old = path_push(L, "app");
        const char *s = want_str(L, v, "an application name");
        if (s && !name_ok(s, true))
            diag(L, v, "invalid application name '%.64s' (expected [a-z0-9][a-z0-9-]{0,62})", s);
        else if (s)
            sand_strlcpy(L->app->name, s, sizeof(L->app->name));
        path_pop(L, old);
    }
    if ((v = map_get(map, "description", NULL))) {
        old = path_push(L, "description");
        want_scalar(L, v, "a string");
        path_pop(L, old);
    }
    if (!(v = map_get(map, "grains", &k)))
        diag(L, root, "missing required key 'grains'");
    else
        parse_grains(L, v);
    if (!L->nomem && (v = map_get(map, "workflows", &k)))
        parse_workflows(L, k, v);
}

/* Stable order by position, so that the report reads top to bottom. */
static void sort_diags(sand_diags_t *d, size_t from)
{
    for (size_t i = from + 1; i < d->len; i++) {
        sand_diag_t x = d->items[i];
        size_t j = i;
        while (j > from && (d->items[j - 1].line > x.line ||
                            (d->items[j - 1].line == x.line && d->items[j - 1].col > x.col))) {
            d->items[j] = d->items[j - 1];
            j--;
        }
        d->items[j] = x;
    }
}

static void limits_resolve(const sand_app_limits_t *in, sand_app_limits_t *out)
{
    out->max_yaml_bytes =
        in && in->max_yaml_bytes > 0 ? in->max_yaml_bytes : DEFAULT_MAX_YAML_BYTES;
    out->max_alias_expansions =
        in && in->max_alias_expansions > 0 ? in->max_alias_expansions : DEFAULT_MAX_ALIASES;
    out->max_depth = in && in->max_depth > 0 ? in->max_depth : DEFAULT_MAX_DEPTH;
    /* The tree is freed recursively and the parser keeps one frame per level: bound both. */
    if (out->max_depth > MAX_DEPTH_CAP)
        out->max_depth = MAX_DEPTH_CAP;
}

static int fail_summary(sand_diags_t *diags, size_t before, sand_err *err)
{
    size_t n = diags->len - before;
    const sand_diag_t *first = &diags->items[before];
    return sand_err_set(err, SAND_EINVAL, "app.yaml: %zu error%s, first: %d:%d: %s", n,
                        n == 1 ? "" : "s", first->line, first->col, first->msg);
}

int sand_app_load_text(const char *text, size_t len, const char *dir,
                       const sand_app_limits_t *limits, sand_app_t **out, sand_diags_t *diags,
                       sand_err *err)
{
    sand_app_limits_t lim;
    sand_diags_t local;
    limits_resolve(limits, &lim);
    *out = NULL;
    if (!diags) {
        sand_diags_init(&local);
        diags = &local;
    }
    size_t before = diags->len;
    int rc = 0;
    struct loader L = {.diags = diags};
    sand_map_init(&L.grains);
    sand__ynode *root = NULL;

    if (!text)
        text = "";
    if (dir && !(L.root_real = realpath(dir, NULL))) {
        rc = sand_err_errno(err, errno == ENOENT ? SAND_ENOTFOUND : SAND_EIO,
                            "bundle directory '%s'", dir);
        goto out;
    }
    if ((int64_t)len > lim.max_yaml_bytes) {
        sand__diag_add(diags, 1, 1, "app.yaml is %zu bytes (max %lld)", len,
                       (long long)lim.max_yaml_bytes);
        rc = fail_summary(diags, before, err);
        goto out;
    }
    rc = sand__yaml_parse(text, len, lim.max_depth, lim.max_alias_expansions, &root, diags);
    if (rc == SAND_ENOMEM) {
        rc = sand_err_set(err, SAND_ENOMEM, "out of memory while parsing app.yaml");
        goto out;
    }
    if (rc < 0) {
        rc = fail_summary(diags, before, err);
        goto out;
    }
    if (!(L.app = calloc(1, sizeof(*L.app))) ||
        (L.root_real && !(L.app->root = sand_strdup(L.root_real)))) {
        rc = sand_err_set(err, SAND_ENOMEM, "out of memory while loading app.yaml");
        goto out;
    }
    parse_app(&L, root);
    if (L.nomem) {
        rc = sand_err_set(err, SAND_ENOMEM, "out of memory while loading app.yaml");
        goto out;
    }
    if (diags->len > before) {
        sort_diags(diags, before);
        rc = fail_summary(diags, before, err);
        goto out;
    }
    *out = L.app;
    L.app = NULL;
out:
    sand_app_free(L.app);
    sand__ynode_free(root);
    sand_map_release(&L.grains, NULL);
    free(L.root_real);
    if (diags == &local)
        sand_diags_release(&local);
    return rc;
}

int sand_app_load(const char *dir, const sand_app_limits_t *limits, sand_app_t **out,
                  sand_diags_t *diags, sand_err *err)
{
    sand_app_limits_t lim;
    limits_resolve(limits, &lim);
    *out = NULL;
    char *path = NULL;
    if (asprintf(&path, "%s/app.yaml", dir) < 0)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    /* O_NOFOLLOW: app.yaml itself must be a file of the bundle, not a link to one elsewhere. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    free(path);
    if (fd < 0) {
        if (errno == ENOENT)
            return sand_err_set(err, SAND_ENOTFOUND, "no app.yaml in '%s'", dir);
        return sand_err_errno(err, SAND_EIO, "open '%s/app.yaml'", dir);
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sand_err_set(err, SAND_EIO, "'%s/app.yaml' is not a regular file", dir);
    }
    sand_bytes_t buf;
    /* One byte over the limit is enough to know the file is too big. */
    sand_bytes_init(&buf, (size_t)lim.max_yaml_bytes + 1);
    int rc = 0;
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = sand_err_errno(err, SAND_EIO, "read '%s/app.yaml'", dir);
            break;
        }
        if (n == 0)
            break;
        size_t room = buf.max - buf.len;
        if ((rc = sand_bytes_append(&buf, chunk, (size_t)n < room ? (size_t)n : room)) < 0) {
            rc = sand_err_set(err, rc, "read '%s/app.yaml': out of memory", dir);
            break;
        }
        if (buf.len == buf.max)
            break;
    }
    close(fd);
    if (rc == 0 && buf.len > (size_t)lim.max_yaml_bytes) {
        sand_diags_t local;
        sand_diags_init(&local);
        sand_diags_t *d = diags ? diags : &local;
        size_t before = d->len;
        sand__diag_add(d, 1, 1, "app.yaml is %lld bytes (max %lld)",
                       (long long)(st.st_size > (off_t)buf.len ? st.st_size : (off_t)buf.len),
                       (long long)lim.max_yaml_bytes);
        rc = fail_summary(d, before, err);
        sand_diags_release(&local);
    } else if (rc == 0) {
        rc = sand_app_load_text(buf.data ? buf.data : "", buf.len, dir, limits, out, diags, err);
    }
    sand_bytes_release(&buf);
    return rc;
}

void sand_app_free(sand_app_t *app)
{
    if (!app)
        return;
    for (size_t i = 0; i < app->n_grains; i++)
        grain_free(app->grains[i]);
    free(app->grains);
    for (size_t i = 0; i < app->n_workflows; i++)
        workflow_free(app->workflows[i]);
    free(app->workflows);
    free(app->root);
    free(app);
}

sand_grain_t *sand_app_grain(const sand_app_t *app, const char *name)
{
    for (size_t i = 0; app && name && i < app->n_grains; i++)
        if (strcmp(app->grains[i]->name, name) == 0)
            return app->grains[i];
    return NULL;
}

sand_workflow_t *sand_app_workflow(const sand_app_t *app, const char *name)
{
    for (size_t i = 0; app && name && i < app->n_workflows; i++)
        if (strcmp(app->workflows[i]->name, name) == 0)
            return app->workflows[i];
    return NULL;
}

sand_step_t *sand_workflow_step(const sand_workflow_t *wf, const char *name)
{
    for (size_t i = 0; wf && name && i < wf->n_steps; i++)
        if (strcmp(wf->steps[i]->name, name) == 0)
            return wf->steps[i];
    return NULL;
}

const char *sand_runtime_name(sand_runtime rt)
{
    switch (rt) {
    case SAND_RT_PYTHON:
        return "python";
    case SAND_RT_JAVA:
        return "java";
    case SAND_RT_C:
        return "c";
    }
    return "unknown";
}
