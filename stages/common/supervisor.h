/* supervisor.h — every stage process runs as a small supervisor and one
 * worker it forks (the stage proper). The supervisor opens no connection
 * and allocates next to nothing, so whatever the worker's state, it can:
 *
 *  - restart a worker that died (crash, abort under ASan, exit after an
 *    outage at start-up), with a growing delay (0.5 s doubling to 30 s,
 *    back to 0.5 s once a worker ran for a minute); a worker that exits 0
 *    (stopped), 2 (usage) or 78 (configuration) is not restarted and the
 *    supervisor exits with its status;
 *  - watch it: a handler thread that spends MAILBUS_WATCHDOG_MS of CPU time
 *    (default 60000) on one record without progress (bus/watch.h) is stuck:
 *    the worker is killed and restarted at once;
 *  - name the record: after a death with one record in hand, that record is
 *    left as poison for the next worker (dead-lettered, settled on its job,
 *    deleted from its stream: never handed to a parser again); after a death
 *    during batch-level work, the next worker takes records one at a time;
 *  - stop: SIGTERM / SIGINT are passed to the worker, whose exit ends the
 *    supervisor; if the supervisor is killed, the worker is too (PDEATHSIG).
 *
 * MAILBUS_SUPERVISE=0 runs the stage in one process, unwatched (debugging). */
#ifndef MB_STAGE_SUPERVISOR_H
#define MB_STAGE_SUPERVISOR_H

/* Exit status of a worker that must not be restarted: bad configuration. */
#define MB_EXIT_CONFIG 78

/* Returns -1 in the worker (go on and run the stage), or the supervisor's
 * exit status once it is done (then the caller returns it from main). */
int mb_supervise(const char *stage);

#endif
