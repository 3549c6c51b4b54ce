/* connlimit.h — how many IMAP connections mailbus holds at once, per account
 * and per server host, across every process (fetch copies, scan), as leases
 * in Postgres (table imap_slots, migration 0005).
 *
 * Take a slot before connecting and release it after the connection is
 * dropped; renew it while connected (at least every lease/2: renew does the
 * UPDATE only when a quarter of the lease has passed, so calling it often is
 * cheap). A holder that dies without releasing loses its slots when the lease
 * expires, or at once when a process of the same host waits for a slot and
 * finds the holder's pid gone; a holder whose renewal fails has lost its slot
 * to another process and must drop its connection.
 *
 * Settings (read at each take):
 *   MAILBUS_IMAP_MAX_CONN_PER_ACCOUNT  connections per account (4)
 *   MAILBUS_IMAP_MAX_CONN_PER_HOST     connections per server host:port (16)
 *   MAILBUS_IMAP_SLOT_LEASE_MS         lease of a slot (60000)
 * Every process must agree on them. */
#ifndef MB_CONNLIMIT_H
#define MB_CONNLIMIT_H

#include "db/db.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    mb_db *db;              /* borrowed: the caller's connection */
    char holder[96];        /* "<host>:<pid>:<n>", unique per slot taken */
    char account_scope[32]; /* "account:<id>" */
    char host_scope[300];   /* "host:<host>:<port>" */
    int account_slot, host_slot; /* -1: not held */
    long lease_ms;
    int64_t renewed_ms;     /* monotonic ms of the last take/renew */
} mb_conn_slot;

/* Called about every 250 ms while mb_conn_slot_take waits; return false to
 * stop waiting (MB_ERR_STOPPED). */
typedef bool (*mb_conn_slot_tick)(void *ctx);

/* Take a slot for the account on host:port, waiting up to wait_ms (< 0: as
 * long as it takes) and calling tick while waiting. *s is overwritten; on
 * success it holds the slot. MB_ERR_TIMEOUT: none free within wait_ms (the
 * message names the scope that was full); MB_ERR_STOPPED: tick said stop;
 * MB_ERR_CONFIG: a bad setting; MB_ERR_DB/NET: Postgres. */
mb_status mb_conn_slot_take(mb_db *db, uint64_t account_id, const char *host, int port,
                            long wait_ms, mb_conn_slot_tick tick, void *ctx, mb_conn_slot *s);

/* Extend the lease if a quarter of it has passed. MB_ERR_NOTFOUND: the slot
 * was lost (expired and taken): drop the connection. MB_OK if none is held. */
mb_status mb_conn_slot_renew(mb_conn_slot *s);

/* Give the slot back (nothing if none is held); errors are logged only: the
 * lease expires anyway. */
void mb_conn_slot_release(mb_conn_slot *s);

static inline bool mb_conn_slot_held(const mb_conn_slot *s) {
    return s->account_slot >= 0;
}

#endif
