/*
 * Unit tests of src/common: error wrapping, the bounded buffer, containers, literal parsers and
 * the table-driven sandd.yaml loader (every key, defaults, each kind of error with its line).
 */
#include "sand/common.h"
#include "sand/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

static void test_err_wrap(void **state)
{
    sand_err err;
    sand_err_clear(&err);
    assert_int_equal(sand_err_set(&err, SAND_EBUS, "redis: %s", "READONLY"), SAND_EBUS);
    assert_int_equal(sand_err_wrap(&err, 0, "relay to '%s'", "lq:app:b"), SAND_EBUS);
    assert_string_equal(err.msg, "relay to 'lq:app:b': redis: READONLY");
    assert_int_equal(sand_err_wrap(&err, SAND_EIO, "tick"), SAND_EIO);
    assert_string_equal(err.msg, "tick: relay to 'lq:app:b': redis: READONLY");
    assert_int_equal(sand_err_set(NULL, SAND_EINVAL, "x"), SAND_EINVAL);
    assert_string_equal(sand_err_name(SAND_ETOOBIG), "ETOOBIG");
    assert_string_equal(sand_err_name(-999), "EUNKNOWN");
    /* a long context truncates and never overflows */
    char big[600];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sand_err_wrap(&err, 0, "%s", big);
    assert_true(strlen(err.msg) < sizeof(err.msg));
}

static void test_bytes_bounds(void **state)
{
    sand_bytes_t b;
    sand_bytes_init(&b, 10);
    assert_int_equal(sand_bytes_append(&b, "hello", 5), 0);
    assert_int_equal(sand_bytes_appendf(&b, "%d", 1234), 0);
    assert_string_equal(b.data, "hello1234");
    assert_int_equal(sand_bytes_append(&b, "xy", 2), SAND_ETOOBIG);
    assert_string_equal(b.data, "hello1234"); /* unchanged on failure */
    assert_int_equal(sand_bytes_appendf(&b, "%s", "zz"), SAND_ETOOBIG);
    assert_int_equal(sand_bytes_append(&b, "!", 1), 0);
    assert_int_equal(b.len, 10);
    sand_bytes_consume(&b, 5);
    assert_string_equal(b.data, "1234!");
    size_t n;
    char *p = sand_bytes_steal(&b, &n);
    assert_int_equal(n, 5);
    assert_string_equal(p, "1234!");
    free(p);
    assert_null(b.data);
    sand_bytes_init(&b, 100);
    assert_int_equal(sand_bytes_append_json_str(&b, "a\"b\\\n\x01", 6), 0);
    assert_string_equal(b.data, "\"a\\\"b\\\\\\n\\u0001\"");
    sand_bytes_release(&b);
    sand_bytes_init(&b, 4);
    assert_int_equal(sand_bytes_append_json_str(&b, "abcdef", 6), SAND_ETOOBIG);
    assert_int_equal(b.len, 0);
    sand_bytes_release(&b);
}

static void test_vec_list(void **state)
{
    sand_vec_t v;
    sand_vec_init(&v);
    for (intptr_t i = 0; i < 100; i++)
        assert_int_equal(sand_vec_push(&v, (void *)i), 0);
    assert_int_equal(v.len, 100);
    assert_int_equal((intptr_t)sand_vec_remove(&v, 10), 10);
    assert_int_equal((intptr_t)v.items[10], 11);
    assert_null(sand_vec_remove(&v, 1000));
    sand_vec_release(&v, NULL);
    assert_int_equal(v.len, 0);

    struct item {
        int x;
        sand_list_t link;
    } items[3] = {{1, {0}}, {2, {0}}, {3, {0}}};
    sand_list_t head, *pos, *tmp;
    sand_list_init(&head);
    assert_true(sand_list_empty(&head));
    for (int i = 0; i < 3; i++)
        sand_list_insert_tail(&head, &items[i].link);
    sand_list_remove(&items[1].link);
    int sum = 0, count = 0;
    sand_list_foreach_safe(pos, tmp, &head)
    {
        sum += SAND_CONTAINER_OF(pos, struct item, link)->x;
        count++;
    }
    assert_int_equal(sum, 4);
    assert_int_equal(count, 2);
}

static void test_map(void **state)
{
    sand_map_t m;
    sand_map_init(&m);
    char key[32];
    for (intptr_t i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%ld", (long)i);
        assert_int_equal(sand_map_set(&m, key, (void *)(i + 1), NULL), 0);
    }
    assert_int_equal(m.len, 1000);
    assert_int_equal((intptr_t)sand_map_get(&m, "k500"), 501);
    void *old;
    assert_int_equal(sand_map_set(&m, "k500", (void *)7, &old), 0);
    assert_int_equal((intptr_t)old, 501);
    assert_int_equal(m.len, 1000);
    for (intptr_t i = 0; i < 1000; i += 2) {
        snprintf(key, sizeof(key), "k%ld", (long)i);
        assert_non_null(sand_map_del(&m, key));
    }
    assert_int_equal(m.len, 500);
    assert_null(sand_map_get(&m, "k0"));
    assert_int_equal((intptr_t)sand_map_get(&m, "k1"), 2);
    /* tombstones are reused and iteration sees exactly the live keys */
    for (int round = 0; round < 10; round++) {
        assert_int_equal(sand_map_set(&m, "churn", (void *)1, NULL), 0);
        assert_non_null(sand_map_del(&m, "churn"));
    }
    size_t it = 0, seen = 0;
    const char *k;
    void *val;
    while (sand_map_next(&m, &it, &k, &val)) {
        assert_true(k[0] == 'k');
        seen++;
    }
    assert_int_equal(seen, 500);
    sand_map_release(&m, NULL);
}

