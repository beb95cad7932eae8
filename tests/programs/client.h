/* What the cgroup backend's test clients (cgclient.c, uringclient.c)
 * share: the one line they print on failure, "error NAME after N ms",
 * and the address they are given. Include after <arpa/inet.h>,
 * <errno.h>, <stdio.h>, <stdlib.h>, <string.h>, <sys/socket.h> and
 * <time.h>.
 */
#ifndef LDSAREF_TEST_CLIENT_H
#define LDSAREF_TEST_CLIENT_H

/* Set by main() first: what "after N ms" counts from. */
static struct timespec t0;

static long elapsed_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
}

static const char *name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNRESET: return "ECONNRESET";
    case EINVAL: return "EINVAL";
    default: return "other";
    }
}

/* Prints "error NAME after N ms"; returns the exit status, 1. */
static int fail(int e) {
    printf("error %s after %ld ms\n", name(e), elapsed_ms());
    return 1;
}

/* ADDR (IPv4 or IPv6) and PORT into `ss` and `len`; 0, or -1 after
 * saying "PROG: bad address ADDR" on stderr. */
static int parse_addr(const char *prog, const char *addr, const char *port,
                      struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(atoi(port));
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(atoi(port));
        *len = sizeof *a6;
    } else {
        fprintf(stderr, "%s: bad address %s\n", prog, addr);
        return -1;
    }
    return 0;
}

#endif
