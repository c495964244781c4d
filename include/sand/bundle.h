/*
 * Application bundles (SPEC section 3): `sandctl deploy` packs an app directory into a tar.gz and
 * `sandd` unpacks an uploaded one into its data dir. Unpacking treats the upload as hostile: every
 * entry is checked (path, type, link target, sizes counted as bytes are actually written) and
 * written by hand relative to a private directory fd with O_NOFOLLOW|O_EXCL, into a temporary
 * sibling of the destination that is renamed into place only when the whole bundle was accepted,
 * so a rejected bundle leaves nothing behind. Every rejection names the offending entry.
 * Nothing here keeps state between calls; all functions may run on any thread, concurrently,
 * as long as they are given different destinations.
 */
#ifndef SAND_BUNDLE_H
#define SAND_BUNDLE_H

#include "sand/common.h"

#define SAND_BUNDLE_MAX_UPLOAD   (64LL << 20)  /* compressed bytes (SPEC section 3) */
#define SAND_BUNDLE_MAX_UNPACKED (256LL << 20) /* bytes of file contents after unpacking */
#define SAND_BUNDLE_MAX_FILES    10000         /* entries: files, directories and symlinks */

/* Limits applied by pack and unpack; a field <= 0 means its default. */
typedef struct sand_bundle_limits {
    int64_t max_upload;   /* size of the tar.gz; default SAND_BUNDLE_MAX_UPLOAD */
    int64_t max_unpacked; /* sum of the file sizes; default SAND_BUNDLE_MAX_UNPACKED */
    int64_t max_file;     /* one file's size; default max_unpacked */
    int64_t max_files;    /* number of entries; default SAND_BUNDLE_MAX_FILES */
} sand_bundle_limits_t;

/* Fills every field with its default. */
void sand_bundle_limits_default(sand_bundle_limits_t *limits);

/* Packs the directory dir into a gzip-compressed tar appended to out (caller-initialised; out's
 * own max also applies). Entries have paths relative to dir, come in byte-wise sorted order
 * (directories before their contents), and carry uid/gid 0 and permission bits without
 * setuid/setgid/sticky. A symlink whose target stays inside dir is stored as a symlink; one that
 * leaves dir is stored as a copy of the regular file it points to, and is refused when it points
 * to anything else. Fifos, sockets and devices are refused. limits may be NULL for the defaults.
 * Returns 0, or < 0 with err naming the offending path (SAND_ETOOBIG for a limit, SAND_EINVAL
 * for an entry that cannot be packed, SAND_EIO for a system error); out is then unspecified. */
int sand_bundle_pack(const char *dir, sand_bytes_t *out, const sand_bundle_limits_t *limits,
                     sand_err *err);

/* Unpacks the tar.gz (tgz, len: borrowed) into dest_dir, which must not exist and whose parent
 * must. The bundle is rejected whole when it is over the upload limit, or when any entry has an
 * absolute path, a ".." component, a path longer than PATH_MAX, is a device, fifo, socket or hard
 * link, is a symlink whose target is absolute or resolves outside the bundle, is a duplicate, is
 * over the per-file limit, brings the unpacked total or the entry count over the limit, or when
 * app.yaml is missing at the bundle root. Files keep their x bits and get mode 0644/0755, never
 * setuid/setgid/sticky; directories get 0755; the owner is the calling user. limits may be NULL.
 * Returns 0 with dest_dir in place, or < 0 with err naming the entry and the reason (SAND_EINVAL
 * for a hostile or malformed bundle, SAND_ETOOBIG for a limit, SAND_EEXIST when dest_dir exists,
 * SAND_EIO for a system error); dest_dir then does not exist and no temporary is left. */
int sand_bundle_unpack(const void *tgz, size_t len, const char *dest_dir,
                       const sand_bundle_limits_t *limits, sand_err *err);

#endif
