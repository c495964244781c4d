/*
 * Packs an application directory into a deterministic tar.gz held in memory: entries in sorted
 * order, relative paths, uid/gid 0, no gzip timestamp, so packing the same tree twice gives the
 * same bytes. The walk never follows a symlink to decide what to store; a symlink is kept when
 * it resolves inside the directory and replaced by a copy of its target file when it does not.
 */
#include "sand/bundle.h"

#include "bundle_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (64 * 1024)

typedef struct packer {
    struct archive *ar;
    int rootfd;
    sand_bundle_limits_t lim;
    int64_t files;
    int64_t total;
    sand_bytes_t *out;
    size_t out_start;
    bool out_over; /* the compressed output went over max_upload */
    char *buf;     /* COPY_CHUNK bytes */
    sand_err *err;
} packer;

static la_ssize_t on_write(struct archive *a, void *ud, const void *p, size_t n)
{
    packer *pk = ud;
    if ((int64_t)(pk->out->len - pk->out_start + n) > pk->lim.max_upload) {
        pk->out_over = true;
        archive_set_error(a, E2BIG, "bundle over the upload limit");
        return -1;
    }
    if (sand_bytes_append(pk->out, p, n) < 0) {
        pk->out_over = true;
        archive_set_error(a, E2BIG, "bundle over the output buffer limit");
        return -1;
    }
    return (la_ssize_t)n;
}

static int archive_fail(packer *pk, const char *path)
{
    if (pk->out_over)
        return sand_err_set(pk->err, SAND_ETOOBIG,
                            "bundle is over the upload limit of %lld bytes when compressed",
                            (long long)pk->lim.max_upload);
    return sand_err_set(pk->err, SAND_EIO, "'%s': archive: %s", path,
                        archive_error_string(pk->ar) ? archive_error_string(pk->ar) : "error");
}

static int count_entry(packer *pk, const char *path)
{
    if (++pk->files > pk->lim.max_files)
        return sand_err_set(pk->err, SAND_ETOOBIG, "'%s': more than %lld files in the bundle", path,
                            (long long)pk->lim.max_files);
    return 0;
}

static struct archive_entry *new_entry(const char *path, const struct stat *st, mode_t type)
{
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return NULL;
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, st->st_mode & 0777);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, st->st_mtim.tv_sec, 0);
    return e;
}

