/*
 * The consumer-group stream reader for the host agent's LQHA streams. It owns a dedicated
 * sand_lbus_t because XREADGROUP ... BLOCK parks its connection: sharing one with ordinary
 * commands would delay them by up to the block time. Each round reads all current keys in one
 * command; keys added or removed between rounds apply to the next round, so the BLOCK timeout
 * bounds the delay. Each key starts in the pending phase (explicit ids from "0": this consumer's
 * delivered but unacknowledged entries, which Redis answers immediately) and switches to ">"
 * (new entries) once its pending list reads empty. After every reconnect all keys go back to the
 * pending phase, so an answer lost with a connection is read again: delivery is at-least-once.
 * Scratch arrays for arguments and fields live in the reader and only grow.
 */
#include "sand/bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sand/protocol.h"

#define RETRY_MS 100 /* after an error answer, so a persistent error does not spin */

struct rkey {
    char *name;
    char cursor[48]; /* last pending id read, or ">" */
    bool pending;    /* still reading this consumer's pending entries */
    bool need_group; /* XGROUP CREATE before the next read */
    bool removed;    /* freed at the start of the next round */
};

struct sand_lbus_reader {
    sand_lbus_t *lb;
    char *group, *consumer;
    char count_s[16], block_s[16];
    sand_lbus_entry_cb entry_cb;
    void *ud;
    sand_vec_t keys;    /* struct rkey *, including removed ones not yet swept */
    sand_map_t by_name; /* live keys only */
    bool up, in_flight, closed;
    uv_timer_t retry;
    const char **argv;
    size_t argv_cap;
    const char **fields;
    size_t *lens;
    size_t fields_cap;
    int open_parts; /* the lbus and the timer */
    void (*close_cb)(void *ud);
    void *close_ud;
};

static void round_start(sand_lbus_reader_t *r);

static void rkey_free(void *p)
{
    struct rkey *k = p;
    if (k) {
        free(k->name);
        free(k);
    }
}

static void rkey_restart(struct rkey *k)
{
    k->pending = true;
    k->need_group = true;
    sand_strlcpy(k->cursor, "0", sizeof(k->cursor));
}

static void on_retry(uv_timer_t *t)
{
    round_start(t->data);
}

static void on_group(sand_lbus_t *lb, int status, const redisReply *reply, const char *errstr,
                     void *ud)
{
    if (status == SAND_EBUS && reply)
        SAND_WARN("bus", "reader: create group: %s", errstr);
}

static int grow(sand_lbus_reader_t *r, size_t nargv, size_t nfields)
{
    if (nargv > r->argv_cap) {
        size_t cap = nargv * 2;
        const char **a = realloc(r->argv, cap * sizeof(*a));
        if (!a)
            return SAND_ENOMEM;
        r->argv = a;
        r->argv_cap = cap;
    }
    if (nfields > r->fields_cap) {
        size_t cap = nfields * 2;
        const char **f = realloc(r->fields, cap * sizeof(*f));
        if (!f)
            return SAND_ENOMEM;
        r->fields = f;
        size_t *l = realloc(r->lens, cap * sizeof(*l));
        if (!l)
            return SAND_ENOMEM;
        r->lens = l;
        r->fields_cap = cap;
    }
    return 0;
}

/* Hands every entry of one stream's answer to the callback. Returns false when the reader was
 * closed from inside the callback. */
static bool deliver(sand_lbus_reader_t *r, struct rkey *k, const redisReply *key,
                    const redisReply *entries)
{
    bool was_pending = k->pending;
    if (k->pending) {
        if (entries->elements == 0) {
            k->pending = false;
            sand_strlcpy(k->cursor, ">", sizeof(k->cursor));
            return true;
        }
        const redisReply *last = entries->element[entries->elements - 1];
        if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1 &&
            last->element[0]->type == REDIS_REPLY_STRING &&
            last->element[0]->len < sizeof(k->cursor))
            sand_strlcpy(k->cursor, last->element[0]->str, sizeof(k->cursor));
    }
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        sand_lbus_entry_t ent = {
            .key = key->str,
            .keylen = key->len,
            .id = e->element[0]->str,
            .idlen = e->element[0]->len,
            .pending = was_pending,
        };
        /* A pending entry whose content was trimmed away comes back as [id, nil]: it is
         * still handed over (no fields) so that the owner can acknowledge it. */
        const redisReply *fv = e->elements >= 2 ? e->element[1] : NULL;
        if (fv && fv->type == REDIS_REPLY_ARRAY) {
            if (grow(r, 0, fv->elements) < 0) {
                SAND_ERROR("bus", "reader: out of memory for entry '%s'", ent.id);
                continue;
            }
            size_t n = 0;
            for (size_t j = 0; j + 1 < fv->elements; j += 2) {
                r->fields[n] = fv->element[j]->str;
                r->lens[n] = fv->element[j]->len;
                r->fields[n + 1] = fv->element[j + 1]->str;
                r->lens[n + 1] = fv->element[j + 1]->len;
                n += 2;
            }
            ent.nfields = n / 2;
            ent.fields = r->fields;
            ent.lens = r->lens;
        }
        r->entry_cb(r, &ent, r->ud);
        if (r->closed)
            return false;
        if (k->removed)
            break;
    }
    return true;
}

