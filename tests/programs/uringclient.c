/* An io_uring client for the cgroup backend's tests (gcc -luring): the
 * socket is made and used by io_uring operations, which no LD_PRELOAD
 * sees; only the kernel can steer it.
 *
 *   uringclient tcp ADDR PORT   IORING_OP_SOCKET, CONNECT (2 s link
 *                               timeout), SEND "GET /", RECV: print the body
 *   uringclient udp ADDR PORT   IORING_OP_SOCKET, SENDMSG (unconnected,
 *                               msg_name = ADDR), RECV (2 s): print the reply
 *
 * IORING_OP_SOCKET needs kernel 5.19; where the kernel refuses it
 * (EINVAL), the socket comes from socket(2) and every other operation
 * still goes through the ring. stderr says which ("socket: io_uring" or
 * "socket: socket(2)").
 *
 * Prints one line, like cgclient: the answer, or "error NAME after N ms"
 * (ETIMEDOUT when nothing came back in time). Exit 0 on an answer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

static struct io_uring ring;

static struct io_uring_sqe *sqe(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) {
        fprintf(stderr, "uringclient: the ring is full\n");
        exit(2);
    }
    return s;
}

/* Submits what is queued and reaps `n` completions; the result of the
 * first one (a negative errno on failure). */
static int complete(int n) {
    int first = 0;
    int r = io_uring_submit_and_wait(&ring, n);
    if (r < 0)
        return r;
    for (int i = 0; i < n; i++) {
        struct io_uring_cqe *cqe;
        r = io_uring_wait_cqe(&ring, &cqe);
        if (r < 0)
            return r;
        if (cqe->user_data == 1)
            first = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
    }
    return first;
}

/* `sqe` linked to a timeout of 2 s: its result, -ETIMEDOUT on timeout
 * (the link timeout cuts it with -ECANCELED). */
static int with_timeout(struct io_uring_sqe *s) {
    static struct __kernel_timespec two = {.tv_sec = 2};
    s->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(s, 1);
    struct io_uring_sqe *t = sqe();
    io_uring_prep_link_timeout(t, &two, 0);
    io_uring_sqe_set_data64(t, 2);
    int r = complete(2);
    return r == -ECANCELED ? -ETIMEDOUT : r;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: uringclient tcp|udp ADDR PORT\n");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int tcp = strcmp(argv[1], "tcp") == 0;
    struct sockaddr_storage a;
    socklen_t len;
    if (parse_addr("uringclient", argv[2], argv[3], &a, &len) < 0)
        return 2;
    if (a.ss_family != AF_INET) { /* IPv4 only */
        fprintf(stderr, "uringclient: bad address %s\n", argv[2]);
        return 2;
    }
    int r = io_uring_queue_init(8, &ring, 0);
    if (r < 0) {
        fprintf(stderr, "uringclient: io_uring_queue_init: %s\n", strerror(-r));
        return 2;
    }
    struct io_uring_sqe *s = sqe();
    io_uring_prep_socket(s, AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0, 0);
    io_uring_sqe_set_data64(s, 1);
    int fd = complete(1);
    if (fd == -EINVAL || fd == -EOPNOTSUPP) {
        fprintf(stderr, "socket: socket(2)\n");
        fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        if (fd < 0)
            return fail(errno);
    } else if (fd < 0) {
        return fail(-fd);
    } else {
        fprintf(stderr, "socket: io_uring\n");
    }
    char buf[4096];
    if (tcp) {
        s = sqe();
        io_uring_prep_connect(s, fd, (struct sockaddr *)&a, len);
        r = with_timeout(s);
        if (r < 0)
            return fail(-r);
        const char *req = "GET / HTTP/1.0\r\n\r\n";
        s = sqe();
        io_uring_prep_send(s, fd, req, strlen(req), 0);
        r = with_timeout(s);
        if (r < 0)
            return fail(-r);
        size_t got = 0;
        for (;;) {
            s = sqe();
            io_uring_prep_recv(s, fd, buf + got, sizeof buf - 1 - got, 0);
            r = with_timeout(s);
            if (r < 0)
                return fail(-r);
            if (r == 0 || got + r >= sizeof buf - 1)
                break;
            got += r;
        }
        buf[got] = 0;
        char *body = strstr(buf, "\r\n\r\n");
        printf("%s", body ? body + 4 : buf);
    } else {
        struct iovec iov = {.iov_base = "ping", .iov_len = 4};
        struct msghdr msg = {.msg_name = &a, .msg_namelen = len, .msg_iov = &iov, .msg_iovlen = 1};
        s = sqe();
        io_uring_prep_sendmsg(s, fd, &msg, 0);
        r = with_timeout(s);
        if (r < 0)
            return fail(-r);
        s = sqe();
        io_uring_prep_recv(s, fd, buf, sizeof buf - 1, 0);
        r = with_timeout(s);
        if (r < 0)
            return fail(-r);
        buf[r] = 0;
        printf("%s\n", buf);
    }
    return 0;
}
