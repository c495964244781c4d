/*
 * sandctl's execution commands: invoke (blocking or --async, a workflow or one grain), get (the
 * execution record, with --trace the per-step timeline) and logs (one-shot or followed). The
 * event is checked to be JSON locally so a typo is a usage error (exit 2) and never a request.
 */
#include "cli.h"

#include "cli_internal.h"

#include <errno.h>
#include <string.h>

/* Reads all of f into out (bounded). Returns 0 or < 0 with errno-style failure. */
static int read_stream(FILE *f, sand_bytes_t *out)
{
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        if (sand_bytes_append(out, buf, n) < 0)
            return SAND_ETOOBIG;
    return ferror(f) ? SAND_EIO : 0;
}

static int read_event(sand_cli_t *c, const char *file, sand_bytes_t *out)
{
    bool std = !strcmp(file, "-");
    FILE *f = std ? stdin : fopen(file, "rb");
    if (!f)
        return sand__cli_fail(c, SAND_CLI_USAGE, "invoke: cannot open '%s': %s", file,
                              strerror(errno));
    int rc = read_stream(f, out);
    if (!std)
        fclose(f);
    if (rc == SAND_ETOOBIG)
        return sand__cli_fail(c, SAND_CLI_USAGE, "invoke: the event in '%s' is over %d bytes",
                              std ? "stdin" : file, SAND_CLI_MAX_EVENT);
    if (rc < 0)
        return sand__cli_fail(c, SAND_CLI_USAGE, "invoke: cannot read '%s'", std ? "stdin" : file);
    return SAND_CLI_OK;
}

/* Asks the server for the app's workflows and picks the only one. */
static int only_workflow(sand_cli_t *c, const char *app, char *out, size_t cap)
{
    sand_bytes_t path;
    sand_bytes_init(&path, 4096);
    sand_bytes_appends(&path, "/v1/apps");
    sand__cli_path_segment(&path, app);
    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    char what[128];
    snprintf(what, sizeof(what), "invoke '%.64s'", app);
    int rc = sand__cli_request(c, "GET", path.data, NULL, NULL, 0, 60000, NULL, NULL, &resp);
    json_t *desc = NULL;
    if (rc == SAND_CLI_OK && resp.status != 200)
        rc = sand__cli_http_error(c, &resp, what);
    else if (rc == SAND_CLI_OK && !(desc = sand__cli_parse_body(c, &resp, what)))
        rc = SAND_CLI_FAILED;
    sand__cli_resp_release(&resp);
    sand_bytes_release(&path);
    if (rc != SAND_CLI_OK)
        return rc;

    const json_t *wfs = json_object_get(desc, "workflows");
    size_t n = json_is_array(wfs) ? json_array_size(wfs) : 0;
    sand_bytes_t names;
    sand_bytes_init(&names, 4096);
    for (size_t i = 0; i < n; i++) {
        const json_t *w = json_array_get(wfs, i);
        const char *name =
            json_is_string(w) ? json_string_value(w) : sand__cli_jstr(w, "name", "?");
        sand_bytes_appendf(&names, "%s%s", i ? ", " : "", name);
        if (n == 1)
            sand_strlcpy(out, name, cap);
    }
    if (n == 0)
        rc = sand__cli_usage(c, "invoke", "app '%s' has no workflows; use --grain", app);
    else if (n > 1)
        rc = sand__cli_usage(c, "invoke", "app '%s' has %zu workflows (%s): name one", app, n,
                             names.data);
    sand_bytes_release(&names);
    json_decref(desc);
    return rc;
}

/* 502 and 504: the error object on stderr, exit 1. */
static int report_failure(sand_cli_t *c, const sand_cli_resp_t *resp)
{
    json_t *v = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL);
    const char *exec = sand__cli_jstr(v, "execution_id", resp->execution_id);
    int rc = SAND_CLI_FAILED;
    if (c->json && v) {
        sand__cli_print_json(c->err, v);
    } else if (resp->status == 504) {
        const char *msg = sand__cli_jstr(json_object_get(v, "error"), "message", NULL);
        sand__cli_fail(c, rc, "execution %s timed out%s%s", exec[0] ? exec : "(unknown)",
                       msg ? ": " : "", msg ? msg : "");
    } else if (json_is_object(json_object_get(v, "error"))) {
        sand_bytes_t line;
        sand_bytes_init(&line, 4096);
        sand_cli_format_error(json_object_get(v, "error"), &line);
        sand__cli_fail(c, rc, "%s", line.data ? line.data : "failed");
        sand_bytes_release(&line);
    } else {
        sand__cli_http_error(c, resp, "invoke");
    }
    json_decref(v);
    return rc;
}

