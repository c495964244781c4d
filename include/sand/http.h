/*
 * An embeddable HTTP/1.1 server on a caller-owned libuv loop: the transport under sandd's frontend
 * (routing of sandd's URLs lives in the daemon). It parses with http_parser, reads each request
 * completely (headers bounded by max_header, body bounded per request by a callback) and hands it
 * to one handler; the handler, or any later callback on the same loop, answers with a complete
 * response or a chunked stream. Keep-alive, pipelining (one request at a time per connection, in
 * order), Expect: 100-continue, idle timeouts and bounded output queues are handled here, and
 * framing errors are answered with JSON errors (400, 405, 413) before the connection is closed.
 * Every function in this header runs on the loop's thread and is not thread-safe.
 * docs/internals/http.md describes the request lifecycle in detail.
 */
#ifndef SAND_HTTP_H
#define SAND_HTTP_H

#include "sand/common.h"

#include <http_parser.h>
#include <uv.h>

#define SAND_HTTP_DEFAULT_MAX_BODY    (6u * 1024 * 1024) /* bytes */
#define SAND_HTTP_DEFAULT_MAX_HEADER  (16u * 1024)       /* bytes: request line + headers */
#define SAND_HTTP_DEFAULT_MAX_CONNS   10000u
#define SAND_HTTP_DEFAULT_IDLE_MS     60000u
#define SAND_HTTP_DEFAULT_MAX_OUTPUT  (4u * 1024 * 1024) /* bytes queued per connection */
#define SAND_HTTP_DEFAULT_MAX_HEADERS 64u                /* header lines per request */

typedef struct sand_http_server sand_http_server_t;
typedef struct sand_http_req sand_http_req_t;

/* Called once per request, after the whole body has been read. The handler (or any later loop
 * callback) must eventually complete the request with sand_http_respond*() or
 * sand_http_stream_begin() + sand_http_stream_end(). See "Lifetime of a request" below. */
typedef void (*sand_http_handler_cb)(sand_http_req_t *req, void *ud);

/* Called when the request line and headers are complete (method, path, query and headers are
 * available; the body is not). Returns the largest body accepted for this request: a larger
 * Content-Length is answered 413 at once, a chunked body is answered 413 as soon as it crosses
 * the limit. The request must not be answered or stored from here. */
typedef size_t (*sand_http_body_limit_cb)(sand_http_req_t *req, void *ud);

/* Runs once when the server has closed its listener and every connection handle. */
typedef void (*sand_http_server_close_cb)(sand_http_server_t *srv, void *ud);

/* Runs once if the connection of an unfinished request goes away (peer closed or reset, write
 * error, idle timeout, sand_http_server_close()). The request is freed when this returns. */
typedef void (*sand_http_req_close_cb)(sand_http_req_t *req, void *ud);

/* Server options. Zero (or NULL) fields take the documented defaults; handler is required. The
 * struct is copied by sand_http_server_open(). */
typedef struct sand_http_opts {
    sand_http_handler_cb handler;       /* required */
    sand_http_body_limit_cb body_limit; /* NULL: every request gets max_body */
    void *ud;                           /* passed to handler and body_limit */
    size_t max_body;                    /* default SAND_HTTP_DEFAULT_MAX_BODY */
    size_t max_header;                  /* default SAND_HTTP_DEFAULT_MAX_HEADER */
    size_t max_headers;                 /* header lines; default SAND_HTTP_DEFAULT_MAX_HEADERS */
    size_t max_conns;  /* default SAND_HTTP_DEFAULT_MAX_CONNS; above it: accept, then close */
    uint64_t idle_ms;  /* keep-alive / read idle timeout; default SAND_HTTP_DEFAULT_IDLE_MS */
    size_t max_output; /* queued response bytes per connection before reading is paused and
                          stream writes are refused; default SAND_HTTP_DEFAULT_MAX_OUTPUT */
} sand_http_opts_t;

/* ---- server ------------------------------------------------------------------------------ */

