/* clamd.c — clamd unix-socket client (see clamd.h for the protocol choices). */
#include "av/clamd.h"

#include "util/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* clamd replies are one short line; anything longer is not clamd. */
#define REPLY_MAX 1024

struct mb_clamd {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int timeout_ms;
    int fd;          /* connection of the scan in progress, or -1 */
    bool peer_gone;  /* clamd stopped reading mid-scan: its reply explains why */
    size_t chunk;    /* max bytes per INSTREAM chunk */
    size_t blen;
    unsigned char buf[MB_CLAMD_CHUNK];
};

const char *mb_av_verdict_str(mb_av_verdict v)
{
    switch (v) {
    case MB_AV_CLEAN: return "CLEAN";
    case MB_AV_INFECTED: return "INFECTED";
    case MB_AV_ERROR: return "ERROR";
    }
    return "UNKNOWN";
}

static void conn_close(mb_clamd *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->peer_gone = false;
    c->blen = 0;
}

static mb_status conn_open(mb_clamd *c)
{
    conn_close(c);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return mb_errf(MB_ERR_NET, "clamd socket '%s': socket: %s", c->path, strerror(errno));
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    /* A non-blocking unix connect fails with EAGAIN when clamd's backlog is
     * full; retry briefly instead of blocking without a bound. */
    int64_t deadline = mb_mono_ms() + c->timeout_ms;
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        if ((e == EAGAIN || e == EINTR) && mb_mono_ms() < deadline) {
            poll(NULL, 0, 5);
            continue;
        }
        close(fd);
        if (e == EAGAIN)
            return mb_errf(MB_ERR_TIMEOUT, "clamd socket '%s': connect: backlog full for %d ms",
                           c->path, c->timeout_ms);
        return mb_errf(MB_ERR_NET, "clamd socket '%s': connect: %s (is clamd running?)",
                       c->path, strerror(e));
    }
    c->fd = fd;
    return MB_OK;
}

static mb_status wait_fd(mb_clamd *c, short events, const char *what)
{
    struct pollfd p = {.fd = c->fd, .events = events};
    for (;;) {
        int r = poll(&p, 1, c->timeout_ms);
        if (r > 0)
            return MB_OK; /* readable, writable, or an error the next call reports */
        if (r == 0)
            return mb_errf(MB_ERR_TIMEOUT, "clamd socket '%s': no progress %s for %d ms",
                           c->path, what, c->timeout_ms);
        if (errno != EINTR)
            return mb_errf(MB_ERR_NET, "clamd socket '%s': poll: %s", c->path, strerror(errno));
    }
}

/* Send every byte of the iovecs. EPIPE/ECONNRESET set peer_gone and succeed:
 * clamd closes early only after writing a reply (size limit), read later. */
static mb_status send_iov(mb_clamd *c, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                mb_status st = wait_fd(c, POLLOUT, "sending");
                if (st != MB_OK)
                    return st;
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET) {
                c->peer_gone = true;
                return MB_OK;
            }
            return mb_errf(MB_ERR_NET, "clamd socket '%s': send: %s", c->path, strerror(errno));
        }
        size_t done = (size_t)r;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return MB_OK;
}

static mb_status send_bytes(mb_clamd *c, const void *p, size_t n)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    return send_iov(c, &iov, 1);
}

