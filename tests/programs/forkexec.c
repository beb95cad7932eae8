/*
 * Driver for tests/forkexec.rs: children of a wrapped program, made every
 * way a program makes them, each doing one UDP connect + send.
 *
 *   forkexec MODE IP:PORT [ITER THREADS [quiet]]
 *
 * MODE:
 *   child   the operation itself; prints
 *           "child pid=P preload=<LD_PRELOAD> result=ok|errno=N"
 *   fork    the operation in the parent, then in a fork()ed child
 *   vfork   vfork() + execv(self, child)
 *   spawn   posix_spawn(self, child)
 *   spawnp  posix_spawnp("forkexec-child" found through PATH=<self's dir>)
 *   exec    execv(self, child): same pid
 *   system  system("exec <self> child ..."): through /bin/sh
 *   firstload DELAY_US   fork DELAY_US after another thread's first
 *           datagram started the rules loading; the child sends its own
 *           ("firstload child=PID status=ok|stuck|WAITSTATUS")
 *   storm   THREADS threads loop on connect/send/sendto/close in the
 *           library while the main thread forks ITER children, each doing
 *           the operation; a child not done within 5 s is killed and
 *           counted as stuck (after 3 stuck children the storm stops: that
 *           is proof enough, and each costs 5 s). Prints
 *           "fork child=P status=S" per child and
 *           "storm children=N ok=N stuck=N failed=N". With "quiet", stderr
 *           (where a debug log goes) is /dev/null.
 *
 * Every mode chdir("/")s first: a child that found the library relative
 * to the starting directory would not find it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static struct sockaddr_in dst;
static char self[PATH_MAX];
static atomic_int stop;

static int op(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        return errno;
    int e = 0;
    if (connect(s, (struct sockaddr *)&dst, sizeof dst) != 0 || send(s, "x", 1, 0) != 1)
        e = errno;
    close(s);
    return e;
}

static void report(const char *who) {
    int e = op();
    const char *pre = getenv("LD_PRELOAD");
    char line[1024];
    int n;
    if (e)
        n = snprintf(line, sizeof line, "%s pid=%d preload=%s result=errno=%d\n", who,
                     (int)getpid(), pre ? pre : "(unset)", e);
    else
        n = snprintf(line, sizeof line, "%s pid=%d preload=%s result=ok\n", who, (int)getpid(),
                     pre ? pre : "(unset)");
    /* write(2), not stdio: safe in a child of a threaded parent */
    if (write(1, line, n) != n)
        _exit(4);
}

static void *busy(void *arg) {
    (void)arg;
    char buf[8] = "busy";
    while (!atomic_load(&stop)) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        connect(s, (struct sockaddr *)&dst, sizeof dst);
        send(s, buf, 4, 0);
        close(s);
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        sendto(u, buf, 4, 0, (struct sockaddr *)&dst, sizeof dst);
        int d = dup(u);
        close(d);
        close(u);
    }
    return NULL;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Forks a child that makes one connect and send, and exits 0 if they
 * worked; -1 if fork failed. */
static pid_t fork_op(void) {
    fflush(stdout);
    pid_t p = fork();
    if (p < 0)
        perror("fork");
    else if (p == 0)
        _exit(op() == 0 ? 0 : 3);
    return p;
}

/* Waits up to MS milliseconds for child P; kills and reaps it if it is
 * still running then (returns 0: stuck). */
static int wait_child(pid_t p, long ms, int *st) {
    long deadline = now_ms() + ms;
    pid_t r;
    while ((r = waitpid(p, st, WNOHANG)) == 0 && now_ms() < deadline)
        usleep(1000);
    if (r != 0)
        return 1;
    kill(p, SIGKILL);
    waitpid(p, st, 0);
    return 0;
}

static int storm(int iter, int nthreads) {
    pthread_t th[64];
    if (nthreads > 64)
        nthreads = 64;
    for (int t = 0; t < nthreads; t++)
        pthread_create(&th[t], NULL, busy, NULL);
    int ok = 0, stuck = 0, failed = 0;
    for (int i = 0; i < iter; i++) {
        pid_t p = fork_op();
        if (p < 0)
            return 2;
        int st = 0;
        if (!wait_child(p, 5000, &st)) {
            stuck++;
            printf("fork child=%d status=stuck\n", (int)p);
            if (stuck == 3) {
                iter = i + 1;
                break;
            }
        } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            ok++;
            printf("fork child=%d status=ok\n", (int)p);
        } else {
            failed++;
            printf("fork child=%d status=%d\n", (int)p, st);
        }
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    printf("storm children=%d ok=%d stuck=%d failed=%d\n", iter, ok, stuck, failed);
    return 0;
}

