/*
 * klips_emu.c - test-only emulator of the Openswan KLIPS "SAref" kernel patch.
 *
 * An LD_PRELOAD interposer that sits AFTER libldsaref.so:
 *
 *   LD_PRELOAD="/abs/libldsaref.so /abs/libklipsemu.so" program ...
 *
 * so that ldsaref's dlsym(RTLD_NEXT, ...) calls land here.  It emulates the
 * IP_IPSEC_BINDREF / IP_IPSEC_REFINFO socket options and the REFINFO send and
 * receive control messages on a stock kernel, records what every socket and
 * datagram ended up with (KLIPS_EMU_LOG), and lets real packets still move
 * (the REFINFO send cmsg is stripped before the kernel sees it; with
 * KLIPS_EMU_MARK=1 the SA choice is carried as the mast nfmark in SO_MARK).
 *
 * See tests/emu/README.md for the behaviour and the exact log format.
 *
 * Build:
 *   gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o libklipsemu.so klips_emu.c \
 *       -ldl -lpthread
 *
 * Environment (read once, when the library is loaded):
 *   KLIPS_EMU_ABI=22     use the legacy option numbers 22/23 instead of 30/31
 *   KLIPS_EMU_MARK=1     carry SArefs as SO_MARK (needs CAP_NET_ADMIN)
 *   KLIPS_EMU_LOG=/path  append one line per event to that file
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE 1

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

#ifndef SO_MARK
#define SO_MARK 36
#endif
#ifndef SO_RCVMARK
#define SO_RCVMARK 75
#endif
#ifndef SO_DOMAIN
#define SO_DOMAIN 39
#endif
#ifndef SO_PROTOCOL
#define SO_PROTOCOL 38
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024
#endif

#define SAREF_MAX 32767
#define MAX_CTL (1u << 20) /* larger control buffers are passed through as is */
#define STACK_CTL 4096

/* ------------------------------------------------------------------------ */
/* configuration                                                            */

static int g_opt_bindref = 31;
static int g_opt_refinfo = 30;
static int g_mark_mode;
static char g_log_path[4096];

__attribute__((constructor)) static void emu_init(void)
{
    int saved = errno;
    const char *abi = getenv("KLIPS_EMU_ABI");
    if (abi && strcmp(abi, "22") == 0) {
        g_opt_bindref = 23;
        g_opt_refinfo = 22;
    }
    const char *mark = getenv("KLIPS_EMU_MARK");
    g_mark_mode = mark && strcmp(mark, "1") == 0;
    const char *lp = getenv("KLIPS_EMU_LOG");
    if (lp && lp[0] && strlen(lp) < sizeof(g_log_path))
        memcpy(g_log_path, lp, strlen(lp) + 1);
    errno = saved;
}

static uint32_t mast(uint32_t saref)
{
    return ((saref & 0x7fffu) << 16) | 0x80000000u;
}

/* ------------------------------------------------------------------------ */
/* next definitions                                                         */

static void *resolve_next(void *_Atomic *slot, const char *name)
{
    void *p = atomic_load_explicit(slot, memory_order_acquire);
    if (!p) {
        int saved = errno;
        p = dlsym(RTLD_NEXT, name);
        if (!p && strcmp(name, "fcntl64") == 0)
            p = dlsym(RTLD_NEXT, "fcntl");
        if (!p) {
            static const char msg[] = "klips_emu: cannot resolve next symbol\n";
            syscall(SYS_write, 2, msg, sizeof msg - 1);
            abort();
        }
        atomic_store_explicit(slot, p, memory_order_release);
        errno = saved;
    }
    return p;
}

#define NEXT_SLOT(name) static void *_Atomic next_slot_##name
#define NEXT(name) ((__typeof__(&name))resolve_next(&next_slot_##name, #name))

NEXT_SLOT(socket);
NEXT_SLOT(setsockopt);
NEXT_SLOT(getsockopt);
NEXT_SLOT(connect);
NEXT_SLOT(accept);
NEXT_SLOT(accept4);
NEXT_SLOT(sendmsg);
NEXT_SLOT(sendmmsg);
NEXT_SLOT(sendto);
NEXT_SLOT(send);
NEXT_SLOT(write);
NEXT_SLOT(writev);
NEXT_SLOT(recvmsg);
NEXT_SLOT(recvmmsg);
NEXT_SLOT(recvfrom);
NEXT_SLOT(recv);
NEXT_SLOT(close);
NEXT_SLOT(close_range);
NEXT_SLOT(closefrom);
NEXT_SLOT(dup);
NEXT_SLOT(dup2);
NEXT_SLOT(dup3);
NEXT_SLOT(fcntl);
NEXT_SLOT(fcntl64);

/* ------------------------------------------------------------------------ */
/* safe access to caller memory (bad pointers give EFAULT, never a crash)   */

static int safe_read(void *dst, const void *src, size_t n)
{
    if (n == 0)
        return 0;
    if (!src)
        return -1;
    int saved = errno;
    struct iovec l = {dst, n};
    struct iovec r = {(void *)src, n};
    long got = syscall(SYS_process_vm_readv, (long)getpid(), &l, 1L, &r, 1L, 0L);
    int rc = 0;
    if (got != (long)n) {
        if (got < 0 && (errno == ENOSYS || errno == EPERM))
            memcpy(dst, src, n); /* cannot check: trust the caller */
        else
            rc = -1;
    }
    errno = saved;
    return rc;
}

