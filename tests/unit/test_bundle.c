/*
 * Tests of application bundles: a packed directory unpacks byte-identical (contents, x bits,
 * symlinks) and packing is deterministic; every hostile bundle, built in memory with libarchive's
 * writer (or a hand-made tar header where the writer would refuse), is rejected whole with a
 * message naming the entry, and neither the destination nor a temporary directory is left.
 */
#define _GNU_SOURCE /* nftw */
#include "sand/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>

static char g_tmp[PATH_MAX];

/* ---- helpers ------------------------------------------------------------------------------ */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    int n = snprintf(g_tmp, sizeof(g_tmp), "/tmp/%s", "sand-bundle-test-");
    memset(g_tmp + n, 'X', 6); /* the mkdtemp template */
    g_tmp[n + 6] = '\0';
    assert_non_null(mkdtemp(g_tmp));
    return 0;
}

static int teardown(void **state)
{
    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void pathf(char *out, const char *fmt, ...) SAND_PRINTF(2, 3);
static void pathf(char *out, const char *fmt, ...)
{
    char rel[PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    int n = snprintf(out, PATH_MAX, "%s/%s", g_tmp, rel);
    assert_true(n > 0 && n < PATH_MAX);
}

static void write_file(const char *rel, const void *data, size_t len, mode_t mode)
{
    char p[PATH_MAX];
    pathf(p, "%s", rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    assert_int_equal(chmod(p, mode), 0);
}

static void make_dir(const char *rel)
{
    char p[PATH_MAX];
    pathf(p, "%s", rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static void make_link(const char *target, const char *rel)
{
    char p[PATH_MAX];
    pathf(p, "%s", rel);
    assert_int_equal(symlink(target, p), 0);
}

static bool exists(const char *rel)
{
    char p[PATH_MAX];
    struct stat st;
    pathf(p, "%s", rel);
    return lstat(p, &st) == 0;
}

/* Number of entries in g_tmp whose name starts with prefix (finds leftover temporaries). */
static int count_prefixed(const char *prefix)
{
    DIR *d = opendir(g_tmp);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (!strncmp(de->d_name, prefix, strlen(prefix)))
            n++;
    closedir(d);
    return n;
}

/* Compares two trees recursively: same names, types, contents, x bits and link targets. */
static void compare_trees(const char *a, const char *b)
{
    struct stat sa, sb;
    assert_int_equal(lstat(a, &sa), 0);
    assert_int_equal(lstat(b, &sb), 0);
    assert_int_equal(sa.st_mode & S_IFMT, sb.st_mode & S_IFMT);
    if (S_ISLNK(sa.st_mode)) {
        char ta[PATH_MAX] = {0}, tb[PATH_MAX] = {0};
        assert_true(readlink(a, ta, sizeof(ta) - 1) > 0);
        assert_true(readlink(b, tb, sizeof(tb) - 1) > 0);
        assert_string_equal(ta, tb);
        return;
    }
    if (S_ISREG(sa.st_mode)) {
        assert_int_equal(sa.st_mode & 0111, sb.st_mode & 0111);
        assert_int_equal(sb.st_mode & 07000, 0);
        assert_int_equal(sa.st_size, sb.st_size);
        char *da = malloc((size_t)sa.st_size + 1), *db = malloc((size_t)sb.st_size + 1);
        FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
        assert_non_null(fa);
        assert_non_null(fb);
        assert_int_equal(fread(da, 1, (size_t)sa.st_size, fa), (size_t)sa.st_size);
        assert_int_equal(fread(db, 1, (size_t)sb.st_size, fb), (size_t)sb.st_size);
        assert_memory_equal(da, db, (size_t)sa.st_size);
        fclose(fa);
        fclose(fb);
        free(da);
        free(db);
        return;
    }
    DIR *d = opendir(a);
    assert_non_null(d);
    int na = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char ca[PATH_MAX + 256], cb[PATH_MAX + 256];
        snprintf(ca, sizeof(ca), "%s/%s", a, de->d_name);
        snprintf(cb, sizeof(cb), "%s/%s", b, de->d_name);
        compare_trees(ca, cb);
        na++;
    }
    closedir(d);
    d = opendir(b);
    assert_non_null(d);
    int nb = 0;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            nb++;
    closedir(d);
    assert_int_equal(na, nb);
}

/* ---- in-memory tar.gz builder --------------------------------------------------------------- */

typedef struct tb {
    struct archive *ar;
    sand_bytes_t out;
} tb;

static la_ssize_t tb_write(struct archive *a, void *ud, const void *p, size_t n)
{
    tb *t = ud;
    return sand_bytes_append(&t->out, p, n) == 0 ? (la_ssize_t)n : -1;
}

static void tb_begin(tb *t)
{
    sand_bytes_init(&t->out, 1u << 30);
    t->ar = archive_write_new();
    assert_non_null(t->ar);
    assert_int_equal(archive_write_set_format_pax_restricted(t->ar), ARCHIVE_OK);
    assert_int_equal(archive_write_add_filter_gzip(t->ar), ARCHIVE_OK);
    assert_int_equal(archive_write_open(t->ar, t, NULL, tb_write, NULL), ARCHIVE_OK);
}

typedef struct tent {
    const char *path;
    mode_t type;      /* AE_IFREG when 0 */
    const char *data; /* regular file contents (NUL-terminated) */
    size_t size;      /* when data is NULL: that many 'x' bytes */
    const char *link; /* symlink target */
    const char *hard; /* hard link target */
} tent;

static void tb_add(tb *t, const tent *te)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, te->path);
    mode_t type = te->type ? te->type : AE_IFREG;
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, type == AE_IFDIR ? 0755 : 0644);
    size_t size = te->data ? strlen(te->data) : te->size;
    if (te->hard) {
        archive_entry_set_hardlink(e, te->hard);
        size = 0;
    }
    if (te->link)
        archive_entry_set_symlink(e, te->link);
    if (type == AE_IFCHR)
        archive_entry_set_rdev(e, makedev(1, 3));
    archive_entry_set_size(e, type == AE_IFREG ? (la_int64_t)size : 0);
    assert_int_equal(archive_write_header(t->ar, e), ARCHIVE_OK);
    archive_entry_free(e);
    if (type == AE_IFREG && size && !te->hard) {
        if (te->data) {
            assert_int_equal(archive_write_data(t->ar, te->data, size), (la_ssize_t)size);
        } else {
            char *buf = malloc(size);
            memset(buf, 'x', size);
            assert_int_equal(archive_write_data(t->ar, buf, size), (la_ssize_t)size);
            free(buf);
        }
    }
}

static void tb_end(tb *t)
{
    assert_int_equal(archive_write_close(t->ar), ARCHIVE_OK);
    archive_write_free(t->ar);
}

static const tent APP_YAML = {.path = "app.yaml", .data = "app: demo\n"};

/* Builds a bundle of app.yaml plus the given entries. */
static void build(sand_bytes_t *out, const tent *ents, size_t n)
{
    tb t;
    tb_begin(&t);
    tb_add(&t, &APP_YAML);
    for (size_t i = 0; i < n; i++)
        tb_add(&t, &ents[i]);
    tb_end(&t);
    *out = t.out;
}

/* Unpacks into g_tmp/dest and asserts a rejection whose message contains want, that dest does
 * not exist and that no temporary is left. */
static void expect_reject(const sand_bytes_t *b, const sand_bundle_limits_t *lim, const char *want)
{
    char dest[PATH_MAX];
    sand_err err = {0};
    pathf(dest, "dest");
    int rc = sand_bundle_unpack(b->data, b->len, dest, lim, &err);
    if (rc >= 0 || !strstr(err.msg, want))
        fail_msg("expected a rejection with '%s', got rc %d: '%s'", want, rc, err.msg);
    assert_true(rc < 0);
    assert_false(exists("dest"));
    assert_int_equal(count_prefixed("dest.tmp-"), 0);
}

static void reject_one(const tent *te, const char *want)
{
    sand_bytes_t b;
    build(&b, te, 1);
    expect_reject(&b, NULL, want);
    sand_bytes_release(&b);
}

/* ---- pack / unpack ------------------------------------------------------------------------ */

static void make_app_tree(void)
{
    make_dir("src");
    write_file("src/app.yaml", "app: demo\ngrains: {}\n", 21, 0644);
    write_file("src/run.sh", "#!/bin/sh\necho hi\n", 18, 0755);
    make_dir("src/grains");
    make_dir("src/grains/empty");
    char *big = malloc(300000);
    for (size_t i = 0; i < 300000; i++)
        big[i] = (char)(i * 7 + i / 13);
    write_file("src/grains/blob.bin", big, 300000, 0600);
    free(big);
    write_file("src/grains/a.py", "def handle(e, c):\n    return e\n", 32, 0644);
    make_link("a.py", "src/grains/alias.py");
    make_link("../app.yaml", "src/grains/cfg.yaml");
}

static void test_roundtrip(void **state)
{
    make_app_tree();
    char src[PATH_MAX], dest[PATH_MAX];
    pathf(src, "src");
    pathf(dest, "out");
    sand_bytes_t b, b2;
    sand_bytes_init(&b, SAND_BUNDLE_MAX_UPLOAD);
    sand_bytes_init(&b2, SAND_BUNDLE_MAX_UPLOAD);
    sand_err err = {0};
    assert_int_equal(sand_bundle_pack(src, &b, NULL, &err), 0);
    assert_true(b.len > 0);
    /* deterministic: the same tree packs to the same bytes */
    assert_int_equal(sand_bundle_pack(src, &b2, NULL, &err), 0);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);

    int rc = sand_bundle_unpack(b.data, b.len, dest, NULL, &err);
    if (rc < 0)
        fail_msg("unpack: %s", err.msg);
    compare_trees(src, dest);
    struct stat st;
    assert_int_equal(lstat(dest, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    pathf(dest, "out/grains/blob.bin");
    assert_int_equal(lstat(dest, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644); /* readable by the sandbox, x bits kept */
    pathf(dest, "out/run.sh");
    assert_int_equal(lstat(dest, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    assert_int_equal(count_prefixed("out.tmp-"), 0);

    /* a second unpack to the same destination is refused and changes nothing */
    pathf(dest, "out");
    assert_int_equal(sand_bundle_unpack(b.data, b.len, dest, NULL, &err), SAND_EEXIST);
    assert_non_null(strstr(err.msg, "already exists"));
    compare_trees(src, dest);
    sand_bytes_release(&b);
    sand_bytes_release(&b2);
}

static void test_pack_outside_symlink_is_copied(void **state)
{
    make_dir("src");
    write_file("src/app.yaml", "app: demo\n", 10, 0644);
    write_file("shared.txt", "shared bytes", 12, 0644);
    char target[PATH_MAX];
    pathf(target, "shared.txt");
    make_link(target, "src/lib.txt");         /* absolute, leaves the directory */
    make_link("../shared.txt", "src/up.txt"); /* relative, leaves the directory */
    char src[PATH_MAX], dest[PATH_MAX];
    pathf(src, "src");
    pathf(dest, "out");
    sand_bytes_t b;
    sand_bytes_init(&b, SAND_BUNDLE_MAX_UPLOAD);
    sand_err err = {0};
    assert_int_equal(sand_bundle_pack(src, &b, NULL, &err), 0);
    assert_int_equal(sand_bundle_unpack(b.data, b.len, dest, NULL, &err), 0);
    struct stat st;
    pathf(dest, "out/lib.txt");
    assert_int_equal(lstat(dest, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 12);
    pathf(dest, "out/up.txt");
    assert_int_equal(lstat(dest, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    sand_bytes_release(&b);
}

static void test_pack_refuses(void **state)
{
    make_dir("src");
    write_file("src/app.yaml", "app: demo\n", 10, 0644);
    char p[PATH_MAX], src[PATH_MAX];
    pathf(p, "src/pipe");
    assert_int_equal(mkfifo(p, 0644), 0);
    pathf(src, "src");
    sand_bytes_t b;
    sand_bytes_init(&b, SAND_BUNDLE_MAX_UPLOAD);
    sand_err err = {0};
    assert_true(sand_bundle_pack(src, &b, NULL, &err) < 0);
    assert_non_null(strstr(err.msg, "'pipe' is a fifo"));
    unlink(p);

    make_link("/", "src/root"); /* leaves, and is not a regular file */
    sand_bytes_reset(&b);
    assert_true(sand_bundle_pack(src, &b, NULL, &err) < 0);
    assert_non_null(strstr(err.msg, "'root'"));
    pathf(p, "src/root");
    unlink(p);

    /* limits: per file, total, count, compressed */
    write_file("src/big", "0123456789X", 11, 0644); /* app.yaml is 10 bytes */
    sand_bundle_limits_t lim = {.max_file = 10};
    sand_bytes_reset(&b);
    assert_int_equal(sand_bundle_pack(src, &b, &lim, &err), SAND_ETOOBIG);
    assert_non_null(strstr(err.msg, "'big'"));
    lim = (sand_bundle_limits_t){.max_files = 1};
    sand_bytes_reset(&b);
    assert_int_equal(sand_bundle_pack(src, &b, &lim, &err), SAND_ETOOBIG);
    assert_non_null(strstr(err.msg, "more than 1 files"));
    lim = (sand_bundle_limits_t){.max_upload = 20};
    sand_bytes_reset(&b);
    assert_int_equal(sand_bundle_pack(src, &b, &lim, &err), SAND_ETOOBIG);
    assert_non_null(strstr(err.msg, "upload limit"));
    sand_bytes_release(&b);
}

/* ---- hostile bundles ---------------------------------------------------------------------- */

static void test_reject_absolute(void **state)
{
    reject_one(&(tent){.path = "/etc/cron.d/x", .data = "x"}, "'/etc/cron.d/x': absolute path");
}

static void test_reject_dotdot(void **state)
{
    reject_one(&(tent){.path = "../x", .data = "x"}, "'../x': '..' component");
    reject_one(&(tent){.path = "a/../../x", .data = "x"}, "'a/../../x': '..' component");
}

static void test_reject_symlinks(void **state)
{
    reject_one(&(tent){.path = "pw", .type = AE_IFLNK, .link = "/etc/passwd"},
               "'pw': symlink to an absolute path");
    reject_one(&(tent){.path = "a/up", .type = AE_IFLNK, .link = "../../x"},
               "'a/up': symlink that leaves the bundle");

    /* each link stays inside as text, but d/self -> "." makes "d/self/../.." climb out */
    tent chain[] = {
        {.path = "d", .type = AE_IFDIR},
        {.path = "d/self", .type = AE_IFLNK, .link = "."},
        {.path = "esc", .type = AE_IFLNK, .link = "d/self/../.."},
    };
    sand_bytes_t b;
    build(&b, chain, 3);
    expect_reject(&b, NULL, "'esc': symlink that resolves outside the bundle");
    sand_bytes_release(&b);

    /* a file written through an earlier symlink */
    tent through[] = {
        {.path = "sub", .type = AE_IFDIR},
        {.path = "l", .type = AE_IFLNK, .link = "sub"},
        {.path = "l/x", .data = "x"},
    };
    build(&b, through, 3);
    expect_reject(&b, NULL, "'l/x': 'l' is a symlink or a file");
    sand_bytes_release(&b);
}

/* Tar cannot carry a socket (libarchive's writer refuses one), so only the others are built. */
static void test_reject_special(void **state)
{
    reject_one(&(tent){.path = "h", .hard = "app.yaml"}, "'h': hard link");
    reject_one(&(tent){.path = "p", .type = AE_IFIFO}, "'p': fifo");
    reject_one(&(tent){.path = "null", .type = AE_IFCHR}, "'null': device file");
    reject_one(&(tent){.path = "sd", .type = AE_IFBLK}, "'sd': device file");
}

static void test_reject_too_many_files(void **state)
{
    tb t;
    tb_begin(&t);
    tb_add(&t, &APP_YAML);
    char name[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof(name), "f/%05d", i);
        tb_add(&t, &(tent){.path = name, .data = ""});
    }
    tb_end(&t);
    expect_reject(&t.out, NULL, "'f/09999': more than 10000 files");
    sand_bytes_release(&t.out);
}

/* Writes a ustar header for a regular file of the declared size into h (512 bytes). */
static void ustar_header(unsigned char *h, const char *name, long long size)
{
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    snprintf((char *)h + 124, 12, "%011llo", size);
    memcpy(h + 136, "00000000000", 12);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
}

static void test_reject_huge_declared_size(void **state)
{
    /* The writer would pad a 1 GiB entry with zeros; a hand-made header declares 1 GiB and
     * carries only 4 KiB, gzipped through libarchive's raw format. */
    size_t rawlen = 512 + 4096;
    unsigned char *raw = calloc(1, rawlen);
    ustar_header(raw, "huge.bin", 1LL << 30);
    memset(raw + 512, 'z', 4096);
    sand_bytes_t b;
    sand_bytes_init(&b, 1u << 20);
    tb t = {.out = b};
    struct archive *ar = archive_write_new();
    assert_int_equal(archive_write_set_format_raw(ar), ARCHIVE_OK);
    assert_int_equal(archive_write_add_filter_gzip(ar), ARCHIVE_OK);
    assert_int_equal(archive_write_open(ar, &t, NULL, tb_write, NULL), ARCHIVE_OK);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, "raw");
    archive_entry_set_filetype(e, AE_IFREG);
    assert_int_equal(archive_write_header(ar, e), ARCHIVE_OK);
    assert_int_equal(archive_write_data(ar, raw, rawlen), (la_ssize_t)rawlen);
    archive_entry_free(e);
    assert_int_equal(archive_write_close(ar), ARCHIVE_OK);
    archive_write_free(ar);
    free(raw);
    expect_reject(&t.out, NULL, "'huge.bin': declares 1073741824 bytes");
    sand_bytes_release(&t.out);
}

static void test_reject_unpacked_limits(void **state)
{
    tent three[] = {
        {.path = "a", .size = 40000},
        {.path = "b", .size = 40000},
        {.path = "c", .size = 40000},
    };
    sand_bytes_t b;
    build(&b, three, 3);
    sand_bundle_limits_t lim = {.max_unpacked = 100000};
    expect_reject(&b, &lim, "'c': unpacked size would exceed the limit of 100000 bytes");
    lim = (sand_bundle_limits_t){.max_file = 30000};
    expect_reject(&b, &lim, "'a': declares 40000 bytes (max 30000 per file)");
    sand_bytes_release(&b);
}

static void test_reject_upload_limit(void **state)
{
    sand_bytes_t b;
    build(&b, &(tent){.path = "x", .size = 1000}, 1);
    sand_bundle_limits_t lim = {.max_upload = 64};
    char want[64];
    snprintf(want, sizeof(want), "bundle is %zu bytes (max 64 uploaded)", b.len);
    expect_reject(&b, &lim, want);
    sand_bytes_release(&b);
}

static void test_reject_missing_app_yaml(void **state)
{
    tb t;
    tb_begin(&t);
    tb_add(&t, &(tent){.path = "sub/app.yaml", .data = "app: x\n"});
    tb_end(&t);
    expect_reject(&t.out, NULL, "no app.yaml");
    sand_bytes_release(&t.out);
}

static void test_reject_duplicate(void **state)
{
    tent dup[] = {{.path = "a.txt", .data = "1"}, {.path = "./a.txt", .data = "2"}};
    sand_bytes_t b;
    build(&b, dup, 2);
    expect_reject(&b, NULL, "'./a.txt': duplicate entry");
    sand_bytes_release(&b);
}

static void test_reject_long_path(void **state)
{
    char *p = malloc(PATH_MAX + 200);
    size_t n = 0;
    while (n < PATH_MAX + 100) {
        memcpy(p + n, "abcdefgh/", 9);
        n += 9;
    }
    memcpy(p + n, "f", 2);
    reject_one(&(tent){.path = p, .data = "x"}, "max 4095");
    free(p);
}

static void test_reject_garbage(void **state)
{
    static const char junk[] = "this is not a tarball at all, not even gzip";
    sand_bytes_t b;
    sand_bytes_init(&b, 1024);
    sand_bytes_appends(&b, junk);
    expect_reject(&b, NULL, "bundle is not a");
    sand_bytes_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pack_outside_symlink_is_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pack_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_absolute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_dotdot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_special, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_too_many_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_huge_declared_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_unpacked_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_upload_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_missing_app_yaml, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_long_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_garbage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
