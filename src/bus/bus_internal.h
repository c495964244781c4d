/*
 * Private helpers shared by the bus library's files: process bookkeeping for the detached
 * embedded services (pid files, liveness checks that see through zombies, detached spawning)
 * and small file utilities. Nothing here touches the loop; everything is blocking and meant for
 * start-up paths only.
 */
#ifndef SAND_BUS_INTERNAL_H
#define SAND_BUS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "sand/common.h"

/* Reads a decimal pid from path. Returns the pid (> 0) or 0 when the file is missing or bad. */
pid_t sand__read_pidfile(const char *path);

/* True when pid is a live (not zombie) process whose executable name (/proc/pid/comm) starts
 * with comm. Reaps pid first when it is a dead child of ours, so a crashed service we started
 * is not mistaken for a live one. */
bool sand__proc_alive(pid_t pid, const char *comm);

/* Starts argv[0] (looked up on PATH when it has no '/') detached: new session, stdin from
 * /dev/null, stdout and stderr to out_path (or /dev/null when NULL). Returns 0 and *pid, or < 0. */
int sand__spawn_detached(char *const argv[], const char *out_path, pid_t *pid, sand_err *err);

/* Sends SIGTERM to pid, waits up to wait_ms for it to go, then SIGKILL. Reaps it when it is a
 * child of ours. Returns 0 when it is gone, SAND_ETIMEDOUT otherwise. */
int sand__proc_stop(pid_t pid, int wait_ms);

/* Writes data to path atomically (temp file + rename) with the given mode. Returns 0 or < 0. */
int sand__write_file_atomic(const char *path, const char *data, size_t len, int mode,
                            sand_err *err);

/* Reads at most cap-1 bytes of path into buf (NUL-terminated, trailing whitespace removed).
 * Returns the length or < 0 (SAND_ENOTFOUND when the file does not exist). */
int sand__read_small_file(const char *path, char *buf, size_t cap, sand_err *err);

/* Sleeps ms milliseconds (start-up polling only). */
void sand__sleep_ms(int ms);

#endif
