/*
 * The small fixed set of containers sand uses: a pointer vector and a string-keyed open-addressing
 * hash map (the intrusive list is header-only). See docs/internals/containers.md before adding one.
 */
#include "sand/common.h"

#include <stdlib.h>
#include <string.h>

void sand_vec_init(sand_vec_t *v)
{
    v->items = NULL;
    v->len = v->cap = 0;
}

void sand_vec_release(sand_vec_t *v, void (*free_fn)(void *))
{
    if (free_fn) {
        for (size_t i = 0; i < v->len; i++)
            free_fn(v->items[i]);
    }
    free(v->items);
    sand_vec_init(v);
}

int sand_vec_push(sand_vec_t *v, void *item)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        void **p = realloc(v->items, cap * sizeof(*p));
        if (!p)
            return SAND_ENOMEM;
        v->items = p;
        v->cap = cap;
    }
    v->items[v->len++] = item;
    return 0;
}

void *sand_vec_remove(sand_vec_t *v, size_t i)
{
    if (i >= v->len)
        return NULL;
    void *item = v->items[i];
    memmove(&v->items[i], &v->items[i + 1], (v->len - i - 1) * sizeof(void *));
    v->len--;
    return item;
}

/* ---- map ---- */

#define TOMBSTONE ((char *)1)

struct sand_map_slot {
    char *key; /* NULL empty, TOMBSTONE deleted */
    void *value;
    uint64_t hash;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

void sand_map_init(sand_map_t *m)
{
    memset(m, 0, sizeof(*m));
}

void sand_map_release(sand_map_t *m, void (*free_fn)(void *))
{
    for (size_t i = 0; i < m->cap; i++) {
        struct sand_map_slot *s = &m->slots[i];
        if (s->key && s->key != TOMBSTONE) {
            if (free_fn)
                free_fn(s->value);
            free(s->key);
        }
    }
    free(m->slots);
    sand_map_init(m);
}

static struct sand_map_slot *find(const sand_map_t *m, const char *key, uint64_t h)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct sand_map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

static int grow(sand_map_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    if (m->len * 4 < m->cap) /* mostly tombstones: rehash at the same size */
        cap = m->cap;
    struct sand_map_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return SAND_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct sand_map_slot *s = &m->slots[i];
        if (!s->key || s->key == TOMBSTONE)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->len;
    return 0;
}

int sand_map_set(sand_map_t *m, const char *key, void *value, void **old)
{
    uint64_t h = hash_str(key);
    struct sand_map_slot *s = find(m, key, h);
    if (s) {
        if (old)
            *old = s->value;
        s->value = value;
        return 0;
    }
    if (old)
        *old = NULL;
    if ((m->used + 1) * 4 > m->cap * 3) {
        int rc = grow(m);
        if (rc < 0)
            return rc;
    }
    char *k = sand_strdup(key);
    if (!k)
        return SAND_ENOMEM;
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key && m->slots[i].key != TOMBSTONE)
        i = (i + 1) & mask;
    if (!m->slots[i].key)
        m->used++;
    m->slots[i].key = k;
    m->slots[i].value = value;
    m->slots[i].hash = h;
    m->len++;
    return 0;
}

void *sand_map_get(const sand_map_t *m, const char *key)
{
    struct sand_map_slot *s = find(m, key, hash_str(key));
    return s ? s->value : NULL;
}

void *sand_map_del(sand_map_t *m, const char *key)
{
    struct sand_map_slot *s = find(m, key, hash_str(key));
    if (!s)
        return NULL;
    void *v = s->value;
    free(s->key);
    s->key = TOMBSTONE;
    s->value = NULL;
    m->len--;
    return v;
}

bool sand_map_next(const sand_map_t *m, size_t *iter, const char **key, void **value)
{
    for (size_t i = *iter; i < m->cap; i++) {
        struct sand_map_slot *s = &m->slots[i];
        if (s->key && s->key != TOMBSTONE) {
            *iter = i + 1;
            if (key)
                *key = s->key;
            if (value)
                *value = s->value;
            return true;
        }
    }
    *iter = m->cap;
    return false;
}
