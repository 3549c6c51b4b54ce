/* idle.h — mailbus-idle, the push watcher: it keeps each watched account's
 * INBOX under IMAP IDLE and asks for a sync of it when the server announces a
 * change. It watches; it never syncs (the scan stage does, on the same
 * <p>.cmd.sync.start command the CLI sends).
 *
 *   watcher.c  the one thread: a poll() loop over every watched connection —
 *              connect, IDLE, read what the server announces, renew, reconnect
 *   roster.c   which accounts this copy watches: IMAP accounts whose first
 *              import completed, each under the lease "idle:<account id>"
 *   trigger.c  a change pending on an account becomes one sync request,
 *              retried while the account has another active job
 *
 * Everything runs on the main thread; nothing here is shared across threads. */
#ifndef MB_STAGE_IDLE_H
#define MB_STAGE_IDLE_H

#include "sources/source.h"
#include "stages/common/lease.h"
#include "stages/common/stage.h"

#include <stdbool.h>
#include <stdint.h>

/* One account this copy holds the lease of. */
typedef struct {
    uint64_t id;
    char *name;                    /* owned */
    char lease[MB_LEASE_NAME_MAX]; /* "idle:<id>" */
    bool seen;                     /* a roster pass's mark: still ours */
    char *folder;                  /* the INBOX (role inbox in folders, else "INBOX"),
                                      looked up at each connect; owned */
    /* The connection. */
    mb_source *src;                /* owned; NULL while not connected */
    int fd;                        /* poll() it while watching; else -1 */
    int64_t watching_since_ms;     /* monotonic; 0 while not watching */
    int64_t renew_at_ms;           /* end and restart IDLE then */
    int64_t connect_at_ms;         /* next attempt, while src is NULL */
    int64_t backoff_ms;            /* the wait after the next failure */
    /* A change announced and no sync accepted since (trigger.c). */
    bool pending;
    int64_t sync_at_ms;            /* next request, while pending */
    bool refusal_logged;           /* "has an active job" said once per pending change */
} mb_idle_acct;

typedef struct {
    mb_stage *st;                  /* borrowed: its db, bus and credential key */
    size_t max_accounts;           /* MAILBUS_IDLE_MAX_ACCOUNTS */
    int64_t renew_ms;              /* MAILBUS_IDLE_RENEW_S, in ms */
    int64_t roster_every_ms;       /* a roster pass (and lease renewal) this often */
    mb_idle_acct **acct;           /* owned, each owned */
    size_t n, cap;
    int64_t roster_at_ms;          /* next roster pass */
    int64_t roster_ok_ms;          /* last successful one: the leases held until + TTL */
    bool roster_failing;           /* logged once per outage */
    int64_t bus_quiet_until_ms;    /* nobody answered a request: ask nobody until then */
} mb_idle;

/* watcher.c */
/* Run until mb_bus_stopping(); MB_OK then. */
mb_status mb_idle_run(mb_idle *w);
/* Close the account's connection (a lost lease, a removed account, a stop);
 * it is connected again at connect_at_ms unless it leaves the roster. */
void mb_idle_disconnect(mb_idle_acct *a);

/* roster.c */
/* One pass: list the accounts to watch, take or renew their leases (up to
 * max_accounts), add the new ones, drop those no longer ours. A failure
 * keeps the current set until the leases may have expired, then drops it. */
void mb_idle_roster(mb_idle *w);
/* Drop every account (stop): connections closed, leases released. */
void mb_idle_roster_clear(mb_idle *w);

/* trigger.c */
/* A change was announced (or found at connect) on a's INBOX. */
void mb_idle_changed(mb_idle *w, mb_idle_acct *a, const char *how);
/* Ask for the syncs that are due; returns the earliest time another is due
 * (INT64_MAX: none). */
int64_t mb_idle_trigger(mb_idle *w);

#endif
