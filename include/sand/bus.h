/*
 * The host agent's buses. Three parts, all used from sandd's single libuv loop thread:
 *  - embedded services: sand_redisd_ensure starts (or reattaches to) a private redis-server on a
 *    unix socket, sand_kafkad_ensure starts (or reattaches to) the sand-kafka program that hosts
 *    librdkafka's mock cluster. Both are detached so they outlive a sandd crash; a restarted sandd
 *    finds them again through pid files in its run directory.
 *  - the local bus client (Redis, hiredis async on the loop): sand_lbus_t for commands, with AUTH,
 *    automatic reconnect and fail-fast while disconnected; sand_lbus_reader_t, a consumer-group
 *    reader over a changing set of stream keys (the per-app LQHA streams) on its own connection.
 *  - the global bus client (Kafka, librdkafka): sand_gbus_t with one producer and one consumer,
 *    driven by librdkafka's queue wake-up fd on a uv_poll_t, so no thread of ours polls.
 * docs/internals/buses.md explains the design and the reattach rules.
 *
 * Async contract (libuv's): a function that takes a callback and returns an error never calls
 * it; if it returns 0 the callback runs exactly once, on the loop thread, also at shutdown (then
 * with status SAND_ECANCELED). Parameters are borrowed unless a comment says otherwise.
 */
#ifndef SAND_BUS_H
#define SAND_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "sand/common.h"

/* ==== embedded services ===================================================================== */

#define SAND_REDISD_PATH_MAX 108 /* sizeof(sun_path): the socket path must fit a sockaddr_un */

/* What sandd needs to talk to its embedded redis-server. Plain data, caller storage. */
typedef struct sand_redisd {
    char sock[SAND_REDISD_PATH_MAX];         /* run_dir/redis.sock */
    char endpoint[SAND_REDISD_PATH_MAX + 8]; /* "unix:" + sock, ready for sand_lbus_open */
    char pass[65];   /* password of the default (admin) user: 64 hex chars */
    pid_t pid;       /* redis-server process id */
    char run_id[41]; /* INFO server run_id: changes whenever a new server was started */
    bool started;    /* true when this call started the server, false when it reattached */
} sand_redisd_t;

/* Makes sure a private redis-server serves run_dir/redis.sock. Reuses the server named by
 * run_dir/redis.pid when that process is alive and answers AUTH + PING on the socket; otherwise
 * writes run_dir/redis.conf (port 0, unix socket only, no persistence, requirepass) and starts
 * redis-server (PATH, then /usr/bin/redis-server) detached in a new session, then waits up to
 * 5 s for it to answer. The password lives in run_dir/redis.pass (mode 0600, created once).
 * run_dir must exist. Blocking: call once at start-up, before the loop serves requests.
 * Returns 0 and fills *out, or < 0 (SAND_EIO, SAND_ETIMEDOUT, SAND_EBUS) with err set. */
int sand_redisd_ensure(const char *run_dir, sand_redisd_t *out, sand_err *err);

/* Stops the redis-server named by run_dir/redis.pid (SIGTERM, waits up to 5 s, then SIGKILL) and
 * removes the pid file. Returns 0 (also when none was running) or < 0. Blocking; used by
 * `sandctl` style shutdown paths and tests, never by sandd on a crash-restart path. */
int sand_redisd_stop(const char *run_dir, sand_err *err);

/* Makes sure the sand-kafka program (mock Kafka cluster) serves this host. Reuses the process
 * named by run_dir/kafka.pid when it is alive and the bootstrap list in run_dir/kafka.bootstrap
 * answers a metadata request; otherwise starts bin_dir/sand-kafka --run-dir run_dir detached and
 * waits (up to 10 s) for the bootstrap file and a successful metadata request. Copies the
 * bootstrap servers ("127.0.0.1:port,...") into bootstrap (len bytes, NUL-terminated).
 * Blocking, start-up only. Returns 0 or < 0 with err set. */
int sand_kafkad_ensure(const char *run_dir, const char *bin_dir, char *bootstrap, size_t len,
                       sand_err *err);

/* Stops the sand-kafka named by run_dir/kafka.pid like sand_redisd_stop. Returns 0 or < 0. */
int sand_kafkad_stop(const char *run_dir, sand_err *err);

/* ==== local bus: commands ==================================================================== */

