/*
 * The Docker sandbox driver: one container per sandbox, created through the Docker Engine API on
 * its unix socket with libcurl and jansson (never the docker CLI). Every HTTP call runs on one
 * private thread, one job at a time in FIFO order; a job may chain several blocking calls (build
 * the base image if missing, create, start, inspect) and its result goes back to the loop
 * through a done list and uv_async_send, where the loop-side half updates the sandbox and calls
 * the user's callback. FIFO order on both lists keeps the loop's view consistent: a poll job
 * enqueued before a start job is also reported before it. Containers are addressed by the name
 * the loop picks at start time, so a stop queued behind a start needs no id. A repeating timer
 * enqueues one poll job (a single labelled list call) to detect exits; nothing here runs on the
 * per-event path. The base image "sand-base:1" is an empty rootfs (mount points, merged-/usr
 * symlinks, /etc/passwd with the sand user) imported from an in-memory tar built with
 * libarchive; the host's /usr, sand's bin and lib dirs and the bundle are bind-mounted
 * read-only.
 */
#define _GNU_SOURCE /* memmem, nftw */
#include "sandbox_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DK_API          "/v1.41"
#define DK_BASE_REPO    "sand-base"
#define DK_BASE_TAG     "1"
#define DK_BASE_IMAGE   DK_BASE_REPO ":" DK_BASE_TAG
#define DK_USER         "65534:65534"
#define DK_BUNDLE       "/app"
#define DK_RUN_DIR      "/run/sand"
#define DK_TMPFS        "rw,exec,nosuid,nodev,size=256m,mode=1777"
#define DK_NAME_MAX     200
#define DK_RESP_MAX     (8u << 20)
#define DK_CALL_MS      30000L /* any single call but stop */
#define DK_IMPORT_MS    120000L
#define DK_LABEL_APP    "sand.app"
#define DK_LABEL_VER    "sand.version"
#define DK_LABEL_GRAINS "sand.grains"
#define DK_LABEL_DATA   "sand.data_dir"
#define SUPERVISOR_NAME "sand-supervisor"

typedef enum dk_kind {
    JOB_START,
    JOB_STOP,
    JOB_REMOVE,
    JOB_STATS,
    JOB_POLL,
    JOB_ADOPT,
    JOB_TOP,
} dk_kind_t;

typedef struct dk_job {
    sand_list_t node;
    dk_kind_t kind;
    sand_sbx_t *sbx; /* loop side only; holds one sbx->pending_ops */
    /* inputs, owned */
    char *name;      /* container name */
    char *body;      /* JOB_START: the create request */
    char *bundle;    /* JOB_START: made readable by the container user */
    char *redis_dir; /* JOB_START: made traversable by the container user; may be NULL */
    /* outputs */
    int status;
    char msg[512];
    bool image_failed; /* JOB_START failed while preparing the image */
    char id[80];
    pid_t pid;
    int64_t memory_limit;
    sand_sbx_stats_t stats;
    json_t *list; /* JOB_POLL: [{name, running, exit}]; JOB_ADOPT: [{id, name, app, ...}];
                     JOB_TOP: [{grain, pid}] */
    /* callbacks */
    sand_sbx_stats_cb stats_cb;
    sand_sbx_worker_pids_cb pids_cb;
    sand_sbx_adopt_cb found;
    sand_sbx_done_cb done;
    void *ud;
} dk_job_t;

typedef struct dk_drv {
    sand_sbx_driver_t *drv;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sand_list_t queue; /* jobs for the thread (under mu) */
    sand_list_t done;  /* results for the loop (under mu) */
    atomic_bool stop;  /* asks the thread to exit and aborts its transfer in flight */
    uv_async_t async;
    uv_timer_t poll;
    int closing_handles;
    bool poll_inflight;
    bool poll_failing; /* the last poll failed: its warning was logged */
    bool adopt_pending;
    int outstanding; /* jobs submitted and not completed: the async handle is ref'd while > 0 */
    char image_error[512]; /* last image failure, reported synchronously by the next start */
    /* thread only */
    CURL *curl;
    bool image_ok;
} dk_drv_t;

typedef struct dk_sbx {
    char name[DK_NAME_MAX];
    int64_t memory_limit;
} dk_sbx_t;

/* ---- HTTP (thread) ---------------------------------------------------------------------- */

static size_t discard_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

int sand__docker_ping(const char *socket_path, sand_err *err)
{
    CURL *c = curl_easy_init();
    long code = 0;
    CURLcode rc;

    if (!c)
        return sand_err_set(err, SAND_ENOMEM, "curl init failed");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(c, CURLOPT_URL, "http://localhost/_ping");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        return sand_err_set(err, SAND_EIO, "docker '%s': %s", socket_path, curl_easy_strerror(rc));
    if (code != 200)
        return sand_err_set(err, SAND_EIO, "docker '%s': GET /_ping answered %ld", socket_path,
                            code);
    return 0;
}

static size_t collect_body(char *p, size_t size, size_t n, void *ud)
{
    return sand_bytes_append(ud, p, size * n) == 0 ? size * n : 0;
}

static int abort_check(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    dk_drv_t *dd = ud;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load(&dd->stop) ? 1 : 0;
}

/* Docker's error text from a response body ({"message": "..."}), or the body itself. */
static void docker_message(const sand_bytes_t *resp, char *out, size_t n)
{
    json_t *j = resp->len ? json_loadb(resp->data, resp->len, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(j, "message"));
    if (m)
        sand_strlcpy(out, m, n);
    else
        snprintf(out, n, "%.*s", (int)(resp->len < 300 ? resp->len : 300),
                 resp->len ? resp->data : "");
    json_decref(j);
    /* Docker ends plain-text bodies with a newline that would end up inside our log lines */
    for (char *p = out; *p; p++)
        if (*p == '\n')
            *p = ' ';
}

/* One blocking call on the thread. Returns 0 with *code and resp filled (any HTTP status), or
 * < 0 with err set when the transfer itself failed. */