struct lit_case {
    const char *text;
    int rc;
    int64_t value;
};

static void test_literals(void **state)
{
    static const struct lit_case durations[] = {
        {"30s", 0, 30000},       {"100ms", 0, 100},
        {"2m", 0, 120000},       {"1h", 0, 3600000},
        {"5", 0, 5000},          {"0ms", 0, 0},
        {"-1s", SAND_EINVAL, 0}, {"1.5s", SAND_EINVAL, 0},
        {"s", SAND_EINVAL, 0},   {"10d", SAND_EINVAL, 0},
        {"", SAND_EINVAL, 0},    {"99999999999999999999s", SAND_EINVAL, 0},
    };
    static const struct lit_case sizes[] = {
        {"256Mi", 0, 256LL << 20}, {"4096", 0, 4096},        {"1Gi", 0, 1LL << 30},
        {"1K", 0, 1000},           {"64MiB", 0, 64LL << 20}, {"2M", 0, 2000000},
        {"1Ti", SAND_EINVAL, 0},   {"Mi", SAND_EINVAL, 0},   {" 1Mi", SAND_EINVAL, 0},
    };
    sand_err err;
    for (size_t i = 0; i < SAND_ARRAY_LEN(durations); i++) {
        int64_t v = -1;
        int rc = sand_parse_duration_ms(durations[i].text, &v, &err);
        assert_int_equal(rc, durations[i].rc);
        if (rc == 0)
            assert_int_equal(v, durations[i].value);
        else
            assert_non_null(strstr(err.msg, "invalid duration"));
    }
    for (size_t i = 0; i < SAND_ARRAY_LEN(sizes); i++) {
        int64_t v = -1;
        int rc = sand_parse_size(sizes[i].text, &v, &err);
        assert_int_equal(rc, sizes[i].rc);
        if (rc == 0)
            assert_int_equal(v, sizes[i].value);
    }
    int64_t v;
    assert_int_equal(sand_parse_int("12", 0, 10, &v, &err), SAND_EINVAL);
    assert_string_equal(err.msg, "12 is out of range [0, 10]");
    assert_int_equal(sand_parse_int("7x", 0, 10, &v, &err), SAND_EINVAL);
    assert_int_equal(sand_parse_int("7", 0, 10, &v, &err), 0);
    assert_int_equal(v, 7);
    char hex[33];
    assert_int_equal(sand_random_hex(hex, 16), 0);
    assert_int_equal(strlen(hex), 32);
    char small[4];
    assert_int_equal(sand_strlcpy(small, "abcdef", sizeof(small)), 6);
    assert_string_equal(small, "abc");
}

