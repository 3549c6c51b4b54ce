/* mb.h — the one status type every mailbus module returns, and the
 * thread-local "last error" text that goes with it.
 *
 * Convention (as in nats.c / libgit2): functions return mb_status and hand
 * results back through out-parameters. On failure they record a message that
 * names the input that was wrong with mb_errf(); callers read it with
 * mb_err_last(). Objects that allocate have a matching mb_<type>_free(). */
#ifndef MB_MB_H
#define MB_MB_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MB_OK = 0,
    MB_ERR_NOMEM,     /* allocation failed */
    MB_ERR_INVALID,   /* bad input: malformed, wrong type, out of range */
    MB_ERR_TRUNCATED, /* input ended early */
    MB_ERR_TOOBIG,    /* input exceeds a limit */
    MB_ERR_IO,        /* file system */
    MB_ERR_NET,       /* network / remote server */
    MB_ERR_DB,        /* Postgres */
    MB_ERR_BUS,       /* NATS / JetStream */
    MB_ERR_NOTFOUND,
    MB_ERR_TIMEOUT,
    MB_ERR_AUTH,      /* credentials refused */
    MB_ERR_CONFIG,    /* missing or bad configuration */
    MB_ERR_STOPPED,   /* shutdown requested */
    MB_ERR_BUDGET,    /* a work budget (CPU time for one input) ran out */
    MB_ERR_INTERNAL,
    MB_ERR_BUSY,      /* in use: the account already has an active job */
} mb_status;

/* Short name of a status ("invalid", "timeout", ...). Never NULL. */
const char *mb_status_str(mb_status s);

/* Record a formatted error message for this thread and return s, so callers
 * can write: return mb_errf(MB_ERR_INVALID, "field '%s': ...", key); */
mb_status mb_errf(mb_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefix the current thread's error message: "ctx: <old message>". Returns s. */
mb_status mb_err_wrap(mb_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The last message recorded on this thread ("" if none). Valid until the
 * next mb_errf() on this thread. */
const char *mb_err_last(void);
void mb_err_clear(void);

#define MB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
