/* main.c — mailbus-store: writes parsed messages to Postgres in batches. */
#include "stages/store/store.h"

#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/store/cleanup_timer.h"

static const char usage[] =
    "Consumes store/1 records and upserts them in batches (one transaction per\n"
    "batch): emails (one per distinct raw message per account), email_locations\n"
    "(folder, UIDVALIDITY, UID, flags), addresses and attachments; marks the\n"
    "messages stored on their job; then queues attachment scans. Every write is\n"
    "idempotent, so a redelivered batch changes nothing.\n\n"
    "It also runs the cleanup job on a thread of its own (one pass at a time across\n"
    "every store copy, under the lease \"cleanup\"): emails deleted longer ago than\n"
    "the retention are purged, then blobs no email references any more are removed\n"
    "(never one a fetch touched recently or that an active job may still reference).\n"
    "  MAILBUS_RETENTION_DAYS    retention of deleted emails, in days (30; fractions\n"
    "                            allowed: 0.5 is 12 hours)\n"
    "  MAILBUS_CLEANUP_EVERY_MS  a pass at most this often (3600000; 0: never, leave it\n"
    "                            to `mailbus cleanup`)";

/* The give-up hook (bus.h): a store record that failed or ran out of
 * deliveries marks its message failed, with the reason on the job. */
static void give_up(void *ctx, const mb_bus_delivery *d, const char *reason)
{
    mb_rec_parsed r = {0};
    if (mb_rec_decode(&mb_type_parsed, d->data, d->len, &r)) {
        mb_stage_undecodable(d, "store", reason);
        mb_rec_free(&mb_type_parsed, &r);
        return;
    }
    mb_stage_settle(ctx, &r.raw, MB_JOB_FAILED, "store", reason, "marked failed");
    mb_rec_free(&mb_type_parsed, &r);
}

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "store", usage, MB_STAGE_BLOBS, 256, argc, argv);
    if (rc >= 0)
        return rc;
    st.consume.give_up = give_up;
    mb_cleanup_timer *cleanup = NULL;
    mb_status s = mb_store_prepare(st.db);
    if (!s) s = mb_cleanup_timer_start(st.blobs, &cleanup);
    if (!s) s = mb_bus_consume(st.bus, "store", &st.consume, mb_store_handle, &st);
    mb_cleanup_timer_stop(cleanup);
    return mb_stage_finish(&st, s);
}
