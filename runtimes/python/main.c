/*
 * sand-worker-python: the grain worker for Python grains. All the work is in the worker core
 * (sand_worker_main) and the embedded-CPython runtime (python.c).
 */
#include "sand/worker.h"

extern const sand_worker_runtime_t sand_python_runtime;

int main(int argc, char **argv)
{
    return sand_worker_main(argc, argv, &sand_python_runtime);
}
