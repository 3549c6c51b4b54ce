/* imap.c — the IMAP backend of sources/source.h, on libetpan.
 *
 * Memory, the reason for most of the shape below:
 *  - libetpan parses a whole tagged response before returning, and keeps every
 *    line of it in its read buffer until the end. Its msg_att handler (active
 *    only while a progress callback is set) hands us each FETCH item as soon as
 *    it is parsed and frees it afterwards, so no list of results piles up; the
 *    text buffer still grows with the response, so scan asks for at most
 *    SCAN_WINDOW messages per command (about 100 bytes of text each: ~1 MB).
 *  - A body literal is read straight into one allocation of exactly its size
 *    and given to the callback without a copy, then freed before the next
 *    message of the response is read: peak is about one message, whatever the
 *    batch, so fetch batches by count (FETCH_BATCH) and not by bytes.
 * Scan windows use message sequence numbers, which are dense (a window never
 * comes back empty because UIDs are sparse) and stable: the server may not
 * send EXPUNGE during FETCH/SEARCH, which are the only commands scan sends. */
#include "sources/imap/imap.h"
#include "sources/imap/guard.h"
#include "sources/imap/tls_verify.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <unistd.h>
#include <poll.h>
#include <sys/socket.h>
#include <libetpan/libetpan.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SCAN_WINDOW 10000u /* messages per scan FETCH/SEARCH */
#define FETCH_BATCH 50u    /* UIDs per UID FETCH BODY.PEEK[] */
#define DEFAULT_TIMEOUT_S 60
#define NO_ATTEMPTS 3   /* a FETCH answered NO (not "gone"): tries in all */
#define NO_PAUSE_MS 250 /* before the second try; doubled after each */

typedef struct {
    mb_source base; /* first: an mb_source* is an mb_imap* */
    char *host, *user, *password, *token, *ca_file, *tls_name;
    int port, tls, timeout_s;
    bool allow_plain_remote;
    mailimap *imap; /* NULL while not connected */
    char *folder;   /* open folder (raw name), NULL if none */
    bool has_condstore, has_special_use, has_xlist;
    bool has_qresync; /* QRESYNC advertised and ENABLEd on this connection */
    bool idling;      /* IDLE accepted ("+"): the server expects DONE and nothing else */
    mb_imap_limits limits;
    mb_imap_guard guard; /* what the server sends on the session (guard.h) */
} mb_imap;

/* ---- errors ------------------------------------------------------------ */

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void drop_session(mb_imap *m) {
    if (m->imap) {
        mailimap_free(m->imap); /* closes the socket */
        m->imap = NULL;
    }
    m->idling = false;
    free(m->folder);
    m->folder = NULL;
}

/* The server's text for the last tagged response, made safe to log. */
static void server_text(mb_imap *m, char *out, size_t cap) {
    const char *t = m->imap && m->imap->imap_response ? m->imap->imap_response : "";
    size_t i = 0;
    for (; t[i] && i + 1 < cap; i++)
        out[i] = (t[i] >= 0x20 && t[i] < 0x7f) ? t[i] : '?';
    out[i] = 0;
}

static const char *etpan_err_str(const mb_imap *m, int r) {
    if (m->guard.error[0] && (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_PARSE))
        return m->guard.error; /* the guard cut the stream: say why */
    switch (r) {
    case MAILIMAP_ERROR_STREAM: return "connection lost or timed out";
    case MAILIMAP_ERROR_CONNECTION_REFUSED: return "cannot connect";
    case MAILIMAP_ERROR_SSL: return "TLS handshake failed";
    case MAILIMAP_ERROR_FATAL: return "server said BYE";
    case MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION: return "server refused the connection";
    case MAILIMAP_ERROR_PARSE: return "unparseable server response";
    case MAILIMAP_ERROR_MEMORY: return "out of memory";
    case MAILIMAP_ERROR_PROTOCOL: return "server answered BAD";
    case MAILIMAP_ERROR_BAD_STATE: return "command not allowed in this state";
    default: return "server answered NO";
    }
}

/* Whether the server has closed the connection (or it broke): a response
 * cut off by a dropped connection reaches libetpan's parser as garbage. */
static bool stream_closed(mb_imap *m) {
    if (!m->imap || !m->imap->imap_stream)
        return true;
    mailstream_low *low = mailstream_get_low(m->imap->imap_stream);
    int fd = low ? mailstream_low_get_fd(low) : -1;
    if (fd < 0)
        return true;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 0) < 0)
        return true;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
        return true;
    if (p.revents & POLLIN) {
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
    }
    return false;
}

/* The response code of the last tagged answer ("UNAVAILABLE" for
 * "a NO [UNAVAILABLE] ..."), or "" if it had none libetpan keeps as an atom. */
static const char *resp_code(const mb_imap *m) {
    const struct mailimap_response_info *ri = m->imap ? m->imap->imap_response_info : NULL;
    return ri && ri->rsp_atom ? ri->rsp_atom : "";
}

/* A NO that says the messages are gone for good (RFC 5530). */
static bool code_means_gone(const char *code) {
    return strcasecmp(code, "EXPUNGEISSUED") == 0 || strcasecmp(code, "NONEXISTENT") == 0;
}

/* A NO that says "not now" (RFC 5530): the same command may work later. */
static bool code_means_temporary(const char *code) {
    static const char *const t[] = {"UNAVAILABLE", "SERVERBUG", "INUSE", "LIMIT",
                                    "CONTACTADMIN", "OVERQUOTA"};
    for (size_t i = 0; i < MB_ARRAY_LEN(t); i++)
        if (strcasecmp(code, t[i]) == 0)
            return true;
    return false;
}

/* Map a libetpan failure of `cmd` to an mb_status. `refused` is the class of
 * a NO/BAD answer (AUTH for LOGIN, NOTFOUND for EXAMINE, ...), except that a
 * NO with a temporary response code ([UNAVAILABLE], [SERVERBUG], [INUSE], ...)
 * is MB_ERR_NET: retry later, on a new connection. Anything that leaves the
 * stream unusable or out of step drops the session. */
static mb_status imap_fail(mb_imap *m, int r, mb_status refused, const char *cmd,
                           const char *folder) {
    char text[200];
    server_text(m, text, sizeof text);
    mb_status st;
    const char *code = ""; /* response code of a NO/BAD */
    switch (r) {
    case MAILIMAP_ERROR_STREAM:
    case MAILIMAP_ERROR_CONNECTION_REFUSED:
    case MAILIMAP_ERROR_SSL:
    case MAILIMAP_ERROR_FATAL:
    case MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION:
        st = MB_ERR_NET;
        text[0] = 0; /* a stale OK text would only mislead */
        break;
    case MAILIMAP_ERROR_PARSE:
        /* Truncated by a dropped connection: retryable, like any loss. */
        st = stream_closed(m) || m->guard.error[0] ? MB_ERR_NET : MB_ERR_INVALID;
        break;
    case MAILIMAP_ERROR_MEMORY: st = MB_ERR_NOMEM; break;
    case MAILIMAP_ERROR_BAD_STATE: st = MB_ERR_INTERNAL; break;
    default:
        code = resp_code(m);
        st = code_means_temporary(code) ? MB_ERR_NET : refused;
        break;
    }
    mb_errf(st, "imap %s:%d%s%s%s: %s: %s%s%s%s%s%s%s", m->host, m->port,
            folder ? " folder '" : "", folder ? folder : "", folder ? "'" : "", cmd,
            etpan_err_str(m, r), code[0] ? " [" : "", code, code[0] ? "]" : "",
            text[0] ? ": " : "", text, st == MB_ERR_NET && code[0] ? " (temporary)" : "");
    if (st == MB_ERR_NET || st == MB_ERR_INVALID || st == MB_ERR_NOMEM)
        drop_session(m);
    return st;
}

static mb_status need_session(mb_imap *m, const char *cmd, bool need_folder) {
    if (!m->imap)
        return mb_errf(MB_ERR_NET, "imap %s:%d: %s: not connected", m->host, m->port, cmd);
    if (m->idling)
        return mb_errf(MB_ERR_INVALID, "imap %s:%d: %s: the connection is watching a folder "
                       "(IDLE): unwatch first", m->host, m->port, cmd);
    if (need_folder && !m->folder)
        return mb_errf(MB_ERR_INVALID, "imap %s:%d: %s: no folder open", m->host, m->port, cmd);
    return MB_OK;
}

/* Expunges the last response announced: EXPUNGE (libetpan already took them
 * off sel_exists) or, with QRESYNC enabled, VANISHED without (EARLIER),
 * which libetpan does not count: taken off sel_exists here (each UID in it is
 * a message of the session's view, RFC 7162 3.2.10) and dropped, so a second
 * call does not count them again. */
static bool note_expunges(mb_imap *m) {
    struct mailimap_response_info *ri = m->imap ? m->imap->imap_response_info : NULL;
    if (!ri)
        return false;
    bool seen = ri->rsp_expunged && clist_count(ri->rsp_expunged) > 0;
    for (clistiter *it = ri->rsp_extension_list ? clist_begin(ri->rsp_extension_list) : NULL; it;
         it = clist_next(it)) {
        struct mailimap_extension_data *ext = clist_content(it);
        if (!ext || ext->ext_extension->ext_id != MAILIMAP_EXTENSION_QRESYNC ||
            ext->ext_type != MAILIMAP_QRESYNC_TYPE_VANISHED || !ext->ext_data)
            continue;
        struct mailimap_qresync_vanished *v = ext->ext_data;
        if (v->qr_earlier)
            continue;
        uint64_t n = 0;
        for (clistiter *j = v->qr_known_uids && v->qr_known_uids->set_list
                                ? clist_begin(v->qr_known_uids->set_list)
                                : NULL;
             j; j = clist_next(j)) {
            const struct mailimap_set_item *si = clist_content(j);
            uint32_t a = si->set_first ? si->set_first : UINT32_MAX;
            uint32_t b = si->set_last ? si->set_last : UINT32_MAX;
            n += (a < b ? b - a : a - b) + 1ull;
        }
        struct mailimap_selection_info *sel = m->imap->imap_selection_info;
        if (sel)
            sel->sel_exists = n < sel->sel_exists ? sel->sel_exists - (uint32_t)n : 0;
        mailimap_qresync_vanished_free(v);
        ext->ext_data = NULL;
        seen = true;
    }
    return seen;
}

/* ---- connect ------------------------------------------------------------ */

static bool host_is_loopback(const char *h) {
    unsigned char a[16];
    if (strcasecmp(h, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, h, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, h, a) == 1)
        return strcmp(h, "::1") == 0;
    return false;
}

