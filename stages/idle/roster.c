/* roster.c — which accounts this copy of mailbus-idle watches (idle.h).
 *
 * Every pass (a few seconds, and well within the lease TTL) lists the IMAP
 * accounts whose first import has completed — a new account is watched once
 * its import is done, a removed one is let go — and takes or renews, in one
 * statement, the leases "idle:<id>" of up to MAILBUS_IDLE_MAX_ACCOUNTS of
 * them: those it holds first, then free ones, so several copies share the
 * accounts and each account is watched by one copy at a time. A copy that
 * dies stops renewing; another takes its accounts once the leases expire
 * (MAILBUS_LEASE_MS). An account whose lease this copy lost is dropped at
 * once (its connection closed): the new holder watches it. */
#include "stages/idle/idle.h"

#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Accounts to watch, oldest first. A kind a source cannot watch is still
 * listed: the watcher says so once and leaves it (mb_source_can_watch). */
static const char candidates_sql[] =
    "SELECT a.id, a.name FROM accounts a WHERE EXISTS (SELECT 1 FROM sync_jobs j "
    "WHERE j.account_id = a.id AND j.type = 'import' AND j.status = 'completed') ORDER BY a.id";

static void acct_free(mb_idle_acct *a)
{
    mb_idle_disconnect(a);
    free(a->name);
    free(a->folder);
    free(a);
}

/* Remove w->acct[i] (order does not matter), releasing its lease when asked. */
static void drop(mb_idle *w, size_t i, bool release, const char *why)
{
    mb_idle_acct *a = w->acct[i];
    MB_INFO(NULL, a->name, "not watched any more: %s", why);
    if (release && mb_lease_release(w->st->db, a->lease))
        MB_WARN(NULL, a->name, "%s", mb_err_last());
    acct_free(a);
    w->acct[i] = w->acct[--w->n];
}

static mb_idle_acct *find(mb_idle *w, uint64_t id)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->acct[i]->id == id)
            return w->acct[i];
    return NULL;
}

static mb_status add(mb_idle *w, uint64_t id, const char *name)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        mb_idle_acct **v = realloc(w->acct, cap * sizeof *v);
        if (!v)
            return mb_errf(MB_ERR_NOMEM, "idle: account list");
        w->acct = v;
        w->cap = cap;
    }
    mb_idle_acct *a = calloc(1, sizeof *a);
    if (!a || !(a->name = strdup(name))) {
        free(a);
        return mb_errf(MB_ERR_NOMEM, "idle: account %s", name);
    }
    a->id = id;
    a->fd = -1;
    a->seen = true;
    mb_lease_job_name(a->lease, "idle", id);
    a->connect_at_ms = mb_mono_ms();
    w->acct[w->n++] = a;
    MB_INFO(NULL, a->name, "watching: lease %s taken", a->lease);
    return MB_OK;
}

/* A failed pass: keep going with what is held while the leases last; once
 * they may have expired, another copy may hold them: drop everything. */
static void failed(mb_idle *w, const char *what)
{
    if (!w->roster_failing)
        MB_WARN(NULL, NULL, "roster: %s: %s; keeping the %zu accounts held for now", what,
                mb_err_last(), w->n);
    w->roster_failing = true;
    if (w->n && mb_mono_ms() - w->roster_ok_ms >= mb_lease_ttl_ms()) {
        MB_WARN(NULL, NULL, "roster: leases not renewed for %" PRId64 " ms: dropping every "
                "account until Postgres answers", mb_lease_ttl_ms());
        while (w->n)
            drop(w, w->n - 1, false, "its lease could not be renewed");
    }
}

void mb_idle_roster(mb_idle *w)
{
    PGresult *r = NULL;
    mb_status s = mb_db_query(w->st->db, candidates_sql, 0, NULL, &r);
    if (s) {
        failed(w, "listing accounts");
        return;
    }
    size_t n = (size_t)PQntuples(r);
    char (*names)[MB_LEASE_NAME_MAX] = n ? calloc(n, sizeof *names) : NULL;
    const char **np = n ? calloc(n, sizeof *np) : NULL;
    bool *mine = n ? calloc(n, sizeof *mine) : NULL;
    uint64_t *ids = n ? calloc(n, sizeof *ids) : NULL;
    if (n && (!names || !np || !mine || !ids))
        s = mb_errf(MB_ERR_NOMEM, "roster: %zu accounts", n);
    for (size_t i = 0; i < n && !s; i++) {
        if (mb_parse_u64(PQgetvalue(r, (int)i, 0), UINT64_MAX, &ids[i]))
            s = mb_errf(MB_ERR_INVALID, "roster: account id '%s'", PQgetvalue(r, (int)i, 0));
        mb_lease_job_name(names[i], "idle", ids[i]);
        np[i] = names[i];
    }
    if (!s) s = mb_lease_take_upto(w->st->db, np, n, w->max_accounts, mine);
    if (s) {
        failed(w, "taking leases");
    } else {
        if (w->roster_failing)
            MB_INFO(NULL, NULL, "roster: Postgres answers again; %zu accounts held", w->n);
        w->roster_failing = false;
        w->roster_ok_ms = mb_mono_ms();
        for (size_t i = 0; i < w->n; i++)
            w->acct[i]->seen = false;
        size_t held = 0;
        for (size_t i = 0; i < n && !s; i++) {
            if (!mine[i])
                continue;
            mb_idle_acct *a = find(w, ids[i]);
            if (a)
                a->seen = true;
            else
                s = add(w, ids[i], PQgetvalue(r, (int)i, 1));
            held++;
        }
        if (s)
            MB_ERROR(NULL, NULL, "roster: %s", mb_err_last());
        if (held == w->max_accounts && held < n)
            MB_DEBUG(NULL, NULL, "roster: at MAILBUS_IDLE_MAX_ACCOUNTS (%zu) of %zu accounts",
                     w->max_accounts, n);
        for (size_t i = w->n; i-- > 0;) {
            if (w->acct[i]->seen)
                continue;
            bool listed = false;
            for (size_t k = 0; k < n && !listed; k++)
                listed = ids[k] == w->acct[i]->id;
            drop(w, i, !listed, listed ? "its lease is held by another copy"
                                       : "the account is gone (or has no completed import)");
        }
    }
    free(names);
    free(np);
    free(mine);
    free(ids);
    PQclear(r);
}

void mb_idle_roster_clear(mb_idle *w)
{
    while (w->n)
        acct_free(w->acct[--w->n]);
    free(w->acct);
    w->acct = NULL;
    w->cap = 0;
    /* The leases go to another copy at once instead of after they expire. */
    if (w->st->db && mb_lease_release_all(w->st->db))
        MB_WARN(NULL, NULL, "%s", mb_err_last());
}
