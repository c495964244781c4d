/*
 * Tests of the bus library against the real services: a private redis-server started through
 * sand_redisd_ensure and the real sand-kafka program (mock cluster). They cover reattaching to and
 * replacing the embedded services, the local bus client (round trips, pipelining, fail-fast and
 * reconnect after CLIENT KILL, cancellation at close), the LQHA stream reader (two streams,
 * re-reading pending entries after a restart) and the global bus client (topic creation,
 * keyed ordering through a regex subscription, resuming after committed offsets). Each loop test
 * ends with uv_loop_close() == 0, so a leaked handle fails it. Latencies are printed, not asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "sand/bus.h"

static char g_dir[64];
static char g_kdir[64]; /* the sand-kafka run dir while test_gbus runs, for the teardown */
static sand_redisd_t g_redis;

/* ---- helpers ------------------------------------------------------------------------------ */

struct guard {
    uv_timer_t t;
    bool fired;
};

static void on_guard(uv_timer_t *t)
{
    ((struct guard *)t->data)->fired = true;
}

/* Runs the loop until *flag is true or timeout_ms passed. Returns *flag. */
static bool run_until(uv_loop_t *loop, const bool *flag, int timeout_ms)
{
    struct guard g = {.fired = false};
    uv_timer_init(loop, &g.t);
    g.t.data = &g;
    uv_timer_start(&g.t, on_guard, (uint64_t)timeout_ms, 0);
    while (!*flag && !g.fired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&g.t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

static void run_for(uv_loop_t *loop, int ms)
{
    bool never = false;
    run_until(loop, &never, ms);
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void rm_rf(const char *dir)
{
    char cmd[256];
    pid_t pid = fork();
    if (pid == 0) {
        snprintf(cmd, sizeof(cmd), "%s", dir);
        execlp("rm", "rm", "-rf", cmd, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, int64_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_i64);
    printf("# %s over %zu: p50 %lld us, p99 %lld us\n", what, n, (long long)v[n / 2],
           (long long)v[(n * 99) / 100]);
}

static redisContext *raw_connect(void)
{
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectUnixWithTimeout(g_redis.sock, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

static void raw_cmd_ok(redisContext *c, const char *cmd)
{
    redisReply *r = redisCommand(c, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

/* ---- embedded redis ----------------------------------------------------------------------- */

static void test_redisd_lifecycle(void **state)
{
    char dir[64] = "/tmp/sand-bus-rd-XXXXXX";
    sand_redisd_t a, b, c;
    sand_err err;
    assert_non_null(mkdtemp(dir));

    assert_int_equal(sand_redisd_ensure(dir, &a, &err), 0);
    assert_true(a.started);
    assert_true(a.pid > 0);
    assert_int_equal(strlen(a.run_id), 40);
    assert_int_equal(strlen(a.pass), 64);
    struct stat st;
    char path[128];
    snprintf(path, sizeof(path), "%s/redis.pass", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* Reattach: same process, same run_id, nothing started. */
    assert_int_equal(sand_redisd_ensure(dir, &b, &err), 0);
    assert_false(b.started);
    assert_int_equal(b.pid, a.pid);
    assert_string_equal(b.run_id, a.run_id);
    assert_string_equal(b.pass, a.pass);

    /* A client without AUTH is refused. */
    struct timeval tv = {.tv_sec = 2};
    redisContext *rc = redisConnectUnixWithTimeout(a.sock, tv);
    assert_non_null(rc);
    assert_int_equal(rc->err, 0);
    redisReply *r = redisCommand(rc, "SET k v");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(r->str, "NOAUTH"));
    freeReplyObject(r);
    redisFree(rc);

    /* After a crash a new server is started. */
    assert_int_equal(kill(a.pid, SIGKILL), 0);
    assert_int_equal(sand_redisd_ensure(dir, &c, &err), 0);
    assert_true(c.started);
    assert_int_not_equal(c.pid, a.pid);
    assert_string_not_equal(c.run_id, a.run_id);

    assert_int_equal(sand_redisd_stop(dir, &err), 0);
    assert_int_equal(kill(c.pid, 0), -1);
    rm_rf(dir);
}

/* ---- local bus ---------------------------------------------------------------------------- */

struct lctx {
    int answered;
    int failed;
    int cancelled;
    int in_order;
    int next_expected;
    bool done;
    int target;
    int64_t t0;
    int64_t *lat;
    int nlat;
    sand_lbus_t *lb;
    int ups, downs;
    bool up, down;
    long long client_id;
    char last_err[128];
};

static void on_state(sand_lbus_t *lb, bool up, void *ud)
{
    struct lctx *c = ud;
    if (up) {
        c->ups++;
        c->up = true;
    } else {
        c->downs++;
        c->down = true;
    }
}

static sand_lbus_t *open_lbus(uv_loop_t *loop, struct lctx *c, int min_ms)
{
    sand_lbus_t *lb;
    sand_err err;
    sand_lbus_opts o = {.endpoint = g_redis.endpoint,
                        .password = g_redis.pass,
                        .name = "test",
                        .reconnect_min_ms = min_ms,
                        .state_cb = on_state,
                        .state_ud = c};
    assert_int_equal(sand_lbus_open(loop, &o, &lb, &err), 0);
    return lb;
}

static void on_count(sand_lbus_t *lb, int status, const redisReply *r, const char *errstr, void *ud)
{
    struct lctx *c = ud;
    if (status == 0) {
        c->answered++;
    } else {
        if (status == SAND_ECANCELED)
            c->cancelled++;
        else
            c->failed++;
        snprintf(c->last_err, sizeof(c->last_err), "%s", errstr ? errstr : "");
    }
    if (c->answered + c->failed + c->cancelled >= c->target)
        c->done = true;
}

static void on_get(sand_lbus_t *lb, int status, const redisReply *r, const char *errstr, void *ud)
{
    struct lctx *c = ud;
    assert_int_equal(status, 0);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "hello world");
    c->done = true;
}

static void test_lbus_roundtrip(void **state)
{
    uv_loop_t loop;
    struct lctx c = {0};
    uv_loop_init(&loop);
    sand_lbus_t *lb = open_lbus(&loop, &c, 0);
    /* Issued while still connecting: pipelined behind AUTH. */
    const char *argv[] = {"SET", "sand:t:k", "hello world"};
    c.target = 1;
    assert_int_equal(sand_lbus_command_argv(lb, on_count, &c, 3, argv, NULL), 0);
    assert_true(run_until(&loop, &c.done, 2000));
    assert_int_equal(c.answered, 1);
    assert_true(sand_lbus_connected(lb));
    c.done = false;
    assert_int_equal(sand_lbus_command(lb, on_get, &c, "GET %s", "sand:t:k"), 0);
    assert_true(run_until(&loop, &c.done, 2000));
    sand_lbus_close(lb, NULL, NULL);
    close_loop(&loop);
}

static void on_xadd_seq(sand_lbus_t *lb, int status, const redisReply *r, const char *errstr,
                        void *ud)
{
    struct lctx *c = ud;
    assert_int_equal(status, 0);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    int64_t now = sand_mono_us();
    c->lat[c->nlat++] = now - c->t0;
    if (c->nlat == c->target) {
        c->done = true;
        return;
    }
    c->t0 = sand_mono_us();
    assert_int_equal(sand_lbus_command(lb, on_xadd_seq, c, "XADD sand:t:lat * e %d", c->nlat), 0);
}

struct pipe_req {
    struct lctx *c;
    int idx;
};

static void on_xadd_pipe(sand_lbus_t *lb, int status, const redisReply *r, const char *errstr,
                         void *ud)
{
    struct pipe_req *p = ud;
    assert_int_equal(status, 0);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    if (p->idx == p->c->next_expected)
        p->c->in_order++;
    p->c->next_expected = p->idx + 1;
    if (++p->c->answered == p->c->target)
        p->c->done = true;
}

static void test_lbus_pipeline_and_latency(void **state)
{
    uv_loop_t loop;
    struct lctx c = {0};
    uv_loop_init(&loop);
    sand_lbus_t *lb = open_lbus(&loop, &c, 0);
    assert_true(run_until(&loop, &c.up, 2000));

    static struct pipe_req reqs[1000];
    c.target = 1000;
    for (int i = 0; i < 1000; i++) {
        reqs[i] = (struct pipe_req){&c, i};
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        const char *argv[] = {"XADD", "sand:t:pipe", "*", "i", v};
        assert_int_equal(sand_lbus_command_argv(lb, on_xadd_pipe, &reqs[i], 5, argv, NULL), 0);
    }
    assert_true(run_until(&loop, &c.done, 5000));
    assert_int_equal(c.answered, 1000);
    assert_int_equal(c.in_order, 1000);

    /* Sequential round trips, for the report. */
    struct lctx s = {0};
    s.target = 10000;
    s.lat = calloc(10000, sizeof(int64_t));
    s.t0 = sand_mono_us();
    assert_int_equal(sand_lbus_command(lb, on_xadd_seq, &s, "XADD sand:t:lat * e %d", 0), 0);
    assert_true(run_until(&loop, &s.done, 30000));
    report("lbus XADD round trip", s.lat, 10000);
    free(s.lat);

    sand_lbus_close(lb, NULL, NULL);
    close_loop(&loop);
}

static void on_client_id(sand_lbus_t *lb, int status, const redisReply *r, const char *errstr,
                         void *ud)
{
    struct lctx *c = ud;
    assert_int_equal(status, 0);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    c->client_id = r->integer;
    c->done = true;
}

static void test_lbus_reconnect(void **state)
{
    uv_loop_t loop;
    struct lctx c = {0};
    uv_loop_init(&loop);
    /* A long first backoff keeps the "down" window open for the fail-fast check. */
    sand_lbus_t *lb = open_lbus(&loop, &c, 300);
    assert_true(run_until(&loop, &c.up, 2000));
    assert_int_equal(sand_lbus_command(lb, on_client_id, &c, "CLIENT ID"), 0);
    assert_true(run_until(&loop, &c.done, 2000));

    redisContext *raw = raw_connect();
    redisReply *r = redisCommand(raw, "AUTH %s", g_redis.pass);
    freeReplyObject(r);
    r = redisCommand(raw, "CLIENT KILL ID %lld", c.client_id);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    redisFree(raw);

    assert_true(run_until(&loop, &c.down, 2000));
    assert_false(sand_lbus_connected(lb));
    /* While down, commands fail fast through their callback. */
    c.done = false;
    c.target = 1;
    assert_int_equal(sand_lbus_command(lb, on_count, &c, "PING"), 0);
    assert_int_equal(c.failed, 0); /* never from inside the call */
    assert_true(run_until(&loop, &c.done, 200));
    assert_int_equal(c.failed, 1);

    c.up = false;
    assert_true(run_until(&loop, &c.up, 3000));
    assert_int_equal(c.ups, 2);
    c.done = false;
    assert_int_equal(sand_lbus_command(lb, on_client_id, &c, "CLIENT ID"), 0);
    assert_true(run_until(&loop, &c.done, 2000));
    sand_lbus_close(lb, NULL, NULL);
    close_loop(&loop);
}

static void on_closed_flag(void *ud)
{
    *(bool *)ud = true;
}

static void test_lbus_close_runs_callbacks(void **state)
{
    uv_loop_t loop;
    struct lctx c = {0};
    uv_loop_init(&loop);
    sand_lbus_t *lb = open_lbus(&loop, &c, 0);
    assert_true(run_until(&loop, &c.up, 2000));
    /* A command that cannot be answered soon, with others queued behind it. */
    c.target = 11;
    assert_int_equal(sand_lbus_command(lb, on_count, &c, "BLPOP sand:t:never 10"), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(sand_lbus_command(lb, on_count, &c, "PING"), 0);
    run_for(&loop, 50);
    assert_int_equal(c.answered + c.cancelled, 0);
    bool closed = false;
    sand_lbus_close(lb, on_closed_flag, &closed);
    assert_int_equal(c.cancelled, 11);
    /* After close nothing is accepted and the callback is not called. */
    assert_int_equal(sand_lbus_command(lb, on_count, &c, "PING"), SAND_ECANCELED);
    close_loop(&loop);
    assert_true(closed);
    assert_int_equal(c.cancelled, 11);
}

/* ---- stream reader ------------------------------------------------------------------------ */

struct rctx {
    int n;
    int pending;
    char ids[16][48];
    char keys[16][32];
    char vals[16][16];
    bool done;
    int target;
};

static void on_entry(sand_lbus_reader_t *r, const sand_lbus_entry_t *e, void *ud)
{
    struct rctx *c = ud;
    assert_true(c->n < 16);
    snprintf(c->ids[c->n], sizeof(c->ids[0]), "%.*s", (int)e->idlen, e->id);
    snprintf(c->keys[c->n], sizeof(c->keys[0]), "%.*s", (int)e->keylen, e->key);
    size_t len = 0;
    const char *v = sand_lbus_entry_get(e, "v", &len);
    assert_non_null(v);
    snprintf(c->vals[c->n], sizeof(c->vals[0]), "%.*s", (int)len, v);
    if (e->pending)
        c->pending++;
    if (++c->n >= c->target)
        c->done = true;
}

static sand_lbus_reader_t *open_reader(uv_loop_t *loop, struct rctx *c)
{
    sand_lbus_reader_t *r;
    sand_err err;
    sand_lbus_reader_opts o = {.endpoint = g_redis.endpoint,
                               .password = g_redis.pass,
                               .block_ms = 100,
                               .entry_cb = on_entry,
                               .ud = c};
    assert_int_equal(sand_lbus_reader_open(loop, &o, &r, &err), 0);
    assert_int_equal(sand_lbus_reader_add(r, "sand:r:a", &err), 0);
    assert_int_equal(sand_lbus_reader_add(r, "sand:r:b", &err), 0);
    assert_int_equal(sand_lbus_reader_add(r, "sand:r:a", &err), 0);
    assert_int_equal(sand_lbus_reader_nkeys(r), 2);
    return r;
}

static int count_key(const struct rctx *c, const char *key)
{
    int n = 0;
    for (int i = 0; i < c->n; i++)
        n += strcmp(c->keys[i], key) == 0;
    return n;
}

static void test_reader_streams_and_pending(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    redisContext *raw = raw_connect();
    redisReply *rr = redisCommand(raw, "AUTH %s", g_redis.pass);
    freeReplyObject(rr);

    struct lctx lc = {0};
    sand_lbus_t *lb = open_lbus(&loop, &lc, 0);
    lc.target = 2;
    assert_int_equal(sand_lbus_ensure_group(lb, "sand:r:a", "agent", on_count, &lc), 0);
    assert_int_equal(sand_lbus_ensure_group(lb, "sand:r:b", "agent", on_count, &lc), 0);
    assert_true(run_until(&loop, &lc.done, 2000));
    assert_int_equal(lc.answered, 2);
    /* Again: BUSYGROUP counts as success. */
    lc.done = false;
    lc.answered = 0;
    lc.target = 1;
    assert_int_equal(sand_lbus_ensure_group(lb, "sand:r:a", "agent", on_count, &lc), 0);
    assert_true(run_until(&loop, &lc.done, 2000));
    assert_int_equal(lc.answered, 1);

    raw_cmd_ok(raw, "XADD sand:r:a * v a1");
    raw_cmd_ok(raw, "XADD sand:r:a * v a2");
    raw_cmd_ok(raw, "XADD sand:r:b * v b1");

    struct rctx c1 = {.target = 3};
    sand_lbus_reader_t *r = open_reader(&loop, &c1);
    assert_true(run_until(&loop, &c1.done, 3000));
    assert_int_equal(count_key(&c1, "sand:r:a"), 2);
    assert_int_equal(count_key(&c1, "sand:r:b"), 1);
    assert_int_equal(c1.pending, 0);
    /* Entries written while the reader blocks arrive too. */
    c1.done = false;
    c1.target = 4;
    raw_cmd_ok(raw, "XADD sand:r:b * v b2");
    assert_true(run_until(&loop, &c1.done, 3000));
    assert_string_equal(c1.vals[3], "b2");
    bool closed = false;
    sand_lbus_reader_close(r, on_closed_flag, &closed);
    assert_true(run_until(&loop, &closed, 2000));

    /* Restart without XACK: the four entries come back as pending, then new ones follow. */
    struct rctx c2 = {.target = 4};
    r = open_reader(&loop, &c2);
    assert_true(run_until(&loop, &c2.done, 3000));
    assert_int_equal(c2.pending, 4);
    for (int i = 0; i < 4; i++) {
        bool seen = false;
        for (int j = 0; j < 4; j++)
            seen |= strcmp(c1.ids[i], c2.ids[j]) == 0;
        assert_true(seen);
    }
    for (int i = 0; i < 4; i++) {
        rr = redisCommand(raw, "XACK %s agent %s", c2.keys[i], c2.ids[i]);
        assert_int_equal(rr->integer, 1);
        freeReplyObject(rr);
    }
    c2.done = false;
    c2.target = 5;
    raw_cmd_ok(raw, "XADD sand:r:a * v a3");
    assert_true(run_until(&loop, &c2.done, 3000));
    assert_string_equal(c2.vals[4], "a3");
    assert_int_equal(c2.pending, 4);

    /* A key removed stops being read; a key added is read from the next round. */
    assert_int_equal(sand_lbus_reader_remove(r, "sand:r:a"), 0);
    assert_int_equal(sand_lbus_reader_remove(r, "sand:r:a"), SAND_ENOTFOUND);
    sand_err err;
    assert_int_equal(sand_lbus_reader_add(r, "sand:r:c", &err), 0);
    run_for(&loop, 300);
    raw_cmd_ok(raw, "XADD sand:r:a * v a4");
    raw_cmd_ok(raw, "XADD sand:r:c * v c1");
    c2.done = false;
    c2.target = 6;
    assert_true(run_until(&loop, &c2.done, 3000));
    assert_string_equal(c2.vals[5], "c1");
    run_for(&loop, 300);
    assert_int_equal(c2.n, 6);

    sand_lbus_reader_close(r, NULL, NULL);
    sand_lbus_close(lb, NULL, NULL);
    redisFree(raw);
    close_loop(&loop);
}

/* ---- global bus --------------------------------------------------------------------------- */

#define NREC 100

struct gctx {
    int n;
    bool done;
    int target;
    bool topic_done;
    int topic_status;
    int32_t part_of_key[10];
    int last_seq[10];
    bool ordered;
    int64_t min_offset[16];
    int64_t lat[NREC];
    int nlat;
    char topic[64];
};

static void on_topic(sand_gbus_t *g, int status, const char *errstr, void *ud)
{
    struct gctx *c = ud;
    c->topic_status = status;
    c->topic_done = true;
    if (status)
        printf("# ensure_topic: %s\n", errstr);
}

static void on_record(sand_gbus_t *g, const sand_gbus_record_t *rec, void *ud)
{
    struct gctx *c = ud;
    if (strcmp(rec->topic, c->topic) != 0)
        return;
    int key, seq;
    long long sent;
    char v[64];
    snprintf(v, sizeof(v), "%.*s", (int)rec->vallen, (const char *)rec->value);
    assert_int_equal(sscanf(v, "%d:%d:%lld", &key, &seq, &sent), 3);
    assert_int_equal(rec->keylen, 2);
    assert_true(key >= 0 && key < 10);
    if (seq >= 0 && c->nlat < NREC)
        c->lat[c->nlat++] = sand_mono_us() - sent;
    if (c->part_of_key[key] < 0)
        c->part_of_key[key] = rec->partition;
    if (c->part_of_key[key] != rec->partition || seq <= c->last_seq[key])
        c->ordered = false;
    c->last_seq[key] = seq;
    assert_true(rec->partition >= 0 && rec->partition < 16);
    if (c->min_offset[rec->partition] < 0 || rec->offset < c->min_offset[rec->partition])
        c->min_offset[rec->partition] = rec->offset;
    if (++c->n >= c->target)
        c->done = true;
}

static void gctx_init(struct gctx *c, const char *topic, int target)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->topic, sizeof(c->topic), "%s", topic);
    c->target = target;
    c->ordered = true;
    for (int i = 0; i < 10; i++) {
        c->part_of_key[i] = -1;
        c->last_seq[i] = -2;
    }
    for (int i = 0; i < 16; i++)
        c->min_offset[i] = -1;
}

static int topic_partitions(const char *bootstrap, const char *topic)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    assert_non_null(rk);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md;
    assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 5000), 0);
    int n = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : -1;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return n;
}

/* A consumer in assignment mode, as sandd runs it: the topic's 4 partitions are assigned
 * directly, starting at the group's committed offsets. */
static sand_gbus_t *open_gbus(uv_loop_t *loop, const char *bs, struct gctx *c)
{
    sand_gbus_t *g;
    sand_err err;
    sand_gbus_opts o = {.brokers = bs,
                        .group_id = "sand-test",
                        .metadata_refresh_ms = 200,
                        .session_timeout_ms = 6000,
                        .assign = true,
                        .debug = getenv("SAND_TEST_KAFKA_DEBUG"),
                        .record_cb = on_record,
                        .ud = c};
    int rc = sand_gbus_open(loop, &o, &g, &err);
    if (rc)
        printf("# %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(sand_gbus_assign(g, c->topic, 4, &err), 0);
    return g;
}

static void test_gbus(void **state)
{
    char dir[64] = "/tmp/sand-bus-k-XXXXXX";
    char bs[256], bs2[256];
    sand_err err;
    assert_non_null(mkdtemp(dir));
    snprintf(g_kdir, sizeof(g_kdir), "%s", dir);
    int rc = sand_kafkad_ensure(dir, SAND_BINARY_DIR "/bin", bs, sizeof(bs), &err);
    if (rc)
        printf("# %s\n", err.msg);
    assert_int_equal(rc, 0);
    char pidfile[128];
    snprintf(pidfile, sizeof(pidfile), "%s/kafka.pid", dir);
    FILE *f = fopen(pidfile, "r");
    assert_non_null(f);
    int kpid = 0;
    assert_int_equal(fscanf(f, "%d", &kpid), 1);
    fclose(f);
    /* Reattach to the running one. */
    assert_int_equal(sand_kafkad_ensure(dir, SAND_BINARY_DIR "/bin", bs2, sizeof(bs2), &err), 0);
    assert_string_equal(bs, bs2);

    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *topic = "sand.test.g1";
    struct gctx c;
    gctx_init(&c, topic, NREC);
    /* A producer-only client creates the topic first: librdkafka's mock cluster is slow to
     * settle a group whose first join races with the creation of its first topic. */
    sand_gbus_t *admin;
    sand_gbus_opts ao = {.brokers = bs, .subscribe = ""};
    assert_int_equal(sand_gbus_open(&loop, &ao, &admin, &err), 0);
    assert_int_equal(sand_gbus_ensure_topic(admin, topic, 4, on_topic, &c, &err), 0);
    assert_true(run_until(&loop, &c.topic_done, 10000));
    assert_int_equal(c.topic_status, 0);
    assert_int_equal(topic_partitions(bs, topic), 4);
    /* Already there: still success. */
    c.topic_done = false;
    assert_int_equal(sand_gbus_ensure_topic(admin, topic, 4, on_topic, &c, &err), 0);
    assert_true(run_until(&loop, &c.topic_done, 10000));
    assert_int_equal(c.topic_status, 0);
    sand_gbus_close(admin, 0, NULL, NULL);

    sand_gbus_t *g = open_gbus(&loop, bs, &c);
    /* One record first, so the latencies below do not include the group join. */
    c.target = 1;
    assert_int_equal(sand_gbus_produce(g, topic, "k0", 2, "0:-1:0", 6, &err), 0);
    assert_true(run_until(&loop, &c.done, 30000));
    c.done = false;
    c.target = NREC + 1;
    for (int i = 0; i < NREC; i++) {
        char key[8], val[64];
        snprintf(key, sizeof(key), "k%d", i % 10);
        int n = snprintf(val, sizeof(val), "%d:%d:%lld", i % 10, i, (long long)sand_mono_us());
        assert_int_equal(sand_gbus_produce(g, topic, key, 2, val, (size_t)n, &err), 0);
        if (i % 10 == 9)
            run_for(&loop, 20); /* spread the sends so latency is per record, not per burst */
    }
    bool got_all = run_until(&loop, &c.done, 30000);
    sand_gbus_stats_t st;
    sand_gbus_stats(g, &st);
    printf("# consumed %d (stats: produced %llu delivered %llu consumed %llu)\n", c.n,
           (unsigned long long)st.produced, (unsigned long long)st.delivered,
           (unsigned long long)st.consumed);
    assert_true(got_all);
    assert_int_equal(c.n, NREC + 1);
    assert_int_equal(c.nlat, NREC);
    assert_true(c.ordered);
    report("kafka produce->consume (mock cluster)", c.lat, (size_t)c.nlat);
    /* Delivery reports may trail the consumed records a little. */
    for (int i = 0; i < 100; i++) {
        sand_gbus_stats(g, &st);
        if (st.delivered + st.delivery_failed >= NREC + 1)
            break;
        run_for(&loop, 50);
    }
    assert_int_equal(st.produced, NREC + 1);
    assert_int_equal(st.delivered, NREC + 1);
    assert_int_equal(st.delivery_failed, 0);

    /* Commit the first record of every partition only; the rest must come again. */
    int32_t parts[10];
    memcpy(parts, c.part_of_key, sizeof(parts));
    int64_t committed[16];
    int expect_again = NREC + 1;
    for (int p = 0; p < 16; p++) {
        committed[p] = c.min_offset[p];
        if (committed[p] >= 0) {
            assert_int_equal(sand_gbus_commit(g, topic, p, committed[p], &err), 0);
            expect_again--;
        }
    }
    run_for(&loop, 500);
    bool closed = false;
    sand_gbus_close(g, 0, on_closed_flag, &closed);
    assert_true(run_until(&loop, &closed, 10000));

    struct gctx c2;
    gctx_init(&c2, topic, expect_again);
    g = open_gbus(&loop, bs, &c2);
    assert_true(run_until(&loop, &c2.done, 30000));
    run_for(&loop, 300);
    assert_int_equal(c2.n, expect_again);
    for (int p = 0; p < 16; p++) {
        if (committed[p] >= 0)
            assert_int_equal(c2.min_offset[p], committed[p] + 1);
    }
    for (int k = 0; k < 10; k++)
        assert_int_equal(c2.part_of_key[k], parts[k]);
    sand_gbus_close(g, 0, NULL, NULL);
    close_loop(&loop);

    assert_int_equal(sand_kafkad_stop(dir, &err), 0);
    assert_int_equal(kill(kpid, 0), -1);
    rm_rf(dir);
    g_kdir[0] = '\0';
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int setup_redis(void **state)
{
    sand_err err;
    snprintf(g_dir, sizeof(g_dir), "/tmp/sand-bus-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    if (sand_redisd_ensure(g_dir, &g_redis, &err) < 0) {
        fprintf(stderr, "redis: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown_redis(void **state)
{
    sand_err err;
    sand_redisd_stop(g_dir, &err);
    rm_rf(g_dir);
    if (g_kdir[0]) {
        /* test_gbus failed half-way: do not leave its sand-kafka behind. */
        sand_kafkad_stop(g_kdir, &err);
        rm_rf(g_kdir);
    }
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    sand_log_set_level(getenv("SAND_TEST_LOG_DEBUG") ? SAND_LOG_DEBUG : SAND_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redisd_lifecycle),
        cmocka_unit_test(test_lbus_roundtrip),
        cmocka_unit_test(test_lbus_pipeline_and_latency),
        cmocka_unit_test(test_lbus_reconnect),
        cmocka_unit_test(test_lbus_close_runs_callbacks),
        cmocka_unit_test(test_reader_streams_and_pending),
        cmocka_unit_test(test_gbus),
    };
    return cmocka_run_group_tests(tests, setup_redis, teardown_redis);
}
