/*
 * Moving a process's private memory onto a file (see sand__memory_to_file() in
 * worker_internal.h and docs/internals/instance-heap.md, "The zygote's memory on a file").
 *
 * fork() copies the page table entry of every anonymous page of the parent, and the child's
 * exit tears each of them down again, whether the child touches the page or not: for a CPython
 * zygote, ~1,200 pages each way, per instance. Private mappings of a file are different: a
 * child gets none of the parent's entries for pages the parent never wrote since the mapping
 * was made, and faults in (16 at a time, the kernel's fault-around) only those it touches.
 * So the zygote copies its large anonymous regions into a memfd once and maps the memfd
 * privately over them at the same addresses: the contents and copy-on-write semantics are
 * unchanged (nobody ever writes the memfd itself), but each instance now pays only for the
 * pages it uses.
 */
#define _GNU_SOURCE
#include "worker_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define REGIONS_MAX    64
#define REGION_LEN_MAX ((uintptr_t)256 << 20) /* bigger ones are reservations, not a heap */

typedef struct region {
    uintptr_t start, end;
    int prot;
} region_t;

bool sand__smaps_header(const char *line, unsigned long *start, unsigned long *end)
{
    /* "start-end perms ...": the only lines whose first field holds a '-' */
    const char *sp = strchr(line, ' ');
    return sp && memchr(line, '-', (size_t)(sp - line)) && sscanf(line, "%lx-%lx", start, end) == 2;
}

/* Reads the private regions of this process with at least min_anon bytes of anonymous pages,
 * except those holding the stack or the thread's own data (addresses in keep). */
static int find_regions(region_t *out, size_t min_anon, const uintptr_t *keep, int nkeep)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    region_t cur = {0};
    bool cand = false;
    while (fgets(line, sizeof(line), f)) {
        unsigned long a, b;
        char perm[8];
        if (sand__smaps_header(line, &a, &b) && sscanf(line, "%*s %7s", perm) == 1) {
            cur = (region_t){a, b, 0};
            cand = perm[3] == 'p' && perm[0] == 'r' && !strstr(line, "[stack]") &&
                   !strstr(line, "[vvar") && !strstr(line, "[vdso]") && !strstr(line, "[vsyscall]");
            if (cand) {
                cur.prot = PROT_READ | (perm[1] == 'w' ? PROT_WRITE : 0);
                for (int k = 0; k < nkeep; k++)
                    if (keep[k] >= a && keep[k] < b)
                        cand = false;
                if (perm[2] == 'x')
                    cand = false;
            }
            continue;
        }
        unsigned long kb;
        if (cand && sscanf(line, "Anonymous: %lu kB", &kb) == 1) {
            if (kb * 1024 >= min_anon && n < REGIONS_MAX && cur.end - cur.start <= REGION_LEN_MAX)
                out[n++] = cur;
            cand = false;
        }
    }
    fclose(f);
    return n;
}

long sand__memory_to_file(size_t min_anon)
{
#ifdef SAND_ASAN
    (void)min_anon;
    return 0; /* its shadow memory is no place for this */
#endif
    int here = 0;
    uintptr_t keep[2] = {(uintptr_t)&here, (uintptr_t)&errno};
    region_t r[REGIONS_MAX];
    int n = find_regions(r, min_anon, keep, 2);
    if (n <= 0)
        return n;
    int fd = memfd_create("sand-zygote", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    off_t total = 0;
    for (int i = 0; i < n; i++)
        total += (off_t)(r[i].end - r[i].start);
    if (ftruncate(fd, total) < 0) {
        close(fd);
        return -1;
    }
    /* From here on: system calls only, nothing that could write to a region being moved
     * between its copy and its mapping. */
    off_t off = 0;
    long moved = 0;
    for (int i = 0; i < n; i++) {
        size_t len = r[i].end - r[i].start;
        size_t done = 0;
        while (done < len) {
            ssize_t w = pwrite(fd, (const char *)r[i].start + done, len - done, off + (off_t)done);
            if (w <= 0)
                break;
            done += (size_t)w;
        }
        if (done == len && mmap((void *)r[i].start, len, r[i].prot, MAP_PRIVATE | MAP_FIXED, fd,
                                off) != MAP_FAILED)
            moved += (long)len;
        off += (off_t)len;
    }
    close(fd);
    return moved;
}
