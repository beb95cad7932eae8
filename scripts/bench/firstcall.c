/*
 * Start-up driver for scripts/bench/index.sh (issue 14: the compiled
 * rules index).
 *
 *   firstcall once          socket() + sendto() of one UDP datagram to
 *                           127.0.0.1:9, then exit; prints the time of
 *                           those two calls (where the library loads its
 *                           rules) in microseconds
 *   firstcall stay          the same, then prints "ready" and waits for a
 *                           signal: for reading its memory in /proc
 *   firstcall spawn N ARGV  runs ARGV N times, one after the other, and
 *                           prints the wall time of each run (fork, exec,
 *                           the program, exit) in microseconds
 *
 * Only loopback; the datagram goes nowhere (nothing listens on port 9).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double send_one(void) {
    double t0 = now_us();
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        perror("socket");
        exit(1);
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(9);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (sendto(s, "x", 1, 0, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("sendto");
        exit(1);
    }
    return now_us() - t0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "once") == 0) {
        printf("%.1f\n", send_one());
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "stay") == 0) {
        send_one();
        printf("ready\n");
        fflush(stdout);
        pause();
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "spawn") == 0) {
        int n = atoi(argv[2]);
        for (int i = 0; i < n; i++) {
            pid_t pid;
            double t0 = now_us();
            posix_spawn_file_actions_t fa;
            posix_spawn_file_actions_init(&fa);
            posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", 1, 0);
            if (posix_spawnp(&pid, argv[3], &fa, NULL, argv + 3, environ) != 0) {
                perror("posix_spawnp");
                return 1;
            }
            int st;
            waitpid(pid, &st, 0);
            printf("%.1f\n", now_us() - t0);
            posix_spawn_file_actions_destroy(&fa);
        }
        return 0;
    }
    fprintf(stderr, "usage: firstcall once | stay | spawn N PROGRAM [ARGS]\n");
    return 2;
}
