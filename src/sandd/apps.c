/*
 * The deployed applications: deploy (unpack and validate off the loop, then install the new
 * version, its Redis ACL user and queues, its global-bus topics and its sandbox), delete, describe
 * (with live worker states from the supervisor and queue depths), restore after a restart
 * (reload models, adopt the sandboxes that outlived the previous sandd), and restart of a sandbox
 * that died. On disk: data_dir/apps/APP/vN/ (bundle of version N), APP/current -> vN,
 * APP/acl.pass (the app's Redis password, 0600).
 */
#define _GNU_SOURCE /* nftw */
#include "sandd_internal.h"

#include "sand/bundle.h"
#include "sand/protocol.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <hiredis/hiredis.h>
#include <unistd.h>

#define COMP "apps"

/* Commands an app's Redis user may run: the worker and supervisor protocol and the data layer,
 * nothing that reaches other keys or the server's configuration. */
static const char *const acl_commands[] = {
    "+ping",          "+auth",       "+hello",        "+client|setname",
    "+xadd",          "+xreadgroup", "+xack",         "+xdel",
    "+xgroup|create", "+xautoclaim", "+xclaim",       "+xpending",
    "+xlen",          "+xrange",     "+xinfo|stream", "+multi",
    "+exec",          "+discard",    "+eval",         "+evalsha",
    "+script|load",   "+get",        "+set",          "+del",
    "+unlink",        "+exists",     "+strlen",       "+getrange",
    "+setrange",      "+append",     "+hset",         "+hget",
    "+hgetall",       "+hdel",       "+hlen",         "+expire",
    "+pexpire",       "+ttl",        "+pttl",
};

const sand_app_t *apps_lookup_model(const char *name, void *ud)
{
    sand_daemon *d = ud;
    app_entry_t *a = sand_map_get(&d->apps, name);
    return a ? a->model : NULL;
}

app_entry_t *apps_get(sand_daemon *d, const char *name)
{
    return sand_map_get(&d->apps, name);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* ---- Redis and Kafka state of an app -------------------------------------------------- */

static void log_reply(sand_lbus_t *lbus, int status, const redisReply *reply, const char *errstr,
                      void *ud)
{
    const char *what = ud;
    if (status < 0)
        SAND_WARN(COMP, "%s: %s", what, errstr);
    else if (reply && reply->type == REDIS_REPLY_ERROR && !strstr(reply->str, "BUSYGROUP"))
        SAND_WARN(COMP, "%s: %s", what, reply->str);
}

struct topic_req {
    sand_daemon *d;
    char topic[256];
};

/* The topic exists: add its partitions to the consumer's assignment (once per topic), so the
 * committed offsets can be fetched. */
static void topic_done(sand_gbus_t *gbus, int status, const char *errstr, void *ud)
{
    struct topic_req *t = ud;
    sand_daemon *d = t->d;
    if (status < 0 && status != SAND_ECANCELED)
        SAND_WARN(COMP, "global bus topic '%s': %s", t->topic, errstr);
    if (status == 0 && !d->stopping && !sand_map_get(&d->assigned, t->topic)) {
        sand_err aerr;
        if (sand_gbus_assign(gbus, t->topic, (int)d->cfg.global_bus_partitions, &aerr) < 0)
            SAND_WARN(COMP, "%s", aerr.msg);
        else
            sand_map_set(&d->assigned, t->topic, d, NULL);
    }
    free(t);
}

/* Creates (or refreshes) the app's ACL user, its queues' consumer groups and its topics. */
static void prepare_buses(sand_daemon *d, app_entry_t *a)
{
    char keys[SAND_NAME_MAX + 16], chans[SAND_NAME_MAX + 16], pass[80];
    snprintf(keys, sizeof(keys), "~sand:%s:*", a->name);
    snprintf(chans, sizeof(chans), "&sand:%s:*", a->name);
    snprintf(pass, sizeof(pass), ">%s", a->acl_pass);
    const char *argv[8 + SAND_ARRAY_LEN(acl_commands)];
    int argc = 0;
    argv[argc++] = "ACL";
    argv[argc++] = "SETUSER";
    argv[argc++] = a->acl_user;
    argv[argc++] = "reset";
    argv[argc++] = "on";
    argv[argc++] = pass;
    argv[argc++] = keys;
    argv[argc++] = chans;
    for (size_t i = 0; i < SAND_ARRAY_LEN(acl_commands); i++)
        argv[argc++] = acl_commands[i];
    sand_lbus_command_argv(d->lbus, log_reply, "acl setuser", argc, argv, NULL);
    for (size_t i = 0; i < a->model->n_grains; i++) {
        char q[256], topic[256];
        snprintf(q, sizeof(q), SAND_KEY_QUEUE_FMT, a->name, a->model->grains[i]->name);
        sand_lbus_command(d->lbus, log_reply, "xgroup create", "XGROUP CREATE %s %s 0 MKSTREAM", q,
                          SAND_GROUP_WORKERS);
        snprintf(topic, sizeof(topic), SAND_TOPIC_FMT, a->name, a->model->grains[i]->name);
        struct topic_req *t = calloc(1, sizeof(*t));
        if (!t)
            continue;
        t->d = d;
        sand_strlcpy(t->topic, topic, sizeof(t->topic));
        if (sand_gbus_ensure_topic(d->gbus, topic, (int)d->cfg.global_bus_partitions, topic_done, t,
                                   NULL) < 0)
            free(t);
    }
    char ha[128];
    snprintf(ha, sizeof(ha), SAND_KEY_AGENT_FMT, a->name);
    sand_lbus_command(d->lbus, log_reply, "xgroup create", "XGROUP CREATE %s %s 0 MKSTREAM", ha,
                      SAND_GROUP_AGENT);
    if (d->reader)
        sand_lbus_reader_add(d->reader, ha, NULL);
}

/* Reads or creates apps_dir/APP/acl.pass. */
static int load_acl_pass(sand_daemon *d, app_entry_t *a, sand_err *err)
{
    char path[PATH_MAX + 80];
    snprintf(path, sizeof(path), "%s/%s/acl.pass", d->apps_dir, a->name);
    snprintf(a->acl_user, sizeof(a->acl_user), "app-%s", a->name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, a->acl_pass, 64);
        close(fd);
        if (n == 64) {
            a->acl_pass[64] = '\0';
            return 0;
        }
    }
    if (sand_random_hex(a->acl_pass, 32) < 0)
        return sand_err_set(err, SAND_EIO, "cannot generate a password");
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, a->acl_pass, 64) != 64) {
        if (fd >= 0)
            close(fd);
        return sand_err_errno(err, SAND_EIO, "write '%s'", path);
    }
    close(fd);
    return 0;
}