static int dk_http(dk_drv_t *dd, const char *method, const char *path, const char *ctype,
                   const void *body, size_t len, long timeout_ms, long *code, sand_bytes_t *resp,
                   sand_err *err)
{
    CURL *c = dd->curl;
    struct curl_slist *hdr = NULL;
    char url[2048], ct[128];
    CURLcode rc;

    *code = 0;
    sand_bytes_reset(resp);
    if (!c)
        return sand_err_set(err, SAND_ENOMEM, "curl init failed");
    if ((size_t)snprintf(url, sizeof(url), "http://localhost" DK_API "%s", path) >= sizeof(url))
        return sand_err_set(err, SAND_ETOOBIG, "docker request path too long");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, dd->drv->docker_socket);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, abort_check);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, dd);
    hdr = curl_slist_append(hdr, "Expect:");
    if (ctype) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        hdr = curl_slist_append(hdr, ct);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    } else if (strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    rc = curl_easy_perform(c);
    curl_slist_free_all(hdr);
    if (rc != CURLE_OK)
        return sand_err_set(err, rc == CURLE_ABORTED_BY_CALLBACK ? SAND_ECANCELED : SAND_EIO,
                            "docker %s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
    return 0;
}

/* A call that must answer one of the expected codes (0-terminated list). */
static int dk_call(dk_drv_t *dd, const char *method, const char *path, const char *body,
                   long timeout_ms, const long *ok, long *code, sand_bytes_t *resp, sand_err *err)
{
    char m[400];
    int rc = dk_http(dd, method, path, body ? "application/json" : NULL, body,
                     body ? strlen(body) : 0, timeout_ms, code, resp, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; ok[i]; i++)
        if (*code == ok[i])
            return 0;
    docker_message(resp, m, sizeof(m));
    return sand_err_set(err, *code == 404 ? SAND_ENOTFOUND : SAND_EIO, "docker %s %s: %ld %s",
                        method, path, *code, m);
}

/* ---- base image (thread) ---------------------------------------------------------------- */

static ssize_t tar_write(struct archive *a, void *ud, const void *buf, size_t n)
{
    (void)a;
    return sand_bytes_append(ud, buf, n) == 0 ? (ssize_t)n : -1;
}

static int tar_add(struct archive *a, const char *path, mode_t type, mode_t mode, const char *link,
                   const char *data)
{
    struct archive_entry *e = archive_entry_new();
    size_t len = data ? strlen(data) : 0;
    int rc;

    if (!e)
        return SAND_ENOMEM;
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, mode);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, 0, 0);
    archive_entry_set_size(e, (la_int64_t)len);
    if (link)
        archive_entry_set_symlink(e, link);
    rc = archive_write_header(a, e);
    if (rc == ARCHIVE_OK && len && archive_write_data(a, data, len) != (la_ssize_t)len)
        rc = ARCHIVE_FATAL;
    archive_entry_free(e);
    return rc == ARCHIVE_OK ? 0 : SAND_EIO;
}

/* The root-level directories that Debian 12 (merged /usr) makes symlinks into /usr. On a host
 * where one is a real directory the image gets an empty directory and the container a
 * read-only bind of it instead. */
static const char *const usr_links[] = {"bin", "lib", "lib64", "sbin"};

/* Builds the tar of the base image's rootfs in out. */
static int base_tar(sand_bytes_t *out, sand_err *err)
{
    static const char *const dirs[] = {"usr", "app", "run", "run/sand", "proc",
                                       "dev", "sys", "etc", "opt",      "var"};
    struct archive *a = archive_write_new();
    int rc = 0;

    if (!a)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        archive_write_open(a, out, NULL, tar_write, NULL) != ARCHIVE_OK) {
        rc = sand_err_set(err, SAND_EIO, "base image tar: %s", archive_error_string(a));
        archive_write_free(a);
        return rc;
    }
    for (size_t i = 0; rc == 0 && i < SAND_ARRAY_LEN(dirs); i++)
        rc = tar_add(a, dirs[i], AE_IFDIR, 0755, NULL, NULL);
    if (rc == 0)
        rc = tar_add(a, "tmp", AE_IFDIR, 01777, NULL, NULL);
    for (size_t i = 0; rc == 0 && i < SAND_ARRAY_LEN(usr_links); i++) {
        char host[64], target[PATH_MAX];
        ssize_t n;
        snprintf(host, sizeof(host), "/%s", usr_links[i]);
        n = readlink(host, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            rc = tar_add(a, usr_links[i], AE_IFLNK, 0777, target, NULL);
        } else {
            rc = tar_add(a, usr_links[i], AE_IFDIR, 0755, NULL, NULL);
        }
    }
    if (rc == 0)
        rc = tar_add(a, "etc/passwd", AE_IFREG, 0644, NULL,
                     "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                     "sand:x:65534:65534:sand:/tmp:/usr/sbin/nologin\n");
    if (rc == 0)
        rc = tar_add(a, "etc/group", AE_IFREG, 0644, NULL, "root:x:0:\nsand:x:65534:\n");
    if (rc == 0)
        rc = tar_add(a, "etc/nsswitch.conf", AE_IFREG, 0644, NULL,
                     "passwd: files\ngroup: files\nhosts: files\n");
    if (rc < 0)
        sand_err_set(err, rc, "base image tar: %s", archive_error_string(a));
    if (archive_write_close(a) != ARCHIVE_OK && rc == 0)
        rc = sand_err_set(err, SAND_EIO, "base image tar: %s", archive_error_string(a));
    archive_write_free(a);
    return rc;
}

/* Makes sure the image to run exists: the configured one must; the base image is built (an
 * import of base_tar) when missing. */
static int ensure_image(dk_drv_t *dd, sand_bytes_t *resp, sand_err *err)
{
    static const long ok200[] = {200, 0};
    sand_sbx_driver_t *drv = dd->drv;
    char path[600];
    sand_bytes_t tar;
    long code;
    int rc;

    if (dd->image_ok)
        return 0;
    if ((size_t)snprintf(path, sizeof(path), "/images/%s/json",
                         drv->image ? drv->image : DK_BASE_IMAGE) >= sizeof(path))
        return sand_err_set(err, SAND_ETOOBIG, "image name too long");
    rc = dk_call(dd, "GET", path, NULL, DK_CALL_MS, ok200, &code, resp, err);
    if (rc == 0) {
        dd->image_ok = true;
        return 0;
    }
    if (code != 404)
        return rc;
    if (drv->image)
        return sand_err_set(err, SAND_ENOTFOUND,
                            "docker image '%s' (sandbox.image) does not exist: build it first "
                            "(see docs/sandbox.md)",
                            drv->image);
    SAND_INFO(SBX_LOG, "building the docker base image " DK_BASE_IMAGE);
    sand_bytes_init(&tar, 1 << 20);
    if ((rc = base_tar(&tar, err)) == 0 &&
        (rc = dk_http(dd, "POST", "/images/create?fromSrc=-&repo=" DK_BASE_REPO "&tag=" DK_BASE_TAG,
                      "application/x-tar", tar.data, tar.len, DK_IMPORT_MS, &code, resp, err)) ==
            0) {
        char m[400];
        /* the import answers 200 with a JSON progress stream; a failure is an "error" line */
        if (code != 200 || (resp->len && memmem(resp->data, resp->len, "\"error\"", 7))) {
            docker_message(resp, m, sizeof(m));
            rc = sand_err_set(err, SAND_EIO,
                              "import of the base image " DK_BASE_IMAGE " failed: %ld %s", code, m);
        }
    }
    sand_bytes_release(&tar);
    if (rc == 0 && (rc = dk_call(dd, "GET", "/images/" DK_BASE_IMAGE "/json", NULL, DK_CALL_MS,
                                 ok200, &code, resp, err)) == 0)
        dd->image_ok = true;
    return rc < 0 ? sand_err_wrap(err, rc, "docker base image") : 0;
}