static void ignore_sigpipe(void) {
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

static const char *verify_name(const mb_imap *m) { return m->tls_name ? m->tls_name : m->host; }

/* Called by libetpan before the handshake: send SNI for DNS names. */
static void tls_setup_cb(struct mailstream_ssl_context *ctx, void *data) {
    mb_imap *m = data;
    char *name = m->tls_name ? m->tls_name : m->host;
    unsigned char tmp[16];
    if (inet_pton(AF_INET, name, tmp) != 1 && inet_pton(AF_INET6, name, tmp) != 1)
        mailstream_ssl_set_server_name(ctx, name);
}

static void items_progress_noop(size_t cur, size_t max, void *ctx) {
    (void)cur, (void)max, (void)ctx;
}

static mb_status refresh_caps(mb_imap *m) {
    struct mailimap_capability_data *caps = NULL;
    int r = mailimap_capability(m->imap, &caps);
    if (caps)
        mailimap_capability_data_free(caps);
    if (r != MAILIMAP_NO_ERROR)
        return imap_fail(m, r, MB_ERR_INVALID, "CAPABILITY", NULL);
    return MB_OK;
}

/* ---- the stream layer -----------------------------------------------------
 *
 * A layer on top of the real stream (socket or TLS), under libetpan:
 *  - libetpan 1.9.4 reads a literal (a message body) in a loop that only
 *    stops on an error: when the server's connection closes in the middle, the
 *    socket read returns 0 (end of stream) forever and the process spins at
 *    100 % CPU (seen when Dovecot's imap process was killed mid-FETCH). End of
 *    stream is turned into a read error, which libetpan reports as
 *    MAILIMAP_ERROR_STREAM.
 *  - Every byte the server sends passes the session's guard (guard.h) before
 *    libetpan sees it; a server that breaks a limit gets a read error too,
 *    and m->guard.error says why. */

typedef struct {
    mailstream_low *inner; /* owned */
    mb_imap *m;
} layer;

static ssize_t layer_read(mailstream_low *s, void *buf, size_t count) {
    layer *l = s->data;
    ssize_t r = mailstream_low_read(l->inner, buf, count);
    if (r == 0 && count > 0)
        return -1;
    if (r > 0 && !mb_imap_guard_recv(&l->m->guard, buf, (size_t)r, mb_mono_ms()))
        return -1;
    return r;
}
static ssize_t layer_write(mailstream_low *s, const void *buf, size_t count) {
    layer *l = s->data;
    mb_imap_guard_sent(&l->m->guard, mb_mono_ms());
    return mailstream_low_write(l->inner, buf, count);
}
static mailstream_low *inner(mailstream_low *s) { return ((layer *)s->data)->inner; }
static int layer_close(mailstream_low *s) { return mailstream_low_close(inner(s)); }
static int layer_get_fd(mailstream_low *s) { return mailstream_low_get_fd(inner(s)); }
static void layer_free(mailstream_low *s) {
    mailstream_low_free(inner(s));
    free(s->data);
    free(s);
}
static void layer_cancel(mailstream_low *s) { mailstream_low_cancel(inner(s)); }
static struct mailstream_cancel *layer_get_cancel(mailstream_low *s) {
    return mailstream_low_get_cancel(inner(s));
}
static carray *layer_get_certificate_chain(mailstream_low *s) {
    return mailstream_low_get_certificate_chain(inner(s));
}
static int layer_setup_idle(mailstream_low *s) { return mailstream_low_setup_idle(inner(s)); }
static int layer_unsetup_idle(mailstream_low *s) { return mailstream_low_unsetup_idle(inner(s)); }
static int layer_interrupt_idle(mailstream_low *s) { return mailstream_low_interrupt_idle(inner(s)); }

static mailstream_low_driver layer_driver = {
    .mailstream_read = layer_read,
    .mailstream_write = layer_write,
    .mailstream_close = layer_close,
    .mailstream_get_fd = layer_get_fd,
    .mailstream_free = layer_free,
    .mailstream_cancel = layer_cancel,
    .mailstream_get_cancel = layer_get_cancel,
    .mailstream_get_certificate_chain = layer_get_certificate_chain,
    .mailstream_setup_idle = layer_setup_idle,
    .mailstream_unsetup_idle = layer_unsetup_idle,
    .mailstream_interrupt_idle = layer_interrupt_idle,
};

/* Put the layer on a stream's real one: before the greeting is read, and
 * again after STARTTLS (which replaces the stream's layer with a TLS one). */
static mb_status add_layer(mb_imap *m, mailstream *stream) {
    mailstream_low *in = mailstream_get_low(stream);
    layer *l = malloc(sizeof *l);
    mailstream_low *outer = l ? mailstream_low_new(l, &layer_driver) : NULL;
    if (!outer) {
        free(l);
        return mb_errf(MB_ERR_NOMEM, "imap %s:%d: stream layer", m->host, m->port);
    }
    l->inner = in;
    l->m = m;
    mailstream_low_set_timeout(outer, mailstream_low_get_timeout(in));
    mailstream_set_low(stream, outer);
    return MB_OK;
}

/* ENABLE QRESYNC (RFC 7162) once per connection, in the authenticated state
 * (ENABLE is not allowed once a folder is selected), when the server offers
 * it: changes then resynchronises a folder with one EXAMINE. It also makes
 * the server announce expunges as VANISHED instead of EXPUNGE (note_expunges)
 * and add MODSEQ to FETCH responses (ignored). A refusal is not an error:
 * changes then uses CONDSTORE. */
static mb_status enable_qresync(mb_imap *m) {
    m->has_qresync = false;
    if (!m->has_condstore || !mailimap_has_qresync(m->imap))
        return MB_OK;
    clist *list = clist_new();
    char *name = strdup("QRESYNC");
    struct mailimap_capability *cap =
        name ? mailimap_capability_new(MAILIMAP_CAPABILITY_NAME, NULL, name) : NULL;
    if (!cap)
        free(name);
    struct mailimap_capability_data *want = NULL;
    if (list && cap && clist_append(list, cap) == 0) {
        cap = NULL; /* the list's now */
        if ((want = mailimap_capability_data_new(list)) != NULL)
            list = NULL;
        else
            cap = clist_content(clist_begin(list));
    }
    if (!want) {
        if (cap)
            mailimap_capability_free(cap);
        if (list)
            clist_free(list);
        return mb_errf(MB_ERR_NOMEM, "imap %s:%d: ENABLE QRESYNC: out of memory", m->host, m->port);
    }
    struct mailimap_capability_data *got = NULL;
    int r = mailimap_enable(m->imap, want, &got);
    mailimap_capability_data_free(want);
    if (r == MAILIMAP_ERROR_EXTENSION) { /* NO or BAD */
        char text[200];
        server_text(m, text, sizeof text);
        MB_WARN(NULL, NULL, "imap %s:%d: ENABLE QRESYNC refused (%s): using CONDSTORE", m->host,
                m->port, text);
        return MB_OK;
    }
    if (r != MAILIMAP_NO_ERROR)
        return imap_fail(m, r, MB_ERR_INVALID, "ENABLE QRESYNC", NULL);
    for (clistiter *it = got && got->cap_list ? clist_begin(got->cap_list) : NULL; it;
         it = clist_next(it)) {
        const struct mailimap_capability *c = clist_content(it);
        if (c && c->cap_type == MAILIMAP_CAPABILITY_NAME && c->cap_data.cap_name &&
            strcasecmp(c->cap_data.cap_name, "QRESYNC") == 0)
            m->has_qresync = true;
    }
    if (got)
        mailimap_capability_data_free(got);
    if (!m->has_qresync)
        MB_WARN(NULL, NULL, "imap %s:%d: ENABLE QRESYNC: not enabled: using CONDSTORE", m->host,
                m->port);
    return MB_OK;
}

/* A TCP connection to host:port (any of its addresses, in order), each
 * attempt given timeout_s; the socket (blocking), or -1. */
static int tcp_connect(const char *host, int port, int timeout_s) {
    char svc[8];
    snprintf(svc, sizeof svc, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, svc, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0)
            continue;
        int err = 0;
        socklen_t len = sizeof err;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 &&
            (errno != EINPROGRESS || poll(&p, 1, timeout_s * 1000) != 1 ||
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)) {
            close(fd);
            fd = -1;
            continue;
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static mb_status imap_connect(mb_source *s) {
    mb_imap *m = (mb_imap *)s;
    int r;
    mb_status st;
    drop_session(m);
    ignore_sigpipe();

    m->imap = mailimap_new(0, NULL);
    if (!m->imap)
        return mb_errf(MB_ERR_NOMEM, "imap %s:%d: out of memory", m->host, m->port);
    mailimap_set_timeout(m->imap, m->timeout_s);
    /* Enables the per-message handler path of libetpan's parser (see top). */
    mailimap_set_progress_callback(m->imap, NULL, items_progress_noop, NULL);

    /* The stream is made here, not by libetpan's connect, so that the
     * guard sees the greeting too. */
    mb_imap_guard_init(&m->guard, &m->limits);
    int fd = tcp_connect(m->host, m->port, m->timeout_s);
    if (fd < 0)
        return imap_fail(m, MAILIMAP_ERROR_CONNECTION_REFUSED, MB_ERR_NET, "connect", NULL);
    mailstream *stream =
        m->tls == MB_TLS_IMAPS
            ? mailstream_ssl_open_with_callback_timeout(fd, m->timeout_s, tls_setup_cb, m)
            : mailstream_socket_open_timeout(fd, m->timeout_s);
    if (!stream) {
        close(fd);
        return imap_fail(m, m->tls == MB_TLS_IMAPS ? MAILIMAP_ERROR_SSL : MAILIMAP_ERROR_MEMORY,
                         MB_ERR_NET, "connect", NULL);
    }
    if ((st = add_layer(m, stream)) != MB_OK) {
        mailstream_close(stream);
        goto fail_wrap;
    }
    r = mailimap_connect(m->imap, stream); /* the session owns the stream from here */
    if (r != MAILIMAP_NO_ERROR_AUTHENTICATED && r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED)
        return imap_fail(m, r, MB_ERR_NET, "connect", NULL);
    bool preauth = r == MAILIMAP_NO_ERROR_AUTHENTICATED;

    if (m->tls == MB_TLS_IMAPS) {
        if ((st = mb_imap_tls_verify(m->imap->imap_stream, m->ca_file, verify_name(m))) != MB_OK)
            goto fail_wrap;
    } else if (m->tls == MB_TLS_STARTTLS) {
        if (preauth) {
            st = mb_errf(MB_ERR_NET, "server sent PREAUTH before STARTTLS; refusing an "
                                     "unencrypted session");
            goto fail_wrap;
        }
        if ((st = refresh_caps(m)) != MB_OK)
            return st;
        if (!mailimap_has_extension(m->imap, "STARTTLS")) {
            st = mb_errf(MB_ERR_CONFIG, "server does not offer STARTTLS");
            goto fail_wrap;
        }
        r = mailimap_socket_starttls_with_callback(m->imap, tls_setup_cb, m);
        if (r != MAILIMAP_NO_ERROR)
            return imap_fail(m, r, MB_ERR_NET, "STARTTLS", NULL);
        if ((st = add_layer(m, m->imap->imap_stream)) != MB_OK)
            goto fail_wrap;
        if ((st = mb_imap_tls_verify(m->imap->imap_stream, m->ca_file, verify_name(m))) != MB_OK)
            goto fail_wrap;
    }
    /* Capabilities from before STARTTLS must not be trusted; fetch afresh. */
    if ((st = refresh_caps(m)) != MB_OK)
        return st;

    if (!preauth) {
        if (m->token) {
            r = mailimap_oauth2_authenticate(m->imap, m->user, m->token);
            if (r != MAILIMAP_NO_ERROR)
                return imap_fail(m, r, MB_ERR_AUTH, "AUTHENTICATE XOAUTH2", NULL);
        } else {
            if (mailimap_has_extension(m->imap, "LOGINDISABLED")) {
                st = mb_errf(MB_ERR_CONFIG, "server disables LOGIN on this connection (use TLS)");
                goto fail_wrap;
            }
            r = mailimap_login(m->imap, m->user, m->password ? m->password : "");
            if (r != MAILIMAP_NO_ERROR)
                return imap_fail(m, r == MAILIMAP_ERROR_PROTOCOL ? MAILIMAP_ERROR_LOGIN : r,
                                 MB_ERR_AUTH, "LOGIN", NULL);
        }
        if ((st = refresh_caps(m)) != MB_OK)
            return st;
    }
    m->has_condstore = mailimap_has_condstore(m->imap) != 0;
    m->has_special_use = mailimap_has_extension(m->imap, "SPECIAL-USE") != 0;
    m->has_xlist = mailimap_has_xlist(m->imap) != 0;
    if ((st = enable_qresync(m)) != MB_OK)
        return st;
    MB_INFO(NULL, NULL, "imap %s:%d: logged in as %s (%s%s%s%s)", m->host, m->port, m->user,
            m->tls == MB_TLS_IMAPS ? "imaps" : m->tls == MB_TLS_STARTTLS ? "starttls" : "plain",
            m->has_condstore ? ", condstore" : "", m->has_qresync ? ", qresync" : "",
            m->has_special_use ? ", special-use" : "");
    return MB_OK;

fail_wrap:
    mb_err_wrap(st, "imap %s:%d: connect", m->host, m->port);
    drop_session(m);
    return st;
}

/* ---- folders -------------------------------------------------------------- */

static const char *role_of_flag(const char *f) {
    static const struct {
        const char *flag, *role;
    } map[] = {
        {"Sent", "sent"},   {"Drafts", "drafts"},   {"Trash", "trash"}, {"Junk", "junk"},
        {"Spam", "junk"},   {"Archive", "archive"}, {"All", "all"},     {"AllMail", "all"},
        {"Flagged", "flagged"}, {"Starred", "flagged"}, {"Inbox", "inbox"},
    };
    if (f[0] == '\\')
        f++;
    for (size_t i = 0; i < MB_ARRAY_LEN(map); i++)
        if (strcasecmp(f, map[i].flag) == 0)
            return map[i].role;
    return NULL;
}

static mb_status folder_from_list(const struct mailimap_mailbox_list *mb, mb_folder_info *f) {
    memset(f, 0, sizeof *f);
    const char *role = NULL;
    f->delimiter = mb->mb_delimiter;
    if (mb->mb_flag) {
        if (mb->mb_flag->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
            mb->mb_flag->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT)
            f->noselect = true;
        for (clistiter *it = mb->mb_flag->mbf_oflags ? clist_begin(mb->mb_flag->mbf_oflags) : NULL;
             it; it = clist_next(it)) {
            const struct mailimap_mbx_list_oflag *of = clist_content(it);
            if (of->of_type != MAILIMAP_MBX_LIST_OFLAG_FLAG_EXT || !of->of_flag_ext)
                continue;
            const char *x = of->of_flag_ext[0] == '\\' ? of->of_flag_ext + 1 : of->of_flag_ext;
            if (strcasecmp(x, "NonExistent") == 0 || strcasecmp(x, "Noselect") == 0)
                f->noselect = true;
            else if (!role)
                role = role_of_flag(x);
        }
    }
    if (strcasecmp(mb->mb_name, "INBOX") == 0)
        role = "inbox";
    bool escaped = false;
    mb_status st = mb_imap_folder_names(mb->mb_name, &f->name, &f->display, &escaped);
    if (st != MB_OK)
        return st;
    if (escaped) {
        /* Not valid modified UTF-7 (8-bit bytes, raw UTF-8, a stray '&'):
         * commands still use the exact raw name; people see the escape. */
        char buf[600];
        snprintf(buf, sizeof buf, "folder name is not valid modified UTF-7: shown as '%s'",
                 f->display);
        if (!(f->problem = mb_strdup(buf)))
            return MB_ERR_NOMEM;
    }
    if (role && !(f->role = mb_strdup(role)))
        return MB_ERR_NOMEM;
    return MB_OK;
}

static mb_status imap_list_folders(mb_source *s, mb_folder_info **out, size_t *n) {
    mb_imap *m = (mb_imap *)s;
    mb_status st;
    clist *list = NULL;
    int r;
    const char *cmd;
    *out = NULL;
    *n = 0;
    if ((st = need_session(m, "LIST", false)) != MB_OK)
        return st;
    if (m->has_special_use) {
        /* libetpan has no LIST-EXTENDED call; the untagged LIST replies are
         * parsed as usual and left in the response info, so take them there. */
        cmd = "LIST \"\" \"*\" RETURN (SPECIAL-USE)";
        r = mailimap_custom_command(m->imap, cmd);
        if (r == MAILIMAP_NO_ERROR) {
            list = m->imap->imap_response_info->rsp_mailbox_list;
            m->imap->imap_response_info->rsp_mailbox_list = NULL;
        }
    } else if (m->has_xlist) {
        cmd = "XLIST \"\" \"*\"";
        r = mailimap_xlist(m->imap, "", "*", &list);
    } else {
        cmd = "LIST \"\" \"*\"";
        r = mailimap_list(m->imap, "", "*", &list);
    }
    if (r != MAILIMAP_NO_ERROR) {
        if (list)
            mailimap_list_result_free(list);
        return imap_fail(m, r, MB_ERR_INVALID, cmd, NULL);
    }
    size_t cnt = list ? (size_t)clist_count(list) : 0;
    mb_folder_info *f = calloc(cnt ? cnt : 1, sizeof *f);
    if (!f) {
        if (list)
            mailimap_list_result_free(list);
        return mb_errf(MB_ERR_NOMEM, "imap %s:%d: LIST: out of memory", m->host, m->port);
    }
    size_t i = 0;
    st = MB_OK;
    for (clistiter *it = list ? clist_begin(list) : NULL; it && st == MB_OK; it = clist_next(it)) {
        const struct mailimap_mailbox_list *mb = clist_content(it);
        if (!mb || !mb->mb_name)
            continue;
        st = folder_from_list(mb, &f[i]);
        i++;
    }
    if (list)
        mailimap_list_result_free(list);
    if (st != MB_OK) {
        mb_folder_info_free(f, i);
        return mb_errf(st, "imap %s:%d: LIST: out of memory", m->host, m->port);
    }
    *out = f;
    *n = i;
    return MB_OK;
}

static mb_status imap_open_folder(mb_source *s, const char *name, mb_folder_state *stt) {
    mb_imap *m = (mb_imap *)s;
    mb_status st;
    memset(stt, 0, sizeof *stt);
    if ((st = need_session(m, "EXAMINE", false)) != MB_OK)
        return st;
    free(m->folder);
    m->folder = NULL;
    char *raw = NULL; /* list_folders' name is the raw name, escaped if not clean */
    if ((st = mb_imap_unescape(name, &raw, NULL)) != MB_OK)
        return mb_errf(MB_ERR_NOTFOUND, "imap %s:%d: EXAMINE: %s", m->host, m->port, mb_err_last());
    uint64_t modseq = 0;
    int r = m->has_condstore ? mailimap_examine_condstore(m->imap, raw, &modseq)
                             : mailimap_examine(m->imap, raw);
    free(raw);
    if (r != MAILIMAP_NO_ERROR)
        return imap_fail(m, r, MB_ERR_NOTFOUND, "EXAMINE", name);
    const struct mailimap_selection_info *sel = m->imap->imap_selection_info;
    if (!sel || sel->sel_uidvalidity == 0)
        return mb_errf(MB_ERR_INVALID, "imap %s:%d folder '%s': EXAMINE: no UIDVALIDITY", m->host,
                       m->port, name);
    stt->uidvalidity = sel->sel_uidvalidity;
    stt->uidnext = sel->sel_uidnext;
    stt->exists = sel->sel_exists;
    stt->highest_modseq = modseq;
    m->folder = mb_strdup(name);
    if (!m->folder)
        return MB_ERR_NOMEM;
    MB_DEBUG(NULL, NULL, "imap %s:%d folder '%s': uidvalidity %llu uidnext %llu exists %u modseq %llu",
             m->host, m->port, name, (unsigned long long)stt->uidvalidity,
             (unsigned long long)stt->uidnext, stt->exists, (unsigned long long)modseq);
    return MB_OK;
}

/* ---- scan ----------------------------------------------------------------- */

/* unix seconds of an IMAP date-time; false if a field is out of range. */
static bool imap_time(const struct mailimap_date_time *d, int64_t *out) {
    if (!d || d->dt_month < 1 || d->dt_month > 12 || d->dt_day < 1 || d->dt_day > 31 ||
        d->dt_hour < 0 || d->dt_hour > 23 || d->dt_min < 0 || d->dt_min > 59 || d->dt_sec < 0 ||
        d->dt_sec > 60 || d->dt_year < 1900 || d->dt_year > 9999 || d->dt_zone < -2400 ||
        d->dt_zone > 2400)
        return false;
    struct tm tm = {0};
    tm.tm_year = d->dt_year - 1900;
    tm.tm_mon = d->dt_month - 1;
    tm.tm_mday = d->dt_day;
    tm.tm_hour = d->dt_hour;
    tm.tm_min = d->dt_min;
    tm.tm_sec = d->dt_sec;
    int z = d->dt_zone < 0 ? -d->dt_zone : d->dt_zone; /* +0130 is parsed as 130 */
    int64_t off = (int64_t)(z / 100) * 3600 + (int64_t)(z % 100) * 60;
    *out = (int64_t)timegm(&tm) - (d->dt_zone < 0 ? -off : off);
    return true;
}

/* The window of sequence numbers a FETCH asked for, and which of them have
 * come: a NO makes the window be asked for again, and what already came
 * before it must not be delivered twice; a FETCH for a number outside the
 * window is unsolicited. */
typedef struct {
    uint32_t lo;                   /* first sequence number of the window */
    uint8_t seen[SCAN_WINDOW / 8]; /* delivered, by seq - lo */
} seq_window;

static void window_start(seq_window *w, uint32_t lo) {
    w->lo = lo;
    memset(w->seen, 0, sizeof w->seen);
}

/* Whether seq is in the window and had not come yet (it has now). */
static bool window_first(seq_window *w, uint32_t seq) {
    if (seq < w->lo || seq - w->lo >= SCAN_WINDOW)
        return false;
    uint32_t b = seq - w->lo;
    if (w->seen[b / 8] & (1u << (b % 8)))
        return false;
    w->seen[b / 8] |= (uint8_t)(1u << (b % 8));
    return true;
}

/* Scratch for one message's flags, reused for every message (scan and
 * changes report flags the same way). */
typedef struct {
    const char **v;
    size_t cap;
    mb_buf ext;            /* "\\Ext" names and escaped keywords */
    uint64_t bad_keywords; /* keywords that had to be escaped */
} flag_buf;

static void flag_buf_free(flag_buf *fb) {
    free(fb->v);
    fb->v = NULL;
    fb->cap = 0;
    mb_buf_free(&fb->ext);
}

static void warn_bad_keywords(const mb_imap *m, const flag_buf *fb) {
    if (fb->bad_keywords)
        MB_WARN(NULL, NULL, "imap %s:%d folder '%s': %llu keywords were not valid UTF-8 (or held "
                "control characters): kept in their escaped form (U+FFFD, \\xNN)", m->host,
                m->port, m->folder, (unsigned long long)fb->bad_keywords);
}

static const char *system_flag(int t) {
    switch (t) {
    case MAILIMAP_FLAG_ANSWERED: return "\\Answered";
    case MAILIMAP_FLAG_FLAGGED: return "\\Flagged";
    case MAILIMAP_FLAG_DELETED: return "\\Deleted";
    case MAILIMAP_FLAG_SEEN: return "\\Seen";
    case MAILIMAP_FLAG_DRAFT: return "\\Draft";
    default: return NULL;
    }
}

/* A FETCH FLAGS list as mb_msg_info carries it, into fb->v[0..*n): system
 * flags are static strings, keywords point into libetpan's item (so the
 * result is valid while the item is), extension flags ("\Foo") and keywords
 * that are not clean (escaped: mb_imap_escape) are written into fb->ext
 * first and pointed at only once it no longer grows. \Recent is dropped: it
 * is per session, not a property of the message. */
static mb_status flags_collect(flag_buf *fb, clist *flags, size_t *n) {
    size_t nf = 0, nflags = flags ? (size_t)clist_count(flags) : 0;
    *n = 0;
    if (nflags > fb->cap) {
        const char **nfp = realloc(fb->v, nflags * sizeof *nfp);
        if (!nfp)
            return mb_errf(MB_ERR_NOMEM, "imap flags: out of memory");
        fb->v = nfp;
        fb->cap = nflags;
    }
    mb_buf_reset(&fb->ext);
    size_t ext_off[64];
    size_t next = 0;
    for (clistiter *it = flags ? clist_begin(flags) : NULL; it; it = clist_next(it)) {
        struct mailimap_flag_fetch *ff = clist_content(it);
        if (!ff || ff->fl_type != MAILIMAP_FLAG_FETCH_OTHER || !ff->fl_flag)
            continue;
        struct mailimap_flag *fl = ff->fl_flag;
        const char *name = system_flag(fl->fl_type);
        if (name) {
            fb->v[nf++] = name;
        } else if (fl->fl_type == MAILIMAP_FLAG_KEYWORD && fl->fl_data.fl_keyword) {
            const char *kw = fl->fl_data.fl_keyword;
            char *esc = NULL;
            bool escaped = false;
            if (mb_imap_escape(kw, strlen(kw), false, &esc, &escaped) != MB_OK)
                return mb_errf(MB_ERR_NOMEM, "imap flags: out of memory");
            if (!escaped) {
                fb->v[nf++] = kw;
            } else if (next < MB_ARRAY_LEN(ext_off)) {
                /* 8-bit or control bytes: stored in the escaped form. */
                fb->bad_keywords++;
                ext_off[next++] = fb->ext.len;
                if (mb_buf_append(&fb->ext, esc, strlen(esc) + 1) != MB_OK) {
                    free(esc);
                    return mb_errf(MB_ERR_NOMEM, "imap flags: out of memory");
                }
            }
            free(esc);
        } else if (fl->fl_type == MAILIMAP_FLAG_EXTENSION && fl->fl_data.fl_extension &&
                   next < MB_ARRAY_LEN(ext_off)) {
            ext_off[next++] = fb->ext.len;
            if (mb_buf_putc(&fb->ext, '\\') != MB_OK ||
                mb_buf_append(&fb->ext, fl->fl_data.fl_extension,
                              strlen(fl->fl_data.fl_extension) + 1) != MB_OK)
                return mb_errf(MB_ERR_NOMEM, "imap flags: out of memory");
        }
    }
    for (size_t i = 0; i < next; i++)
        fb->v[nf++] = fb->ext.data + ext_off[i];
    *n = nf;
    return MB_OK;
}

/* The items of one FETCH response that scan and changes look at. */
typedef struct {
    uint64_t uid, size;
    int64_t date;
    bool has_size, has_date, date_ok, has_flags;
    clist *flags; /* may be NULL with has_flags: FLAGS () */
} att_items;

static void att_read(const struct mailimap_msg_att *att, att_items *a) {
    memset(a, 0, sizeof *a);
    a->date_ok = true;
    for (clistiter *it = clist_begin(att->att_list); it; it = clist_next(it)) {
        struct mailimap_msg_att_item *item = clist_content(it);
        if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC && item->att_data.att_dyn) {
            a->flags = item->att_data.att_dyn->att_list;
            a->has_flags = true;
        } else if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC && item->att_data.att_static) {
            struct mailimap_msg_att_static *sa = item->att_data.att_static;
            if (sa->att_type == MAILIMAP_MSG_ATT_UID) {
                a->uid = sa->att_data.att_uid;
            } else if (sa->att_type == MAILIMAP_MSG_ATT_RFC822_SIZE) {
                a->size = sa->att_data.att_rfc822_size;
                a->has_size = true;
            } else if (sa->att_type == MAILIMAP_MSG_ATT_INTERNALDATE) {
                a->has_date = true;
                a->date_ok = imap_time(sa->att_data.att_internal_date, &a->date);
            }
        }
    }
}