/* ---- sandboxes --------------------------------------------------------------------------- */

static void start_sandboxes(app_entry_t *a);

static void on_restart_timer(uv_timer_t *t)
{
    app_entry_t *a = t->data;
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    a->restart_timer = NULL;
    if (a->state != APP_DELETING && !a->busy && !a->d->stopping)
        start_sandboxes(a);
}

static bool cold_mode(const sand_daemon *d)
{
    return strcmp(d->cfg.sandbox_cold, "on") == 0;
}

static void on_sandbox_exit(sand_sbx_t *sbx, int status, void *ud)
{
    app_entry_t *a = ud;
    if (!cold_mode(a->d))
        SAND_WARN(COMP, "sandbox %s of '%s' exited (status %d); restarting", sand_sbx_id(sbx),
                  a->name, status);
    for (size_t i = 0; i < a->sandboxes.len; i++) {
        if (a->sandboxes.items[i] == sbx) {
            sand_vec_remove(&a->sandboxes, i);
            break;
        }
    }
    sand_sbx_free(sbx);
    if (cold_mode(a->d))
        return; /* a cold sandbox ends with its one event */
    a->sandbox_restarts++;
    if (a->restart_timer || a->d->stopping || a->state == APP_DELETING)
        return;
    a->restart_timer = malloc(sizeof(uv_timer_t));
    if (!a->restart_timer)
        return;
    uv_timer_init(a->d->loop, a->restart_timer);
    a->restart_timer->data = a;
    int64_t backoff = 200LL << (a->sandbox_restarts < 7 ? a->sandbox_restarts : 7);
    uv_timer_start(a->restart_timer, on_restart_timer, (uint64_t)backoff, 0);
}

/* Starts the sandbox(es) of a that are not running: one for the app, or one per grain. */
static void start_sandboxes_for(app_entry_t *a, const char *only_grain);

static void start_sandboxes(app_entry_t *a)
{
    if (cold_mode(a->d))
        return; /* sandboxes are started per event (apps_cold_start) */
    start_sandboxes_for(a, NULL);
}

void apps_cold_start(const char *app, const char *grain, void *ud)
{
    sand_daemon *d = ud;
    app_entry_t *a = sand_map_get(&d->apps, app);
    if (!cold_mode(d) || !a || !a->model || a->state == APP_DELETING || d->stopping)
        return;
    start_sandboxes_for(a, grain);
}

/* Starts the sandbox(es) of a that are not running: one for the app, or one per grain; in cold
 * mode, one more for only_grain, whose workers serve one event and exit. */
static void start_sandboxes_for(app_entry_t *a, const char *only_grain)
{
    sand_daemon *d = a->d;
    char e_user[128], e_pass[128], e_inst[64], e_mode[64], e_logmax[64], e_valmax[64];
    char e_gredis[SAND_CFG_STR + 32];
    snprintf(e_user, sizeof(e_user), SAND_ENV_REDIS_USER "=%s", a->acl_user);
    snprintf(e_pass, sizeof(e_pass), SAND_ENV_REDIS_PASS "=%s", a->acl_pass);
    snprintf(e_inst, sizeof(e_inst), SAND_ENV_INSTANCE "=%s", d->cfg.worker_instance);
    snprintf(e_mode, sizeof(e_mode), SAND_ENV_BUS_MODE "=%s", d->cfg.bus_mode);
    snprintf(e_logmax, sizeof(e_logmax), SAND_ENV_LOG_MAX "=%" PRId64, d->cfg.logs_max_lines);
    snprintf(e_valmax, sizeof(e_valmax), SAND_ENV_VALUE_MAX "=%" PRId64, d->cfg.limits_value);
    const char *env[12];
    int n = 0;
    env[n++] = e_user;
    env[n++] = e_pass;
    env[n++] = e_inst;
    env[n++] = e_mode;
    env[n++] = e_logmax;
    env[n++] = e_valmax;
    char e_guser[160], e_gpass[160];
    if (strcmp(d->cfg.global_data_redis, "local") != 0) {
        snprintf(e_gredis, sizeof(e_gredis), SAND_ENV_GREDIS "=%s", d->cfg.global_data_redis);
        env[n++] = e_gredis;
        /* credentials of the global store, when it needs them, come from sandd's environment */
        const char *gu = getenv(SAND_ENV_GREDIS_USER), *gp = getenv(SAND_ENV_GREDIS_PASS);
        if (gu && sand_fmt(e_guser, sizeof(e_guser), SAND_ENV_GREDIS_USER "=%s", gu) > 0)
            env[n++] = e_guser;
        if (gp && sand_fmt(e_gpass, sizeof(e_gpass), SAND_ENV_GREDIS_PASS "=%s", gp) > 0)
            env[n++] = e_gpass;
    }
    if (only_grain)
        env[n++] = SAND_ENV_ONCE "=1";
    env[n] = NULL;

    bool per_grain = only_grain || sand_sbx_driver_granularity(d->sbx) == SAND_SBX_GRAN_GRAIN;
    size_t want = only_grain ? 1 : per_grain ? a->model->n_grains : 1;
    for (size_t i = 0; i < want; i++) {
        const char *grains[2] = {only_grain  ? only_grain
                                 : per_grain ? a->model->grains[i]->name
                                             : NULL,
                                 NULL};
        bool have = false;
        for (size_t j = 0; j < a->sandboxes.len && !have && !only_grain; j++) {
            const char *g = sand_sbx_grains(a->sandboxes.items[j]);
            have = per_grain ? strcmp(g, grains[0]) == 0 : g[0] == '\0';
        }
        if (have)
            continue;
        sand_sbx_spec_t spec = {.app = a->name,
                                .version = a->version,
                                .bundle_dir = a->dir,
                                .grains = per_grain ? grains : NULL,
                                .env = env};
        sand_sbx_t *sbx;
        sand_err err;
        if (sand_sbx_start(d->sbx, &spec, on_sandbox_exit, a, &sbx, &err) < 0) {
            SAND_ERROR(COMP, "start sandbox of '%s': %s", a->name, err.msg);
            a->state = APP_FAILED;
            snprintf(a->failure, sizeof(a->failure), "%s", err.msg);
            return;
        }
        sand_vec_push(&a->sandboxes, sbx);
    }
}

