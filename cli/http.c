/*
 * sandctl's HTTP layer over libcurl's easy interface: one request per call (keep-alive is not
 * needed by a short-lived client), the API key as a bearer token, the response body kept in a
 * bounded buffer or streamed line by line (logs -f), and the mapping from transport failures and
 * HTTP statuses to sandctl's exit codes.
 */
#include "cli.h"

#include "cli_internal.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_LINE (1 << 20) /* longest streamed line kept; longer ones are cut */

void sand__cli_resp_init(sand_cli_resp_t *r)
{
    r->status = 0;
    r->execution_id[0] = '\0';
    sand_bytes_init(&r->body, SAND_CLI_MAX_RESPONSE);
}

void sand__cli_resp_release(sand_cli_resp_t *r)
{
    sand_bytes_release(&r->body);
}

int sand__cli_fail(sand_cli_t *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sandctl: ", c->err);
    vfprintf(c->err, fmt, ap);
    fputc('\n', c->err);
    va_end(ap);
    fflush(c->err);
    return code;
}

typedef struct req_state {
    sand_cli_t *c;
    CURL *h;
    sand_cli_resp_t *resp;
    sand_cli_line_cb line_cb;
    void *ud;
    sand_bytes_t line; /* partial line while streaming */
    bool too_big;
} req_state;

static void flush_lines(req_state *st, bool final)
{
    sand_bytes_t *b = &st->line;
    size_t start = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] != '\n')
            continue;
        size_t n = i - start;
        if (n && b->data[start + n - 1] == '\r')
            n--;
        b->data[start + n] = '\0';
        st->line_cb(st->c, b->data + start, n, st->ud);
        start = i + 1;
    }
    sand_bytes_consume(b, start);
    if (final && b->len)
        st->line_cb(st->c, b->data, b->len, st->ud);
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    req_state *st = ud;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(st->h, CURLINFO_RESPONSE_CODE, &status);
    /* Only successful responses are streamed; an error body is kept for the message. */
    if (!st->line_cb || status >= 300) {
        if (sand_bytes_append(&st->resp->body, p, n) < 0) {
            st->too_big = true;
            return 0;
        }
        return n;
    }
    size_t off = 0;
    while (off < n) {
        size_t take = n - off;
        if (st->line.len + take > MAX_LINE)
            take = MAX_LINE - st->line.len;
        if (take == 0) {
            /* a line longer than MAX_LINE: deliver what we have and go on */
            st->line_cb(st->c, st->line.data, st->line.len, st->ud);
            sand_bytes_reset(&st->line);
            continue;
        }
        if (sand_bytes_append(&st->line, p + off, take) < 0) {
            st->too_big = true;
            return 0;
        }
        off += take;
        flush_lines(st, false);
    }
    return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    req_state *st = ud;
    size_t n = size * nmemb;
    static const char name[] = "x-sand-execution-id:";
    if (n > sizeof(name) - 1 && !strncasecmp(p, name, sizeof(name) - 1)) {
        const char *v = p + sizeof(name) - 1;
        size_t vlen = n - (sizeof(name) - 1);
        while (vlen && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        if (vlen >= sizeof(st->resp->execution_id))
            vlen = sizeof(st->resp->execution_id) - 1;
        memcpy(st->resp->execution_id, v, vlen);
        st->resp->execution_id[vlen] = '\0';
    }
    return n;
}