typedef struct {
    mb_imap *m;
    int64_t since, until;
    mb_scan_cb cb;
    void *ctx;
    mb_status status;
    uint64_t seen, delivered;
    seq_window win;
    flag_buf fl;
} scan_ctx;

/* Run a FETCH (by sequence or by UID) whose messages each go to handler as
 * they are parsed, so a large response is not held whole; what libetpan
 * still collects is freed at once. changedsince (UID FETCH only): non-zero
 * adds (CHANGEDSINCE changedsince). Returns libetpan's result. */
static int fetch_streaming(mb_imap *m, bool by_uid, struct mailimap_set *set,
                           struct mailimap_fetch_type *ft, uint64_t changedsince,
                           mailimap_msg_att_handler *handler, void *ctx) {
    clist *res = NULL;
    mailimap_set_msg_att_handler(m->imap, handler, ctx);
    int r = !by_uid ? mailimap_fetch(m->imap, set, ft, &res)
            : changedsince ? mailimap_uid_fetch_changedsince(m->imap, set, ft, changedsince, &res)
                           : mailimap_uid_fetch(m->imap, set, ft, &res);
    if (m->imap)
        mailimap_set_msg_att_handler(m->imap, NULL, NULL);
    /* On a NO, libetpan has freed the list already but leaves res pointing
     * at it (freeing it again crashed scan and fetch on every NO). */
    if (res && r == MAILIMAP_NO_ERROR)
        mailimap_fetch_list_free(res);
    return r;
}

