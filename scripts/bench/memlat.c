/*
 * Memory latency of this machine, for reading the lookup figures of
 * scripts/bench.sh: one dependent load at a random place of a buffer of
 * SIZE bytes, as a rule lookup in a large table does at each step.
 *
 *   memlat SIZE_KIB...    prints "SIZE_KIB ns_per_load" per size
 *
 * A pointer chase over a random cyclic permutation of 64-byte lines: each
 * load needs the previous one, so neither the prefetcher nor out-of-order
 * execution hides the latency.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1du;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    for (int a = 1; a < argc; a++) {
        size_t kib = strtoul(argv[a], NULL, 10);
        size_t lines = kib * 1024 / 64;
        if (lines < 2)
            continue;
        /* One pointer per 64-byte line. */
        void **buf = aligned_alloc(64, lines * 64);
        size_t *order = malloc(lines * sizeof *order);
        if (!buf || !order)
            return 1;
        for (size_t i = 0; i < lines; i++)
            order[i] = i;
        for (size_t i = lines - 1; i > 0; i--) {
            size_t j = next() % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (size_t i = 0; i < lines; i++)
            buf[order[i] * 8] = &buf[order[(i + 1) % lines] * 8];
        void **p = &buf[order[0] * 8];
        long steps = 4000000;
        for (long i = 0; i < steps / 4; i++)
            p = (void **)*p;
        double t0 = now_ns();
        for (long i = 0; i < steps; i++)
            p = (void **)*p;
        double t1 = now_ns();
        printf("%zu %.1f%s\n", kib, (t1 - t0) / steps, p ? "" : " ");
        free(buf);
        free(order);
    }
    return 0;
}
