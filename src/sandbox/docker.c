/*
 * The Docker sandbox driver: talks to the Docker Engine API over its unix socket with libcurl
 * and jansson (never the docker CLI). This file holds the probe that "auto" uses at open.
 */
#include "sandbox_internal.h"

#include <curl/curl.h>

static size_t discard_body(char *p, size_t size, size_t n, void *ud)
{
    return size * n;
}

int sand__docker_ping(const char *socket_path, sand_err *err)
{
    CURL *c = curl_easy_init();
    long code = 0;
    CURLcode rc;

    if (!c)
        return sand_err_set(err, SAND_ENOMEM, "curl init failed");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(c, CURLOPT_URL, "http://localhost/_ping");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        return sand_err_set(err, SAND_EIO, "docker '%s': %s", socket_path, curl_easy_strerror(rc));
    if (code != 200)
        return sand_err_set(err, SAND_EIO, "docker '%s': GET /_ping answered %ld", socket_path,
                            code);
    return 0;
}
