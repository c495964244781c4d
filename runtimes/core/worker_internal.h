/*
 * Private declarations of the worker core: the grain instance context, the framed protocol an
 * instance uses to report its outcome to the worker over a pipe ([u32 len][u8 type][payload],
 * len counting type + payload, little endian as the host: both ends are the same binary), and
 * the outcome the worker assembles from those frames.
 */
#ifndef SAND_WORKER_INTERNAL_H
#define SAND_WORKER_INTERNAL_H

#include "sand/worker.h"

#include <hiredis/hiredis.h>

/* AddressSanitizer builds (gcc defines __SANITIZE_ADDRESS__, clang has the feature test): they
 * keep glibc's malloc (malloc.c) and the zygote's memory where it is (filemem.c). */
#if defined(__SANITIZE_ADDRESS__)
#define SAND_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SAND_ASAN 1
#endif
#endif

enum {
    SAND_FRAME_START = 1,  /* i64 epoch us right before the handler */
    SAND_FRAME_FINISH = 2, /* i64 epoch us right after the handler */
    SAND_FRAME_OUTPUT = 3, /* output JSON */
    SAND_FRAME_ERROR = 4,  /* {"type","message","traceback"?} JSON */
    SAND_FRAME_NEXT = 5,   /* u32 step length, step, event JSON */
    SAND_FRAME_LOG = 6,    /* one log line (context.log) */
    SAND_FRAME_LOGK = 7,   /* kind ("stdout", "stderr", "system"), NUL, one log line */
};

/* The instance's data layer connections, opened lazily on first use (in the instance, never in
 * the worker parent in fork mode). */
typedef struct sand_dl {
    redisContext *conn[2]; /* local, global */
    const char *url[2];
    const char *user[2];
    const char *pass[2];
} sand_dl_t;

struct sand_context {
    const char *app, *grain, *step, *workflow, *exec;
    int attempt;
    int64_t kill_at_us;        /* epoch us when the instance is killed */
    const sand_workflow_t *wf; /* NULL for a direct grain invocation */
    size_t value_max;
    int fd;            /* frame sink: a pipe to the worker, or -1 ... */
    sand_bytes_t *buf; /* ... then frames are appended here (reuse mode) */
    sand_dl_t *dl;
    char *error_msg; /* sand_ctx_error() */
    bool reported;   /* an OUTPUT or ERROR frame was sent */
    char pend[26];   /* START/FINISH frames not written yet (sent with the next frame) */
    size_t pend_len;
    sand_bytes_t *hold; /* forked instance: the outcome's frames, written at its end */
    bool thread;        /* an instance thread: a failed write drops the frame, never _exit() */
    bool gone;          /* thread: the worker closed the pipe; later frames are dropped */
};

struct sand_buf {
    sand_bytes_t b;
};

/* Sends one frame of the given type (payload in two pieces, b may be NULL). Writes that fail
 * because the worker is gone end the instance (_exit), since nobody would read the outcome; on
 * an instance thread (ctx->thread) they mark ctx gone instead and later frames are dropped. */
void sand__frame_send(sand_context *ctx, int type, const void *a, size_t alen, const void *b,
                      size_t blen);

/* Writes the frames held back by sand__frame_send() (START, FINISH, and with ctx->hold every
 * frame but log lines), if any. Called when the instance's handler is done. */
void sand__frame_flush(sand_context *ctx);

/* Moves this process's private regions with at least min_anon bytes of anonymous memory onto
 * a memfd mapped privately at the same addresses (filemem.c). Returns the bytes moved or < 0. */
long sand__memory_to_file(size_t min_anon);

/* True when line is the header of a /proc/self/smaps entry, with its address range. */
bool sand__smaps_header(const char *line, unsigned long *start, unsigned long *end);

/* Moves the executable's code segment onto anonymous transparent huge pages, in place
 * (hugetext.c): forked instances then inherit it mapped. Returns the bytes moved, 0 when it
 * cannot (not linked for it, no huge pages), or < 0. */
long sand__text_to_hugepages(void);

/* Switches malloc() and friends of this process to the instance heap (malloc.c, in the
 * forking workers' executables; a no-op elsewhere). Called first thing in a new instance. */
void sand__malloc_instance(void);

/* Closes the data layer connections. */
void sand__dl_release(sand_dl_t *dl);

/* Connects to a Redis endpoint "unix:/path" or "tcp://host:port" (or "host:port") and
 * authenticates with user/pass when given (either may be NULL or ""). Returns a connected
 * blocking context that the caller frees with redisFree(), or NULL with err set. */
redisContext *sand__redis_connect(const char *url, const char *user, const char *pass,
                                  sand_err *err);

/* What one instance reported, assembled by the worker from its frames. */
typedef struct sand_outcome {
    int64_t started_us, finished_us;
    char *output; /* OUTPUT JSON (NUL-terminated), or NULL */
    size_t output_len;
    char *error;            /* ERROR JSON object text, or NULL */
    sand_vec_t next_steps;  /* char * step names of NEXT frames, in call order */
    sand_vec_t next_events; /* char * event JSON, parallel to next_steps */
} sand_outcome_t;

void sand__outcome_init(sand_outcome_t *o);
void sand__outcome_release(sand_outcome_t *o);

#endif