struct stop_all {
    app_entry_t *a;
    size_t pending;
    void (*done)(app_entry_t *a, void *ud);
    void *ud;
};

static void stop_one_done(sand_sbx_t *sbx, int status, void *ud)
{
    struct stop_all *s = ud;
    sand_sbx_free(sbx);
    if (--s->pending == 0) {
        s->done(s->a, s->ud);
        free(s);
    }
}

/* Stops every sandbox of a, then calls done. */
static void stop_sandboxes(app_entry_t *a, void (*done)(app_entry_t *, void *), void *ud)
{
    if (a->restart_timer) {
        uv_timer_stop(a->restart_timer);
        uv_close((uv_handle_t *)a->restart_timer, (uv_close_cb)free);
        a->restart_timer = NULL;
    }
    struct stop_all *s = calloc(1, sizeof(*s));
    if (!s) {
        done(a, ud);
        return;
    }
    s->a = a;
    s->done = done;
    s->ud = ud;
    s->pending = 1;
    while (a->sandboxes.len) {
        sand_sbx_t *sbx = sand_vec_remove(&a->sandboxes, a->sandboxes.len - 1);
        s->pending++;
        if (sand_sbx_stop(sbx, stop_one_done, s) < 0) {
            s->pending--;
            sand_sbx_free(sbx);
        }
    }
    if (--s->pending == 0) {
        done(a, ud);
        free(s);
    }
}

/* ---- registry ----------------------------------------------------------------------------- */

static void entry_free(app_entry_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->sandboxes.len; i++)
        sand_sbx_free(a->sandboxes.items[i]);
    sand_vec_release(&a->sandboxes, NULL);
    if (a->restart_timer) {
        uv_timer_stop(a->restart_timer);
        uv_close((uv_handle_t *)a->restart_timer, (uv_close_cb)free);
    }
    sand_app_free(a->model);
    free(a);
}

static void on_adopt(sand_sbx_t *sbx, void *ud)
{
    sand_daemon *d = ud;
    app_entry_t *a = sand_map_get(&d->apps, sand_sbx_app(sbx));
    if (a && sand_sbx_version(sbx) == a->version && a->sandboxes.len < a->model->n_grains + 1) {
        SAND_INFO(COMP, "adopted sandbox %s of '%s' v%" PRId64, sand_sbx_id(sbx), a->name,
                  a->version);
        sand_sbx_set_exit_cb(sbx, on_sandbox_exit, a);
        sand_vec_push(&a->sandboxes, sbx);
        return;
    }
    SAND_INFO(COMP, "removing orphan sandbox %s of '%s'", sand_sbx_id(sbx), sand_sbx_app(sbx));
    sand_sbx_stop(sbx, NULL, NULL);
}

static void on_adopt_done(sand_sbx_driver_t *drv, int status, const char *msg, void *ud)
{
    sand_daemon *d = ud;
    if (status < 0)
        SAND_WARN(COMP, "adopting sandboxes: %s", msg ? msg : "failed");
    size_t it = 0;
    void *v;
    while (sand_map_next(&d->apps, &it, NULL, &v))
        start_sandboxes(v);
}

int apps_restore(sand_daemon *d, sand_err *err)
{
    if (d->serving) {
        /* Redis came back (maybe a new, empty one): re-create users and groups */
        size_t it = 0;
        void *v;
        while (sand_map_next(&d->apps, &it, NULL, &v))
            prepare_buses(d, v);
        return 0;
    }
    DIR *dir = opendir(d->apps_dir);
    if (!dir)
        return sand_err_errno(err, SAND_EIO, "open '%s'", d->apps_dir);
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char cur[PATH_MAX + 300], real[PATH_MAX];
        snprintf(cur, sizeof(cur), "%s/%s/current", d->apps_dir, de->d_name);
        if (!realpath(cur, real))
            continue;
        app_entry_t *a = calloc(1, sizeof(*a));
        if (!a)
            break;
        a->d = d;
        sand_vec_init(&a->sandboxes);
        sand_strlcpy(a->name, de->d_name, sizeof(a->name));
        sand_strlcpy(a->dir, real, sizeof(a->dir));
        const char *base = strrchr(real, '/');
        a->version = base && base[1] == 'v' ? strtoll(base + 2, NULL, 10) : 1;
        sand_diags_t diags;
        sand_diags_init(&diags);
        sand_err lerr;
        int rc = sand_app_load(real, NULL, &a->model, &diags, &lerr);
        sand_diags_release(&diags);
        if (rc < 0 || load_acl_pass(d, a, &lerr) < 0) {
            SAND_ERROR(COMP, "cannot restore app '%s': %s", de->d_name, lerr.msg);
            entry_free(a);
            continue;
        }
        struct stat st;
        a->deployed_us = stat(real, &st) == 0 ? (int64_t)st.st_mtime * 1000000 : sand_now_us();
        sand_map_set(&d->apps, a->name, a, NULL);
        prepare_buses(d, a);
        SAND_INFO(COMP, "restored app '%s' v%" PRId64, a->name, a->version);
    }
    closedir(dir);
    if (sand_sbx_adopt_all(d->sbx, on_adopt, on_adopt_done, d, err) < 0) {
        SAND_WARN(COMP, "adopting sandboxes: %s", err ? err->msg : "");
        on_adopt_done(d->sbx, 0, NULL, d);
    }
    return 0;
}

