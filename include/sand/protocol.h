/*
 * The wire contract between the host agent (sandd), the in-sandbox supervisor and the grain
 * workers: Redis key names, stream field names, the Kafka topic and record shapes, and the Lua
 * script that performs a join atomically inside Redis. docs/internals/protocol.md explains each
 * item; this header is the single place the names are spelled. Everything app-visible lives under
 * "sand:{app}:" so one Redis ACL pattern (~sand:{app}:*) confines an app to its own keys.
 */
#ifndef SAND_PROTOCOL_H
#define SAND_PROTOCOL_H

#include <stdio.h>

/* ---- Redis keys (local bus and local data layer) ---------------------------------------- */

#define SAND_KEY_PREFIX_FMT "sand:%s:"        /* app */
#define SAND_KEY_QUEUE_FMT  "sand:%s:q:%s"    /* app, grain: stream, one per grain (LQ) */
#define SAND_KEY_AGENT_FMT  "sand:%s:ha"      /* app: stream, the host agent's queue (LQHA) */
#define SAND_KEY_JOIN_FMT   "sand:%s:j:%s:%s" /* app, execution, step: hash of join inputs */
#define SAND_KEY_LOCAL_FMT  "sand:%s:dl:%s"   /* app, user key: local data layer value */
#define SAND_KEY_GLOBAL_FMT "sand:%s:dg:%s"   /* app, user key: global data layer value */
#define SAND_KEY_LOG_FMT    "sand:%s:log"     /* app: stream of log lines (capped) */
#define SAND_KEY_SUP_FMT    "sand:%s:sup"     /* app: hash grain -> worker status JSON */
#define SAND_KEY_EXEC_FMT   "sandd:x:%s"      /* execution id: record JSON (host agent only) */

#define SAND_GROUP_WORKERS   "workers" /* consumer group on every grain queue */
#define SAND_CONSUMER_WORKER "w"       /* one worker per grain per host */
#define SAND_GROUP_AGENT     "agent"   /* consumer group on the LQHA stream */
#define SAND_CONSUMER_AGENT  "ha"

/* ---- event entry on a grain queue (XADD sand:{app}:q:{grain} * F V ...) ------------------ */

#define SAND_F_ID       "i" /* event id (hex); a join's event carries its inputs' ids joined by '+' */
#define SAND_F_EXEC     "x" /* execution id */
#define SAND_F_WORKFLOW "w" /* workflow name; "" for a direct grain invocation */
#define SAND_F_STEP     "s" /* step name; the grain name for a direct grain invocation */
#define SAND_F_ATTEMPT  "a" /* 1-based attempt */
#define SAND_F_QUEUED   "q" /* epoch microseconds when enqueued */
#define SAND_F_DEADLINE "d" /* epoch microseconds when the execution times out */
#define SAND_F_EVENT    "e" /* the event: JSON text */

/* ---- host agent entry (XADD sand:{app}:ha * F V ...), one per finished instance ---------- */

#define SAND_F_TYPE     "t" /* "step" */
#define SAND_F_GRAIN    "g"
#define SAND_F_STATUS   "st"  /* succeeded | failed | retrying | caught */
#define SAND_F_STARTED  "b"   /* epoch us the handler started */
#define SAND_F_FINISHED "f"   /* epoch us the handler finished */
#define SAND_F_PID      "pid" /* pid of the instance, as seen by the worker */
#define SAND_F_ERROR    "r"   /* error object JSON (failed, retrying, caught) */
#define SAND_F_NEXT     "n"   /* JSON array of produced events: [{"i","s","g","a","e"}] */
#define SAND_F_END      "end" /* "ok": execution result in "o"; "fail": execution failed */
#define SAND_F_OUTPUT   "o"   /* output JSON of a terminal step */

/* ---- log entry (XADD sand:{app}:log MAXLEN ~ N * F V ...) -------------------------------- */

#define SAND_F_LOG_TIME "t" /* epoch us */
#define SAND_F_LOG_KIND "k" /* stdout | stderr | log | system */
#define SAND_F_LOG_MSG  "m" /* one line, no newline */
/* plus SAND_F_GRAIN, SAND_F_STEP, SAND_F_EXEC */

/* ---- Kafka (global bus) ------------------------------------------------------------------ */

