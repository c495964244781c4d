/*
 * Common building blocks shared by every sand component: the error convention (one caller-owned
 * sand_err threaded through every call, messages wrapped with context by each layer), levelled
 * logging with a pluggable sink, a bounded byte buffer for everything a peer controls, a pointer
 * vector, an intrusive list, a string-keyed hash map, clocks, and parsers for the duration and
 * size literals used in app.yaml and sandd.yaml. Nothing here allocates behind the caller's back
 * except where a function says so; nothing here is thread-safe unless it says so.
 */
#ifndef SAND_COMMON_H
#define SAND_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define SAND_PRINTF(a, b)                    __attribute__((format(printf, a, b)))
#define SAND_UNUSED                          __attribute__((unused))
#define SAND_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define SAND_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- errors ------------------------------------------------------------------------------ */

/* Error codes are negative so that "rc < 0" means failure everywhere. */
enum {
    SAND_OK = 0,
    SAND_EINVAL = -1,  /* malformed input */
    SAND_ENOMEM = -2,  /* allocation failed */
    SAND_ETOOBIG = -3, /* a bounded buffer or limit was exceeded */
    SAND_ENOTFOUND = -4,
    SAND_EIO = -5, /* system call or I/O failure; errno text is in the message */
    SAND_EEXIST = -6,
    SAND_ETIMEDOUT = -7,
    SAND_EBUS = -8, /* Redis or Kafka refused or failed */
    SAND_EPERM = -9,
    SAND_ECANCELED = -10,
    SAND_EBUSY = -11,
};

/* Caller-owned error slot. msg is always NUL-terminated. */
typedef struct sand_err {
    int code;
    char msg[256];
} sand_err;

/* Records code and the formatted message in err (err may be NULL). Returns code. */
int sand_err_set(sand_err *err, int code, const char *fmt, ...) SAND_PRINTF(3, 4);

/* Prefixes the message already in err with formatted context and ": " (err may be NULL); if
 * code is 0 the code already recorded is kept. Returns the recorded code. */
int sand_err_wrap(sand_err *err, int code, const char *fmt, ...) SAND_PRINTF(3, 4);

/* Records code with "<formatted>: <strerror(errno)>". Returns code. */
int sand_err_errno(sand_err *err, int code, const char *fmt, ...) SAND_PRINTF(3, 4);

void sand_err_clear(sand_err *err);

/* Short symbolic name of a code ("EINVAL"...), static storage. */
const char *sand_err_name(int code);

/* ---- logging ----------------------------------------------------------------------------- */

typedef enum sand_log_level {
    SAND_LOG_DEBUG = 0,
    SAND_LOG_INFO = 1,
    SAND_LOG_WARN = 2,
    SAND_LOG_ERROR = 3,
    SAND_LOG_OFF = 4,
} sand_log_level;

/* A sink receives one formatted line without trailing newline. */
typedef void (*sand_log_sink_cb)(sand_log_level level, const char *line, void *ud);

/* Default sink writes "TIME LEVEL component: message" to stderr. The sink and level are the only
 * process-wide mutable state; set them before starting threads. */
void sand_log_set_sink(sand_log_sink_cb sink, void *ud);
void sand_log_set_level(sand_log_level level);
sand_log_level sand_log_get_level(void);
/* Parses "debug|info|warn|error|off". Returns 0 or SAND_EINVAL. */
int sand_log_parse_level(const char *s, sand_log_level *out);
void sand_log(sand_log_level level, const char *component, const char *fmt, ...) SAND_PRINTF(3, 4);

#define SAND_DEBUG(comp, ...)                                                                      \
    do {                                                                                           \
        if (sand_log_get_level() <= SAND_LOG_DEBUG)                                                \
            sand_log(SAND_LOG_DEBUG, comp, __VA_ARGS__);                                           \
    } while (0)
#define SAND_INFO(comp, ...)  sand_log(SAND_LOG_INFO, comp, __VA_ARGS__)
#define SAND_WARN(comp, ...)  sand_log(SAND_LOG_WARN, comp, __VA_ARGS__)
#define SAND_ERROR(comp, ...) sand_log(SAND_LOG_ERROR, comp, __VA_ARGS__)

/* ---- bounded byte buffer ----------------------------------------------------------------- */

/* A growable byte buffer with a hard maximum. data is always NUL-terminated after len (the NUL
 * is not counted), so text can be used directly. Caller owns the struct; _release frees data. */
typedef struct sand_bytes {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* appends that would exceed max fail with SAND_ETOOBIG and change nothing */
} sand_bytes_t;

