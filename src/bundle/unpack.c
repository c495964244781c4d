/*
 * Safe extraction of an uploaded bundle. The archive is read with archive_read_* only; every
 * entry is checked before anything is written (path, type, declared size, duplicates) and files
 * are created by hand with openat(O_CREAT|O_EXCL|O_NOFOLLOW) relative to directory fds opened
 * with O_NOFOLLOW, so no entry can write through a symlink or outside the tree, and sizes are
 * counted on the bytes actually written. Extraction goes to "<dest>.tmp-<random>"; symlinks are
 * resolved against the finished tree, app.yaml is required, and only then is the directory
 * renamed to dest (RENAME_NOREPLACE). Any failure removes the temporary directory.
 */
#define _GNU_SOURCE /* renameat2 */
#include "sand/bundle.h"

#include "bundle_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (64 * 1024)

typedef struct unpacker {
    int rootfd;
    sand_bundle_limits_t lim;
    sand_map_t seen;  /* normalised paths of the entries so far */
    sand_vec_t links; /* normalised paths of the symlinks, checked once the tree is complete */
    int64_t files;
    int64_t total;
    char parent[PATH_MAX]; /* the directory parentfd is open on ("" = root) */
    int parentfd;          /* -1 when no directory is cached */
    char *buf;
    sand_err *err;
} unpacker;

static int reject(unpacker *u, int code, const char *path, const char *fmt, ...) SAND_PRINTF(4, 5);

/* Records "bundle entry 'PATH': REASON". */
static int reject(unpacker *u, int code, const char *path, const char *fmt, ...)
{
    char reason[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    return sand_err_set(u->err, code, "bundle entry '%.*s': %s", 160, path, reason);
}

/* Normalises the entry path into norm: drops empty and "." components, rejects absolute paths,
 * ".." components, over-long paths and names. Returns 0 (norm may be "" for the root itself). */
static int normalise(unpacker *u, const char *raw, char *norm, size_t cap)
{
    size_t rawlen = strlen(raw);
    if (rawlen >= PATH_MAX)
        return reject(u, SAND_EINVAL, raw, "path is %zu bytes (max %d)", rawlen, PATH_MAX - 1);
    if (raw[0] == '/')
        return reject(u, SAND_EINVAL, raw, "absolute path");
    size_t len = 0;
    const char *p = raw;
    norm[0] = '\0';
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return reject(u, SAND_EINVAL, raw, "'..' component");
        if (n > NAME_MAX)
            return reject(u, SAND_EINVAL, raw, "name longer than %d bytes", NAME_MAX);
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (len + (len ? 1 : 0) + n + 1 > cap)
                return reject(u, SAND_EINVAL, raw, "path too long");
            if (len)
                norm[len++] = '/';
            memcpy(norm + len, p, n);
            len += n;
            norm[len] = '\0';
        }
        p += n;
        while (*p == '/')
            p++;
    }
    return 0;
}

static void close_parent(unpacker *u)
{
    if (u->parentfd >= 0 && u->parentfd != u->rootfd)
        close(u->parentfd);
    u->parentfd = -1;
    u->parent[0] = '\0';
}

/* Opens (creating as needed) the parent directory of norm without following any symlink and
 * returns its fd (cached: do not close) and the last component in *name. */
