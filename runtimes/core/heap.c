/*
 * The instance heap: the allocator a forked grain instance uses for the memory it allocates
 * during its one event (docs/internals/instance-heap.md).
 *
 * A forked instance starts with every page of its worker shared copy-on-write. Allocating with
 * the worker's own allocators (glibc malloc, CPython's pymalloc) writes into the free blocks and
 * free lists scattered over those shared pages, and every first write to one of them is a
 * copy-on-write fault: about 150 of the ~290 page faults of a small Python instance, each costing
 * ~2 us here. The instance heap instead hands out memory from a region that the worker reserved
 * but never touched, packed by size class, so an instance writes a few fresh pages instead of a
 * hundred shared ones. Blocks of the worker are never written: freeing one is a no-op (the page
 * stays shared; the instance is short-lived), and resizing one copies it into the heap.
 *
 * Layout: the region is cut into 64 KiB chunks; a chunk serves one size class (16-byte steps up
 * to 512 bytes, then four steps per power of two up to 32 KiB) or is the head of a large span of
 * whole chunks. chunk_kind[] maps a chunk to its class, so blocks carry no header. Freed small
 * blocks go on a per-class free list; freed spans are kept for reuse, resident up to 32 MiB and
 * returned to the kernel (MADV_DONTNEED) beyond. When the region is exhausted the heap spills over
 * to the fallback allocator of each call, and from then on frees of foreign blocks go to it as
 * well.
 */
#include "sand/worker.h"

#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define CHUNK_SHIFT 16
#define CHUNK       ((size_t)1 << CHUNK_SHIFT)
#define REGION_MAX  ((size_t)4 << 30) /* virtual only: untouched pages cost nothing */
#define NCHUNKS     (REGION_MAX >> CHUNK_SHIFT)
#define SMALL_MAX   (32 * 1024)
#define NSPANS      64
#define SPAN_CACHE  ((size_t)32 << 20) /* freed spans kept resident for reuse, at most */

enum { KIND_FREE = 0, KIND_LARGE = 0xffff, KIND_TAIL = 0xfffe };

typedef struct free_block {
    struct free_block *next;
} free_block_t;

typedef struct size_class {
    uint32_t size;
    char *bump, *end; /* the class's current chunk */
    free_block_t *free;
} size_class_t;

typedef struct span {
    size_t first, count; /* chunk index and length */
    bool dirty;          /* still resident (not zero): kept for reuse within SPAN_CACHE */
} span_t;

static struct {
    char *base;       /* CHUNK-aligned start of the region, NULL when not reserved */
    size_t nchunks;   /* chunks in the region */
    size_t next;      /* the frontier: chunks from here on are free */
    size_t zero_from; /* chunks from here on are zero (never used, or given back) */
    bool spilled;     /* the region ran out: foreign blocks are freed by their fallback */
    char lock;        /* a spin lock: uncontended in all but threaded handlers */
    size_class_t cls[80];
    int ncls;
    span_t spans[NSPANS]; /* freed large spans, for reuse */
    int nspans;
    size_t cached; /* bytes of dirty spans */
} H;

/* Per chunk: KIND_FREE, a class index + 1, KIND_LARGE (span head) or KIND_TAIL. In .bss: the
 * worker never writes it, so it costs no page until an instance uses a chunk. */
static uint16_t chunk_kind[NCHUNKS];
static uint32_t span_len[NCHUNKS];
static uint8_t class_of_16[SMALL_MAX / 16 + 1]; /* (size + 15) / 16 -> class index */

static void classes_init(void)
{
    int n = 0;
    for (uint32_t s = 16; s <= 512; s += 16)
        H.cls[n++].size = s;
    for (uint32_t p = 512; p < SMALL_MAX; p *= 2)
        for (uint32_t k = 1; k <= 4; k++)
            H.cls[n++].size = p + p / 4 * k;
    H.ncls = n;
    int c = 0;
    for (size_t i = 0; i <= SMALL_MAX / 16; i++) {
        while (H.cls[c].size < i * 16)
            c++;
        class_of_16[i] = (uint8_t)c;
    }
}