static void *first_op(void *arg) {
    (void)arg;
    op();
    return NULL;
}

/* firstload DELAY_US: a thread's first datagram makes the library read its
 * rules (a large file: milliseconds); DELAY_US into that, the main thread
 * forks, and the child, which does not have that thread, sends its own. */
static int firstload(long delay_us) {
    pthread_t th;
    pthread_create(&th, NULL, first_op, NULL);
    usleep(delay_us);
    pid_t p = fork_op();
    if (p < 0)
        return 2;
    int st = 0;
    const char *status = "ok";
    char other[32];
    if (!wait_child(p, 10000, &st)) {
        status = "stuck";
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(other, sizeof other, "%d", st);
        status = other;
    }
    pthread_join(th, NULL);
    printf("firstload child=%d status=%s\n", (int)p, status);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: forkexec MODE IP:PORT [ITER THREADS]\n");
        return 2;
    }
    const char *mode = argv[1];
    char host[64];
    snprintf(host, sizeof host, "%s", argv[2]);
    char *colon = strrchr(host, ':');
    if (!colon)
        return 2;
    *colon = 0;
    dst.sin_family = AF_INET;
    dst.sin_port = htons(atoi(colon + 1));
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1)
        return 2;
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return 2;
    self[n] = 0;
    if (chdir("/") != 0)
        return 2;
    setvbuf(stdout, NULL, _IONBF, 0);

    char *child_argv[] = {self, "child", argv[2], NULL};
    if (!strcmp(mode, "child")) {
        report("child");
        return 0;
    }
    if (!strcmp(mode, "fork")) {
        report("parent");
        pid_t p = fork();
        if (p == 0) {
            report("child");
            _exit(0);
        }
        waitpid(p, NULL, 0);
        return 0;
    }
    if (!strcmp(mode, "vfork")) {
        pid_t p = vfork();
        if (p == 0) {
            execv(self, child_argv);
            _exit(127);
        }
        waitpid(p, NULL, 0);
        return 0;
    }
    if (!strcmp(mode, "spawn") || !strcmp(mode, "spawnp")) {
        pid_t p;
        int r;
        if (!strcmp(mode, "spawn")) {
            r = posix_spawn(&p, self, NULL, NULL, child_argv, environ);
        } else {
            /* by name, through PATH: the test put a copy named
             * forkexec-child next to this program */
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s", self);
            setenv("PATH", dirname(dir), 1);
            char *argv2[] = {"forkexec-child", "child", argv[2], NULL};
            r = posix_spawnp(&p, "forkexec-child", NULL, NULL, argv2, environ);
        }
        if (r != 0) {
            fprintf(stderr, "posix_spawn: %s\n", strerror(r));
            return 2;
        }
        waitpid(p, NULL, 0);
        return 0;
    }
    if (!strcmp(mode, "exec")) {
        printf("exec pid=%d\n", (int)getpid());
        execv(self, child_argv);
        perror("execv");
        return 2;
    }
    if (!strcmp(mode, "system")) {
        char cmd[PATH_MAX + 128];
        snprintf(cmd, sizeof cmd, "exec '%s' child '%s'", self, argv[2]);
        return system(cmd) == 0 ? 0 : 2;
    }
    if (!strcmp(mode, "firstload") && argc >= 4)
        return firstload(atol(argv[3]));
    if (!strcmp(mode, "storm") && argc >= 5) {
        if (argc >= 6 && !strcmp(argv[5], "quiet")) {
            int null = open("/dev/null", O_WRONLY);
            if (null < 0 || dup2(null, 2) != 2)
                return 2;
            close(null);
        }
        return storm(atoi(argv[3]), atoi(argv[4]));
    }
    fprintf(stderr, "bad mode %s\n", mode);
    return 2;
}
