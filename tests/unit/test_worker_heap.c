/*
 * Unit tests of the instance heap (runtimes/core/heap.c): blocks come from the reserved region,
 * are aligned and reused per size class; foreign blocks are never written (free is a no-op,
 * realloc copies); large blocks are returned zeroed; the heap spills over to the fallback when
 * the region cannot serve a request, and from then on frees foreign blocks through it; several
 * threads may allocate at once. The tests run in order: the spill test is last, since spilling
 * is for the rest of the process.
 */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sand/worker.h"

static int fb_mallocs, fb_frees, fb_reallocs;

static void *fb_malloc(void *ctx, size_t n)
{
    (void)ctx;
    fb_mallocs++;
    return malloc(n);
}

static void *fb_calloc(void *ctx, size_t a, size_t b)
{
    (void)ctx;
    fb_mallocs++;
    return calloc(a, b);
}

static void *fb_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    fb_reallocs++;
    return realloc(p, n);
}

static void fb_free(void *ctx, void *p)
{
    (void)ctx;
    fb_frees++;
    free(p);
}

static size_t fb_usable(void *ctx, void *p)
{
    (void)ctx;
    return malloc_usable_size(p);
}

static const sand_heap_fallback_t FB = {NULL, fb_malloc, fb_calloc, fb_realloc, fb_free, fb_usable};

static void test_reserve(void **state)
{
    (void)state;
    assert_false(sand_worker_heap_ready());
    assert_int_equal(sand_worker_heap_reserve(), 0);
    assert_true(sand_worker_heap_ready());
    assert_int_equal(sand_worker_heap_reserve(), 0); /* once */
    assert_int_equal(sand_worker_heap_used(), 0);    /* nothing touched yet */
}

static void test_small_blocks(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 15, 16, 17, 100, 512, 513, 1000, 4096, 5000, 32768};
    void *p[SAND_ARRAY_LEN(sizes)];
    for (size_t i = 0; i < SAND_ARRAY_LEN(sizes); i++) {
        p[i] = sand_worker_heap_malloc(&FB, sizes[i]);
        assert_non_null(p[i]);
        assert_true(sand_worker_heap_owns(p[i]));
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        memset(p[i], (int)i + 1, sizes[i]);
    }
    for (size_t i = 0; i < SAND_ARRAY_LEN(sizes); i++) /* no block overlaps another */
        for (size_t k = 0; k < sizes[i]; k++)
            assert_int_equal(((unsigned char *)p[i])[k], i + 1);
    /* a freed block is the next one of its class */
    void *q = sand_worker_heap_malloc(&FB, 100);
    sand_worker_heap_free(&FB, q);
    assert_ptr_equal(sand_worker_heap_malloc(&FB, 100), q);
    assert_int_equal(fb_mallocs, 0);
    for (size_t i = 0; i < SAND_ARRAY_LEN(sizes); i++)
        sand_worker_heap_free(&FB, p[i]);
}

static void test_calloc_zeroes(void **state)
{
    (void)state;
    unsigned char *p = sand_worker_heap_malloc(&FB, 300);
    memset(p, 0xab, 300);
    sand_worker_heap_free(&FB, p);
    unsigned char *q = sand_worker_heap_calloc(&FB, 3, 100); /* the same, reused block */
    assert_ptr_equal(q, p);
    for (int i = 0; i < 300; i++)
        assert_int_equal(q[i], 0);
    assert_null(sand_worker_heap_calloc(&FB, SIZE_MAX / 2, 4)); /* overflow */
    sand_worker_heap_free(&FB, q);
}

static void test_large_blocks(void **state)
{
    (void)state;
    size_t n = 3 * 1024 * 1024 + 5;
    unsigned char *p = sand_worker_heap_malloc(&FB, n);
    assert_true(sand_worker_heap_owns(p));
    memset(p, 0x5a, n);
    sand_worker_heap_free(&FB, p);
    /* the span is reused (still resident: calloc clears it) */
    unsigned char *q = sand_worker_heap_calloc(&FB, 1, n);
    assert_ptr_equal(q, p);
    for (size_t i = 0; i < n; i += 4096)
        assert_int_equal(q[i], 0);
    assert_int_equal(q[n - 1], 0);
    sand_worker_heap_free(&FB, q);
}

static void test_resize(void **state)
{
    (void)state;
    char *p = sand_worker_heap_malloc(&FB, 10);
    memcpy(p, "0123456789", 10);
    for (size_t n = 20; n < 4 * 1024 * 1024; n *= 3) {
        p = sand_worker_heap_realloc(&FB, p, n);
        assert_true(sand_worker_heap_owns(p));
        assert_memory_equal(p, "0123456789", 10);
    }
    p = sand_worker_heap_realloc(&FB, p, 12); /* shrinking a large block moves it back */
    assert_memory_equal(p, "0123456789", 10);
    sand_worker_heap_free(&FB, p);
    assert_true(sand_worker_heap_owns(sand_worker_heap_realloc(&FB, NULL, 8)));
}

