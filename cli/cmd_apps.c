/*
 * sandctl's app commands: validate (local, through the same app.yaml loader sandd uses), deploy
 * (validate, pack, upload, wait for the sandbox), ls, status and rm. The server's app
 * descriptions are read tolerantly: a missing field prints as "-" and never fails a command.
 */
#include "cli.h"

#include "cli_internal.h"

#include "sand/bundle.h"
#include "sand/workflow.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POLL_INTERVAL_MS 250

/* Parses only the common options; returns -1 to go on, else the exit code. */
static int parse_common(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    static const struct option opts[] = {SAND_CLI_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int o, rc;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1)
        if ((rc = sand__cli_common_opt(c, cmd, o, argv)) >= 0)
            return rc;
    return -1;
}

/* Loads and validates DIR/app.yaml; on failure prints every diagnostic and returns
 * SAND_CLI_USAGE. */
static int load_app(sand_cli_t *c, const char *what, const char *dir, sand_app_t **out)
{
    sand_diags_t diags;
    sand_err err = {0};
    sand_diags_init(&diags);
    int rc = sand_app_load(dir, NULL, out, &diags, &err);
    if (rc == SAND_EINVAL && diags.len) {
        sand_bytes_t text, file;
        sand_bytes_init(&text, 16 << 20);
        sand_bytes_init(&file, 8192);
        size_t dlen = strlen(dir);
        while (dlen > 1 && dir[dlen - 1] == '/')
            dlen--;
        sand_bytes_appendf(&file, "%.*s/app.yaml", (int)dlen, dir);
        sand_diags_format(&diags, file.data, &text);
        if (text.data)
            fputs(text.data, c->err);
        sand__cli_fail(c, SAND_CLI_USAGE, "%s: '%s' has %zu error%s", what, file.data, diags.len,
                       diags.len == 1 ? "" : "s");
        sand_bytes_release(&text);
        sand_bytes_release(&file);
    } else if (rc < 0) {
        sand__cli_fail(c, SAND_CLI_USAGE, "%s: '%s': %s", what, dir, err.msg);
    }
    sand_diags_release(&diags);
    return rc < 0 ? SAND_CLI_USAGE : SAND_CLI_OK;
}

int sand__cli_cmd_validate(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    int rc = parse_common(c, cmd, argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return sand__cli_usage(c, cmd->name, "expects one directory");
    sand_app_t *app = NULL;
    if ((rc = load_app(c, "validate", argv[optind], &app)) != SAND_CLI_OK)
        return rc;
    if (c->json) {
        sand_bytes_t out;
        sand_bytes_init(&out, 64 << 20);
        json_t *v = NULL;
        if (sand_app_describe_json(app, &out) == 0 && out.data &&
            (v = json_loadb(out.data, out.len, 0, NULL)) != NULL)
            sand__cli_print_json(c->out, v);
        else
            rc = sand__cli_fail(c, SAND_CLI_FAILED, "validate: cannot describe the app");
        json_decref(v);
        sand_bytes_release(&out);
    } else {
        fprintf(c->out, "app '%s': %zu grain%s, %zu workflow%s", app->name, app->n_grains,
                app->n_grains == 1 ? "" : "s", app->n_workflows, app->n_workflows == 1 ? "" : "s");
        for (size_t i = 0; i < app->n_workflows; i++)
            fprintf(c->out, "%s%s", i ? ", " : " (", app->workflows[i]->name);
        fprintf(c->out, "%s\n", app->n_workflows ? ")" : "");
    }
    sand_app_free(app);
    return rc;
}

/* A workflow entry of a description: an object with "name" or a bare string. */
static const char *wf_name(const json_t *w)
{
    return json_is_string(w) ? json_string_value(w) : sand__cli_jstr(w, "name", NULL);
}

static size_t count_of(const json_t *v)
{
    if (json_is_array(v))
        return json_array_size(v);
    if (json_is_object(v))
        return json_object_size(v);
    if (json_is_integer(v) && json_integer_value(v) > 0)
        return (size_t)json_integer_value(v);
    return 0;
}

/* Prints "deployed app ..." and one URL per workflow. */
static void print_deployed(sand_cli_t *c, const json_t *desc, const char *name)
{
    const json_t *version = json_object_get(desc, "version");
    fprintf(c->out, "deployed app '%s'", name);
    if (json_is_integer(version))
        fprintf(c->out, " (version %" JSON_INTEGER_FORMAT ")", json_integer_value(version));
    else if (json_is_string(version))
        fprintf(c->out, " (version %s)", json_string_value(version));
    const json_t *sbx = json_object_get(desc, "sandbox");
    const char *driver = sand__cli_jstr(sbx, "driver", NULL);
    const char *id = sand__cli_jstr(sbx, "id", NULL);
    fprintf(c->out, ", sandbox %s", sand__cli_jstr(desc, "state", "ready"));
    if (driver || id)
        fprintf(c->out, " (%s%s%.12s)", driver ? driver : "", driver && id ? " " : "",
                id ? id : "");
    fputc('\n', c->out);

    const json_t *wfs = json_object_get(desc, "workflows");
    sand_cli_table_t t;
    sand__cli_table_init(&t, 2);
    sand_bytes_t url;
    sand_bytes_init(&url, 8192);
    for (size_t i = 0; json_is_array(wfs) && i < json_array_size(wfs); i++) {
        const char *wf = wf_name(json_array_get(wfs, i));
        if (!wf)
            continue;
        sand_bytes_reset(&url);
        sand_bytes_appendf(&url, "%s/v1/apps", c->server);
        sand__cli_path_segment(&url, name);
        sand_bytes_appends(&url, "/workflows");
        sand__cli_path_segment(&url, wf);
        sand_bytes_t label;
        sand_bytes_init(&label, 256);
        sand_bytes_appendf(&label, "  %s", wf);
        sand__cli_table_add(&t, label.data, url.data);
        sand_bytes_release(&label);
    }
    sand__cli_table_print(&t, c->out);
    sand__cli_table_release(&t);
    sand_bytes_release(&url);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0)
        ;
}

