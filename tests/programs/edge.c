/*
 * Edge cases for tests/hardening.rs: errors and errno must pass through a
 * preloaded library unchanged. Every step prints
 *   step=NAME ret=R errno=E
 * where errno is read right after the call (for a call that succeeded it
 * is whatever it was before, which each step sets to a sentinel, 77).
 *
 *   edge panic   IP:PORT        3 x sendto, 3 x UDP connect+send, 2 x TCP
 *                               connect, then "alive"
 *   edge nonblock IP:PORT IP:PORT  non-blocking TCP connect to a silent
 *                               destination (EINPROGRESS, then EALREADY),
 *                               and to a listener the program opens
 *                               itself on the second (EINPROGRESS, poll,
 *                               then 0 (Linux reports the completed
 *                               connect once), then EISCONN)
 *   edge eagain  IP:PORT        EAGAIN from non-blocking recv/recvfrom/
 *                               recvmsg on UDP and from send/write/
 *                               sendmsg/sendto on a TCP connection to a
 *                               listener that never reads
 *   edge eintr   IP:PORT        a blocking TCP connect to a silent
 *                               destination and a blocking recvfrom, each
 *                               interrupted by SIGALRM (no SA_RESTART)
 *   edge errno   IP:PORT IP:PORT  successful and failing calls (socket,
 *                               connect, send, sendto, sendmsg, sendmmsg,
 *                               write, writev, setsockopt, dup, dup2,
 *                               close); the program listens for UDP on
 *                               the first address, the second is a closed
 *                               TCP and UDP port
 *   edge efault  CASE IP:PORT   one call with a bad pointer (CASE: sendmsg,
 *                               sendmmsg, sendto, connect): the kernel
 *                               answers EFAULT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#define SENTINEL 77

static void step(const char *name, long ret) {
    int e = errno;
    printf("step=%s ret=%ld errno=%d\n", name, ret, e);
    fflush(stdout);
}

/* Runs EXPR with errno set to the sentinel first, then prints. */
#define STEP(name, expr)                                                                           \
    do {                                                                                           \
        errno = SENTINEL;                                                                          \
        long r_ = (long)(expr);                                                                    \
        step(name, r_);                                                                            \
    } while (0)

static struct sockaddr_in addr_of(const char *arg) {
    struct sockaddr_in sa;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", arg);
    char *colon = strrchr(buf, ':');
    memset(&sa, 0, sizeof sa);
    if (!colon) {
        fprintf(stderr, "bad address %s\n", arg);
        exit(2);
    }
    *colon = 0;
    sa.sin_family = AF_INET;
    sa.sin_port = htons(atoi(colon + 1));
    if (inet_pton(AF_INET, buf, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", arg);
        exit(2);
    }
    return sa;
}

#define SA(x) ((struct sockaddr *)&(x))

static void on_alarm(int sig) { (void)sig; }

static int listener(struct sockaddr_in *sa) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, SA(*sa), sizeof *sa) != 0 || listen(l, 4) != 0) {
        perror("listener");
        exit(2);
    }
    return l;
}

static int mode_panic(struct sockaddr_in d) {
    for (int i = 0; i < 3; i++) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        STEP("sendto", sendto(s, "p", 1, 0, SA(d), sizeof d));
        close(s);
    }
    for (int i = 0; i < 3; i++) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        STEP("connect_udp", connect(s, SA(d), sizeof d));
        STEP("send", send(s, "p", 1, 0));
        close(s);
    }
    for (int i = 0; i < 2; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        STEP("connect_tcp", connect(s, SA(d), sizeof d));
        close(s);
    }
    printf("alive\n");
    return 0;
}

static int mode_nonblock(struct sockaddr_in silent, struct sockaddr_in local) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    STEP("silent_connect1", connect(s, SA(silent), sizeof silent));
    STEP("silent_connect2", connect(s, SA(silent), sizeof silent));
    close(s);

    int l = listener(&local);
    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    STEP("local_connect1", connect(s, SA(local), sizeof local));
    struct pollfd p = {.fd = s, .events = POLLOUT};
    STEP("poll", poll(&p, 1, 3000));
    STEP("local_connect2", connect(s, SA(local), sizeof local));
    STEP("local_connect3", connect(s, SA(local), sizeof local));
    close(s);
    close(l);
    return 0;
}

static int mode_eagain(struct sockaddr_in d) {
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in any = {.sin_family = AF_INET};
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(u, SA(any), sizeof any);
    char buf[65536];
    STEP("udp_recv", recv(u, buf, sizeof buf, 0));
    STEP("udp_recvfrom", recvfrom(u, buf, sizeof buf, 0, NULL, NULL));
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    STEP("udp_recvmsg", recvmsg(u, &m, 0));
    close(u);

    /* A TCP connection to a listener that never accepts nor reads: the
     * send side fills up. */
    int l = listener(&d);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    if (connect(s, SA(d), sizeof d) != 0) {
        perror("connect");
        return 2;
    }
    fcntl(s, F_SETFL, O_NONBLOCK);
    memset(buf, 'x', sizeof buf);
    /* Fill until EAGAIN, then again after a pause, until a pause frees
     * nothing: the peer's receive buffer is full too, and every further
     * send must say EAGAIN. */
    long r = 0;
    for (int round = 0; round < 100; round++) {
        int sent = 0;
        while ((r = send(s, buf, sizeof buf, 0)) > 0)
            sent++;
        if (sent == 0 && round > 0)
            break;
        usleep(50000);
    }
    step("tcp_fill", r);
    STEP("tcp_send", send(s, buf, sizeof buf, 0));
    STEP("tcp_write", write(s, buf, sizeof buf));
    struct iovec iov2 = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr m2 = {.msg_iov = &iov2, .msg_iovlen = 1};
    STEP("tcp_sendmsg", sendmsg(s, &m2, 0));
    STEP("tcp_sendto", sendto(s, buf, sizeof buf, 0, NULL, 0));
    STEP("tcp_writev", writev(s, &iov2, 1));
    close(s);
    close(l);
    return 0;
}