/* FETCH lo:hi (items) by sequence number (or only the numbers in `only`, a
 * subset of lo:hi, when not NULL) through handler, which sees the
 * window in *win (started here) and reports its callbacks' verdict in
 * *status. A NO [EXPUNGEISSUED] / [NONEXISTENT]: messages were expunged
 * meanwhile and the rest came (*gone, may be NULL). Any other NO
 * ([UNAVAILABLE], [SERVERBUG], none) is not a verdict on the messages: the
 * window is asked for again (messages that came are not delivered twice,
 * win), and after NO_ATTEMPTS this fails as temporary (MB_ERR_NET). */
static mb_status fetch_window(mb_imap *m, const struct mailimap_set *only, uint32_t lo,
                              uint32_t hi, struct mailimap_fetch_type *ft, const char *items,
                              mailimap_msg_att_handler *handler, void *ctx, seq_window *win,
                              const mb_status *status, bool *gone) {
    struct mailimap_set *own = only ? NULL : mailimap_set_new_interval(lo, hi);
    struct mailimap_set *set = only ? (struct mailimap_set *)only : own;
    if (!set)
        return mb_errf(MB_ERR_NOMEM, "imap FETCH: out of memory");
    char fbuf[256]; /* m->folder: imap_fail frees it on NET */
    snprintf(fbuf, sizeof fbuf, "%s", m->folder ? m->folder : "");
    window_start(win, lo);
    mb_status st = MB_OK;
    int r;
    for (int attempt = 1;; attempt++) {
        r = fetch_streaming(m, false, set, ft, 0, handler, ctx);
        if (r != MAILIMAP_ERROR_FETCH || *status != MB_OK)
            break;
        char text[200], code[64];
        server_text(m, text, sizeof text);
        snprintf(code, sizeof code, "%s", resp_code(m));
        if (code_means_gone(code)) {
            MB_WARN(NULL, NULL, "imap %s:%d folder '%s': FETCH %u:%u: NO [%s] %s", m->host,
                    m->port, fbuf, lo, hi, code, text);
            if (gone)
                *gone = true;
            r = MAILIMAP_NO_ERROR;
            break;
        }
        if (attempt >= NO_ATTEMPTS) {
            st = mb_errf(MB_ERR_NET, "imap %s:%d folder '%s': FETCH %u:%u: server answered "
                         "NO%s%s%s %s, %d attempts (temporary)", m->host, m->port, fbuf,
                         lo, hi, code[0] ? " [" : "", code, code[0] ? "]" : "", text, attempt);
            drop_session(m);
            break;
        }
        MB_WARN(NULL, NULL, "imap %s:%d folder '%s': FETCH %u:%u: NO%s%s%s %s; trying again",
                m->host, m->port, fbuf, lo, hi, code[0] ? " [" : "", code,
                code[0] ? "]" : "", text);
        pause_ms((long)NO_PAUSE_MS << (attempt - 1));
    }
    if (own)
        mailimap_set_free(own);
    if (st == MB_OK && r != MAILIMAP_NO_ERROR) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "FETCH %u:%u (%s)", lo, hi, items);
        st = imap_fail(m, r, MB_ERR_INVALID, cmd, fbuf);
    }
    return st;
}

static void scan_att_handler(struct mailimap_msg_att *att, void *arg) {
    scan_ctx *c = arg;
    if (c->status != MB_OK || !att || !att->att_list)
        return;
    att_items a;
    att_read(att, &a);
    /* Unsolicited FETCH (a flag change by another client) lacks these: skip. */
    if (a.uid == 0 || !a.has_size || !a.has_date)
        return;
    if (!a.date_ok) {
        c->status = mb_errf(MB_ERR_INVALID, "imap %s:%d folder '%s': UID %llu: bad INTERNALDATE",
                            c->m->host, c->m->port, c->m->folder, (unsigned long long)a.uid);
        return;
    }
    if (!window_first(&c->win, att->att_number))
        return; /* came before a NO, and again in the retry */
    c->seen++;
    if ((c->since && a.date < c->since) || (c->until && a.date >= c->until))
        return;
    size_t nf = 0;
    if ((c->status = flags_collect(&c->fl, a.flags, &nf)) != MB_OK)
        return;
    mb_msg_info info = {.uid = a.uid, .size = a.size, .internal_date = a.date,
                        .flags = c->fl.v, .nflags = nf};
    c->delivered++;
    c->status = c->cb(c->ctx, &info);
}

static struct mailimap_date *imap_day(int64_t t) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm))
        return NULL;
    return mailimap_date_new(tm.tm_mday, tm.tm_mon + 1, tm.tm_year + 1900);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* SEARCH <lo:hi> [SINCE d] [BEFORE d] with the dates widened by a day on each
 * side: IMAP compares dates only, in the server's time zone; the exact cut is
 * made on INTERNALDATE afterwards. *out: the matching sequence numbers as a
 * set, NULL if none. */
static mb_status search_window(scan_ctx *c, uint32_t lo, uint32_t hi, struct mailimap_set **out) {
    mb_imap *m = c->m;
    *out = NULL;
    struct mailimap_search_key *key = mailimap_search_key_new_multiple_empty();
    struct mailimap_set *range = mailimap_set_new_interval(lo, hi);
    if (!key || !range || mailimap_search_key_multiple_add(key, mailimap_search_key_new_set(range))) {
        if (key)
            mailimap_search_key_free(key);
        return mb_errf(MB_ERR_NOMEM, "imap scan: out of memory");
    }
    if (c->since) {
        struct mailimap_date *d = imap_day(c->since - 86400);
        if (!d || mailimap_search_key_multiple_add(key, mailimap_search_key_new_since(d))) {
            mailimap_search_key_free(key);
            return mb_errf(MB_ERR_NOMEM, "imap scan: out of memory");
        }
    }
    if (c->until) {
        struct mailimap_date *d = imap_day(c->until + 2 * 86400);
        if (!d || mailimap_search_key_multiple_add(key, mailimap_search_key_new_before(d))) {
            mailimap_search_key_free(key);
            return mb_errf(MB_ERR_NOMEM, "imap scan: out of memory");
        }
    }
    clist *res = NULL;
    int r = mailimap_search(m->imap, NULL, key, &res);
    mailimap_search_key_free(key);
    if (r != MAILIMAP_NO_ERROR) {
        if (res)
            mailimap_search_result_free(res);
        return imap_fail(m, r, MB_ERR_INVALID, "SEARCH", m->folder);
    }
    size_t cnt = res ? (size_t)clist_count(res) : 0;
    if (cnt == 0) {
        if (res)
            mailimap_search_result_free(res);
        return MB_OK;
    }
    uint32_t *v = malloc(cnt * sizeof *v);
    struct mailimap_set *set = mailimap_set_new_empty();
    if (!v || !set) {
        free(v);
        if (set)
            mailimap_set_free(set);
        mailimap_search_result_free(res);
        return mb_errf(MB_ERR_NOMEM, "imap scan: out of memory");
    }
    size_t k = 0;
    for (clistiter *it = clist_begin(res); it; it = clist_next(it))
        v[k++] = *(uint32_t *)clist_content(it);
    mailimap_search_result_free(res);
    qsort(v, k, sizeof *v, cmp_u32);
    for (size_t i = 0; i < k;) {
        size_t j = i;
        while (j + 1 < k && v[j + 1] <= v[j] + 1)
            j++;
        if (mailimap_set_add_interval(set, v[i], v[j]) != MAILIMAP_NO_ERROR) {
            free(v);
            mailimap_set_free(set);
            return mb_errf(MB_ERR_NOMEM, "imap scan: out of memory");
        }
        i = j + 1;
    }
    free(v);
    *out = set;
    return MB_OK;
}

/* (UID RFC822.SIZE INTERNALDATE FLAGS), or (UID FLAGS) without meta. */
static struct mailimap_fetch_type *scan_fetch_type(bool meta) {
    struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
    if (!ft)
        return NULL;
    struct mailimap_fetch_att *a[4] = {mailimap_fetch_att_new_uid()};
    size_t n = 1;
    if (meta) {
        a[n++] = mailimap_fetch_att_new_rfc822_size();
        a[n++] = mailimap_fetch_att_new_internaldate();
    }
    a[n++] = mailimap_fetch_att_new_flags();
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        if (!ok || !a[i] || mailimap_fetch_type_new_fetch_att_list_add(ft, a[i]) != MAILIMAP_NO_ERROR) {
            if (a[i])
                mailimap_fetch_att_free(a[i]);
            ok = false;
        }
    }
    if (!ok) {
        mailimap_fetch_type_free(ft);
        return NULL;
    }
    return ft;
}

static mb_status imap_scan(mb_source *s, int64_t since, int64_t until, mb_scan_cb cb, void *ctx) {
    mb_imap *m = (mb_imap *)s;
    mb_status st;
    if ((st = need_session(m, "scan", true)) != MB_OK)
        return st;
    if (since < 0 || until < 0 || (since && until && until <= since))
        return mb_errf(MB_ERR_INVALID, "imap scan: bad range since=%lld until=%lld",
                       (long long)since, (long long)until);
    scan_ctx c = {.m = m, .since = since, .until = until, .cb = cb, .ctx = ctx, .status = MB_OK};
    struct mailimap_fetch_type *ft = scan_fetch_type(true);
    if (!ft)
        return mb_errf(MB_ERR_NOMEM, "imap scan: out of memory");
    /* Messages that arrive during the scan are the next sync's business. */
    uint32_t exists = m->imap->imap_selection_info->sel_exists;
    for (uint32_t lo = 1; lo <= exists && c.status == MB_OK; lo += SCAN_WINDOW) {
        uint32_t hi = exists - lo < SCAN_WINDOW - 1 ? exists : lo + SCAN_WINDOW - 1;
        struct mailimap_set *set = NULL;
        if (since || until) {
            if ((st = search_window(&c, lo, hi, &set)) != MB_OK)
                break;
            if (!set)
                continue;
        } else if (!(set = mailimap_set_new_interval(lo, hi))) {
            st = mb_errf(MB_ERR_NOMEM, "imap scan: out of memory");
            break;
        }
        st = fetch_window(m, set, lo, hi, ft, "UID RFC822.SIZE INTERNALDATE FLAGS",
                          scan_att_handler, &c, &c.win, &c.status, NULL);
        mailimap_set_free(set);
        if (st != MB_OK)
            break;
    }
    mailimap_fetch_type_free(ft);
    flag_buf_free(&c.fl);
    if (st != MB_OK)
        return st;
    warn_bad_keywords(m, &c.fl);
    MB_DEBUG(NULL, NULL, "imap %s:%d folder '%s': scanned %llu messages, %llu in range", m->host,
             m->port, m->folder, (unsigned long long)c.seen, (unsigned long long)c.delivered);
    return c.status;
}

/* ---- fetch ----------------------------------------------------------------
 *
 * A UID is only ever called gone when the server says so: a tagged NO for a
 * UID FETCH (or an OK that left some UIDs out) is followed by NOOP (so
 * expunges by other sessions reach this one) and UID SEARCH UID <missing>;
 * what the search no longer lists, or what a NO [EXPUNGEISSUED] /
 * [NONEXISTENT] left out, is gone. What is still there is fetched again
 * after a short pause, NO_ATTEMPTS times in all; after that the server is
 * refusing for now ([UNAVAILABLE], [SERVERBUG], a NO without a code):
 * MB_ERR_NET, so the caller retries later instead of losing the messages. */


typedef struct {
    mb_imap *m;
    const uint64_t *want;
    bool *recv; /* parallel to want: received in this command */
    size_t nwant;
    mb_fetch_cb cb;
    void *ctx;
    mb_status status;
    size_t got;
} fetch_ctx;

static void fetch_att_handler(struct mailimap_msg_att *att, void *arg) {
    fetch_ctx *c = arg;
    if (c->status != MB_OK || !att || !att->att_list)
        return;
    uint64_t uid = 0;
    const struct mailimap_msg_att_body_section *body = NULL;
    for (clistiter *it = clist_begin(att->att_list); it; it = clist_next(it)) {
        struct mailimap_msg_att_item *item = clist_content(it);
        if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC || !item->att_data.att_static)
            continue;
        struct mailimap_msg_att_static *sa = item->att_data.att_static;
        if (sa->att_type == MAILIMAP_MSG_ATT_UID)
            uid = sa->att_data.att_uid;
        else if (sa->att_type == MAILIMAP_MSG_ATT_BODY_SECTION)
            body = sa->att_data.att_body_section;
    }
    if (uid == 0 || !body)
        return; /* unsolicited flag update */
    size_t w = c->nwant;
    for (size_t i = 0; i < c->nwant && w == c->nwant; i++)
        if (c->want[i] == uid)
            w = i;
    if (w == c->nwant || c->recv[w])
        return; /* not asked for, or a second copy */
    if (!body->sec_body_part) {
        MB_WARN(NULL, NULL, "imap %s:%d folder '%s': UID %llu: BODY[] is NIL", c->m->host,
                c->m->port, c->m->folder, (unsigned long long)uid);
        return;
    }
    c->recv[w] = true;
    c->got++;
    c->status = c->cb(c->ctx, uid, body->sec_body_part, body->sec_length);
}