/* ---- jobs (thread) ---------------------------------------------------------------------- */

static int make_readable(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    /* sandd unpacks as root and keeps the archive's modes; the container user is not root */
    if (type == FTW_D && (st->st_mode & 0005) != 0005)
        chmod(path, (st->st_mode & 07777) | 0005);
    else if (type == FTW_F && (st->st_mode & 0004) != 0004)
        chmod(path, (st->st_mode & 07777) | 0004 | ((st->st_mode & 0100) ? 0001 : 0));
    return 0;
}

static void job_fail(dk_job_t *job, int rc, const sand_err *err)
{
    job->status = rc < 0 ? rc : SAND_EIO;
    sand_strlcpy(job->msg, err->msg, sizeof(job->msg));
}

static int inspect(dk_drv_t *dd, const char *name, json_t **out, sand_bytes_t *resp, sand_err *err)
{
    static const long ok200[] = {200, 0};
    char path[DK_NAME_MAX + 64];
    long code;
    int rc;

    *out = NULL;
    snprintf(path, sizeof(path), "/containers/%s/json", name);
    if ((rc = dk_call(dd, "GET", path, NULL, DK_CALL_MS, ok200, &code, resp, err)) < 0)
        return rc;
    if (!(*out = json_loadb(resp->data, resp->len, 0, NULL)))
        return sand_err_set(err, SAND_EIO, "docker GET %s: bad JSON", path);
    return 0;
}

static void remove_container(dk_drv_t *dd, const char *name, sand_bytes_t *resp, sand_err *err,
                             int *rc)
{
    static const long ok[] = {204, 404, 0};
    char path[DK_NAME_MAX + 64];
    long code;
    int r;
    snprintf(path, sizeof(path), "/containers/%s?force=1", name);
    r = dk_call(dd, "DELETE", path, NULL, DK_CALL_MS, ok, &code, resp, err);
    if (rc && *rc == 0)
        *rc = r;
}

static void run_start(dk_drv_t *dd, dk_job_t *job, sand_bytes_t *resp)
{
    static const long created[] = {201, 0}, started[] = {204, 304, 0};
    char path[DK_NAME_MAX + 64];
    sand_err err = {0};
    json_t *j = NULL;
    struct stat st;
    long code;
    int rc;

    nftw(job->bundle, make_readable, 16, FTW_PHYS);
    if (job->redis_dir && stat(job->redis_dir, &st) == 0 && !(st.st_mode & 0001)) {
        /* the directory is bind-mounted with its mode: the container user must be able to
         * traverse it to reach the socket (0777) inside; on the host the data dir above it
         * stays closed */
        if (chmod(job->redis_dir, (st.st_mode & 07777) | 0001) < 0)
            SAND_WARN(SBX_LOG, "chmod o+x '%s': %s", job->redis_dir, strerror(errno));
    }
    if ((rc = ensure_image(dd, resp, &err)) < 0) {
        job->image_failed = true;
        job_fail(job, rc, &err);
        return;
    }
    snprintf(path, sizeof(path), "/containers/create?name=%s", job->name);
    if ((rc = dk_call(dd, "POST", path, job->body, DK_CALL_MS, created, &code, resp, &err)) < 0) {
        job_fail(job, rc, &err);
        return;
    }
    snprintf(path, sizeof(path), "/containers/%s/start", job->name);
    if ((rc = dk_call(dd, "POST", path, NULL, DK_CALL_MS, started, &code, resp, &err)) < 0 ||
        (rc = inspect(dd, job->name, &j, resp, &err)) < 0) {
        sand_err rerr;
        job_fail(job, rc, &err);
        remove_container(dd, job->name, resp, &rerr, NULL);
        return;
    }
    sand_strlcpy(job->id, json_string_value(json_object_get(j, "Id")) ?: "", sizeof(job->id));
    job->pid = (pid_t)json_integer_value(json_object_get(json_object_get(j, "State"), "Pid"));
    json_decref(j);
}

static void run_stop(dk_drv_t *dd, dk_job_t *job, sand_bytes_t *resp)
{
    static const long stopped[] = {204, 304, 404, 0};
    char path[DK_NAME_MAX + 64];
    int64_t grace_s = (dd->drv->stop_grace_ms + 999) / 1000;
    sand_err err = {0};
    long code;
    int rc;

    snprintf(path, sizeof(path), "/containers/%s/stop?t=%lld", job->name, (long long)grace_s);
    rc = dk_call(dd, "POST", path, NULL, (long)(grace_s * 1000) + DK_CALL_MS, stopped, &code, resp,
                 &err);
    /* remove it even when stop failed: force kills whatever is left */
    if (rc == SAND_ECANCELED)
        goto out;
    rc = 0;
    remove_container(dd, job->name, resp, &err, &rc);
out:
    if (rc < 0)
        job_fail(job, rc, &err);
}