static void on_read(sand_lbus_t *lb, int status, const redisReply *reply, const char *errstr,
                    void *ud)
{
    sand_lbus_reader_t *r = ud;
    r->in_flight = false;
    if (r->closed)
        return;
    if (status < 0) {
        /* The connection went away; the up notification restarts the rounds. */
        if (sand_lbus_connected(r->lb))
            uv_timer_start(&r->retry, on_retry, RETRY_MS, 0);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        SAND_WARN("bus", "reader: XREADGROUP: %s", reply->str);
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            for (size_t i = 0; i < r->keys.len; i++) {
                struct rkey *k = r->keys.items[i];
                rkey_restart(k);
            }
        }
        uv_timer_start(&r->retry, on_retry, RETRY_MS, 0);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *s = reply->element[i];
            if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
                s->element[0]->type != REDIS_REPLY_STRING ||
                s->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            struct rkey *k = sand_map_get(&r->by_name, s->element[0]->str);
            if (!k || k->removed)
                continue;
            if (!deliver(r, k, s->element[0], s->element[1]))
                return;
        }
    }
    round_start(r);
}

static void sweep_removed(sand_lbus_reader_t *r)
{
    for (size_t i = 0; i < r->keys.len;) {
        struct rkey *k = r->keys.items[i];
        if (k->removed)
            rkey_free(sand_vec_remove(&r->keys, i));
        else
            i++;
    }
}

