/*
 * The smallest C "handler" process: reads nothing, writes a one-line JSON result and exits.
 * sand-bench-startup spawns it (directly or through docker run/exec) to time a process start
 * of the C runtime.
 */
#include <stdio.h>

int main(void)
{
    fputs("{\"ok\":true}\n", stdout);
    return 0;
}