static int64_t json_int_at(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    if (b)
        v = json_object_get(v, b);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static void run_stats(dk_drv_t *dd, dk_job_t *job, sand_bytes_t *resp)
{
    static const long ok200[] = {200, 0};
    char path[DK_NAME_MAX + 64];
    sand_err err = {0};
    json_t *j, *mem;
    int64_t inactive;
    long code;
    int rc;

    /* one-shot: without it Docker waits for a second sample (about 1 s) to compute CPU use,
     * which would hold every job queued behind this one */
    snprintf(path, sizeof(path), "/containers/%s/stats?stream=false&one-shot=true", job->name);
    if ((rc = dk_call(dd, "GET", path, NULL, DK_CALL_MS, ok200, &code, resp, &err)) < 0) {
        job_fail(job, rc, &err);
        return;
    }
    if (!(j = json_loadb(resp->data, resp->len, 0, NULL))) {
        job->status = SAND_EIO;
        snprintf(job->msg, sizeof(job->msg), "docker GET %s: bad JSON", path);
        return;
    }
    mem = json_object_get(j, "memory_stats");
    /* cgroup v1 reports total_inactive_file, v2 inactive_file: page cache that can be dropped */
    inactive = json_int_at(mem, "stats", "total_inactive_file");
    if (!inactive)
        inactive = json_int_at(mem, "stats", "inactive_file");
    job->stats.memory = json_int_at(mem, "usage", NULL);
    if (inactive > 0 && inactive < job->stats.memory)
        job->stats.memory -= inactive;
    job->stats.memory_limit = json_int_at(mem, "limit", NULL);
    job->stats.pids = json_int_at(j, "pids_stats", "current");
    json_decref(j);
}

/* Lists our containers (label sand.data_dir = ours). */
static int list_ours(dk_drv_t *dd, json_t **out, sand_bytes_t *resp, sand_err *err)
{
    static const long ok200[] = {200, 0};
    sand_bytes_t path;
    json_t *f;
    char *esc = NULL, *s;
    long code;
    int rc;

    *out = NULL;
    sand_bytes_init(&path, 16384);
    /* {"label":["sand.data_dir=<ours>"]}: only this sandd's containers, never another's */
    f = json_pack("{s:[s+]}", "label", DK_LABEL_DATA "=", dd->drv->data_dir);
    s = f ? json_dumps(f, JSON_COMPACT) : NULL;
    json_decref(f);
    esc = s ? curl_easy_escape(dd->curl, s, 0) : NULL;
    free(s);
    if (!esc || sand_bytes_appendf(&path, "/containers/json?all=1&filters=%s", esc) < 0) {
        rc = sand_err_set(err, SAND_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = dk_call(dd, "GET", path.data, NULL, DK_CALL_MS, ok200, &code, resp, err)) < 0)
        goto out;
    if (!(*out = json_loadb(resp->data, resp->len, 0, NULL)) || !json_is_array(*out)) {
        json_decref(*out);
        *out = NULL;
        rc = sand_err_set(err, SAND_EIO, "docker container list: bad JSON");
    }
out:
    if (esc)
        curl_free(esc);
    sand_bytes_release(&path);
    return rc;
}

static const char *container_name(json_t *c)
{
    const char *n = json_string_value(json_array_get(json_object_get(c, "Names"), 0));
    return n ? (n[0] == '/' ? n + 1 : n) : "";
}

static void run_poll(dk_drv_t *dd, dk_job_t *job, sand_bytes_t *resp)
{
    sand_err err = {0};
    json_t *list, *c;
    size_t i;
    int rc;

    if ((rc = list_ours(dd, &list, resp, &err)) < 0) {
        job_fail(job, rc, &err);
        return;
    }
    job->list = json_array();
    json_array_foreach(list, i, c)
    {
        const char *name = container_name(c);
        const char *state = json_string_value(json_object_get(c, "State")) ?: "";
        bool running = !strcmp(state, "running") || !strcmp(state, "created") ||
                       !strcmp(state, "restarting") || !strcmp(state, "paused");
        int64_t code = SAND_SBX_EXIT_UNKNOWN;
        json_t *ins;
        if (!running && inspect(dd, name, &ins, resp, &err) == 0) {
            code = json_int_at(ins, "State", "ExitCode");
            json_decref(ins);
        }
        json_array_append_new(job->list, json_pack("{s:s,s:b,s:I}", "name", name, "running",
                                                   running, "exit", (json_int_t)code));
    }
    json_decref(list);
}

static void run_adopt(dk_drv_t *dd, dk_job_t *job, sand_bytes_t *resp)
{
    sand_err err = {0};
    json_t *list, *c;
    size_t i;
    int rc;

    if ((rc = list_ours(dd, &list, resp, &err)) < 0) {
        job_fail(job, rc, &err);
        return;
    }
    job->list = json_array();
    json_array_foreach(list, i, c)
    {
        const char *name = container_name(c);
        const char *state = json_string_value(json_object_get(c, "State")) ?: "";
        json_t *labels = json_object_get(c, "Labels"), *ins;
        const char *app = json_string_value(json_object_get(labels, DK_LABEL_APP));
        const char *ver = json_string_value(json_object_get(labels, DK_LABEL_VER));
        const char *grains = json_string_value(json_object_get(labels, DK_LABEL_GRAINS));
        int64_t version = 0;

        if (strcmp(state, "running") || !app || !ver ||
            sand_parse_int(ver, INT64_MIN, INT64_MAX, &version, NULL) < 0 ||
            inspect(dd, name, &ins, resp, &err) < 0) {
            SAND_INFO(SBX_LOG, "removing %s container %s", state, name);
            remove_container(dd, name, resp, &err, NULL);
            continue;
        }
        json_array_append_new(job->list,
                              json_pack("{s:s,s:s,s:s,s:I,s:s,s:I,s:I}", "id",
                                        json_string_value(json_object_get(c, "Id")) ?: "", "name",
                                        name, "app", app, "version", (json_int_t)version, "grains",
                                        grains ? grains : "", "pid",
                                        (json_int_t)json_int_at(ins, "State", "Pid"), "memory",
                                        (json_int_t)json_int_at(ins, "HostConfig", "Memory")));
        json_decref(ins);
    }
    json_decref(list);
}

static int title_index(json_t *titles, const char *a, const char *b)
{
    json_t *t;
    size_t i;
    json_array_foreach(titles, i, t)
    {
        const char *s = json_string_value(t);
        if (s && (!strcmp(s, a) || (b && !strcmp(s, b))))
            return (int)i;
    }
    return -1;
}

/* Host pids of the workers: processes of the container (docker runs ps -ef on the host) that
 * are direct children of the supervisor and carry "--grain NAME" (a worker's forked instances
 * share its command line but are its children). */
static void run_top(dk_drv_t *dd, dk_job_t *job, sand_bytes_t *resp)
{
    static const long ok200[] = {200, 0};
    char path[DK_NAME_MAX + 64];
    sand_err err = {0};
    json_t *j, *titles, *procs, *p, *ins;
    int ipid, ippid, icmd;
    int64_t sup = 0;
    size_t i;
    long code;
    int rc;

    if ((rc = inspect(dd, job->name, &ins, resp, &err)) < 0) {
        job_fail(job, rc, &err);
        return;
    }
    sup = json_int_at(ins, "State", "Pid");
    json_decref(ins);
    snprintf(path, sizeof(path), "/containers/%s/top", job->name);
    if ((rc = dk_call(dd, "GET", path, NULL, DK_CALL_MS, ok200, &code, resp, &err)) < 0) {
        job_fail(job, rc, &err);
        return;
    }
    if (!(j = json_loadb(resp->data, resp->len, 0, NULL))) {
        job->status = SAND_EIO;
        snprintf(job->msg, sizeof(job->msg), "docker GET %s: bad JSON", path);
        return;
    }
    titles = json_object_get(j, "Titles");
    procs = json_object_get(j, "Processes");
    ipid = title_index(titles, "PID", NULL);
    ippid = title_index(titles, "PPID", NULL);
    icmd = title_index(titles, "CMD", "COMMAND");
    job->list = json_array();
    json_array_foreach(procs, i, p)
    {
        const char *cmd = json_string_value(json_array_get(p, (size_t)icmd));
        const char *g = cmd ? strstr(cmd, " --grain ") : NULL;
        int64_t pid = 0, ppid = -1;
        size_t gl;
        if (ipid < 0 || icmd < 0 || !g ||
            sand_parse_int(json_string_value(json_array_get(p, (size_t)ipid)) ?: "", 1, INT32_MAX,
                           &pid, NULL) < 0)
            continue;
        if (ippid >= 0 && sup > 0 &&
            (sand_parse_int(json_string_value(json_array_get(p, (size_t)ippid)) ?: "", 0, INT32_MAX,
                            &ppid, NULL) < 0 ||
             ppid != sup))
            continue;
        g += strlen(" --grain ");
        gl = strcspn(g, " ");
        json_array_append_new(job->list,
                              json_pack("{s:s%,s:I}", "grain", g, gl, "pid", (json_int_t)pid));
    }
    json_decref(j);
}

static void run_job(dk_drv_t *dd, dk_job_t *job, sand_bytes_t *resp)
{
    sand_err err;
    switch (job->kind) {
    case JOB_START:
        run_start(dd, job, resp);
        break;
    case JOB_STOP:
        run_stop(dd, job, resp);
        break;
    case JOB_REMOVE:
        remove_container(dd, job->name, resp, &err, NULL);
        break;
    case JOB_STATS:
        run_stats(dd, job, resp);
        break;
    case JOB_POLL:
        run_poll(dd, job, resp);
        break;
    case JOB_ADOPT:
        run_adopt(dd, job, resp);
        break;
    case JOB_TOP:
        run_top(dd, job, resp);
        break;
    }
}

static void *dk_thread(void *arg)
{
    dk_drv_t *dd = arg;
    sand_bytes_t resp;

    sand_bytes_init(&resp, DK_RESP_MAX);
    dd->curl = curl_easy_init();
    for (;;) {
        dk_job_t *job;
        pthread_mutex_lock(&dd->mu);
        while (!atomic_load(&dd->stop) && sand_list_empty(&dd->queue))
            pthread_cond_wait(&dd->cv, &dd->mu);
        if (atomic_load(&dd->stop)) {
            pthread_mutex_unlock(&dd->mu);
            break;
        }
        job = SAND_CONTAINER_OF(dd->queue.next, dk_job_t, node);
        sand_list_remove(&job->node);
        pthread_mutex_unlock(&dd->mu);

        run_job(dd, job, &resp);

        pthread_mutex_lock(&dd->mu);
        sand_list_insert_tail(&dd->done, &job->node);
        pthread_mutex_unlock(&dd->mu);
        uv_async_send(&dd->async);
    }
    if (dd->curl)
        curl_easy_cleanup(dd->curl);
    dd->curl = NULL;
    sand_bytes_release(&resp);
    return NULL;
}

/* ---- jobs (loop) ------------------------------------------------------------------------ */

static dk_job_t *job_new(dk_kind_t kind, sand_sbx_t *sbx)
{
    dk_job_t *job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->kind = kind;
    job->sbx = sbx;
    if (sbx) {
        dk_sbx_t *ds = sbx->priv;
        if (!(job->name = sand_strdup(ds->name))) {
            free(job);
            return NULL;
        }
        sbx->pending_ops++;
    }
    return job;
}

static void job_free(dk_job_t *job)
{
    free(job->name);
    free(job->body);
    free(job->bundle);
    free(job->redis_dir);
    json_decref(job->list);
    free(job);
}

static void job_submit(dk_drv_t *dd, dk_job_t *job)
{
    if (dd->outstanding++ == 0)
        uv_ref((uv_handle_t *)&dd->async);
    pthread_mutex_lock(&dd->mu);
    sand_list_insert_tail(&dd->queue, &job->node);
    pthread_cond_signal(&dd->cv);
    pthread_mutex_unlock(&dd->mu);
}

static void submit_remove(dk_drv_t *dd, const char *name)
{
    dk_job_t *job = job_new(JOB_REMOVE, NULL);
    if (!job || !(job->name = sand_strdup(name))) {
        if (job)
            job_free(job);
        return;
    }
    job_submit(dd, job);
}

static sand_sbx_t *find_by_name(sand_sbx_driver_t *drv, const char *name)
{
    sand_list_t *pos, *tmp;
    sand_list_foreach_safe(pos, tmp, &drv->sandboxes)
    {
        sand_sbx_t *sbx = SAND_CONTAINER_OF(pos, sand_sbx_t, node);
        dk_sbx_t *ds = sbx->priv;
        if (ds && !strcmp(ds->name, name))
            return sbx;
    }
    return NULL;
}

static void done_start(dk_drv_t *dd, dk_job_t *job)
{
    sand_sbx_t *sbx = job->sbx;
    if (job->status < 0) {
        if (job->image_failed)
            sand_strlcpy(dd->image_error, job->msg, sizeof(dd->image_error));
        SAND_ERROR(SBX_LOG, "start sandbox of '%s': %s", sbx->app, job->msg);
        sand__sbx_exited(sbx, job->status);
        return;
    }
    sand_strlcpy(sbx->id, job->id, sizeof(sbx->id));
    sbx->pid = job->pid;
    if (sbx->state == SAND_SBX_STARTING) {
        sbx->state = SAND_SBX_RUNNING;
        SAND_INFO(SBX_LOG, "started sandbox of '%s' v%lld (grains: %s): container %s (%.12s)",
                  sbx->app, (long long)sbx->version, *sbx->grains ? sbx->grains : "all", job->name,
                  job->id);
    }
}

static void done_poll(dk_drv_t *dd, dk_job_t *job)
{
    sand_list_t *pos, *tmp;

    dd->poll_inflight = false;
    if (job->status < 0) {
        /* once per outage, not every poll interval */
        if (!dd->poll_failing)
            SAND_WARN(SBX_LOG, "watching containers: %s", job->msg);
        dd->poll_failing = true;
        return;
    }
    if (dd->poll_failing)
        SAND_INFO(SBX_LOG, "watching containers again");
    dd->poll_failing = false;
    sand_list_foreach_safe(pos, tmp, &dd->drv->sandboxes)
    {
        sand_sbx_t *sbx = SAND_CONTAINER_OF(pos, sand_sbx_t, node);
        dk_sbx_t *ds = sbx->priv;
        json_t *c, *found = NULL;
        size_t i;
        if (sbx->state != SAND_SBX_RUNNING || !ds)
            continue;
        json_array_foreach(job->list, i, c)
        {
            if (!strcmp(json_string_value(json_object_get(c, "name")) ?: "", ds->name))
                found = c;
        }
        if (found && json_is_true(json_object_get(found, "running")))
            continue;
        /* the dead container would only keep its name and logs: remove it */
        if (found)
            submit_remove(dd, ds->name);
        sand__sbx_exited(sbx, found ? (int)json_integer_value(json_object_get(found, "exit"))
                                    : SAND_SBX_EXIT_UNKNOWN);
    }
}

static void done_adopt(dk_drv_t *dd, dk_job_t *job)
{
    sand_sbx_driver_t *drv = dd->drv;
    json_t *c;
    size_t i;

    dd->adopt_pending = false;
    if (job->status < 0) {
        if (job->done)
            job->done(drv, job->status, job->msg, job->ud);
        return;
    }
    json_array_foreach(job->list, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *name = json_string_value(json_object_get(c, "name"));
        sand_sbx_t *sbx;
        dk_sbx_t *ds;
        if (drv->closing)
            break;
        if (sand__sbx_known(drv, id) || find_by_name(drv, name))
            continue;
        if (!(sbx = sand__sbx_new(drv, json_string_value(json_object_get(c, "app")),
                                  json_integer_value(json_object_get(c, "version")),
                                  json_string_value(json_object_get(c, "grains")))) ||
            !(ds = calloc(1, sizeof(*ds)))) {
            SAND_ERROR(SBX_LOG, "out of memory adopting container %s", name);
            if (sbx) {
                sbx->freed = true;
                sand__sbx_maybe_release(sbx);
            }
            continue;
        }
        sbx->priv = ds;
        sand_strlcpy(ds->name, name, sizeof(ds->name));
        ds->memory_limit = json_integer_value(json_object_get(c, "memory"));
        sand_strlcpy(sbx->id, id, sizeof(sbx->id));
        sbx->pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
        sbx->adopted = true;
        sbx->state = SAND_SBX_RUNNING;
        SAND_INFO(SBX_LOG, "found sandbox of '%s' v%lld (grains: %s): container %s", sbx->app,
                  (long long)sbx->version, *sbx->grains ? sbx->grains : "all", name);
        if (job->found)
            job->found(sbx, job->ud);
        if (drv->closing)
            break;
        if (!sbx->freed && sbx->state == SAND_SBX_RUNNING && !sbx->exit_cb) {
            sbx->freed = true;
            sand__sbx_maybe_release(sbx);
        }
    }
    if (!drv->closing && job->done)
        job->done(drv, 0, "", job->ud);
}

static void done_top(dk_job_t *job)
{
    size_t n = job->status == 0 ? json_array_size(job->list) : 0;
    sand_sbx_worker_pid_t *w = n ? calloc(n, sizeof(*w)) : NULL;
    json_t *c;
    size_t i;

    if (n && !w) {
        job->pids_cb(job->sbx, SAND_ENOMEM, NULL, 0, job->ud);
        return;
    }
    json_array_foreach(job->list, i, c)
    {
        if (i >= n)
            break;
        w[i].grain = json_string_value(json_object_get(c, "grain"));
        w[i].pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
    }
    if (job->status < 0)
        job->pids_cb(job->sbx, job->status, NULL, 0, job->ud);
    else
        job->pids_cb(job->sbx, 0, w ? w : (sand_sbx_worker_pid_t[1]){{0}}, n, job->ud);
    free(w);
}

/* Runs the loop half of a finished job (canceled: the driver is closing). */
static void job_complete(dk_drv_t *dd, dk_job_t *job, bool canceled)
{
    sand_sbx_t *sbx = job->sbx;

    if (--dd->outstanding == 0)
        uv_unref((uv_handle_t *)&dd->async);
    if (canceled) {
        job->status = SAND_ECANCELED;
        sand_strlcpy(job->msg, "sandbox driver closed", sizeof(job->msg));
    }
    switch (job->kind) {
    case JOB_START:
        if (!canceled)
            done_start(dd, job);
        break;
    case JOB_STOP:
        if (!canceled) {
            if (job->status < 0)
                SAND_ERROR(SBX_LOG, "stop sandbox of '%s': %s", sbx->app, job->msg);
            else
                SAND_INFO(SBX_LOG, "stopped sandbox of '%s' (container %s)", sbx->app, job->name);
            sand__sbx_stop_done(sbx, job->status);
        }
        break;
    case JOB_REMOVE:
        break;
    case JOB_STATS:
        if (job->status == 0) {
            dk_sbx_t *ds = sbx->priv;
            if (ds->memory_limit <= 0)
                job->stats.memory_limit = 0; /* Docker reports the host's memory then */
            job->stats_cb(sbx, 0, &job->stats, job->ud);
        } else {
            job->stats_cb(sbx, job->status, NULL, job->ud);
        }
        break;
    case JOB_TOP:
        done_top(job);
        break;
    case JOB_POLL:
        if (canceled)
            dd->poll_inflight = false;
        else
            done_poll(dd, job);
        break;
    case JOB_ADOPT:
        if (canceled) {
            dd->adopt_pending = false;
            if (job->done)
                job->done(dd->drv, SAND_ECANCELED, job->msg, job->ud);
        } else {
            done_adopt(dd, job);
        }
        break;
    }
    if (sbx) {
        sbx->pending_ops--;
        if (!canceled)
            sand__sbx_maybe_release(sbx);
    }
    job_free(job);
}

static void on_async(uv_async_t *h)
{
    dk_drv_t *dd = h->data;
    sand_list_t batch, *pos, *tmp;

    sand_list_init(&batch);
    pthread_mutex_lock(&dd->mu);
    sand_list_foreach_safe(pos, tmp, &dd->done)
    {
        sand_list_remove(pos);
        sand_list_insert_tail(&batch, pos);
    }
    pthread_mutex_unlock(&dd->mu);
    sand_list_foreach_safe(pos, tmp, &batch)
    {
        dk_job_t *job = SAND_CONTAINER_OF(pos, dk_job_t, node);
        sand_list_remove(pos);
        job_complete(dd, job, dd->drv->closing);
    }
}

static void on_poll_timer(uv_timer_t *t)
{
    dk_drv_t *dd = t->data;
    sand_list_t *pos, *tmp;
    bool any = false;
    dk_job_t *job;

    if (dd->poll_inflight || dd->drv->closing)
        return;
    sand_list_foreach_safe(pos, tmp, &dd->drv->sandboxes)
    {
        sand_sbx_t *sbx = SAND_CONTAINER_OF(pos, sand_sbx_t, node);
        any = any || sbx->state == SAND_SBX_RUNNING;
    }
    if (!any || !(job = job_new(JOB_POLL, NULL)))
        return;
    dd->poll_inflight = true;
    job_submit(dd, job);
}

/* ---- driver ops (loop) ------------------------------------------------------------------ */

static int dk_open(sand_sbx_driver_t *drv, sand_err *err)
{
    dk_drv_t *dd = calloc(1, sizeof(*dd));
    int rc;

    if (!dd)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    dd->drv = drv;
    sand_list_init(&dd->queue);
    sand_list_init(&dd->done);
    atomic_init(&dd->stop, false);
    pthread_mutex_init(&dd->mu, NULL);
    pthread_cond_init(&dd->cv, NULL);
    /* the thread only touches the async handle after a job was submitted, which needs open to
     * have succeeded: starting it first leaves nothing to undo in the loop if it fails */
    if ((rc = pthread_create(&dd->thread, NULL, dk_thread, dd)) != 0) {
        pthread_mutex_destroy(&dd->mu);
        pthread_cond_destroy(&dd->cv);
        free(dd);
        return sand_err_set(err, SAND_EIO, "docker driver thread: %s", strerror(rc));
    }
    dd->thread_started = true;
    if ((rc = uv_async_init(drv->loop, &dd->async, on_async)) < 0) {
        atomic_store(&dd->stop, true);
        pthread_mutex_lock(&dd->mu);
        pthread_cond_signal(&dd->cv);
        pthread_mutex_unlock(&dd->mu);
        pthread_join(dd->thread, NULL);
        pthread_mutex_destroy(&dd->mu);
        pthread_cond_destroy(&dd->cv);
        free(dd);
        return sand_err_set(err, SAND_EIO, "uv_async_init: %s", uv_strerror(rc));
    }
    dd->async.data = dd;
    /* the loop stays alive for the async handle only while a job is outstanding */
    uv_unref((uv_handle_t *)&dd->async);
    uv_timer_init(drv->loop, &dd->poll);
    dd->poll.data = dd;
    drv->priv = dd;
    uv_timer_start(&dd->poll, on_poll_timer, (uint64_t)drv->watch_interval_ms,
                   (uint64_t)drv->watch_interval_ms);
    uv_unref((uv_handle_t *)&dd->poll);
    SAND_INFO(SBX_LOG, "docker sandbox driver on '%s', image %s", drv->docker_socket,
              drv->image ? drv->image : DK_BASE_IMAGE " (built locally at first use)");
    return 0;
}

static void dd_handle_closed(uv_handle_t *h)
{
    dk_drv_t *dd = h->data;
    sand_sbx_driver_t *drv = dd->drv;
    if (--dd->closing_handles == 0) {
        pthread_mutex_destroy(&dd->mu);
        pthread_cond_destroy(&dd->cv);
        free(dd);
        drv->priv = NULL;
    }
    sand__drv_handle_closed(drv);
}

static int dk_close(sand_sbx_driver_t *drv)
{
    dk_drv_t *dd = drv->priv;
    sand_list_t *pos, *tmp;

    pthread_mutex_lock(&dd->mu);
    atomic_store(&dd->stop, true);
    pthread_cond_signal(&dd->cv);
    pthread_mutex_unlock(&dd->mu);
    if (dd->thread_started)
        pthread_join(dd->thread, NULL);
    dd->thread_started = false;
    /* the thread is gone: both lists are ours now; finished jobs first, in order */
    sand_list_foreach_safe(pos, tmp, &dd->done)
    {
        sand_list_remove(pos);
        job_complete(dd, SAND_CONTAINER_OF(pos, dk_job_t, node), true);
    }
    sand_list_foreach_safe(pos, tmp, &dd->queue)
    {
        sand_list_remove(pos);
        job_complete(dd, SAND_CONTAINER_OF(pos, dk_job_t, node), true);
    }
    uv_timer_stop(&dd->poll);
    dd->closing_handles = 2;
    uv_close((uv_handle_t *)&dd->async, dd_handle_closed);
    uv_close((uv_handle_t *)&dd->poll, dd_handle_closed);
    return 2;
}

/* Docker names: [a-zA-Z0-9][a-zA-Z0-9_.-]*; anything else becomes '_'. */
static void name_append(sand_bytes_t *b, const char *s)
{
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            c = '_';
        sand_bytes_append(b, &c, 1);
    }
}