static struct mailimap_set *uid_set(const uint64_t *uids, size_t n) {
    struct mailimap_set *set = mailimap_set_new_empty();
    for (size_t i = 0; set && i < n; i++)
        if (mailimap_set_add_single(set, (uint32_t)uids[i]) != MAILIMAP_NO_ERROR) {
            mailimap_set_free(set);
            set = NULL;
        }
    return set;
}

/* UID FETCH uids (UID BODY.PEEK[]) into c; *r: libetpan's result. */
static mb_status fetch_once(mb_imap *m, const uint64_t *uids, size_t n, fetch_ctx *c, int *r) {
    struct mailimap_set *set = uid_set(uids, n);
    struct mailimap_fetch_type *ft = mailimap_fetch_type_new_fetch_att_list_empty();
    struct mailimap_section *sec = mailimap_section_new(NULL);
    struct mailimap_fetch_att *a_uid = mailimap_fetch_att_new_uid();
    struct mailimap_fetch_att *a_body = sec ? mailimap_fetch_att_new_body_peek_section(sec) : NULL;
    bool ok = set && ft && a_uid && a_body;
    if (!a_body && sec)
        mailimap_section_free(sec);
    if (ok && mailimap_fetch_type_new_fetch_att_list_add(ft, a_uid) == MAILIMAP_NO_ERROR)
        a_uid = NULL;
    else
        ok = false;
    if (ok && mailimap_fetch_type_new_fetch_att_list_add(ft, a_body) == MAILIMAP_NO_ERROR)
        a_body = NULL;
    else
        ok = false;
    if (a_uid)
        mailimap_fetch_att_free(a_uid);
    if (a_body)
        mailimap_fetch_att_free(a_body);
    if (ok) {
        c->want = uids;
        c->nwant = n;
        memset(c->recv, 0, n * sizeof *c->recv);
        *r = fetch_streaming(m, true, set, ft, 0, fetch_att_handler, c);
        /* libetpan answers a NO to UID FETCH with its own code: the NO is
         * handled (NOOP, UID SEARCH, retry) as for FETCH, not as a lost
         * connection. */
        if (*r == MAILIMAP_ERROR_UID_FETCH)
            *r = MAILIMAP_ERROR_FETCH;
    }
    if (set)
        mailimap_set_free(set);
    if (ft)
        mailimap_fetch_type_free(ft);
    return ok ? MB_OK : mb_errf(MB_ERR_NOMEM, "imap fetch: out of memory");
}

/* Which of uids[0..n) the server still has (NOOP first, so that expunges by
 * other sessions are seen, then UID SEARCH UID <set>): present[i]. */
static mb_status uids_present(mb_imap *m, const uint64_t *uids, size_t n, bool *present) {
    char fbuf[256];
    snprintf(fbuf, sizeof fbuf, "%s", m->folder);
    int r = mailimap_noop(m->imap);
    if (r != MAILIMAP_NO_ERROR)
        return imap_fail(m, r, MB_ERR_NET, "NOOP", fbuf);
    note_expunges(m);
    struct mailimap_set *set = uid_set(uids, n);
    struct mailimap_search_key *key = set ? mailimap_search_key_new_uid(set) : NULL;
    if (!key) {
        if (set)
            mailimap_set_free(set);
        return mb_errf(MB_ERR_NOMEM, "imap fetch: out of memory");
    }
    clist *res = NULL;
    r = mailimap_uid_search(m->imap, NULL, key, &res);
    mailimap_search_key_free(key);
    note_expunges(m);
    if (r != MAILIMAP_NO_ERROR) {
        if (res)
            mailimap_search_result_free(res);
        /* Without an answer nothing may be called gone: retry later. */
        return imap_fail(m, r, MB_ERR_NET, "UID SEARCH UID", fbuf);
    }
    memset(present, 0, n * sizeof *present);
    for (clistiter *it = res ? clist_begin(res) : NULL; it; it = clist_next(it)) {
        uint32_t u = *(uint32_t *)clist_content(it);
        for (size_t i = 0; i < n; i++)
            if (uids[i] == u)
                present[i] = true;
    }
    if (res)
        mailimap_search_result_free(res);
    return MB_OK;
}

/* One batch (at most FETCH_BATCH UIDs): fetch, confirm what did not come,
 * fetch what is still there again. */
static mb_status fetch_batch(mb_imap *m, const uint64_t *uids, size_t n, fetch_ctx *c) {
    uint64_t pend[FETCH_BATCH];
    bool recv[FETCH_BATCH], present[FETCH_BATCH];
    size_t np = n;
    memcpy(pend, uids, n * sizeof *pend);
    c->recv = recv;
    for (int attempt = 1;; attempt++) {
        int r = MAILIMAP_NO_ERROR;
        mb_status st = fetch_once(m, pend, np, c, &r);
        if (st != MB_OK)
            return st;
        note_expunges(m);
        char cmd[96], fbuf[256], code[64] = "", text[200] = "";
        snprintf(cmd, sizeof cmd, "UID FETCH %llu%s BODY.PEEK[]", (unsigned long long)pend[0],
                 np > 1 ? ",..." : "");
        snprintf(fbuf, sizeof fbuf, "%s", m->folder ? m->folder : "");
        if (r != MAILIMAP_NO_ERROR && r != MAILIMAP_ERROR_FETCH)
            return imap_fail(m, r, MB_ERR_INVALID, cmd, fbuf);
        if (c->status != MB_OK)
            return c->status;
        if (r == MAILIMAP_ERROR_FETCH) {
            snprintf(code, sizeof code, "%s", resp_code(m));
            server_text(m, text, sizeof text);
        }
        size_t k = 0;
        for (size_t i = 0; i < np; i++)
            if (!recv[i])
                pend[k++] = pend[i];
        np = k;
        if (np == 0)
            return MB_OK;
        if ((st = uids_present(m, pend, np, present)) != MB_OK)
            return st;
        bool gone_code = code_means_gone(code);
        k = 0;
        for (size_t i = 0; i < np; i++)
            if (present[i] && !gone_code)
                pend[k++] = pend[i];
        if (np - k)
            MB_DEBUG(NULL, NULL, "imap %s:%d folder '%s': %s: %zu UIDs no longer exist%s%s%s",
                     m->host, m->port, fbuf, cmd, np - k, code[0] ? " [" : "", code,
                     code[0] ? "]" : "");
        np = k;
        if (np == 0)
            return MB_OK;
        if (attempt >= NO_ATTEMPTS) {
            drop_session(m);
            return mb_errf(MB_ERR_NET,
                           "imap %s:%d folder '%s': %s: server answered %s%s%s%s%s%s for %zu "
                           "messages it still has (UID SEARCH), %d attempts (temporary)",
                           m->host, m->port, fbuf, cmd, r == MAILIMAP_ERROR_FETCH ? "NO" : "OK",
                           code[0] ? " [" : "", code, code[0] ? "]" : "", text[0] ? " " : "",
                           text, np, attempt);
        }
        MB_WARN(NULL, NULL, "imap %s:%d folder '%s': %s: %s%s%s%s %s; %zu messages still on the "
                "server, trying again", m->host, m->port, fbuf, cmd,
                r == MAILIMAP_ERROR_FETCH ? "NO" : "OK without them", code[0] ? " [" : "", code,
                code[0] ? "]" : "", text, np);
        pause_ms((long)NO_PAUSE_MS << (attempt - 1));
    }
}

static mb_status imap_fetch(mb_source *s, const uint64_t *uids, size_t n, mb_fetch_cb cb, void *ctx) {
    mb_imap *m = (mb_imap *)s;
    mb_status st;
    if ((st = need_session(m, "UID FETCH", true)) != MB_OK)
        return st;
    for (size_t i = 0; i < n; i++)
        if (uids[i] == 0 || uids[i] > UINT32_MAX)
            return mb_errf(MB_ERR_INVALID, "imap fetch: UID %llu out of range",
                           (unsigned long long)uids[i]);
    fetch_ctx c = {.m = m, .cb = cb, .ctx = ctx, .status = MB_OK};
    for (size_t off = 0; off < n; off += FETCH_BATCH) {
        size_t cnt = n - off < FETCH_BATCH ? n - off : FETCH_BATCH;
        if ((st = fetch_batch(m, uids + off, cnt, &c)) != MB_OK)
            return st;
    }
    if (c.got < n)
        MB_DEBUG(NULL, NULL, "imap %s:%d folder '%s': %zu of %zu UIDs no longer exist", m->host,
                 m->port, m->folder, n - c.got, n);
    return MB_OK;
}

/* ---- changes ---------------------------------------------------------------
 *
 * One EXAMINE, then the cheapest way the server offers:
 *  QRESYNC    EXAMINE name (QRESYNC (uidvalidity modseq 1:uidnext-1)): the
 *             server sends FETCH (UID FLAGS) for the messages below uidnext
 *             changed since modseq (-> changed, as they are parsed) and
 *             VANISHED (EARLIER) for those expunged (-> vanished), all in the
 *             EXAMINE's response; then added.
 *  CONDSTORE  EXAMINE (CONDSTORE); added; then the count says whether any
 *             message below uidnext went: exists at EXAMINE minus the added
 *             ones against known->exists. If some went, present lists every
 *             message below uidnext with its flags (listed), which also
 *             carries every flag change; if none went, UID FETCH
 *             1:uidnext-1 (UID FLAGS) (CHANGEDSINCE modseq) -> changed
 *             (skipped when HIGHESTMODSEQ did not move).
 *  FULL       EXAMINE; added; present (listed).
 * added comes right after the EXAMINE and by sequence number: the messages
 * from known->uidnext on are the last ones, at most uidnext - known->uidnext
 * of them (UIDs only grow), so FETCH s0:exists (UID RFC822.SIZE INTERNALDATE
 * FLAGS) with s0 = exists - that + 1 holds them all, in SCAN_WINDOW windows,
 * with no UID FETCH N:* (which returns the last message when N is past it)
 * and no EXPUNGE in between to shift the numbers (the server may not send one
 * during FETCH). Messages that arrive after the EXAMINE (uid >= its UIDNEXT)
 * are the next call's business. present likewise windows from 1 up and stops
 * after the window that reaches known->uidnext.
 *
 * Memory: every FETCH response goes to the msg_att handler and is freed as it
 * is parsed; the text of one response is still held by libetpan until its
 * end, which is bounded by SCAN_WINDOW for added and present, but for the
 * QRESYNC EXAMINE and the CHANGEDSINCE FETCH grows with the number of
 * messages changed since known (about 70 bytes each), as does the VANISHED
 * set (kept as ranges). */

enum { PH_CHANGED, PH_PRESENT, PH_ADDED };

typedef struct {
    mb_imap *m;
    const mb_folder_state *known;
    const mb_changes_cb *cb;
    mb_status status;
    int phase;
    uint64_t uid_end;   /* PH_ADDED: only UIDs below (the EXAMINE's UIDNEXT; 0: any) */
    uint64_t last;      /* PH_PRESENT: the last UID listed */
    bool beyond;        /* PH_PRESENT: this window reached known->uidnext */
    seq_window win;
    flag_buf fl;
    uint64_t n_changed, n_present, n_added, n_vanished;
} changes_ctx;

static void changes_att_handler(struct mailimap_msg_att *att, void *arg) {
    changes_ctx *c = arg;
    if (c->status != MB_OK || !att || !att->att_list)
        return;
    att_items a;
    att_read(att, &a);
    if (a.uid == 0 || !a.has_flags)
        return; /* unsolicited, without what we need */
    const uint64_t below = c->known->uidnext;
    mb_msg_info info = {.uid = a.uid};
    mb_scan_cb cb = NULL;
    switch (c->phase) {
    case PH_CHANGED:
        if (a.uid >= below)
            return; /* added reports it */
        c->n_changed++;
        cb = c->cb->changed;
        break;
    case PH_PRESENT:
        if (!window_first(&c->win, att->att_number))
            return; /* unsolicited, or came before a NO and again */
        if (a.uid >= below) {
            c->beyond = true;
            return;
        }
        if (a.uid <= c->last) {
            c->status = mb_errf(MB_ERR_INVALID, "imap %s:%d folder '%s': FETCH: UID %llu came "
                                "after UID %llu: the server does not answer in sequence order",
                                c->m->host, c->m->port, c->m->folder, (unsigned long long)a.uid,
                                (unsigned long long)c->last);
            return;
        }
        c->last = a.uid;
        c->n_present++;
        cb = c->cb->present;
        break;
    default: /* PH_ADDED */
        if (!a.has_size || !a.has_date || !window_first(&c->win, att->att_number))
            return;
        if (a.uid < below || (c->uid_end && a.uid >= c->uid_end))
            return;
        if (!a.date_ok) {
            c->status = mb_errf(MB_ERR_INVALID, "imap %s:%d folder '%s': UID %llu: bad "
                                "INTERNALDATE", c->m->host, c->m->port, c->m->folder,
                                (unsigned long long)a.uid);
            return;
        }
        c->n_added++;
        info.size = a.size;
        info.internal_date = a.date;
        cb = c->cb->added;
        break;
    }
    if (!cb)
        return;
    size_t nf = 0;
    if ((c->status = flags_collect(&c->fl, a.flags, &nf)) != MB_OK)
        return;
    info.flags = c->fl.v;
    info.nflags = nf;
    c->status = cb(c->cb->ctx, &info);
}

