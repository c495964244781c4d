/*
 * sandd.yaml: one table drives defaults, parsing, validation and the documented dump. The YAML is
 * walked with libyaml's document API; nested mappings are flattened to dotted keys, so both
 * "global_bus: {partitions: 8}" and "global_bus.partitions: 8" work.
 */
#include "sand/config.h"

#include <stdio.h>
#include <string.h>
#include <yaml.h>

enum cfg_type { T_STR, T_INT, T_SIZE, T_DURATION, T_ENUM };

struct cfg_key {
    const char *key;
    enum cfg_type type;
    size_t offset;
    size_t size; /* for strings */
    const char *def;
    int64_t min, max;
    const char *choices; /* T_ENUM: "a|b|c" */
    const char *doc;
};

#define STR(k, f, d, doc)                                                                          \
    {                                                                                              \
        k, T_STR, offsetof(sand_cfg, f), sizeof(((sand_cfg *)0)->f), d, 0, 0, NULL, doc            \
    }
#define ENUM(k, f, d, ch, doc)                                                                     \
    {                                                                                              \
        k, T_ENUM, offsetof(sand_cfg, f), sizeof(((sand_cfg *)0)->f), d, 0, 0, ch, doc             \
    }
#define NUM(k, t, f, d, lo, hi, doc)                                                               \
    {                                                                                              \
        k, t, offsetof(sand_cfg, f), 0, d, lo, hi, NULL, doc                                       \
    }

static const struct cfg_key keys[] = {
    STR("listen", listen, "127.0.0.1:8080", "HTTP frontend address"),
    STR("data_dir", data_dir, "/var/lib/sand", "apps, logs, sockets, state"),
    STR("api_key_file", api_key_file, "", "bearer key file; empty: <data_dir>/api.key (0600)"),
    ENUM("log_level", log_level, "info", "debug|info|warn|error", "daemon log level"),
    STR("local_bus.redis", local_bus_redis, "embedded",
        "embedded | unix:/path/redis.sock | tcp://host:6379"),
    STR("global_bus.kafka", global_bus_kafka, "embedded", "embedded | broker1:9092,broker2:9092"),
    NUM("global_bus.partitions", T_INT, global_bus_partitions, "4", 1, 1024,
        "partitions per grain queue"),
    STR("global_data.redis", global_data_redis, "local",
        "global data layer: local (the local bus Redis) | unix:/path | tcp://host:port"),
    ENUM("sandbox.driver", sandbox_driver, "auto", "auto|docker|process",
         "auto: docker when its socket answers, else process (no isolation)"),
    STR("sandbox.image", sandbox_image, "", "empty: a base image sandd builds locally"),
    ENUM("sandbox.granularity", sandbox_granularity, "application", "application|grain",
         "application (SAND) | grain (one container per grain: baseline)"),
    ENUM("sandbox.cold", sandbox_cold, "off", "off|on",
         "on: a fresh sandbox for every event (cold-start baseline for benchmarks)"),
    NUM("sandbox.memory", T_SIZE, sandbox_memory, "2Gi", 16 << 20, INT64_MAX,
        "memory limit of one sandbox"),
    NUM("sandbox.pids", T_INT, sandbox_pids, "1024", 16, 1 << 22, "pids limit of one sandbox"),
    ENUM("worker.instance", worker_instance, "fork", "fork|reuse",
         "fork (SAND) | reuse (handle events inside the warm worker)"),
    ENUM("bus.mode", bus_mode, "hierarchical", "hierarchical|global",
         "hierarchical (SAND) | global (every hop through Kafka: baseline)"),
    NUM("limits.invoke_body", T_SIZE, limits_invoke_body, "6Mi", 1024, 1LL << 32,
        "largest invocation body"),
    NUM("limits.bundle", T_SIZE, limits_bundle, "64Mi", 1024, 1LL << 34, "largest uploaded bundle"),
    NUM("limits.unpacked", T_SIZE, limits_unpacked, "256Mi", 1024, 1LL << 36,
        "largest unpacked bundle"),
    NUM("limits.files", T_INT, limits_files, "10000", 1, 1000000, "most files in a bundle"),
    NUM("limits.app_yaml", T_SIZE, limits_app_yaml, "1Mi", 1024, 1LL << 30, "largest app.yaml"),
    NUM("limits.value", T_SIZE, limits_value, "64Mi", 1024, 512LL << 20,
        "largest data-layer value"),
    NUM("executions.timeout", T_DURATION, exec_timeout_ms, "300s", 1, 86400000LL,
        "default deadline of an execution"),
    NUM("executions.retention", T_DURATION, exec_retention_ms, "1h", 1000, 30 * 86400000LL,
        "how long finished execution records are kept"),
    NUM("logs.max_lines", T_INT, logs_max_lines, "10000", 10, 10000000,
        "log lines kept per app (a ring)"),
};