static int mode_eintr(struct sockaddr_in silent) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_value = {.tv_usec = 200000}};

    int s = socket(AF_INET, SOCK_STREAM, 0);
    setitimer(ITIMER_REAL, &it, NULL);
    STEP("connect", connect(s, SA(silent), sizeof silent));
    close(s);

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in any = {.sin_family = AF_INET};
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(u, SA(any), sizeof any);
    char buf[16];
    setitimer(ITIMER_REAL, &it, NULL);
    STEP("recvfrom", recvfrom(u, buf, sizeof buf, 0, NULL, NULL));
    close(u);
    return 0;
}

static int mode_errno(struct sockaddr_in d, struct sockaddr_in closed) {
    char buf[32] = "errno";
    int s;
    int sink = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(sink, SA(d), sizeof d) != 0) {
        perror("bind");
        return 2;
    }
    errno = SENTINEL;
    s = socket(AF_INET, SOCK_DGRAM, 0);
    step("socket_first", s);
    STEP("socket", s = socket(AF_INET, SOCK_DGRAM, 0));
    STEP("sendto", sendto(s, buf, 5, 0, SA(d), sizeof d));
    struct iovec iov = {.iov_base = buf, .iov_len = 5};
    struct msghdr m = {.msg_name = &d, .msg_namelen = sizeof d, .msg_iov = &iov, .msg_iovlen = 1};
    STEP("sendmsg", sendmsg(s, &m, 0));
    struct mmsghdr mm[2];
    memset(mm, 0, sizeof mm);
    mm[0].msg_hdr = m;
    mm[1].msg_hdr = m;
    STEP("sendmmsg", sendmmsg(s, mm, 2, 0));
    int one = 1;
    STEP("setsockopt", setsockopt(s, SOL_SOCKET, SO_BROADCAST, &one, sizeof one));
    STEP("connect_udp", connect(s, SA(d), sizeof d));
    STEP("send", send(s, buf, 5, 0));
    STEP("write", write(s, buf, 5));
    STEP("writev", writev(s, &iov, 1));
    int s2;
    STEP("dup", s2 = dup(s));
    STEP("send_dup", send(s2, buf, 5, 0));
    STEP("dup2", dup2(s, 100));
    STEP("close_dup2", close(100));
    STEP("close_dup", close(s2));
    STEP("close", close(s));
    STEP("socket_tcp", s = socket(AF_INET, SOCK_STREAM, 0));
    STEP("connect_refused", connect(s, SA(closed), sizeof closed));
    STEP("close_tcp", close(s));
    /* failures the kernel reports */
    /* A connected UDP socket whose peer port is closed: the ICMP error
     * comes back, and the next send reports it. */
    STEP("socket_refused", s = socket(AF_INET, SOCK_DGRAM, 0));
    STEP("connect_refused_udp", connect(s, SA(closed), sizeof closed));
    STEP("send_first", send(s, buf, 5, 0));
    struct pollfd p = {.fd = s, .events = 0};
    STEP("poll_err", poll(&p, 1, 2000));
    STEP("send_refused", send(s, buf, 5, 0));
    STEP("close_refused", close(s));
    STEP("connect_ebadf", connect(-1, SA(d), sizeof d));
    STEP("sendto_ebadf", sendto(-1, buf, 5, 0, SA(d), sizeof d));
    STEP("socket_u", s = socket(AF_INET, SOCK_DGRAM, 0));
    STEP("sendto_einval", sendto(s, buf, 5, 0, SA(d), 3));
    STEP("connect_einval", connect(s, SA(d), 3));
    STEP("close_u", close(s));
    STEP("close_ebadf", close(12345));
    close(sink);
    return 0;
}

static int mode_efault(const char *which, struct sockaddr_in d) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    void *bad = (void *)8;
    if (!strcmp(which, "sendmsg"))
        STEP("sendmsg", sendmsg(s, bad, 0));
    else if (!strcmp(which, "sendmmsg"))
        STEP("sendmmsg", sendmmsg(s, bad, 1, 0));
    else if (!strcmp(which, "sendto"))
        STEP("sendto", sendto(s, "x", 1, 0, bad, sizeof d));
    else if (!strcmp(which, "connect"))
        STEP("connect", connect(s, bad, sizeof d));
    else
        return 2;
    close(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: edge MODE IP:PORT [IP:PORT]\n");
        return 2;
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "efault")) {
        if (argc < 4)
            return 2;
        return mode_efault(argv[2], addr_of(argv[3]));
    }
    struct sockaddr_in a = addr_of(argv[2]);
    if (!strcmp(mode, "panic"))
        return mode_panic(a);
    if (!strcmp(mode, "eagain"))
        return mode_eagain(a);
    if (!strcmp(mode, "eintr"))
        return mode_eintr(a);
    if (argc < 4) {
        fprintf(stderr, "%s needs two addresses\n", mode);
        return 2;
    }
    struct sockaddr_in b = addr_of(argv[3]);
    if (!strcmp(mode, "nonblock"))
        return mode_nonblock(a, b);
    if (!strcmp(mode, "errno"))
        return mode_errno(a, b);
    fprintf(stderr, "bad mode %s\n", mode);
    return 2;
}