static int safe_write(void *dst, const void *src, size_t n)
{
    if (n == 0)
        return 0;
    if (!dst)
        return -1;
    int saved = errno;
    struct iovec l = {(void *)src, n};
    struct iovec r = {dst, n};
    long put = syscall(SYS_process_vm_writev, (long)getpid(), &l, 1L, &r, 1L, 0L);
    int rc = 0;
    if (put != (long)n) {
        if (put < 0 && (errno == ENOSYS || errno == EPERM))
            memcpy(dst, src, n);
        else
            rc = -1;
    }
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* per-fd table: two-level, lazily mmapped, all fields atomic               */

#define I_KNOWN 0x01u  /* entry is valid */
#define I_SOCK 0x02u   /* fd is a socket */
#define I_INET 0x04u   /* AF_INET or AF_INET6 */
#define I_INET6 0x08u  /* AF_INET6 */
#define I_STREAM 0x10u /* SOCK_STREAM */
#define I_TCP 0x20u
#define I_UDP 0x40u
#define I_SHAPE (I_SOCK | I_INET | I_INET6 | I_STREAM | I_TCP | I_UDP)

struct ent {
    _Atomic uint32_t info;
    _Atomic uint32_t sockid; /* shared by dup()ed fds: same open socket */
    _Atomic int32_t bindref;
    _Atomic int32_t refinfo;
    _Atomic int32_t app_rcvmark; /* the application enabled SO_RCVMARK */
};

#define CHUNK_BITS 10
#define CHUNK (1 << CHUNK_BITS)
#define NCHUNKS 1024
#define MAXFD (CHUNK * NCHUNKS)

static struct ent *_Atomic g_chunks[NCHUNKS];
static _Atomic int g_maxfd = -1;
static _Atomic uint32_t g_next_sockid = 1;

static struct ent *ent_get(int fd, int create)
{
    if (fd < 0 || fd >= MAXFD)
        return NULL;
    int c = fd >> CHUNK_BITS;
    struct ent *ch = atomic_load_explicit(&g_chunks[c], memory_order_acquire);
    if (!ch) {
        if (!create)
            return NULL;
        int saved = errno;
        void *m = mmap(NULL, sizeof(struct ent) * CHUNK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        errno = saved;
        if (m == MAP_FAILED)
            return NULL;
        struct ent *expected = NULL;
        if (atomic_compare_exchange_strong(&g_chunks[c], &expected, (struct ent *)m)) {
            ch = m;
        } else {
            munmap(m, sizeof(struct ent) * CHUNK);
            errno = saved;
            ch = expected;
        }
    }
    if (create) {
        int cur = atomic_load(&g_maxfd);
        while (fd > cur && !atomic_compare_exchange_weak(&g_maxfd, &cur, fd)) {
        }
    }
    return &ch[fd & (CHUNK - 1)];
}

static void ent_set(int fd, uint32_t info, int32_t bindref)
{
    struct ent *e = ent_get(fd, 1);
    if (!e)
        return;
    atomic_store(&e->info, 0);
    atomic_store(&e->sockid, atomic_fetch_add(&g_next_sockid, 1));
    atomic_store(&e->bindref, bindref);
    atomic_store(&e->refinfo, 0);
    atomic_store(&e->app_rcvmark, 0);
    atomic_store(&e->info, info);
}

static void ent_clear(int fd)
{
    struct ent *e = ent_get(fd, 0);
    if (!e)
        return;
    atomic_store(&e->info, 0);
    atomic_store(&e->bindref, 0);
    atomic_store(&e->refinfo, 0);
    atomic_store(&e->app_rcvmark, 0);
}

static void ent_copy(int from, int to)
{
    if (from == to)
        return;
    struct ent *s = ent_get(from, 0);
    uint32_t info = s ? atomic_load(&s->info) : 0;
    if (!(info & I_KNOWN)) {
        ent_clear(to);
        return;
    }
    struct ent *d = ent_get(to, 1);
    if (!d)
        return;
    atomic_store(&d->info, 0);
    atomic_store(&d->sockid, atomic_load(&s->sockid));
    atomic_store(&d->bindref, atomic_load(&s->bindref));
    atomic_store(&d->refinfo, atomic_load(&s->refinfo));
    atomic_store(&d->app_rcvmark, atomic_load(&s->app_rcvmark));
    atomic_store(&d->info, info);
}

static void ent_clear_range(unsigned first, unsigned last)
{
    int max = atomic_load(&g_maxfd);
    if (max < 0 || first > (unsigned)max)
        return;
    if (last > (unsigned)max)
        last = (unsigned)max;
    for (unsigned fd = first; fd <= last; fd++)
        ent_clear((int)fd);
}

enum field { F_BINDREF, F_REFINFO, F_APPRCV };

static _Atomic int32_t *field_of(struct ent *e, enum field f)
{
    switch (f) {
    case F_BINDREF:
        return &e->bindref;
    case F_REFINFO:
        return &e->refinfo;
    default:
        return &e->app_rcvmark;
    }
}

static int32_t get_field(int fd, enum field f)
{
    struct ent *e = ent_get(fd, 0);
    if (!e || !(atomic_load(&e->info) & I_KNOWN))
        return 0;
    return atomic_load(field_of(e, f));
}

/* Set a per-socket value on fd and on every fd that shares its socket. */
static void set_shared(int fd, enum field f, int32_t v)
{
    struct ent *e = ent_get(fd, 0);
    if (!e)
        return;
    atomic_store(field_of(e, f), v);
    uint32_t id = atomic_load(&e->sockid);
    int max = atomic_load(&g_maxfd);
    for (int i = 0; i <= max; i++) {
        if (i == fd)
            continue;
        struct ent *o = ent_get(i, 0);
        if (!o) {
            i |= CHUNK - 1;
            continue;
        }
        if ((atomic_load(&o->info) & I_KNOWN) && atomic_load(&o->sockid) == id)
            atomic_store(field_of(o, f), v);
    }
}

static uint32_t make_info(int dom, int type, int proto)
{
    uint32_t i = I_KNOWN | I_SOCK;
    if (dom == AF_INET || dom == AF_INET6) {
        i |= I_INET;
        if (dom == AF_INET6)
            i |= I_INET6;
    }
    type &= 0xf;
    if (type == SOCK_STREAM) {
        i |= I_STREAM;
        if ((i & I_INET) && (proto == 0 || proto == IPPROTO_TCP))
            i |= I_TCP;
    } else if (type == SOCK_DGRAM) {
        if ((i & I_INET) && (proto == 0 || proto == IPPROTO_UDP))
            i |= I_UDP;
    }
    return i;
}

/* Ask the kernel what fd is: 0 if that fails (EBADF...), I_KNOWN for a
 * non-socket. */
static uint32_t query_info(int fd)
{
    int saved = errno;
    int dom = -1, type = 0, proto = 0;
    socklen_t l = sizeof(int);
    uint32_t info;
    if (NEXT(getsockopt)(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0) {
        info = errno == ENOTSOCK ? I_KNOWN : 0;
    } else {
        l = sizeof(int);
        NEXT(getsockopt)(fd, SOL_SOCKET, SO_TYPE, &type, &l);
        l = sizeof(int);
        NEXT(getsockopt)(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l);
        info = make_info(dom, type, proto);
    }
    errno = saved;
    return info;
}

/* What fd is.  Unknown fds (inherited, created behind our back) are asked
 * once and cached; verify=1 re-asks the kernel and resets a stale entry. */
static uint32_t classify(int fd, int verify)
{
    struct ent *e = ent_get(fd, 0);
    uint32_t info = e ? atomic_load(&e->info) : 0;
    if ((info & I_KNOWN) && !verify)
        return info;
    uint32_t q = query_info(fd);
    if (!q)
        return 0;
    if ((info & I_KNOWN) && (info & I_SHAPE) == (q & I_SHAPE))
        return info;
    ent_set(fd, q, 0);
    return q;
}

/* Only what the table already knows: never a syscall (write/writev path). */
static uint32_t known_info(int fd)
{
    struct ent *e = ent_get(fd, 0);
    return e ? atomic_load(&e->info) : 0;
}

static const char *proto_name(uint32_t info)
{
    if (info & I_TCP)
        return "tcp";
    if (info & I_UDP)
        return "udp";
    return "other";
}

/* ------------------------------------------------------------------------ */
/* log                                                                       */

__attribute__((format(printf, 1, 2))) static void emit(const char *fmt, ...)
{
    if (!g_log_path[0])
        return;
    int saved = errno;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n >= 0) {
        if ((size_t)n > sizeof line - 2)
            n = (int)(sizeof line - 2);
        line[n++] = '\n';
        long lfd = syscall(SYS_openat, (long)AT_FDCWD, g_log_path,
                           (long)(O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC), 0644L);
        if (lfd >= 0) {
            syscall(SYS_write, lfd, line, (long)n);
            syscall(SYS_close, lfd);
        }
    }
    errno = saved;
}

/* Format a socket address the caller handed us (may be a bad pointer). */
static void fmt_addr(char *out, size_t cap, const void *addr, socklen_t len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (!addr || len < sizeof(sa_family_t)) {
        snprintf(out, cap, "invalid");
        return;
    }
    size_t n = len < sizeof ss ? len : sizeof ss;
    if (safe_read(&ss, addr, n) < 0) {
        snprintf(out, cap, "invalid");
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_UNSPEC) {
        snprintf(out, cap, "unspec");
    } else if (ss.ss_family == AF_INET && n >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(s->sin_port));
    } else if (ss.ss_family == AF_INET6 && n >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        if (s->sin6_scope_id)
            snprintf(out, cap, "[%s%%%u]:%u", ip, (unsigned)s->sin6_scope_id,
                     (unsigned)ntohs(s->sin6_port));
        else
            snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(s->sin6_port));
    } else if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        snprintf(out, cap, "invalid");
    } else {
        snprintf(out, cap, "af%u", (unsigned)ss.ss_family);
    }
}

