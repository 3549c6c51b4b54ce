/* err.c — status names and the thread-local last-error text. */
#include "util/mb.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_err[1024];

const char *mb_status_str(mb_status s)
{
    switch (s) {
    case MB_OK: return "ok";
    case MB_ERR_NOMEM: return "out of memory";
    case MB_ERR_INVALID: return "invalid";
    case MB_ERR_TRUNCATED: return "truncated";
    case MB_ERR_TOOBIG: return "too big";
    case MB_ERR_IO: return "i/o error";
    case MB_ERR_NET: return "network error";
    case MB_ERR_DB: return "database error";
    case MB_ERR_BUS: return "bus error";
    case MB_ERR_NOTFOUND: return "not found";
    case MB_ERR_TIMEOUT: return "timeout";
    case MB_ERR_AUTH: return "authentication failed";
    case MB_ERR_CONFIG: return "configuration error";
    case MB_ERR_STOPPED: return "stopped";
    case MB_ERR_BUDGET: return "work budget exceeded";
    case MB_ERR_INTERNAL: return "internal error";
    case MB_ERR_BUSY: return "busy";
    }
    return "unknown status";
}

mb_status mb_errf(mb_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return s;
}

mb_status mb_err_wrap(mb_status s, const char *fmt, ...)
{
    char prefix[512], old[sizeof last_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_err, sizeof old);
    /* Truncation of a very long message is acceptable. */
    size_t n = strlen(prefix);
    memcpy(last_err, prefix, n);
    const char *rest = old[0] ? old : mb_status_str(s);
    size_t room = sizeof last_err - n - 1;
    size_t m = strlen(rest) + 2;
    if (m > room) m = room;
    memcpy(last_err + n, ": ", m < 2 ? m : 2);
    if (m > 2) memcpy(last_err + n + 2, rest, m - 2);
    last_err[n + m] = '\0';
    return s;
}

const char *mb_err_last(void) { return last_err; }
void mb_err_clear(void) { last_err[0] = '\0'; }