static int open_parent(unpacker *u, const char *norm, const char **name)
{
    const char *slash = strrchr(norm, '/');
    size_t plen = slash ? (size_t)(slash - norm) : 0;
    *name = slash ? slash + 1 : norm;
    if (u->parentfd >= 0 && strlen(u->parent) == plen && !memcmp(u->parent, norm, plen))
        return u->parentfd;
    close_parent(u);

    int cur = u->rootfd;
    const char *p = norm;
    while (p < norm + plen) {
        const char *end = memchr(p, '/', (size_t)(norm + plen - p));
        size_t n = end ? (size_t)(end - p) : (size_t)(norm + plen - p);
        char comp[NAME_MAX + 1];
        memcpy(comp, p, n);
        comp[n] = '\0';
        int fd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
            if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) {
                int rc = sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': mkdir", norm);
                if (cur != u->rootfd)
                    close(cur);
                return rc;
            }
            fd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0)
                (void)fchmod(fd, 0755);
        }
        if (fd < 0) {
            int e = errno;
            if (cur != u->rootfd)
                close(cur);
            if (e == ELOOP || e == ENOTDIR)
                return reject(u, SAND_EINVAL, norm,
                              "'%.*s' is a symlink or a file, not a directory", (int)(p + n - norm),
                              norm);
            errno = e;
            return sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': open parent", norm);
        }
        if (cur != u->rootfd)
            close(cur);
        cur = fd;
        p += n;
        if (*p == '/')
            p++;
    }
    memcpy(u->parent, norm, plen);
    u->parent[plen] = '\0';
    u->parentfd = cur;
    return cur;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int extract_file(unpacker *u, struct archive *ar, struct archive_entry *e, const char *norm)
{
    if (archive_entry_size_is_set(e)) {
        int64_t declared = archive_entry_size(e);
        if (declared > u->lim.max_file)
            return reject(u, SAND_ETOOBIG, norm, "declares %lld bytes (max %lld per file)",
                          (long long)declared, (long long)u->lim.max_file);
        if (declared > u->lim.max_unpacked - u->total)
            return reject(u, SAND_ETOOBIG, norm,
                          "unpacked size would exceed the limit of %lld bytes",
                          (long long)u->lim.max_unpacked);
    }
    const char *name;
    int dfd = open_parent(u, norm, &name);
    if (dfd < 0)
        return dfd;
    mode_t mode = 0644 | (archive_entry_perm(e) & 0111);
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return reject(u, SAND_EINVAL, norm, "conflicts with an earlier entry");
        return sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': create", norm);
    }
    int rc = 0;
    int64_t written = 0;
    for (;;) {
        la_ssize_t n = archive_read_data(ar, u->buf, COPY_CHUNK);
        if (n == 0)
            break;
        if (n < 0) {
            rc = reject(u, SAND_EINVAL, norm, "unreadable data: %s",
                        archive_error_string(ar) ? archive_error_string(ar) : "error");
            break;
        }
        if (n > u->lim.max_file - written) {
            rc = reject(u, SAND_ETOOBIG, norm, "over %lld bytes (max per file)",
                        (long long)u->lim.max_file);
            break;
        }
        if (n > u->lim.max_unpacked - u->total) {
            rc = reject(u, SAND_ETOOBIG, norm, "unpacked size exceeds the limit of %lld bytes",
                        (long long)u->lim.max_unpacked);
            break;
        }
        if (write_all(fd, u->buf, (size_t)n) < 0) {
            rc = sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': write", norm);
            break;
        }
        written += n;
        u->total += n;
    }
    if (rc == 0 && fchmod(fd, mode) < 0)
        rc = sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': chmod", norm);
    if (close(fd) < 0 && rc == 0)
        rc = sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': close", norm);
    return rc;
}

static int extract_dir(unpacker *u, const char *norm)
{
    const char *name;
    int dfd = open_parent(u, norm, &name);
    if (dfd < 0)
        return dfd;
    if (mkdirat(dfd, name, 0755) < 0) {
        struct stat st;
        if (errno != EEXIST)
            return sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': mkdir", norm);
        /* created earlier as the parent of an entry: fine if it really is a directory */
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            return reject(u, SAND_EINVAL, norm, "conflicts with an earlier entry");
    }
    if (fchmodat(dfd, name, 0755, AT_SYMLINK_NOFOLLOW) < 0 && errno != EOPNOTSUPP &&
        fchmodat(dfd, name, 0755, 0) < 0)
        return sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': chmod", norm);
    return 0;
}