int sand__cli_cmd_invoke(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},
        {"file", required_argument, NULL, 'f'},
        {"async", no_argument, NULL, OPT_ASYNC},
        {"grain", required_argument, NULL, OPT_GRAIN},
        SAND_CLI_COMMON_OPTS,
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *file = NULL, *grain = NULL;
    bool async = false;
    int sources = 0, o, rc;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":hd:f:", opts, NULL)) != -1) {
        switch (o) {
        case 'd':
            data = optarg;
            sources++;
            break;
        case 'f':
            file = optarg;
            sources++;
            break;
        case OPT_ASYNC:
            async = true;
            break;
        case OPT_GRAIN:
            grain = optarg;
            break;
        default:
            if ((rc = sand__cli_common_opt(c, cmd, o, argv)) >= 0)
                return rc;
        }
    }
    const char *pos[2] = {NULL, NULL};
    size_t npos = 0;
    for (int i = optind; i < argc; i++) {
        if (!strcmp(argv[i], "-")) {
            file = "-";
            sources++;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return sand__cli_usage(c, cmd->name, "unexpected argument '%s'", argv[i]);
        }
    }
    if (npos == 0)
        return sand__cli_usage(c, cmd->name, "missing APP");
    if (sources > 1)
        return sand__cli_usage(c, cmd->name, "give the event once: -d, -f or -");
    if (grain && npos == 2)
        return sand__cli_usage(c, cmd->name, "give either WORKFLOW or --grain, not both");

    sand_bytes_t body;
    sand_bytes_init(&body, SAND_CLI_MAX_EVENT);
    if (file && (rc = read_event(c, file, &body)) != SAND_CLI_OK)
        goto done;
    if (data && sand_bytes_appends(&body, data) < 0) {
        rc = sand__cli_fail(c, SAND_CLI_USAGE, "invoke: the event is over %d bytes",
                            SAND_CLI_MAX_EVENT);
        goto done;
    }
    if (!data && !file)
        sand_bytes_appends(&body, "{}");
    json_error_t jerr;
    json_t *check = json_loadb(body.data ? body.data : "", body.len, JSON_DECODE_ANY, &jerr);
    if (!check) {
        rc = sand__cli_fail(c, SAND_CLI_USAGE,
                            "invoke: the event is not valid JSON: %s (line %d, column %d)",
                            jerr.text, jerr.line, jerr.column);
        goto done;
    }
    json_decref(check);

    char wf[256] = "";
    if (!grain) {
        if (npos == 2)
            sand_strlcpy(wf, pos[1], sizeof(wf));
        else if ((rc = only_workflow(c, pos[0], wf, sizeof(wf))) != SAND_CLI_OK)
            goto done;
    }
    sand_bytes_t path;
    sand_bytes_init(&path, 4096);
    sand_bytes_appends(&path, "/v1/apps");
    sand__cli_path_segment(&path, pos[0]);
    sand_bytes_appends(&path, grain ? "/grains" : "/workflows");
    sand__cli_path_segment(&path, grain ? grain : wf);
    if (async)
        sand_bytes_appends(&path, "?async=1");

    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    rc = sand__cli_request(c, "POST", path.data, "application/json", body.data, body.len, 0, NULL,
                           NULL, &resp);
    sand_bytes_release(&path);
    if (rc == SAND_CLI_OK) {
        if (resp.status == 200) {
            if (resp.body.len)
                fwrite(resp.body.data, 1, resp.body.len, c->out);
            if (!resp.body.len || resp.body.data[resp.body.len - 1] != '\n')
                fputc('\n', c->out);
        } else if (resp.status == 202) {
            json_t *v = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
            const char *id = sand__cli_jstr(v, "execution_id", resp.execution_id);
            if (c->json)
                fprintf(c->out, "%s\n", resp.body.data ? resp.body.data : "{}");
            else if (id[0])
                fprintf(c->out, "%s\n", id);
            else
                rc = sand__cli_fail(c, SAND_CLI_FAILED, "invoke: no execution id in the answer");
            json_decref(v);
        } else if (resp.status == 502 || resp.status == 504) {
            rc = report_failure(c, &resp);
        } else {
            char what[160];
            snprintf(what, sizeof(what), "invoke '%.64s'", pos[0]);
            rc = sand__cli_http_error(c, &resp, what);
        }
    }
    sand__cli_resp_release(&resp);
done:
    sand_bytes_release(&body);
    return rc;
}

