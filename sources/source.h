/* source.h — the one interface scan and fetch use to read a mailbox, whatever
 * the account type (like isync's struct driver). A backend (sources/imap/,
 * sources/gmail/) embeds `mb_source` as the first member of its own struct and
 * fills in `ops`; callers only ever go through the mb_source_* wrappers below.
 *
 * Life cycle:  new (backend-specific) -> connect -> list_folders / open_folder
 *              or changes -> scan / fetch (on the open folder) -> free;
 *              or connect -> watch -> watch_read ... (push) -> free.
 * After MB_ERR_NET the connection is gone: call connect (and open_folder)
 * again to retry; every other error leaves the connection usable.
 *
 * Error classes every backend maps to:
 *   MB_ERR_AUTH     credentials refused (not retryable without new credentials)
 *   MB_ERR_NET      connection refused/dropped, timeout, TLS failure (retryable)
 *   MB_ERR_NOTFOUND folder does not exist (any more)
 *   MB_ERR_INVALID  the server sent something we cannot parse, or bad arguments
 *   MB_ERR_CONFIG   the configuration cannot work (e.g. plain text to a remote host)
 * The message (mb_err_last) names the server host:port, the folder and the command. */
#ifndef MB_SOURCE_H
#define MB_SOURCE_H

#include "util/mb.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct mb_source mb_source;

/* One folder as listed by the server. All strings owned by the array
 * (free with mb_folder_info_free). */
typedef struct {
    char *name;      /* the server's own name (IMAP: modified UTF-7), in a form that is
                        always valid UTF-8 (sources/imap/imap.h): use it in calls */
    char *display;   /* name decoded to UTF-8, for people and the database; distinct
                        names have distinct display names */
    char *role;      /* "inbox","sent","drafts","trash","junk","archive","all","flagged" or NULL */
    char delimiter;  /* hierarchy separator, 0 if the server has none */
    bool noselect;   /* a container that holds no messages: do not open it */
    char *problem;   /* why name/display had to be escaped (record it on the job), or NULL */
} mb_folder_info;

/* The state of an opened folder. highest_modseq is 0 when the server has no
 * CONDSTORE (or the folder has no mod-sequences). */
typedef struct {
    uint64_t uidvalidity, uidnext, highest_modseq;
    uint32_t exists;
} mb_folder_state;

/* One message's metadata, valid only during the scan callback (the strings
 * belong to the backend; copy what you keep). Flags are IMAP-style
 * ("\\Seen", "\\Flagged", "$Forwarded", ...). */
typedef struct {
    uint64_t uid, size;
    int64_t internal_date; /* unix seconds, UTC */
    const char *const *flags;
    size_t nflags;
} mb_msg_info;

enum { MB_TLS_IMAPS = 0, MB_TLS_STARTTLS = 1, MB_TLS_PLAIN = 2 };

/* Connection settings; strings are copied by the backend's _new. */
typedef struct {
    const char *host;
    int port;                  /* 0: 993 for imaps, 143 otherwise */
    int tls;                   /* MB_TLS_* */
    const char *user;
    const char *password;      /* LOGIN, or ...            */
    const char *xoauth2_token; /* ... AUTHENTICATE XOAUTH2 when non-NULL */
    const char *ca_file;       /* PEM trust anchors; NULL: the system store */
    const char *tls_name;      /* name the certificate must carry; NULL: host */
    bool allow_plain_remote;   /* MB_TLS_PLAIN to a non-loopback host */
    int timeout_s;             /* connect and per-read timeout; 0: 60 s */
    uint64_t max_literal;      /* largest literal (message) the server may send; 0: 256 MiB */
} mb_source_cfg;

/* Callbacks return MB_OK to go on; any other status stops the operation
 * after the current server command has been read to its end (so the
 * connection stays usable) and is returned by scan/fetch. */
typedef mb_status (*mb_scan_cb)(void *ctx, const mb_msg_info *msg);
/* data/len: the message's exact raw bytes, valid only during the call. */
typedef mb_status (*mb_fetch_cb)(void *ctx, uint64_t uid, const char *data, size_t len);

