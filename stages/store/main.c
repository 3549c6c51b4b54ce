/* main.c — mailbus-store: writes parsed messages to Postgres in batches. */
#include "stages/store/store.h"

#include "schemas/schema.h"
#include "stages/common/job.h"

static const char usage[] =
    "Consumes store/1 records and upserts them in batches (one transaction per\n"
    "batch): emails (one per distinct raw message per account), email_locations\n"
    "(folder, UIDVALIDITY, UID, flags), addresses and attachments; marks the\n"
    "messages stored on their job; then queues attachment scans. Every write is\n"
    "idempotent, so a redelivered batch changes nothing.";

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
    int rc = mb_stage_start(&st, "store", usage, 0, 256, argc, argv);
    if (rc >= 0)
        return rc;
    st.consume.give_up = give_up;
    mb_status s = mb_store_prepare(st.db);
    if (!s) s = mb_bus_consume(st.bus, "store", &st.consume, mb_store_handle, &st);
    return mb_stage_finish(&st, s);
}
