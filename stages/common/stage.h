/* stage.h — what every stage process does the same way: read its options and
 * the environment, connect to Postgres (migrating under the advisory lock)
 * and NATS (provisioning streams and consumers), install the SIGTERM/SIGINT
 * handlers for a graceful stop, and publish job events.
 *
 * A stage's main() is: mb_stage_start(), hand a handler to mb_bus_consume(),
 * mb_stage_finish(). */
#ifndef MB_STAGE_H
#define MB_STAGE_H

#include "blob/blob.h"
#include "bus/bus.h"
#include "db/db.h"
#include "schemas/records.h"
#include "sources/account.h"

enum {
    MB_STAGE_BLOBS = 1, /* open the blob store (MAILBUS_BLOB_DIR) */
    MB_STAGE_KEY = 2,   /* load the credential keys (MAILBUS_SECRET_KEY_FILE, _OLD_KEY_FILE) */
};

typedef struct {
    const char *name;         /* "fetch" */
    mb_bus *bus;
    mb_db *db;
    mb_blob_store *blobs;     /* with MB_STAGE_BLOBS */
    mb_account_keys keys;     /* with MB_STAGE_KEY */
    int batch;                /* --batch N */
    mb_bus_consume_opts consume;
} mb_stage;

/* Parse argv (--help, --batch N), read the environment, connect, migrate,
 * provision. Returns -1 when the stage should run, otherwise the exit code
 * (0 after --help, 1 on a start-up error, already logged). usage is the
 * text for --help, after the "usage:" line. */
int mb_stage_start(mb_stage *st, const char *name, const char *usage, unsigned needs,
                   int default_batch, int argc, char **argv);
/* Outages. mb_stage_start waits for Postgres and NATS (a line a minute)
 * instead of exiting when either is away, and sets st->consume so that
 * mb_bus_consume holds records through an outage (bus.h "outages") and
 * records each outage once per job ("outage" in sync_history). For loops
 * outside mb_bus_consume (the scan stage's passes): after a pass failed with
 * s, mb_stage_wait_up waits while s says a server is away (MB_ERR_NET,
 * MB_ERR_TIMEOUT) until Postgres and NATS both answer, logging once a
 * minute, and returns whether it waited; it returns at once otherwise or on
 * mb_bus_stop(). */
bool mb_stage_wait_up(mb_stage *st, mb_status s);

/* Close everything; returns the exit code for main. */
int mb_stage_finish(mb_stage *st, mb_status s);

/* Provisioning options from the environment (MAILBUS_ACK_WAIT_MS,
 * MAILBUS_MAX_DELIVER, MAILBUS_DUPLICATE_WINDOW_MS), shared by the stages
 * and the CLI so every process asks for the same stream and consumer config. */
mb_status mb_stage_provision_opts(mb_bus_provision_opts *o);

/* Publish ev (filling kind, stage, ts) on <p>.events.<job>.<kind>. */
mb_status mb_stage_event(mb_bus *bus, const char *stage, const char *kind, mb_rec_event *ev);

/* For give-up hooks (bus.h). A record that does not decode names no
 * message to settle: log that, with its job and account headers. */
void mb_stage_undecodable(const mb_bus_delivery *d, const char *what, const char *reason);
/* The message of raw is given up on: the reason goes to the log and on the
 * job (as a problem of `stage`), and bit is set on it (MB_JOB_FAILED, or
 * MB_JOB_PARSED when it was passed on raw-only). how ends the log line. */
void mb_stage_settle(mb_stage *st, const mb_rec_rawmsg *raw, int bit, const char *stage,
                     const char *reason, const char *how);

/* Format a decimal into a caller buffer (for header values). */
const char *mb_u64s(char out[24], uint64_t v);

#endif