static const struct cfg_key *find_key(const char *key)
{
    for (size_t i = 0; i < SAND_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

static int apply(sand_cfg *cfg, const struct cfg_key *k, const char *value, sand_err *err)
{
    char *base = (char *)cfg;
    int64_t v;
    switch (k->type) {
    case T_STR:
        if (strlen(value) >= k->size)
            return sand_err_set(err, SAND_EINVAL, "value is longer than %zu bytes", k->size - 1);
        sand_strlcpy(base + k->offset, value, k->size);
        return 0;
    case T_ENUM: {
        size_t n = strlen(value);
        for (const char *p = k->choices; *p;) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (len == n && strncmp(p, value, n) == 0) {
                sand_strlcpy(base + k->offset, value, k->size);
                return 0;
            }
            p += len + (bar ? 1 : 0);
        }
        return sand_err_set(err, SAND_EINVAL, "'%s' is not one of %s", value, k->choices);
    }
    case T_INT:
        if (sand_parse_int(value, k->min, k->max, &v, err) < 0)
            return SAND_EINVAL;
        break;
    case T_SIZE:
        if (sand_parse_size(value, &v, err) < 0)
            return SAND_EINVAL;
        break;
    case T_DURATION:
        if (sand_parse_duration_ms(value, &v, err) < 0)
            return SAND_EINVAL;
        break;
    }
    if (v < k->min || v > k->max)
        return sand_err_set(err, SAND_EINVAL, "'%s' is out of range", value);
    *(int64_t *)(base + k->offset) = v;
    return 0;
}

void sand_cfg_defaults(sand_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < SAND_ARRAY_LEN(keys); i++) {
        sand_err err;
        int rc = apply(cfg, &keys[i], keys[i].def, &err);
        (void)rc; /* defaults are valid by construction (tested) */
    }
}

int sand_cfg_set(sand_cfg *cfg, const char *key, const char *value, sand_err *err)
{
    const struct cfg_key *k = find_key(key);
    if (!k)
        return sand_err_set(err, SAND_EINVAL, "unknown key '%s'", key);
    if (apply(cfg, k, value, err) < 0)
        return sand_err_wrap(err, SAND_EINVAL, "key '%s'", key);
    return 0;
}

struct walk {
    yaml_document_t *doc;
    sand_cfg *cfg;
    const char *path;
    int visited;
};

static int walk_mapping(struct walk *w, yaml_node_t *map, const char *prefix, int depth,
                        sand_err *err)
{
    if (depth > 8 || ++w->visited > 4096)
        return sand_err_set(err, SAND_EINVAL, "%s:%zu: configuration nests too deeply", w->path,
                            map->start_mark.line + 1);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(w->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(w->doc, p->value);
        if (!kn || !vn || kn->type != YAML_SCALAR_NODE)
            return sand_err_set(err, SAND_EINVAL, "%s:%zu: keys must be plain strings", w->path,
                                kn ? kn->start_mark.line + 1 : 0);
        char key[128];
        int n = snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "",
                         (const char *)kn->data.scalar.value);
        if (n < 0 || (size_t)n >= sizeof(key))
            return sand_err_set(err, SAND_EINVAL, "%s:%zu: key is too long", w->path,
                                kn->start_mark.line + 1);
        size_t line = vn->start_mark.line + 1;
        if (vn->type == YAML_MAPPING_NODE) {
            int rc = walk_mapping(w, vn, key, depth + 1, err);
            if (rc < 0)
                return rc;
            continue;
        }
        const struct cfg_key *k = find_key(key);
        if (!k)
            return sand_err_set(err, SAND_EINVAL, "%s:%zu: unknown key '%s'", w->path,
                                kn->start_mark.line + 1, key);
        if (vn->type != YAML_SCALAR_NODE)
            return sand_err_set(err, SAND_EINVAL, "%s:%zu: key '%s': expected a scalar value",
                                w->path, line, key);
        if (apply(w->cfg, k, (const char *)vn->data.scalar.value, err) < 0)
            return sand_err_wrap(err, SAND_EINVAL, "%s:%zu: key '%s'", w->path, line, key);
    }
    return 0;
}

int sand_cfg_load(sand_cfg *cfg, const char *path, sand_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sand_err_errno(err, SAND_EIO, "%s:0: cannot open", path);
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = 0;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return sand_err_set(err, SAND_ENOMEM, "%s:0: out of memory", path);
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = sand_err_set(err, SAND_EINVAL, "%s:%zu: %s", path, parser.problem_mark.line + 1,
                          parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        fclose(f);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type == YAML_MAPPING_NODE) {
        struct walk w = {&doc, cfg, path, 0};
        rc = walk_mapping(&w, root, "", 0, err);
    } else if (root && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0)) {
        rc = sand_err_set(err, SAND_EINVAL, "%s:%zu: the configuration must be a mapping", path,
                          root->start_mark.line + 1);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

void sand_cfg_dump(const sand_cfg *cfg, FILE *out)
{
    const char *base = (const char *)cfg;
    for (size_t i = 0; i < SAND_ARRAY_LEN(keys); i++) {
        const struct cfg_key *k = &keys[i];
        fprintf(out, "%s: ", k->key);
        if (k->type == T_STR || k->type == T_ENUM)
            fprintf(out, "\"%s\"", base + k->offset);
        else if (k->type == T_DURATION)
            fprintf(out, "%lldms", (long long)*(const int64_t *)(base + k->offset));
        else
            fprintf(out, "%lld", (long long)*(const int64_t *)(base + k->offset));
        fprintf(out, "   # %s (default %s)\n", k->doc, k->def[0] ? k->def : "\"\"");
    }
}
