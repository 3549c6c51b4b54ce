/* lease.c — named leases in Postgres (see lease.h). */
#include "stages/common/lease.h"

#include "util/env.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char holder[128];
static int64_t ttl_ms = 15000;

static void init(void)
{
    char host[64] = "?";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* pid alone repeats across restarts (and containers); the start time
     * makes a restarted process a new holder, which must wait for expiry. */
    snprintf(holder, sizeof holder, "%s:%ld:%lld%09ld", host, (long)getpid(),
             (long long)ts.tv_sec, ts.tv_nsec);
    long v;
    if (mb_env_int("MAILBUS_LEASE_MS", 15000, 1000, 3600000, &v) == MB_OK)
        ttl_ms = v;
}

int64_t mb_lease_ttl_ms(void)
{
    pthread_once(&once, init);
    return ttl_ms;
}

const char *mb_lease_holder(void)
{
    pthread_once(&once, init);
    return holder;
}

void mb_lease_job_name(char *out, const char *role, uint64_t job)
{
    snprintf(out, MB_LEASE_NAME_MAX, "%s:%" PRIu64, role, job);
}

/* Taking and renewing: the row is written only when it is absent, expired or
 * already the holder's ($2; $3 is the TTL in ms). */
#define LEASE_UPSERT_TAIL                                                               \
    "ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at, "               \
    "taken_at = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.taken_at "       \
    "ELSE clock_timestamp() END, holder = EXCLUDED.holder "                             \
    "WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < clock_timestamp() "

mb_status mb_lease_take(mb_db *db, const char *name, bool *mine)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%" PRId64, mb_lease_ttl_ms());
    const char *p[] = {name, mb_lease_holder(), ttl};
    PGresult *r;
    *mine = false;
    mb_status s = mb_db_query(db,
        "INSERT INTO leases (name, holder, expires_at) "
        "VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond') "
        LEASE_UPSERT_TAIL "RETURNING 1", 3, p, &r);
    if (s)
        return mb_err_wrap(s, "lease %s", name);
    *mine = PQntuples(r) == 1;
    PQclear(r);
    return MB_OK;
}

mb_status mb_lease_take_upto(mb_db *db, const char *const *names, size_t n, size_t max,
                             bool *mine)
{
    for (size_t i = 0; i < n; i++)
        mine[i] = false;
    if (!n || !max)
        return MB_OK;
    mb_pgarr arr = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < n && !s; i++)
        s = mb_pgarr_add_str(&arr, names[i]);
    char ttl[24], lim[24];
    snprintf(ttl, sizeof ttl, "%" PRId64, mb_lease_ttl_ms());
    snprintf(lim, sizeof lim, "%zu", max);
    const char *p[] = {s ? NULL : mb_pgarr_cstr(&arr), mb_lease_holder(), ttl, lim};
    PGresult *r = NULL;
    /* Rows are written in name order, so that two processes upserting
     * overlapping lists lock them in the same order. */
    if (!s) s = mb_db_query(db,
        "WITH want AS (SELECT x, o FROM unnest($1::text[]) WITH ORDINALITY AS u(x, o)), "
        "pick AS (SELECT w.x FROM want w LEFT JOIN leases l ON l.name = w.x "
        "  WHERE l.name IS NULL OR l.holder = $2 OR l.expires_at < clock_timestamp() "
        "  ORDER BY (l.holder IS NOT DISTINCT FROM $2) DESC, w.o LIMIT $4::bigint), "
        "got AS (INSERT INTO leases (name, holder, expires_at) "
        "  SELECT x, $2, clock_timestamp() + $3::bigint * interval '1 millisecond' "
        "  FROM pick ORDER BY x " LEASE_UPSERT_TAIL "RETURNING name) "
        "SELECT w.o FROM got JOIN want w ON w.x = got.name", 4, p, &r);
    mb_pgarr_free(&arr);
    if (s)
        return mb_err_wrap(s, "leases (%zu names)", n);
    for (int row = 0; row < PQntuples(r); row++) {
        uint64_t o = 0;
        if (!mb_parse_u64(PQgetvalue(r, row, 0), n, &o) && o >= 1)
            mine[o - 1] = true;
    }
    PQclear(r);
    return MB_OK;
}

mb_status mb_lease_release(mb_db *db, const char *name)
{
    const char *p[] = {name, mb_lease_holder()};
    mb_status s = mb_db_query(db, "DELETE FROM leases WHERE name = $1 AND holder = $2", 2, p, NULL);
    return s ? mb_err_wrap(s, "release lease %s", name) : MB_OK;
}

mb_status mb_lease_release_all(mb_db *db)
{
    const char *p[] = {mb_lease_holder()};
    mb_status s = mb_db_query(db, "DELETE FROM leases WHERE holder = $1", 1, p, NULL);
    return s ? mb_err_wrap(s, "release leases of %s", mb_lease_holder()) : MB_OK;
}