/* What changed in one folder since a sync left it in `known` (changes below).
 * Callbacks (each may be NULL; return MB_OK to go on, as mb_scan_cb):
 *   changed  a message with uid < known->uidnext whose flags may have changed
 *            since known->highest_modseq (QRESYNC / CONDSTORE), with its
 *            current flags; size and internal_date are 0.
 *   present  every message with uid < known->uidnext that the server still
 *            holds, with its current flags (size, internal_date 0), in
 *            ascending UID order, streamed in windows: the listing of the
 *            UID-set comparison. Only when out->listed.
 *   vanished UIDs [lo, hi] (lo <= hi, both < known->uidnext) expunged since
 *            known->highest_modseq (QRESYNC VANISHED (EARLIER)). A UID the
 *            caller does not hold may be named: ignore it.
 *   added    every message with uid >= known->uidnext, as scan reports it
 *            (size, internal date, flags).
 * A message is reported to at most one of changed/present, and to added
 * only if uid >= known->uidnext. */
typedef mb_status (*mb_vanished_cb)(void *ctx, uint64_t lo, uint64_t hi);
typedef struct {
    mb_scan_cb changed, present, added;
    mb_vanished_cb vanished;
    void *ctx;
} mb_changes_cb;

/* How changes found them (for history and logs). */
enum {
    MB_CHANGES_UNCHANGED = 0, /* uidnext, exists and highest_modseq equal known: nothing read */
    MB_CHANGES_QRESYNC,       /* SELECT (QRESYNC ...): changed + vanished, then added */
    MB_CHANGES_CONDSTORE,     /* CHANGEDSINCE: changed; present only if messages went */
    MB_CHANGES_FULL,          /* no mod-sequences: present (flags of all), added */
    MB_CHANGES_RESET,         /* UIDVALIDITY differs: nothing reported, scan the folder */
};

typedef struct {
    int method;           /* MB_CHANGES_* */
    mb_folder_state now;  /* the folder's state as opened (what to remember) */
    bool listed;          /* present was called for every message below known->uidnext:
                             anything the caller holds there and was not listed is gone */
} mb_changes_info;

/* Push: watching one open folder for changes (watch, watch_read, unwatch
 * below). */
typedef struct {
    int fd;             /* poll() it for POLLIN while watching; -1 when not */
    bool changed;       /* the server announced a change of the folder since the
                           last call: messages added or expunged, flags changed */
    mb_folder_state st; /* watch only: the folder as opened */
} mb_watch_info;

struct mb_source_ops {
    const char *kind; /* "imap", "gmail" */
    /* Connect and log in (again, after MB_ERR_NET). */
    mb_status (*connect)(mb_source *s);
    /* Every folder, with its role. *out is owned by the caller: mb_folder_info_free. */
    mb_status (*list_folders)(mb_source *s, mb_folder_info **out, size_t *n);
    /* Open a folder read-only; scan and fetch work on it. */
    mb_status (*open_folder)(mb_source *s, const char *name, mb_folder_state *st);
    /* Every message of the open folder whose internal date is in
     * [since, until) (unix seconds, 0 = unbounded), one callback each, in
     * the server's order, streaming: metadata is not all held in memory. */
    mb_status (*scan)(mb_source *s, int64_t since, int64_t until, mb_scan_cb cb, void *ctx);
    /* Raw bytes of the given UIDs of the open folder, never marking them
     * read. A UID that no longer exists gets no callback (compare). */
    mb_status (*fetch)(mb_source *s, const uint64_t *uids, size_t n, mb_fetch_cb cb, void *ctx);
    /* Open the folder (as open_folder: it stays open for scan and fetch) and
     * report what changed since known, by the cheapest means the server
     * offers (mb_changes_cb above). known->exists is how many messages below
     * known->uidnext the caller holds: when the server's count says none of
     * them went, no listing is needed. With out->method MB_CHANGES_RESET the
     * caller scans the folder again (scan works on it). Memory stays bounded
     * whatever the folder's size. */
    mb_status (*changes)(mb_source *s, const char *name, const mb_folder_state *known,
                         const mb_changes_cb *cb, mb_changes_info *out);
    /* Whether the folder is unchanged since known, told without opening it
     * (IMAP: one STATUS, meaningful with CONDSTORE: any change raises
     * HIGHESTMODSEQ). *unchanged false: it changed, or the server cannot tell
     * cheaply (then changes finds out); *now: the state when unchanged. May
     * be NULL: a backend without a cheap check (callers use changes). */
    mb_status (*unchanged)(mb_source *s, const char *name, const mb_folder_state *known,
                           bool *unchanged, mb_folder_state *now);
    /* Push (all three NULL: this backend cannot watch; callers poll with
     * changes). watch opens the folder read-only, as open_folder, and starts
     * waiting for the server to announce changes to it (IMAP: IDLE, RFC
     * 2177); out->st is the folder's state as opened, out->fd the descriptor
     * to poll. While watching, the connection serves nothing else (other
     * operations fail until unwatch). MB_ERR_CONFIG: this server cannot be
     * watched (no IDLE).
     * watch_read takes in what the server sent: call it when out->fd is
     * readable (it reads only what has arrived, waiting at most for the rest
     * of a line the server started) and sets out->changed. With renew it
     * also ends and restarts the wait, which a server times out (IMAP: after
     * 30 minutes or more): renew well within that.
     * unwatch ends the wait (out->changed: what arrived meanwhile); the
     * connection stays usable. Freeing a watching source just closes it. */
    mb_status (*watch)(mb_source *s, const char *name, mb_watch_info *out);
    mb_status (*watch_read)(mb_source *s, bool renew, mb_watch_info *out);
    mb_status (*unwatch)(mb_source *s, mb_watch_info *out);
    void (*free)(mb_source *s);
};

