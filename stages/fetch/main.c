/* main.c — mailbus-fetch: consumes fetch tasks, downloads the messages into
 * the blob store and publishes one parse record per message. */
#include "stages/fetch/fetch.h"

static const char usage[] =
    "Consumes fetch/1 tasks (a chunk of up to 500 messages of one folder), downloads\n"
    "them with UID FETCH BODY.PEEK[] (the server's \\Seen flags never change) into\n"
    "the blob store (MAILBUS_BLOB_DIR), fsyncs them in one batch, and publishes a\n"
    "parse/1 record per message. One IMAP connection per account is reused.";

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "fetch", usage, MB_STAGE_BLOBS | MB_STAGE_KEY, 1, argc, argv);
    if (rc >= 0)
        return rc;
    mb_fetcher f;
    mb_status s = mb_fetcher_init(&f, &st);
    if (!s) s = mb_bus_consume(st.bus, "fetch", &st.consume, mb_fetcher_handle, &f);
    mb_fetcher_free(&f);
    return mb_stage_finish(&st, s);
}