static bool is_dir(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static void add_bind(json_t *binds, const char *host, const char *inside)
{
    sand_bytes_t b;
    sand_bytes_init(&b, 16384);
    if (sand_bytes_appendf(&b, "%s:%s:ro", host, inside) == 0)
        json_array_append_new(binds, json_string(b.data));
    sand_bytes_release(&b);
}

/* The POST /containers/create body for sbx. NULL on ENOMEM or a path too long. */
static char *create_body(sand_sbx_t *sbx, const sand_sbx_spec_t *spec, int64_t memory, int64_t pids,
                         sand_err *err)
{
    static const char *const host_ro[] = {
        "/usr",          "/etc/alternatives", "/etc/java-17-openjdk",
        "/etc/python3",  "/etc/python3.11",   "/etc/ld.so.cache",
        "/etc/localtime"};
    sand_sbx_driver_t *drv = sbx->drv;
    char redis_in[PATH_MAX], redis_dir[PATH_MAX], exe[PATH_MAX], ver[32];
    char **env = NULL;
    json_t *root = NULL, *cmd, *jenv, *labels, *host, *binds;
    char *out = NULL;
    bool have_home = false;

    redis_in[0] = '\0';
    if (drv->redis_socket) {
        const char *slash = strrchr(drv->redis_socket, '/');
        size_t dl = slash ? (size_t)(slash - drv->redis_socket) : 0;
        if (!slash || dl >= sizeof(redis_dir) ||
            (size_t)snprintf(redis_in, sizeof(redis_in), DK_RUN_DIR "/%s", slash + 1) >=
                sizeof(redis_in)) {
            sand_err_set(err, SAND_EINVAL, "redis socket path '%s' unusable", drv->redis_socket);
            return NULL;
        }
        memcpy(redis_dir, drv->redis_socket, dl);
        redis_dir[dl] = '\0';
        if (!dl)
            sand_strlcpy(redis_dir, "/", sizeof(redis_dir));
    }
    if ((size_t)snprintf(exe, sizeof(exe), "%s/" SUPERVISOR_NAME, drv->bin_dir) >= sizeof(exe)) {
        sand_err_set(err, SAND_ETOOBIG, "bin dir path too long");
        return NULL;
    }
    if (!(env = sand__sbx_env_build(spec, sbx->grains, DK_BUNDLE, drv->bin_dir, drv->lib_dir,
                                    drv->redis_socket ? redis_in : NULL))) {
        sand_err_set(err, SAND_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(ver, sizeof(ver), "%lld", (long long)sbx->version);
    root = json_object();
    cmd = json_pack("[s,s,s]", exe, "--app", sbx->app);
    if (*sbx->grains) {
        json_array_append_new(cmd, json_string("--grains"));
        json_array_append_new(cmd, json_string(sbx->grains));
    }
    jenv = json_array();
    for (size_t i = 0; env[i]; i++) {
        have_home = have_home || !strncmp(env[i], "HOME=", 5);
        json_array_append_new(jenv, json_string(env[i]));
    }
    if (!have_home)
        json_array_append_new(jenv, json_string("HOME=/tmp"));
    labels = json_pack("{s:s,s:s,s:s,s:s}", DK_LABEL_APP, sbx->app, DK_LABEL_VER, ver,
                       DK_LABEL_GRAINS, sbx->grains, DK_LABEL_DATA, drv->data_dir);
    binds = json_array();
    for (size_t i = 0; i < SAND_ARRAY_LEN(host_ro); i++)
        if (exists(host_ro[i]))
            add_bind(binds, host_ro[i], host_ro[i]);
    for (size_t i = 0; i < SAND_ARRAY_LEN(usr_links); i++) {
        char p[64];
        snprintf(p, sizeof(p), "/%s", usr_links[i]);
        if (is_dir(p))
            add_bind(binds, p, p);
    }
    add_bind(binds, drv->bin_dir, drv->bin_dir);
    if (drv->lib_dir && strcmp(drv->lib_dir, drv->bin_dir) && exists(drv->lib_dir))
        add_bind(binds, drv->lib_dir, drv->lib_dir);
    add_bind(binds, spec->bundle_dir, DK_BUNDLE);
    if (drv->redis_socket)
        add_bind(binds, redis_dir, DK_RUN_DIR);
    host = json_pack("{s:s,s:b,s:{s:s},s:o,s:[s],s:[s],s:b,s:b}", "NetworkMode", "none",
                     "ReadonlyRootfs", 1, "Tmpfs", "/tmp", DK_TMPFS, "Binds", binds, "SecurityOpt",
                     "no-new-privileges", "CapDrop", "ALL", "AutoRemove", 0, "Init", 0);
    if (host && memory > 0)
        json_object_set_new(host, "Memory", json_integer(memory));
    if (host && pids > 0)
        json_object_set_new(host, "PidsLimit", json_integer(pids));
    if (root && cmd && jenv && labels && host) {
        json_object_set_new(root, "Image", json_string(drv->image ? drv->image : DK_BASE_IMAGE));
        json_object_set_new(root, "Cmd", cmd);
        json_object_set_new(root, "Env", jenv);
        json_object_set_new(root, "WorkingDir", json_string(DK_BUNDLE));
        json_object_set_new(root, "User", json_string(DK_USER));
        json_object_set_new(root, "Hostname", json_string("sand"));
        json_object_set_new(root, "Labels", labels);
        json_object_set_new(root, "HostConfig", host);
        out = json_dumps(root, JSON_COMPACT);
        cmd = jenv = labels = host = NULL;
    }
    json_decref(cmd);
    json_decref(jenv);
    json_decref(labels);
    json_decref(host);
    json_decref(root);
    sand__sbx_env_free(env);
    if (!out)
        sand_err_set(err, SAND_ENOMEM, "out of memory");
    return out;
}

static int dk_start(sand_sbx_t *sbx, const sand_sbx_spec_t *spec, sand_err *err)
{
    sand_sbx_driver_t *drv = sbx->drv;
    dk_drv_t *dd = drv->priv;
    dk_sbx_t *ds;
    dk_job_t *job;
    sand_bytes_t name;
    char rnd[9], exe[PATH_MAX];
    int64_t memory = spec->memory > 0 ? spec->memory : drv->memory;
    int64_t pids = spec->pids > 0 ? spec->pids : drv->pids;

    if (dd->image_error[0]) {
        /* report a failed image build synchronously once, so the app fails with the reason
         * instead of retrying forever; the next start tries again */
        sand_err_set(err, SAND_EIO, "%s", dd->image_error);
        dd->image_error[0] = '\0';
        return err->code;
    }
    if ((size_t)snprintf(exe, sizeof(exe), "%s/" SUPERVISOR_NAME, drv->bin_dir) >= sizeof(exe) ||
        access(exe, X_OK) < 0)
        return sand_err_errno(err, SAND_ENOTFOUND, "supervisor '%s'", exe);
    if (!(ds = calloc(1, sizeof(*ds))))
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    sbx->priv = ds;
    ds->memory_limit = memory;
    if (sand_random_hex(rnd, 4) < 0)
        return sand_err_set(err, SAND_EIO, "no randomness for the container name");
    sand_bytes_init(&name, DK_NAME_MAX - 1);
    sand_bytes_appends(&name, "sand-");
    name_append(&name, sbx->app);
    sand_bytes_appendf(&name, "-v%lld", (long long)sbx->version);
    if (*sbx->grains) {
        sand_bytes_appends(&name, "-");
        name_append(&name, sbx->grains);
    }
    if (sand_bytes_appendf(&name, "-%s", rnd) < 0) {
        sand_bytes_release(&name);
        return sand_err_set(err, SAND_ETOOBIG, "container name of '%s' too long", sbx->app);
    }
    sand_strlcpy(ds->name, name.data, sizeof(ds->name));
    sand_bytes_release(&name);

    if (!(job = job_new(JOB_START, sbx)))
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    if (!(job->body = create_body(sbx, spec, memory, pids, err)) ||
        !(job->bundle = sand_strdup(spec->bundle_dir)) ||
        (drv->redis_socket && strrchr(drv->redis_socket, '/') > drv->redis_socket &&
         !(job->redis_dir =
               sand_strndup(drv->redis_socket,
                            (size_t)(strrchr(drv->redis_socket, '/') - drv->redis_socket))))) {
        sbx->pending_ops--;
        job_free(job);
        return err->code < 0 ? err->code : sand_err_set(err, SAND_ENOMEM, "out of memory");
    }
    job_submit(dd, job);
    return 0;
}

static void dk_stop(sand_sbx_t *sbx)
{
    dk_job_t *job = sbx->priv ? job_new(JOB_STOP, sbx) : NULL;
    if (!job) {
        sand__sbx_stop_done(sbx, sbx->priv ? SAND_ENOMEM : 0);
        return;
    }
    job_submit(sbx->drv->priv, job);
}

static int dk_stats(sand_sbx_t *sbx, sand_sbx_stats_cb cb, void *ud)
{
    dk_job_t *job = job_new(JOB_STATS, sbx);
    if (!job)
        return SAND_ENOMEM;
    job->stats_cb = cb;
    job->ud = ud;
    job_submit(sbx->drv->priv, job);
    return 0;
}

static int dk_worker_pids(sand_sbx_t *sbx, sand_sbx_worker_pids_cb cb, void *ud)
{
    dk_job_t *job = job_new(JOB_TOP, sbx);
    if (!job)
        return SAND_ENOMEM;
    job->pids_cb = cb;
    job->ud = ud;
    job_submit(sbx->drv->priv, job);
    return 0;
}

static int dk_adopt_all(sand_sbx_driver_t *drv, sand_sbx_adopt_cb found, sand_sbx_done_cb done,
                        void *ud, sand_err *err)
{
    dk_drv_t *dd = drv->priv;
    dk_job_t *job;
    if (dd->adopt_pending)
        return sand_err_set(err, SAND_EBUSY, "a sandbox scan is already running");
    if (!(job = job_new(JOB_ADOPT, NULL)))
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    job->found = found;
    job->done = done;
    job->ud = ud;
    dd->adopt_pending = true;
    job_submit(dd, job);
    return 0;
}

static int dk_release_sbx(sand_sbx_t *sbx)
{
    (void)sbx;
    return 0; /* dk_sbx_t holds no handle; the generic layer frees it */
}

const sbx_ops_t sand__sbx_docker_ops = {
    .open = dk_open,
    .start = dk_start,
    .stop = dk_stop,
    .stats = dk_stats,
    .worker_pids = dk_worker_pids,
    .adopt_all = dk_adopt_all,
    .release_sbx = dk_release_sbx,
    .close = dk_close,
};
