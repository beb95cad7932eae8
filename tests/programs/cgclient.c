/* A client for the cgroup backend's tests, built with `gcc -static`: no
 * LD_PRELOAD can reach it, only the kernel can steer it.
 *
 *   cgclient tcp ADDR PORT   connect (2 s at most), GET /, print the body
 *   cgclient udp ADDR PORT   one unconnected sendto, print the reply (2 s)
 *
 * Prints one line: the answer, or "error NAME after N ms" (errno name;
 * ETIMEDOUT when nothing came back in time). Exit 0 on an answer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

static int fail(int e) {
    printf("error %s after %ld ms\n", name(e), elapsed_ms());
    return 1;
}

static int wait_for(int fd, short events) {
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, 2000);
    return n == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: cgclient tcp|udp ADDR PORT\n");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int tcp = strcmp(argv[1], "tcp") == 0;
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, argv[2], &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(atoi(argv[3]));
        len = sizeof *a4;
    } else if (inet_pton(AF_INET6, argv[2], &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(atoi(argv[3]));
        len = sizeof *a6;
    } else {
        fprintf(stderr, "cgclient: bad address %s\n", argv[2]);
        return 2;
    }
    int fd = socket(ss.ss_family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return fail(errno);
    char buf[4096];
    if (tcp) {
        if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS)
            return fail(errno);
        if (wait_for(fd, POLLOUT) < 0)
            return fail(ETIMEDOUT);
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err)
            return fail(err);
        const char *req = "GET / HTTP/1.0\r\n\r\n";
        if (send(fd, req, strlen(req), 0) < 0)
            return fail(errno);
        size_t got = 0;
        for (;;) {
            if (wait_for(fd, POLLIN) < 0)
                return fail(ETIMEDOUT);
            ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (n < 0)
                return fail(errno);
            if (n == 0)
                break;
            got += n;
        }
        buf[got] = 0;
        char *body = strstr(buf, "\r\n\r\n");
        printf("%s\n", body ? body + 4 : buf);
    } else {
        if (sendto(fd, "ping", 4, 0, (struct sockaddr *)&ss, len) < 0)
            return fail(errno);
        if (wait_for(fd, POLLIN) < 0)
            return fail(ETIMEDOUT);
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n < 0)
            return fail(errno);
        buf[n] = 0;
        printf("%s\n", buf);
    }
    return 0;
}