void apps_close_all(sand_daemon *d)
{
    size_t it = 0;
    void *v;
    while (sand_map_next(&d->apps, &it, NULL, &v))
        entry_free(v);
    sand_map_release(&d->apps, NULL);
}

/* ---- deploy ------------------------------------------------------------------------------- */

typedef struct deploy_job {
    uv_work_t work;
    sand_daemon *d;
    sand_http_req_t *req;
    bool req_gone;
    char *body;
    size_t len;
    sand_bundle_limits_t limits;
    sand_app_limits_t app_limits;
    char tmpdir[PATH_MAX];
    sand_app_t *model;
    sand_diags_t diags;
    sand_err err;
    int rc;
    int64_t version;
    bool created;
    app_entry_t *entry;
} deploy_job_t;

static void deploy_req_closed(sand_http_req_t *req, void *ud)
{
    deploy_job_t *j = ud;
    j->req_gone = true;
    j->req = NULL;
}

static void job_free(deploy_job_t *j)
{
    if (j->req)
        sand_http_req_on_close(j->req, NULL, NULL);
    free(j->body);
    sand_app_free(j->model);
    sand_diags_release(&j->diags);
    free(j);
}

/* Runs on the libuv thread pool: unpack and validate (no loop state is touched). */
static void deploy_work(uv_work_t *w)
{
    deploy_job_t *j = w->data;
    j->rc = sand_bundle_unpack(j->body, j->len, j->tmpdir, &j->limits, &j->err);
    free(j->body);
    j->body = NULL;
    if (j->rc < 0)
        return;
    j->rc = sand_app_load(j->tmpdir, &j->app_limits, &j->model, &j->diags, &j->err);
    if (j->rc < 0)
        rm_rf(j->tmpdir);
}

static void respond_bad_bundle(deploy_job_t *j)
{
    if (!j->req)
        return;
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string("invalid_bundle"));
    if (j->diags.len > 0) {
        sand_bytes_t msg;
        sand_bytes_init(&msg, 64 * 1024);
        for (size_t i = 0; i < j->diags.len; i++)
            sand_bytes_appendf(&msg, "%sapp.yaml:%d:%d: %s", i ? "\n" : "", j->diags.items[i].line,
                               j->diags.items[i].col, j->diags.items[i].msg);
        json_object_set_new(e, "message", json_string(msg.data ? msg.data : ""));
        json_object_set_new(e, "file", json_string("app.yaml"));
        json_object_set_new(e, "line", json_integer(j->diags.items[0].line));
        json_t *all = json_array();
        for (size_t i = 0; i < j->diags.len; i++) {
            json_t *di = json_object();
            json_object_set_new(di, "line", json_integer(j->diags.items[i].line));
            json_object_set_new(di, "column", json_integer(j->diags.items[i].col));
            json_object_set_new(di, "message", json_string(j->diags.items[i].msg));
            json_array_append_new(all, di);
        }
        json_object_set_new(e, "diagnostics", all);
        sand_bytes_release(&msg);
    } else {
        json_object_set_new(e, "message", json_string(j->err.msg));
        json_object_set_new(e, "file", json_null());
        json_object_set_new(e, "line", json_null());
    }
    json_t *root = json_object();
    json_object_set_new(root, "error", e);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    sand_http_req_t *req = j->req;
    j->req = NULL;
    sand_http_respond_take(req, 400, "application/json", text, strlen(text), NULL);
}

static void respond_description(sand_daemon *d, app_entry_t *a, sand_http_req_t *req, int status);

static void deploy_started(app_entry_t *a, void *ud)
{
    deploy_job_t *j = ud;
    sand_daemon *d = a->d;
    char old_dir[PATH_MAX];
    sand_strlcpy(old_dir, a->dir, sizeof(old_dir));
    bool replace = a->model != NULL;
    /* install the new version */
    sand_app_free(a->model);
    a->model = j->model;
    j->model = NULL;
    sand_strlcpy(a->dir, j->tmpdir, sizeof(a->dir));
    a->version = j->version;
    a->deployed_us = sand_now_us();
    a->state = APP_STARTING;
    a->failure[0] = '\0';
    a->sandbox_restarts = 0;
    char sup[128];
    snprintf(sup, sizeof(sup), SAND_KEY_SUP_FMT, a->name);
    sand_lbus_command(d->lbus, NULL, NULL, "DEL %s", sup);
    prepare_buses(d, a);
    start_sandboxes(a);
    a->busy = false;
    if (replace && old_dir[0] && strcmp(old_dir, a->dir) != 0)
        rm_rf(old_dir);
    SAND_INFO(COMP, "deployed '%s' v%" PRId64 " (%zu grains, %zu workflows)", a->name, a->version,
              a->model->n_grains, a->model->n_workflows);
    if (j->req) {
        sand_http_req_t *req = j->req;
        j->req = NULL;
        sand_http_req_on_close(req, NULL, NULL);
        respond_description(d, a, req, j->created ? 201 : 200);
    }
    job_free(j);
}

