/*
 * sand-worker-java: the grain worker for Java grains. All the work is in the worker core
 * (sand_worker_main, in threads mode) and the JNI runtime (java.c).
 */
#include "sand/worker.h"

extern const sand_worker_runtime_t sand_java_runtime;

int main(int argc, char **argv)
{
    return sand_worker_main(argc, argv, &sand_java_runtime);
}
