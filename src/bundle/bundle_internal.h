/*
 * Private helpers shared by the bundle packer and unpacker: limit defaults, the lexical check of
 * a symlink target, a resolver that follows a symlink inside a directory the way the kernel would
 * and reports whether it ever leaves that directory, and a recursive remove that never follows
 * symlinks.
 */
#ifndef SAND_BUNDLE_INTERNAL_H
#define SAND_BUNDLE_INTERNAL_H

#include "sand/bundle.h"

#include <stdbool.h>

/* Copies limits (or the defaults when NULL) into out, replacing fields <= 0 by their default. */
void sand__bundle_limits(const sand_bundle_limits_t *limits, sand_bundle_limits_t *out);

/* Returns NULL when the symlink at link_path (normalised, relative to the bundle root) with the
 * given target stays inside the bundle when read as text (no absolute target, no ".." climbing
 * above the root), else a static reason. */
const char *sand__bundle_target_lexical(const char *link_path, const char *target);

/* Resolves the symlink link_path (normalised, relative to rootfd, its parent directories real
 * directories) component by component, following every symlink met on the way, and returns NULL
 * when the resolution never steps above rootfd (resolution that stops at a missing component or
 * a non-directory counts as inside: the kernel would stop there too), else a static reason. */
const char *sand__bundle_resolve_inside(int rootfd, const char *link_path);

/* Removes rel (relative to dirfd; "" for dirfd itself, whose contents only are removed) and
 * everything below it without following symlinks. Best effort: returns 0 or -errno of the first
 * failure. Holds one extra file descriptor at a time whatever the depth. */
int sand__bundle_remove_tree(int dirfd, const char *rel);

/* Lists the entries of directory path (relative to dirfd, "" for dirfd itself; not following a
 * symlink), without "." and "..", sorted; names are malloc'd (sand_vec_release(names, free)).
 * Returns 0 or -errno (names then empty). */
int sand__bundle_list_dir(int dirfd, const char *path, sand_vec_t *names);

/* Sorts a vector of NUL-terminated names byte-wise (strcmp), for a deterministic order. */
void sand__bundle_sort_names(sand_vec_t *names);

#endif
