/* watcher.c — the one thread of mailbus-idle (idle.h): a poll() loop over
 * every watched connection, so one process holds many IDLE connections.
 *
 * Each pass: the roster (every few seconds), connections that are due (a new
 * account, a reconnect after its backoff), IDLE renewals that are due, sync
 * requests that are due (trigger.c), then one poll() on every watched socket
 * until the next of those is due (at most 500 ms, so a stop is noticed).
 * A readable socket is read at once (mb_source_watch_read); a change it
 * announces makes a sync pending.
 *
 * Connecting (TCP, TLS, LOGIN, EXAMINE, IDLE) and renewing (DONE, IDLE) block
 * this thread for round trips, each bounded by the source's timeout; so that
 * announcements on held connections are not kept waiting behind a start-up
 * of thousands of accounts, a pass spends at most BLOCKING_BUDGET_MS on them
 * and the rest wait for the next pass (poll() is then not allowed to sleep).
 * Renewals are due at a random point of the last tenth of the interval, so
 * accounts connected together do not all renew in the same pass.
 *
 * On (re)connect the INBOX's state as EXAMINE reports it (UIDVALIDITY,
 * UIDNEXT, message count, HIGHESTMODSEQ) is compared with what the last
 * completed job left in `folders`: a change made while nobody watched (before
 * the first connect, during a drop) makes a sync pending too, so nothing
 * that arrived in the gap waits for the scheduler.
 *
 * Connection slots (sources/connlimit.h): the IDLE connection takes none.
 * The slots bound transfers running at once: per host (16 by default) they
 * would cap a copy at 16 watched accounts of one provider (every account at
 * imap.gmail.com shares one host), and per account one of the 4 would be held
 * for hours, slowing every import and sync of the account by a quarter. An
 * idle connection costs the server next to nothing; what it must respect is
 * the server's limit of connections per user (Dovecot's
 * mail_max_userip_connections, 10 by default; Gmail 15), and a watched
 * account uses at most MAILBUS_IMAP_MAX_CONN_PER_ACCOUNT + 1 (5) of them. */
#include "sources/account.h"
#include "stages/idle/idle.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCKING_BUDGET_MS 250
#define POLL_MAX_MS 500
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 60000
#define STABLE_MS 60000     /* a watch that lasted this long starts the backoff afresh */
#define AUTH_RETRY_MS 600000 /* credentials refused: they may be fixed (account add) */
#define SKIP_MS 3600000     /* cannot be watched (no IDLE): asked again after an hour */

void mb_idle_disconnect(mb_idle_acct *a)
{
    mb_source_free(a->src); /* while idling: just closed */
    a->src = NULL;
    a->fd = -1;
    a->watching_since_ms = 0;
}

/* The connection failed or was dropped in `what`: close it and connect
 * again after the backoff (0.5 s doubling to 60 s; afresh after a watch that
 * lasted). An account that cannot be watched at all is left for an hour. */
static void failed(mb_idle_acct *a, mb_status s, const char *what)
{
    int64_t now = mb_mono_ms();
    if (!a->backoff_ms || (a->watching_since_ms && now - a->watching_since_ms >= STABLE_MS))
        a->backoff_ms = BACKOFF_MIN_MS;
    mb_idle_disconnect(a);
    int64_t wait = a->backoff_ms;
    a->backoff_ms = a->backoff_ms * 2 < BACKOFF_MAX_MS ? a->backoff_ms * 2 : BACKOFF_MAX_MS;
    if (s == MB_ERR_CONFIG) {
        a->connect_at_ms = now + SKIP_MS;
        MB_WARN(NULL, a->name, "not watched: %s; left to the scheduler (tried again in %d min)",
                mb_err_last(), SKIP_MS / 60000);
        return;
    }
    if (s == MB_ERR_AUTH)
        wait = AUTH_RETRY_MS;
    a->connect_at_ms = now + wait;
    MB_WARN(NULL, a->name, "%s: %s; connecting again in %" PRId64 " ms", what, mb_err_last(),
            wait);
}

/* a->folder: the account's INBOX (role inbox, else the folder named INBOX,
 * else "INBOX"), and the state the last completed job left for it (*stored:
 * whether there is one). */
