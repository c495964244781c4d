/*
 * malloc() and friends for the forking workers (Python, C), linked into their executables so
 * that they replace glibc's for every library of the process (glibc supports this: "Replacing
 * malloc" in its manual). In the worker and its zygote they are glibc's own. In a grain instance
 * (after sand__malloc_instance()) they serve from the instance heap (heap.c), as CPython's
 * allocators already do: glibc's heap is the worker's, shared copy-on-write, and every malloc
 * of an instance wrote into it (its free lists, chunk headers, the thread cache), about 15
 * copy-on-write faults per event. Blocks of the worker are never written by an instance (free
 * is a no-op, realloc copies); if the region runs out, glibc serves the rest.
 *
 * Not built with AddressSanitizer, which brings its own malloc.
 */
#define _GNU_SOURCE
#include "sand/worker.h"

#include "worker_internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef SAND_ASAN

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t nelem, size_t elsize);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);

static bool in_instance;

static void *fb_malloc(void *ctx, size_t n)
{
    (void)ctx;
    return __libc_malloc(n);
}

static void *fb_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    return __libc_calloc(nelem, elsize);
}

static void *fb_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return __libc_realloc(p, n);
}

static void fb_free(void *ctx, void *p)
{
    (void)ctx;
    __libc_free(p);
}

/* glibc's usable size of one of its blocks, read from its chunk header (glibc's musable()):
 * the chunk size less the header, two words for a chunk of its own mapping. */
static size_t glibc_usable(const void *p)
{
    size_t head = ((const size_t *)p)[-1];
    return (head & ~(size_t)7) - ((head & 2) ? 2 : 1) * sizeof(size_t);
}

static size_t fb_usable(void *ctx, void *p)
{
    (void)ctx;
    return glibc_usable(p);
}

static const sand_heap_fallback_t glibc_fb = {NULL,       fb_malloc, fb_calloc,
                                              fb_realloc, fb_free,   fb_usable};

void sand__malloc_instance(void)
{
    in_instance = sand_worker_heap_ready();
}

void *malloc(size_t n)
{
    return in_instance ? sand_worker_heap_malloc(&glibc_fb, n) : __libc_malloc(n);
}

void *calloc(size_t nelem, size_t elsize)
{
    return in_instance ? sand_worker_heap_calloc(&glibc_fb, nelem, elsize)
                       : __libc_calloc(nelem, elsize);
}

void *realloc(void *p, size_t n)
{
    return in_instance ? sand_worker_heap_realloc(&glibc_fb, p, n) : __libc_realloc(p, n);
}

void *reallocarray(void *p, size_t nelem, size_t elsize)
{
    if (elsize && nelem > SIZE_MAX / elsize) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, nelem * elsize);
}

void free(void *p)
{
    if (in_instance)
        sand_worker_heap_free(&glibc_fb, p);
    else
        __libc_free(p);
}

size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    return sand_worker_heap_owns(p) ? sand_worker_heap_usable(p) : glibc_usable(p);
}

void *memalign(size_t align, size_t n)
{
    void *p = in_instance ? sand_worker_heap_memalign(align, n) : NULL;
    return p ? p : __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    return memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)))
        return EINVAL;
    void *p = memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    return memalign(4096, n);
}

void *pvalloc(size_t n)
{
    return memalign(4096, (n + 4095) & ~(size_t)4095);
}

#else

void sand__malloc_instance(void)
{
}

#endif
