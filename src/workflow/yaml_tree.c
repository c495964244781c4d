/*
 * Builds a small node tree from libyaml's event stream. The event API (rather than libyaml's
 * document loader) is used so that limits apply while parsing: nesting depth is checked at every
 * collection start and alias expansions at every alias use, and an alias becomes a reference to
 * the anchored node instead of a copy. Each alias use costs one plus the alias uses inside the
 * node it refers to, so a "billion laughs" document is stopped after a few levels instead of
 * being expanded. Anchors are registered when their node is complete, which makes recursive
 * aliases impossible: an alias to a collection that is still open is an unknown anchor.
 */
#include "workflow_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Saturation bound for alias counts; far above any limit a caller can set. */
#define ALIAS_COUNT_CAP ((uint64_t)1 << 40)

const sand__ynode *sand__ynode_deref(const sand__ynode *n)
{
    /* Anchors are registered only once complete, so alias chains are acyclic; aliases never
     * point at aliases (an anchor on an alias is not valid YAML), but loop to be safe. */
    while (n && n->kind == SAND__Y_ALIAS)
        n = n->target;
    return n;
}

void sand__ynode_free(sand__ynode *n)
{
    if (!n)
        return;
    /* Iterative over a private stack would be overkill: depth is bounded by max_depth. */
    if (n->kind == SAND__Y_SEQ || n->kind == SAND__Y_MAP) {
        for (size_t i = 0; i < n->n; i++)
            sand__ynode_free(n->items[i]);
        free(n->items);
    }
    free(n->text);
    free(n);
}

static bool all_match(const char *s, size_t len, const char *set)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr(set, s[i]) || s[i] == '\0')
            return false;
    return true;
}

static bool is_core_int(const char *s, size_t len)
{
    if (len > 2 && s[0] == '0' && s[1] == 'o')
        return all_match(s + 2, len - 2, "01234567");
    if (len > 2 && s[0] == '0' && s[1] == 'x')
        return all_match(s + 2, len - 2, "0123456789abcdefABCDEF");
    if (len > 0 && (s[0] == '-' || s[0] == '+'))
        s++, len--;
    return all_match(s, len, "0123456789");
}

static bool is_core_float(const char *s, size_t len)
{
    static const char *const special[] = {".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN"};
    const char *p = s, *end = s + len;
    if (p < end && (*p == '-' || *p == '+'))
        p++;
    for (size_t i = 0; i < SAND_ARRAY_LEN(special); i++)
        if ((size_t)(end - p) == strlen(special[i]) && memcmp(p, special[i], end - p) == 0)
            return true;
    size_t digits = 0;
    while (p < end && *p >= '0' && *p <= '9')
        p++, digits++;
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p >= '0' && *p <= '9')
            p++, digits++;
    }
    if (digits == 0)
        return false;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '-' || *p == '+'))
            p++;
        size_t exp = 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++, exp++;
        if (exp == 0)
            return false;
    }
    return p == end;
}

/* YAML 1.2 core schema resolution of a plain scalar. */
static sand__ystype resolve_plain(const char *s, size_t len)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    static const char *const bools[] = {"true", "True", "TRUE", "false", "False", "FALSE"};
    for (size_t i = 0; i < SAND_ARRAY_LEN(nulls); i++)
        if (len == strlen(nulls[i]) && memcmp(s, nulls[i], len) == 0)
            return SAND__YS_NULL;
    for (size_t i = 0; i < SAND_ARRAY_LEN(bools); i++)
        if (len == strlen(bools[i]) && memcmp(s, bools[i], len) == 0)
            return SAND__YS_BOOL;
    if (is_core_int(s, len))
        return SAND__YS_INT;
    if (is_core_float(s, len))
        return SAND__YS_FLOAT;
    return SAND__YS_STR;
}

/* Resolves an explicitly tagged scalar. Returns false for tags this loader does not accept. */
static bool resolve_tagged(const char *tag, const char *s, size_t len, sand__ystype *out)
{
    if (strcmp(tag, "!") == 0 || strcmp(tag, YAML_STR_TAG) == 0) {
        *out = SAND__YS_STR;
        return true;
    }
    sand__ystype t = resolve_plain(s, len);
    if ((strcmp(tag, YAML_INT_TAG) == 0 && t == SAND__YS_INT) ||
        (strcmp(tag, YAML_FLOAT_TAG) == 0 && (t == SAND__YS_FLOAT || t == SAND__YS_INT)) ||
        (strcmp(tag, YAML_BOOL_TAG) == 0 && t == SAND__YS_BOOL) ||
        (strcmp(tag, YAML_NULL_TAG) == 0 && t == SAND__YS_NULL)) {
        *out = t;
        return true;
    }
    return false;
}

