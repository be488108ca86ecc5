// Cost of handing work to a thread on the other CPU, with and without the
// waiter spinning first. Two threads pinned to CPUs 0 and 1 pass a counter
// back and forth through futex words; each wait spins for SPIN_NS before it
// sleeps in FUTEX_WAIT. GAP_US > 0 sleeps that long before each round, so the
// other CPU has gone idle when it is woken (as between a client's requests).
//
//   gcc -O2 -pthread benches/probes/wake_pingpong.c -o /tmp/wake_pingpong
//   /tmp/wake_pingpong SPIN_NS GAP_US      # prints the mean round trip
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5000

static _Atomic int ping = 0, pong = 0;
static long spin_ns;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void wait_for(_Atomic int *word, int value) {
    long start = now_ns();
    for (;;) {
        int cur = atomic_load(word);
        if (cur == value) return;
        if (now_ns() - start < spin_ns) continue;
        syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, cur, NULL, NULL, 0);
    }
}

static void set_and_wake(_Atomic int *word, int value) {
    atomic_store(word, value);
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static void *echo(void *arg) {
    (void)arg;
    pin(1);
    for (int i = 1; i <= ROUNDS; i++) {
        wait_for(&ping, i);
        set_and_wake(&pong, i);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SPIN_NS GAP_US\n", argv[0]);
        return 2;
    }
    spin_ns = atol(argv[1]);
    int gap_us = atoi(argv[2]);
    pin(0);
    pthread_t t;
    pthread_create(&t, NULL, echo, NULL);
    long total = 0;
    for (int i = 1; i <= ROUNDS; i++) {
        if (gap_us) usleep(gap_us);
        long start = now_ns();
        set_and_wake(&ping, i);
        wait_for(&pong, i);
        total += now_ns() - start;
    }
    pthread_join(t, NULL);
    printf("spin %ld ns, gap %d us: round trip %.1f us\n", spin_ns, gap_us,
           total / 1000.0 / ROUNDS);
    return 0;
}
