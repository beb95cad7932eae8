/*
 * badinput.c - feeds the KLIPS emulator bad pointers and bad lengths, and
 * checks it answers like the kernel (EFAULT/EINVAL/...) instead of crashing.
 * Run under LD_PRELOAD=libklipsemu.so by tests/emulator_selftest.rs; prints
 * "ok" lines and exits 0, or names the first failed check and exits 1.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, what)                                                             \
    do {                                                                              \
        if (cond) {                                                                   \
            printf("ok %s\n", what);                                                  \
        } else {                                                                      \
            printf("FAIL %s (errno=%d %s)\n", what, errno, strerror(errno));          \
            failures++;                                                               \
        }                                                                             \
    } while (0)

int main(void)
{
    /* an address that is certainly not mapped */
    void *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bad == MAP_FAILED)
        return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int r = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (s < 0 || r < 0 || bind(r, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(r, (struct sockaddr *)&a, &al) < 0)
        return 2;

    errno = 0;
    CHECK(setsockopt(s, IPPROTO_IP, 31, bad, 4) == -1 && errno == EFAULT, "setsockopt bad optval");
    CHECK(setsockopt(s, IPPROTO_IP, 31, NULL, 4) == -1 && errno == EFAULT, "setsockopt NULL optval");
    int v = 5;
    CHECK(setsockopt(s, IPPROTO_IP, 31, &v, 0) == -1 && errno == EINVAL, "setsockopt optlen 0");
    CHECK(setsockopt(-1, IPPROTO_IP, 31, &v, 4) == -1 && errno == EBADF, "setsockopt EBADF");
    CHECK(setsockopt(0, IPPROTO_IP, 31, &v, 4) == -1 && errno == ENOTSOCK, "setsockopt ENOTSOCK");
    CHECK(setsockopt(s, IPPROTO_IP, 31, &v, 4) == 0, "setsockopt 5");

    socklen_t ol = 4;
    CHECK(getsockopt(s, IPPROTO_IP, 31, &v, NULL) == -1 && errno == EFAULT, "getsockopt NULL optlen");
    CHECK(getsockopt(s, IPPROTO_IP, 31, bad, &ol) == -1 && errno == EFAULT, "getsockopt bad optval");
    CHECK(getsockopt(s, IPPROTO_IP, 31, &v, bad) == -1 && errno == EFAULT, "getsockopt bad optlen");
    ol = (socklen_t)-1;
    CHECK(getsockopt(s, IPPROTO_IP, 31, &v, &ol) == -1 && errno == EINVAL, "getsockopt negative optlen");
    unsigned char c = 0;
    ol = 1;
    CHECK(getsockopt(s, IPPROTO_IP, 31, &c, &ol) == 0 && ol == 1 && c == 5, "getsockopt 1 byte");
    v = 0;
    ol = 8;
    CHECK(getsockopt(s, IPPROTO_IP, 31, &v, &ol) == 0 && ol == 4 && v == 5, "getsockopt 8 bytes");

    CHECK(sendmsg(s, bad, 0) == -1 && errno == EFAULT, "sendmsg bad msghdr");
    CHECK(sendmsg(s, NULL, 0) == -1 && errno == EFAULT, "sendmsg NULL msghdr");
    char payload[] = "x";
    struct iovec iov = {payload, 1};
    struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1};
    m.msg_control = bad;
    m.msg_controllen = 64;
    CHECK(sendmsg(s, &m, 0) == -1 && errno == EFAULT, "sendmsg bad control");
    union {
        struct cmsghdr h;
        unsigned char b[64];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl.h.cmsg_len = 1000; /* longer than the buffer */
    ctl.h.cmsg_level = IPPROTO_IP;
    ctl.h.cmsg_type = 30;
    m.msg_control = &ctl;
    m.msg_controllen = CMSG_SPACE(4);
    CHECK(sendmsg(s, &m, 0) == -1 && errno == EINVAL, "sendmsg cmsg_len too long");
    ctl.h.cmsg_len = 4; /* shorter than a header */
    CHECK(sendmsg(s, &m, 0) == -1 && errno == EINVAL, "sendmsg cmsg_len too short");
    m.msg_controllen = 3; /* too short to hold a header: no cmsgs at all */
    CHECK(sendmsg(s, &m, 0) == 1, "sendmsg controllen 3");
    m.msg_name = bad;
    m.msg_control = NULL;
    m.msg_controllen = 0;
    CHECK(sendmsg(s, &m, 0) == -1 && errno == EFAULT, "sendmsg bad name");
    CHECK(sendmmsg(s, bad, 2, 0) == -1 && errno == EFAULT, "sendmmsg bad vector");
    CHECK(connect(s, bad, sizeof a) == -1 && errno == EFAULT, "connect bad addr");
    CHECK(sendto(s, "y", 1, 0, bad, sizeof a) == -1 && errno == EFAULT, "sendto bad addr");

    /* the receive side, with the REFINFO flag on */
    v = 1;
    CHECK(setsockopt(r, IPPROTO_IP, 30, &v, 4) == 0, "refinfo on");
    char buf[16];
    CHECK(recvmsg(r, bad, MSG_DONTWAIT) == -1 && errno == EFAULT, "recvmsg bad msghdr");
    CHECK(recvmmsg(r, bad, 2, MSG_DONTWAIT, NULL) == -1 && errno == EFAULT, "recvmmsg bad vector");
    /* like the kernel: the datagram is consumed, the address copy fails */
    CHECK(recvfrom(r, buf, sizeof buf, MSG_DONTWAIT, bad, &al) == -1 && errno == EFAULT,
          "recvfrom bad addr");
    CHECK(recvfrom(r, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&a, bad) == -1 &&
              errno == EFAULT,
          "recvfrom bad addrlen");
    /* a bad control buffer: no crash (the data may come with EFAULT) */
    m.msg_name = &a;
    CHECK(sendmsg(s, &m, 0) == 1, "sendmsg again");
    struct iovec riov = {buf, sizeof buf};
    struct msghdr rm = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = bad, .msg_controllen = 64};
    ssize_t got = recvmsg(r, &rm, MSG_DONTWAIT);
    CHECK(got == 1 || (got == -1 && errno == EFAULT), "recvmsg bad control");
    CHECK(recvmsg(r, &rm, MSG_DONTWAIT) == -1 && errno == EAGAIN, "recvmsg: nothing left");

    CHECK(close(s) == 0 && close(r) == 0, "close");
    CHECK(close(s) == -1 && errno == EBADF, "close twice");
    return failures ? 1 : 0;
}