/* Error text of a failed description: "error" as a string or an object with "message". */
static const char *desc_error(const json_t *desc)
{
    const json_t *e = json_object_get(desc, "error");
    if (json_is_string(e))
        return json_string_value(e);
    const char *m = sand__cli_jstr(e, "message", NULL);
    return m ? m : sand__cli_jstr(json_object_get(desc, "sandbox"), "error", NULL);
}

/* Polls GET /v1/apps/NAME until the state is ready; *desc is replaced by the latest answer. */
static int wait_ready(sand_cli_t *c, const char *name, json_t **desc)
{
    int64_t t0 = sand_mono_us();
    int64_t last_line = -1;
    bool tty = isatty(fileno(c->err));
    bool progress = false;
    sand_bytes_t path;
    sand_bytes_init(&path, 4096);
    sand_bytes_appends(&path, "/v1/apps");
    sand__cli_path_segment(&path, name);
    int rc = SAND_CLI_OK;

    for (;;) {
        const char *state = sand__cli_jstr(*desc, "state", "ready");
        if (!strcmp(state, "ready"))
            break;
        if (!strcmp(state, "failed") || !strcmp(state, "stopped")) {
            if (progress && tty)
                fputc('\n', c->err);
            progress = false;
            const char *why = desc_error(*desc);
            rc = sand__cli_fail(c, SAND_CLI_FAILED, "deploy: the sandbox of '%s' %s%s%s", name,
                                state[0] == 'f' ? "failed to start" : "stopped", why ? ": " : "",
                                why ? why : "");
            break;
        }
        int64_t elapsed = sand_mono_us() - t0;
        if (elapsed > (int64_t)SAND_CLI_DEPLOY_WAIT_MS * 1000) {
            if (progress && tty)
                fputc('\n', c->err);
            progress = false;
            rc = sand__cli_fail(c, SAND_CLI_FAILED,
                                "deploy: the sandbox of '%s' was not ready after %d s (state "
                                "'%s')",
                                name, SAND_CLI_DEPLOY_WAIT_MS / 1000, state);
            break;
        }
        /* a live line on a terminal; one line per second otherwise */
        if (tty) {
            fprintf(c->err, "\rsandctl: waiting for sandbox of '%s'... %.1fs", name,
                    (double)elapsed / 1e6);
            progress = true;
        } else if (elapsed / 1000000 != last_line) {
            last_line = elapsed / 1000000;
            fprintf(c->err, "sandctl: waiting for sandbox of '%s'... %.1fs\n", name,
                    (double)elapsed / 1e6);
        }
        fflush(c->err);
        sleep_ms(POLL_INTERVAL_MS);

        sand_cli_resp_t resp;
        sand__cli_resp_init(&resp);
        rc = sand__cli_request(c, "GET", path.data, NULL, NULL, 0, 30000, NULL, NULL, &resp);
        if (rc == SAND_CLI_OK && resp.status != 200)
            rc = sand__cli_http_error(c, &resp, "deploy");
        json_t *next = rc == SAND_CLI_OK ? sand__cli_parse_body(c, &resp, "deploy") : NULL;
        sand__cli_resp_release(&resp);
        if (rc != SAND_CLI_OK)
            break;
        if (!next) {
            rc = SAND_CLI_FAILED;
            break;
        }
        json_decref(*desc);
        *desc = next;
    }
    if (progress && tty)
        fputc('\n', c->err);
    sand_bytes_release(&path);
    return rc;
}