static void deploy_after(uv_work_t *w, int status)
{
    deploy_job_t *j = w->data;
    sand_daemon *d = j->d;
    if (d->stopping) {
        if (j->rc == 0)
            rm_rf(j->tmpdir);
        if (j->req)
            sand_http_respond_error(j->req, 503, "shutting_down", "sandd is stopping");
        j->req = NULL;
        job_free(j);
        return;
    }
    if (j->rc < 0) {
        SAND_INFO(COMP, "rejected bundle: %s", j->err.msg);
        respond_bad_bundle(j);
        job_free(j);
        return;
    }
    const char *name = j->model->name;
    app_entry_t *a = sand_map_get(&d->apps, name);
    if (a && (a->busy || a->state == APP_DELETING)) {
        rm_rf(j->tmpdir);
        if (j->req) {
            sand_http_req_t *req = j->req;
            j->req = NULL;
            sand_http_respond_error(req, 409, "conflict",
                                    "a deploy or delete of this app is in progress");
        }
        job_free(j);
        return;
    }
    char appdir[PATH_MAX + 80], vdir[PATH_MAX + 120], cur[PATH_MAX + 120], vname[32];
    snprintf(appdir, sizeof(appdir), "%s/%s", d->apps_dir, name);
    mkdir(appdir, 0711);
    j->version = a ? a->version + 1 : 1;
    /* a version directory may exist from a deploy before a delete: skip it */
    for (;; j->version++) {
        snprintf(vdir, sizeof(vdir), "%s/v%" PRId64, appdir, j->version);
        if (access(vdir, F_OK) != 0)
            break;
    }
    if (rename(j->tmpdir, vdir) < 0) {
        sand_err_errno(&j->err, SAND_EIO, "install '%s'", vdir);
        rm_rf(j->tmpdir);
        if (j->req) {
            sand_http_req_t *req = j->req;
            j->req = NULL;
            sand_http_respond_error(req, 500, "internal", j->err.msg);
        }
        job_free(j);
        return;
    }
    chmod(vdir, 0755);
    sand_strlcpy(j->tmpdir, vdir, sizeof(j->tmpdir));
    free(j->model->root);
    j->model->root = sand_strdup(vdir);
    snprintf(vname, sizeof(vname), "v%" PRId64, j->version);
    snprintf(cur, sizeof(cur), "%s/current.tmp", appdir);
    unlink(cur);
    if (symlink(vname, cur) == 0) {
        char final[PATH_MAX + 120];
        snprintf(final, sizeof(final), "%s/current", appdir);
        rename(cur, final);
    }
    if (!a) {
        a = calloc(1, sizeof(*a));
        if (a)
            sand_strlcpy(a->name, name, sizeof(a->name));
        if (!a || load_acl_pass(d, a, &j->err) < 0 || sand_map_set(&d->apps, name, a, NULL) < 0) {
            free(a);
            if (j->req) {
                sand_http_req_t *req = j->req;
                j->req = NULL;
                sand_http_respond_error(req, 500, "internal", "cannot register the app");
            }
            job_free(j);
            return;
        }
        a->d = d;
        sand_vec_init(&a->sandboxes);
        j->created = true;
    }
    a->busy = true;
    /* replace: stop the old sandbox first so no two workers consume one queue; queued events
     * wait in the streams and the new workers take them */
    stop_sandboxes(a, deploy_started, j);
}

void apps_deploy(sand_daemon *d, sand_http_req_t *req)
{
    deploy_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        sand_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    j->d = d;
    j->req = req;
    j->work.data = j;
    sand_diags_init(&j->diags);
    j->body = sand_http_req_body_steal(req, &j->len);
    if (!j->body || j->len == 0) {
        free(j);
        sand_http_respond_error(req, 400, "invalid_bundle",
                                "the request body is empty: expected "
                                "a tar.gz bundle");
        return;
    }
    sand_bundle_limits_default(&j->limits);
    j->limits.max_upload = d->cfg.limits_bundle;
    j->limits.max_unpacked = d->cfg.limits_unpacked;
    j->limits.max_files = d->cfg.limits_files;
    j->app_limits.max_yaml_bytes = d->cfg.limits_app_yaml;
    j->app_limits.max_alias_expansions = 1000;
    j->app_limits.max_depth = 64;
    char rnd[17];
    sand_random_hex(rnd, 8);
    sand_fmt(j->tmpdir, sizeof(j->tmpdir), "%s/.incoming-%s", d->apps_dir, rnd);
    sand_http_req_on_close(req, deploy_req_closed, j);
    if (uv_queue_work(d->loop, &j->work, deploy_work, deploy_after) < 0) {
        sand_http_req_on_close(req, NULL, NULL);
        j->req = NULL;
        job_free(j);
        sand_http_respond_error(req, 500, "internal", "cannot queue the deploy");
    }
}

/* ---- delete ------------------------------------------------------------------------------- */

typedef struct delete_job {
    sand_daemon *d;
    sand_http_req_t *req;
    char name[SAND_NAME_MAX];
    char cursor[32];
} delete_job_t;

static void delete_req_closed(sand_http_req_t *req, void *ud)
{
    delete_job_t *j = ud;
    j->req = NULL;
}

static void delete_finish(delete_job_t *j)
{
    sand_daemon *d = j->d;
    app_entry_t *a = sand_map_del(&d->apps, j->name);
    char path[PATH_MAX + 80];
    snprintf(path, sizeof(path), "%s/%s", d->apps_dir, j->name);
    rm_rf(path);
    if (a) {
        char user[SAND_NAME_MAX + 8];
        sand_strlcpy(user, a->acl_user, sizeof(user));
        sand_lbus_command(d->lbus, log_reply, "acl deluser", "ACL DELUSER %s", user);
        entry_free(a);
    }
    SAND_INFO(COMP, "deleted app '%s'", j->name);
    if (j->req) {
        sand_http_req_on_close(j->req, NULL, NULL);
        sand_http_respond(j->req, 204, NULL, NULL, 0, NULL);
    }
    free(j);
}

static void delete_scan(delete_job_t *j);

static void delete_scan_cb(sand_lbus_t *lbus, int status, const redisReply *reply,
                           const char *errstr, void *ud)
{
    delete_job_t *j = ud;
    if (status < 0 || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        SAND_WARN(COMP, "delete '%s': key scan failed: %s", j->name,
                  errstr ? errstr : (reply && reply->str ? reply->str : "bad reply"));
        delete_finish(j);
        return;
    }
    const redisReply *keys = reply->element[1];
    if (keys->type == REDIS_REPLY_ARRAY && keys->elements > 0) {
        const char **argv = calloc(keys->elements + 1, sizeof(char *));
        size_t *lens = calloc(keys->elements + 1, sizeof(size_t));
        if (argv && lens) {
            argv[0] = "UNLINK";
            lens[0] = 6;
            for (size_t i = 0; i < keys->elements; i++) {
                argv[i + 1] = keys->element[i]->str;
                lens[i + 1] = keys->element[i]->len;
            }
            sand_lbus_command_argv(lbus, NULL, NULL, (int)keys->elements + 1, argv, lens);
        }
        free(argv);
        free(lens);
    }
    snprintf(j->cursor, sizeof(j->cursor), "%.*s", (int)reply->element[0]->len,
             reply->element[0]->str);
    if (strcmp(j->cursor, "0") == 0)
        delete_finish(j);
    else
        delete_scan(j);
}