static int extract_symlink(unpacker *u, struct archive_entry *e, const char *norm)
{
    const char *target = archive_entry_symlink(e);
    const char *why = sand__bundle_target_lexical(norm, target);
    if (why)
        return reject(u, SAND_EINVAL, norm, "%s ('%.*s')", why, 100, target ? target : "");
    if (strlen(target) >= PATH_MAX)
        return reject(u, SAND_EINVAL, norm, "symlink target longer than %d bytes", PATH_MAX - 1);
    const char *name;
    int dfd = open_parent(u, norm, &name);
    if (dfd < 0)
        return dfd;
    if (symlinkat(target, dfd, name) < 0) {
        if (errno == EEXIST)
            return reject(u, SAND_EINVAL, norm, "conflicts with an earlier entry");
        return sand_err_errno(u->err, SAND_EIO, "bundle entry '%.160s': symlink", norm);
    }
    char *copy = sand_strdup(norm);
    if (!copy || sand_vec_push(&u->links, copy) < 0) {
        free(copy);
        return sand_err_set(u->err, SAND_ENOMEM, "bundle entry '%.160s': out of memory", norm);
    }
    return 0;
}

static const char *type_name(mode_t type)
{
    switch (type) {
    case AE_IFCHR:
    case AE_IFBLK:
        return "device file";
    case AE_IFIFO:
        return "fifo";
    case AE_IFSOCK:
        return "socket";
    default:
        return "entry of an unsupported type";
    }
}

static int extract_entry(unpacker *u, struct archive *ar, struct archive_entry *e)
{
    const char *raw = archive_entry_pathname(e);
    if (!raw)
        return sand_err_set(u->err, SAND_EINVAL, "bundle entry #%lld: unreadable path name",
                            (long long)u->files + 1);
    char norm[PATH_MAX];
    int rc = normalise(u, raw, norm, sizeof(norm));
    if (rc < 0)
        return rc;
    mode_t type = archive_entry_filetype(e);

    if (archive_entry_hardlink(e))
        return reject(u, SAND_EINVAL, raw, "hard link (to '%.*s')", 100, archive_entry_hardlink(e));
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
        return reject(u, SAND_EINVAL, raw, "%s", type_name(type));
    if (!norm[0]) {
        if (type == AE_IFDIR)
            return 0; /* "./": the bundle root itself */
        return reject(u, SAND_EINVAL, raw, "names the bundle root");
    }
    if (++u->files > u->lim.max_files)
        return reject(u, SAND_ETOOBIG, raw, "more than %lld files in the bundle",
                      (long long)u->lim.max_files);
    if (sand_map_get(&u->seen, norm))
        return reject(u, SAND_EINVAL, raw, "duplicate entry");
    if (sand_map_set(&u->seen, norm, (void *)1, NULL) < 0)
        return sand_err_set(u->err, SAND_ENOMEM, "bundle entry '%.160s': out of memory", raw);

    switch (type) {
    case AE_IFREG:
        return extract_file(u, ar, e, norm);
    case AE_IFDIR:
        return extract_dir(u, norm);
    default:
        return extract_symlink(u, e, norm);
    }
}

