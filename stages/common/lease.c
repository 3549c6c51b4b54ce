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
        "ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at, "
        "taken_at = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.taken_at "
        "ELSE clock_timestamp() END, holder = EXCLUDED.holder "
        "WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < clock_timestamp() "
        "RETURNING 1", 3, p, &r);
    if (s)
        return mb_err_wrap(s, "lease %s", name);
    *mine = PQntuples(r) == 1;
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