/* Sequence numbers lo..hi in SCAN_WINDOW windows, in phase (PH_PRESENT stops
 * after the window that reached known->uidnext). *gone: a NO said messages
 * were expunged meanwhile. */
static mb_status changes_windows(changes_ctx *c, int phase, uint32_t lo, uint32_t hi, bool *gone) {
    mb_imap *m = c->m;
    bool meta = phase == PH_ADDED;
    struct mailimap_fetch_type *ft = scan_fetch_type(meta);
    if (!ft)
        return mb_errf(MB_ERR_NOMEM, "imap changes: out of memory");
    c->phase = phase;
    c->beyond = false;
    mb_status st = MB_OK;
    for (uint32_t w = lo; w >= lo && w <= hi && c->status == MB_OK && !c->beyond;
         w += SCAN_WINDOW) {
        uint32_t whi = hi - w < SCAN_WINDOW - 1 ? hi : w + SCAN_WINDOW - 1;
        st = fetch_window(m, NULL, w, whi, ft,
                          meta ? "UID RFC822.SIZE INTERNALDATE FLAGS" : "UID FLAGS",
                          changes_att_handler, c, &c->win, &c->status, gone);
        if (st != MB_OK)
            break;
    }
    mailimap_fetch_type_free(ft);
    return st;
}

/* The VANISHED (EARLIER) sets of the last response: reported to vanished
 * (clipped below known->uidnext) when report, else only counted. */
static size_t earlier_vanished(changes_ctx *c, bool report) {
    struct mailimap_response_info *ri = c->m->imap->imap_response_info;
    size_t n = 0;
    const uint64_t below = c->known->uidnext;
    for (clistiter *it = ri && ri->rsp_extension_list ? clist_begin(ri->rsp_extension_list) : NULL;
         it; it = clist_next(it)) {
        const struct mailimap_extension_data *ext = clist_content(it);
        if (!ext || ext->ext_extension->ext_id != MAILIMAP_EXTENSION_QRESYNC ||
            ext->ext_type != MAILIMAP_QRESYNC_TYPE_VANISHED || !ext->ext_data)
            continue;
        const struct mailimap_qresync_vanished *v = ext->ext_data;
        if (!v->qr_earlier || !v->qr_known_uids || !v->qr_known_uids->set_list)
            continue;
        for (clistiter *j = clist_begin(v->qr_known_uids->set_list); j; j = clist_next(j)) {
            const struct mailimap_set_item *si = clist_content(j);
            uint64_t lo = si->set_first ? si->set_first : UINT32_MAX;
            uint64_t hi = si->set_last ? si->set_last : UINT32_MAX;
            if (lo > hi) {
                uint64_t t = lo;
                lo = hi;
                hi = t;
            }
            if (lo >= below)
                continue;
            if (hi >= below)
                hi = below - 1;
            n++;
            if (!report || c->status != MB_OK)
                continue;
            c->n_vanished++;
            if (c->cb->vanished)
                c->status = c->cb->vanished(c->cb->ctx, lo, hi);
        }
    }
    return n;
}

/* Append mb as libetpan sends a mailbox (an atom if it is only letters,
 * digits and '-', else a quoted string with '"' and '\' escaped). */
static mb_status put_mailbox(mb_buf *b, const char *mb) {
    bool atom = *mb != 0;
    for (const char *p = mb; *p && atom; p++)
        atom = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
               *p == '-';
    if (atom)
        return mb_buf_puts(b, mb);
    mb_status st = mb_buf_putc(b, '"');
    for (const char *p = mb; *p && st == MB_OK; p++) {
        if (*p == '"' || *p == '\\')
            st = mb_buf_putc(b, '\\');
        if (st == MB_OK)
            st = mb_buf_putc(b, *p);
    }
    return st == MB_OK ? mb_buf_putc(b, '"') : st;
}

/* EXAMINE mb (QRESYNC (uidvalidity modseq 1:last)) (RFC 7162 3.2.5), sent
 * and read the way libetpan's own EXAMINE is: libetpan only has
 * mailimap_select_qresync, a SELECT, which would open the folder read-write
 * and take \Recent off its messages for other clients. FETCH responses go to
 * the msg_att handler set by the caller as they are parsed; VANISHED
 * (EARLIER) stays in the response info until the next command. *modseq: the
 * folder's HIGHESTMODSEQ (0 with NOMODSEQ). *bad: the server answered BAD
 * (or the tag did not match: libetpan does not tell them apart). Returns a
 * libetpan result (MAILIMAP_ERROR_EXAMINE for NO, _PROTOCOL for BAD). mb must
 * not hold a line break (it could not be sent quoted). */
static int examine_qresync(mb_imap *m, const char *mb, uint32_t uidvalidity, uint64_t known_modseq,
                           uint32_t last, uint64_t *modseq, bool *bad) {
    mailimap *s = m->imap;
    *modseq = 0;
    *bad = false;
    if (s->imap_state != MAILIMAP_STATE_AUTHENTICATED && s->imap_state != MAILIMAP_STATE_SELECTED)
        return MAILIMAP_ERROR_BAD_STATE;
    mb_buf cmd = MB_BUF_INIT;
    if (mb_buf_puts(&cmd, "EXAMINE ") != MB_OK || put_mailbox(&cmd, mb) != MB_OK ||
        mb_buf_printf(&cmd, " (QRESYNC (%u %llu 1:%u))\r\n", uidvalidity,
                      (unsigned long long)known_modseq, last) != MB_OK) {
        mb_buf_free(&cmd);
        return MAILIMAP_ERROR_MEMORY;
    }
    int r = mailimap_send_current_tag(s);
    if (r == MAILIMAP_NO_ERROR &&
        (mailstream_write(s->imap_stream, cmd.data, cmd.len) != (ssize_t)cmd.len ||
         mailstream_flush(s->imap_stream) == -1))
        r = MAILIMAP_ERROR_STREAM;
    mb_buf_free(&cmd);
    if (r != MAILIMAP_NO_ERROR)
        return r;
    if (mailimap_read_line(s) == NULL)
        return MAILIMAP_ERROR_STREAM;
    if (s->imap_selection_info)
        mailimap_selection_info_free(s->imap_selection_info);
    s->imap_selection_info = mailimap_selection_info_new();
    struct mailimap_response *resp = NULL;
    r = mailimap_parse_response(s, &resp);
    int cond = MAILIMAP_RESP_COND_STATE_BAD; /* libetpan: MAILIMAP_ERROR_PROTOCOL */
    if (r == MAILIMAP_NO_ERROR) {
        cond = resp->rsp_resp_done->rsp_data.rsp_tagged->rsp_cond_state->rsp_type;
        mailimap_response_free(resp);
    } else if (r != MAILIMAP_ERROR_PROTOCOL) {
        return r;
    }
    struct mailimap_response_info *ri = s->imap_response_info;
    for (clistiter *it = ri && ri->rsp_extension_list ? clist_begin(ri->rsp_extension_list) : NULL;
         it; it = clist_next(it)) {
        const struct mailimap_extension_data *ext = clist_content(it);
        if (!ext || ext->ext_extension->ext_id != MAILIMAP_EXTENSION_CONDSTORE ||
            ext->ext_type != MAILIMAP_CONDSTORE_TYPE_RESP_TEXT_CODE || !ext->ext_data)
            continue;
        const struct mailimap_condstore_resptextcode *rc = ext->ext_data;
        if (rc->cs_type == MAILIMAP_CONDSTORE_RESPTEXTCODE_HIGHESTMODSEQ)
            *modseq = rc->cs_data.cs_modseq_value;
        else if (rc->cs_type == MAILIMAP_CONDSTORE_RESPTEXTCODE_NOMODSEQ)
            *modseq = 0;
    }
    if (cond == MAILIMAP_RESP_COND_STATE_OK) {
        s->imap_state = MAILIMAP_STATE_SELECTED;
        return MAILIMAP_NO_ERROR;
    }
    mailimap_selection_info_free(s->imap_selection_info);
    s->imap_selection_info = NULL;
    s->imap_state = MAILIMAP_STATE_AUTHENTICATED;
    *bad = cond == MAILIMAP_RESP_COND_STATE_BAD;
    return *bad ? MAILIMAP_ERROR_PROTOCOL : MAILIMAP_ERROR_EXAMINE;
}

static const char *const method_name[] = {"unchanged", "qresync", "condstore", "full", "reset"};

/* STATUS raw (UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ) into *now: a
 * folder whose four values are those the caller knows has not changed
 * (RFC 7162 3.1.2.3: any change raises HIGHESTMODSEQ), which STATUS tells
 * without opening it — Dovecot opens a 60,000-message folder for EXAMINE
 * in about 100 ms, answers STATUS from its index in under 1 ms. Returns a
 * libetpan result; MAILIMAP_NO_ERROR with a zero field when the server left
 * one out (then the caller just EXAMINEs). */
static int status_state(mb_imap *m, const char *raw, mb_folder_state *now) {
    memset(now, 0, sizeof *now);
    struct mailimap_status_att_list *atts = mailimap_status_att_list_new_empty();
    if (!atts)
        return MAILIMAP_ERROR_MEMORY;
    int r = MAILIMAP_NO_ERROR;
    static const int want[] = {MAILIMAP_STATUS_ATT_UIDVALIDITY, MAILIMAP_STATUS_ATT_UIDNEXT,
                               MAILIMAP_STATUS_ATT_MESSAGES, MAILIMAP_STATUS_ATT_HIGHESTMODSEQ};
    for (size_t i = 0; i < MB_ARRAY_LEN(want) && r == MAILIMAP_NO_ERROR; i++)
        r = mailimap_status_att_list_add(atts, want[i]);
    struct mailimap_mailbox_data_status *res = NULL;
    if (r == MAILIMAP_NO_ERROR)
        r = mailimap_status(m->imap, raw, atts, &res);
    mailimap_status_att_list_free(atts);
    if (r != MAILIMAP_NO_ERROR)
        return r;
    for (clistiter *it = res->st_info_list ? clist_begin(res->st_info_list) : NULL; it;
         it = clist_next(it)) {
        const struct mailimap_status_info *i = clist_content(it);
        if (i->st_att == MAILIMAP_STATUS_ATT_UIDVALIDITY)
            now->uidvalidity = i->st_value;
        else if (i->st_att == MAILIMAP_STATUS_ATT_UIDNEXT)
            now->uidnext = i->st_value;
        else if (i->st_att == MAILIMAP_STATUS_ATT_MESSAGES)
            now->exists = i->st_value;
        else if (i->st_ext_data && i->st_ext_data->ext_extension &&
                 i->st_ext_data->ext_extension->ext_id == MAILIMAP_EXTENSION_CONDSTORE &&
                 i->st_ext_data->ext_type == MAILIMAP_CONDSTORE_TYPE_STATUS_INFO &&
                 i->st_ext_data->ext_data)
            now->highest_modseq =
                ((const struct mailimap_condstore_status_info *)i->st_ext_data->ext_data)
                    ->cs_highestmodseq_value;
    }
    mailimap_mailbox_data_status_free(res);
    return MAILIMAP_NO_ERROR;
}

/* *same: the folder (raw name) is unchanged since known, by one STATUS —
 * only with CONDSTORE and a known state; *now then holds the state. A NO
 * (or BAD) to STATUS is no answer (EXAMINE says more); a lost connection is
 * an error. */
static mb_status status_unchanged(mb_imap *m, const char *raw, const char *name,
                                  const mb_folder_state *known, bool *same, mb_folder_state *now) {
    *same = false;
    if (!m->has_condstore || !known->highest_modseq || !known->uidvalidity || !known->uidnext)
        return MB_OK;
    mb_folder_state st;
    int r = status_state(m, raw, &st);
    if (r == MAILIMAP_NO_ERROR && st.uidvalidity == known->uidvalidity &&
        st.uidnext == known->uidnext && st.exists == known->exists &&
        st.highest_modseq == known->highest_modseq) {
        *now = st;
        *same = true;
        MB_DEBUG(NULL, NULL, "imap %s:%d folder '%s': unchanged (STATUS)", m->host, m->port, name);
        return MB_OK;
    }
    if (r != MAILIMAP_NO_ERROR && r != MAILIMAP_ERROR_STATUS && r != MAILIMAP_ERROR_PROTOCOL)
        return imap_fail(m, r, MB_ERR_NOTFOUND, "STATUS", name);
    return MB_OK;
}