/* Writes text to a temporary config file; returns its path (static storage). */
static const char *write_cfg(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/sand-cfg-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_config_defaults(void **state)
{
    sand_cfg cfg;
    sand_cfg_defaults(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.data_dir, "/var/lib/sand");
    assert_string_equal(cfg.local_bus_redis, "embedded");
    assert_string_equal(cfg.global_bus_kafka, "embedded");
    assert_int_equal(cfg.global_bus_partitions, 4);
    assert_string_equal(cfg.sandbox_driver, "auto");
    assert_string_equal(cfg.sandbox_granularity, "application");
    assert_string_equal(cfg.worker_instance, "fork");
    assert_string_equal(cfg.bus_mode, "hierarchical");
    assert_int_equal(cfg.limits_invoke_body, 6 << 20);
    assert_int_equal(cfg.limits_bundle, 64 << 20);
    assert_int_equal(cfg.limits_unpacked, 256 << 20);
    assert_int_equal(cfg.limits_files, 10000);
    assert_int_equal(cfg.exec_timeout_ms, 300000);
    char *dump = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream(&dump, &dlen);
    sand_cfg_dump(&cfg, f);
    fclose(f);
    assert_non_null(strstr(dump, "global_bus.partitions: 4"));
    assert_non_null(strstr(dump, "bus.mode: \"hierarchical\""));
    free(dump);
}

static void test_config_file(void **state)
{
    sand_cfg cfg;
    sand_err err;
    sand_cfg_defaults(&cfg);
    const char *p = write_cfg("listen: 127.0.0.1:9999\n"
                              "local_bus:\n  redis: unix:/tmp/r.sock\n"
                              "global_bus: {kafka: \"b1:9092,b2:9092\", partitions: 8}\n"
                              "sandbox.driver: process\n"
                              "worker:\n  instance: reuse\n"
                              "limits:\n  invoke_body: 1Mi\n"
                              "executions:\n  timeout: 2m\n");
    assert_int_equal(sand_cfg_load(&cfg, p, &err), 0);
    unlink(p);
    assert_string_equal(cfg.listen, "127.0.0.1:9999");
    assert_string_equal(cfg.local_bus_redis, "unix:/tmp/r.sock");
    assert_string_equal(cfg.global_bus_kafka, "b1:9092,b2:9092");
    assert_int_equal(cfg.global_bus_partitions, 8);
    assert_string_equal(cfg.sandbox_driver, "process");
    assert_string_equal(cfg.worker_instance, "reuse");
    assert_int_equal(cfg.limits_invoke_body, 1 << 20);
    assert_int_equal(cfg.exec_timeout_ms, 120000);
}

struct cfg_case {
    const char *text;
    const char *msg; /* expected message after "PATH:" */
};

static void test_config_errors(void **state)
{
    static const struct cfg_case cases[] = {
        {"listen: a\nbogus: 1\n", "2: unknown key 'bogus'"},
        {"global_bus:\n  partitions: 0\n",
         "2: key 'global_bus.partitions': 0 is out of range [1, 1024]"},
        {"global_bus:\n  partitions: many\n",
         "2: key 'global_bus.partitions': invalid integer 'many'"},
        {"bus:\n  mode: turbo\n", "2: key 'bus.mode': 'turbo' is not one of hierarchical|global"},
        {"sandbox:\n  granularity: [a]\n", "2: key 'sandbox.granularity': expected a scalar value"},
        {"executions:\n  timeout: soon\n",
         "2: key 'executions.timeout': invalid duration 'soon' (expected e.g. 100ms, 30s, 2m, 1h)"},
        {"limits:\n  bundle: 12Q\n",
         "2: key 'limits.bundle': invalid size '12Q' (expected e.g. 4096, 256Mi, 1Gi)"},
        {"- a\n- b\n", "1: the configuration must be a mapping"},
        {"listen: [\n", "2: did not find expected node content"},
        {"worker:\n  instanse: fork\n", "2: unknown key 'worker.instanse'"},
    };
    for (size_t i = 0; i < SAND_ARRAY_LEN(cases); i++) {
        sand_cfg cfg;
        sand_err err;
        sand_cfg_defaults(&cfg);
        const char *p = write_cfg(cases[i].text);
        char expect[512];
        snprintf(expect, sizeof(expect), "%s:%s", p, cases[i].msg);
        int rc = sand_cfg_load(&cfg, p, &err);
        unlink(p);
        assert_int_equal(rc, SAND_EINVAL);
        assert_string_equal(err.msg, expect);
    }
    sand_cfg cfg;
    sand_err err;
    assert_true(sand_cfg_load(&cfg, "/nonexistent/sandd.yaml", &err) < 0);
    assert_non_null(strstr(err.msg, "/nonexistent/sandd.yaml:0: cannot open"));
    assert_int_equal(sand_cfg_set(&cfg, "bus.mode", "global", &err), 0);
    assert_string_equal(cfg.bus_mode, "global");
    assert_int_equal(sand_cfg_set(&cfg, "nope", "1", &err), SAND_EINVAL);
}

static void test_endpoints(void **state)
{
    static const struct {
        const char *url;
        int rc;
        bool unix_socket;
        const char *where;
        int port;
    } cases[] = {
        {"unix:/run/sand/redis.sock", 0, true, "/run/sand/redis.sock", 0},
        {"unix:///tmp/r.sock", 0, true, "/tmp/r.sock", 0},
        {"tcp://127.0.0.1:7000", 0, false, "127.0.0.1", 7000},
        {"redis.example:6380", 0, false, "redis.example", 6380},
        {"tcp://cache", 0, false, "cache", 6379},
        {"unix:relative.sock", SAND_EINVAL, false, NULL, 0},
        {"tcp://:6379", SAND_EINVAL, false, NULL, 0},
        {"tcp://host:99999", SAND_EINVAL, false, NULL, 0},
        {"tcp://host:port", SAND_EINVAL, false, NULL, 0},
        {"", SAND_EINVAL, false, NULL, 0},
    };
    for (size_t i = 0; i < SAND_ARRAY_LEN(cases); i++) {
        sand_endpoint_t ep;
        sand_err err;
        assert_int_equal(sand_endpoint_parse(cases[i].url, &ep, &err), cases[i].rc);
        if (cases[i].rc < 0) {
            assert_non_null(strstr(err.msg, "endpoint '"));
            continue;
        }
        assert_int_equal(ep.unix_socket, cases[i].unix_socket);
        assert_string_equal(ep.unix_socket ? ep.path : ep.host, cases[i].where);
        assert_int_equal(ep.port, cases[i].port);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_wrap),    cmocka_unit_test(test_bytes_bounds),
        cmocka_unit_test(test_vec_list),    cmocka_unit_test(test_map),
        cmocka_unit_test(test_literals),    cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_file), cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