static void log_send(int fd, uint32_t info, const char *call, const void *dst,
                     socklen_t dstlen, long refinfo, long len)
{
    if (!g_log_path[0])
        return;
    char d[96], r[24];
    if (dst && dstlen > 0)
        fmt_addr(d, sizeof d, dst, dstlen);
    else
        snprintf(d, sizeof d, "connected");
    if (refinfo < 0)
        snprintf(r, sizeof r, "none");
    else
        snprintf(r, sizeof r, "%ld", refinfo);
    emit("send pid=%d fd=%d call=%s proto=%s dst=%s bindref=%d refinfo=%s len=%ld",
         (int)getpid(), fd, call, proto_name(info), d, (int)get_field(fd, F_BINDREF), r,
         len);
}

static void log_recv(int fd, uint32_t info, const char *call, const void *src,
                     socklen_t srclen, long refhim, long ret)
{
    if (!g_log_path[0])
        return;
    if (ret < 0 || (ret == 0 && (info & I_STREAM)))
        return;
    char s[96], r[24];
    if (src && srclen > 0)
        fmt_addr(s, sizeof s, src, srclen);
    else
        snprintf(s, sizeof s, "connected");
    if (refhim < 0)
        snprintf(r, sizeof r, "none");
    else
        snprintf(r, sizeof r, "%ld", refhim);
    emit("recv pid=%d fd=%d call=%s src=%s refhim=%s", (int)getpid(), fd, call, s, r);
}

