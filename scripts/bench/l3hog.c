/* Keeps the shared last-level cache busy: random reads over a buffer of
 * N MiB (default 6), for ever. A stand-in for the virtual machine's
 * neighbours, to compare two builds of the lookup under the same crowding:
 *
 *     gcc -O2 -o /tmp/l3hog scripts/bench/l3hog.c
 *     taskset -c 1 /tmp/l3hog 6 &  taskset -c 0 lookup_probe RULES; kill %1
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    size_t size = (size_t)(argc > 1 ? atol(argv[1]) : 6) << 20;
    size_t n = size / sizeof(uint64_t);
    uint64_t *a = malloc(size);
    if (a == NULL || n == 0) {
        perror("l3hog");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        a[i] = i;
    uint64_t x = 88172645463325252ull, sum = 0;
    for (;;) {
        for (int k = 0; k < 1000000; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sum += a[x % n];
        }
        if (sum == 42) /* never: keeps the reads */
            putchar('.');
    }
}