static mb_status imap_unchanged(mb_source *s, const char *name, const mb_folder_state *known,
                                bool *unchanged, mb_folder_state *now) {
    mb_imap *m = (mb_imap *)s;
    *unchanged = false;
    mb_status st = need_session(m, "STATUS", false);
    if (st != MB_OK)
        return st;
    char *raw = NULL;
    if (mb_imap_unescape(name, &raw, NULL) != MB_OK)
        return mb_errf(MB_ERR_NOTFOUND, "imap %s:%d: STATUS: %s", m->host, m->port, mb_err_last());
    st = status_unchanged(m, raw, name, known, unchanged, now);
    free(raw);
    return st;
}

static mb_status imap_changes(mb_source *s, const char *name, const mb_folder_state *known,
                              const mb_changes_cb *cb, mb_changes_info *out) {
    mb_imap *m = (mb_imap *)s;
    mb_status st;
    memset(out, 0, sizeof *out);
    if ((st = need_session(m, "EXAMINE", false)) != MB_OK)
        return st;
    free(m->folder);
    m->folder = NULL;
    char *raw = NULL; /* list_folders' name is the raw name, escaped if not clean */
    if (mb_imap_unescape(name, &raw, NULL) != MB_OK)
        return mb_errf(MB_ERR_NOTFOUND, "imap %s:%d: EXAMINE: %s", m->host, m->port, mb_err_last());
    static const mb_changes_cb no_cb;
    changes_ctx c = {.m = m, .known = known, .cb = cb ? cb : &no_cb, .status = MB_OK};
    /* Below known->uidnext (clipped to what a UID can be) lie the messages
     * the caller holds; none if it is 0 or 1. */
    const uint64_t below_end = known->uidnext > (uint64_t)UINT32_MAX + 1 ? (uint64_t)UINT32_MAX + 1
                                                                        : known->uidnext;
    const bool below = below_end > 1;
    /* Unchanged since the caller's state: one STATUS, nothing else. */
    bool same = false;
    if ((st = status_unchanged(m, raw, name, known, &same, &out->now)) != MB_OK || same) {
        free(raw);
        if (!st)
            out->method = MB_CHANGES_UNCHANGED;
        return st;
    }
    bool qresync = m->has_qresync && below && known->highest_modseq != 0 &&
                   known->uidvalidity != 0 && known->uidvalidity <= UINT32_MAX &&
                   !strpbrk(raw, "\r\n");
    uint64_t modseq = 0;
    int r = MAILIMAP_NO_ERROR;
    const char *cmd = "EXAMINE (QRESYNC)";
    if (qresync) {
        bool bad = false;
        c.phase = PH_CHANGED;
        mailimap_set_msg_att_handler(m->imap, changes_att_handler, &c);
        r = examine_qresync(m, raw, (uint32_t)known->uidvalidity, known->highest_modseq,
                            (uint32_t)(below_end - 1), &modseq, &bad);
        if (m->imap)
            mailimap_set_msg_att_handler(m->imap, NULL, NULL);
        if (bad && c.n_changed == 0) {
            char text[200];
            server_text(m, text, sizeof text);
            MB_WARN(NULL, NULL, "imap %s:%d folder '%s': EXAMINE (QRESYNC) answered BAD (%s): "
                    "using CONDSTORE on this connection", m->host, m->port, name, text);
            m->has_qresync = qresync = false;
        }
    }
    if (!qresync) {
        cmd = m->has_condstore ? "EXAMINE (CONDSTORE)" : "EXAMINE";
        r = m->has_condstore ? mailimap_examine_condstore(m->imap, raw, &modseq)
                             : mailimap_examine(m->imap, raw);
    }
    free(raw);
    if (r != MAILIMAP_NO_ERROR) {
        flag_buf_free(&c.fl);
        return imap_fail(m, r, MB_ERR_NOTFOUND, cmd, name);
    }
    const struct mailimap_selection_info *sel = m->imap->imap_selection_info;
    if (!sel || sel->sel_uidvalidity == 0) {
        flag_buf_free(&c.fl);
        return mb_errf(MB_ERR_INVALID, "imap %s:%d folder '%s': %s: no UIDVALIDITY", m->host,
                       m->port, name, cmd);
    }
    mb_folder_state *now = &out->now;
    now->uidvalidity = sel->sel_uidvalidity;
    now->uidnext = sel->sel_uidnext;
    now->exists = sel->sel_exists;
    now->highest_modseq = modseq;
    if (!(m->folder = mb_strdup(name))) {
        flag_buf_free(&c.fl);
        return MB_ERR_NOMEM;
    }
    bool gone = false; /* a NO said messages went during a FETCH */
    if (now->uidvalidity != known->uidvalidity) {
        out->method = MB_CHANGES_RESET;
        goto done;
    }
    if (c.status != MB_OK)
        goto done;
    size_t nvanished = qresync ? earlier_vanished(&c, false) : 0;
    if (now->uidnext == known->uidnext && now->exists == known->exists && m->has_condstore &&
        known->highest_modseq != 0 && modseq == known->highest_modseq && c.n_changed == 0 &&
        nvanished == 0) {
        out->method = MB_CHANGES_UNCHANGED;
        goto done;
    }
    if (qresync) {
        out->method = MB_CHANGES_QRESYNC;
        earlier_vanished(&c, true);
    } else if (m->has_condstore && known->highest_modseq != 0 && modseq >= known->highest_modseq) {
        out->method = MB_CHANGES_CONDSTORE;
    } else {
        out->method = MB_CHANGES_FULL; /* modseq 0 or gone backwards: nothing to go by */
    }
    if (c.status != MB_OK)
        goto done;

    /* added: see the top of this section. */
    const uint64_t from = below ? below_end : 1;
    const uint32_t exists = now->exists;
    if (exists > 0 && (now->uidnext == 0 || now->uidnext > from)) {
        uint32_t s0 = 1;
        if (now->uidnext != 0 && now->uidnext - from < exists)
            s0 = exists - (uint32_t)(now->uidnext - from) + 1;
        c.uid_end = now->uidnext;
        if ((st = changes_windows(&c, PH_ADDED, s0, exists, &gone)) != MB_OK)
            goto done;
        if (c.status != MB_OK)
            goto done;
    }

    bool list = out->method == MB_CHANGES_FULL ||
                (out->method == MB_CHANGES_CONDSTORE &&
                 (gone || c.n_added > exists || exists - c.n_added != known->exists));
    if (list) {
        out->listed = true;
        /* The messages below known->uidnext are the first exists - added
         * (unless some went meanwhile: then up to the end, until one is
         * beyond). */
        uint32_t top = m->imap->imap_selection_info ? m->imap->imap_selection_info->sel_exists : 0;
        if (!gone && c.n_added <= exists && exists - c.n_added < top)
            top = exists - (uint32_t)c.n_added;
        if (below && top > 0)
            st = changes_windows(&c, PH_PRESENT, 1, top, NULL);
    } else if (out->method == MB_CHANGES_CONDSTORE && below && modseq != known->highest_modseq) {
        struct mailimap_fetch_type *ft = scan_fetch_type(false);
        struct mailimap_set *set =
            ft ? mailimap_set_new_interval(1, (uint32_t)(below_end - 1)) : NULL;
        if (!set) {
            if (ft)
                mailimap_fetch_type_free(ft);
            st = mb_errf(MB_ERR_NOMEM, "imap changes: out of memory");
            goto done;
        }
        c.phase = PH_CHANGED;
        r = fetch_streaming(m, true, set, ft, known->highest_modseq, changes_att_handler, &c);
        mailimap_set_free(set);
        mailimap_fetch_type_free(ft);
        char what[128], fbuf[256];
        snprintf(what, sizeof what, "UID FETCH 1:%llu (UID FLAGS) (CHANGEDSINCE %llu)",
                 (unsigned long long)(below_end - 1), (unsigned long long)known->highest_modseq);
        snprintf(fbuf, sizeof fbuf, "%s", name);
        note_expunges(m);
        if (r == MAILIMAP_ERROR_UID_FETCH && c.status == MB_OK && code_means_gone(resp_code(m))) {
            char text[200];
            server_text(m, text, sizeof text);
            MB_WARN(NULL, NULL, "imap %s:%d folder '%s': %s: NO [%s] %s", m->host, m->port, fbuf,
                    what, resp_code(m), text);
        } else if (r != MAILIMAP_NO_ERROR && c.status == MB_OK) {
            /* Not a verdict on the messages: try again later. */
            st = imap_fail(m, r, MB_ERR_NET, what, fbuf);
        }
    }

done:
    if (st != MB_OK || c.status != MB_OK)
        out->listed = false; /* not every message below was listed */
    else
        warn_bad_keywords(m, &c.fl);
    flag_buf_free(&c.fl);
    if (st != MB_OK)
        return st;
    MB_DEBUG(NULL, NULL, "imap %s:%d folder '%s': changes by %s: uidvalidity %llu uidnext %llu "
             "(was %llu) exists %u (was %u) modseq %llu (was %llu): %llu changed, %llu vanished "
             "ranges, %llu added, %s%llu listed", m->host, m->port, name,
             method_name[out->method], (unsigned long long)now->uidvalidity,
             (unsigned long long)now->uidnext, (unsigned long long)known->uidnext, now->exists,
             known->exists, (unsigned long long)now->highest_modseq,
             (unsigned long long)known->highest_modseq, (unsigned long long)c.n_changed,
             (unsigned long long)c.n_vanished, (unsigned long long)c.n_added,
             out->listed ? "" : "not ", (unsigned long long)c.n_present);
    return c.status;
}

/* ---- watch: IDLE (RFC 2177) ------------------------------------------------
 *
 * IDLE and DONE are written and their responses read here, line by line,
 * rather than with libetpan's mailimap_idle / mailimap_idle_done: its
 * mailimap_idle parses and throws away untagged responses that arrive before
 * the "+" continuation (an EXISTS sent just then would be lost), and its
 * parser reads only whole tagged responses, never the untagged lines a
 * server sends during IDLE. What a line announces is all a watcher needs:
 * EXISTS, EXPUNGE, VANISHED and FETCH (flags) mean the folder changed; OK
 * ("Still here" keepalives), FLAGS, RECENT and the like do not; BYE means the
 * server is closing. The tag is libetpan's own counter (the next command it
 * sends takes the next number), so the session stays in step.
 * Data libetpan has already buffered would not wake poll(): watch_read reads
 * until its buffer is empty. (A TLS record the TLS library has buffered but
 * not handed over is not seen either; servers send each announcement as its
 * own small record, and the next renewal reads everything anyway.) */

#define LITERAL_CHUNK 4096

enum { LINE_OTHER, LINE_CHANGE, LINE_BYE, LINE_CONTINUE, LINE_TAGGED_OK, LINE_TAGGED_FAIL };

/* What a server line (NUL-terminated, CRLF included) is. */
static int idle_line_kind(const mb_imap *m, const char *l) {
    char tag[24];
    snprintf(tag, sizeof tag, "%d ", m->imap->imap_tag);
    if (l[0] == '+')
        return LINE_CONTINUE;
    if (!strncmp(l, tag, strlen(tag)))
        return strncasecmp(l + strlen(tag), "OK", 2) == 0 ? LINE_TAGGED_OK : LINE_TAGGED_FAIL;
    if (strncmp(l, "* ", 2))
        return LINE_OTHER;
    l += 2;
    if (*l >= '0' && *l <= '9') { /* "* 12 EXISTS", "* 3 EXPUNGE", "* 4 FETCH (FLAGS ...)" */
        while (*l >= '0' && *l <= '9')
            l++;
        if (*l++ != ' ')
            return LINE_OTHER;
        static const char *const verbs[] = {"EXISTS", "EXPUNGE", "FETCH"};
        for (size_t i = 0; i < MB_ARRAY_LEN(verbs); i++) {
            size_t n = strlen(verbs[i]);
            if (!strncasecmp(l, verbs[i], n) && (l[n] == ' ' || l[n] == '\r' || l[n] == '\n'))
                return LINE_CHANGE;
        }
        return LINE_OTHER;
    }
    if (!strncasecmp(l, "VANISHED ", 9))
        return LINE_CHANGE;
    if (!strncasecmp(l, "BYE", 3))
        return LINE_BYE;
    return LINE_OTHER;
}

static mb_status idle_lost(mb_imap *m, const char *what) {
    mb_status st = mb_errf(MB_ERR_NET, "imap %s:%d folder '%s': %s: %s", m->host, m->port,
                           m->folder ? m->folder : "?", what,
                           etpan_err_str(m, MAILIMAP_ERROR_STREAM));
    drop_session(m);
    return st;
}

/* A server line that ended a watch (BYE, a refusal), as MB_ERR_NET naming
 * it, made safe to log; the session is dropped. */
static mb_status idle_ended(mb_imap *m, const char *what, const char *l) {
    char text[160];
    size_t i = 0;
    for (; l[i] && l[i] != '\r' && l[i] != '\n' && i + 1 < sizeof text; i++)
        text[i] = (l[i] >= 0x20 && l[i] < 0x7f) ? l[i] : '?';
    text[i] = 0;
    mb_status st = mb_errf(MB_ERR_NET, "imap %s:%d folder '%s': %s: server said '%s'", m->host,
                           m->port, m->folder ? m->folder : "?", what, text);
    drop_session(m);
    return st;
}

