/* dlq.h — dead letters in bulk and as JSON: what `mailbus dlq` and the scan
 * stage's <p>.cmd.dlq.* commands share beyond bus.h's one-letter calls
 * (mb_bus_dlq_list / _get / _retry / _delete). Part of bus/ (bus/dlq.c). */
#ifndef MB_BUS_DLQ_H
#define MB_BUS_DLQ_H

#include "bus/bus.h"
#include "util/buf.h"

typedef enum { MB_BUS_DLQ_RETRY, MB_BUS_DLQ_PURGE } mb_bus_dlq_action;

/* Retry or delete every dead letter of stage (NULL: all) dead-lettered
 * before before_ms (unix ms; 0: whenever); *done counts those acted on.
 * The selection is listed first, then acted on in order; stops at the first
 * error. No DLQ stream yet is no dead letters. */
mb_status mb_bus_dlq_each(mb_bus *b, mb_bus_dlq_action action, const char *stage,
                          int64_t before_ms, size_t *done);

/* "30s", "15m", "12h", "7d" or plain seconds before now, as unix ms;
 * NULL or "": 0 (no cutoff). MB_ERR_INVALID names a bad age. */
mb_status mb_bus_dlq_cutoff(const char *age, int64_t *before_ms);

/* Append a dead letter as one JSON object: "dlq_seq", "data_bytes", then the
 * dead/1 record's fields ("data" in base64, or "" unless with_data). */
mb_status mb_bus_dlq_json(uint64_t dlq_seq, const mb_rec_dead *rec, bool with_data, mb_buf *out);

#endif