/* Binds and listens on listen: "HOST:PORT" with an IPv4 literal ("127.0.0.1:8080",
 * "0.0.0.0:0") or "[IPV6]:PORT" ("[::1]:0"); port 0 picks a free port (see
 * sand_http_server_port()). The server's handles live on loop, which the caller owns and runs.
 * Returns 0 and *out, or < 0 (SAND_EINVAL for a bad address or options, SAND_EIO when binding
 * fails, SAND_ENOMEM) with a message in err. On failure a handle already created is closing: it
 * is released by the loop's next uv_run(), after which uv_loop_close() succeeds. */
int sand_http_server_open(uv_loop_t *loop, const char *listen, const sand_http_opts_t *opts,
                          sand_http_server_t **out, sand_err *err);

/* The port actually bound (useful after ":0"). */
int sand_http_server_port(const sand_http_server_t *srv);

/* Number of open client connections (for metrics and tests). */
size_t sand_http_server_conn_count(const sand_http_server_t *srv);

/* Starts closing: the listener and every connection are closed. Each unfinished request gets its
 * on_close callback from the loop as its connection finishes closing (never from inside this
 * call), and close_cb (may be NULL) runs once after the last handle is closed; srv is freed
 * right after close_cb returns. Requests whose owner registered no on_close stay allocated until
 * they are answered (the answer then fails with SAND_ECANCELED and frees them). Calling it twice
 * is a programming error. */
void sand_http_server_close(sand_http_server_t *srv, sand_http_server_close_cb close_cb, void *ud);

/* ---- request ----------------------------------------------------------------------------- *
 *
 * Lifetime of a request (all on the loop thread):
 *  - The library allocates req before calling body_limit/handler and owns its memory.
 *  - req stays valid until exactly one of these happens, whichever comes first:
 *      a) sand_http_respond(), sand_http_respond_take() or sand_http_respond_error() returns
 *         (whatever it returned), or sand_http_stream_end() returns;
 *      b) the on_close callback registered with sand_http_req_on_close() returns.
 *    After that req must not be touched. Strings returned by the accessors below live as long
 *    as req.
 *  - If the connection dies before the response is complete and an on_close callback is
 *    registered, it runs once, from a loop callback after the connection's handle has closed
 *    (never from inside a call the owner makes), and req is freed when it returns. Calls
 *    answering req from inside that callback fail with SAND_ECANCELED and do not free it.
 *    Between the connection's death and on_close, answering req returns SAND_ECANCELED and
 *    frees it as usual, and on_close then does not run.
 *  - If the connection dies and no on_close callback is registered, req is kept (detached from
 *    the dead connection) until the owner answers it; the answer returns SAND_ECANCELED and
 *    frees req. So an owner that always answers never leaks, and an owner that registers
 *    on_close and forgets req in it never touches freed memory.
 */

/* Method as text ("GET", "POST"...), static storage. */
const char *sand_http_req_method(const sand_http_req_t *req);
/* Method as http_parser's enum (HTTP_GET, HTTP_POST...). */
enum http_method sand_http_req_method_id(const sand_http_req_t *req);
/* Raw (not percent-decoded) path of the request target, without the query: "/v1/apps/a%20b". */
const char *sand_http_req_path(const sand_http_req_t *req);
/* Raw query string without '?', "" when there is none. */
const char *sand_http_req_query(const sand_http_req_t *req);

/* Looks up query parameter name in the request's query and writes its value, percent-decoded
 * ('+' means space), NUL-terminated, to buf (size len). A parameter without '=' has the value "".
 * Returns the decoded length, SAND_ENOTFOUND, SAND_ETOOBIG (value does not fit; buf holds a
 * truncated NUL-terminated prefix) or SAND_EINVAL (bad percent escape). */
int sand_http_query_get(const sand_http_req_t *req, const char *name, char *buf, size_t len);

/* Percent-decodes src (n bytes) into buf (size len, NUL-terminated); plus_is_space for form
 * encoding. Useful for path segments. Returns the decoded length, SAND_ETOOBIG or SAND_EINVAL. */
int sand_http_pct_decode(const char *src, size_t n, bool plus_is_space, char *buf, size_t len);

/* Value of the first header named name (case-insensitive), with surrounding blanks removed, or
 * NULL when absent. */
