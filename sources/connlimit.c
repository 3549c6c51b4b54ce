/* connlimit.c — IMAP connection slots as leases in Postgres (connlimit.h). */
#include "sources/connlimit.h"

#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Slots 0 .. limit-1 of both scopes exist (idempotent). */
static const char SQL_ENSURE[] =
    "INSERT INTO imap_slots (scope, slot) "
    "SELECT s.scope, g FROM (VALUES ($1::text, $2::int), ($3::text, $4::int)) s(scope, lim), "
    "generate_series(0, s.lim - 1) g ON CONFLICT DO NOTHING";

/* One free slot of each scope, both or neither (rows another transaction is
 * taking are skipped, not waited for). */
static const char SQL_TAKE[] =
    "WITH a AS (SELECT slot FROM imap_slots WHERE scope = $1 AND slot < $2::int "
    "  AND (holder IS NULL OR expires_at < now()) ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED), "
    "h AS (SELECT slot FROM imap_slots WHERE scope = $3 AND slot < $4::int "
    "  AND (holder IS NULL OR expires_at < now()) ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED), "
    "x AS (SELECT $1::text AS scope, slot FROM a UNION ALL SELECT $3::text, slot FROM h) "
    "UPDATE imap_slots t SET holder = $5, expires_at = now() + $6::bigint * interval '1 millisecond' "
    "FROM x WHERE t.scope = x.scope AND t.slot = x.slot "
    "AND EXISTS (SELECT 1 FROM a) AND EXISTS (SELECT 1 FROM h) "
    "RETURNING (t.scope = $1::text), t.slot";

static const char SQL_RENEW[] =
    "UPDATE imap_slots SET expires_at = now() + $5::bigint * interval '1 millisecond' "
    "WHERE holder = $1 AND ((scope = $2 AND slot = $3::int) OR (scope = $4 AND slot = $6::int)) "
    "AND expires_at >= now()";

static const char SQL_RELEASE[] =
    "UPDATE imap_slots SET holder = NULL, expires_at = NULL "
    "WHERE holder = $1 AND ((scope = $2 AND slot = $3::int) OR (scope = $4 AND slot = $5::int))";

/* Holders of live slots of either scope on this host ("<host>:<pid>:<n>"). */
static const char SQL_LOCAL_HOLDERS[] =
    "SELECT DISTINCT holder, split_part(holder, ':', 2) FROM imap_slots "
    "WHERE scope IN ($1, $2) AND holder IS NOT NULL AND expires_at >= now() "
    "AND split_part(holder, ':', 1) = $3";

static const char SQL_RELEASE_HOLDER[] =
    "UPDATE imap_slots SET holder = NULL, expires_at = NULL WHERE holder = $1";

static void local_host(char hn[64])
{
    memset(hn, 0, 64);
    if (gethostname(hn, 63) != 0 || !hn[0])
        strcpy(hn, "?");
}

/* Slots held by a process of this host that no longer exists (killed with
 * SIGKILL, so it never gave them back) are freed now rather than when their
 * lease runs out (a minute during which a restarted fetch finds every slot
 * of the account taken). */