struct mb_source {
    const struct mb_source_ops *ops;
};

static inline mb_status mb_source_connect(mb_source *s) { return s->ops->connect(s); }
static inline mb_status mb_source_list_folders(mb_source *s, mb_folder_info **out, size_t *n) {
    return s->ops->list_folders(s, out, n);
}
static inline mb_status mb_source_open_folder(mb_source *s, const char *name, mb_folder_state *st) {
    return s->ops->open_folder(s, name, st);
}
static inline mb_status mb_source_scan(mb_source *s, int64_t since, int64_t until, mb_scan_cb cb,
                                       void *ctx) {
    return s->ops->scan(s, since, until, cb, ctx);
}
static inline mb_status mb_source_fetch(mb_source *s, const uint64_t *uids, size_t n,
                                        mb_fetch_cb cb, void *ctx) {
    return s->ops->fetch(s, uids, n, cb, ctx);
}
static inline mb_status mb_source_changes(mb_source *s, const char *name,
                                          const mb_folder_state *known, const mb_changes_cb *cb,
                                          mb_changes_info *out) {
    return s->ops->changes(s, name, known, cb, out);
}
static inline mb_status mb_source_unchanged(mb_source *s, const char *name,
                                            const mb_folder_state *known, bool *unchanged,
                                            mb_folder_state *now) {
    *unchanged = false;
    return s->ops->unchanged ? s->ops->unchanged(s, name, known, unchanged, now) : MB_OK;
}
static inline bool mb_source_can_watch(const mb_source *s) { return s->ops->watch != NULL; }
static inline mb_status mb_source_watch(mb_source *s, const char *name, mb_watch_info *out) {
    if (!s->ops->watch)
        return mb_errf(MB_ERR_CONFIG, "%s source: cannot watch a folder", s->ops->kind);
    return s->ops->watch(s, name, out);
}
static inline mb_status mb_source_watch_read(mb_source *s, bool renew, mb_watch_info *out) {
    if (!s->ops->watch_read)
        return mb_errf(MB_ERR_CONFIG, "%s source: cannot watch a folder", s->ops->kind);
    return s->ops->watch_read(s, renew, out);
}
static inline mb_status mb_source_unwatch(mb_source *s, mb_watch_info *out) {
    if (!s->ops->unwatch)
        return mb_errf(MB_ERR_CONFIG, "%s source: cannot watch a folder", s->ops->kind);
    return s->ops->unwatch(s, out);
}
/* NULL is fine. */
static inline void mb_source_free(mb_source *s) {
    if (s)
        s->ops->free(s);
}

/* Free an array returned by list_folders (NULL is fine). */
static inline void mb_folder_info_free(mb_folder_info *f, size_t n) {
    if (!f)
        return;
    for (size_t i = 0; i < n; i++) {
        free(f[i].name);
        free(f[i].display);
        free(f[i].role);
        free(f[i].problem);
    }
    free(f);
}

#endif
