/*
 * The global bus client: one librdkafka producer and one consumer, hooked to sandd's loop
 * without threads of our own. librdkafka writes a byte to a pipe whenever one of our queues goes
 * from empty to non-empty (rd_kafka_queue_io_event_enable on the producer's main queue for
 * delivery reports, on a queue for Admin API results, and on the consumer queue); a uv_poll_t
 * watches the pipe and the callback drains the queues without blocking. Offsets are committed
 * only on request, so sandd commits what it has safely handed over. Topic creation goes through
 * CreateTopics; brokers without it (librdkafka's mock cluster) get the topic auto-created by a
 * metadata request instead (see docs/internals/buses.md).
 */
#define _GNU_SOURCE 1 /* pipe2 */
#include "sand/bus.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "sand/protocol.h"

#define DRAIN_MAX 1024 /* events per wake-up before yielding to the loop */

struct admin_req {
    sand_gbus_t *gbus;
    sand_gbus_done_cb cb;
    void *ud;
    char *topic;
    int partitions;
    sand_list_t link;
};

struct sand_gbus {
    uv_loop_t *loop;
    rd_kafka_t *prod;
    rd_kafka_t *cons; /* NULL when not subscribing */
    rd_kafka_queue_t *prod_q, *admin_q, *cons_q;
    int pipe_r, pipe_w;
    uv_poll_t poll;
    uv_timer_t tick; /* calls the consumer regularly even when no record arrives */
    int open_handles;
    bool closed;
    bool in_poll;       /* inside on_poll: a close requested there finishes when it returns */
    bool close_pending; /* sand_gbus_close was called inside on_poll */
    int close_flush_ms;
    int default_partitions;
    sand_gbus_record_cb record_cb;
    void *ud;
    sand_gbus_stats_t stats;
    sand_list_t admin_pending; /* CreateTopics requests in flight */
    sand_list_t admin_todo;    /* ensure_topic requests for the auto-create path */
    bool no_controller;        /* CreateTopics cannot work here: use auto-creation */
    void (*close_cb)(void *ud);
    void *close_ud;
};

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, sand_err *err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return sand_err_set(err, SAND_EINVAL, "kafka option '%s': %s", k, errstr);
    return 0;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    sand_gbus_t *g = opaque;
    if (m->err) {
        g->stats.delivery_failed++;
        SAND_WARN("bus", "kafka delivery to '%s' failed: %s", rd_kafka_topic_name(m->rkt),
                  rd_kafka_err2str(m->err));
    } else {
        g->stats.delivered++;
    }
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        SAND_WARN("bus", "kafka offset commit failed: %s", rd_kafka_err2str(err));
}

static void on_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: 0..3 errors, 4 warning, 5..6 info, 7 debug */
    sand_log_level l = level <= 3 ? SAND_LOG_ERROR : level == 4 ? SAND_LOG_WARN : SAND_LOG_DEBUG;
    if (l >= sand_log_get_level())
        sand_log(l, "kafka", "%s: %s", fac, buf);
}

/* Finishes an ensure_topic on a broker without CreateTopics: a producer metadata request for the
 * topic makes the broker auto-create it. Bounded and blocking, but only reached on the embedded
 * mock cluster over loopback, where it answers in well under a millisecond. */
static int create_by_metadata(sand_gbus_t *g, const struct admin_req *a, char *why, size_t len)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(g->prod, a->topic, NULL);
    if (!rkt) {
        snprintf(why, len, "%s", rd_kafka_err2str(rd_kafka_last_error()));
        return SAND_EBUS;
    }
    int rc = SAND_ETIMEDOUT;
    snprintf(why, len, "topic '%s' was not created", a->topic);
    for (int attempt = 0; attempt < 20 && rc != 0; attempt++) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t kerr = rd_kafka_metadata(g->prod, 0, rkt, &md, 1000);
        if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && !md->topics[0].err &&
            md->topics[0].partition_cnt > 0) {
            int have = md->topics[0].partition_cnt;
            if (have < a->partitions)
                SAND_WARN("bus",
                          "topic '%s' was auto-created with %d partitions (%d wanted): this broker "
                          "has no CreateTopics",
                          a->topic, have, a->partitions);
            rc = 0;
        } else if (kerr) {
            snprintf(why, len, "metadata for '%s': %s", a->topic, rd_kafka_err2str(kerr));
        } else if (md->topic_cnt == 1) {
            snprintf(why, len, "metadata for '%s': %s", a->topic,
                     rd_kafka_err2str(md->topics[0].err));
        }
        if (md)
            rd_kafka_metadata_destroy(md);
        if (rc != 0)
            usleep(20 * 1000);
    }
    rd_kafka_topic_destroy(rkt);
    return rc;
}