static mb_status inbox_state(mb_db *db, mb_idle_acct *a, mb_folder_state *known, bool *stored)
{
    char id[24];
    const char *p[] = {mb_u64s(id, a->id)};
    PGresult *r;
    memset(known, 0, sizeof *known);
    *stored = false;
    mb_status s = mb_db_query(db,
        "SELECT name, uidvalidity, uidnext, message_count, coalesce(highest_modseq, 0) "
        "FROM folders WHERE account_id = $1::bigint AND deleted_at IS NULL "
        "AND (role = 'inbox' OR upper(name) = 'INBOX') "
        "ORDER BY role = 'inbox' DESC NULLS LAST, id LIMIT 1", 1, p, &r);
    if (s)
        return mb_err_wrap(s, "reading the INBOX's state");
    const char *name = PQntuples(r) ? PQgetvalue(r, 0, 0) : "INBOX";
    char *f = strdup(name);
    if (!f) {
        PQclear(r);
        return mb_errf(MB_ERR_NOMEM, "folder name");
    }
    free(a->folder);
    a->folder = f;
    uint64_t count = 0;
    if (PQntuples(r) && !PQgetisnull(r, 0, 1) && !PQgetisnull(r, 0, 2) &&
        !mb_parse_u64(PQgetvalue(r, 0, 1), UINT64_MAX, &known->uidvalidity) &&
        !mb_parse_u64(PQgetvalue(r, 0, 2), UINT64_MAX, &known->uidnext) &&
        !mb_parse_u64(PQgetvalue(r, 0, 3), UINT32_MAX, &count) &&
        !mb_parse_u64(PQgetvalue(r, 0, 4), UINT64_MAX, &known->highest_modseq)) {
        known->exists = (uint32_t)count;
        *stored = true;
    }
    PQclear(r);
    return MB_OK;
}

/* How the folder as opened differs from the stored state, or NULL if not. */
static const char *differs(const mb_folder_state *k, const mb_folder_state *now, char *out,
                           size_t cap)
{
    if (k->uidvalidity != now->uidvalidity)
        snprintf(out, cap, "uidvalidity %" PRIu64 " -> %" PRIu64, k->uidvalidity, now->uidvalidity);
    else if (k->uidnext != now->uidnext)
        snprintf(out, cap, "uidnext %" PRIu64 " -> %" PRIu64 " since the last job", k->uidnext,
                 now->uidnext);
    else if (k->exists != now->exists)
        snprintf(out, cap, "%u -> %u messages since the last job", k->exists, now->exists);
    else if (k->highest_modseq && now->highest_modseq && k->highest_modseq != now->highest_modseq)
        snprintf(out, cap, "highestmodseq %" PRIu64 " -> %" PRIu64 " since the last job",
                 k->highest_modseq, now->highest_modseq);
    else
        return NULL;
    return out;
}

/* When to renew a watch begun or renewed at `now` (see the top). */
static int64_t renew_at(const mb_idle *w, int64_t now)
{
    static uint64_t x = 0;
    if (!x)
        x = (uint64_t)now * 0x9E3779B97F4A7C15ull | 1;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
    int64_t tenth = w->renew_ms / 10;
    return now + w->renew_ms - (tenth ? (int64_t)(x % (uint64_t)tenth) : 0);
}

static void connect_one(mb_idle *w, mb_idle_acct *a)
{
    mb_account acc = {0};
    char *secret = NULL, id[24];
    mb_folder_state known;
    bool stored = false;
    mb_watch_info wi;
    mb_status s = mb_account_load(w->st->db, &w->st->keys, mb_u64s(id, a->id), &acc, &secret);
    if (!s) s = mb_account_source(&acc, secret, &a->src);
    mb_account_secret_free(secret);
    if (!s && !mb_source_can_watch(a->src))
        s = mb_errf(MB_ERR_CONFIG, "a %s account cannot be watched", acc.kind);
    if (!s) s = inbox_state(w->st->db, a, &known, &stored);
    if (!s) s = mb_source_connect(a->src);
    if (!s) s = mb_source_watch(a->src, a->folder, &wi);
    mb_account_free(&acc);
    if (s) {
        failed(a, s, "connecting");
        return;
    }
    a->fd = wi.fd;
    a->watching_since_ms = mb_mono_ms();
    a->renew_at_ms = renew_at(w, a->watching_since_ms);
    MB_INFO(NULL, a->name, "idling on %s (uidvalidity %" PRIu64 ", uidnext %" PRIu64
            ", %u messages)", a->folder, wi.st.uidvalidity, wi.st.uidnext, wi.st.exists);
    char how[160];
    if (wi.changed)
        mb_idle_changed(w, a, "announced as IDLE began");
    else if (stored && differs(&known, &wi.st, how, sizeof how))
        mb_idle_changed(w, a, how);
}