int sand__diag_add(sand_diags_t *d, int line, int col, const char *fmt, ...)
{
    if (d->len > SAND__DIAGS_MAX)
        return 0;
    if (d->len == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        sand_diag_t *items = realloc(d->items, cap * sizeof(*items));
        if (!items)
            return SAND_ENOMEM;
        d->items = items;
        d->cap = cap;
    }
    sand_diag_t *it = &d->items[d->len++];
    it->line = line;
    it->col = col;
    if (d->len > SAND__DIAGS_MAX) {
        snprintf(it->msg, sizeof(it->msg), "too many errors (more than %d), stopping here",
                 SAND__DIAGS_MAX);
        return 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->msg, sizeof(it->msg), fmt, ap);
    va_end(ap);
    return 0;
}

/* One open collection while parsing. */
struct frame {
    sand__ynode *node;
    char *anchor; /* registered when the collection ends */
};

struct builder {
    sand_diags_t *diags;
    int max_depth;
    uint64_t max_aliases;
    uint64_t aliases; /* total alias expansions so far */
    sand__ynode *root;
    struct frame *stack;
    size_t depth;
    sand_map_t anchors; /* anchor name -> complete node (borrowed from the tree) */
    int docs;
};

static int attach(struct builder *b, sand__ynode *n)
{
    if (b->depth == 0) {
        /* Only one root can arrive: a second document is rejected at its start event. */
        b->root = n;
        return 0;
    }
    sand__ynode *parent = b->stack[b->depth - 1].node;
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        sand__ynode **items = realloc(parent->items, cap * sizeof(*items));
        if (!items)
            return SAND_ENOMEM;
        parent->items = items;
        parent->cap = cap;
    }
    parent->items[parent->n++] = n;
    parent->aliases += n->aliases;
    if (parent->aliases > ALIAS_COUNT_CAP)
        parent->aliases = ALIAS_COUNT_CAP;
    return 0;
}

static sand__ynode *node_new(sand__ykind kind, const yaml_mark_t *mark)
{
    sand__ynode *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->kind = kind;
    n->line = (int)mark->line + 1;
    n->col = (int)mark->column + 1;
    return n;
}

static int register_anchor(struct builder *b, const char *anchor, sand__ynode *n)
{
    if (!anchor)
        return 0;
    /* A redefined anchor refers to its latest node from here on, as YAML specifies. */
    return sand_map_set(&b->anchors, anchor, n, NULL);
}

static int oom(struct builder *b)
{
    sand__diag_add(b->diags, 1, 1, "out of memory while parsing");
    return SAND_ENOMEM;
}

static int on_scalar(struct builder *b, yaml_event_t *ev)
{
    sand__ynode *n = node_new(SAND__Y_SCALAR, &ev->start_mark);
    if (!n)
        return oom(b);
    const char *val = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    n->text = sand_strndup(val, len);
    n->len = len;
    if (!n->text) {
        free(n);
        return oom(b);
    }
    bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (tag) {
        if (!resolve_tagged(tag, val, len, &n->stype)) {
            sand__diag_add(b->diags, n->line, n->col, "unsupported tag '%s' on value '%.40s'", tag,
                           n->text);
            sand__ynode_free(n);
            return SAND_EINVAL;
        }
    } else {
        n->stype = plain ? resolve_plain(val, len) : SAND__YS_STR;
    }
    if (attach(b, n) < 0) {
        sand__ynode_free(n);
        return oom(b);
    }
    return register_anchor(b, (const char *)ev->data.scalar.anchor, n) < 0 ? oom(b) : 0;
}

static int on_start(struct builder *b, yaml_event_t *ev, sand__ykind kind)
{
    const char *tag = (const char *)(kind == SAND__Y_MAP ? ev->data.mapping_start.tag
                                                         : ev->data.sequence_start.tag);
    const char *anchor = (const char *)(kind == SAND__Y_MAP ? ev->data.mapping_start.anchor
                                                            : ev->data.sequence_start.anchor);
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    if (b->depth + 1 > (size_t)b->max_depth) {
        sand__diag_add(b->diags, line, col, "nesting deeper than %d levels", b->max_depth);
        return SAND_EINVAL;
    }
    const char *want = kind == SAND__Y_MAP ? YAML_MAP_TAG : YAML_SEQ_TAG;
    if (tag && strcmp(tag, "!") != 0 && strcmp(tag, want) != 0) {
        sand__diag_add(b->diags, line, col, "unsupported tag '%s' on a %s", tag,
                       kind == SAND__Y_MAP ? "mapping" : "sequence");
        return SAND_EINVAL;
    }
    sand__ynode *n = node_new(kind, &ev->start_mark);
    char *a = anchor ? sand_strdup(anchor) : NULL;
    if (!n || (anchor && !a)) {
        free(n);
        free(a);
        return oom(b);
    }
    b->stack[b->depth].node = n;
    b->stack[b->depth].anchor = a;
    b->depth++;
    return 0;
}