static void admin_finish(struct admin_req *a, int status, const char *why)
{
    sand_list_remove(&a->link);
    a->cb(a->gbus, status, why, a->ud);
    free(a->topic);
    free(a);
}

static void on_admin_event(sand_gbus_t *g, rd_kafka_event_t *ev)
{
    struct admin_req *a = rd_kafka_event_opaque(ev);
    if (!a || rd_kafka_event_type(ev) != RD_KAFKA_EVENT_CREATETOPICS_RESULT)
        return;
    char why[512];
    rd_kafka_resp_err_t kerr = rd_kafka_event_error(ev);
    const char *kstr = rd_kafka_event_error_string(ev);
    /* librdkafka's mock cluster names a controller that does not exist and answers no
     * CreateTopics: the request times out waiting for the controller. Such a cluster (and any
     * broker without the Admin API) gets its topics auto-created from now on. */
    if (kerr == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ||
        (kerr == RD_KAFKA_RESP_ERR__TIMED_OUT && kstr && strstr(kstr, "controller"))) {
        if (!g->no_controller)
            SAND_INFO("bus", "kafka: no usable CreateTopics (%s): topics are auto-created", kstr);
        g->no_controller = true;
        int rc = create_by_metadata(g, a, why, sizeof(why));
        admin_finish(a, rc, rc == 0 ? NULL : why);
        return;
    }
    if (kerr) {
        snprintf(why, sizeof(why), "create topic '%s': %s", a->topic, kstr);
        admin_finish(a, SAND_EBUS, why);
        return;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t te = rd_kafka_topic_result_error(tr[i]);
        if (te && te != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            const char *s = rd_kafka_topic_result_error_string(tr[i]);
            snprintf(why, sizeof(why), "create topic '%s': %s", a->topic,
                     s ? s : rd_kafka_err2str(te));
            admin_finish(a, SAND_EBUS, why);
            return;
        }
    }
    admin_finish(a, 0, NULL);
}

static void deliver_message(sand_gbus_t *g, rd_kafka_message_t *m)
{
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            SAND_WARN("bus", "kafka consumer: %s", rd_kafka_message_errstr(m));
        return;
    }
    sand_gbus_record_t rec = {
        .topic = rd_kafka_topic_name(m->rkt),
        .partition = m->partition,
        .offset = m->offset,
        .key = m->key,
        .keylen = m->key_len,
        .value = m->payload,
        .vallen = m->len,
        .timestamp_ms = rd_kafka_message_timestamp(m, NULL),
    };
    g->stats.consumed++;
    g->record_cb(g, &rec, g->ud);
}

static void finish_close(sand_gbus_t *g);

static void drain(sand_gbus_t *g);

static void on_poll(uv_poll_t *h, int status, int events)
{
    sand_gbus_t *g = h->data;
    char buf[256];
    while (read(g->pipe_r, buf, sizeof(buf)) > 0)
        ;
    drain(g);
}

/* librdkafka drops a consumer from its group when the application has not called
 * rd_kafka_consumer_poll for max.poll.interval.ms, even when there was nothing to return; with
 * wake-ups only on new events, a quiet bus would look like a hung application. */
static void on_tick(uv_timer_t *t)
{
    drain(t->data);
}

