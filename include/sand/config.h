/*
 * sandd's configuration (SPEC section 2). One table of {key, type, offset, default, min, max}
 * drives defaults, YAML parsing, validation and the documented default config, so adding a
 * setting is one line in config.c. Errors name the file, the line and the key.
 */
#ifndef SAND_CONFIG_H
#define SAND_CONFIG_H

#include "sand/common.h"

#include <stdio.h>

#define SAND_CFG_STR 256

typedef struct sand_cfg {
    char listen[SAND_CFG_STR]; /* ADDR:PORT of the HTTP frontend */
    char data_dir[SAND_CFG_STR];
    char api_key_file[SAND_CFG_STR]; /* "" = <data_dir>/api.key */
    char log_level[16];
    char local_bus_redis[SAND_CFG_STR];  /* embedded | unix:/path | tcp://host:port */
    char global_bus_kafka[SAND_CFG_STR]; /* embedded | broker list */
    int64_t global_bus_partitions;
    char global_data_redis[SAND_CFG_STR]; /* global data layer: local | unix:/path | tcp://h:p */
    char sandbox_driver[16];              /* auto | docker | process */
    char sandbox_image[SAND_CFG_STR];
    char sandbox_granularity[16]; /* application | grain */
    char sandbox_cold[8];         /* off | on: a fresh sandbox per event (baseline) */
    int64_t sandbox_memory;       /* per-sandbox memory limit, bytes */
    int64_t sandbox_pids;         /* per-sandbox pids limit */
    char worker_instance[16];     /* fork | reuse */
    char bus_mode[16];            /* hierarchical | global */
    int64_t limits_invoke_body;   /* bytes */
    int64_t limits_bundle;        /* bytes uploaded */
    int64_t limits_unpacked;      /* bytes unpacked */
    int64_t limits_files;
    int64_t limits_app_yaml;   /* bytes */
    int64_t limits_value;      /* data layer value, bytes */
    int64_t exec_timeout_ms;   /* default execution deadline */
    int64_t exec_retention_ms; /* how long finished execution records are kept */
    int64_t logs_max_lines;    /* per-app log ring */
} sand_cfg;

/* Fills every field with its documented default. */
void sand_cfg_defaults(sand_cfg *cfg);

/* Loads path (a YAML mapping, nested or dotted keys) over the current contents of cfg.
 * Returns 0, or < 0 with "FILE:LINE: key 'K': problem" in err. */
int sand_cfg_load(sand_cfg *cfg, const char *path, sand_err *err);

/* Sets one key from its text form ("global_bus.partitions", "8"), as a config file would. */
int sand_cfg_set(sand_cfg *cfg, const char *key, const char *value, sand_err *err);

/* Writes the documented configuration (every key, its value and its meaning) as YAML. */
void sand_cfg_dump(const sand_cfg *cfg, FILE *out);

#endif