void sand_bytes_init(sand_bytes_t *b, size_t max);
void sand_bytes_release(sand_bytes_t *b);
void sand_bytes_reset(sand_bytes_t *b); /* len = 0, keeps memory */
/* Returns 0, SAND_ETOOBIG (over max) or SAND_ENOMEM. */
int sand_bytes_append(sand_bytes_t *b, const void *p, size_t n);
int sand_bytes_appends(sand_bytes_t *b, const char *s);
int sand_bytes_appendf(sand_bytes_t *b, const char *fmt, ...) SAND_PRINTF(2, 3);
int sand_bytes_vappendf(sand_bytes_t *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal (quotes and escapes). */
int sand_bytes_append_json_str(sand_bytes_t *b, const char *s, size_t n);
/* Removes the first n bytes. */
void sand_bytes_consume(sand_bytes_t *b, size_t n);
/* Hands the data to the caller (who frees it) and resets b to empty. */
char *sand_bytes_steal(sand_bytes_t *b, size_t *len);

/* ---- vector of pointers ------------------------------------------------------------------ */

typedef struct sand_vec {
    void **items;
    size_t len;
    size_t cap;
} sand_vec_t;

void sand_vec_init(sand_vec_t *v);
/* Frees the array; calls free_fn on each item first when free_fn is not NULL. */
void sand_vec_release(sand_vec_t *v, void (*free_fn)(void *));
int sand_vec_push(sand_vec_t *v, void *item);   /* 0 or SAND_ENOMEM */
void *sand_vec_remove(sand_vec_t *v, size_t i); /* order-preserving */

/* ---- intrusive doubly-linked list -------------------------------------------------------- */

typedef struct sand_list {
    struct sand_list *prev, *next;
} sand_list_t;

static inline void sand_list_init(sand_list_t *h)
{
    h->prev = h->next = h;
}
static inline bool sand_list_empty(const sand_list_t *h)
{
    return h->next == h;
}
static inline void sand_list_insert_tail(sand_list_t *h, sand_list_t *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}
static inline void sand_list_remove(sand_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define sand_list_foreach_safe(pos, tmp, head)                                                     \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

/* ---- string-keyed hash map --------------------------------------------------------------- */

/* Open-addressing map from NUL-terminated string keys (copied) to borrowed void* values. */
typedef struct sand_map {
    struct sand_map_slot *slots;
    size_t cap;  /* power of two or 0 */
    size_t len;  /* live entries */
    size_t used; /* live + tombstones */
} sand_map_t;

void sand_map_init(sand_map_t *m);
/* Frees keys and slots; calls free_fn on each value when not NULL. */
void sand_map_release(sand_map_t *m, void (*free_fn)(void *));
/* Inserts or replaces. If a value was replaced and old is not NULL, *old receives it. */
int sand_map_set(sand_map_t *m, const char *key, void *value, void **old);
void *sand_map_get(const sand_map_t *m, const char *key);
/* Removes and returns the value (NULL if absent). */
void *sand_map_del(sand_map_t *m, const char *key);
/* Iteration: start with *iter = 0; returns false at the end. Safe to delete the current key. */
bool sand_map_next(const sand_map_t *m, size_t *iter, const char **key, void **value);

/* ---- time -------------------------------------------------------------------------------- */

/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t sand_now_us(void);
/* Microseconds of CLOCK_MONOTONIC, for intervals and deadlines. */
int64_t sand_mono_us(void);

/* ---- literals ---------------------------------------------------------------------------- */

/* Parses a duration: an integer followed by ms, s, m or h ("30s", "100ms", "2m"). A bare integer
 * is seconds. Returns 0 and *ms, or SAND_EINVAL with a message in err. */
int sand_parse_duration_ms(const char *s, int64_t *ms, sand_err *err);
/* Parses a size: integer with optional suffix Ki, Mi, Gi (powers of 1024), K, M, G (powers of
 * 1000) or B ("256Mi", "64MiB", "4096"). Returns 0 and *bytes, or SAND_EINVAL. */
int sand_parse_size(const char *s, int64_t *bytes, sand_err *err);
/* Parses a decimal int64 with range check (the whole string must be a number). */
int sand_parse_int(const char *s, int64_t min, int64_t max, int64_t *out, sand_err *err);

/* ---- endpoints ---------------------------------------------------------------------------- */

/* A Redis endpoint: "unix:/path/redis.sock" (also "unix:///path"), "tcp://host:port" or
 * "host:port"; the port defaults to 6379. */
typedef struct sand_endpoint {
    bool unix_socket;
    char path[108]; /* unix: absolute socket path (fits a sockaddr_un) */
    char host[256]; /* tcp */
    int port;
} sand_endpoint_t;

/* Parses url into out. Returns 0, or SAND_EINVAL with "endpoint 'URL' ..." in err. */
int sand_endpoint_parse(const char *url, sand_endpoint_t *out, sand_err *err);

/* ---- strings ----------------------------------------------------------------------------- */

/* snprintf that reports truncation: returns the length, or SAND_ETOOBIG when buf was too small
 * (buf then holds a truncated, NUL-terminated prefix). For paths and keys built from input. */
int sand_fmt(char *buf, size_t size, const char *fmt, ...) SAND_PRINTF(3, 4);

/* Copies at most size-1 bytes and NUL-terminates; returns strlen(src) (truncated if >= size). */
size_t sand_strlcpy(char *dst, const char *src, size_t size);
/* strdup/strndup that abort on allocation failure is NOT offered: these return NULL. */
char *sand_strdup(const char *s);
char *sand_strndup(const char *s, size_t n);
/* Fills out with 2*n lowercase hex chars of n random bytes from getrandom(); out needs 2n+1. */
int sand_random_hex(char *out, size_t n);

#endif
