/* main.c — mailbus-scan: serves the import commands, scans accounts into
 * chunks, and coordinates running jobs. */
#include "bus/serve.h"
#include "stages/common/job.h"
#include "stages/scan/scan.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <time.h>

static const char usage[] =
    "Serves <prefix>.cmd.> (import.start, import.pause, import.resume, import.cancel;\n"
    "JSON or msgpack cmd/1 payloads, JSON replies), scans IMAP accounts into chunks\n"
    "of at most 500 messages / 32 MB, and keeps MAILBUS_MAX_INFLIGHT (default 8)\n"
    "chunks per job in flight, newest first. Publishes progress every second.";

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "scan", usage, MB_STAGE_KEY, 1, argc, argv);
    if (rc >= 0)
        return rc;
    mb_scan sc = {.st = &st};
    long inflight;
    mb_status s = mb_env_int("MAILBUS_MAX_INFLIGHT", 8, 1, 10000, &inflight);
    sc.max_inflight = (int)inflight;
    pthread_mutex_init(&sc.cmd_mu, NULL);
    mb_bus_sub *sub = NULL;
    if (!s) s = mb_db_connect(mb_env("MAILBUS_PG_DSN", MB_DEFAULT_PG_DSN), &sc.cmd_db);
    if (!s) s = mb_job_prepare(sc.cmd_db);
    if (!s) s = mb_bus_serve(st.bus, "cmd.>", "mailbus-scan", mb_scan_command, &sc, &sub);
    while (!s && !mb_bus_stopping()) {
        uint64_t ids[16];
        size_t n = 0;
        /* Jobs waiting to be scanned (new, or interrupted by a crash). */
        mb_status ls = mb_job_list_status(st.db, "scanning", ids, MB_ARRAY_LEN(ids), &n);
        for (size_t i = 0; !ls && i < n && !mb_bus_stopping(); i++) {
            char j[24];
            mb_u64s(j, ids[i]);
            if (mb_scan_job(&sc, ids[i]))
                MB_ERROR(j, NULL, "scan: %s", mb_err_last());
        }
        if (ls)
            MB_WARN(NULL, NULL, "listing jobs: %s", mb_err_last());
        if (mb_scan_coordinate(&sc))
            MB_WARN(NULL, NULL, "coordinating: %s", mb_err_last());
        /* Short passes: a finished chunk is replaced, and a finished job
         * completed, within 100 ms. */
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    mb_bus_unsubscribe(sub);
    mb_db_free(sc.cmd_db);
    pthread_mutex_destroy(&sc.cmd_mu);
    return mb_stage_finish(&st, s);
}
