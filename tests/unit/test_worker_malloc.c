/*
 * Unit tests of malloc() in a forked instance (runtimes/core/malloc.c): in the worker the
 * process's malloc family is glibc's; after sand__malloc_instance() (called first thing in a new
 * instance) it serves from the instance heap, including for glibc's own callers (strdup), leaves
 * the worker's blocks untouched (free is a no-op, realloc copies), and honours alignments. Under
 * AddressSanitizer, which brings its own malloc, malloc.c replaces nothing: the test then checks
 * that switching is harmless.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker_internal.h" /* SAND_ASAN and the functions under test */

#include "sand/worker.h"

/* Called through these, the compiler cannot see that a freed block is read on purpose. */
static void (*volatile release)(void *) = free;
static volatile size_t huge = SIZE_MAX / 2;

static void test_worker_then_instance(void **state)
{
    (void)state;
    /* the worker: glibc's blocks */
    char *f = malloc(64);
    assert_non_null(f);
    assert_false(sand_worker_heap_owns(f));
    assert_true(malloc_usable_size(f) >= 64);
    memcpy(f, "worker data", 12);
    char *g = malloc(1000);
    free(g);

    assert_int_equal(sand_worker_heap_reserve(), 0);
    sand__malloc_instance();
#ifndef SAND_ASAN
    /* an instance: every block from the heap */
    char *p = malloc(100);
    assert_true(sand_worker_heap_owns(p));
    assert_true(malloc_usable_size(p) >= 100);
    char *z = calloc(300, 7);
    assert_true(sand_worker_heap_owns(z));
    for (size_t i = 0; i < 2100; i++)
        assert_int_equal(z[i], 0);
    char *s = strdup("through glibc's own call to malloc");
    assert_true(sand_worker_heap_owns(s));
    assert_string_equal(s, "through glibc's own call to malloc");
    /* the worker's block is never written: free leaves it, realloc copies it */
    release(f);
    assert_string_equal(f, "worker data");
    char *r = realloc(f, 5000);
    assert_true(sand_worker_heap_owns(r));
    assert_string_equal(r, "worker data");
    assert_string_equal(f, "worker data");
    /* growing a heap block keeps its bytes */
    memcpy(p, "instance", 9);
    p = realloc(p, 1 << 20);
    assert_true(sand_worker_heap_owns(p));
    assert_string_equal(p, "instance");
    /* aligned blocks */
    size_t aligns[] = {32, 64, 256, 4096, 65536};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        for (size_t n = 1; n < 100000; n = n * 7 + 3) {
            void *a = NULL;
            assert_int_equal(posix_memalign(&a, aligns[i], n), 0);
            assert_true(sand_worker_heap_owns(a));
            assert_int_equal((uintptr_t)a % aligns[i], 0);
            assert_true(malloc_usable_size(a) >= n);
            memset(a, 0xab, n);
            free(a);
            void *b = aligned_alloc(aligns[i], n);
            assert_int_equal((uintptr_t)b % aligns[i], 0);
            free(b);
        }
    }
    void *bad = NULL;
    assert_int_equal(posix_memalign(&bad, 3, 8), EINVAL);
    errno = 0;
    assert_null(reallocarray(NULL, huge, 4));
    assert_int_equal(errno, ENOMEM);
    free(p);
    free(r);
    free(s);
    free(z);
#else
    char *p = malloc(100);
    assert_non_null(p);
    free(p);
    free(f);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_then_instance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
