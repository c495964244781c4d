/*
 * Unit tests of the zygote's memory moves (runtimes/core/filemem.c, hugetext.c):
 * sand__memory_to_file() puts a large private region on a memfd mapped privately in place, with
 * the same bytes, and copy-on-write semantics across fork() stay: a child sees the parent's
 * bytes, its writes stay its own, and the parent's later writes stay the parent's. Small
 * regions stay anonymous. sand__text_to_hugepages() moves this executable's code (linked with
 * max-page-size=2M, as the workers are) onto anonymous huge pages whenever the kernel offers them:
 * code keeps running, in this process and in a forked child; without huge pages nothing changes.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "worker_internal.h" /* SAND_ASAN and the functions under test */

/* The /proc/self/maps line of the mapping holding addr, in line. */
static void mapping_of(const void *addr, char *line, size_t size)
{
    FILE *f = fopen("/proc/self/maps", "re");
    assert_non_null(f);
    line[0] = 0;
    char buf[512];
    while (fgets(buf, sizeof(buf), f)) {
        unsigned long a, b;
        if (sscanf(buf, "%lx-%lx", &a, &b) == 2 && (uintptr_t)addr >= a && (uintptr_t)addr < b) {
            snprintf(line, size, "%s", buf);
            break;
        }
    }
    fclose(f);
}

static void test_memory_to_file(void **state)
{
    (void)state;
    size_t len = (size_t)1 << 20;
    /* each region between two inaccessible pages: never merged with a neighbour (the stack
     * or the thread's own data, which are never moved) */
    unsigned char *g1 =
        mmap(NULL, len + 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *g2 =
        mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g1 != MAP_FAILED && g2 != MAP_FAILED);
    mprotect(g1, 4096, PROT_NONE);
    mprotect(g1 + 4096 + len, 4096, PROT_NONE);
    mprotect(g2, 4096, PROT_NONE);
    mprotect(g2 + 8192, 4096, PROT_NONE);
    unsigned char *big = g1 + 4096, *small = g2 + 4096;
    assert_true(big != MAP_FAILED && small != MAP_FAILED);
    for (size_t i = 0; i < len; i++)
        big[i] = (unsigned char)(i * 7);
    memset(small, 0x5a, 4096);
    long moved = sand__memory_to_file(256 << 10);
    char line[512];
    mapping_of(big, line, sizeof(line));
#ifndef SAND_ASAN
    assert_true(moved >= (long)len);
    assert_non_null(strstr(line, "memfd:sand-zygote"));
#else
    assert_int_equal(moved, 0);
#endif
    mapping_of(small, line, sizeof(line));
    assert_null(strstr(line, "memfd:"));
    for (size_t i = 0; i < len; i++)
        assert_int_equal(big[i], (unsigned char)(i * 7));
    assert_int_equal(small[100], 0x5a);

    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char r = 0;
        if (read(p[0], &r, 1) != 1)
            _exit(2);
        /* the parent wrote big[0] after the fork: not seen here */
        int ok = big[0] == 0 && big[12345] == (unsigned char)(12345 * 7);
        memset(big, 0xee, len); /* our copy only */
        ok = ok && big[len - 1] == 0xee;
        _exit(ok ? 0 : 1);
    }
    big[0] = 0x11;
    assert_int_equal(write(p[1], "x", 1), 1);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(big[0], 0x11);
    assert_int_equal(big[len - 1], (unsigned char)((len - 1) * 7));
    close(p[0]);
    close(p[1]);
}

#ifndef SAND_ASAN
/* Transparent huge pages can be had with madvise() ("[always]" or "[madvise]" selected). */
static bool thp_available(void)
{
    char buf[128] = {0};
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
    if (!f)
        return false;
    bool on = fgets(buf, sizeof(buf), f) && !strstr(buf, "[never]");
    fclose(f);
    return on;
}
#endif

static int __attribute__((noinline)) square(int x)
{
    return x * x;
}

static void test_text_to_hugepages(void **state)
{
    (void)state;
    char before[512], after[512];
    mapping_of((const void *)(uintptr_t)square, before, sizeof(before));
    long moved = sand__text_to_hugepages();
    mapping_of((const void *)(uintptr_t)square, after, sizeof(after));
    assert_true(moved >= 0);
#ifdef SAND_ASAN
    assert_int_equal(moved, 0);
#else
    if (thp_available())
        assert_true(moved > 0); /* this build is linked for it, as the workers are */
#endif
    if (moved > 0) {
        /* the code is now anonymous memory, in one mapping 2 MiB-aligned */
        assert_null(strstr(after, "test_worker_filemem"));
        unsigned long a, b;
        assert_int_equal(sscanf(after, "%lx-%lx", &a, &b), 2);
        assert_int_equal(a % (2UL << 20), 0);
        assert_true((long)(b - a) >= moved);
    } else {
        assert_string_equal(before, after);
    }
    assert_int_equal(square(12), 144);
    pid_t pid = fork();
    if (pid == 0)
        _exit(square(5) == 25 ? 0 : 1);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_to_file),
        cmocka_unit_test(test_text_to_hugepages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