#define SAND_TOPIC_FMT "sand.%s.%s" /* app, grain: one topic per grain (GQ), N partitions */
/* Record key: the event id. Record value: JSON
 *   {"flag":"processing"|"event","app","grain","i","x","w","s","a","q","d","e":<event>}
 *   {"flag":"finished","app","grain","i"}
 * "processing" is a backup of an event delivered on the local bus (paper step 6b); "finished"
 * marks it done (step 10b); "event" is an event to deliver (bus.mode global, and the entry of an
 * event produced on another host). */
#define SAND_KAFKA_GROUP "sand-agent"

/* ---- the join script --------------------------------------------------------------------- */

/* EVAL SAND_LUA_JOIN 2 <join-hash-key> <target-queue-key>
 *      <pred-step> <pred-event-id> <pred-output-json> <n-preds> <ttl-ms>
 *      <exec> <workflow> <step> <queued-us> <deadline-us>
 * Records one predecessor's output; when all n-preds have arrived, XADDs the join event
 * {"pred":output,...} (attempt 1, id = the inputs' ids joined by '+') to the target queue and
 * deletes the hash. Returns 1 when the join fired, 0 otherwise. Idempotent per predecessor. */
#define SAND_LUA_JOIN                                                                              \
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\\n' .. ARGV[3])\n"                          \
    "redis.call('PEXPIRE', KEYS[1], ARGV[5])\n"                                                    \
    "if redis.call('HLEN', KEYS[1]) < tonumber(ARGV[4]) then return 0 end\n"                       \
    "local all = redis.call('HGETALL', KEYS[1])\n"                                                 \
    "local parts, ids = {}, {}\n"                                                                  \
    "for i = 1, #all, 2 do\n"                                                                      \
    "  local v = all[i + 1]\n"                                                                     \
    "  local nl = string.find(v, '\\n', 1, true)\n"                                                \
    "  ids[#ids + 1] = string.sub(v, 1, nl - 1)\n"                                                 \
    "  parts[#parts + 1] = '\"' .. all[i] .. '\":' .. string.sub(v, nl + 1)\n"                     \
    "end\n"                                                                                        \
    "redis.call('XADD', KEYS[2], '*', 'i', table.concat(ids, '+'), 'x', ARGV[6], 'w', ARGV[7],\n"  \
    "  's', ARGV[8], 'a', '1', 'q', ARGV[9], 'd', ARGV[10],\n"                                     \
    "  'e', '{' .. table.concat(parts, ',') .. '}')\n"                                             \
    "redis.call('DEL', KEYS[1])\n"                                                                 \
    "return 1\n"

/* ---- environment of supervisors and workers ---------------------------------------------- */

#define SAND_ENV_REDIS       "SAND_REDIS"      /* unix:/path/redis.sock or tcp://host:port */
#define SAND_ENV_REDIS_USER  "SAND_REDIS_USER" /* the app's ACL user */
#define SAND_ENV_REDIS_PASS  "SAND_REDIS_PASS"
#define SAND_ENV_GREDIS      "SAND_GLOBAL_REDIS" /* global data layer endpoint */
#define SAND_ENV_GREDIS_USER "SAND_GLOBAL_REDIS_USER"
#define SAND_ENV_GREDIS_PASS "SAND_GLOBAL_REDIS_PASS"
#define SAND_ENV_APP         "SAND_APP"
#define SAND_ENV_BUNDLE      "SAND_BUNDLE"   /* bundle directory (app.yaml and code) */
#define SAND_ENV_GRAINS      "SAND_GRAINS"   /* supervisor: comma-separated grains to run; "" all */
#define SAND_ENV_INSTANCE    "SAND_INSTANCE" /* fork | reuse */
#define SAND_ENV_BUS_MODE    "SAND_BUS_MODE" /* hierarchical | global */
#define SAND_ENV_BIN_DIR     "SAND_BIN_DIR"  /* where sand-worker-* binaries are */
#define SAND_ENV_LIB_DIR     "SAND_LIB_DIR"  /* where sand.jar and runtime files are */
#define SAND_ENV_LOG_MAX     "SAND_LOG_MAX"  /* log stream MAXLEN */
#define SAND_ENV_ONCE        "SAND_ONCE"     /* cold mode: each worker serves one event, exits */
#define SAND_ENV_VALUE_MAX   "SAND_VALUE_MAX" /* data layer value limit, bytes */

#endif