/* Read one server line (and any literal it carries, discarded) and say what it
 * is. A BYE is MB_ERR_NET: the server is closing the connection. */
static mb_status idle_read_line(mb_imap *m, const char *what, int *kind) {
    const char *l = mailimap_read_line(m->imap);
    if (!l || !*l)
        return idle_lost(m, what);
    *kind = idle_line_kind(m, l);
    if (*kind == LINE_BYE)
        return idle_ended(m, what, l);
    /* A literal, then the rest of the line, which may end in another. */
    for (long long n = mb_imap_line_literal(l, strlen(l)); n >= 0;
         n = mb_imap_line_literal(l, strlen(l))) {
        char sink[LITERAL_CHUNK];
        while (n > 0) {
            ssize_t r = mailstream_read(m->imap->imap_stream, sink,
                                        n < LITERAL_CHUNK ? (size_t)n : LITERAL_CHUNK);
            if (r <= 0)
                return idle_lost(m, what);
            n -= r;
        }
        if (!(l = mailimap_read_line(m->imap)))
            return idle_lost(m, what);
    }
    return MB_OK;
}

/* Write a command line ("<tag> IDLE", "DONE") and flush it. */
static mb_status idle_send(mb_imap *m, const char *line, const char *what) {
    size_t n = strlen(line);
    if (mailstream_write(m->imap->imap_stream, line, n) != (ssize_t)n ||
        mailstream_flush(m->imap->imap_stream) == -1)
        return idle_lost(m, what);
    return MB_OK;
}

/* Read lines until one of kind `until` (the "+" after IDLE, the tagged OK
 * after DONE), noting announced changes. Any other "+" or tagged answer (IDLE
 * or DONE answered NO or BAD) ends the session: MB_ERR_NET, try again on a
 * new connection. */
static mb_status idle_read_until(mb_imap *m, int until, const char *what, bool *changed) {
    for (;;) {
        int kind;
        mb_status st = idle_read_line(m, what, &kind);
        if (st)
            return st;
        if (kind == until)
            return MB_OK;
        if (kind == LINE_CHANGE)
            *changed = true;
        else if (kind != LINE_OTHER)
            return idle_ended(m, what, m->imap->imap_stream_buffer->str);
    }
}

static mb_status idle_begin(mb_imap *m, bool *changed) {
    char line[32];
    m->imap->imap_tag++; /* as libetpan numbers its commands */
    snprintf(line, sizeof line, "%d IDLE\r\n", m->imap->imap_tag);
    mb_imap_guard_idle(&m->guard, true); /* until the tagged answer after DONE */
    mb_status st = idle_send(m, line, "IDLE");
    if (!st) st = idle_read_until(m, LINE_CONTINUE, "IDLE", changed);
    if (!st)
        m->idling = true;
    return st;
}

static mb_status idle_end(mb_imap *m, bool *changed) {
    m->idling = false;
    mb_status st = idle_send(m, "DONE\r\n", "DONE");
    return st ? st : idle_read_until(m, LINE_TAGGED_OK, "DONE", changed);
}

static mb_status imap_watch(mb_source *s, const char *name, mb_watch_info *out) {
    mb_imap *m = (mb_imap *)s;
    memset(out, 0, sizeof *out);
    out->fd = -1;
    mb_status st = need_session(m, "IDLE", false);
    if (st)
        return st;
    if (!mailimap_has_idle(m->imap))
        return mb_errf(MB_ERR_CONFIG, "imap %s:%d: the server does not offer IDLE", m->host,
                       m->port);
    if ((st = imap_open_folder(s, name, &out->st)) != MB_OK)
        return st;
    if ((st = idle_begin(m, &out->changed)) != MB_OK)
        return st;
    out->fd = mailimap_idle_get_fd(m->imap);
    MB_DEBUG(NULL, NULL, "imap %s:%d folder '%s': idling", m->host, m->port, name);
    return MB_OK;
}

static mb_status imap_watch_read(mb_source *s, bool renew, mb_watch_info *out) {
    mb_imap *m = (mb_imap *)s;
    out->changed = false;
    out->fd = -1;
    if (!m->imap || !m->idling)
        return mb_errf(MB_ERR_NET, "imap %s:%d: not watching", m->host, m->port);
    mb_status st = MB_OK;
    if (renew) {
        st = idle_end(m, &out->changed);
        if (!st) st = idle_begin(m, &out->changed);
    } else {
        /* What woke poll, then whatever else is already buffered. */
        int fd = mailimap_idle_get_fd(m->imap);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        bool ready = m->imap->imap_stream->read_buffer_len > 0 || poll(&p, 1, 0) > 0;
        while (!st && ready) {
            int kind;
            st = idle_read_line(m, "IDLE", &kind);
            if (!st && kind == LINE_CHANGE)
                out->changed = true;
            else if (!st && kind != LINE_OTHER) /* "+", or a tagged answer: out of step */
                st = idle_ended(m, "IDLE", m->imap->imap_stream_buffer->str);
            ready = !st && m->imap->imap_stream->read_buffer_len > 0;
        }
    }
    if (!st)
        out->fd = mailimap_idle_get_fd(m->imap);
    return st;
}

static mb_status imap_unwatch(mb_source *s, mb_watch_info *out) {
    mb_imap *m = (mb_imap *)s;
    out->changed = false;
    out->fd = -1;
    if (!m->imap || !m->idling)
        return MB_OK;
    return idle_end(m, &out->changed);
}

/* ---- seeding helpers ------------------------------------------------------ */

mb_status mb_imap_append(mb_source *s, const char *folder, const char *data, size_t len,
                         const char *const *flags, size_t nflags, int64_t internal_date) {
    mb_imap *m = (mb_imap *)s;
    mb_status st;
    if ((st = need_session(m, "APPEND", false)) != MB_OK)
        return st;
    struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
    if (!fl)
        return mb_errf(MB_ERR_NOMEM, "imap append: out of memory");
    for (size_t i = 0; i < nflags; i++) {
        const char *f = flags[i];
        struct mailimap_flag *x = NULL;
        if (strcasecmp(f, "\\Seen") == 0)
            x = mailimap_flag_new_seen();
        else if (strcasecmp(f, "\\Flagged") == 0)
            x = mailimap_flag_new_flagged();
        else if (strcasecmp(f, "\\Answered") == 0)
            x = mailimap_flag_new_answered();
        else if (strcasecmp(f, "\\Draft") == 0)
            x = mailimap_flag_new_draft();
        else if (strcasecmp(f, "\\Deleted") == 0)
            x = mailimap_flag_new_deleted();
        else if (f[0] != '\\' && f[0]) {
            char *kw = strdup(f);
            x = kw ? mailimap_flag_new_flag_keyword(kw) : NULL;
            if (!x)
                free(kw);
        } else {
            mailimap_flag_list_free(fl);
            return mb_errf(MB_ERR_INVALID, "imap append: unsupported flag '%s'", f);
        }
        if (!x || mailimap_flag_list_add(fl, x) != MAILIMAP_NO_ERROR) {
            if (x)
                mailimap_flag_free(x);
            mailimap_flag_list_free(fl);
            return mb_errf(MB_ERR_NOMEM, "imap append: out of memory");
        }
    }
    struct mailimap_date_time *dt = NULL;
    if (internal_date) {
        time_t t = (time_t)internal_date;
        struct tm tm;
        if (!gmtime_r(&t, &tm)) {
            mailimap_flag_list_free(fl);
            return mb_errf(MB_ERR_INVALID, "imap append: bad date %lld", (long long)internal_date);
        }
        dt = mailimap_date_time_new(tm.tm_mday, tm.tm_mon + 1, tm.tm_year + 1900, tm.tm_hour,
                                    tm.tm_min, tm.tm_sec, 0);
        if (!dt) {
            mailimap_flag_list_free(fl);
            return mb_errf(MB_ERR_NOMEM, "imap append: out of memory");
        }
    }
    int r = mailimap_append(m->imap, folder, fl, dt, data, len);
    mailimap_flag_list_free(fl);
    if (dt)
        mailimap_date_time_free(dt);
    if (r != MAILIMAP_NO_ERROR)
        return imap_fail(m, r, MB_ERR_INVALID, "APPEND", folder);
    return MB_OK;
}

mb_status mb_imap_create_folder(mb_source *s, const char *folder) {
    mb_imap *m = (mb_imap *)s;
    mb_status st;
    if ((st = need_session(m, "CREATE", false)) != MB_OK)
        return st;
    int r = mailimap_create(m->imap, folder);
    if (r == MAILIMAP_ERROR_CREATE) {
        clist *list = NULL;
        int r2 = mailimap_list(m->imap, "", folder, &list);
        bool exists = r2 == MAILIMAP_NO_ERROR && list && clist_count(list) > 0;
        if (list)
            mailimap_list_result_free(list);
        if (exists)
            return MB_OK;
    }
    if (r != MAILIMAP_NO_ERROR)
        return imap_fail(m, r, MB_ERR_INVALID, "CREATE", folder);
    return MB_OK;
}

/* ---- object --------------------------------------------------------------- */

static void imap_free(mb_source *s) {
    mb_imap *m = (mb_imap *)s;
    /* Polite; a dead server just times out. Not during IDLE, where the server
     * takes nothing but DONE: closing is enough (and a watcher holding many
     * connections stops without a round trip each). */
    if (m->imap && !m->idling)
        mailimap_logout(m->imap);
    drop_session(m);
    free(m->host);
    free(m->user);
    if (m->password) {
        /* Do not leave the secret lying in freed heap. */
        memset(m->password, 0, strlen(m->password));
        free(m->password);
    }
    if (m->token) {
        memset(m->token, 0, strlen(m->token));
        free(m->token);
    }
    free(m->ca_file);
    free(m->tls_name);
    free(m);
}

static const struct mb_source_ops imap_ops = {
    .kind = "imap",
    .connect = imap_connect,
    .list_folders = imap_list_folders,
    .open_folder = imap_open_folder,
    .scan = imap_scan,
    .fetch = imap_fetch,
    .changes = imap_changes,
    .unchanged = imap_unchanged,
    .watch = imap_watch,
    .watch_read = imap_watch_read,
    .unwatch = imap_unwatch,
    .free = imap_free,
};

static bool dup_opt(const char *in, char **out) {
    *out = NULL;
    if (!in)
        return true;
    *out = strdup(in);
    return *out != NULL;
}

mb_status mb_source_imap_new(const mb_source_cfg *cfg, mb_source **out) {
    *out = NULL;
    if (!cfg->host || !*cfg->host)
        return mb_errf(MB_ERR_CONFIG, "imap: host is empty");
    if (!cfg->user || !*cfg->user)
        return mb_errf(MB_ERR_CONFIG, "imap %s: user is empty", cfg->host);
    if (!cfg->password && !cfg->xoauth2_token)
        return mb_errf(MB_ERR_CONFIG, "imap %s: neither password nor XOAUTH2 token", cfg->host);
    if (cfg->tls != MB_TLS_IMAPS && cfg->tls != MB_TLS_STARTTLS && cfg->tls != MB_TLS_PLAIN)
        return mb_errf(MB_ERR_CONFIG, "imap %s: unknown tls mode %d", cfg->host, cfg->tls);
    if (cfg->port < 0 || cfg->port > 65535)
        return mb_errf(MB_ERR_CONFIG, "imap %s: port %d out of range", cfg->host, cfg->port);
    if (cfg->timeout_s < 0)
        return mb_errf(MB_ERR_CONFIG, "imap %s: negative timeout", cfg->host);
    if (cfg->tls == MB_TLS_PLAIN && !cfg->allow_plain_remote && !host_is_loopback(cfg->host))
        return mb_errf(MB_ERR_CONFIG,
                       "imap %s: plain text (no TLS) is only allowed to loopback hosts", cfg->host);
    mb_imap *m = calloc(1, sizeof *m);
    if (!m)
        return mb_errf(MB_ERR_NOMEM, "imap: out of memory");
    m->base.ops = &imap_ops;
    m->tls = cfg->tls;
    m->port = cfg->port ? cfg->port : cfg->tls == MB_TLS_IMAPS ? 993 : 143;
    m->timeout_s = cfg->timeout_s ? cfg->timeout_s : DEFAULT_TIMEOUT_S;
    m->limits = (mb_imap_limits){
        .max_line = MB_IMAP_MAX_LINE,
        .max_literal = cfg->max_literal ? cfg->max_literal : MB_IMAP_MAX_LITERAL,
        .grace_ms = m->timeout_s * 1000LL,
        .min_rate = MB_IMAP_MIN_RATE,
    };
    m->allow_plain_remote = cfg->allow_plain_remote;
    if (!dup_opt(cfg->host, &m->host) || !dup_opt(cfg->user, &m->user) ||
        !dup_opt(cfg->password, &m->password) || !dup_opt(cfg->xoauth2_token, &m->token) ||
        !dup_opt(cfg->ca_file && *cfg->ca_file ? cfg->ca_file : NULL, &m->ca_file) ||
        !dup_opt(cfg->tls_name && *cfg->tls_name ? cfg->tls_name : NULL, &m->tls_name)) {
        imap_free(&m->base);
        return mb_errf(MB_ERR_NOMEM, "imap: out of memory");
    }
    *out = &m->base;
    return MB_OK;
}