static void drain(sand_gbus_t *g)
{
    g->in_poll = true;
    int budget = DRAIN_MAX;
    /* Delivery reports and producer errors. */
    while (budget > 0 && !g->closed && rd_kafka_poll(g->prod, 0) > 0)
        budget--;
    while (!g->closed && !sand_list_empty(&g->admin_todo)) {
        struct admin_req *a = SAND_CONTAINER_OF(g->admin_todo.next, struct admin_req, link);
        char why[512];
        int rc = create_by_metadata(g, a, why, sizeof(why));
        admin_finish(a, rc, rc == 0 ? NULL : why);
    }
    rd_kafka_event_t *ev;
    while (budget > 0 && !g->closed && (ev = rd_kafka_queue_poll(g->admin_q, 0))) {
        on_admin_event(g, ev);
        rd_kafka_event_destroy(ev);
        budget--;
    }
    rd_kafka_message_t *m;
    while (budget > 0 && !g->closed && g->cons && (m = rd_kafka_consumer_poll(g->cons, 0))) {
        deliver_message(g, m);
        rd_kafka_message_destroy(m);
        budget--;
    }
    /* librdkafka only signals a queue's empty -> non-empty edge: when the budget ran out,
     * wake ourselves up again so what is left is not stranded. */
    if (budget == 0 && !g->closed && write(g->pipe_w, "1", 1) < 0 && errno != EAGAIN)
        SAND_WARN("bus", "kafka wake-up pipe: %s", strerror(errno));
    g->in_poll = false;
    if (g->close_pending)
        finish_close(g);
}

static int make_producer(sand_gbus_t *g, const sand_gbus_opts *o, sand_err *err)
{
    char v[32], errstr[512];
    int rc;
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    snprintf(v, sizeof(v), "%d", o->linger_ms > 0 ? o->linger_ms : 5);
    if ((rc = conf_set(c, "bootstrap.servers", o->brokers, err)) < 0 ||
        (rc = conf_set(c, "client.id", o->client_id ? o->client_id : "sandd", err)) < 0 ||
        (rc = conf_set(c, "linger.ms", v, err)) < 0 ||
        (rc = conf_set(c, "message.timeout.ms", "30000", err)) < 0) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    if (o->debug && (rc = conf_set(c, "debug", o->debug, err)) < 0) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    rd_kafka_conf_set_log_cb(c, on_kafka_log);
    rd_kafka_conf_set_opaque(c, g);
    g->prod = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    if (!g->prod) {
        rd_kafka_conf_destroy(c);
        return sand_err_set(err, SAND_EBUS, "kafka producer: %s", errstr);
    }
    return 0;
}

static int make_consumer(sand_gbus_t *g, const sand_gbus_opts *o, sand_err *err)
{
    char v[32], errstr[512];
    int rc;
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    snprintf(v, sizeof(v), "%d", o->metadata_refresh_ms > 0 ? o->metadata_refresh_ms : 1000);
    /* A short session also bounds how long librdkafka's mock cluster makes a member that joins
     * after another left wait (its rebalance delay is the session timeout minus one second). */
    int session = o->session_timeout_ms > 0 ? o->session_timeout_ms : 10000;
    char sess[16], hb[16];
    snprintf(sess, sizeof(sess), "%d", session);
    snprintf(hb, sizeof(hb), "%d", session / 4 > 0 ? session / 4 : 1);
    if ((rc = conf_set(c, "bootstrap.servers", o->brokers, err)) < 0 ||
        (rc = conf_set(c, "client.id", o->client_id ? o->client_id : "sandd", err)) < 0 ||
        (rc = conf_set(c, "group.id", o->group_id ? o->group_id : SAND_KAFKA_GROUP, err)) < 0 ||
        (rc = conf_set(c, "enable.auto.commit", "false", err)) < 0 ||
        (rc = conf_set(c, "auto.offset.reset", o->from_latest ? "latest" : "earliest", err)) < 0 ||
        (rc = conf_set(c, "topic.metadata.refresh.interval.ms", v, err)) < 0 ||
        (rc = conf_set(c, "fetch.wait.max.ms", "10", err)) < 0 ||
        (rc = conf_set(c, "session.timeout.ms", sess, err)) < 0 ||
        (rc = conf_set(c, "heartbeat.interval.ms", hb, err)) < 0 ||
        (rc = conf_set(c, "enable.partition.eof", "false", err)) < 0) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    if (o->debug && (rc = conf_set(c, "debug", o->debug, err)) < 0) {
        rd_kafka_conf_destroy(c);
        return rc;
    }
    rd_kafka_conf_set_offset_commit_cb(c, on_commit);
    rd_kafka_conf_set_log_cb(c, on_kafka_log);
    rd_kafka_conf_set_opaque(c, g);
    g->cons = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof(errstr));
    if (!g->cons) {
        rd_kafka_conf_destroy(c);
        return sand_err_set(err, SAND_EBUS, "kafka consumer: %s", errstr);
    }
    /* Rebalances, commit results and errors come through the consumer queue too. */
    rd_kafka_poll_set_consumer(g->cons);
    if (o->assign)
        return 0; /* partitions come from sand_gbus_assign(): no group membership to wait for */
    const char *re = o->subscribe ? o->subscribe : "^sand\\..*";
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, re, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(g->cons, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (kerr)
        return sand_err_set(err, SAND_EBUS, "kafka subscribe '%s': %s", re, rd_kafka_err2str(kerr));
    return 0;
}

