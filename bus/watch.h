/* watch.h — what a stage process is working on, in memory its supervisor
 * can read (see stages/common/supervisor.h).
 *
 * The worker writes, for each thread that handles records, the stream
 * sequence of the record in hand and a progress counter; the supervisor
 * polls it. When the worker dies (a crash) or a thread burns CPU on one
 * record without progress (an endless loop the parser's work budget does
 * not cover), the supervisor knows which record did it, kills the worker if
 * needed, and leaves a poison entry here for the next worker, which
 * dead-letters that record before it consumes anything (mb_bus_consume), so
 * the record is never handed to a parser again. A death during batch-level
 * work (no single record in hand) makes the next worker take records one at
 * a time for a while, so a second death names the record.
 *
 * Without a supervisor (MAILBUS_SUPERVISE=0) nothing is attached and every
 * call here is a no-op. */
#ifndef MB_BUS_WATCH_H
#define MB_BUS_WATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define MB_WATCH_SLOTS 16       /* handler threads watched per process */
#define MB_WATCH_POISON 16      /* poison entries waiting for the next worker */
#define MB_WATCH_REASON_MAX 256
#define MB_WATCH_STREAM_MAX 104    /* a stream name: prefix (64) + suffix */
#define MB_WATCH_BATCH 256      /* reply subjects of the batch in hand kept */
#define MB_WATCH_REPLY_MAX 192

typedef struct {
    _Atomic int tid;            /* owning thread (0: free) */
    _Atomic uint64_t seq;       /* stream sequence in hand (0: idle) */
    _Atomic uint64_t deliveries;
    _Atomic int batch;          /* records in hand together (1: exactly this one) */
    _Atomic uint32_t gen;       /* bumped on every begin and heartbeat: progress */
} mb_watch_slot;

enum { MB_POISON_FREE, MB_POISON_PENDING };

typedef struct {
    _Atomic int state;
    uint64_t seq;
    uint64_t deliveries;
    char stream[MB_WATCH_STREAM_MAX];
    char reason[MB_WATCH_REASON_MAX];
} mb_watch_poison;

typedef struct {
    char stream[MB_WATCH_STREAM_MAX]; /* the work stream being consumed */
    _Atomic int isolate;              /* take this many records one at a time */
    mb_watch_slot slot[MB_WATCH_SLOTS];
    mb_watch_poison poison[MB_WATCH_POISON];
    /* The batch in hand: its records' ack subjects, so that the next worker
     * can nak them at once after a death instead of leaving them to AckWait
     * (or, redelivered, to the next BackOff step, minutes away). */
    _Atomic int nreply;
    uint64_t reply_seq[MB_WATCH_BATCH];
    char reply[MB_WATCH_BATCH][MB_WATCH_REPLY_MAX];
} mb_watch;

/* Attach the shared block (the supervisor's); NULL detaches. */
void mb_watch_attach(mb_watch *w);
mb_watch *mb_watch_get(void);

/* The calling thread is now working on the record with this stream
 * sequence, alone (batch 1) or together with batch-1 others. */
void mb_watch_begin(uint64_t seq, uint64_t deliveries, int batch);
/* The calling thread made progress (a heartbeat). */
void mb_watch_progress(void);
/* Every thread is idle (the consume loop, after a batch). */
void mb_watch_idle(void);
/* The consume loop took a batch: remember record i's stream sequence and ack
 * subject (called for i = 0, 1, ... before the handler runs). */
void mb_watch_batch_add(int i, uint64_t seq, const char *reply);

#endif
