/* cleanup_timer.h — the store stage runs the cleanup job (cleanup.h) on a
 * thread of its own, with a Postgres connection of its own: every
 * MAILBUS_CLEANUP_EVERY_MS (default 3600000, one hour; 0: never, leaving it
 * to `mailbus cleanup`) it looks whether a pass is due — none started in the
 * last interval by any process — and runs one under the "cleanup" lease, so
 * however many store copies run, passes come once per interval, one at a
 * time. Retention: MAILBUS_RETENTION_DAYS. Each pass walks one blob
 * directory for never-referenced blobs (all 256 in 256 passes). */
#ifndef MB_STORE_CLEANUP_TIMER_H
#define MB_STORE_CLEANUP_TIMER_H

#include "blob/blob.h"
#include "util/mb.h"

typedef struct mb_cleanup_timer mb_cleanup_timer;

/* Read the environment and start the thread (*out NULL when the interval is
 * 0). blobs must outlive the timer. MB_ERR_CONFIG for a bad variable. */
mb_status mb_cleanup_timer_start(mb_blob_store *blobs, mb_cleanup_timer **out);
/* Stop the thread (a pass in progress stops at its next batch; it also
 * stops on mb_bus_stop), wait for it and free. NULL is a no-op. */
void mb_cleanup_timer_stop(mb_cleanup_timer *t);

#endif