static void round_start(sand_lbus_reader_t *r)
{
    if (r->closed || r->in_flight || !r->up)
        return;
    uv_timer_stop(&r->retry);
    sweep_removed(r);
    size_t n = r->keys.len;
    if (n == 0)
        return;
    if (grow(r, 10 + 2 * n, 0) < 0) {
        SAND_ERROR("bus", "reader: out of memory for %zu keys", n);
        uv_timer_start(&r->retry, on_retry, RETRY_MS, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct rkey *k = r->keys.items[i];
        if (k->need_group) {
            /* Pipelined on the same connection, so it is done before the read below. */
            sand_lbus_ensure_group(r->lb, k->name, r->group, on_group, r);
            k->need_group = false;
        }
    }
    size_t a = 0;
    r->argv[a++] = "XREADGROUP";
    r->argv[a++] = "GROUP";
    r->argv[a++] = r->group;
    r->argv[a++] = r->consumer;
    r->argv[a++] = "COUNT";
    r->argv[a++] = r->count_s;
    r->argv[a++] = "BLOCK";
    r->argv[a++] = r->block_s;
    r->argv[a++] = "STREAMS";
    for (size_t i = 0; i < n; i++)
        r->argv[a++] = ((struct rkey *)r->keys.items[i])->name;
    for (size_t i = 0; i < n; i++)
        r->argv[a++] = ((struct rkey *)r->keys.items[i])->cursor;
    r->in_flight = true;
    if (sand_lbus_command_argv(r->lb, on_read, r, (int)a, r->argv, NULL) < 0)
        r->in_flight = false;
}

static void on_state(sand_lbus_t *lb, bool up, void *ud)
{
    sand_lbus_reader_t *r = ud;
    r->up = up;
    if (!up)
        return;
    for (size_t i = 0; i < r->keys.len; i++)
        rkey_restart(r->keys.items[i]);
    round_start(r);
}

static void reader_free(sand_lbus_reader_t *r)
{
    sand_vec_release(&r->keys, rkey_free);
    sand_map_release(&r->by_name, NULL);
    free(r->argv);
    free(r->fields);
    free(r->lens);
    free(r->group);
    free(r->consumer);
    free(r);
}

int sand_lbus_reader_open(uv_loop_t *loop, const sand_lbus_reader_opts *opts,
                          sand_lbus_reader_t **out, sand_err *err)
{
    int rc;
    if (!opts || !opts->entry_cb)
        return sand_err_set(err, SAND_EINVAL, "stream reader needs an entry callback");
    sand_lbus_reader_t *r = calloc(1, sizeof(*r));
    if (!r)
        return sand_err_set(err, SAND_ENOMEM, "stream reader");
    sand_vec_init(&r->keys);
    sand_map_init(&r->by_name);
    r->group = sand_strdup(opts->group ? opts->group : SAND_GROUP_AGENT);
    r->consumer = sand_strdup(opts->consumer ? opts->consumer : SAND_CONSUMER_AGENT);
    if (!r->group || !r->consumer) {
        reader_free(r);
        return sand_err_set(err, SAND_ENOMEM, "stream reader");
    }
    snprintf(r->count_s, sizeof(r->count_s), "%d", opts->count > 0 ? opts->count : 256);
    snprintf(r->block_s, sizeof(r->block_s), "%d", opts->block_ms > 0 ? opts->block_ms : 200);
    r->entry_cb = opts->entry_cb;
    r->ud = opts->ud;
    sand_lbus_opts lo = {
        .endpoint = opts->endpoint,
        .user = opts->user,
        .password = opts->password,
        .name = "sand-reader",
        .state_cb = on_state,
        .state_ud = r,
    };
    if ((rc = sand_lbus_open(loop, &lo, &r->lb, err)) < 0) {
        reader_free(r);
        return sand_err_wrap(err, rc, "stream reader");
    }
    uv_timer_init(loop, &r->retry);
    r->retry.data = r;
    r->open_parts = 2;
    *out = r;
    return 0;
}

int sand_lbus_reader_add(sand_lbus_reader_t *reader, const char *key, sand_err *err)
{
    if (!key || !*key)
        return sand_err_set(err, SAND_EINVAL, "empty stream key");
    if (sand_map_get(&reader->by_name, key))
        return 0;
    struct rkey *k = calloc(1, sizeof(*k));
    if (!k || !(k->name = sand_strdup(key))) {
        free(k);
        return sand_err_set(err, SAND_ENOMEM, "stream key '%s'", key);
    }
    rkey_restart(k);
    if (sand_vec_push(&reader->keys, k) < 0) {
        rkey_free(k);
        return sand_err_set(err, SAND_ENOMEM, "stream key '%s'", key);
    }
    if (sand_map_set(&reader->by_name, key, k, NULL) < 0) {
        rkey_free(sand_vec_remove(&reader->keys, reader->keys.len - 1));
        return sand_err_set(err, SAND_ENOMEM, "stream key '%s'", key);
    }
    round_start(reader);
    return 0;
}

int sand_lbus_reader_remove(sand_lbus_reader_t *reader, const char *key)
{
    struct rkey *k = sand_map_del(&reader->by_name, key);
    if (!k)
        return SAND_ENOTFOUND;
    k->removed = true;
    return 0;
}

size_t sand_lbus_reader_nkeys(const sand_lbus_reader_t *reader)
{
    return reader->by_name.len;
}

static void part_closed(sand_lbus_reader_t *r)
{
    if (--r->open_parts > 0)
        return;
    if (r->close_cb)
        r->close_cb(r->close_ud);
    reader_free(r);
}

static void on_lb_closed(void *ud)
{
    part_closed(ud);
}

static void on_timer_closed(uv_handle_t *h)
{
    part_closed(h->data);
}

void sand_lbus_reader_close(sand_lbus_reader_t *reader, void (*close_cb)(void *ud), void *ud)
{
    if (reader->closed)
        return;
    reader->closed = true;
    reader->close_cb = close_cb;
    reader->close_ud = ud;
    uv_timer_stop(&reader->retry);
    uv_close((uv_handle_t *)&reader->retry, on_timer_closed);
    sand_lbus_close(reader->lb, on_lb_closed, reader);
}

const char *sand_lbus_entry_get(const sand_lbus_entry_t *e, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < e->nfields; i++) {
        if (e->lens[2 * i] == n && memcmp(e->fields[2 * i], name, n) == 0) {
            if (len)
                *len = e->lens[2 * i + 1];
            return e->fields[2 * i + 1];
        }
    }
    return NULL;
}