typedef struct sand_lbus sand_lbus_t;

/* Reply callback. status is 0 when Redis answered: reply is the answer (borrowed, valid only
 * during the call; a Redis error reply arrives here too, with reply->type == REDIS_REPLY_ERROR).
 * status < 0 when no answer will come: reply is NULL and errstr says why (SAND_EBUS: not
 * connected or the connection dropped; SAND_ECANCELED: the lbus is closing). Runs on the loop. */
typedef void (*sand_lbus_reply_cb)(sand_lbus_t *lbus, int status, const redisReply *reply,
                                   const char *errstr, void *ud);

/* Connection state changes: up is true once a (re)connection authenticated, false when it
 * dropped. Lets the owner redo per-connection set-up or notice a restarted Redis. Loop thread. */
typedef void (*sand_lbus_state_cb)(sand_lbus_t *lbus, bool up, void *ud);

typedef struct sand_lbus_opts {
    const char *endpoint;        /* "unix:/path/redis.sock" or "tcp://host:port" (required) */
    const char *user;            /* ACL user, NULL for the default user */
    const char *password;        /* NULL for none */
    const char *name;            /* CLIENT SETNAME after AUTH, NULL for none */
    int reconnect_min_ms;        /* first reconnect delay, doubled per failure; 0 -> 50 */
    int reconnect_max_ms;        /* cap of the reconnect delay; 0 -> 2000 */
    sand_lbus_state_cb state_cb; /* optional */
    void *state_ud;
} sand_lbus_opts;

/* Opens a connection object on loop and starts connecting (AUTH on every connect). The object
 * exists even while Redis is unreachable: it keeps reconnecting with backoff. The strings in opts
 * are copied. Returns 0 and *out (owned by the caller until sand_lbus_close), or SAND_EINVAL for
 * a malformed endpoint, SAND_ENOMEM. Loop thread only. */
int sand_lbus_open(uv_loop_t *loop, const sand_lbus_opts *opts, sand_lbus_t **out, sand_err *err);

/* True while a connection is established and authenticated. */
bool sand_lbus_connected(const sand_lbus_t *lbus);

/* Sends one command of argc arguments (argv[i] of argvlen[i] bytes; argvlen NULL means every
 * argument is a NUL-terminated string). Arguments are copied before return. Commands are
 * pipelined and their callbacks run in issue order. While disconnected the command is not sent
 * and cb runs on the next loop iteration with SAND_EBUS: it never hangs.
 * Returns 0 (cb will run exactly once) or < 0 (SAND_EINVAL, SAND_ECANCELED after close, cb never
 * runs). cb may be NULL to ignore the answer. Loop thread only. */
int sand_lbus_command_argv(sand_lbus_t *lbus, sand_lbus_reply_cb cb, void *ud, int argc,
                           const char **argv, const size_t *argvlen);

/* printf-style variant with hiredis' format rules (%s, %b for pointer+length, %d, %lld ...).
 * Same return and callback contract as sand_lbus_command_argv. */
int sand_lbus_command(sand_lbus_t *lbus, sand_lbus_reply_cb cb, void *ud, const char *fmt, ...);

/* XGROUP CREATE key group $ MKSTREAM; a BUSYGROUP answer (group exists) counts as success. cb
 * gets status 0 (reply may be the BUSYGROUP error reply, which is success) or < 0; a Redis error
 * other than BUSYGROUP is reported as status SAND_EBUS with errstr = the error text. Same return
 * contract as sand_lbus_command_argv. */
int sand_lbus_ensure_group(sand_lbus_t *lbus, const char *key, const char *group,
                           sand_lbus_reply_cb cb, void *ud);

/* Closes asynchronously: every command still waiting for an answer gets its callback with
 * SAND_ECANCELED (or with the answer if it already arrived), then the connection and all uv
 * handles are closed and close_cb (optional) runs; the memory is freed after close_cb returns.
 * Safe to call from inside a reply or state callback. No call on lbus is allowed afterwards. */
void sand_lbus_close(sand_lbus_t *lbus, void (*close_cb)(void *ud), void *ud);

/* ==== local bus: consumer-group stream reader ================================================ */

typedef struct sand_lbus_reader sand_lbus_reader_t;

/* One stream entry, all pointers borrowed from the reply and valid only during the callback.
 * fields[2*i] is a field name and fields[2*i+1] its value, lens[] their lengths. */