/* ------------------------------------------------------------------------ */
/* socket creation and fd bookkeeping                                       */

EXPORT int socket(int domain, int type, int protocol)
{
    int fd = NEXT(socket)(domain, type, protocol);
    if (fd >= 0)
        ent_set(fd, make_info(domain, type, protocol), 0);
    return fd;
}

static void set_real_mark(int fd, int32_t saref)
{
    uint32_t mk = saref ? mast((uint32_t)saref) : 0;
    NEXT(setsockopt)(fd, SOL_SOCKET, SO_MARK, &mk, sizeof mk);
}

static int after_accept(int lfd, int fd, const void *addr, socklen_t alen)
{
    if (fd < 0)
        return fd;
    int saved = errno;
    uint32_t linfo = classify(lfd, 0);
    if (linfo & I_SOCK) {
        int32_t br = get_field(lfd, F_BINDREF);
        ent_set(fd, linfo, br);
        if (linfo & I_INET) {
            if (g_mark_mode && br)
                set_real_mark(fd, br);
            if (g_log_path[0]) {
                char s[96];
                fmt_addr(s, sizeof s, addr, alen);
                emit("accept pid=%d fd=%d listen=%d src=%s bindref=%d", (int)getpid(), fd,
                     lfd, s, (int)br);
            }
        }
    } else {
        ent_clear(fd);
    }
    errno = saved;
    return fd;
}

EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict alen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (addr.__sockaddr__ == NULL) {
        int nfd = NEXT(accept)(fd, (struct sockaddr *)&ss, &sl);
        return after_accept(fd, nfd, &ss, sl);
    }
    int nfd = NEXT(accept)(fd, addr, alen);
    socklen_t got = 0;
    if (nfd >= 0 && (!alen || safe_read(&got, alen, sizeof got) < 0))
        got = 0;
    return after_accept(fd, nfd, addr.__sockaddr__, got);
}

EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict alen, int flags)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (addr.__sockaddr__ == NULL) {
        int nfd = NEXT(accept4)(fd, (struct sockaddr *)&ss, &sl, flags);
        return after_accept(fd, nfd, &ss, sl);
    }
    int nfd = NEXT(accept4)(fd, addr, alen, flags);
    socklen_t got = 0;
    if (nfd >= 0 && (!alen || safe_read(&got, alen, sizeof got) < 0))
        got = 0;
    return after_accept(fd, nfd, addr.__sockaddr__, got);
}

EXPORT int close(int fd)
{
    ent_clear(fd);
    return NEXT(close)(fd);
}

EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
    if (!((unsigned)flags & CLOSE_RANGE_CLOEXEC) && first <= last)
        ent_clear_range(first, last);
    return NEXT(close_range)(first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
    if (lowfd >= 0)
        ent_clear_range((unsigned)lowfd, ~0u);
    NEXT(closefrom)(lowfd);
}

EXPORT int dup(int old)
{
    int fd = NEXT(dup)(old);
    if (fd >= 0)
        ent_copy(old, fd);
    return fd;
}

EXPORT int dup2(int old, int new)
{
    int fd = NEXT(dup2)(old, new);
    if (fd >= 0)
        ent_copy(old, fd);
    return fd;
}