int sand__cli_cmd_get(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"trace", no_argument, NULL, OPT_TRACE},
        SAND_CLI_COMMON_OPTS,
        {NULL, 0, NULL, 0},
    };
    bool trace = false;
    int o, rc;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (o == OPT_TRACE)
            trace = true;
        else if ((rc = sand__cli_common_opt(c, cmd, o, argv)) >= 0)
            return rc;
    }
    if (argc - optind != 1)
        return sand__cli_usage(c, cmd->name, "expects one execution id");
    const char *id = argv[optind];
    sand_bytes_t path;
    sand_bytes_init(&path, 4096);
    sand_bytes_appends(&path, "/v1/executions");
    sand__cli_path_segment(&path, id);
    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    rc = sand__cli_request(c, "GET", path.data, NULL, NULL, 0, 60000, NULL, NULL, &resp);
    sand_bytes_release(&path);
    json_t *rec = NULL;
    char what[160];
    snprintf(what, sizeof(what), "get '%.64s'", id);
    if (rc == SAND_CLI_OK && resp.status != 200)
        rc = sand__cli_http_error(c, &resp, what);
    else if (rc == SAND_CLI_OK && !(rec = sand__cli_parse_body(c, &resp, what)))
        rc = SAND_CLI_FAILED;
    sand__cli_resp_release(&resp);
    if (rc != SAND_CLI_OK)
        return rc;

    if (c->json) {
        sand__cli_print_json(c->out, rec);
    } else {
        sand_bytes_t out;
        sand_bytes_init(&out, 64 << 20);
        sand_cli_format_execution(rec, &out);
        if (trace) {
            sand_bytes_appends(&out, "\n");
            sand_cli_format_trace(rec, 40, &out);
        }
        if (out.data)
            fputs(out.data, c->out);
        sand_bytes_release(&out);
    }
    json_decref(rec);
    return SAND_CLI_OK;
}

static void on_log_line(sand_cli_t *c, const char *line, size_t len, void *ud)
{
    if (!len)
        return;
    if (c->json) {
        fwrite(line, 1, len, c->out);
        fputc('\n', c->out);
        fflush(c->out);
        return;
    }
    json_t *v = json_loadb(line, len, 0, NULL);
    sand_bytes_t out;
    sand_bytes_init(&out, 2 << 20);
    if (v && sand_cli_format_log_line(v, &out) == 0 && out.data)
        fprintf(c->out, "%s\n", out.data);
    else
        fprintf(c->out, "%.*s\n", (int)len, line);
    fflush(c->out);
    sand_bytes_release(&out);
    json_decref(v);
}

int sand__cli_cmd_logs(sand_cli_t *c, const sand_cli_cmd_t *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"follow", no_argument, NULL, 'f'},
        {"grain", required_argument, NULL, OPT_GRAIN},
        {"since", required_argument, NULL, OPT_SINCE},
        SAND_CLI_COMMON_OPTS,
        {NULL, 0, NULL, 0},
    };
    bool follow = false;
    const char *grain = NULL;
    int64_t since = 0;
    int o, rc;
    optind = 0;
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":hf", opts, NULL)) != -1) {
        sand_err err;
        switch (o) {
        case 'f':
            follow = true;
            break;
        case OPT_GRAIN:
            grain = optarg;
            break;
        case OPT_SINCE:
            if (sand_parse_int(optarg, 0, INT64_MAX, &since, &err) < 0)
                return sand__cli_usage(c, cmd->name,
                                       "--since '%s' is not a number of "
                                       "microseconds",
                                       optarg);
            break;
        default:
            if ((rc = sand__cli_common_opt(c, cmd, o, argv)) >= 0)
                return rc;
        }
    }
    if (argc - optind != 1)
        return sand__cli_usage(c, cmd->name, "expects one app");
    const char *app = argv[optind];
    sand_bytes_t path;
    sand_bytes_init(&path, 4096);
    sand_bytes_appends(&path, "/v1/apps");
    sand__cli_path_segment(&path, app);
    sand_bytes_appendf(&path, "/logs?since=%lld", (long long)since);
    if (grain) {
        sand_bytes_appends(&path, "&grain=");
        /* the segment helper adds a '/', which a query value must not have */
        size_t at = path.len;
        sand__cli_path_segment(&path, grain);
        memmove(path.data + at, path.data + at + 1, path.len - at);
        path.len--;
    }
    if (follow)
        sand_bytes_appends(&path, "&follow=1");

    sand_cli_resp_t resp;
    sand__cli_resp_init(&resp);
    rc = sand__cli_request(c, "GET", path.data, NULL, NULL, 0, follow ? 0 : 60000, on_log_line,
                           NULL, &resp);
    if (rc == SAND_CLI_OK && resp.status != 200) {
        char what[160];
        snprintf(what, sizeof(what), "logs '%.64s'", app);
        rc = sand__cli_http_error(c, &resp, what);
    }
    sand__cli_resp_release(&resp);
    sand_bytes_release(&path);
    return rc;
}