typedef struct sand_lbus_entry {
    const char *key;
    size_t keylen;
    const char *id;
    size_t idlen;
    size_t nfields; /* number of field/value pairs */
    const char **fields;
    const size_t *lens;
    bool pending; /* delivered before (read back from this consumer's pending entries) */
} sand_lbus_entry_t;

/* Returns the value of field name in e (and its length in *len), or NULL when absent. */
const char *sand_lbus_entry_get(const sand_lbus_entry_t *e, const char *name, size_t *len);

/* Receives each entry. The reader never XACKs: the owner acknowledges (XACK key group id, on its
 * own sand_lbus_t) once the entry is safely handled; unacknowledged entries are delivered again
 * after a reconnect or a reader restart (at-least-once). Loop thread. */
typedef void (*sand_lbus_entry_cb)(sand_lbus_reader_t *reader, const sand_lbus_entry_t *entry,
                                   void *ud);

typedef struct sand_lbus_reader_opts {
    const char *endpoint; /* as sand_lbus_opts */
    const char *user;
    const char *password;
    const char *group;    /* NULL -> SAND_GROUP_AGENT ("agent") */
    const char *consumer; /* NULL -> SAND_CONSUMER_AGENT ("ha") */
    int block_ms;         /* XREADGROUP BLOCK, bounds how late a key change applies; 0 -> 200 */
    int count;            /* XREADGROUP COUNT; 0 -> 256 */
    sand_lbus_entry_cb entry_cb; /* required */
    void *ud;
} sand_lbus_reader_opts;

/* Opens a reader with its own connection. It loops XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS
 * <keys...> <ids...>: for every key it first reads back this consumer's pending entries (id "0"
 * onwards) and then new ones (">"). Before the first read of a key (and again after every
 * reconnect) it creates the group (XGROUP CREATE ... $ MKSTREAM, BUSYGROUP ignored). With no keys
 * it idles. Strings are copied. Returns 0 and *out, or < 0. Loop thread only. */
int sand_lbus_reader_open(uv_loop_t *loop, const sand_lbus_reader_opts *opts,
                          sand_lbus_reader_t **out, sand_err *err);

/* Adds a stream key (copied); takes effect on the next round (at most block_ms later). Adding a
 * key already present is a no-op. Returns 0, SAND_ENOMEM or SAND_EINVAL. */
int sand_lbus_reader_add(sand_lbus_reader_t *reader, const char *key, sand_err *err);

/* Removes a stream key. Entries of that key still in the current round's answer are not
 * delivered; they stay pending in Redis for whoever reads the key again. Returns 0 or
 * SAND_ENOTFOUND. */
int sand_lbus_reader_remove(sand_lbus_reader_t *reader, const char *key);

/* Number of keys currently read. */
size_t sand_lbus_reader_nkeys(const sand_lbus_reader_t *reader);

/* Closes asynchronously like sand_lbus_close; no entry callback runs after this call returns.
 * close_cb (optional) runs once everything is released. Safe inside an entry callback. */
void sand_lbus_reader_close(sand_lbus_reader_t *reader, void (*close_cb)(void *ud), void *ud);

/* ==== global bus (Kafka) ===================================================================== */

typedef struct sand_gbus sand_gbus_t;

/* One consumed record, all pointers borrowed and valid only during the callback. topic is
 * NUL-terminated; key and value are raw bytes (key may be NULL). */
typedef struct sand_gbus_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;
    size_t keylen;
    const void *value;
    size_t vallen;
    int64_t timestamp_ms; /* record timestamp, -1 when unknown */
} sand_gbus_record_t;

typedef void (*sand_gbus_record_cb)(sand_gbus_t *gbus, const sand_gbus_record_t *rec, void *ud);

/* Completion of an asynchronous admin operation: status 0 or < 0 with errstr. Loop thread. */
typedef void (*sand_gbus_done_cb)(sand_gbus_t *gbus, int status, const char *errstr, void *ud);