static void reclaim_dead(mb_conn_slot *s)
{
    char hn[64];
    local_host(hn);
    const char *p[] = {s->account_scope, s->host_scope, hn};
    PGresult *r = NULL;
    if (mb_db_query(s->db, SQL_LOCAL_HOLDERS, 3, p, &r))
        return; /* the take reports Postgres trouble */
    for (int i = 0; i < PQntuples(r); i++) {
        long pid = strtol(PQgetvalue(r, i, 1), NULL, 10);
        if (pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        const char *h[] = {PQgetvalue(r, i, 0)};
        if (!mb_db_query(s->db, SQL_RELEASE_HOLDER, 1, h, NULL))
            MB_INFO(NULL, NULL, "IMAP connection slot of %s freed: its process %ld is gone",
                    s->account_scope, pid);
    }
    PQclear(r);
}

static mb_status settings(long *per_account, long *per_host, long *lease_ms)
{
    mb_status st = mb_env_int("MAILBUS_IMAP_MAX_CONN_PER_ACCOUNT", 4, 1, 10000, per_account);
    if (!st) st = mb_env_int("MAILBUS_IMAP_MAX_CONN_PER_HOST", 16, 1, 100000, per_host);
    if (!st) st = mb_env_int("MAILBUS_IMAP_SLOT_LEASE_MS", 60000, 1000, 86400000L, lease_ms);
    return st;
}

/* One attempt; *got says whether both slots were taken. */
static mb_status try_take(mb_conn_slot *s, long per_account, long per_host, bool *got)
{
    char la[24], lh[24], lease[24];
    snprintf(la, sizeof la, "%ld", per_account);
    snprintf(lh, sizeof lh, "%ld", per_host);
    snprintf(lease, sizeof lease, "%ld", s->lease_ms);
    const char *pe[] = {s->account_scope, la, s->host_scope, lh};
    mb_status st = mb_db_query(s->db, SQL_ENSURE, 4, pe, NULL);
    if (st)
        return st;
    const char *pt[] = {s->account_scope, la, s->host_scope, lh, s->holder, lease};
    PGresult *r = NULL;
    if ((st = mb_db_query(s->db, SQL_TAKE, 6, pt, &r)) != MB_OK)
        return st;
    *got = PQntuples(r) == 2;
    for (int i = 0; *got && i < 2; i++) {
        int slot = atoi(PQgetvalue(r, i, 1));
        if (PQgetvalue(r, i, 0)[0] == 't')
            s->account_slot = slot;
        else
            s->host_slot = slot;
    }
    PQclear(r);
    if (*got)
        s->renewed_ms = mb_mono_ms();
    return MB_OK;
}

mb_status mb_conn_slot_take(mb_db *db, uint64_t account_id, const char *host, int port,
                            long wait_ms, mb_conn_slot_tick tick, void *ctx, mb_conn_slot *s)
{
    static atomic_uint seq;
    memset(s, 0, sizeof *s);
    s->db = db;
    s->account_slot = s->host_slot = -1;
    long per_account, per_host;
    mb_status st = settings(&per_account, &per_host, &s->lease_ms);
    if (st)
        return st;
    char hn[64];
    local_host(hn);
    snprintf(s->holder, sizeof s->holder, "%.63s:%ld:%u", hn, (long)getpid(),
             atomic_fetch_add(&seq, 1));
    snprintf(s->account_scope, sizeof s->account_scope, "account:%" PRIu64, account_id);
    snprintf(s->host_scope, sizeof s->host_scope, "host:%.250s:%d", host ? host : "", port);
    int64_t start = mb_mono_ms();
    for (unsigned attempt = 0;;) {
        bool got = false;
        if ((st = try_take(s, per_account, per_host, &got)) != MB_OK)
            return mb_err_wrap(st, "taking an IMAP connection slot");
        if (got)
            return MB_OK;
        if (attempt++ % 20 == 0) /* at once, then every 5 s */
            reclaim_dead(s);
        if (wait_ms >= 0 && mb_mono_ms() - start >= wait_ms)
            return mb_errf(MB_ERR_TIMEOUT, "no free IMAP connection slot for %s (at most %ld) "
                           "and %s (at most %ld) within %ld ms", s->account_scope, per_account,
                           s->host_scope, per_host, wait_ms);
        if (tick && !tick(ctx))
            return mb_errf(MB_ERR_STOPPED, "stopped waiting for an IMAP connection slot");
        mb_nap_ms(250);
    }
}

static void slot_params(const mb_conn_slot *s, char a[16], char h[16])
{
    snprintf(a, 16, "%d", s->account_slot);
    snprintf(h, 16, "%d", s->host_slot);
}

mb_status mb_conn_slot_renew(mb_conn_slot *s)
{
    if (!mb_conn_slot_held(s) || mb_mono_ms() - s->renewed_ms < s->lease_ms / 4)
        return MB_OK;
    char a[16], h[16], lease[24];
    slot_params(s, a, h);
    snprintf(lease, sizeof lease, "%ld", s->lease_ms);
    const char *p[] = {s->holder, s->account_scope, a, s->host_scope, lease, h};
    PGresult *r = NULL;
    mb_status st = mb_db_query(s->db, SQL_RENEW, 6, p, &r);
    if (st)
        return mb_err_wrap(st, "renewing the IMAP connection slot");
    bool ok = atoi(PQcmdTuples(r)) == 2;
    PQclear(r);
    if (!ok) {
        s->account_slot = s->host_slot = -1;
        return mb_errf(MB_ERR_NOTFOUND, "IMAP connection slot of %s lost (lease of %ld ms "
                       "expired)", s->account_scope, s->lease_ms);
    }
    s->renewed_ms = mb_mono_ms();
    return MB_OK;
}

void mb_conn_slot_release(mb_conn_slot *s)
{
    if (!mb_conn_slot_held(s))
        return;
    char a[16], h[16];
    slot_params(s, a, h);
    const char *p[] = {s->holder, s->account_scope, a, s->host_scope, h};
    if (mb_db_query(s->db, SQL_RELEASE, 5, p, NULL))
        MB_WARN(NULL, NULL, "releasing the IMAP connection slot of %s: %s (it expires by itself)",
                s->account_scope, mb_err_last());
    s->account_slot = s->host_slot = -1;
}