EXPORT int dup3(int old, int new, int flags)
{
    int fd = NEXT(dup3)(old, new, flags);
    if (fd >= 0)
        ent_copy(old, fd);
    return fd;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = NEXT(fcntl)(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        ent_copy(fd, r);
    return r;
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = NEXT(fcntl64)(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        ent_copy(fd, r);
    return r;
}

/* ------------------------------------------------------------------------ */
/* socket options                                                           */

/* SO_RCVMARK on the real socket = the application's wish OR the REFINFO flag */
static void sync_rcvmark(int fd)
{
    int want = get_field(fd, F_REFINFO) || get_field(fd, F_APPRCV);
    NEXT(setsockopt)(fd, SOL_SOCKET, SO_RCVMARK, &want, sizeof want);
}

EXPORT int setsockopt(int fd, int level, int opt, const void *val, socklen_t len)
{
    if (level == IPPROTO_IP && (opt == g_opt_bindref || opt == g_opt_refinfo)) {
        uint32_t info = classify(fd, 1);
        if (!(info & I_INET))
            return NEXT(setsockopt)(fd, level, opt, val, len);
        if (len != sizeof(int)) {
            errno = EINVAL;
            return -1;
        }
        int v;
        if (safe_read(&v, val, sizeof v) < 0) {
            errno = EFAULT;
            return -1;
        }
        if (!ent_get(fd, 0)) {
            errno = ENOBUFS;
            return -1;
        }
        if (opt == g_opt_bindref) {
            if (v < 0 || v > SAREF_MAX) {
                errno = EINVAL;
                return -1;
            }
            if (g_mark_mode) {
                uint32_t mk = v ? mast((uint32_t)v) : 0;
                if (NEXT(setsockopt)(fd, SOL_SOCKET, SO_MARK, &mk, sizeof mk) < 0)
                    return -1;
            }
            set_shared(fd, F_BINDREF, v);
            emit("setsockopt pid=%d fd=%d opt=bindref value=%d", (int)getpid(), fd, v);
        } else {
            int flag = v != 0;
            set_shared(fd, F_REFINFO, flag);
            int saved = errno;
            sync_rcvmark(fd);
            errno = saved;
            emit("setsockopt pid=%d fd=%d opt=refinfo value=%d", (int)getpid(), fd, flag);
        }
        return 0;
    }
    if (level == SOL_SOCKET && opt == SO_RCVMARK) {
        int r = NEXT(setsockopt)(fd, level, opt, val, len);
        if (r == 0 && (classify(fd, 0) & I_INET)) {
            int saved = errno;
            int v = 0;
            if (len >= sizeof(int))
                safe_read(&v, val, sizeof v);
            set_shared(fd, F_APPRCV, v != 0);
            if (get_field(fd, F_REFINFO))
                sync_rcvmark(fd);
            errno = saved;
        }
        return r;
    }
    return NEXT(setsockopt)(fd, level, opt, val, len);
}

/* Return an int option the way the kernel's do_ip_getsockopt does. */
static int put_int_opt(int val, void *optval, socklen_t *optlen)
{
    socklen_t len;
    if (!optlen || safe_read(&len, optlen, sizeof len) < 0) {
        errno = EFAULT;
        return -1;
    }
    if ((int)len < 0) {
        errno = EINVAL;
        return -1;
    }
    if (len < sizeof(int) && len > 0 && val >= 0 && val <= 255) {
        unsigned char uc = (unsigned char)val;
        len = 1;
        if (safe_write(optval, &uc, 1) < 0 || safe_write(optlen, &len, sizeof len) < 0) {
            errno = EFAULT;
            return -1;
        }
        return 0;
    }
    if (len > sizeof(int))
        len = sizeof(int);
    if (safe_write(optlen, &len, sizeof len) < 0 || safe_write(optval, &val, len) < 0) {
        errno = EFAULT;
        return -1;
    }
    return 0;
}

EXPORT int getsockopt(int fd, int level, int opt, void *__restrict val,
                      socklen_t *__restrict len)
{
    if (level == IPPROTO_IP && (opt == g_opt_bindref || opt == g_opt_refinfo)) {
        uint32_t info = classify(fd, 1);
        if (!(info & I_INET))
            return NEXT(getsockopt)(fd, level, opt, val, len);
        int v = get_field(fd, opt == g_opt_bindref ? F_BINDREF : F_REFINFO);
        return put_int_opt(v, val, len);
    }
    if (level == SOL_SOCKET && opt == SO_RCVMARK && (classify(fd, 0) & I_INET) &&
        get_field(fd, F_REFINFO)) {
        /* Hide the SO_RCVMARK the emulator turned on for REFINFO. */
        int r = NEXT(getsockopt)(fd, level, opt, val, len);
        if (r < 0)
            return r;
        return put_int_opt(get_field(fd, F_APPRCV), val, len);
    }
    return NEXT(getsockopt)(fd, level, opt, val, len);
}

/* ------------------------------------------------------------------------ */
/* connect                                                                  */

EXPORT int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    uint32_t info = classify(fd, 0);
    if ((info & I_INET) && g_log_path[0]) {
        char d[96];
        fmt_addr(d, sizeof d, addr.__sockaddr__, len);
        emit("connect pid=%d fd=%d proto=%s dst=%s bindref=%d", (int)getpid(), fd,
             proto_name(info), d, (int)get_field(fd, F_BINDREF));
    }
    return NEXT(connect)(fd, addr, len);
}

/* ------------------------------------------------------------------------ */
/* send side: validate, strip (and maybe replace by SO_MARK) REFINFO cmsgs   */

struct ctlbuf {
    unsigned char stack[STACK_CTL];
    unsigned char *heap;
};

static unsigned char *ctl_alloc(struct ctlbuf *c, size_t n)
{
    c->heap = NULL;
    if (n <= sizeof c->stack)
        return c->stack;
    int saved = errno;
    c->heap = malloc(n);
    errno = saved;
    return c->heap;
}

static void ctl_free(struct ctlbuf *c)
{
    if (c->heap) {
        int saved = errno;
        free(c->heap);
        errno = saved;
        c->heap = NULL;
    }
}

/*
 * Look at the control buffer of *m (a private copy of the caller's msghdr).
 * Returns -1 with errno set (EINVAL/EFAULT/ENOMEM) if the message must fail,
 * 0 if it carries no REFINFO cmsg (leave *m alone), 1 if *m now points to a
 * rewritten control buffer in c; *saref gets the tag (-1 for none).
 */
static int rewrite_control(struct msghdr *m, struct ctlbuf *c, long *saref)
{
    *saref = -1;
    c->heap = NULL;
    size_t len = m->msg_controllen;
    if (!m->msg_control || len < sizeof(struct cmsghdr) || len > MAX_CTL)
        return 0;
    /* room for the copy plus the rewritten copy */
    unsigned char *in = ctl_alloc(c, 2 * CMSG_ALIGN(len) + CMSG_SPACE(sizeof(uint32_t)));
    if (!in) {
        errno = ENOMEM;
        return -1;
    }
    unsigned char *out = in + CMSG_ALIGN(len);
    if (safe_read(in, m->msg_control, len) < 0) {
        ctl_free(c);
        errno = EFAULT;
        return -1;
    }
    size_t off = 0, found_off = 0;
    int found = 0;
    uint32_t tag = 0;
    while (off + sizeof(struct cmsghdr) <= len) {
        struct cmsghdr h;
        memcpy(&h, in + off, sizeof h);
        if (h.cmsg_len < sizeof(struct cmsghdr) || h.cmsg_len > len - off)
            goto einval; /* what the kernel's CMSG_OK check says too */
        if (h.cmsg_level == IPPROTO_IP && h.cmsg_type == g_opt_refinfo) {
            if (found || h.cmsg_len != CMSG_LEN(sizeof(uint32_t)))
                goto einval;
            found = 1;
            found_off = off;
            memcpy(&tag, in + off + CMSG_LEN(0), sizeof tag);
        }
        off += CMSG_ALIGN(h.cmsg_len);
    }
    if (!found) {
        ctl_free(c);
        return 0;
    }
    size_t o = 0;
    memcpy(out, in, found_off);
    o = found_off;
    if (g_mark_mode) {
        struct cmsghdr h;
        memset(out + o, 0, CMSG_SPACE(sizeof(uint32_t)));
        h.cmsg_len = CMSG_LEN(sizeof(uint32_t));
        h.cmsg_level = SOL_SOCKET;
        h.cmsg_type = SO_MARK;
        memcpy(out + o, &h, sizeof h);
        uint32_t mk = tag ? mast(tag) : 0;
        memcpy(out + o + CMSG_LEN(0), &mk, sizeof mk);
        o += CMSG_SPACE(sizeof(uint32_t));
    }
    size_t rest = found_off + CMSG_SPACE(sizeof(uint32_t));
    if (rest < len) {
        memcpy(out + o, in + rest, len - rest);
        o += len - rest;
    }
    m->msg_control = o ? out : NULL;
    m->msg_controllen = o;
    *saref = tag;
    return 1;
einval:
    ctl_free(c);
    errno = EINVAL;
    return -1;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    uint32_t info = classify(fd, 0);
    if (!(info & I_INET))
        return NEXT(sendmsg)(fd, msg, flags);
    struct msghdr m;
    if (safe_read(&m, msg, sizeof m) < 0)
        return NEXT(sendmsg)(fd, msg, flags); /* the kernel says EFAULT */
    struct ctlbuf c;
    long tag;
    int rw = rewrite_control(&m, &c, &tag);
    if (rw < 0)
        return -1;
    ssize_t r = NEXT(sendmsg)(fd, rw ? &m : msg, flags);
    int saved = errno;
    if (r >= 0)
        log_send(fd, info, "sendmsg", m.msg_name, m.msg_namelen, tag, (long)r);
    ctl_free(&c);
    errno = saved;
    return r;
}

EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    uint32_t info = classify(fd, 0);
    if (!(info & I_INET) || vlen == 0)
        return NEXT(sendmmsg)(fd, vec, vlen, flags);
    if (vlen > UIO_MAXIOV)
        vlen = UIO_MAXIOV;
    int saved = errno;
    struct mmsghdr *copy = malloc(sizeof *copy * vlen);
    struct ctlbuf *ctl = malloc(sizeof *ctl * vlen);
    long *tags = malloc(sizeof *tags * vlen);
    errno = saved;
    if (!copy || !ctl || !tags) {
        free(copy);
        free(ctl);
        free(tags);
        errno = ENOMEM;
        return -1;
    }
    if (safe_read(copy, vec, sizeof *copy * vlen) < 0) {
        free(copy);
        free(ctl);
        free(tags);
        errno = EFAULT;
        return -1;
    }
    unsigned int n = 0;
    int err = 0;
    for (; n < vlen; n++) {
        if (rewrite_control(&copy[n].msg_hdr, &ctl[n], &tags[n]) < 0) {
            err = errno;
            break;
        }
        copy[n].msg_len = 0;
    }
    int r;
    if (n == 0) {
        r = -1; /* the first message is invalid: the kernel fails the call */
        errno = err;
    } else {
        r = NEXT(sendmmsg)(fd, copy, n, flags);
    }
    saved = errno;
    for (int i = 0; i < r; i++) {
        safe_write(&vec[i].msg_len, &copy[i].msg_len, sizeof copy[i].msg_len);
        log_send(fd, info, "sendmmsg", copy[i].msg_hdr.msg_name, copy[i].msg_hdr.msg_namelen,
                 tags[i], (long)copy[i].msg_len);
    }
    for (unsigned int i = 0; i < n; i++)
        ctl_free(&ctl[i]);
    free(copy);
    free(ctl);
    free(tags);
    errno = saved;
    return r;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, __CONST_SOCKADDR_ARG addr,
                      socklen_t alen)
{
    ssize_t r = NEXT(sendto)(fd, buf, n, flags, addr, alen);
    if (r >= 0 && g_log_path[0]) {
        uint32_t info = classify(fd, 0);
        if (info & I_INET)
            log_send(fd, info, "sendto", addr.__sockaddr__, alen, -1, (long)r);
    }
    return r;
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    ssize_t r = NEXT(send)(fd, buf, n, flags);
    if (r >= 0 && g_log_path[0]) {
        uint32_t info = classify(fd, 0);
        if (info & I_INET)
            log_send(fd, info, "send", NULL, 0, -1, (long)r);
    }
    return r;
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    ssize_t r = NEXT(write)(fd, buf, n);
    if (r >= 0 && g_log_path[0]) {
        uint32_t info = known_info(fd);
        if (info & I_INET)
            log_send(fd, info, "write", NULL, 0, -1, (long)r);
    }
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    ssize_t r = NEXT(writev)(fd, iov, cnt);
    if (r >= 0 && g_log_path[0]) {
        uint32_t info = known_info(fd);
        if (info & I_INET)
            log_send(fd, info, "writev", NULL, 0, -1, (long)r);
    }
    return r;
}