static int on_end(struct builder *b)
{
    /* libyaml guarantees balanced start/end events. */
    struct frame f = b->stack[--b->depth];
    if (f.node->kind == SAND__Y_MAP && f.node->n % 2 != 0) {
        /* Cannot happen with a conforming parser; refuse rather than trust it. */
        sand__diag_add(b->diags, f.node->line, f.node->col, "mapping without a value");
        sand__ynode_free(f.node);
        free(f.anchor);
        return SAND_EINVAL;
    }
    int rc = attach(b, f.node);
    if (rc < 0) {
        sand__ynode_free(f.node);
        free(f.anchor);
        return oom(b);
    }
    rc = register_anchor(b, f.anchor, f.node);
    free(f.anchor);
    return rc < 0 ? oom(b) : 0;
}

static int on_alias(struct builder *b, yaml_event_t *ev)
{
    const char *anchor = (const char *)ev->data.alias.anchor;
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    sand__ynode *target = sand_map_get(&b->anchors, anchor);
    if (!target) {
        sand__diag_add(b->diags, line, col, "unknown anchor '%.64s'", anchor);
        return SAND_EINVAL;
    }
    uint64_t cost = 1 + target->aliases;
    b->aliases += cost;
    if (b->aliases > ALIAS_COUNT_CAP)
        b->aliases = ALIAS_COUNT_CAP;
    if (b->aliases > b->max_aliases) {
        sand__diag_add(b->diags, line, col, "too many alias expansions (more than %llu)",
                       (unsigned long long)b->max_aliases);
        return SAND_EINVAL;
    }
    sand__ynode *n = node_new(SAND__Y_ALIAS, &ev->start_mark);
    if (!n)
        return oom(b);
    n->target = target;
    n->aliases = cost > ALIAS_COUNT_CAP ? ALIAS_COUNT_CAP : cost;
    if (attach(b, n) < 0) {
        free(n);
        return oom(b);
    }
    return 0;
}

static void parse_error(struct builder *b, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "unknown error";
    int line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
    if (p->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset rather than a mark. */
        sand__diag_add(b->diags, 1, 1, "malformed YAML: %s at byte %zu", problem,
                       p->problem_offset);
        return;
    }
    if (p->context)
        sand__diag_add(b->diags, line, col, "malformed YAML: %s (%s at line %d, column %d)",
                       problem, p->context, (int)p->context_mark.line + 1,
                       (int)p->context_mark.column + 1);
    else
        sand__diag_add(b->diags, line, col, "malformed YAML: %s", problem);
}

static int on_event(struct builder *b, yaml_event_t *ev, bool *done)
{
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        *done = true;
        return 0;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->docs > 1) {
            sand__diag_add(b->diags, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                           "more than one YAML document (app.yaml holds exactly one)");
            return SAND_EINVAL;
        }
        return 0;
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(b, ev, SAND__Y_SEQ);
    case YAML_MAPPING_START_EVENT:
        return on_start(b, ev, SAND__Y_MAP);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return on_end(b);
    case YAML_ALIAS_EVENT:
        return on_alias(b, ev);
    default:
        return 0;
    }
}

int sand__yaml_parse(const char *text, size_t len, int max_depth, int max_aliases,
                     sand__ynode **root, sand_diags_t *diags)
{
    struct builder b = {
        .diags = diags,
        .max_depth = max_depth,
        .max_aliases = (uint64_t)max_aliases,
    };
    *root = NULL;
    sand_map_init(&b.anchors);
    b.stack = calloc((size_t)max_depth + 1, sizeof(*b.stack));
    yaml_parser_t parser;
    if (!b.stack || !yaml_parser_initialize(&parser)) {
        free(b.stack);
        sand__diag_add(diags, 1, 1, "out of memory while parsing");
        return SAND_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            parse_error(&b, &parser);
            rc = SAND_EINVAL;
            break;
        }
        rc = on_event(&b, &ev, &done);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    sand_map_release(&b.anchors, NULL);
    while (b.depth > 0) {
        b.depth--;
        sand__ynode_free(b.stack[b.depth].node);
        free(b.stack[b.depth].anchor);
    }
    free(b.stack);
    if (rc < 0) {
        sand__ynode_free(b.root);
        return rc == SAND_ENOMEM ? rc : SAND_EINVAL;
    }
    *root = b.root;
    return 0;
}
