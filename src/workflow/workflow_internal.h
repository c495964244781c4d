/*
 * Private declarations of the workflow module: a small YAML node tree built from libyaml's event
 * API (so every node keeps its line and column, aliases are shared instead of copied, and the
 * input is bounded in size, nesting and alias expansions before anything else looks at it), and
 * the diagnostic helpers shared by the tree builder and the validator.
 */
#ifndef SAND_WORKFLOW_INTERNAL_H
#define SAND_WORKFLOW_INTERNAL_H

#include "sand/workflow.h"

/* Past this many diagnostics the loader stops adding more and records one final note, so that a
 * hostile 1 MiB file cannot turn into megabytes of messages. */
#define SAND__DIAGS_MAX 200

typedef enum sand__ykind {
    SAND__Y_SCALAR,
    SAND__Y_SEQ,
    SAND__Y_MAP,
    SAND__Y_ALIAS,
} sand__ykind;

/* Type of a scalar after YAML 1.2 core-schema resolution (quoted scalars are always strings). */
typedef enum sand__ystype {
    SAND__YS_STR,
    SAND__YS_NULL,
    SAND__YS_BOOL,
    SAND__YS_INT,
    SAND__YS_FLOAT,
} sand__ystype;

typedef struct sand__ynode sand__ynode;

struct sand__ynode {
    sand__ykind kind;
    sand__ystype stype; /* scalars only */
    int line, col;      /* 1-based position of the node (of the alias use for an alias) */
    char *text;         /* scalars: NUL-terminated copy; len excludes the NUL */
    size_t len;
    sand__ynode **items; /* SEQ: the items; MAP: key, value, key, value, ... */
    size_t n, cap;       /* number of pointers in items */
    sand__ynode *target; /* ALIAS: the anchored node (borrowed, owned by the tree) */
    uint64_t aliases;    /* alias uses inside this subtree, each counted with its own expansion */
};

/* Parses text (len bytes, already checked against the size limit by the caller) into a tree.
 * Returns 0 and *root (NULL for an empty document), or SAND_EINVAL after adding one diagnostic
 * (malformed YAML, several documents, unknown anchor, nesting or alias limit). The caller frees
 * the tree with sand__ynode_free. Runs on the caller's thread; no global state. */
int sand__yaml_parse(const char *text, size_t len, int max_depth, int max_aliases,
                     sand__ynode **root, sand_diags_t *diags);

/* Frees a tree built by sand__yaml_parse (NULL is a no-op). */
void sand__ynode_free(sand__ynode *n);

/* Follows aliases to the node that holds the content. */
const sand__ynode *sand__ynode_deref(const sand__ynode *n);

/* Appends one diagnostic (formatted, truncated to the message size); after SAND__DIAGS_MAX
 * entries adds a single "too many errors" note and drops the rest. Returns SAND_ENOMEM when the
 * array cannot grow, else 0. */
int sand__diag_add(sand_diags_t *d, int line, int col, const char *fmt, ...) SAND_PRINTF(4, 5);

#endif