/* ------------------------------------------------------------------------ */
/* receive side: SO_MARK cmsg -> REFINFO cmsg                                */

struct outbuf {
    unsigned char *p;
    size_t cap, used;
    int ctrunc;
};

/* put_cmsg() of net/core/scm.c, into a local buffer */
static void out_cmsg(struct outbuf *o, int level, int type, const void *data, size_t dlen)
{
    size_t rem = o->cap - o->used;
    if (!o->p || rem < sizeof(struct cmsghdr)) {
        o->ctrunc = 1;
        return;
    }
    size_t cmlen = CMSG_LEN(dlen);
    if (rem < cmlen) {
        o->ctrunc = 1;
        cmlen = rem;
    }
    struct cmsghdr h;
    h.cmsg_len = cmlen;
    h.cmsg_level = level;
    h.cmsg_type = type;
    memcpy(o->p + o->used, &h, sizeof h);
    if (cmlen > CMSG_LEN(0))
        memcpy(o->p + o->used + CMSG_LEN(0), data, cmlen - CMSG_LEN(0));
    size_t adv = CMSG_SPACE(dlen);
    if (adv > rem)
        adv = rem;
    o->used += adv;
}

/* Rebuild the kernel's cmsgs (in/ilen) into o; returns refhim or -1. */
static long convert_cmsgs(const unsigned char *in, size_t ilen, struct outbuf *o,
                          int keep_mark)
{
    long refhim = -1;
    size_t off = 0;
    while (off + sizeof(struct cmsghdr) <= ilen) {
        struct cmsghdr h;
        memcpy(&h, in + off, sizeof h);
        if (h.cmsg_len < CMSG_LEN(0))
            break;
        size_t clen = h.cmsg_len;
        if (clen > ilen - off)
            clen = ilen - off;
        const unsigned char *data = in + off + CMSG_LEN(0);
        size_t dlen = clen - CMSG_LEN(0);
        if (h.cmsg_level == SOL_SOCKET && h.cmsg_type == SO_MARK && dlen >= sizeof(uint32_t)) {
            uint32_t mark;
            memcpy(&mark, data, sizeof mark);
            if (keep_mark)
                out_cmsg(o, h.cmsg_level, h.cmsg_type, data, dlen);
            if (mark & 0x80000000u) {
                refhim = (mark >> 16) & 0x7fff;
                uint32_t pl[2] = {0, (uint32_t)refhim};
                out_cmsg(o, IPPROTO_IP, g_opt_refinfo, pl, sizeof pl);
            }
        } else {
            out_cmsg(o, h.cmsg_level, h.cmsg_type, data, dlen);
        }
        off += CMSG_ALIGN(h.cmsg_len);
    }
    return refhim;
}

