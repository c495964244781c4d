/*
 * sand-worker-c: the grain worker for C grains. All the work is in the worker core
 * (sand_worker_main) and the C runtime (cgrain.c).
 */
#include "sand/worker.h"

extern const sand_worker_runtime_t sand_c_runtime;

/* Keeps every grain.h function in the executable (they live in a static library and the
 * worker itself calls only some of them), so that dlopen()ed grains find them. */
extern void *const sand_c_exports[];
void *volatile sand_c_keep;

int main(int argc, char **argv)
{
    sand_c_keep = (void *)sand_c_exports;
    return sand_worker_main(argc, argv, &sand_c_runtime);
}