int sand__cli_cmd_deploy(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    int rc = parse_common(c, cmd, argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return sand__cli_usage(c, cmd->name, "expects one directory");
    const char *dir = argv[optind];
    sand_app_t *app = NULL;
    if ((rc = load_app(c, "deploy", dir, &app)) != SAND_CLI_OK)
        return rc;
    char name[SAND_NAME_MAX];
    sand_strlcpy(name, app->name, sizeof(name));
    sand_app_free(app);

    sand_bytes_t tgz;
    sand_bytes_init(&tgz, SAND_BUNDLE_MAX_UPLOAD);
    sand_err err = {0};
    if (sand_bundle_pack(dir, &tgz, NULL, &err) < 0) {
        sand_bytes_release(&tgz);
        return sand__cli_fail(c, SAND_CLI_USAGE, "deploy: %s", err.msg);
    }

    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    rc = sand__cli_request(c, "POST", "/v1/apps", "application/gzip", tgz.data, tgz.len, 300000,
                           NULL, NULL, &resp);
    sand_bytes_release(&tgz);
    json_t *desc = NULL;
    if (rc == SAND_CLI_OK && resp.status != 200 && resp.status != 201) {
        char what[128];
        snprintf(what, sizeof(what), "deploy '%s' rejected", name);
        rc = sand__cli_http_error(c, &resp, what);
    } else if (rc == SAND_CLI_OK && !(desc = sand__cli_parse_body(c, &resp, "deploy"))) {
        rc = SAND_CLI_FAILED;
    }
    sand__cli_resp_release(&resp);
    if (rc == SAND_CLI_OK) {
        const char *server_name = sand__cli_jstr(desc, "app", NULL);
        if (server_name)
            sand_strlcpy(name, server_name, sizeof(name));
        rc = wait_ready(c, name, &desc);
    }
    if (rc == SAND_CLI_OK) {
        if (c->json)
            sand__cli_print_json(c->out, desc);
        else
            print_deployed(c, desc, name);
    }
    json_decref(desc);
    return rc;
}

/* GETs path and parses the JSON answer into *out; prints and returns the exit code on failure. */
static int get_json(sand_cli_t *c, const char *path, const char *what, json_t **out)
{
    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    *out = NULL;
    int rc = sand__cli_request(c, "GET", path, NULL, NULL, 0, 60000, NULL, NULL, &resp);
    if (rc == SAND_CLI_OK && resp.status != 200)
        rc = sand__cli_http_error(c, &resp, what);
    else if (rc == SAND_CLI_OK && !(*out = sand__cli_parse_body(c, &resp, what)))
        rc = SAND_CLI_FAILED;
    sand__cli_resp_release(&resp);
    return rc;
}

/* The app list of GET /v1/apps: an array, or {"apps": [...]}. */
static const json_t *apps_of(const json_t *v)
{
    return json_is_array(v) ? v : json_object_get(v, "apps");
}

static void print_app_table(sand_cli_t *c, const json_t *apps)
{
    if (!json_is_array(apps) || json_array_size(apps) == 0) {
        fprintf(c->out, "no apps deployed\n");
        return;
    }
    sand_cli_table_t t;
    sand__cli_table_init(&t, 4);
    sand__cli_table_add(&t, "NAME", "GRAINS", "WORKFLOWS", "STATE");
    for (size_t i = 0; i < json_array_size(apps); i++) {
        const json_t *a = json_array_get(apps, i);
        const char *name =
            json_is_string(a) ? json_string_value(a) : sand__cli_jstr(a, "app", NULL);
        if (!name)
            name = sand__cli_jstr(a, "name", "-");
        char grains[24];
        snprintf(grains, sizeof(grains), "%zu", count_of(json_object_get(a, "grains")));
        sand_bytes_t wfs;
        sand_bytes_init(&wfs, 4096);
        const json_t *w = json_object_get(a, "workflows");
        for (size_t k = 0; json_is_array(w) && k < json_array_size(w); k++) {
            const char *wn = wf_name(json_array_get(w, k));
            if (wn)
                sand_bytes_appendf(&wfs, "%s%s", wfs.len ? "," : "", wn);
        }
        sand__cli_table_add(&t, name, grains, wfs.len ? wfs.data : "-",
                            sand__cli_jstr(a, "state", "-"));
        sand_bytes_release(&wfs);
    }
    sand__cli_table_print(&t, c->out);
    sand__cli_table_release(&t);
}

int sand__cli_cmd_ls(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    int rc = parse_common(c, cmd, argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 0)
        return sand__cli_usage(c, cmd->name, "takes no arguments");
    json_t *v;
    if ((rc = get_json(c, "/v1/apps", "ls", &v)) != SAND_CLI_OK)
        return rc;
    if (c->json)
        sand__cli_print_json(c->out, v);
    else
        print_app_table(c, apps_of(v));
    json_decref(v);
    return SAND_CLI_OK;
}

static void print_app_status(sand_cli_t *c, const json_t *d)
{
    char mem[32];
    const json_t *version = json_object_get(d, "version");
    fprintf(c->out, "app      %s", sand__cli_jstr(d, "app", "-"));
    if (json_is_integer(version))
        fprintf(c->out, " (version %" JSON_INTEGER_FORMAT ")", json_integer_value(version));
    fprintf(c->out, "\nstate    %s\n", sand__cli_jstr(d, "state", "-"));
    const json_t *sbx = json_object_get(d, "sandbox");
    if (json_is_object(sbx)) {
        int64_t m = sand__cli_jint(sbx, "memory_bytes", -1);
        if (m >= 0)
            sand__cli_format_bytes(m, mem, sizeof(mem));
        fprintf(c->out, "sandbox  %s %s, %s, memory %s\n", sand__cli_jstr(sbx, "driver", "-"),
                sand__cli_jstr(sbx, "id", "-"), sand__cli_jstr(sbx, "state", "-"),
                m >= 0 ? mem : "-");
    }
    const json_t *grains = json_object_get(d, "grains");
    if (!json_is_array(grains) || json_array_size(grains) == 0)
        return;
    sand_cli_table_t t;
    sand__cli_table_init(&t, 7);
    sand__cli_table_add(&t, "GRAIN", "RUNTIME", "PIDS", "STATE", "RESTARTS", "QUEUE", "MEMORY");
    for (size_t i = 0; i < json_array_size(grains); i++) {
        const json_t *g = json_array_get(grains, i);
        const json_t *workers = json_object_get(g, "workers");
        sand_bytes_t pids, states;
        sand_bytes_init(&pids, 4096);
        sand_bytes_init(&states, 4096);
        int64_t restarts = 0, memory = -1;
        for (size_t k = 0; json_is_array(workers) && k < json_array_size(workers); k++) {
            const json_t *w = json_array_get(workers, k);
            int64_t pid = sand__cli_jint(w, "pid", 0);
            if (pid > 0)
                sand_bytes_appendf(&pids, "%s%" PRId64, pids.len ? "," : "", pid);
            const char *st = sand__cli_jstr(w, "state", NULL);
            if (st && !(states.data && strstr(states.data, st)))
                sand_bytes_appendf(&states, "%s%s", states.len ? "," : "", st);
            restarts += sand__cli_jint(w, "restarts", 0);
            int64_t m = sand__cli_jint(w, "memory_bytes", sand__cli_jint(w, "rss_bytes", -1));
            if (m >= 0)
                memory = (memory < 0 ? 0 : memory) + m;
        }
        if (memory < 0)
            memory = sand__cli_jint(g, "memory_bytes", -1);
        char rs[24], q[24];
        snprintf(rs, sizeof(rs), "%" PRId64, restarts);
        int64_t depth = sand__cli_jint(g, "queue_depth", -1);
        if (depth >= 0)
            snprintf(q, sizeof(q), "%" PRId64, depth);
        else
            snprintf(q, sizeof(q), "-");
        if (memory >= 0)
            sand__cli_format_bytes(memory, mem, sizeof(mem));
        sand__cli_table_add(&t, sand__cli_jstr(g, "name", "-"), sand__cli_jstr(g, "runtime", "-"),
                            pids.len ? pids.data : "-", states.len ? states.data : "-", rs, q,
                            memory >= 0 ? mem : "-");
        sand_bytes_release(&pids);
        sand_bytes_release(&states);
    }
    sand__cli_table_print(&t, c->out);
    sand__cli_table_release(&t);
}

int sand__cli_cmd_status(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    int rc = parse_common(c, cmd, argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1)
        return sand__cli_usage(c, cmd->name, "takes at most one app");
    json_t *v;
    if (argc - optind == 1) {
        sand_bytes_t path;
        sand_bytes_init(&path, 4096);
        sand_bytes_appends(&path, "/v1/apps");
        sand__cli_path_segment(&path, argv[optind]);
        char what[128];
        snprintf(what, sizeof(what), "status '%.64s'", argv[optind]);
        rc = get_json(c, path.data, what, &v);
        sand_bytes_release(&path);
        if (rc != SAND_CLI_OK)
            return rc;
        if (c->json)
            sand__cli_print_json(c->out, v);
        else
            print_app_status(c, v);
        json_decref(v);
        return SAND_CLI_OK;
    }

    /* the daemon's health, then the app list */
    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    if ((rc = sand__cli_request(c, "GET", "/healthz", NULL, NULL, 0, 30000, NULL, NULL, &resp))) {
        sand__cli_resp_release(&resp);
        return rc;
    }
    bool healthy = resp.status == 200;
    char health[256];
    size_t n = resp.body.len < sizeof(health) - 1 ? resp.body.len : sizeof(health) - 1;
    memcpy(health, resp.body.data ? resp.body.data : "", n);
    health[n] = '\0';
    health[strcspn(health, "\r\n")] = '\0';
    long status = resp.status;
    sand__cli_resp_release(&resp);

    if ((rc = get_json(c, "/v1/apps", "status", &v)) != SAND_CLI_OK)
        return rc;
    if (c->json) {
        json_t *all = json_pack("{s:s, s:b, s:O}", "server", c->server, "healthy", healthy, "apps",
                                apps_of(v) ? apps_of(v) : json_null());
        sand__cli_print_json(c->out, all);
        json_decref(all);
    } else {
        if (healthy)
            fprintf(c->out, "sandd %s: %s\n", c->server, health[0] ? health : "ok");
        else
            fprintf(c->out, "sandd %s: unhealthy (HTTP %ld)%s%s\n", c->server, status,
                    health[0] ? ": " : "", health);
        print_app_table(c, apps_of(v));
    }
    json_decref(v);
    return healthy ? SAND_CLI_OK : SAND_CLI_FAILED;
}

int sand__cli_cmd_rm(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    int rc = parse_common(c, cmd, argc, argv);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return sand__cli_usage(c, cmd->name, "expects one app");
    const char *app = argv[optind];
    sand_bytes_t path;
    sand_bytes_init(&path, 4096);
    sand_bytes_appends(&path, "/v1/apps");
    sand__cli_path_segment(&path, app);
    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    rc = sand__cli_request(c, "DELETE", path.data, NULL, NULL, 0, 120000, NULL, NULL, &resp);
    if (rc == SAND_CLI_OK) {
        if (resp.status == 204 || resp.status == 200) {
            if (c->json) {
                json_t *v = json_pack("{s:s, s:b}", "app", app, "deleted", 1);
                sand__cli_print_json(c->out, v);
                json_decref(v);
            } else {
                fprintf(c->out, "deleted app '%s'\n", app);
            }
        } else {
            char what[128];
            snprintf(what, sizeof(what), "rm '%.64s'", app);
            rc = sand__cli_http_error(c, &resp, what);
        }
    }
    sand__cli_resp_release(&resp);
    sand_bytes_release(&path);
    return rc;
}