/* Checks the finished tree: every symlink resolves inside it, and app.yaml is a file. */
static int check_tree(unpacker *u)
{
    for (size_t i = 0; i < u->links.len; i++) {
        const char *why = sand__bundle_resolve_inside(u->rootfd, u->links.items[i]);
        if (why)
            return reject(u, SAND_EINVAL, u->links.items[i], "%s", why);
    }
    struct stat st;
    if (fstatat(u->rootfd, "app.yaml", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
        return sand_err_set(u->err, SAND_EINVAL,
                            "bundle has no app.yaml file at its root ('app.yaml' missing)");
    return 0;
}

static int read_all(unpacker *u, const void *tgz, size_t len)
{
    struct archive *ar = archive_read_new();
    if (!ar)
        return sand_err_set(u->err, SAND_ENOMEM, "bundle: out of memory");
    int rc = 0;
    if (archive_read_support_filter_gzip(ar) != ARCHIVE_OK ||
        archive_read_support_format_tar(ar) != ARCHIVE_OK ||
        archive_read_open_memory(ar, tgz, len) != ARCHIVE_OK) {
        rc = sand_err_set(u->err, SAND_EINVAL, "bundle is not a tar.gz archive: %s",
                          archive_error_string(ar) ? archive_error_string(ar) : "unknown format");
        goto done;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(ar, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            rc = sand_err_set(u->err, SAND_EINVAL,
                              "bundle is not a valid tar.gz after %lld "
                              "entries: %s",
                              (long long)u->files,
                              archive_error_string(ar) ? archive_error_string(ar) : "bad header");
            goto done;
        }
        if ((rc = extract_entry(u, ar, e)) < 0)
            goto done;
    }
done:
    archive_read_free(ar);
    return rc;
}

int sand_bundle_unpack(const void *tgz, size_t len, const char *dest_dir,
                       const sand_bundle_limits_t *limits, sand_err *err)
{
    unpacker u = {.rootfd = -1, .parentfd = -1, .err = err};
    char tmp[PATH_MAX];
    bool made_tmp = false;
    int rc;
    struct stat st;

    sand__bundle_limits(limits, &u.lim);
    sand_map_init(&u.seen);
    sand_vec_init(&u.links);
    if ((int64_t)len > u.lim.max_upload)
        return sand_err_set(err, SAND_ETOOBIG, "bundle is %zu bytes (max %lld uploaded)", len,
                            (long long)u.lim.max_upload);
    if (lstat(dest_dir, &st) == 0)
        return sand_err_set(err, SAND_EEXIST, "unpack: '%s' already exists", dest_dir);
    if (errno != ENOENT)
        return sand_err_errno(err, SAND_EIO, "unpack: '%s'", dest_dir);
    /* mkdtemp's template: ".tmp-" and six 'X' that it replaces */
    int tlen = snprintf(tmp, sizeof(tmp), "%s.tmp-", dest_dir);
    if (tlen < 0 || (size_t)tlen + 7 > sizeof(tmp))
        return sand_err_set(err, SAND_EINVAL, "unpack: '%s': path too long", dest_dir);
    memset(tmp + tlen, 'X', 6);
    tmp[tlen + 6] = '\0';

    u.buf = malloc(COPY_CHUNK);
    if (!u.buf) {
        rc = sand_err_set(err, SAND_ENOMEM, "unpack: out of memory");
        goto error;
    }
    if (!mkdtemp(tmp)) {
        rc = sand_err_errno(err, SAND_EIO, "unpack: create a directory next to '%s'", dest_dir);
        goto error;
    }
    made_tmp = true;
    u.rootfd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (u.rootfd < 0) {
        rc = sand_err_errno(err, SAND_EIO, "unpack: open '%s'", tmp);
        goto error;
    }
    if ((rc = read_all(&u, tgz, len)) < 0)
        goto error;
    close_parent(&u);
    if ((rc = check_tree(&u)) < 0)
        goto error;
    if (fchmod(u.rootfd, 0755) < 0) {
        rc = sand_err_errno(err, SAND_EIO, "unpack: chmod '%s'", tmp);
        goto error;
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest_dir, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY)
            rc = sand_err_set(err, SAND_EEXIST, "unpack: '%s' already exists", dest_dir);
        else
            rc = sand_err_errno(err, SAND_EIO, "unpack: rename to '%s'", dest_dir);
        goto error;
    }
    made_tmp = false;
    rc = 0;
error:
    close_parent(&u);
    if (made_tmp) {
        if (u.rootfd >= 0)
            (void)sand__bundle_remove_tree(u.rootfd, "");
        (void)rmdir(tmp);
    }
    if (u.rootfd >= 0)
        close(u.rootfd);
    sand_map_release(&u.seen, NULL);
    sand_vec_release(&u.links, free);
    free(u.buf);
    return rc;
}