static void destroy_kafka(sand_gbus_t *g)
{
    if (g->prod_q) {
        rd_kafka_queue_io_event_enable(g->prod_q, -1, NULL, 0);
        rd_kafka_queue_destroy(g->prod_q);
    }
    if (g->admin_q) {
        rd_kafka_queue_io_event_enable(g->admin_q, -1, NULL, 0);
        rd_kafka_queue_destroy(g->admin_q);
    }
    if (g->cons_q) {
        rd_kafka_queue_io_event_enable(g->cons_q, -1, NULL, 0);
        rd_kafka_queue_destroy(g->cons_q);
    }
    g->prod_q = g->admin_q = g->cons_q = NULL;
    if (g->cons)
        rd_kafka_destroy_flags(g->cons, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (g->prod)
        rd_kafka_destroy(g->prod);
    g->cons = g->prod = NULL;
}

int sand_gbus_open(uv_loop_t *loop, const sand_gbus_opts *opts, sand_gbus_t **out, sand_err *err)
{
    int rc;
    if (!opts || !opts->brokers || !*opts->brokers)
        return sand_err_set(err, SAND_EINVAL, "global bus broker list missing");
    bool consume = !opts->subscribe || *opts->subscribe;
    if (consume && !opts->record_cb)
        return sand_err_set(err, SAND_EINVAL, "global bus consumer needs a record callback");
    sand_gbus_t *g = calloc(1, sizeof(*g));
    if (!g)
        return sand_err_set(err, SAND_ENOMEM, "global bus");
    g->loop = loop;
    g->pipe_r = g->pipe_w = -1;
    g->record_cb = opts->record_cb;
    g->ud = opts->ud;
    g->default_partitions = opts->default_partitions > 0 ? opts->default_partitions : 8;
    sand_list_init(&g->admin_pending);
    sand_list_init(&g->admin_todo);

    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        rc = sand_err_errno(err, SAND_EIO, "global bus wake-up pipe");
        goto error;
    }
    g->pipe_r = fds[0];
    g->pipe_w = fds[1];
    if ((rc = make_producer(g, opts, err)) < 0)
        goto error;
    if (consume && (rc = make_consumer(g, opts, err)) < 0)
        goto error;
    g->prod_q = rd_kafka_queue_get_main(g->prod);
    g->admin_q = rd_kafka_queue_new(g->prod);
    rd_kafka_queue_io_event_enable(g->prod_q, g->pipe_w, "1", 1);
    rd_kafka_queue_io_event_enable(g->admin_q, g->pipe_w, "1", 1);
    if (g->cons) {
        g->cons_q = rd_kafka_queue_get_consumer(g->cons);
        rd_kafka_queue_io_event_enable(g->cons_q, g->pipe_w, "1", 1);
    }
    if (uv_poll_init(loop, &g->poll, g->pipe_r) < 0) {
        rc = sand_err_set(err, SAND_EIO, "global bus: cannot watch the wake-up pipe");
        goto error;
    }
    g->poll.data = g;
    uv_poll_start(&g->poll, UV_READABLE, on_poll);
    uv_timer_init(loop, &g->tick);
    g->tick.data = g;
    g->open_handles = 2;
    if (g->cons) {
        uv_timer_start(&g->tick, on_tick, 1000, 1000);
        /* The tick alone must not keep the loop alive. */
        uv_unref((uv_handle_t *)&g->tick);
    }
    /* Anything queued before the fd was attached would never signal the edge. */
    if (write(g->pipe_w, "1", 1) < 0 && errno != EAGAIN)
        SAND_WARN("bus", "kafka wake-up pipe: %s", strerror(errno));
    *out = g;
    return 0;
error:
    destroy_kafka(g);
    if (g->pipe_r >= 0)
        close(g->pipe_r);
    if (g->pipe_w >= 0)
        close(g->pipe_w);
    free(g);
    return rc;
}

