/*
 * Hot-path driver for scripts/bench.sh: the same loop of socket calls, run
 * with and without libldsaref.so preloaded, so that the difference is what
 * the library adds per call.
 *
 *   hotpath udp N            N x sendto() of 64 bytes to a loopback sink
 *   hotpath udp-mark N MARK  N x sendmsg() carrying its own SO_MARK cmsg:
 *                            what a program steering itself would do
 *   hotpath tcp N            N x socket/connect/close to a loopback listener
 *   hotpath tcp-mark N MARK  the same with setsockopt(SO_MARK) before connect
 *   hotpath write N          N x write() of 64 bytes to a scratch file,
 *                            never touching a socket (the "pays nothing" case)
 *
 * Prints one line: "MODE N wall_ns_per_op cpu_ns_per_op". CPU time (user +
 * system of this process) is what the calls cost this program, and is far
 * less disturbed than wall time by whatever else the machine runs. A
 * warm-up of N/10 calls runs first,
 * so the library's one-time work (reading the rules, the capability probe)
 * is not in the figure; it is measured on its own by bench.sh.
 *
 * Sinks never answer: the UDP sink is never read (datagrams beyond its
 * buffer are dropped by the kernel, identically in every variant) and the
 * TCP listener is served by a child that accepts and closes. Only loopback.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("getsockname");
    return ntohs(a.sin_port);
}

/* A datagram sink on an ephemeral loopback port. */
static struct sockaddr_in udp_sink(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback(0);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("udp sink");
    return loopback(bound_port(s));
}

static char payload[64];

/* The loops are noinline so that callgrind and perf attribute them. */
__attribute__((noinline)) static void udp_loop(int fd, const struct sockaddr_in *dst, long n)
{
    for (long i = 0; i < n; i++)
        if (sendto(fd, payload, sizeof payload, 0, (const struct sockaddr *)dst, sizeof *dst) < 0)
            die("sendto");
}

__attribute__((noinline)) static void udp_mark_loop(int fd, const struct sockaddr_in *dst,
                                                    long n, uint32_t mark)
{
    union {
        char buf[CMSG_SPACE(sizeof(uint32_t))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    memset(&control, 0, sizeof control);
    m.msg_name = (void *)dst;
    m.msg_namelen = sizeof *dst;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control.buf;
    m.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SO_MARK;
    c->cmsg_len = CMSG_LEN(sizeof(uint32_t));
    memcpy(CMSG_DATA(c), &mark, sizeof mark);
    for (long i = 0; i < n; i++)
        if (sendmsg(fd, &m, 0) < 0)
            die("sendmsg");
}

/* Serves a listener until killed: accept and close, nothing else. */
static pid_t tcp_server(int ls)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        for (;;) {
            int c = accept(ls, NULL, NULL);
            if (c >= 0)
                close(c);
        }
    }
    return pid;
}

__attribute__((noinline)) static void tcp_loop(const struct sockaddr_in *dst, long n, int set_mark,
                                               uint32_t mark)
{
    /* RST on close: no TIME_WAIT, so 50k connects do not run out of ports. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        if (set_mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0)
            die("SO_MARK");
        if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0)
            die("connect");
        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0)
            die("SO_LINGER");
        close(fd);
    }
}

__attribute__((noinline)) static void write_loop(int fd, long n)
{
    for (long i = 0; i < n; i++) {
        if (write(fd, payload, sizeof payload) < 0)
            die("write");
        if ((i & 1023) == 1023 && lseek(fd, 0, SEEK_SET) < 0)
            die("lseek");
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s udp|udp-mark|tcp|tcp-mark|write N [MARK]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    uint32_t mark = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 0;
    long warm = n / 10 > 0 ? n / 10 : 1;
    double t0, t1, c0, c1;

    if (!strcmp(mode, "udp") || !strcmp(mode, "udp-mark")) {
        struct sockaddr_in dst = udp_sink();
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0)
            die("socket");
        int mk = !strcmp(mode, "udp-mark");
        if (mk)
            udp_mark_loop(fd, &dst, warm, mark);
        else
            udp_loop(fd, &dst, warm);
        c0 = cpu_ns();
        t0 = now_ns();
        if (mk)
            udp_mark_loop(fd, &dst, n, mark);
        else
            udp_loop(fd, &dst, n);
        t1 = now_ns();
        c1 = cpu_ns();
    } else if (!strcmp(mode, "tcp") || !strcmp(mode, "tcp-mark")) {
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = loopback(0);
        if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0)
            die("listener");
        struct sockaddr_in dst = loopback(bound_port(ls));
        pid_t server = tcp_server(ls);
        int mk = !strcmp(mode, "tcp-mark");
        tcp_loop(&dst, warm, mk, mark);
        c0 = cpu_ns();
        t0 = now_ns();
        tcp_loop(&dst, n, mk, mark);
        t1 = now_ns();
        c1 = cpu_ns();
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
    } else if (!strcmp(mode, "write")) {
        char path[] = "/tmp/ldsaref-bench-write-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0)
            die("mkstemp");
        unlink(path);
        write_loop(fd, warm);
        c0 = cpu_ns();
        t0 = now_ns();
        write_loop(fd, n);
        t1 = now_ns();
        c1 = cpu_ns();
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%s %ld %.1f %.1f\n", mode, n, (t1 - t0) / (double)n, (c1 - c0) / (double)n);
    return 0;
}
