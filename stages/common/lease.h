/* lease.h — named leases in Postgres: at most one live holder per name,
 * across every process of every host, and across reconnects.
 *
 * A lease is a row of `leases` (name, holder, expires_at). Taking and renewing
 * are the same idempotent upsert, which succeeds only when the row is absent,
 * expired, or already held by this process; expiry is by the server's clock.
 * A holder that dies (kill -9, lost host) simply stops renewing: another
 * process takes the name once expires_at has passed, with nobody's help.
 * Unlike a session advisory lock, nothing is lost when the connection drops
 * and comes back (db.h retries an autocommit statement once on a fresh
 * connection; the upsert is idempotent for the same holder).
 *
 * A holder must renew well within the TTL (every pass, or every few seconds
 * of long work) and stop acting on the name when a renewal says !mine. */
#ifndef MB_STAGE_LEASE_H
#define MB_STAGE_LEASE_H

#include "db/db.h"

#include <stdbool.h>
#include <stdint.h>

/* TTL of every lease this process takes: MAILBUS_LEASE_MS, default 15000
 * (1000..3600000). Read once. */
int64_t mb_lease_ttl_ms(void);

/* This process's holder id: "host:pid:start-ns", made once; also shown in
 * the leases table for operators. */
const char *mb_lease_holder(void);

/* Take or renew the lease `name` for mb_lease_ttl_ms(). *mine: whether this
 * process holds it now. */
mb_status mb_lease_take(mb_db *db, const char *name, bool *mine);
/* Take or renew, in one statement, up to max of the leases names[0..n)
 * (distinct): those this process holds first, then free or expired ones in
 * the order given, so that processes sharing a list each take a part.
 * mine[i]: whether this process holds names[i] now. */
mb_status mb_lease_take_upto(mb_db *db, const char *const *names, size_t n, size_t max,
                             bool *mine);
/* Give the lease up if this process holds it (else nothing happens). */
mb_status mb_lease_release(mb_db *db, const char *name);
/* Give up every lease this process holds (shutdown). */
mb_status mb_lease_release_all(mb_db *db);

/* "scan:<job>" / "coord:<job>" — the leases of the scan stage, by job id. */
#define MB_LEASE_NAME_MAX 48
void mb_lease_job_name(char *out, const char *role, uint64_t job);

#endif
