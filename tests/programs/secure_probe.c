/*
 * Probe for tests/secure.rs: reports whether it runs in secure-execution
 * mode and whether ldsaref is loaded, then tries some socket calls.
 *
 *   secure_probe ACTION IP:PORT [ACTION IP:PORT]...
 *
 * ACTION is `sendto` (UDP, unconnected), `connect` (UDP connect, then
 * send) or `tcp` (TCP connect; a closed port answers ECONNREFUSED).
 * Prints `secure=N euid=N uid=N ldsaref=loaded|absent`, then one line per
 * action: `ACTION IP:PORT ok` or `ACTION IP:PORT errno=N`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <unistd.h>

static int loaded(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[1024];
    int found = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        found |= strstr(line, "libldsaref") != NULL;
    fclose(f);
    return found;
}

static int parse(const char *arg, struct sockaddr_in *sa) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", arg);
    char *colon = strrchr(buf, ':');
    if (!colon)
        return -1;
    *colon = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(atoi(colon + 1));
    return inet_pton(AF_INET, buf, &sa->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    printf("secure=%lu euid=%d uid=%d ldsaref=%s\n", getauxval(AT_SECURE), (int)geteuid(),
           (int)getuid(), loaded() ? "loaded" : "absent");
    for (int i = 1; i + 1 < argc; i += 2) {
        struct sockaddr_in sa;
        if (parse(argv[i + 1], &sa) != 0) {
            fprintf(stderr, "bad address %s\n", argv[i + 1]);
            return 2;
        }
        int tcp = strcmp(argv[i], "tcp") == 0;
        int s = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        int r;
        if (s < 0)
            r = -1;
        else if (strcmp(argv[i], "sendto") == 0)
            r = sendto(s, "probe", 5, 0, (struct sockaddr *)&sa, sizeof sa) < 0 ? -1 : 0;
        else if (strcmp(argv[i], "connect") == 0) {
            r = connect(s, (struct sockaddr *)&sa, sizeof sa);
            if (r == 0)
                r = send(s, "probe", 5, 0) < 0 ? -1 : 0;
        } else if (tcp)
            r = connect(s, (struct sockaddr *)&sa, sizeof sa);
        else {
            fprintf(stderr, "bad action %s\n", argv[i]);
            return 2;
        }
        if (r == 0)
            printf("%s %s ok\n", argv[i], argv[i + 1]);
        else
            printf("%s %s errno=%d\n", argv[i], argv[i + 1], errno);
        if (s >= 0)
            close(s);
    }
    return 0;
}