int sand__cli_request(sand_cli_t *c, const char *method, const char *path, const char *ctype,
                      const void *body, size_t len, long timeout_ms, sand_cli_line_cb line_cb,
                      void *ud, sand_cli_resp_t *resp)
{
    req_state st = {.c = c, .resp = resp, .line_cb = line_cb, .ud = ud};
    sand_bytes_init(&st.line, MAX_LINE + 1);
    sand_bytes_t url, hdr;
    sand_bytes_init(&url, 8192);
    sand_bytes_init(&hdr, 1024);
    struct curl_slist *headers = NULL;
    char errbuf[CURL_ERROR_SIZE] = {0};
    int rc = SAND_CLI_OK;

    sand__cli_load_key(c);
    CURL *h = curl_easy_init();
    st.h = h;
    if (!h || sand_bytes_appendf(&url, "%s%s", c->server, path) < 0) {
        rc = sand__cli_fail(c, SAND_CLI_FAILED, "out of memory");
        goto done;
    }
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    if (ctype) {
        sand_bytes_reset(&hdr);
        sand_bytes_appendf(&hdr, "Content-Type: %s", ctype);
        headers = curl_slist_append(headers, hdr.data);
    }
    if (c->key[0]) {
        sand_bytes_reset(&hdr);
        sand_bytes_appendf(&hdr, "Authorization: Bearer %s", c->key);
        headers = curl_slist_append(headers, hdr.data);
    }
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sandctl/0.1");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (timeout_ms > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (body || !strcmp(method, "POST") || !strcmp(method, "PUT")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &st);

    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (line_cb && cc == CURLE_OK && resp->status < 300)
        flush_lines(&st, true);
    if (cc == CURLE_WRITE_ERROR && st.too_big) {
        rc = sand__cli_fail(c, SAND_CLI_FAILED, "%s %s: response larger than %d bytes", method,
                            path, SAND_CLI_MAX_RESPONSE);
    } else if (cc != CURLE_OK) {
        rc = sand__cli_fail(c, SAND_CLI_UNREACHABLE, "cannot reach sandd at %s: %s", c->server,
                            errbuf[0] ? errbuf : curl_easy_strerror(cc));
    }
done:
    curl_slist_free_all(headers);
    if (h)
        curl_easy_cleanup(h);
    sand_bytes_release(&url);
    sand_bytes_release(&hdr);
    sand_bytes_release(&st.line);
    return rc;
}

int sand__cli_path_segment(sand_bytes_t *out, const char *segment)
{
    char *esc = curl_easy_escape(NULL, segment, 0);
    if (!esc)
        return SAND_ENOMEM;
    int rc = sand_bytes_appendf(out, "/%s", esc);
    curl_free(esc);
    return rc;
}

json_t *sand__cli_parse_body(sand_cli_t *c, const sand_cli_resp_t *resp, const char *what)
{
    json_error_t jerr;
    json_t *v =
        json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, JSON_DECODE_ANY, &jerr);
    if (!v)
        sand__cli_fail(c, SAND_CLI_FAILED, "%s: the server's answer is not JSON (HTTP %ld): %s",
                       what, resp->status, jerr.text);
    return v;
}

void sand__cli_print_json(FILE *f, const json_t *v)
{
    json_dumpf(v, f, JSON_INDENT(2) | JSON_ENCODE_ANY);
    fputc('\n', f);
}

int sand__cli_http_error(sand_cli_t *c, const sand_cli_resp_t *resp, const char *what)
{
    int code;
    switch (resp->status) {
    case 401:
        return sand__cli_fail(c, SAND_CLI_UNREACHABLE,
                              "%s: the server refused the API key (HTTP 401)%s", what,
                              c->key[0] ? "" : "; set --key, SAND_API_KEY or SAND_DATA_DIR");
    case 400:
    case 405:
    case 413:
    case 414:
    case 415:
    case 422:
        code = SAND_CLI_USAGE;
        break;
    default:
        code = SAND_CLI_FAILED;
        break;
    }
    /* {"error":{"code","message"}} when the server says why; the raw body otherwise */
    json_t *v = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL);
    const json_t *e = json_object_get(v, "error");
    const char *msg = sand__cli_jstr(e, "message", NULL);
    if (msg) {
        const char *file = sand__cli_jstr(e, "file", NULL);
        int64_t line = sand__cli_jint(e, "line", 0);
        if (file && line > 0)
            sand__cli_fail(c, code, "%s: %s:%lld: %s (HTTP %ld)", what, file, (long long)line, msg,
                           resp->status);
        else if (file)
            sand__cli_fail(c, code, "%s: %s: %s (HTTP %ld)", what, file, msg, resp->status);
        else
            sand__cli_fail(c, code, "%s: %s (HTTP %ld)", what, msg, resp->status);
    } else {
        int n = (int)(resp->body.len > 200 ? 200 : resp->body.len);
        while (n > 0 && (resp->body.data[n - 1] == '\n' || resp->body.data[n - 1] == '\r'))
            n--;
        sand__cli_fail(c, code, "%s: HTTP %ld%s%.*s", what, resp->status, n ? ": " : "", n,
                       n ? resp->body.data : "");
    }
    json_decref(v);
    return code;
}
