/*
 * The executable's code on transparent huge pages (see sand__text_to_hugepages() in
 * worker_internal.h and docs/internals/instance-heap.md, "The worker's code on huge pages").
 *
 * fork() copies no page table entry of a file mapping, so every instance of a forking worker
 * faults in the code it runs again, 16 pages per fault: about 20 faults per event for a Python
 * worker, whose executable holds CPython. Anonymous memory on a transparent huge page is
 * different: fork() copies its one page-middle-directory entry (2 MiB) and the child's exit
 * drops it. So the worker copies its executable's code segment into anonymous huge pages and
 * moves them over the segment with mremap(), as large programs do to cut their TLB misses. The
 * bytes and the addresses are the same; only the mapping behind them changes. It needs the
 * segment to start on a 2 MiB boundary (the worker executables are linked with
 * max-page-size=2M) and the kernel to hand out huge pages; otherwise nothing is changed.
 */
#define _GNU_SOURCE
#include "worker_internal.h"

#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE ((uintptr_t)2 << 20)

typedef struct text {
    uintptr_t start, end;
} text_t;

static int find_text(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    text_t *t = arg;
    if (info->dlpi_name && info->dlpi_name[0])
        return 0; /* a shared library: the executable comes first, with an empty name */
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            t->start = info->dlpi_addr + ph->p_vaddr;
            t->end = t->start + ph->p_memsz;
        }
    }
    return 1;
}

/* Bytes of anonymous huge pages at addr, from /proc/self/smaps. */
static size_t huge_bytes_at(uintptr_t addr)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        return 0;
    char line[512];
    bool in = false;
    size_t kb = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long a, b;
        if (sand__smaps_header(line, &a, &b)) {
            in = a <= addr && addr < b;
            continue;
        }
        unsigned long v;
        if (in && sscanf(line, "AnonHugePages: %lu kB", &v) == 1) {
            kb = v;
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

long sand__text_to_hugepages(void)
{
#ifdef SAND_ASAN
    return 0;
#endif
    text_t t = {0, 0};
    dl_iterate_phdr(find_text, &t);
    if (!t.start || (t.start & (HUGE - 1)))
        return 0; /* not linked for it */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t mapped_end = (t.end + page - 1) & ~(page - 1);
    uintptr_t end = (t.end + HUGE - 1) & ~(HUGE - 1);
    /* The tail up to the next 2 MiB boundary must be free: the huge pages cover it. */
    unsigned char vec;
    for (uintptr_t p = mapped_end; p < end; p += page)
        if (mincore((void *)p, page, &vec) == 0 || errno != ENOMEM)
            return 0;
    size_t len = end - t.start;
    char *raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    char *tmp = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
    if (tmp > raw)
        munmap(raw, (size_t)(tmp - raw));
    if (tmp + len < raw + len + HUGE)
        munmap(tmp + len, (size_t)(raw + len + HUGE - (tmp + len)));
    madvise(tmp, len, MADV_HUGEPAGE);
    memcpy(tmp, (const void *)t.start, t.end - t.start);
    if (huge_bytes_at((uintptr_t)tmp) < len || mprotect(tmp, len, PROT_READ | PROT_EXEC) < 0) {
        munmap(tmp, len);
        return 0; /* no huge pages to be had: 4 KiB copies would only cost more */
    }
    /* The code running here moves too: same bytes, same addresses. */
    if (mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)t.start) == MAP_FAILED) {
        munmap(tmp, len);
        return -1;
    }
    return (long)len;
}
