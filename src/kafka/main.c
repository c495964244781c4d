/*
 * sand-kafka: the embedded global bus. Hosts librdkafka's mock Kafka cluster in its own process
 * so that it outlives a sandd crash (the mock cluster lives inside an rd_kafka_t and would die
 * with its host process). Usage: sand-kafka --run-dir DIR [--brokers N]. Publishes the
 * bootstrap servers in DIR/kafka.bootstrap (written atomically, so a reader never sees half a
 * list) and its pid in DIR/kafka.pid, then serves until SIGTERM or SIGINT and removes both files.
 * Topics are created by the mock on first use (metadata or produce requests) with the mock's
 * default partition count; the mock answers no CreateTopics (see docs/internals/buses.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "sand/common.h"

static int write_atomic(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fputs(text, f) >= 0;
    if (fclose(f) != 0 || !ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: sand-kafka --run-dir DIR [--brokers N]\n");
}

int main(int argc, char **argv)
{
    const char *run_dir = NULL;
    int64_t brokers = 1;
    sand_err err;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--run-dir") == 0 && i + 1 < argc) {
            run_dir = argv[++i];
        } else if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            if (sand_parse_int(argv[++i], 1, 16, &brokers, &err) < 0) {
                fprintf(stderr, "sand-kafka: --brokers: %s\n", err.msg);
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (!run_dir) {
        usage();
        return 2;
    }

    char pidfile[4096], bsfile[4096];
    if ((size_t)snprintf(pidfile, sizeof(pidfile), "%s/kafka.pid", run_dir) >= sizeof(pidfile) ||
        (size_t)snprintf(bsfile, sizeof(bsfile), "%s/kafka.bootstrap", run_dir) >= sizeof(bsfile)) {
        fprintf(stderr, "sand-kafka: run dir '%s' is too long\n", run_dir);
        return 2;
    }

    /* Block the stop signals before librdkafka starts threads so that they inherit the mask
     * and only sigwait below receives them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* This handle exists only to own the mock cluster; it never connects anywhere. */
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "client.id", "sand-kafka", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "sand-kafka: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
    if (!mc) {
        fprintf(stderr, "sand-kafka: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    const char *bs = rd_kafka_mock_cluster_bootstraps(mc);
    char line[64];
    snprintf(line, sizeof(line), "%d\n", (int)getpid());
    /* The pid first: whoever sees the bootstrap file can already find the process. */
    if (write_atomic(pidfile, line) < 0 || write_atomic(bsfile, bs) < 0) {
        fprintf(stderr, "sand-kafka: write '%s': %s\n", run_dir, strerror(errno));
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 1;
    }
    fprintf(stderr, "sand-kafka: pid %d serving %s\n", (int)getpid(), bs);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    fprintf(stderr, "sand-kafka: signal %d, stopping\n", sig);

    /* Remove the files only while they still describe this process. */
    char cur[64];
    FILE *f = fopen(pidfile, "r");
    if (f) {
        if (fgets(cur, sizeof(cur), f) && strcmp(cur, line) == 0) {
            unlink(bsfile);
            unlink(pidfile);
        }
        fclose(f);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
