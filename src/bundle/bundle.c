/*
 * Helpers shared by pack and unpack: limits, symlink containment checks (textual and by walking
 * the real tree) and a recursive remove that never follows a symlink. The containment walk is
 * what makes chains like "a -> d/x/../.." with "d/x -> ." safe: the text alone stays inside, but
 * the kernel would resolve it above the root, and so does this walk.
 */
#include "sand/bundle.h"

#include "bundle_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LINK_HOPS 40 /* the kernel's own limit (MAXSYMLINKS) */

void sand_bundle_limits_default(sand_bundle_limits_t *limits)
{
    limits->max_upload = SAND_BUNDLE_MAX_UPLOAD;
    limits->max_unpacked = SAND_BUNDLE_MAX_UNPACKED;
    limits->max_file = SAND_BUNDLE_MAX_UNPACKED;
    limits->max_files = SAND_BUNDLE_MAX_FILES;
}

void sand__bundle_limits(const sand_bundle_limits_t *limits, sand_bundle_limits_t *out)
{
    sand_bundle_limits_default(out);
    if (!limits)
        return;
    if (limits->max_upload > 0)
        out->max_upload = limits->max_upload;
    if (limits->max_unpacked > 0)
        out->max_unpacked = limits->max_unpacked;
    out->max_file = limits->max_file > 0 ? limits->max_file : out->max_unpacked;
    if (limits->max_files > 0)
        out->max_files = limits->max_files;
}

const char *sand__bundle_target_lexical(const char *link_path, const char *target)
{
    if (!target || !*target)
        return "symlink with an empty target";
    if (target[0] == '/')
        return "symlink to an absolute path";
    long depth = 0;
    for (const char *p = link_path; *p; p++)
        if (*p == '/')
            depth++;
    const char *p = target;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0)
                return "symlink that leaves the bundle";
        } else if (n > 0 && !(n == 1 && p[0] == '.')) {
            depth++;
        }
        p += n;
        while (*p == '/')
            p++;
    }
    return NULL;
}

/* Drops the last component of path in place ("a/b" -> "a", "a" -> ""). */
static void path_pop(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash)
        *slash = '\0';
    else
        path[0] = '\0';
}

const char *sand__bundle_resolve_inside(int rootfd, const char *link_path)
{
    /* cur holds the resolved prefix: only real directories of the tree, so fstatat on it never
     * follows a symlink except possibly the last component, which is asked with NOFOLLOW. */
    char cur[PATH_MAX];
    char rest[2 * PATH_MAX + 2];
    char target[PATH_MAX];
    const char *reason = NULL;

    if (sand_strlcpy(cur, link_path, sizeof(cur)) >= sizeof(cur))
        return "path too long";
    ssize_t n = readlinkat(rootfd, cur, target, sizeof(target) - 1);
    if (n < 0)
        return "unreadable symlink";
    target[n] = '\0';
    if ((reason = sand__bundle_target_lexical(cur, target)) != NULL)
        return reason;
    path_pop(cur);
    sand_strlcpy(rest, target, sizeof(rest));

    int hops = 0;
    size_t off = 0;
    while (rest[off]) {
        char *comp = rest + off;
        char *slash = strchr(comp, '/');
        size_t clen = slash ? (size_t)(slash - comp) : strlen(comp);
        off += clen;
        while (rest[off] == '/')
            off++;
        if (clen == 0 || (clen == 1 && comp[0] == '.'))
            continue;
        if (clen == 2 && comp[0] == '.' && comp[1] == '.') {
            if (!cur[0])
                return "symlink that resolves outside the bundle";
            path_pop(cur);
            continue;
        }
        size_t len = strlen(cur);
        if (len + 1 + clen + 1 > sizeof(cur))
            return "symlink that resolves to a path longer than PATH_MAX";
        if (len)
            cur[len++] = '/';
        memcpy(cur + len, comp, clen);
        cur[len + clen] = '\0';

        struct stat st;
        if (fstatat(rootfd, cur, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return NULL; /* missing: the kernel stops here too */
        if (S_ISLNK(st.st_mode)) {
            if (++hops > MAX_LINK_HOPS)
                return "symlink chain longer than 40 links";
            n = readlinkat(rootfd, cur, target, sizeof(target) - 1);
            if (n < 0)
                return "unreadable symlink";
            target[n] = '\0';
            if (target[0] == '/')
                return "symlink through an absolute symlink";
            path_pop(cur);
            /* rest becomes target + "/" + what was left of rest */
            size_t left = strlen(rest + off);
            if ((size_t)n + 1 + left + 1 > sizeof(rest))
                return "symlink that resolves to a path longer than PATH_MAX";
            memmove(rest + n + 1, rest + off, left + 1);
            memcpy(rest, target, (size_t)n);
            rest[n] = '/';
            off = 0;
        } else if (!S_ISDIR(st.st_mode)) {
            return NULL; /* a file in the middle: the kernel stops with ENOTDIR */
        }
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Removes everything inside the directory at path (path is a buffer of PATH_MAX * 2 bytes whose
 * contents are restored on return). */
static int remove_contents(int dirfd, char *path, size_t cap)
{
    sand_vec_t names;
    int rc = sand__bundle_list_dir(dirfd, path, &names);
    if (rc < 0)
        return rc;

    size_t base = strlen(path);
    for (size_t i = 0; i < names.len; i++) {
        const char *name = names.items[i];
        size_t nlen = strlen(name);
        if (base + 1 + nlen + 1 > cap) {
            rc = rc ? rc : -ENAMETOOLONG;
            continue;
        }
        if (base)
            path[base] = '/';
        memcpy(path + base + (base ? 1 : 0), name, nlen + 1);
        struct stat st;
        int r = 0;
        if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            r = -errno;
        } else if (S_ISDIR(st.st_mode)) {
            r = remove_contents(dirfd, path, cap);
            if (unlinkat(dirfd, path, AT_REMOVEDIR) < 0 && !r)
                r = -errno;
        } else if (unlinkat(dirfd, path, 0) < 0) {
            r = -errno;
        }
        if (r && !rc)
            rc = r;
        path[base] = '\0';
    }
    sand_vec_release(&names, free);
    return rc;
}

int sand__bundle_remove_tree(int dirfd, const char *rel)
{
    size_t cap = 2 * PATH_MAX;
    char *path = malloc(cap);
    if (!path)
        return -ENOMEM;
    if (sand_strlcpy(path, rel, cap) >= cap) {
        free(path);
        return -ENAMETOOLONG;
    }
    struct stat st;
    int rc = 0;
    if (path[0] && fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, path, 0) < 0)
            rc = -errno;
    } else {
        rc = remove_contents(dirfd, path, cap);
        if (path[0] && unlinkat(dirfd, path, AT_REMOVEDIR) < 0 && !rc)
            rc = -errno;
    }
    free(path);
    return rc;
}

int sand__bundle_list_dir(int dirfd, const char *path, sand_vec_t *names)
{
    sand_vec_init(names);
    int fd = openat(dirfd, path[0] ? path : ".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *s = sand_strdup(de->d_name);
        if (!s || sand_vec_push(names, s) < 0) {
            free(s);
            closedir(d);
            sand_vec_release(names, free);
            return -ENOMEM;
        }
    }
    closedir(d);
    sand__bundle_sort_names(names);
    return 0;
}

void sand__bundle_sort_names(sand_vec_t *names)
{
    if (names->len > 1)
        qsort(names->items, names->len, sizeof(void *), cmp_str);
}