int sand_worker_heap_reserve(void)
{
    if (H.base)
        return 0;
    size_t len = REGION_MAX + CHUNK;
    char *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    /* Align to a chunk and give the slack back. */
    uintptr_t a = ((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
    if (a > (uintptr_t)p)
        munmap(p, a - (uintptr_t)p);
    char *end = p + len;
    if ((char *)a + REGION_MAX < end)
        munmap((char *)a + REGION_MAX, (size_t)(end - ((char *)a + REGION_MAX)));
    /* Never part of a core dump and never merged into the worker's other mappings. */
    madvise((void *)a, REGION_MAX, MADV_DONTDUMP);
    classes_init();
    H.base = (char *)a;
    H.nchunks = NCHUNKS;
    return 0;
}

bool sand_worker_heap_ready(void)
{
    return H.base != NULL;
}

static inline void lock(void)
{
    while (__atomic_test_and_set(&H.lock, __ATOMIC_ACQUIRE))
        sched_yield();
}

static inline void unlock(void)
{
    __atomic_clear(&H.lock, __ATOMIC_RELEASE);
}

static inline bool owns(const void *p)
{
    return H.base && (const char *)p >= H.base && (const char *)p < H.base + H.nchunks * CHUNK;
}

static inline size_t chunk_of(const void *p)
{
    return (size_t)((const char *)p - H.base) >> CHUNK_SHIFT;
}

/* Takes count reused or fresh chunks, resident ones first, the smallest free span that fits
 * (so that big spans stay whole for big requests); returns the first index or SIZE_MAX, and in
 * *dirty whether they may hold old bytes. Lock held. */
static size_t chunks_take(size_t count, bool *dirty)
{
    for (int pass = 0; pass < 2; pass++) {
        int best = -1;
        for (int i = 0; i < H.nspans; i++) {
            span_t *sp = &H.spans[i];
            if (sp->dirty == (pass == 0) && sp->count >= count &&
                (best < 0 || sp->count < H.spans[best].count))
                best = i;
        }
        if (best < 0)
            continue;
        span_t *sp = &H.spans[best];
        size_t first = sp->first;
        *dirty = sp->dirty;
        if (sp->dirty)
            H.cached -= count << CHUNK_SHIFT;
        sp->first += count;
        sp->count -= count;
        if (!sp->count)
            *sp = H.spans[--H.nspans];
        return first;
    }
    if (H.next + count > H.nchunks)
        return SIZE_MAX;
    size_t first = H.next;
    H.next += count;
    *dirty = first < H.zero_from;
    return first;
}

/* Gives back a large span's chunks. Neighbouring free spans merge with it; a span that ends at
 * the frontier moves the frontier back, so that a buffer freed and allocated again, or grown
 * (realloc at the frontier grows in place), finds its pages still there. Up to SPAN_CACHE of
 * freed memory stays resident, as glibc keeps freed memory below its trim threshold: a buffer
 * freed and allocated again in a loop must not fault its pages in every time. Beyond, the pages
 * go back to the kernel and read as zeros. Lock held. */
static void span_release(size_t first, size_t count)
{
    bool dirty = true;
    for (int i = 0; i < H.nspans;) {
        span_t *sp = &H.spans[i];
        if (sp->first + sp->count == first || first + count == sp->first) {
            if (sp->dirty)
                H.cached -= sp->count << CHUNK_SHIFT;
            if (sp->first < first)
                first = sp->first;
            count += sp->count;
            *sp = H.spans[--H.nspans];
            continue;
        }
        i++;
    }
    if (first + count == H.next) {
        H.next = first;
        if (H.zero_from < first + count)
            H.zero_from = first + count;
        size_t resident = (H.zero_from - H.next) << CHUNK_SHIFT;
        if (resident + H.cached > SPAN_CACHE) {
            madvise(H.base + (H.next << CHUNK_SHIFT), resident, MADV_DONTNEED);
            H.zero_from = H.next;
        }
        return;
    }
    size_t bytes = count << CHUNK_SHIFT;
    if (H.cached + bytes > SPAN_CACHE || H.nspans == NSPANS) {
        madvise(H.base + (first << CHUNK_SHIFT), bytes, MADV_DONTNEED);
        dirty = false;
    }
    if (H.nspans == NSPANS)
        return; /* the address range is lost, its memory is not */
    H.spans[H.nspans++] = (span_t){first, count, dirty};
    if (dirty)
        H.cached += bytes;
}

static void *small_alloc(size_t n)
{
    size_class_t *c = &H.cls[class_of_16[(n + 15) / 16]];
    free_block_t *b = c->free;
    if (b) {
        c->free = b->next;
        return b;
    }
    if (c->bump + c->size > c->end) {
        bool dirty = false;
        size_t k = chunks_take(1, &dirty);
        if (k == SIZE_MAX)
            return NULL;
        chunk_kind[k] = (uint16_t)(c - H.cls + 1);
        c->bump = H.base + (k << CHUNK_SHIFT);
        c->end = c->bump + CHUNK;
    }
    void *p = c->bump;
    c->bump += c->size;
    return p;
}

static void *large_alloc(size_t n, bool *dirty)
{
    *dirty = false;
    if (n > H.nchunks * CHUNK)
        return NULL;
    size_t count = (n + CHUNK - 1) >> CHUNK_SHIFT;
    size_t k = chunks_take(count, dirty);
    if (k == SIZE_MAX)
        return NULL;
    chunk_kind[k] = KIND_LARGE;
    span_len[k] = (uint32_t)count;
    return H.base + (k << CHUNK_SHIFT);
}

/* Usable size of a heap block. */
static size_t usable(const void *p)
{
    uint16_t kind = chunk_kind[chunk_of(p)];
    if (kind == KIND_LARGE)
        return (size_t)span_len[chunk_of(p)] << CHUNK_SHIFT;
    return H.cls[kind - 1].size;
}

static void heap_free(void *p)
{
    size_t k = chunk_of(p);
    uint16_t kind = chunk_kind[k];
    if (kind == KIND_LARGE) {
        chunk_kind[k] = KIND_FREE;
        span_release(k, span_len[k]);
        return;
    }
    if (kind == KIND_FREE || kind == KIND_TAIL)
        return; /* not a block we handed out: ignore rather than corrupt the heap */
    size_class_t *c = &H.cls[kind - 1];
    free_block_t *b = p;
    b->next = c->free;
    c->free = b;
}

static void *alloc_locked(size_t n, bool *fresh_zero)
{
    if (n == 0)
        n = 1;
    if (n <= SMALL_MAX) {
        *fresh_zero = false;
        return small_alloc(n);
    }
    bool dirty = false;
    void *p = large_alloc(n, &dirty);
    *fresh_zero = !dirty;
    return p;
}

/* A block from the heap, or NULL when the region cannot serve it (the heap has then spilled). */
static void *take(size_t n, bool *fresh_zero)
{
    lock();
    void *p = alloc_locked(n, fresh_zero);
    if (!p)
        H.spilled = true;
    unlock();
    return p;
}

void *sand_worker_heap_malloc(const sand_heap_fallback_t *fb, size_t n)
{
    bool z;
    void *p = take(n, &z);
    return p ? p : fb->malloc(fb->ctx, n);
}

void *sand_worker_heap_calloc(const sand_heap_fallback_t *fb, size_t nelem, size_t elsize)
{
    if (elsize && nelem > SIZE_MAX / elsize)
        return NULL;
    size_t n = nelem * elsize;
    bool z;
    void *p = take(n, &z);
    if (!p)
        return fb->calloc(fb->ctx, nelem, elsize);
    if (!z) /* fresh or MADV_DONTNEED'ed spans are zero already */
        memset(p, 0, n);
    return p;
}

void sand_worker_heap_free(const sand_heap_fallback_t *fb, void *p)
{
    if (!p)
        return;
    if (owns(p)) {
        lock();
        heap_free(p);
        unlock();
        return;
    }
    /* A block of the worker, shared copy-on-write: leave its page alone. Once the heap has
     * spilled, foreign blocks may be the fallback's own and must really be freed. */
    if (H.spilled)
        fb->free(fb->ctx, p);
}

void *sand_worker_heap_realloc(const sand_heap_fallback_t *fb, void *p, size_t n)
{
    if (!p)
        return sand_worker_heap_malloc(fb, n);
    if (!owns(p)) {
        if (H.spilled || !fb->usable)
            return fb->realloc(fb->ctx, p, n);
        /* Copy the worker's block into the heap; the old one stays as it is. */
        size_t old = fb->usable(fb->ctx, p);
        void *q = sand_worker_heap_malloc(fb, n);
        if (q)
            memcpy(q, p, old < n ? old : n);
        return q;
    }
    size_t have = usable(p); /* a block's chunk kind does not change while it is live */
    if (n <= have && (n > SMALL_MAX || n + 16 > have / 2))
        return p;
    if (n > have && chunk_kind[chunk_of(p)] == KIND_LARGE) {
        /* the last span before the frontier grows in place (a reply buffer doubling) */
        size_t k = chunk_of(p), count = (n + CHUNK - 1) >> CHUNK_SHIFT;
        bool grown = false;
        lock();
        if (k + span_len[k] == H.next && k + count <= H.nchunks) {
            H.next = k + count;
            span_len[k] = (uint32_t)count;
            grown = true;
        }
        unlock();
        if (grown)
            return p;
    }
    void *q = sand_worker_heap_malloc(fb, n);
    if (!q)
        return NULL;
    memcpy(q, p, have < n ? have : n);
    sand_worker_heap_free(fb, p);
    return q;
}

void *sand_worker_heap_memalign(size_t align, size_t n)
{
    if (!H.base || align == 0 || (align & (align - 1)) || align > CHUNK)
        return NULL;
    if (n == 0)
        n = 1;
    void *p = NULL;
    bool z;
    lock();
    if (align <= 16) {
        p = alloc_locked(n, &z);
    } else if (n <= SMALL_MAX) {
        /* Blocks of a class start at i * size from a 64 KiB-aligned chunk: a class whose size
         * is a multiple of align hands out aligned blocks. */
        size_t want = (n + align - 1) & ~(align - 1);
        for (int c = class_of_16[(want + 15) / 16]; c < H.ncls && !p; c++)
            if (H.cls[c].size % align == 0)
                p = small_alloc(H.cls[c].size);
    }
    if (!p && align > 16)
        p = large_alloc(n > SMALL_MAX ? n : SMALL_MAX + 1, &z); /* chunk-aligned */
    unlock();
    return p;
}

bool sand_worker_heap_owns(const void *p)
{
    return owns(p);
}

size_t sand_worker_heap_usable(const void *p)
{
    return usable(p);
}

size_t sand_worker_heap_used(void)
{
    return H.next << CHUNK_SHIFT;
}
