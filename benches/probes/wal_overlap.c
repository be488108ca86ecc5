// Can a log hide the CPU of encoding a batch behind the disk? Three ways to
// make 256,000 bytes durable in a pre-zeroed 64 MiB file, alternating in each
// of 300 rounds (medians printed, with raw's throughput relative to each):
//   raw:     pwrite + fdatasync;
//   serial:  CPU_US of busy CPU (the encoding), then pwrite + fdatasync;
//   chunked: the same CPU in CHUNKS slices, each followed by the pwrite of
//            its slice and sync_file_range(SYNC_FILE_RANGE_WRITE) to start
//            writeback early, then one fdatasync.
//
//   gcc -O2 benches/probes/wal_overlap.c -o /tmp/wal_overlap
//   /tmp/wal_overlap DIR CHUNKS CPU_US      # DIR on the disk under test
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILE_BYTES (64L << 20)
#define BATCH 256000
#define ROUNDS 300

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void busy(long ns) {
    long start = now_ns();
    while (now_ns() - start < ns) {
    }
}

static int by_value(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s DIR CHUNKS CPU_US\n", argv[0]);
        return 2;
    }
    int chunks = atoi(argv[2]);
    long cpu = atol(argv[3]) * 1000;
    char path[4096];
    snprintf(path, sizeof path, "%s/wal-overlap-%d", argv[1], getpid());
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    char *zeros = calloc(1, 1 << 20);
    for (long off = 0; off < FILE_BYTES; off += 1 << 20)
        if (pwrite(fd, zeros, 1 << 20, off) != 1 << 20) { perror("pwrite"); return 1; }
    fsync(fd);
    char *buf = malloc(BATCH);
    memset(buf, 'x', BATCH);
    static long t[3][ROUNDS];
    long off = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (int v = 0; v < 3; v++) {
            if (off + BATCH > FILE_BYTES) off = 0;
            long start = now_ns();
            if (v == 0) {
                pwrite(fd, buf, BATCH, off);
            } else if (v == 1) {
                busy(cpu);
                pwrite(fd, buf, BATCH, off);
            } else {
                int c = BATCH / chunks;
                for (int i = 0; i < chunks; i++) {
                    busy(cpu / chunks);
                    pwrite(fd, buf + i * c, c, off + i * c);
                    if (i < chunks - 1)
                        sync_file_range(fd, off + i * c, c, SYNC_FILE_RANGE_WRITE);
                }
            }
            fdatasync(fd);
            t[v][r] = now_ns() - start;
            off += BATCH;
        }
    }
    for (int v = 0; v < 3; v++) qsort(t[v], ROUNDS, sizeof(long), by_value);
    long m0 = t[0][ROUNDS / 2], m1 = t[1][ROUNDS / 2], m2 = t[2][ROUNDS / 2];
    printf("chunks %d, cpu %ld us: raw %.1f us; serial %.1f us (%.2f of raw); "
           "chunked %.1f us (%.2f of raw)\n",
           chunks, cpu / 1000, m0 / 1e3, m1 / 1e3, (double)m0 / m1, m2 / 1e3,
           (double)m0 / m2);
    unlink(path);
    return 0;
}