static void test_foreign_blocks(void **state)
{
    (void)state;
    /* a block of "the worker": the heap must never write it */
    char *f = malloc(64);
    memcpy(f, "worker data", 12);
    sand_worker_heap_free(&FB, f);
    assert_string_equal(f, "worker data");
    assert_int_equal(fb_frees, 0);
    char *g = sand_worker_heap_realloc(&FB, f, 4096);
    assert_true(sand_worker_heap_owns(g));
    assert_string_equal(g, "worker data");
    assert_string_equal(f, "worker data"); /* the original is left as it was */
    assert_int_equal(fb_reallocs, 0);
    free(f);
    sand_worker_heap_free(&FB, g);
    /* without a usable size, the fallback resizes a foreign block */
    sand_heap_fallback_t fb = FB;
    fb.usable = NULL;
    char *h = malloc(16);
    h = sand_worker_heap_realloc(&fb, h, 32);
    assert_int_equal(fb_reallocs, 1);
    assert_false(sand_worker_heap_owns(h));
    free(h);
}

static void test_large_reuse(void **state)
{
    (void)state;
    /* a reply buffer doubling up to 2 MiB, a 1 MiB value, both freed, over and over (what
     * hiredis does for a 1 MiB get): after the first rounds no new chunk is ever taken */
    size_t used = 0;
    for (int it = 0; it < 40; it++) {
        char *b = sand_worker_heap_malloc(&FB, 16 * 1024);
        for (size_t n = 32 * 1024; n <= ((size_t)2 << 20); n *= 2) {
            char *g = sand_worker_heap_realloc(&FB, b, n);
            if (n > 64 * 1024)
                assert_ptr_equal(g, b); /* the last span grows in place */
            b = g;
        }
        char *r = sand_worker_heap_malloc(&FB, (size_t)1 << 20);
        memset(r, it, (size_t)1 << 20);
        sand_worker_heap_free(&FB, b);
        char *q = sand_worker_heap_malloc(&FB, (size_t)1 << 20);
        assert_true(sand_worker_heap_owns(q));
        sand_worker_heap_free(&FB, r);
        sand_worker_heap_free(&FB, q);
        if (it == 2)
            used = sand_worker_heap_used();
        else if (it > 2)
            assert_int_equal(sand_worker_heap_used(), used);
    }
    /* what calloc gets back from reused memory is zero all the same */
    unsigned char *z = sand_worker_heap_calloc(&FB, 1, (size_t)1 << 20);
    for (size_t i = 0; i < ((size_t)1 << 20); i += 4093)
        assert_int_equal(z[i], 0);
    sand_worker_heap_free(&FB, z);
}

static void *hammer(void *arg)
{
    uintptr_t seed = (uintptr_t)arg;
    void *live[64] = {0};
    size_t len[64] = {0};
    for (int i = 0; i < 20000; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        int k = (int)((seed >> 33) % 64);
        if (live[k]) {
            for (size_t b = 0; b < len[k]; b++)
                if (((unsigned char *)live[k])[b] != (unsigned char)k)
                    return (void *)1;
            sand_worker_heap_free(&FB, live[k]);
            live[k] = NULL;
        } else {
            len[k] = (size_t)((seed >> 20) % 3000);
            live[k] = sand_worker_heap_malloc(&FB, len[k]);
            if (!live[k])
                return (void *)1;
            memset(live[k], k, len[k]);
        }
    }
    for (int k = 0; k < 64; k++)
        sand_worker_heap_free(&FB, live[k]);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(i + 1)), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_null(r);
    }
}

static char spill_buf[64];
static int spill_mallocs;

static void *spill_malloc(void *ctx, size_t n)
{
    (void)ctx;
    (void)n;
    spill_mallocs++;
    return spill_buf; /* the size is never touched */
}

static void test_spill(void **state)
{
    (void)state;
    /* more than the region: served by the fallback, and from then on foreign blocks are freed
     * through it */
    sand_heap_fallback_t fb = FB;
    fb.malloc = spill_malloc;
    void *p = sand_worker_heap_malloc(&fb, (size_t)64 << 30);
    assert_ptr_equal(p, spill_buf);
    assert_int_equal(spill_mallocs, 1);
    char *f = malloc(32);
    int frees = fb_frees;
    sand_worker_heap_free(&FB, f);
    assert_int_equal(fb_frees, frees + 1);
    /* heap blocks are still the heap's */
    void *q = sand_worker_heap_malloc(&FB, 64);
    assert_true(sand_worker_heap_owns(q));
    sand_worker_heap_free(&FB, q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve),       cmocka_unit_test(test_small_blocks),
        cmocka_unit_test(test_calloc_zeroes), cmocka_unit_test(test_large_blocks),
        cmocka_unit_test(test_resize),        cmocka_unit_test(test_foreign_blocks),
        cmocka_unit_test(test_large_reuse),   cmocka_unit_test(test_threads),
        cmocka_unit_test(test_spill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