/* Stores the open regular file fd (described by st) under path. */
static int add_file(packer *pk, const char *path, int fd, const struct stat *st)
{
    int rc;
    if ((rc = count_entry(pk, path)) < 0)
        return rc;
    if (st->st_size > pk->lim.max_file)
        return sand_err_set(pk->err, SAND_ETOOBIG, "'%s' is %lld bytes (max %lld per file)", path,
                            (long long)st->st_size, (long long)pk->lim.max_file);
    if (st->st_size > pk->lim.max_unpacked - pk->total)
        return sand_err_set(pk->err, SAND_ETOOBIG, "'%s': the files add up to more than %lld bytes",
                            path, (long long)pk->lim.max_unpacked);
    pk->total += st->st_size;

    struct archive_entry *e = new_entry(path, st, AE_IFREG);
    if (!e)
        return sand_err_set(pk->err, SAND_ENOMEM, "'%s': out of memory", path);
    archive_entry_set_size(e, st->st_size);
    if (archive_write_header(pk->ar, e) != ARCHIVE_OK) {
        archive_entry_free(e);
        return archive_fail(pk, path);
    }
    archive_entry_free(e);

    int64_t left = st->st_size;
    while (left > 0) {
        size_t want = left < COPY_CHUNK ? (size_t)left : COPY_CHUNK;
        ssize_t n = read(fd, pk->buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sand_err_errno(pk->err, SAND_EIO, "read '%s'", path);
        if (n == 0)
            return sand_err_set(pk->err, SAND_EIO, "'%s' shrank while it was being packed", path);
        if (archive_write_data(pk->ar, pk->buf, (size_t)n) != n)
            return archive_fail(pk, path);
        left -= n;
    }
    return 0;
}

static int add_symlink(packer *pk, const char *path, const struct stat *st)
{
    char target[PATH_MAX];
    ssize_t n = readlinkat(pk->rootfd, path, target, sizeof(target) - 1);
    if (n < 0)
        return sand_err_errno(pk->err, SAND_EIO, "readlink '%s'", path);
    target[n] = '\0';

    if (!sand__bundle_resolve_inside(pk->rootfd, path)) {
        int rc;
        if ((rc = count_entry(pk, path)) < 0)
            return rc;
        struct archive_entry *e = new_entry(path, st, AE_IFLNK);
        if (!e)
            return sand_err_set(pk->err, SAND_ENOMEM, "'%s': out of memory", path);
        archive_entry_set_perm(e, 0777);
        archive_entry_set_symlink(e, target);
        rc = archive_write_header(pk->ar, e) == ARCHIVE_OK ? 0 : archive_fail(pk, path);
        archive_entry_free(e);
        return rc;
    }

    /* Leaves the directory: store what it points to when that is a regular file. */
    int fd = openat(pk->rootfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return sand_err_errno(pk->err, SAND_EINVAL,
                              "symlink '%s' -> '%s' points outside the directory and cannot be "
                              "followed",
                              path, target);
    struct stat tst;
    int rc;
    if (fstat(fd, &tst) < 0) {
        rc = sand_err_errno(pk->err, SAND_EIO, "stat '%s'", path);
    } else if (!S_ISREG(tst.st_mode)) {
        rc = sand_err_set(pk->err, SAND_EINVAL,
                          "symlink '%s' -> '%s' points outside the directory to something that "
                          "is not a regular file",
                          path, target);
    } else {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        rc = add_file(pk, path, fd, &tst);
    }
    close(fd);
    return rc;
}

/* Adds everything below the directory path ("" for the root); path is a buffer of cap bytes
 * whose contents are restored on return. */
static int add_dir_contents(packer *pk, char *path, size_t cap)
{
    sand_vec_t names;
    int rc = sand__bundle_list_dir(pk->rootfd, path, &names);
    if (rc < 0) {
        errno = -rc;
        return sand_err_errno(pk->err, rc == -ENOMEM ? SAND_ENOMEM : SAND_EIO,
                              "read directory '%s'", path[0] ? path : ".");
    }

    size_t base = strlen(path);
    for (size_t i = 0; rc == 0 && i < names.len; i++) {
        const char *name = names.items[i];
        size_t nlen = strlen(name);
        if (base + 1 + nlen + 1 > cap || base + 1 + nlen >= PATH_MAX) {
            rc = sand_err_set(pk->err, SAND_EINVAL, "'%s/%s': path longer than %d bytes", path,
                              name, PATH_MAX);
            break;
        }
        if (base)
            path[base] = '/';
        memcpy(path + base + (base ? 1 : 0), name, nlen + 1);

        struct stat st;
        if (fstatat(pk->rootfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = sand_err_errno(pk->err, SAND_EIO, "stat '%s'", path);
        } else if (S_ISDIR(st.st_mode)) {
            if ((rc = count_entry(pk, path)) == 0) {
                struct archive_entry *e = new_entry(path, &st, AE_IFDIR);
                if (!e)
                    rc = sand_err_set(pk->err, SAND_ENOMEM, "'%s': out of memory", path);
                else if (archive_write_header(pk->ar, e) != ARCHIVE_OK)
                    rc = archive_fail(pk, path);
                archive_entry_free(e);
            }
            if (rc == 0)
                rc = add_dir_contents(pk, path, cap);
        } else if (S_ISREG(st.st_mode)) {
            int ffd = openat(pk->rootfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (ffd < 0) {
                rc = sand_err_errno(pk->err, SAND_EIO, "open '%s'", path);
            } else {
                struct stat fst;
                rc = fstat(ffd, &fst) < 0 ? sand_err_errno(pk->err, SAND_EIO, "stat '%s'", path)
                                          : add_file(pk, path, ffd, &fst);
                close(ffd);
            }
        } else if (S_ISLNK(st.st_mode)) {
            rc = add_symlink(pk, path, &st);
        } else {
            rc = sand_err_set(pk->err, SAND_EINVAL,
                              "'%s' is a %s: only files, directories and symlinks can be packed",
                              path,
                              S_ISFIFO(st.st_mode)   ? "fifo"
                              : S_ISSOCK(st.st_mode) ? "socket"
                                                     : "device file");
        }
        path[base] = '\0';
    }
    sand_vec_release(&names, free);
    return rc;
}

int sand_bundle_pack(const char *dir, sand_bytes_t *out, const sand_bundle_limits_t *limits,
                     sand_err *err)
{
    packer pk = {.rootfd = -1, .out = out, .out_start = out->len, .err = err};
    char *path = NULL;
    int rc;

    sand__bundle_limits(limits, &pk.lim);
    pk.rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pk.rootfd < 0)
        return sand_err_errno(err, SAND_EIO, "open directory '%s'", dir);
    pk.buf = malloc(COPY_CHUNK);
    path = malloc(2 * PATH_MAX);
    pk.ar = archive_write_new();
    if (!pk.buf || !path || !pk.ar) {
        rc = sand_err_set(err, SAND_ENOMEM, "pack '%s': out of memory", dir);
        goto error;
    }
    path[0] = '\0';
    if (archive_write_set_format_pax_restricted(pk.ar) != ARCHIVE_OK ||
        archive_write_add_filter_gzip(pk.ar) != ARCHIVE_OK ||
        archive_write_set_options(pk.ar, "gzip:!timestamp") != ARCHIVE_OK ||
        archive_write_open2(pk.ar, &pk, NULL, on_write, NULL, NULL) != ARCHIVE_OK) {
        rc = sand_err_set(err, SAND_EIO, "pack '%s': archive: %s", dir,
                          archive_error_string(pk.ar) ? archive_error_string(pk.ar) : "error");
        goto error;
    }
    if ((rc = add_dir_contents(&pk, path, 2 * PATH_MAX)) < 0) {
        sand_err_wrap(err, 0, "pack '%s'", dir);
        goto error;
    }
    if (archive_write_close(pk.ar) != ARCHIVE_OK) {
        rc = archive_fail(&pk, dir);
        sand_err_wrap(err, 0, "pack '%s'", dir);
        goto error;
    }
    rc = 0;
error:
    if (pk.ar)
        archive_write_free(pk.ar);
    free(pk.buf);
    free(path);
    close(pk.rootfd);
    return rc;
}