int sand_gbus_produce(sand_gbus_t *gbus, const char *topic, const void *key, size_t keylen,
                      const void *value, size_t vallen, sand_err *err)
{
    if (gbus->closed)
        return sand_err_set(err, SAND_ECANCELED, "global bus closed");
    rd_kafka_resp_err_t kerr =
        rd_kafka_producev(gbus->prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
                          RD_KAFKA_V_VALUE((void *)value, vallen),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return sand_err_set(err, SAND_EBUSY, "produce to '%s': local queue full", topic);
    if (kerr)
        return sand_err_set(err, SAND_EBUS, "produce to '%s': %s", topic, rd_kafka_err2str(kerr));
    gbus->stats.produced++;
    return 0;
}

int sand_gbus_ensure_topic(sand_gbus_t *gbus, const char *topic, int partitions,
                           sand_gbus_done_cb cb, void *ud, sand_err *err)
{
    char errstr[512];
    if (gbus->closed)
        return sand_err_set(err, SAND_ECANCELED, "global bus closed");
    if (!cb || !topic || !*topic)
        return sand_err_set(err, SAND_EINVAL, "ensure topic needs a topic and a callback");
    struct admin_req *a = calloc(1, sizeof(*a));
    if (!a || !(a->topic = sand_strdup(topic))) {
        free(a);
        return sand_err_set(err, SAND_ENOMEM, "ensure topic '%s'", topic);
    }
    a->gbus = gbus;
    a->cb = cb;
    a->ud = ud;
    a->partitions = partitions > 0 ? partitions : gbus->default_partitions;
    if (gbus->no_controller) {
        /* Run on the loop, not inside this call: the callback must not run before we return. */
        sand_list_insert_tail(&gbus->admin_todo, &a->link);
        if (write(gbus->pipe_w, "1", 1) < 0 && errno != EAGAIN)
            SAND_WARN("bus", "kafka wake-up pipe: %s", strerror(errno));
        return 0;
    }
    rd_kafka_NewTopic_t *nt =
        rd_kafka_NewTopic_new(topic, a->partitions, -1, errstr, sizeof(errstr));
    if (!nt) {
        free(a->topic);
        free(a);
        return sand_err_set(err, SAND_EINVAL, "ensure topic '%s': %s", topic, errstr);
    }
    rd_kafka_AdminOptions_t *ao =
        rd_kafka_AdminOptions_new(gbus->prod, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_opaque(ao, a);
    /* Bounds the wait for a controller too, which decides how soon a cluster without one (the
     * mock) falls back to auto-creation. */
    rd_kafka_AdminOptions_set_request_timeout(ao, 3000, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_operation_timeout(ao, 2500, errstr, sizeof(errstr));
    sand_list_insert_tail(&gbus->admin_pending, &a->link);
    rd_kafka_CreateTopics(gbus->prod, &nt, 1, ao, gbus->admin_q);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_NewTopic_destroy(nt);
    return 0;
}

int sand_gbus_commit(sand_gbus_t *gbus, const char *topic, int32_t partition, int64_t offset,
                     sand_err *err)
{
    if (gbus->closed)
        return sand_err_set(err, SAND_ECANCELED, "global bus closed");
    if (!gbus->cons)
        return sand_err_set(err, SAND_EINVAL, "global bus has no consumer");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset + 1;
    rd_kafka_resp_err_t kerr = rd_kafka_commit(gbus->cons, l, 1);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr)
        return sand_err_set(err, SAND_EBUS, "commit '%s' [%d] at %lld: %s", topic, (int)partition,
                            (long long)offset, rd_kafka_err2str(kerr));
    return 0;
}

int sand_gbus_assign(sand_gbus_t *gbus, const char *topic, int partitions, sand_err *err)
{
    if (!gbus->cons)
        return sand_err_set(err, SAND_EINVAL, "global bus has no consumer");
    if (partitions <= 0 || partitions > 100000)
        return sand_err_set(err, SAND_EINVAL, "bad partition count %d", partitions);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_STORED;
    rd_kafka_error_t *e = rd_kafka_incremental_assign(gbus->cons, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        int rc =
            sand_err_set(err, SAND_EBUS, "kafka assign '%s': %s", topic, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return rc;
    }
    return 0;
}

int sand_gbus_flush(sand_gbus_t *gbus, int timeout_ms, sand_err *err)
{
    if (!gbus->prod)
        return 0;
    rd_kafka_resp_err_t kerr = rd_kafka_flush(gbus->prod, timeout_ms);
    if (kerr)
        return sand_err_set(err, SAND_ETIMEDOUT, "kafka flush: %d records still queued",
                            rd_kafka_outq_len(gbus->prod));
    return 0;
}

void sand_gbus_stats(const sand_gbus_t *gbus, sand_gbus_stats_t *out)
{
    *out = gbus->stats;
}

static void on_poll_closed(uv_handle_t *h)
{
    sand_gbus_t *g = h->data;
    if (--g->open_handles > 0)
        return;
    close(g->pipe_r);
    close(g->pipe_w);
    if (g->close_cb)
        g->close_cb(g->close_ud);
    free(g);
}

/* The blocking part of close; never runs while on_poll still holds librdkafka objects. */
static void finish_close(sand_gbus_t *g)
{
    g->close_pending = false;
    if (rd_kafka_flush(g->prod, g->close_flush_ms))
        SAND_WARN("bus", "kafka close: %d records not delivered", rd_kafka_outq_len(g->prod));
    if (g->cons) {
        rd_kafka_resp_err_t kerr = rd_kafka_consumer_close(g->cons);
        if (kerr)
            SAND_WARN("bus", "kafka consumer close: %s", rd_kafka_err2str(kerr));
    }
    while (!sand_list_empty(&g->admin_pending)) {
        struct admin_req *a = SAND_CONTAINER_OF(g->admin_pending.next, struct admin_req, link);
        admin_finish(a, SAND_ECANCELED, "global bus closed");
    }
    while (!sand_list_empty(&g->admin_todo)) {
        struct admin_req *a = SAND_CONTAINER_OF(g->admin_todo.next, struct admin_req, link);
        admin_finish(a, SAND_ECANCELED, "global bus closed");
    }
    destroy_kafka(g);
    uv_close((uv_handle_t *)&g->poll, on_poll_closed);
    uv_close((uv_handle_t *)&g->tick, on_poll_closed);
}

void sand_gbus_close(sand_gbus_t *gbus, int flush_ms, void (*close_cb)(void *ud), void *ud)
{
    if (gbus->closed)
        return;
    gbus->closed = true;
    gbus->close_cb = close_cb;
    gbus->close_ud = ud;
    gbus->close_flush_ms = flush_ms > 0 ? flush_ms : 2000;
    if (gbus->in_poll)
        gbus->close_pending = true;
    else
        finish_close(gbus);
}