/* The socket is readable (renew: or the IDLE is due for renewal). */
static void read_one(mb_idle *w, mb_idle_acct *a, bool renew)
{
    mb_watch_info wi;
    mb_status s = mb_source_watch_read(a->src, renew, &wi);
    if (s) {
        failed(a, s, renew ? "renewing IDLE" : "watching");
        return;
    }
    a->fd = wi.fd;
    if (renew) {
        a->renew_at_ms = renew_at(w, mb_mono_ms());
        MB_DEBUG(NULL, a->name, "IDLE on %s renewed", a->folder);
    }
    if (wi.changed)
        mb_idle_changed(w, a, renew ? "announced at the renewal" : "announced");
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

mb_status mb_idle_run(mb_idle *w)
{
    struct pollfd *pfd = NULL;
    mb_idle_acct **who = NULL;
    size_t pcap = 0;
    while (!mb_bus_stopping()) {
        if (mb_mono_ms() >= w->roster_at_ms) {
            mb_idle_roster(w);
            w->roster_at_ms = mb_mono_ms() + w->roster_every_ms;
        }
        /* Connections, then renewals, that are due, within the budget. */
        int64_t start = mb_mono_ms(), next = w->roster_at_ms;
        for (size_t i = 0; i < 2 * w->n && !mb_bus_stopping(); i++) {
            mb_idle_acct *a = w->acct[i % w->n];
            bool connect = i < w->n;
            int64_t now = mb_mono_ms();
            if (connect ? a->src || a->connect_at_ms > now : a->fd < 0 || a->renew_at_ms > now)
                continue;
            if (now - start >= BLOCKING_BUDGET_MS) {
                next = start; /* more is due: do not sleep */
                break;
            }
            if (connect)
                connect_one(w, a);
            else
                read_one(w, a, true);
        }
        next = min64(next, mb_idle_trigger(w));

        if (w->n > pcap) {
            size_t cap = w->n * 2;
            struct pollfd *p = realloc(pfd, cap * sizeof *p);
            if (p)
                pfd = p;
            mb_idle_acct **q = p ? realloc(who, cap * sizeof *q) : NULL;
            if (q)
                who = q;
            if (!p || !q) {
                free(pfd);
                free(who);
                return mb_errf(MB_ERR_NOMEM, "idle: poll set of %zu", cap);
            }
            pcap = cap;
        }
        nfds_t n = 0;
        for (size_t i = 0; i < w->n; i++) {
            mb_idle_acct *a = w->acct[i];
            if (a->fd >= 0) {
                pfd[n] = (struct pollfd){.fd = a->fd, .events = POLLIN};
                who[n++] = a;
                next = min64(next, a->renew_at_ms);
            } else if (!a->src) {
                next = min64(next, a->connect_at_ms);
            }
        }
        int64_t wait = next - mb_mono_ms();
        wait = wait < 0 ? 0 : wait > POLL_MAX_MS ? POLL_MAX_MS : wait;
        int r = poll(pfd, n, (int)wait);
        if (r < 0 && errno != EINTR) {
            MB_ERROR(NULL, NULL, "poll: %s", strerror(errno));
            mb_nap_ms(POLL_MAX_MS);
        }
        for (nfds_t i = 0; r > 0 && i < n && !mb_bus_stopping(); i++)
            if (pfd[i].revents && who[i]->fd == pfd[i].fd)
                read_one(w, who[i], false);
    }
    free(pfd);
    free(who);
    return MB_OK;
}
