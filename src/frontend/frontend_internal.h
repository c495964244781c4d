/*
 * Private structures of the HTTP server (src/frontend): the server, one connection per accepted
 * socket and the request object shared by http.c (transport, parsing, responses) and http_req.c
 * (request accessors, query decoding). Nothing here is visible outside the library.
 */
#ifndef SAND_FRONTEND_INTERNAL_H
#define SAND_FRONTEND_INTERNAL_H

#include "sand/http.h"

/* Bytes read from a socket at once; also the most unparsed (pipelined) input kept per
 * connection while a request is being answered. */
#define SAND_HTTP_IN_CAP 16384

typedef struct sand_http_conn sand_http_conn_t;

typedef enum req_state {
    REQ_PARSING = 0, /* owned by the library, being filled by the parser */
    REQ_HANDLER,     /* handed to the handler, waiting for an answer */
    REQ_STREAMING,   /* chunked response begun, waiting for more chunks or the end */
} req_state;

typedef enum hdr_phase {
    HDR_URL = 0,
    HDR_FIELD,
    HDR_VALUE,
    HDR_DONE,
} hdr_phase;

typedef struct sand_http_hdr {
    const char *name;
    const char *value;
    uint32_t name_off, value_off; /* offsets into req->hdr while it may still move */
} sand_http_hdr;

struct sand_http_req {
    sand_http_conn_t *conn; /* NULL once the connection is gone */
    req_state state;
    hdr_phase phase;
    bool keep_alive;
    bool head;   /* HEAD request: responses carry no body */
    bool http10; /* HTTP/1.0 peer: no chunked encoding */
    bool in_on_close;
    enum http_method method;
    sand_bytes_t hdr; /* url NUL name NUL value NUL ..., bounded by max_header */
    size_t url_len;
    const char *path;
    const char *query;
    sand_http_hdr *hv;
    size_t nh, hv_cap;
    sand_bytes_t body; /* bounded by this request's body limit */
    void *data;
    sand_http_req_close_cb on_close;
    void *on_close_ud;
};

struct sand_http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout, then linger timeout while draining */
    uv_shutdown_t shutdown;
    http_parser parser;
    sand_http_server_t *srv;
    sand_list_t link;       /* srv->conns */
    sand_list_t resume;     /* srv->resume when queued there, else self-linked */
    sand_http_req_t *req;   /* the request being parsed or answered */
    sand_http_req_t *spare; /* a finished request kept for reuse */
    sand_bytes_t head;      /* response head scratch, reused */
    uint64_t last_active;   /* uv_now() of the last read or write progress */
    size_t out_queued;      /* bytes handed to uv_write and not yet written */
    size_t in_off, in_len;  /* unparsed input is in[in_off, in_len) */
    int handles;            /* open libuv handles (tcp, timer) */
    int fail_status;        /* set by parser callbacks to answer an error */
    const char *fail_code;
    char fail_msg[160];
    bool closing;   /* uv_close() called */
    bool draining;  /* response sent, write side shut down, discarding input */
    bool finishing; /* last response queued, no further request is read */
    bool reading;
    bool in_dispatch;
    int pending_writes;
    char in[SAND_HTTP_IN_CAP];
};

struct sand_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_idle_t resume_idle; /* runs pipelined requests after an asynchronous answer */
    sand_http_opts_t opts;
    sand_list_t conns;
    sand_list_t resume;
    size_t nconns;
    int handles; /* open libuv handles owned by the server and its connections */
    int port;
    bool closing;
    sand_http_server_close_cb close_cb;
    void *close_ud;
};

/* Prepares req for a new message on conn (keeps its buffers). */
void sand__http_req_reset(sand_http_req_t *req, sand_http_conn_t *conn);
/* Frees req and everything it holds. */
void sand__http_req_free(sand_http_req_t *req);
/* Parser data callbacks: store the request target and header lines in req->hdr. Each returns 0,
 * SAND_ETOOBIG (header bytes or lines over the limits) or SAND_ENOMEM. */
int sand__http_req_add_url(sand_http_req_t *req, const char *at, size_t n);
int sand__http_req_add_field(sand_http_req_t *req, const char *at, size_t n, size_t max_headers);
int sand__http_req_add_value(sand_http_req_t *req, const char *at, size_t n);
/* Terminates the stored header block and resolves path, query and header pointers. Returns 0 or
 * SAND_ETOOBIG when the header bytes exceed the limit. */
int sand__http_req_headers_done(sand_http_req_t *req);

#endif