static void delete_scan(delete_job_t *j)
{
    char pattern[SAND_NAME_MAX + 16];
    snprintf(pattern, sizeof(pattern), "sand:%s:*", j->name);
    if (sand_lbus_command(j->d->lbus, delete_scan_cb, j, "SCAN %s MATCH %s COUNT 1000", j->cursor,
                          pattern) < 0)
        delete_finish(j);
}

/* Deletes the app's keys on one node of the global data layer (sync: runs on the thread pool). */
static void unlink_global_keys(redisContext *c, const char *pattern)
{
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            return;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *u = redisCommand(c, "UNLINK %b", r->element[1]->element[i]->str,
                                         r->element[1]->element[i]->len);
            if (u)
                freeReplyObject(u);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
}

static redisContext *connect_endpoint(const char *url)
{
    struct timeval tv = {5, 0};
    sand_endpoint_t ep;
    if (sand_endpoint_parse(url, &ep, NULL) < 0)
        return NULL;
    redisContext *c = ep.unix_socket ? redisConnectUnixWithTimeout(ep.path, tv)
                                     : redisConnectWithTimeout(ep.host, ep.port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    const char *user = getenv(SAND_ENV_GREDIS_USER), *pass = getenv(SAND_ENV_GREDIS_PASS);
    if (c && pass && *pass) {
        redisReply *r = user && *user ? redisCommand(c, "AUTH %s %s", user, pass)
                                      : redisCommand(c, "AUTH %s", pass);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

typedef struct gdel_job {
    uv_work_t work;
    char url[SAND_CFG_STR];
    char pattern[SAND_NAME_MAX + 16];
} gdel_job_t;

/* The global data layer may be a Redis Cluster: delete on every master it lists. */
static void gdel_work(uv_work_t *w)
{
    gdel_job_t *j = w->data;
    redisContext *c = connect_endpoint(j->url);
    if (!c)
        return;
    redisReply *nodes = redisCommand(c, "CLUSTER NODES");
    if (!nodes || nodes->type != REDIS_REPLY_STRING) {
        unlink_global_keys(c, j->pattern);
    } else {
        char *save = NULL;
        for (char *line = strtok_r(nodes->str, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            char id[64], addr[128], flags[128];
            if (sscanf(line, "%63s %127s %127s", id, addr, flags) != 3 || !strstr(flags, "master"))
                continue;
            char *at = strchr(addr, '@');
            if (at)
                *at = '\0';
            char url[160];
            snprintf(url, sizeof(url), "tcp://%s", addr);
            redisContext *n = connect_endpoint(url);
            if (n) {
                unlink_global_keys(n, j->pattern);
                redisFree(n);
            }
        }
    }
    if (nodes)
        freeReplyObject(nodes);
    redisFree(c);
}

static void gdel_after(uv_work_t *w, int status)
{
    free(w->data);
}

static void delete_stopped(app_entry_t *a, void *ud)
{
    delete_job_t *j = ud;
    char ha[128];
    snprintf(ha, sizeof(ha), SAND_KEY_AGENT_FMT, a->name);
    if (a->d->reader)
        sand_lbus_reader_remove(a->d->reader, ha);
    sand_strlcpy(j->cursor, "0", sizeof(j->cursor));
    if (strcmp(a->d->cfg.global_data_redis, "local") != 0) {
        gdel_job_t *g = calloc(1, sizeof(*g));
        if (g) {
            g->work.data = g;
            sand_strlcpy(g->url, a->d->cfg.global_data_redis, sizeof(g->url));
            snprintf(g->pattern, sizeof(g->pattern), "sand:%s:dg:*", a->name);
            if (uv_queue_work(a->d->loop, &g->work, gdel_work, gdel_after) < 0)
                free(g);
        }
    }
    delete_scan(j);
}

void apps_delete(sand_daemon *d, app_entry_t *a, sand_http_req_t *req)
{
    if (a->busy || a->state == APP_DELETING) {
        sand_http_respond_error(req, 409, "conflict",
                                "a deploy or delete of this app is in progress");
        return;
    }
    delete_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        sand_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    j->d = d;
    j->req = req;
    sand_strlcpy(j->name, a->name, sizeof(j->name));
    sand_http_req_on_close(req, delete_req_closed, j);
    a->state = APP_DELETING;
    a->busy = true;
    sand_engine_fail_app(d->engine, a->name, "the app was deleted");
    stop_sandboxes(a, delete_stopped, j);
}

/* ---- describe ----------------------------------------------------------------------------- */

static json_t *str_array(sand_step_t **steps, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_string(steps[i]->name));
    return arr;
}

static const char *state_name(app_state_t s)
{
    static const char *const names[] = {"starting", "ready", "failed", "deleting"};
    return names[s];
}

/* The static part of the description: grains and workflows from the model. */
static json_t *describe_static(sand_daemon *d, app_entry_t *a)
{
    json_t *root = json_object();
    json_object_set_new(root, "app", json_string(a->name));
    json_object_set_new(root, "version", json_integer(a->version));
    json_object_set_new(root, "state", json_string(state_name(a->state)));
    if (a->failure[0])
        json_object_set_new(root, "failure", json_string(a->failure));
    json_object_set_new(root, "deployed_us", json_integer(a->deployed_us));
    json_t *sbx = json_object();
    json_object_set_new(sbx, "driver",
                        json_string(sand_sbx_kind_name(sand_sbx_driver_kind(d->sbx))));
    json_object_set_new(sbx, "granularity", json_string(d->cfg.sandbox_granularity));
    json_t *ids = json_array();
    const char *st = "stopped";
    for (size_t i = 0; i < a->sandboxes.len; i++) {
        json_array_append_new(ids, json_string(sand_sbx_id(a->sandboxes.items[i])));
        st = sand_sbx_state_name(sand_sbx_state(a->sandboxes.items[i]));
    }
    json_object_set_new(sbx, "id",
                        json_string(a->sandboxes.len ? sand_sbx_id(a->sandboxes.items[0]) : ""));
    json_object_set_new(sbx, "ids", ids);
    json_object_set_new(sbx, "state", json_string(st));
    json_object_set_new(sbx, "restarts", json_integer(a->sandbox_restarts));
    json_object_set_new(root, "sandbox", sbx);
    json_t *grains = json_array();
    for (size_t i = 0; i < a->model->n_grains; i++) {
        const sand_grain_t *g = a->model->grains[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(g->name));
        json_object_set_new(o, "runtime", json_string(sand_runtime_name(g->runtime)));
        json_object_set_new(o, "code", json_string(g->code));
        json_object_set_new(o, "handler", json_string(g->handler ? g->handler : ""));
        json_object_set_new(o, "timeout_ms", json_integer(g->timeout_ms));
        json_object_set_new(o, "memory", json_integer(g->memory));
        json_object_set_new(o, "concurrency", json_integer(g->concurrency));
        json_object_set_new(o, "workers", json_array());
        json_array_append_new(grains, o);
    }
    json_object_set_new(root, "grains", grains);
    json_t *wfs = json_array();
    for (size_t i = 0; i < a->model->n_workflows; i++) {
        const sand_workflow_t *w = a->model->workflows[i];
        json_t *o = json_object();
        char url[512];
        snprintf(url, sizeof(url), "http://%s/v1/apps/%s/workflows/%s", d->cfg.listen, a->name,
                 w->name);
        json_object_set_new(o, "name", json_string(w->name));
        json_object_set_new(o, "start", json_string(w->start->name));
        json_object_set_new(o, "result", json_string(w->result ? w->result->name : ""));
        json_object_set_new(o, "url", json_string(url));
        json_t *steps = json_array();
        for (size_t k = 0; k < w->n_steps; k++) {
            const sand_step_t *s = w->steps[k];
            json_t *so = json_object();
            json_object_set_new(so, "name", json_string(s->name));
            json_object_set_new(so, "grain", json_string(s->grain->name));
            json_object_set_new(so, "next", str_array(s->next, s->n_next));
            if (s->n_preds > 1)
                json_object_set_new(so, "join", str_array(s->preds, s->n_preds));
            if (s->catch_step)
                json_object_set_new(so, "catch", json_string(s->catch_step->name));
            if (s->retry_max) {
                json_t *r = json_object();
                json_object_set_new(r, "max", json_integer(s->retry_max));
                json_object_set_new(r, "backoff_ms", json_integer(s->retry_backoff_ms));
                json_object_set_new(so, "retry", r);
            }
            json_array_append_new(steps, so);
        }
        json_object_set_new(o, "steps", steps);
        json_array_append_new(wfs, o);
    }
    json_object_set_new(root, "workflows", wfs);
    return root;
}

typedef struct describe_job {
    sand_daemon *d;
    sand_http_req_t *req;
    json_t *root;
    json_t *host_pids; /* grain -> host pid of its worker (docker driver) */
    char name[SAND_NAME_MAX];
    size_t pending;
    int status;
    bool ready;
} describe_job_t;

static void describe_req_closed(sand_http_req_t *req, void *ud)
{
    describe_job_t *j = ud;
    j->req = NULL;
}

static json_t *grain_obj(json_t *root, const char *name, size_t len)
{
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(root, "grains"), i, g)
    {
        const char *n = json_string_value(json_object_get(g, "name"));
        if (n && strlen(n) == len && memcmp(n, name, len) == 0)
            return g;
    }
    return NULL;
}

/* Inside a container the supervisor reports the workers' pids in the container's namespace:
 * show the host's (SPEC: "PIDs as seen from the host") and keep the other as sandbox_pid. */
static void apply_host_pids(describe_job_t *j)
{
    size_t i, k;
    json_t *g, *w;
    json_array_foreach(json_object_get(j->root, "grains"), i, g)
    {
        json_t *hp = json_object_get(j->host_pids, json_string_value(json_object_get(g, "name")));
        if (!hp)
            continue;
        json_array_foreach(json_object_get(g, "workers"), k, w)
        {
            json_object_set(w, "sandbox_pid", json_object_get(w, "pid"));
            json_object_set(w, "pid", hp);
        }
    }
}

static void describe_step(describe_job_t *j)
{
    if (--j->pending > 0)
        return;
    apply_host_pids(j);
    json_decref(j->host_pids);
    app_entry_t *a = sand_map_get(&j->d->apps, j->name);
    if (a && a->state == APP_STARTING && j->ready) {
        a->state = APP_READY;
        json_object_set_new(j->root, "state", json_string("ready"));
    }
    if (j->req) {
        sand_http_req_on_close(j->req, NULL, NULL);
        char *text = json_dumps(j->root, JSON_COMPACT);
        sand_http_respond_take(j->req, j->status, "application/json", text, strlen(text), NULL);
    }
    json_decref(j->root);
    free(j);
}

static void describe_sup_cb(sand_lbus_t *lbus, int status, const redisReply *reply,
                            const char *errstr, void *ud)
{
    describe_job_t *j = ud;
    app_entry_t *a = sand_map_get(&j->d->apps, j->name);
    size_t running = 0;
    if (status == 0 && reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            json_t *g = grain_obj(j->root, reply->element[i]->str, reply->element[i]->len);
            json_t *w = json_loadb(reply->element[i + 1]->str, reply->element[i + 1]->len, 0, NULL);
            if (!g || !w) {
                json_decref(w);
                continue;
            }
            const char *st = json_string_value(json_object_get(w, "state"));
            int64_t started = json_integer_value(json_object_get(w, "started_us"));
            if (st && strcmp(st, "running") == 0 && a && started >= a->deployed_us - 1000000)
                running++;
            json_array_append_new(json_object_get(g, "workers"), w);
        }
    }
    j->ready = a && (running >= a->model->n_grains || cold_mode(a->d));
    describe_step(j);
}

/* ---- queue depth of a grain (describe and metrics) ---------------------------------------- */

typedef struct qprobe {
    queue_depth_cb cb;
    void *ud;
    char grain[SAND_NAME_MAX];
    int64_t len;
} qprobe_t;

static void qprobe_pending_cb(sand_lbus_t *lbus, int status, const redisReply *reply,
                              const char *errstr, void *ud)
{
    qprobe_t *q = ud;
    int64_t pending = 0;
    if (status == 0 && reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER)
        pending = reply->element[0]->integer;
    q->cb(q->grain, q->len > pending ? q->len - pending : 0, pending, q->ud);
    free(q);
}

static void qprobe_len_cb(sand_lbus_t *lbus, int status, const redisReply *reply,
                          const char *errstr, void *ud)
{
    qprobe_t *q = ud;
    q->len = status == 0 && reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
}

int apps_queue_depth(sand_daemon *d, const char *app, const char *grain, queue_depth_cb cb,
                     void *ud)
{
    qprobe_t *q = calloc(1, sizeof(*q));
    if (!q)
        return SAND_ENOMEM;
    q->cb = cb;
    q->ud = ud;
    sand_strlcpy(q->grain, grain, sizeof(q->grain));
    char key[256];
    snprintf(key, sizeof(key), SAND_KEY_QUEUE_FMT, app, grain);
    /* XLEN counts what is queued and what is taken but not acknowledged (entries are deleted on
     * acknowledgement); XPENDING's count is the second part. Pipelined: the second reply ends. */
    int rc = sand_lbus_command(d->lbus, qprobe_len_cb, q, "XLEN %s", key);
    if (rc == 0)
        rc = sand_lbus_command(d->lbus, qprobe_pending_cb, q, "XPENDING %s %s", key,
                               SAND_GROUP_WORKERS);
    else
        free(q);
    return rc;
}

static void describe_depth_cb(const char *grain, int64_t queued, int64_t in_flight, void *ud)
{
    describe_job_t *j = ud;
    json_t *g = grain_obj(j->root, grain, strlen(grain));
    if (g) {
        json_object_set_new(g, "queue_depth", json_integer(queued));
        json_object_set_new(g, "in_flight", json_integer(in_flight));
    }
    describe_step(j);
}

static void describe_stats_cb(sand_sbx_t *sbx, int status, const sand_sbx_stats_t *st, void *ud)
{
    describe_job_t *j = ud;
    if (status == 0 && st) {
        json_t *s = json_object_get(j->root, "sandbox");
        json_int_t prev = json_integer_value(json_object_get(s, "memory_bytes"));
        json_object_set_new(s, "memory_bytes", json_integer(prev + st->memory));
        json_object_set_new(s, "memory_limit", json_integer(st->memory_limit));
        json_object_set_new(s, "pids", json_integer(st->pids));
    }
    describe_step(j);
}

static void describe_pids_cb(sand_sbx_t *sbx, int status, const sand_sbx_worker_pid_t *workers,
                             size_t n, void *ud)
{
    describe_job_t *j = ud;
    for (size_t i = 0; status == 0 && i < n; i++)
        json_object_set_new(j->host_pids, workers[i].grain, json_integer(workers[i].pid));
    describe_step(j);
}

static void respond_description(sand_daemon *d, app_entry_t *a, sand_http_req_t *req, int status)
{
    describe_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        sand_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    j->d = d;
    j->req = req;
    j->status = status;
    j->root = describe_static(d, a);
    j->host_pids = json_object();
    sand_strlcpy(j->name, a->name, sizeof(j->name));
    sand_http_req_on_close(req, describe_req_closed, j);
    j->pending = 1;
    char sup[128];
    snprintf(sup, sizeof(sup), SAND_KEY_SUP_FMT, a->name);
    j->pending++;
    if (sand_lbus_command(d->lbus, describe_sup_cb, j, "HGETALL %s", sup) < 0)
        j->pending--;
    for (size_t i = 0; i < a->model->n_grains; i++) {
        j->pending++;
        if (apps_queue_depth(d, a->name, a->model->grains[i]->name, describe_depth_cb, j) < 0)
            j->pending--;
    }
    for (size_t i = 0; i < a->sandboxes.len; i++) {
        j->pending++;
        if (sand_sbx_stats(a->sandboxes.items[i], describe_stats_cb, j) < 0)
            j->pending--;
        j->pending++;
        if (sand_sbx_worker_pids(a->sandboxes.items[i], describe_pids_cb, j) < 0)
            j->pending--; /* the process driver's supervisor reports host pids itself */
    }
    describe_step(j);
}

void apps_describe(sand_daemon *d, app_entry_t *a, sand_http_req_t *req)
{
    respond_description(d, a, req, 200);
}

void apps_list(sand_daemon *d, sand_http_req_t *req)
{
    json_t *arr = json_array();
    size_t it = 0;
    void *v;
    while (sand_map_next(&d->apps, &it, NULL, &v)) {
        app_entry_t *a = v;
        json_t *o = json_object();
        json_object_set_new(o, "app", json_string(a->name));
        json_object_set_new(o, "version", json_integer(a->version));
        json_object_set_new(o, "state", json_string(state_name(a->state)));
        json_object_set_new(o, "grains", json_integer((json_int_t)a->model->n_grains));
        json_t *wfs = json_array();
        for (size_t i = 0; i < a->model->n_workflows; i++)
            json_array_append_new(wfs, json_string(a->model->workflows[i]->name));
        json_object_set_new(o, "workflows", wfs);
        json_object_set_new(o, "deployed_us", json_integer(a->deployed_us));
        json_array_append_new(arr, o);
    }
    json_t *root = json_object();
    json_object_set_new(root, "apps", arr);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    sand_http_respond_take(req, 200, "application/json", text, strlen(text), NULL);
}
