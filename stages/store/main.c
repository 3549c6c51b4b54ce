/* main.c — mailbus-store: writes parsed messages to Postgres in batches. */
#include "stages/store/store.h"

static const char usage[] =
    "Consumes store/1 records and upserts them in batches (one transaction per\n"
    "batch): emails (one per distinct raw message per account), email_locations\n"
    "(folder, UIDVALIDITY, UID, flags), addresses and attachments; marks the\n"
    "messages stored on their job; then queues attachment scans. Every write is\n"
    "idempotent, so a redelivered batch changes nothing.";

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "store", usage, 0, 256, argc, argv);
    if (rc >= 0)
        return rc;
    mb_status s = mb_store_prepare(st.db);
    if (!s) s = mb_bus_consume(st.bus, "store", &st.consume, mb_store_handle, &st);
    return mb_stage_finish(&st, s);
}