static mb_status send_chunk(mb_clamd *c, const unsigned char *p, size_t n)
{
    if (c->peer_gone)
        return MB_OK;
    unsigned char hdr[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    struct iovec iov[2] = {{.iov_base = hdr, .iov_len = 4},
                           {.iov_base = (void *)p, .iov_len = n}};
    return send_iov(c, iov, 2);
}

/* Read one NUL-terminated reply (or up to EOF) into out, without the NUL and
 * trailing newline. */
static mb_status read_reply(mb_clamd *c, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        if (n == cap - 1)
            return mb_errf(MB_ERR_INVALID, "clamd socket '%s': reply longer than %zu bytes: "
                           "'%.60s...'", c->path, cap - 1, out);
        ssize_t r = recv(c->fd, out + n, cap - 1 - n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                out[n] = '\0';
                mb_status st = wait_fd(c, POLLIN, "waiting for the reply");
                if (st != MB_OK)
                    return st;
                continue;
            }
            return mb_errf(MB_ERR_NET, "clamd socket '%s': recv: %s", c->path, strerror(errno));
        }
        if (r == 0)
            break;
        void *nul = memchr(out + n, '\0', (size_t)r);
        n += (size_t)r;
        if (nul) {
            n = (size_t)((char *)nul - out);
            break;
        }
    }
    out[n] = '\0';
    if (n == 0)
        return mb_errf(MB_ERR_NET, "clamd socket '%s': connection closed without a reply",
                       c->path);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] == 0x7f)
            return mb_errf(MB_ERR_INVALID,
                           "clamd socket '%s': reply contains control byte 0x%02x", c->path,
                           (unsigned char)out[i]);
    return MB_OK;
}

mb_status mb_clamd_connect(const char *socket_path, int timeout_ms, mb_clamd **out)
{
    *out = NULL;
    if (!socket_path || !*socket_path)
        return mb_errf(MB_ERR_CONFIG, "clamd socket path is empty (set MAILBUS_CLAMD_SOCKET)");
    mb_clamd probe;
    if (strlen(socket_path) >= sizeof probe.path)
        return mb_errf(MB_ERR_CONFIG, "clamd socket path '%s' is longer than %zu bytes",
                       socket_path, sizeof probe.path - 1);
    if (timeout_ms <= 0)
        return mb_errf(MB_ERR_CONFIG, "clamd timeout %d ms must be positive", timeout_ms);
    mb_clamd *c = malloc(sizeof *c);
    if (!c)
        return mb_errf(MB_ERR_NOMEM, "clamd client");
    memcpy(c->path, socket_path, strlen(socket_path) + 1);
    c->timeout_ms = timeout_ms;
    c->fd = -1;
    c->peer_gone = false;
    c->blen = 0;
    c->chunk = MB_CLAMD_CHUNK;
    mb_status st = mb_clamd_ping(c);
    if (st != MB_OK) {
        free(c);
        return st;
    }
    *out = c;
    return MB_OK;
}

void mb_clamd_free(mb_clamd *c)
{
    if (!c)
        return;
    conn_close(c);
    free(c);
}

void mb_clamd_set_chunk_size(mb_clamd *c, size_t n)
{
    c->chunk = n < 1 ? 1 : n > MB_CLAMD_CHUNK ? MB_CLAMD_CHUNK : n;
}

mb_status mb_clamd_ping(mb_clamd *c)
{
    mb_status st = conn_open(c);
    if (st != MB_OK)
        return st;
    static const char cmd[] = "zPING";
    st = send_bytes(c, cmd, sizeof cmd); /* including the NUL */
    char reply[REPLY_MAX];
    if (st == MB_OK)
        st = read_reply(c, reply, sizeof reply);
    if (st == MB_OK && strcmp(reply, "PONG") != 0)
        st = mb_errf(MB_ERR_INVALID, "clamd socket '%s': PING answered '%s', not PONG",
                     c->path, reply);
    conn_close(c);
    return st;
}

mb_status mb_clamd_scan_begin(mb_clamd *c)
{
    mb_status st = conn_open(c);
    if (st != MB_OK)
        return st;
    static const char cmd[] = "zINSTREAM";
    st = send_bytes(c, cmd, sizeof cmd);
    if (st == MB_OK && c->peer_gone)
        st = mb_errf(MB_ERR_NET, "clamd socket '%s': connection closed at INSTREAM", c->path);
    if (st != MB_OK)
        conn_close(c);
    return st;
}

