/*
 * Tests of sandctl: the real binary is run against a scripted HTTP server on a loopback port
 * (a thread in this process), checking what it sends (method, path, key, body) and its exit
 * codes and output for every answer a command can get: success, 400 with file and line, 401,
 * 404, 502 with an error object, 504, 202, an unreachable server, a sandbox that starts slowly
 * or fails. The trace and log formatting is also checked directly.
 */
#define _GNU_SOURCE /* strcasestr, memmem */
#include "cli.h"

#include "sand/bundle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define SANDCTL SAND_BINARY_DIR "/bin/sandctl"

/* ---- scripted HTTP server ------------------------------------------------------------------ */

typedef struct req {
    char method[16];
    char target[1024];
    char auth[256];
    char ctype[128];
    char *body;
    size_t body_len;
} req;

typedef struct answer {
    int status;
    char body[8192];
    char headers[256];
} answer;

typedef void (*handler_fn)(const req *r, int nth, answer *a);

static struct {
    int lfd;
    int port;
    pthread_t thread;
    volatile int stop;
    pthread_mutex_t mu;
    handler_fn handler;
    req reqs[64];
    int nreqs;
} srv;

static char g_tmp[PATH_MAX];

static void read_request(int fd, req *r)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    char *end = NULL;
    while (!end) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    memset(r, 0, sizeof(*r));
    if (!end) {
        free(buf);
        return;
    }
    sscanf(buf, "%15s %1023s", r->method, r->target);
    size_t clen = 0;
    for (char *line = strstr(buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (!strncasecmp(line, "Content-Length:", 15))
            clen = strtoul(line + 15, NULL, 10);
        else if (!strncasecmp(line, "Authorization:", 14))
            sscanf(line + 14, " %255[^\r]", r->auth);
        else if (!strncasecmp(line, "Content-Type:", 13))
            sscanf(line + 13, " %127[^\r]", r->ctype);
    }
    size_t have = len - (size_t)(end + 4 - buf);
    r->body = malloc(clen + 1);
    memcpy(r->body, end + 4, have < clen ? have : clen);
    while (have < clen) {
        ssize_t n = read(fd, r->body + have, clen - have);
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    r->body_len = have < clen ? have : clen;
    r->body[r->body_len] = '\0';
    free(buf);
}

static void *serve(void *arg)
{
    while (!srv.stop) {
        struct pollfd p = {.fd = srv.lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(srv.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        req r;
        read_request(fd, &r);
        answer a = {.status = 404,
                    .body = "{\"error\":{\"code\":\"not_found\",\"message\":\"no "
                            "such thing\"}}"};
        pthread_mutex_lock(&srv.mu);
        int nth = srv.nreqs;
        if (srv.handler)
            srv.handler(&r, nth, &a);
        if (srv.nreqs < 64)
            srv.reqs[srv.nreqs++] = r;
        else
            free(r.body);
        pthread_mutex_unlock(&srv.mu);
        char head[1024];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: "
                         "%zu\r\nConnection: close\r\n%s\r\n",
                         a.status, strlen(a.body), a.headers);
        (void)!write(fd, head, (size_t)n);
        (void)!write(fd, a.body, strlen(a.body));
        close(fd);
    }
    return NULL;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    memset(&srv, 0, sizeof(srv));
    pthread_mutex_init(&srv.mu, NULL);
    srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(srv.lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(srv.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(srv.lfd, (struct sockaddr *)&sa, &sl), 0);
    srv.port = ntohs(sa.sin_port);
    assert_int_equal(listen(srv.lfd, 16), 0);
    assert_int_equal(pthread_create(&srv.thread, NULL, serve, NULL), 0);
    int n = snprintf(g_tmp, sizeof(g_tmp), "/tmp/%s", "sand-cli-test-");
    memset(g_tmp + n, 'X', 6); /* the mkdtemp template */
    g_tmp[n + 6] = '\0';
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown(void **state)
{
    srv.stop = 1;
    pthread_join(srv.thread, NULL);
    close(srv.lfd);
    for (int i = 0; i < srv.nreqs; i++)
        free(srv.reqs[i].body);
    pthread_mutex_destroy(&srv.mu);
    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- running sandctl ----------------------------------------------------------------------- */

typedef struct run_result {
    int code;
    char out[16384];
    char err[16384];
} run_result;

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Runs sandctl with the given arguments (NULL-terminated), SAND_SERVER pointing at the scripted
 * server (or at server when not NULL) and SAND_API_KEY=k; stdin from stdin_text. */
static void run_with(run_result *res, const char *server, const char *stdin_text, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)SANDCTL;
    va_list ap;
    va_start(ap, stdin_text);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;

    char env_server[128];
    if (server)
        snprintf(env_server, sizeof(env_server), "SAND_SERVER=%s", server);
    else
        snprintf(env_server, sizeof(env_server), "SAND_SERVER=http://127.0.0.1:%d", srv.port);
    char *envp[] = {env_server, (char *)"SAND_API_KEY=k", (char *)"TZ=UTC",
                    (char *)"SAND_DATA_DIR=/nonexistent", NULL};
    char out[PATH_MAX + 16], err[PATH_MAX + 16], in[PATH_MAX + 16];
    snprintf(out, sizeof(out), "%s/.out", g_tmp);
    snprintf(err, sizeof(err), "%s/.err", g_tmp);
    snprintf(in, sizeof(in), "%s/.in", g_tmp);
    FILE *f = fopen(in, "wb");
    assert_non_null(f);
    if (stdin_text)
        fputs(stdin_text, f);
    fclose(f);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int i = open(in, O_RDONLY), o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600),
            e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (i < 0 || o < 0 || e < 0)
            _exit(127);
        dup2(i, 0);
        dup2(o, 1);
        dup2(e, 2);
        execve(SANDCTL, argv, envp);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    res->code = WEXITSTATUS(st);
    slurp(out, res->out, sizeof(res->out));
    slurp(err, res->err, sizeof(res->err));
}

#define RUN(res, ...) run_with(res, NULL, NULL, __VA_ARGS__, NULL)

static void expect(const run_result *r, int code, const char *in_out, const char *in_err)
{
    if (r->code != code || (in_out && !strstr(r->out, in_out)) ||
        (in_err && !strstr(r->err, in_err)))
        fail_msg("expected exit %d, out~'%s', err~'%s'; got %d\n--- out\n%s--- err\n%s", code,
                 in_out ? in_out : "", in_err ? in_err : "", r->code, r->out, r->err);
}

static int nreqs(void)
{
    pthread_mutex_lock(&srv.mu);
    int n = srv.nreqs;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

static void write_app(const char *dir, const char *yaml)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", g_tmp, dir);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/%s/app.yaml", g_tmp, dir);
    FILE *f = fopen(p, "w");
    fputs(yaml, f);
    fclose(f);
    snprintf(p, sizeof(p), "%s/%s/echo.py", g_tmp, dir);
    f = fopen(p, "w");
    fputs("def handle(event, context):\n    return event\n", f);
    fclose(f);
}

static const char APP_YAML[] = "app: demo\n"
                               "grains:\n"
                               "  echo: {runtime: python, code: echo.py}\n"
                               "workflows:\n"
                               "  main:\n"
                               "    start: echo\n"
                               "    steps:\n"
                               "      echo: {grain: echo}\n";

/* ---- handlers ------------------------------------------------------------------------------ */

static void answer_set(answer *a, int status, const char *body)
{
    a->status = status;
    snprintf(a->body, sizeof(a->body), "%s", body);
}

static void h_invoke(const req *r, int nth, answer *a)
{
    if (!strcmp(r->method, "GET") && !strcmp(r->target, "/v1/apps/demo"))
        answer_set(a, 200,
                   "{\"app\":\"demo\",\"state\":\"ready\",\"workflows\":[{\"name\":"
                   "\"main\"}]}");
    else if (!strcmp(r->method, "GET") && !strcmp(r->target, "/v1/apps/two"))
        answer_set(a, 200, "{\"app\":\"two\",\"workflows\":[{\"name\":\"a\"},{\"name\":\"b\"}]}");
    else if (strstr(r->target, "?async=1")) {
        answer_set(a, 202, "{\"execution_id\":\"e-async-1\"}");
    } else if (!strcmp(r->method, "POST") && strstr(r->target, "/workflows/main")) {
        a->status = 200;
        snprintf(a->body, sizeof(a->body), "{\"echo\":%s}", r->body);
        snprintf(a->headers, sizeof(a->headers), "X-Sand-Execution-Id: e-1\r\n");
    } else if (!strcmp(r->method, "POST") && strstr(r->target, "/grains/echo")) {
        answer_set(a, 200, "\"grain\"");
    } else if (strstr(r->target, "/workflows/fails")) {
        answer_set(a, 502,
                   "{\"error\":{\"step\":\"resize\",\"grain\":\"resize\",\"type\":"
                   "\"ValueError\",\"message\":\"bad size\",\"attempt\":1},"
                   "\"execution_id\":\"e-2\"}");
    } else if (strstr(r->target, "/workflows/slow")) {
        answer_set(a, 504,
                   "{\"error\":{\"code\":\"timeout\",\"message\":\"deadline 30s\"},"
                   "\"execution_id\":\"e-3\"}");
    }
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_usage_errors(void **state)
{
    run_result r;
    RUN(&r, "--help");
    expect(&r, 0, "usage: sandctl", NULL);
    RUN(&r, "rm", "--help");
    expect(&r, 0, "usage: sandctl [global options] rm APP", NULL);
    run_with(&r, NULL, NULL, NULL);
    expect(&r, 2, NULL, "sandctl: missing COMMAND");
    RUN(&r, "frobnicate");
    expect(&r, 2, NULL, "sandctl: unknown command 'frobnicate'");
    RUN(&r, "invoke");
    expect(&r, 2, NULL, "sandctl: invoke: missing APP");
    RUN(&r, "invoke", "demo", "main", "-d", "{\"a\":");
    expect(&r, 2, NULL, "the event is not valid JSON");
    RUN(&r, "invoke", "demo", "main", "-d", "{}", "-");
    expect(&r, 2, NULL, "give the event once");
    RUN(&r, "invoke", "demo", "main", "--grain", "echo");
    expect(&r, 2, NULL, "not both");
    RUN(&r, "get", "--frob", "x");
    expect(&r, 2, NULL, "unknown option '--frob'");
    RUN(&r, "logs", "demo", "--since", "yesterday");
    expect(&r, 2, NULL, "--since 'yesterday'");
    RUN(&r, "logs", "demo", "--grain");
    expect(&r, 2, NULL, "option '--grain' needs a value");
    RUN(&r, "--server", "ftp://x", "ls");
    expect(&r, 2, NULL, "must be an http");
    assert_int_equal(nreqs(), 0); /* none of these reached the server */
}

static void test_unreachable(void **state)
{
    /* a port nobody listens on: bind, read the port, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
    run_result r;
    run_with(&r, url, NULL, "ls", NULL);
    expect(&r, 3, NULL, "sandctl: cannot reach sandd at");
    run_with(&r, url, NULL, "invoke", "demo", "main", NULL);
    expect(&r, 3, NULL, "cannot reach");
}

static void h_401(const req *r, int nth, answer *a)
{
    answer_set(a, 401, "{\"error\":{\"code\":\"unauthorized\",\"message\":\"unauthorized\"}}");
}

static void test_auth_refused(void **state)
{
    srv.handler = h_401;
    run_result r;
    RUN(&r, "ls");
    expect(&r, 3, NULL, "refused the API key (HTTP 401)");
    RUN(&r, "--key", "other", "rm", "demo");
    expect(&r, 3, NULL, "HTTP 401");
    assert_string_equal(srv.reqs[0].auth, "Bearer k");
    assert_string_equal(srv.reqs[1].auth, "Bearer other"); /* --key wins over SAND_API_KEY */
}

static void test_invoke(void **state)
{
    srv.handler = h_invoke;
    run_result r;
    RUN(&r, "invoke", "demo", "main", "-d", "{\"x\":1}");
    expect(&r, 0, "{\"echo\":{\"x\":1}}\n", NULL);
    assert_string_equal(srv.reqs[0].method, "POST");
    assert_string_equal(srv.reqs[0].target, "/v1/apps/demo/workflows/main");
    assert_string_equal(srv.reqs[0].ctype, "application/json");
    assert_string_equal(srv.reqs[0].auth, "Bearer k");

    /* default event, and the only workflow found by asking the server */
    RUN(&r, "invoke", "demo");
    expect(&r, 0, "{\"echo\":{}}", NULL);
    assert_string_equal(srv.reqs[1].target, "/v1/apps/demo");
    assert_string_equal(srv.reqs[2].target, "/v1/apps/demo/workflows/main");

    RUN(&r, "invoke", "two");
    expect(&r, 2, NULL, "app 'two' has 2 workflows (a, b): name one");

    /* stdin and -f */
    run_with(&r, NULL, "[1, 2, 3]", "invoke", "demo", "main", "-", NULL);
    expect(&r, 0, "{\"echo\":[1, 2, 3]}", NULL);
    char f[PATH_MAX + 16];
    snprintf(f, sizeof(f), "%s/ev.json", g_tmp);
    FILE *fp = fopen(f, "w");
    fputs("\"text\"", fp);
    fclose(fp);
    RUN(&r, "invoke", "demo", "main", "-f", f);
    expect(&r, 0, "{\"echo\":\"text\"}", NULL);

    RUN(&r, "invoke", "demo", "--grain", "echo", "-d", "{}");
    expect(&r, 0, "\"grain\"", NULL);

    RUN(&r, "invoke", "demo", "main", "--async");
    expect(&r, 0, "e-async-1\n", NULL);
    assert_string_equal(srv.reqs[nreqs() - 1].target, "/v1/apps/demo/workflows/main?async=1");
}

static void test_invoke_failures(void **state)
{
    srv.handler = h_invoke;
    run_result r;
    RUN(&r, "invoke", "demo", "fails");
    expect(&r, 1, NULL, "sandctl: step 'resize' failed: ValueError: bad size\n");
    assert_string_equal(r.out, "");
    RUN(&r, "--json", "invoke", "demo", "fails");
    expect(&r, 1, NULL, "\"type\": \"ValueError\"");
    RUN(&r, "invoke", "demo", "slow");
    expect(&r, 1, NULL, "sandctl: execution e-3 timed out");
    RUN(&r, "invoke", "nope", "other");
    expect(&r, 1, NULL, "no such thing (HTTP 404)");
}

static int g_polls;

static void h_deploy(const req *r, int nth, answer *a)
{
    if (!strcmp(r->method, "POST") && !strcmp(r->target, "/v1/apps")) {
        answer_set(a, 201, "{\"app\":\"demo\",\"version\":2,\"state\":\"starting\"}");
    } else if (!strcmp(r->method, "GET") && !strcmp(r->target, "/v1/apps/demo")) {
        if (++g_polls < 3)
            answer_set(a, 200, "{\"app\":\"demo\",\"state\":\"starting\"}");
        else
            answer_set(a, 200,
                       "{\"app\":\"demo\",\"version\":2,\"state\":\"ready\",\"sandbox\":"
                       "{\"driver\":\"process\",\"id\":\"p1\"},\"workflows\":[{\"name\":"
                       "\"main\"}]}");
    }
}

static void test_deploy(void **state)
{
    write_app("app", APP_YAML);
    char dir[PATH_MAX + 8], url[128];
    snprintf(dir, sizeof(dir), "%s/app", g_tmp);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/apps/demo/workflows/main", srv.port);
    srv.handler = h_deploy;
    g_polls = 0;
    run_result r;
    RUN(&r, "deploy", dir);
    expect(&r, 0, url, "sandctl: waiting for sandbox of 'demo'...");
    assert_non_null(strstr(r.out, "deployed app 'demo' (version 2), sandbox ready"));
    assert_int_equal(g_polls, 3);

    /* the upload is the bundle: gzip, and it unpacks to the app */
    const req *up = &srv.reqs[0];
    assert_string_equal(up->target, "/v1/apps");
    assert_string_equal(up->ctype, "application/gzip");
    assert_true(up->body_len > 2 && (unsigned char)up->body[0] == 0x1f);
    char dest[PATH_MAX + 16], yaml[PATH_MAX + 32];
    snprintf(dest, sizeof(dest), "%s/unpacked", g_tmp);
    sand_err err = {0};
    assert_int_equal(sand_bundle_unpack(up->body, up->body_len, dest, NULL, &err), 0);
    snprintf(yaml, sizeof(yaml), "%s/echo.py", dest);
    assert_int_equal(access(yaml, R_OK), 0);
}

static void h_deploy_400(const req *r, int nth, answer *a)
{
    answer_set(a, 400,
               "{\"error\":{\"code\":\"bad_bundle\",\"message\":\"grains.echo.code: no "
               "such file\",\"file\":\"app.yaml\",\"line\":3}}");
}

static void h_deploy_failed(const req *r, int nth, answer *a)
{
    answer_set(a, 200, "{\"app\":\"demo\",\"state\":\"failed\",\"error\":\"image missing\"}");
}

static void test_deploy_errors(void **state)
{
    write_app("app", APP_YAML);
    write_app("bad", "app: demo\ngrains:\n  echo: {runtime: cobol, code: echo.py}\n");
    char dir[PATH_MAX + 8], bad[PATH_MAX + 8];
    snprintf(dir, sizeof(dir), "%s/app", g_tmp);
    snprintf(bad, sizeof(bad), "%s/bad", g_tmp);
    run_result r;
    RUN(&r, "deploy", bad);
    expect(&r, 2, NULL, "/bad/app.yaml:3:");
    assert_non_null(strstr(r.err, "cobol"));
    assert_int_equal(nreqs(), 0); /* validated locally, never uploaded */
    RUN(&r, "validate", bad);
    expect(&r, 2, NULL, "sandctl: validate: ");

    srv.handler = h_deploy_400;
    RUN(&r, "deploy", dir);
    expect(&r, 2, NULL, "app.yaml:3: grains.echo.code: no such file (HTTP 400)");
    srv.handler = h_deploy_failed;
    RUN(&r, "deploy", dir);
    expect(&r, 1, NULL, "the sandbox of 'demo' failed to start: image missing");
}

static void test_validate(void **state)
{
    write_app("app", APP_YAML);
    char dir[PATH_MAX + 8];
    snprintf(dir, sizeof(dir), "%s/app", g_tmp);
    run_result r;
    RUN(&r, "validate", dir);
    expect(&r, 0, "app 'demo': 1 grain, 1 workflow (main)\n", NULL);
    assert_int_equal(nreqs(), 0);
}

static const char RECORD[] =
    "{\"execution_id\":\"e-9\",\"app\":\"demo\",\"workflow\":\"main\",\"status\":\"succeeded\","
    "\"input\":{},\"output\":{\"ok\":true},\"started_us\":1000000,\"finished_us\":1100000,"
    "\"steps\":["
    "{\"step\":\"b\",\"grain\":\"gb\",\"attempt\":2,\"status\":\"succeeded\",\"queued_us\":"
    "1050000,\"started_us\":1060000,\"finished_us\":1100000,\"pid\":43},"
    "{\"step\":\"a\",\"grain\":\"ga\",\"attempt\":1,\"status\":\"succeeded\",\"queued_us\":"
    "1000000,\"started_us\":1000000,\"finished_us\":1050000,\"pid\":42}]}";

static void h_get(const req *r, int nth, answer *a)
{
    if (!strcmp(r->target, "/v1/executions/e-9"))
        answer_set(a, 200, RECORD);
    else if (!strncmp(r->target, "/v1/apps/demo/logs", 18))
        answer_set(a, 200,
                   "{\"time_us\":1000000,\"grain\":\"echo\",\"step\":\"echo\","
                   "\"execution_id\":\"e-9\",\"kind\":\"log\",\"message\":\"hello\\n\"}\n"
                   "{\"time_us\":2000000,\"grain\":\"echo\",\"kind\":\"stderr\","
                   "\"message\":\"bye\"}\n");
    else if (!strcmp(r->target, "/v1/apps"))
        answer_set(a, 200,
                   "[{\"app\":\"demo\",\"state\":\"ready\",\"grains\":[{\"name\":\"e\"},"
                   "{\"name\":\"f\"}],\"workflows\":[{\"name\":\"main\"}]}]");
    else if (!strcmp(r->target, "/v1/apps/demo"))
        answer_set(a, 200,
                   "{\"app\":\"demo\",\"state\":\"ready\",\"sandbox\":{\"driver\":"
                   "\"docker\",\"id\":\"c0ffee\",\"state\":\"running\",\"memory_bytes\":"
                   "47185920},\"grains\":[{\"name\":\"echo\",\"runtime\":\"python\","
                   "\"workers\":[{\"pid\":4242,\"state\":\"running\",\"restarts\":1}],"
                   "\"queue_depth\":5}]}");
    else if (!strcmp(r->target, "/healthz"))
        answer_set(a, 200, "ok");
    else if (!strcmp(r->method, "DELETE") && !strcmp(r->target, "/v1/apps/demo"))
        answer_set(a, 204, "");
}

static void test_get_logs_ls_status_rm(void **state)
{
    srv.handler = h_get;
    run_result r;
    RUN(&r, "get", "e-9");
    expect(&r, 0, "status     succeeded", NULL);
    assert_non_null(strstr(r.out, "duration   100.0 ms"));
    assert_non_null(strstr(r.out, "output     {\"ok\":true}"));
    RUN(&r, "get", "e-9", "--trace");
    expect(&r, 0, "STEP", NULL);
    assert_non_null(strstr(r.out, "OFFSET_MS"));
    assert_true(strstr(r.out, "a ") < strstr(r.out, "b ")); /* sorted by queue time */
    RUN(&r, "--json", "get", "e-9");
    expect(&r, 0, "\"execution_id\": \"e-9\"", NULL);
    RUN(&r, "get", "e-404");
    expect(&r, 1, NULL, "get 'e-404': no such thing (HTTP 404)");

    RUN(&r, "logs", "demo", "--grain", "echo", "--since", "5");
    expect(&r, 0, "1970-01-01 00:00:01.000 echo [e-9] hello\n", NULL);
    assert_non_null(strstr(r.out, "00:00:02.000 echo [-] bye\n"));
    assert_string_equal(srv.reqs[nreqs() - 1].target, "/v1/apps/demo/logs?since=5&grain=echo");

    RUN(&r, "ls");
    expect(&r, 0, "NAME", NULL);
    assert_non_null(strstr(r.out, "demo  2       main       ready"));
    RUN(&r, "status", "demo");
    expect(&r, 0, "sandbox  docker c0ffee, running, memory 45.0 MiB", NULL);
    assert_non_null(strstr(r.out, "echo   python   4242  running  1         5"));
    RUN(&r, "status");
    expect(&r, 0, ": ok\n", NULL);

    RUN(&r, "rm", "demo");
    expect(&r, 0, "deleted app 'demo'", NULL);
    assert_string_equal(srv.reqs[nreqs() - 1].method, "DELETE");
    RUN(&r, "rm", "ghost");
    expect(&r, 1, NULL, "rm 'ghost': no such thing (HTTP 404)");
}

/* ---- formatting, directly ------------------------------------------------------------------ */

static void test_format_trace(void **state)
{
    json_t *rec = json_loads(RECORD, 0, NULL);
    assert_non_null(rec);
    sand_bytes_t out;
    sand_bytes_init(&out, 1 << 20);
    assert_int_equal(sand_cli_format_trace(rec, 20, &out), 0);
    /* a ran from 0 to 50 ms of 100: the first half of the bar; b waited 50->60 (two 5 ms cells)
     * then ran */
    assert_non_null(strstr(out.data, "|##########          |"));
    assert_non_null(strstr(out.data, "|          ..########|"));
    assert_non_null(strstr(out.data, "10.0     40.0    60.0"));
    assert_non_null(strstr(out.data, "total 100.0 ms"));
    sand_bytes_release(&out);

    sand_bytes_init(&out, 1 << 20);
    json_t *err = json_pack("{s:s, s:s, s:s}", "step", "x", "type", "Timeout", "message", "30s");
    assert_int_equal(sand_cli_format_error(err, &out), 0);
    assert_string_equal(out.data, "step 'x' failed: Timeout: 30s");
    sand_bytes_release(&out);
    json_decref(err);

    /* missing fields are tolerated */
    json_t *empty = json_object();
    sand_bytes_init(&out, 1 << 20);
    assert_int_equal(sand_cli_format_trace(empty, 20, &out), 0);
    assert_string_equal(out.data, "(no steps recorded)\n");
    sand_bytes_reset(&out);
    assert_int_equal(sand_cli_format_execution(empty, &out), 0);
    assert_non_null(strstr(out.data, "status     -"));
    sand_bytes_release(&out);
    json_decref(empty);
    json_decref(rec);
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_usage_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invoke_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deploy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deploy_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_logs_ls_status_rm, setup, teardown),
        cmocka_unit_test(test_format_trace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