const char *sand_http_req_header(const sand_http_req_t *req, const char *name);
/* Number of header lines and the i-th one (0 <= i < count), in arrival order. */
size_t sand_http_req_header_count(const sand_http_req_t *req);
void sand_http_req_header_at(const sand_http_req_t *req, size_t i, const char **name,
                             const char **value);

/* The body read so far (complete when the handler runs); NUL-terminated after len. */
const char *sand_http_req_body(const sand_http_req_t *req, size_t *len);
/* Takes ownership of the body (free() it) without a copy; the request's body becomes empty.
 * Returns NULL with *len = 0 when the body is empty. */
char *sand_http_req_body_steal(sand_http_req_t *req, size_t *len);

/* One pointer of the owner's data, NULL until set. */
void sand_http_req_set_data(sand_http_req_t *req, void *data);
void *sand_http_req_data(const sand_http_req_t *req);

/* Registers (or with cb NULL, removes) the callback that runs if the connection dies before the
 * response is complete. Replaces a previous registration. */
void sand_http_req_on_close(sand_http_req_t *req, sand_http_req_close_cb cb, void *ud);

/* ---- responses --------------------------------------------------------------------------- */

/* Sends a complete response: status line, Content-Type (omitted when content_type is NULL),
 * Content-Length, Connection: close when the connection will close (keep-alive for an HTTP/1.0
 * peer that asked for it), then extra_headers verbatim (NULL or complete lines each ending in
 * "\r\n", e.g. "X-Sand-Execution-Id: abc\r\n"), then body (borrowed: what the socket does not
 * take at once is copied). A HEAD request gets the headers only; 204 and 304 get neither
 * Content-Length nor body. req becomes invalid when this returns, except on SAND_EINVAL.
 * Returns 0, SAND_ECANCELED when the connection is gone, or SAND_EINVAL when req was already
 * answered or is streaming, status is not 100..999 or the head would exceed 1 MiB (then req is
 * left as it was). */
int sand_http_respond(sand_http_req_t *req, int status, const char *content_type, const void *body,
                      size_t len, const char *extra_headers);

/* Like sand_http_respond() but takes ownership of body (malloc'd, freed by the library when it
 * has been written, also on failure), so large bodies are never copied. */
int sand_http_respond_take(sand_http_req_t *req, int status, const char *content_type, char *body,
                           size_t len, const char *extra_headers);

/* Sends status with Content-Type application/json and the body
 * {"error":{"code":"CODE","message":"MESSAGE"}} (both JSON-escaped). Same rules as
 * sand_http_respond(). */
int sand_http_respond_error(sand_http_req_t *req, int status, const char *code,
                            const char *message);

/* Starts a chunked response (Transfer-Encoding: chunked; an HTTP/1.0 peer gets the raw bytes and
 * the connection closes at the end). On 0, req stays valid until sand_http_stream_end() returns
 * or its on_close callback returns. SAND_ECANCELED (connection gone) ends req as an answer would
 * (it is freed, except inside on_close); SAND_EINVAL (already answered or streaming, bad status)
 * leaves req as it was. */
int sand_http_stream_begin(sand_http_req_t *req, int status, const char *content_type,
                           const char *extra_headers);

/* Queues data (borrowed; copied when it cannot be written at once) as one chunk; len 0 is a no-op
 * and so is any write on a HEAD request. Returns 0, SAND_ECANCELED when the peer is gone (req
 * stays valid: end it, or on_close follows from the loop), SAND_EBUSY when more than max_output
 * bytes are already queued (the data is dropped; the stream is intact), or SAND_EINVAL when no
 * stream was begun. */
int sand_http_stream_write(sand_http_req_t *req, const void *data, size_t len);

/* Writes the last chunk and completes the response; req becomes invalid when this returns
 * (except on SAND_EINVAL). Returns 0, SAND_ECANCELED when the peer is gone, or SAND_EINVAL when
 * no stream was begun (then req is left as it was). */
int sand_http_stream_end(sand_http_req_t *req);

/* Reason phrase of a status code ("Not Found"), "Unknown" for codes it does not know. */
const char *sand_http_status_text(int status);

#endif
