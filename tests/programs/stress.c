/*
 * Stress driver for tests/stress.rs: THREADS threads each run OPS socket
 * operations (connect, send, sendto, sendmmsg, dup, dup2, close) against
 * a list of destinations, calling the libc symbols normally so that a
 * preloaded library interposes them.
 *
 *   stress THREADS OPS RELOAD DST...
 *
 * DST is "ip:port", or "!ip:port" for a destination the rules deny (it is
 * used for connect/sendto only, never inside a sendmmsg batch, where a
 * denied message would cut the batch short). RELOAD is "-" or
 * "NEWFILE:TARGET:MIN_MS": after every thread has done half its
 * operations, thread 0 renames NEWFILE onto TARGET, and every thread then
 * goes on until it has done all its operations AND MIN_MS have passed
 * since the rename (so that the library's periodic check sees it).
 *
 * Every datagram's length encodes who sent it and where it is meant to
 * go: len = 64 + thread * 32 + dst_index, so the test can check
 * datagrams sent on connected sockets (logged with dst=connected) and the
 * order in which each thread saw the rules.
 *
 * With KLIPS_EMU_LOG set, "marker" lines are appended to that log around
 * the rename, in the emulator's key=value format.
 *
 * Output: one line per destination and outcome,
 *   dst=IDX call=CALL result=ok|errno=N count=C
 * then "ops=N threads=T". Exit status 0 unless setup failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DST 32
#define MAX_THREADS 16
#define MMSG 4
#define NCALLS 6
#define NERR 140

static const char *call_names[NCALLS] = {"connect_udp", "send", "sendto",
                                         "sendmmsg",    "connect_tcp", "dup_send"};
enum { C_CONNECT_UDP, C_SEND, C_SENDTO, C_SENDMMSG, C_CONNECT_TCP, C_DUP_SEND };

static struct sockaddr_in dsts[MAX_DST];
static int denied[MAX_DST];
static int ndst;
static int ops;
static int nthreads;
static const char *reload_new, *reload_target;
static long reload_min_ms;
static pthread_barrier_t half;
static atomic_long rename_ms;

/* counts[dst][call][errno or 0] */
static atomic_long counts[MAX_DST][NCALLS][NERR];

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void note(int d, int call, long r) {
    int e = r < 0 ? errno : 0;
    if (e >= NERR)
        e = NERR - 1;
    atomic_fetch_add(&counts[d][call][e], 1);
}

static void marker(const char *what) {
    const char *log = getenv("KLIPS_EMU_LOG");
    if (!log)
        return;
    char line[128];
    int n = snprintf(line, sizeof line, "marker pid=%d at=%s\n", (int)getpid(), what);
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    if (write(fd, line, n) != n)
        perror("marker");
    close(fd);
}

