/*
 * One-way message latency of the two buses, for bench/bus:
 *   sand-bench-bus redis SOCKET N [SIZE]     XADD -> XREADGROUP BLOCK on a Redis stream
 *   sand-bench-bus kafka BOOTSTRAP N [SIZE]  produce -> consume on one Kafka partition
 * A producer thread sends N messages (after 20 unrecorded warm-up messages), one at a time:
 * it stamps CLOCK_MONOTONIC into the message, and waits until the consumer thread (its own
 * connection, blocked in its read) has received it before sending the next one, so every
 * message finds the consumer waiting, as a grain worker waits on its queue. The consumer
 * prints one sample per line: microseconds from just before the send to the receipt.
 */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 20

static long n_msgs;
static size_t msg_size = 100;
static int ack_pipe[2];
static const char *target;
static char topic[64];
static volatile int consumer_failed;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Records one received message stamped t_ns and lets the producer send the next one. */
static void received(long i, int64_t t_ns)
{
    int64_t lat = now_ns() - t_ns;
    if (i >= WARMUP)
        printf("%.1f\n", (double)lat / 1000.0);
    char b = 1;
    if (write(ack_pipe[1], &b, 1) != 1)
        exit(1);
}

static void wait_ack(void)
{
    char b;
    if (read(ack_pipe[0], &b, 1) != 1)
        exit(1);
}

static void fill_payload(char *buf, int64_t t)
{
    int len = snprintf(buf, msg_size + 1, "%lld ", (long long)t);
    memset(buf + len, 'x', msg_size > (size_t)len ? msg_size - (size_t)len : 0);
    buf[msg_size > (size_t)len ? msg_size : (size_t)len] = 0;
}

/* ---- Redis ---------------------------------------------------------------------------- */

static redisContext *redis_open(void)
{
    redisContext *c = redisConnectUnix(target);
    if (!c || c->err) {
        fprintf(stderr, "sand-bench-bus: redis %s: %s\n", target, c ? c->errstr : "oom");
        exit(1);
    }
    return c;
}

static void *redis_consumer(void *arg)
{
    redisContext *c = redis_open();
    for (long i = 0; i < n_msgs + WARMUP; i++) {
        redisReply *r = redisCommand(c, "XREADGROUP GROUP g c COUNT 1 BLOCK 0 STREAMS bench >");
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
            fprintf(stderr, "sand-bench-bus: XREADGROUP failed\n");
            consumer_failed = 1;
            exit(1);
        }
        redisReply *entry = r->element[0]->element[1]->element[0];
        redisReply *kv = entry->element[1];
        int64_t t = strtoll(kv->element[1]->str, NULL, 10);
        received(i, t);
        freeReplyObject(redisCommand(c, "XACK bench g %s", entry->element[0]->str));
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

static int run_redis(void)
{
    redisContext *c = redis_open();
    freeReplyObject(redisCommand(c, "DEL bench"));
    freeReplyObject(redisCommand(c, "XGROUP CREATE bench g $ MKSTREAM"));
    pthread_t th;
    pthread_create(&th, NULL, redis_consumer, NULL);
    char *payload = malloc(msg_size + 32);
    for (long i = 0; i < n_msgs + WARMUP; i++) {
        usleep(200);
        int64_t t = now_ns();
        fill_payload(payload, t);
        redisReply *r = redisCommand(c, "XADD bench MAXLEN ~ 1000 * d %s", payload);
        if (!r || r->type != REDIS_REPLY_STRING) {
            fprintf(stderr, "sand-bench-bus: XADD failed\n");
            return 1;
        }
        freeReplyObject(r);
        wait_ack();
    }
    pthread_join(th, NULL);
    freeReplyObject(redisCommand(c, "DEL bench"));
    redisFree(c);
    free(payload);
    return 0;
}

/* ---- Kafka ---------------------------------------------------------------------------- */

static rd_kafka_t *kafka_open(rd_kafka_type_t type)
{
    char errstr[256];
    /* sandd's consumer uses 10 ms; SAND_BENCH_FETCH_WAIT_MS shows what a shorter wait gives */
    const char *fetch_wait =
        getenv("SAND_BENCH_FETCH_WAIT_MS") ? getenv("SAND_BENCH_FETCH_WAIT_MS") : "10";
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[][2] = {
        {"bootstrap.servers", target},     {"linger.ms", "0"},
        {"fetch.wait.max.ms", fetch_wait}, {"group.id", "sand-bench"},
        {"enable.auto.commit", "false"},   {"log_level", "3"},
    };
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        if (type == RD_KAFKA_PRODUCER && i >= 2)
            break;
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, "sand-bench-bus: %s\n", errstr);
            exit(1);
        }
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "sand-bench-bus: kafka: %s\n", errstr);
        exit(1);
    }
    return rk;
}

static void *kafka_consumer(void *arg)
{
    rd_kafka_t *rk = kafka_open(RD_KAFKA_CONSUMER);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tp, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, tp);
    rd_kafka_topic_partition_list_destroy(tp);
    long i = 0;
    while (i < n_msgs + WARMUP) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m)
            continue;
        if (!m->err) {
            int64_t t = strtoll((const char *)m->payload, NULL, 10);
            if (t > 0)
                received(i++, t);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return NULL;
}

static int run_kafka(void)
{
    snprintf(topic, sizeof(topic), "sand-bench-%d-%lld", (int)getpid(), (long long)now_ns());
    rd_kafka_t *rk = kafka_open(RD_KAFKA_PRODUCER);
    /* the topic exists before the consumer starts: a first marker message (stamp 0) */
    rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                      RD_KAFKA_V_VALUE("0", 1), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                      RD_KAFKA_V_END);
    rd_kafka_flush(rk, 10000);
    pthread_t th;
    pthread_create(&th, NULL, kafka_consumer, NULL);
    char *payload = malloc(msg_size + 32);
    for (long i = 0; i < n_msgs + WARMUP; i++) {
        usleep(200);
        int64_t t = now_ns();
        fill_payload(payload, t);
        rd_kafka_resp_err_t e =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                              RD_KAFKA_V_VALUE(payload, strlen(payload)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e) {
            fprintf(stderr, "sand-bench-bus: produce: %s\n", rd_kafka_err2str(e));
            return 1;
        }
        rd_kafka_poll(rk, 0);
        wait_ack();
    }
    pthread_join(th, NULL);
    rd_kafka_flush(rk, 5000);
    rd_kafka_destroy(rk);
    free(payload);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || (strcmp(argv[1], "redis") && strcmp(argv[1], "kafka"))) {
        fprintf(stderr, "usage: sand-bench-bus redis SOCKET N [SIZE] | kafka BOOTSTRAP N [SIZE]\n");
        return 2;
    }
    target = argv[2];
    n_msgs = strtol(argv[3], NULL, 10);
    if (argc > 4)
        msg_size = (size_t)strtoul(argv[4], NULL, 10);
    if (msg_size < 24)
        msg_size = 24;
    if (pipe(ack_pipe) < 0)
        return 1;
    return !strcmp(argv[1], "redis") ? run_redis() : run_kafka();
}