mb_status mb_clamd_scan_write(mb_clamd *c, const void *p, size_t n)
{
    if (c->fd < 0)
        return mb_errf(MB_ERR_INVALID, "clamd socket '%s': scan_write without scan_begin",
                       c->path);
    const unsigned char *b = p;
    while (n > 0) {
        if (c->blen == 0 && n >= c->chunk) {
            /* Whole chunks straight from the caller's memory, no copy. */
            mb_status st = send_chunk(c, b, c->chunk);
            if (st != MB_OK) {
                conn_close(c);
                return st;
            }
            b += c->chunk;
            n -= c->chunk;
            continue;
        }
        size_t take = c->chunk - c->blen;
        if (take > n)
            take = n;
        memcpy(c->buf + c->blen, b, take);
        c->blen += take;
        b += take;
        n -= take;
        if (c->blen == c->chunk) {
            mb_status st = send_chunk(c, c->buf, c->blen);
            c->blen = 0;
            if (st != MB_OK) {
                conn_close(c);
                return st;
            }
        }
    }
    return MB_OK;
}

static void copy_sig(char *dst, size_t cap, const char *src, size_t n)
{
    if (!dst || cap == 0)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool ends_with(const char *s, size_t n, const char *suf)
{
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

mb_status mb_clamd_scan_end(mb_clamd *c, mb_av_verdict *v, char *signature, size_t siglen)
{
    *v = MB_AV_ERROR;
    copy_sig(signature, siglen, "", 0);
    if (c->fd < 0)
        return mb_errf(MB_ERR_INVALID, "clamd socket '%s': scan_end without scan_begin",
                       c->path);
    mb_status st = MB_OK;
    if (c->blen > 0)
        st = send_chunk(c, c->buf, c->blen);
    c->blen = 0;
    if (st == MB_OK)
        st = send_chunk(c, NULL, 0); /* zero-length chunk: end of stream */
    char reply[REPLY_MAX];
    if (st == MB_OK)
        st = read_reply(c, reply, sizeof reply);
    bool gone = c->peer_gone;
    conn_close(c);
    if (st != MB_OK) {
        if (gone && st == MB_ERR_NET)
            return mb_errf(MB_ERR_NET, "clamd socket '%s': clamd closed the connection "
                           "during the scan without a reply", c->path);
        return st;
    }

    size_t n = strlen(reply);
    static const char pfx[] = "stream: ";
    const size_t pl = sizeof pfx - 1;
    if ((ends_with(reply, n, " ERROR") || ends_with(reply, n, "ERROR")) &&
        !strstr(reply, "size limit")) {
        /* Not about the stream: "PROTOCOL ERROR: ancillary data sent without
         * attached file" came from a clamd being stopped (scripts/chaos). */
        return mb_errf(MB_ERR_NET, "clamd socket '%s': clamd answered '%s' (tried again later)",
                       c->path, reply);
    }
    if (ends_with(reply, n, " ERROR") || ends_with(reply, n, "ERROR")) {
        /* "INSTREAM size limit exceeded. ERROR": this stream cannot be scanned */
        copy_sig(signature, siglen, reply, n);
        mb_errf(MB_ERR_INVALID, "clamd socket '%s': scan failed: %s", c->path, reply);
        *v = MB_AV_ERROR;
        return MB_OK;
    }
    if (n > pl && memcmp(reply, pfx, pl) == 0) {
        const char *rest = reply + pl;
        size_t rl = n - pl;
        if (rl == 2 && memcmp(rest, "OK", 2) == 0) {
            *v = MB_AV_CLEAN;
            return MB_OK;
        }
        static const char found[] = " FOUND";
        const size_t fl = sizeof found - 1;
        if (rl > fl && ends_with(rest, rl, found)) {
            size_t sl = rl - fl;
            bool sane = sl > 0;
            for (size_t i = 0; sane && i < sl; i++)
                sane = rest[i] != ' ' || (i > 0 && i + 1 < sl);
            if (sane) {
                copy_sig(signature, siglen, rest, sl);
                *v = MB_AV_INFECTED;
                return MB_OK;
            }
        }
    }
    return mb_errf(MB_ERR_INVALID, "clamd socket '%s': unexpected reply '%s'", c->path, reply);
}