/* One message being received on behalf of the application. */
struct rxmsg {
    struct msghdr app;  /* the application's msghdr as it gave it */
    struct msghdr k;    /* what the kernel gets */
    struct sockaddr_storage name;
    int conv;
    unsigned char *ibuf; /* internal control buffer (conv only) */
    size_t icap;
    struct ctlbuf mem;
};

/* Prepare rx->k from rx->app; returns -1 (errno) on failure. */
static int rx_prepare(struct rxmsg *rx, int conv)
{
    rx->k = rx->app;
    rx->conv = 0;
    rx->ibuf = NULL;
    rx->mem.heap = NULL;
    if (!rx->app.msg_name) {
        rx->k.msg_name = &rx->name;
        rx->k.msg_namelen = sizeof rx->name;
    }
    if (!conv || rx->app.msg_controllen > MAX_CTL)
        return 0;
    size_t cap = (rx->app.msg_control ? rx->app.msg_controllen : 0) + 128;
    /* inbound copy + rebuilt copy */
    unsigned char *b = ctl_alloc(&rx->mem, 2 * cap);
    if (!b) {
        errno = ENOMEM;
        return -1;
    }
    rx->conv = 1;
    rx->ibuf = b;
    rx->icap = cap;
    rx->k.msg_control = b;
    rx->k.msg_controllen = cap;
    return 0;
}

/* After the kernel returned a message in rx->k: give the application its
 * view, write it back to *uapp.  Returns refhim (or -1), -2 on EFAULT. */
static long rx_finish(struct rxmsg *rx, struct msghdr *uapp)
{
    long refhim = -1;
    struct msghdr res = rx->app;
    res.msg_flags = rx->k.msg_flags;
    if (rx->app.msg_name)
        res.msg_namelen = rx->k.msg_namelen;
    if (rx->conv) {
        struct outbuf o;
        o.p = rx->app.msg_control ? rx->ibuf + rx->icap : NULL;
        o.cap = rx->app.msg_control ? rx->app.msg_controllen : 0;
        o.used = 0;
        o.ctrunc = 0;
        /* conv == 2: the application enabled SO_RCVMARK itself, keep it */
        refhim = convert_cmsgs(rx->ibuf, rx->k.msg_controllen, &o, rx->conv == 2);
        if (o.ctrunc)
            res.msg_flags |= MSG_CTRUNC;
        res.msg_controllen = o.used;
        if (o.used && safe_write(rx->app.msg_control, o.p, o.used) < 0)
            return -2;
    } else {
        res.msg_controllen = rx->k.msg_controllen;
    }
    if (safe_write(uapp, &res, sizeof res) < 0)
        return -2;
    return refhim;
}

static const void *rx_src(struct rxmsg *rx)
{
    return rx->k.msg_name;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    uint32_t info = classify(fd, 0);
    if (!(info & I_INET))
        return NEXT(recvmsg)(fd, msg, flags);
    struct rxmsg rx;
    if (safe_read(&rx.app, msg, sizeof rx.app) < 0)
        return NEXT(recvmsg)(fd, msg, flags);
    int conv = get_field(fd, F_REFINFO) && !(flags & MSG_ERRQUEUE);
    if (rx_prepare(&rx, conv) < 0)
        return -1;
    if (rx.conv && get_field(fd, F_APPRCV))
        rx.conv = 2;
    ssize_t r = NEXT(recvmsg)(fd, &rx.k, flags);
    int saved = errno;
    if (r >= 0) {
        long refhim = rx_finish(&rx, msg);
        if (refhim == -2) {
            ctl_free(&rx.mem);
            errno = EFAULT;
            return -1;
        }
        log_recv(fd, info, "recvmsg", rx_src(&rx), rx.k.msg_namelen, refhim, (long)r);
    }
    ctl_free(&rx.mem);
    errno = saved;
    return r;
}

EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
                    struct timespec *tmo)
{
    uint32_t info = classify(fd, 0);
    if (!(info & I_INET) || vlen == 0)
        return NEXT(recvmmsg)(fd, vec, vlen, flags, tmo);
    if (vlen > UIO_MAXIOV)
        vlen = UIO_MAXIOV;
    int saved = errno;
    struct rxmsg *rx = calloc(vlen, sizeof *rx);
    struct mmsghdr *k = calloc(vlen, sizeof *k);
    errno = saved;
    if (!rx || !k) {
        free(rx);
        free(k);
        errno = ENOMEM;
        return -1;
    }
    int conv = get_field(fd, F_REFINFO) && !(flags & MSG_ERRQUEUE);
    int apprcv = get_field(fd, F_APPRCV);
    unsigned int prepared = 0;
    int r = 0;
    for (; prepared < vlen; prepared++) {
        struct mmsghdr um;
        if (safe_read(&um, &vec[prepared], sizeof um) < 0) {
            errno = EFAULT;
            r = -1;
            break;
        }
        rx[prepared].app = um.msg_hdr;
        if (rx_prepare(&rx[prepared], conv) < 0) {
            r = -1;
            break;
        }
        if (rx[prepared].conv && apprcv)
            rx[prepared].conv = 2;
        k[prepared].msg_hdr = rx[prepared].k;
    }
    if (r == 0) {
        r = NEXT(recvmmsg)(fd, k, vlen, flags, tmo);
        saved = errno;
        for (int i = 0; i < r; i++) {
            rx[i].k = k[i].msg_hdr;
            long refhim = rx_finish(&rx[i], &vec[i].msg_hdr);
            safe_write(&vec[i].msg_len, &k[i].msg_len, sizeof k[i].msg_len);
            if (refhim == -2)
                refhim = -1;
            log_recv(fd, info, "recvmmsg", rx_src(&rx[i]), rx[i].k.msg_namelen, refhim,
                     (long)k[i].msg_len);
        }
    } else {
        saved = errno;
    }
    for (unsigned int i = 0; i < prepared; i++)
        ctl_free(&rx[i].mem);
    free(rx);
    free(k);
    errno = saved;
    return r;
}

static ssize_t recvfrom_common(const char *call, int fd, void *buf, size_t n, int flags,
                               struct sockaddr *addr, socklen_t *alen)
{
    uint32_t info = classify(fd, 0);
    if (!(info & I_INET)) {
        if (strcmp(call, "recv") == 0)
            return NEXT(recv)(fd, buf, n, flags);
        return NEXT(recvfrom)(fd, buf, n, flags, addr, alen);
    }
    int conv = get_field(fd, F_REFINFO) && !(flags & MSG_ERRQUEUE);
    struct sockaddr_storage ss;
    if (!conv) {
        ssize_t r;
        socklen_t got = 0;
        if (addr) {
            r = NEXT(recvfrom)(fd, buf, n, flags, addr, alen);
            if (r >= 0 && (!alen || safe_read(&got, alen, sizeof got) < 0))
                got = 0;
            int saved = errno;
            log_recv(fd, info, call, addr, got, -1, (long)r);
            errno = saved;
        } else {
            socklen_t sl = sizeof ss;
            r = NEXT(recvfrom)(fd, buf, n, flags, (struct sockaddr *)&ss, &sl);
            int saved = errno;
            log_recv(fd, info, call, &ss, r >= 0 ? sl : 0, -1, (long)r);
            errno = saved;
        }
        return r;
    }
    /* REFINFO wanted: receive with a private control buffer to see the mark */
    struct iovec iov = {buf, n};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    socklen_t ulen = 0;
    if (addr) {
        if (!alen || safe_read(&ulen, alen, sizeof ulen) < 0) {
            errno = EFAULT;
            return -1;
        }
        if ((int)ulen < 0) {
            errno = EINVAL;
            return -1;
        }
    }
    m.msg_name = &ss;
    m.msg_namelen = sizeof ss;
    unsigned char cbuf[256];
    m.msg_control = cbuf;
    m.msg_controllen = sizeof cbuf;
    ssize_t r = NEXT(recvmsg)(fd, &m, flags);
    int saved = errno;
    if (r >= 0) {
        if (addr) {
            socklen_t cp = m.msg_namelen < ulen ? m.msg_namelen : ulen;
            if (safe_write(addr, &ss, cp) < 0 ||
                safe_write(alen, &m.msg_namelen, sizeof m.msg_namelen) < 0) {
                errno = EFAULT;
                return -1;
            }
        }
        struct outbuf o = {NULL, 0, 0, 0};
        long refhim = convert_cmsgs(cbuf, m.msg_controllen, &o, 0);
        log_recv(fd, info, call, &ss, m.msg_namelen, refhim, (long)r);
    }
    errno = saved;
    return r;
}

EXPORT ssize_t recvfrom(int fd, void *__restrict buf, size_t n, int flags, __SOCKADDR_ARG addr,
                        socklen_t *__restrict alen)
{
    return recvfrom_common("recvfrom", fd, buf, n, flags, addr.__sockaddr__, alen);
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    return recvfrom_common("recv", fd, buf, n, flags, NULL, NULL);
}
