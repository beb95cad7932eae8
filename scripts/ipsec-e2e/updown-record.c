/*
 * The updown "script" the IKE daemons of the daemon phases run (strongSwan
 * `updown =`, libreswan `leftupdown=`): it records what the daemon really
 * passes, then runs `ldsaref updown` with the arguments it was given.
 *
 *   updown-record RECDIR LDSAREF updown --dir RULESDIR [options...]
 *
 * RECDIR/calls.log gets one line per call:
 *   EPOCH PLUTO_VERB PLUTO_CONNECTION PLUTO_PEER_CLIENT IF_ID_OUT EXIT END SPI_OUT
 * (EPOCH: seconds.microseconds when the daemon called, which orders the
 * calls; the churn report measures recovery from it; END: when ldsaref
 * updown returned, after which the daemon acts; SPI_OUT: the SA's, which
 * pluto passes and charon does not, "-" then). While RECDIR/on exists, the
 * environment of the call is also kept as RECDIR/env/EPOCH-VERB-CONN.env:
 * NAME=value lines, sorted, without any variable whose name says it could
 * hold key material (KEY, SECRET, PSK, PASS) and without those a shell
 * adds (PWD, SHLVL, _, OLDPWD).
 *
 * C, statically linked, built on the host by ../ipsec-e2e.sh: the daemon
 * waits for its updown script (charon holds its event bus, pluto does
 * nothing else meanwhile), and in the emulated guest a bash wrapper cost
 * about 100 ms of each call before ldsaref even started, time an
 * operator's daemon, which runs ldsaref directly, does not spend.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void now(char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, len, "%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
}

/* $NAME, or `dflt` when it is unset or empty. */
static const char *var(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* Whether an environment entry NAME=value stays out of the record: the
 * name, the n bytes before its '=', is compared in place. */
static int skipped(const char *entry)
{
    static const char *const secret[] = {"KEY", "SECRET", "PSK", "PASS"};
    static const char *const shell[] = {"PWD", "SHLVL", "_", "OLDPWD"};
    size_t n = strcspn(entry, "=");
    if (n == 0 || entry[n] != '=')
        return 1;
    for (size_t i = 0; i < sizeof secret / sizeof *secret; i++)
        if (memmem(entry, n, secret[i], strlen(secret[i])))
            return 1;
    for (size_t i = 0; i < sizeof shell / sizeof *shell; i++)
        if (strlen(shell[i]) == n && !memcmp(entry, shell[i], n))
            return 1;
    return 0;
}

/* Sorted by name, as bash's `LC_ALL=C compgen -e` listed them. */
static int by_name(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    for (; *x == *y && *x && *x != '='; x++, y++)
        ;
    unsigned char cx = *x == '=' ? 0 : (unsigned char)*x;
    unsigned char cy = *y == '=' ? 0 : (unsigned char)*y;
    return cx - cy;
}

static void keep_environment(const char *rec, const char *t)
{
    char conn[128], path[4096];
    const char *c = var("PLUTO_CONNECTION", "none");
    size_t i;
    for (i = 0; c[i] && i < sizeof conn - 1; i++) {
        char ch = c[i];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                 (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
        conn[i] = ok ? ch : '_';
    }
    conn[i] = 0;
    snprintf(path, sizeof path, "%s/env/%s-%s-%s.env", rec, t, var("PLUTO_VERB", "none"), conn);
    size_t n = 0;
    while (environ[n])
        n++;
    char **list = calloc(n + 1, sizeof *list);
    FILE *f = list ? fopen(path, "w") : NULL;
    if (!f) {
        fprintf(stderr, "updown-record: %s: %s\n", path, strerror(errno));
        free(list);
        return;
    }
    size_t k = 0;
    for (i = 0; i < n; i++)
        if (!skipped(environ[i]))
            list[k++] = environ[i];
    qsort(list, k, sizeof *list, by_name);
    for (i = 0; i < k; i++)
        fprintf(f, "%s\n", list[i]);
    fclose(f);
    free(list);
}

int main(int argc, char **argv)
{
    char t[32], end[32], path[4096], line[8192];
    if (argc < 3) {
        fprintf(stderr, "usage: updown-record RECDIR COMMAND [ARGS...]\n");
        return 2;
    }
    const char *rec = argv[1];
    now(t, sizeof t);
    snprintf(path, sizeof path, "%s/on", rec);
    if (access(path, F_OK) == 0)
        keep_environment(rec, t);

    int rc;
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[2], argv + 2);
        fprintf(stderr, "updown-record: %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    int status = 0;
    if (pid < 0) {
        fprintf(stderr, "updown-record: fork: %s\n", strerror(errno));
        rc = 126;
    } else {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    now(end, sizeof end);

    /* One short line, appended (O_APPEND, one write): concurrent calls do
     * not mix. */
    int len = snprintf(line, sizeof line, "%s %s %s %s %s %d %s %s\n", t,
                       var("PLUTO_VERB", "none"), var("PLUTO_CONNECTION", "none"),
                       var("PLUTO_PEER_CLIENT", "none"),
                       var("PLUTO_IF_ID_OUT", var("PLUTO_VIRT_INTERFACE", "-")), rc, end,
                       var("SPI_OUT", "-"));
    snprintf(path, sizeof path, "%s/calls.log", rec);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || len <= 0 || len >= (int)sizeof line || write(fd, line, (size_t)len) != len)
        fprintf(stderr, "updown-record: %s: cannot append the call\n", path);
    if (fd >= 0)
        close(fd);
    return rc;
}