typedef struct sand_gbus_opts {
    const char *brokers;           /* "host:port,host:port" (required) */
    const char *group_id;          /* NULL -> SAND_KAFKA_GROUP */
    const char *client_id;         /* NULL -> "sandd" */
    const char *subscribe;         /* topic regex; NULL -> "^sand\\..*"; "" -> no consumer at all */
    int linger_ms;                 /* producer batching delay; 0 -> 5 */
    int metadata_refresh_ms;       /* how fast new topics matching the regex are seen; 0 -> 1000 */
    int default_partitions;        /* used by ensure_topic when partitions <= 0; 0 -> 8 */
    bool from_latest;              /* with no committed offset: false -> earliest, true -> latest */
    bool assign;                   /* no subscription: partitions are added by sand_gbus_assign
                                      (a single host owning all partitions, no group rebalance) */
    int session_timeout_ms;        /* consumer group session; 0 -> 10000 (>= 6000 on brokers) */
    const char *debug;             /* librdkafka debug contexts ("cgrp,topic"), NULL for none */
    sand_gbus_record_cb record_cb; /* required unless subscribe is "" */
    void *ud;
} sand_gbus_opts;

/* Creates the producer and (unless opts->subscribe is "") the consumer, subscribes to the regex
 * and hooks both to loop through one uv_poll_t on librdkafka's queue wake-up pipe. Offsets are
 * committed only through sand_gbus_commit (enable.auto.commit false). Returns 0 and *out, or
 * < 0 (SAND_EINVAL bad option, SAND_EBUS librdkafka refused, SAND_EIO). Loop thread only. */
int sand_gbus_open(uv_loop_t *loop, const sand_gbus_opts *opts, sand_gbus_t **out, sand_err *err);

/* Queues one record (copied: RD_KAFKA_MSG_F_COPY) for topic, partitioned by key (key NULL ->
 * librdkafka's partitioner picks). Never blocks: returns 0 when queued, SAND_EBUSY when the
 * local queue is full, SAND_EBUS otherwise. Delivery failures are counted (sand_gbus_stats) and
 * logged. Loop thread. */
int sand_gbus_produce(sand_gbus_t *gbus, const char *topic, const void *key, size_t keylen,
                      const void *value, size_t vallen, sand_err *err);

/* Makes sure topic exists with at least `partitions` partitions (<= 0: default_partitions):
 * CreateTopics through the Admin API, result handled on the loop; "already exists" is success.
 * Returns 0 (cb runs once) or < 0 (cb never runs). */
int sand_gbus_ensure_topic(sand_gbus_t *gbus, const char *topic, int partitions,
                           sand_gbus_done_cb cb, void *ud, sand_err *err);

/* Adds partitions 0..partitions-1 of topic to the consumer's assignment (opts.assign mode),
 * starting at the group's committed offsets (else per from_latest). The topic need not exist
 * yet. Returns 0 or < 0 with err set. Loop thread. */
int sand_gbus_assign(sand_gbus_t *gbus, const char *topic, int partitions, sand_err *err);

/* Commits, asynchronously, that every record of topic/partition up to and including `offset`
 * is handled (the committed position is offset + 1). Failures are logged. Returns 0 or < 0. */
int sand_gbus_commit(sand_gbus_t *gbus, const char *topic, int32_t partition, int64_t offset,
                     sand_err *err);

/* Waits up to timeout_ms for every queued record to be delivered (blocks the loop: shutdown
 * only). Returns 0 when all were delivered, SAND_ETIMEDOUT otherwise. */
int sand_gbus_flush(sand_gbus_t *gbus, int timeout_ms, sand_err *err);

typedef struct sand_gbus_stats {
    uint64_t produced;        /* records queued by sand_gbus_produce */
    uint64_t delivered;       /* delivery reports with success */
    uint64_t delivery_failed; /* delivery reports with an error */
    uint64_t consumed;        /* records handed to record_cb */
} sand_gbus_stats_t;

void sand_gbus_stats(const sand_gbus_t *gbus, sand_gbus_stats_t *out);

/* Shuts down: flushes the producer for at most flush_ms (0 -> 2000; blocking), closes the
 * consumer (leaves the group, blocking for a bounded time), fails pending ensure_topic callbacks
 * with SAND_ECANCELED, closes the uv handles and then calls close_cb (optional); memory goes
 * after close_cb. After close_cb no uv handle of the gbus remains, so uv_loop_close may follow.
 * No record callback runs after this call returns. */
void sand_gbus_close(sand_gbus_t *gbus, int flush_ms, void (*close_cb)(void *ud), void *ud);

#endif