static uint32_t xorshift(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static int pick(uint32_t *s, int allow_denied) {
    for (;;) {
        int d = xorshift(s) % ndst;
        if (allow_denied || !denied[d])
            return d;
    }
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    uint32_t seed = 0x9e3779b9u * (t + 1);
    char payload[64 + MAX_THREADS * 32 + MAX_DST];
    memset(payload, 'x', sizeof payload);
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    if (udp < 0) {
        perror("socket");
        exit(2);
    }
    /* a fixed, per-thread number for dup2 churn, far above the others */
    int high = 900 + t;
    long deadline = 0;
    for (long i = 0;; i++) {
        if (i == ops / 2 && reload_new) {
            pthread_barrier_wait(&half);
            if (t == 0) {
                marker("before_rename");
                if (rename(reload_new, reload_target) != 0) {
                    perror("rename");
                    exit(2);
                }
                atomic_store(&rename_ms, now_ms());
                marker("after_rename");
            }
            pthread_barrier_wait(&half);
            deadline = atomic_load(&rename_ms) + reload_min_ms;
        }
        if (i >= ops && (!reload_new || now_ms() >= deadline))
            break;
        int d = pick(&seed, 1);
        size_t len = 64 + t * 32 + d;
        struct sockaddr *sa = (struct sockaddr *)&dsts[d];
        socklen_t salen = sizeof dsts[d];
        switch (i % 5) {
        case 0: {
            int s = socket(AF_INET, SOCK_DGRAM, 0);
            long r = connect(s, sa, salen);
            note(d, C_CONNECT_UDP, r);
            if (r == 0) {
                note(d, C_SEND, send(s, payload, len, 0));
                int s2 = dup(s);
                note(d, C_DUP_SEND, send(s2, payload, len, 0));
                close(s2);
            }
            close(s);
            break;
        }
        case 1:
            note(d, C_SENDTO, sendto(udp, payload, len, 0, sa, salen));
            break;
        case 2: {
            struct mmsghdr m[MMSG];
            struct iovec iov[MMSG];
            int which[MMSG];
            memset(m, 0, sizeof m);
            for (int k = 0; k < MMSG; k++) {
                which[k] = pick(&seed, 0);
                iov[k].iov_base = payload;
                iov[k].iov_len = 64 + t * 32 + which[k];
                m[k].msg_hdr.msg_name = &dsts[which[k]];
                m[k].msg_hdr.msg_namelen = sizeof dsts[which[k]];
                m[k].msg_hdr.msg_iov = &iov[k];
                m[k].msg_hdr.msg_iovlen = 1;
            }
            int r = sendmmsg(udp, m, MMSG, 0);
            int e = errno;
            for (int k = 0; k < MMSG; k++) {
                errno = e;
                note(which[k], C_SENDMMSG, k < r ? 0 : -1);
            }
            break;
        }
        case 3: {
            int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            note(d, C_CONNECT_TCP, connect(s, sa, salen));
            close(s);
            break;
        }
        case 4: {
            int s2 = dup2(udp, high);
            if (s2 != high) {
                perror("dup2");
                exit(2);
            }
            note(d, C_SENDTO, sendto(s2, payload, len, 0, sa, salen));
            close(s2);
            break;
        }
        }
    }
    close(udp);
    return NULL;
}

static int parse_dst(const char *arg, struct sockaddr_in *out, int *deny) {
    char buf[64];
    *deny = arg[0] == '!';
    if (*deny)
        arg++;
    snprintf(buf, sizeof buf, "%s", arg);
    char *colon = strrchr(buf, ':');
    if (!colon)
        return -1;
    *colon = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons(atoi(colon + 1));
    return inet_pton(AF_INET, buf, &out->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: stress THREADS OPS RELOAD DST...\n");
        return 2;
    }
    nthreads = atoi(argv[1]);
    ops = atoi(argv[2]);
    if (nthreads < 1 || nthreads > MAX_THREADS || ops < 2) {
        fprintf(stderr, "bad THREADS or OPS\n");
        return 2;
    }
    if (strcmp(argv[3], "-") != 0) {
        char *spec = strdup(argv[3]);
        char *a = strtok(spec, ":"), *b = strtok(NULL, ":"), *c = strtok(NULL, ":");
        if (!a || !b || !c) {
            fprintf(stderr, "bad RELOAD\n");
            return 2;
        }
        reload_new = a;
        reload_target = b;
        reload_min_ms = atol(c);
    }
    for (int i = 4; i < argc; i++) {
        if (ndst == MAX_DST || parse_dst(argv[i], &dsts[ndst], &denied[ndst]) != 0) {
            fprintf(stderr, "bad DST %s\n", argv[i]);
            return 2;
        }
        ndst++;
    }
    /* A sink on every address for each destination port, so that
     * datagrams are taken (and dropped when its buffer is full) instead of
     * bouncing back as ICMP errors that would fail later sends on
     * connected sockets. Run it in a network namespace of its own. */
    int sinks[MAX_DST], nsinks = 0;
    for (int d = 0; d < ndst; d++) {
        int seen = 0;
        for (int e = 0; e < d; e++)
            seen |= dsts[e].sin_port == dsts[d].sin_port;
        if (seen)
            continue;
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = dsts[d].sin_port};
        if (s < 0 || bind(s, (struct sockaddr *)&any, sizeof any) != 0) {
            perror("sink");
            return 2;
        }
        sinks[nsinks++] = s;
    }
    pthread_barrier_init(&half, NULL, nthreads);
    pthread_t th[MAX_THREADS];
    long t0 = now_ms();
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    long elapsed = now_ms() - t0;
    for (int d = 0; d < ndst; d++)
        for (int c = 0; c < NCALLS; c++)
            for (int e = 0; e < NERR; e++) {
                long n = atomic_load(&counts[d][c][e]);
                if (!n)
                    continue;
                if (e)
                    printf("dst=%d call=%s result=errno=%d count=%ld\n", d, call_names[c], e, n);
                else
                    printf("dst=%d call=%s result=ok count=%ld\n", d, call_names[c], n);
            }
    printf("threads=%d ops=%d elapsed_ms=%ld\n", nthreads, ops, elapsed);
    for (int i = 0; i < nsinks; i++)
        close(sinks[i]);
    return 0;
}
