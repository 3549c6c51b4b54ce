/* guard.c — see guard.h. */
#include "sources/imap/guard.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mb_imap_guard_init(mb_imap_guard *g, const mb_imap_limits *lim)
{
    memset(g, 0, sizeof *g);
    g->lim = *lim;
}

void mb_imap_guard_sent(mb_imap_guard *g, int64_t now_ms)
{
    if (g->busy)
        return; /* the rest of a command, or a literal of it */
    g->busy = true;
    g->cmd_start_ms = now_ms;
    g->cmd_bytes = 0;
}

void mb_imap_guard_idle(mb_imap_guard *g, bool on) { g->idle = on; }

static bool broken(mb_imap_guard *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->error, sizeof g->error, fmt, ap);
    va_end(ap);
    if (!g->error[0])
        snprintf(g->error, sizeof g->error, "server broke a limit");
    return false;
}

/* The line ended (its LF came): a literal follows, or the line is done. */
static bool line_end(mb_imap_guard *g)
{
    long long lit = mb_imap_line_literal(g->tail, g->ntail);
    g->ntail = 0;
    if (lit >= 0) {
        if ((uint64_t)lit > g->lim.max_literal)
            return broken(g, "server announced a literal of %lld bytes, more than the %" PRIu64
                             " allowed (MAILBUS_IMAP_MAX_LITERAL)",
                          lit, g->lim.max_literal);
        g->literal_left = (uint64_t)lit;
        return true;
    }
    if (g->tagged) { /* the answer to the command: it and any IDLE are over */
        g->busy = false;
        g->idle = false;
    }
    g->line_len = 0;
    g->line_bytes = 0;
    return true;
}

/* Whether `bytes` in the ms since `start` are too slow (after the grace). */
static bool too_slow(const mb_imap_guard *g, uint64_t bytes, int64_t start, int64_t now)
{
    int64_t ms = now - start;
    return ms > g->lim.grace_ms && bytes * 1000 < (uint64_t)ms * g->lim.min_rate;
}

bool mb_imap_guard_recv(mb_imap_guard *g, const char *buf, size_t n, int64_t now_ms)
{
    if (g->error[0])
        return false;
    size_t i = 0;
    while (i < n) {
        if (g->line_bytes == 0) {
            g->line_start_ms = now_ms;
            g->tagged = buf[i] != '*' && buf[i] != '+';
        }
        if (g->literal_left) {
            size_t k = n - i;
            if ((uint64_t)k > g->literal_left)
                k = (size_t)g->literal_left;
            g->literal_left -= k;
            g->line_bytes += k;
            g->cmd_bytes += k;
            i += k;
            continue;
        }
        char c = buf[i++];
        g->line_bytes++;
        g->cmd_bytes++;
        if (c == '\n') {
            if (!line_end(g))
                return false;
            continue;
        }
        if (++g->line_len > g->lim.max_line)
            return broken(g, "server sent a line longer than %zu bytes (outside literals)",
                          g->lim.max_line);
        if (g->ntail == sizeof g->tail) {
            memmove(g->tail, g->tail + 1, sizeof g->tail - 1);
            g->ntail--;
        }
        g->tail[g->ntail++] = c;
    }
    if (g->busy && !g->idle &&
        g->cmd_bytes > g->lim.max_literal + 4 * (uint64_t)g->lim.max_line)
        return broken(g, "server sent more than %" PRIu64 " bytes answering one command",
                      g->lim.max_literal + 4 * (uint64_t)g->lim.max_line);
    if (g->line_bytes && too_slow(g, g->line_bytes, g->line_start_ms, now_ms))
        return broken(g, "server sent %" PRIu64 " bytes of one line in %" PRId64
                         " ms (less than %" PRIu64 " bytes/s): too slow",
                      g->line_bytes, now_ms - g->line_start_ms, g->lim.min_rate);
    if (g->busy && !g->idle && too_slow(g, g->cmd_bytes, g->cmd_start_ms, now_ms))
        return broken(g, "server sent %" PRIu64 " bytes answering a command in %" PRId64
                         " ms (less than %" PRIu64 " bytes/s): too slow",
                      g->cmd_bytes, now_ms - g->cmd_start_ms, g->lim.min_rate);
    return true;
}

long long mb_imap_line_literal(const char *l, size_t len)
{
    while (len && (l[len - 1] == '\n' || l[len - 1] == '\r'))
        len--;
    if (len < 3 || l[len - 1] != '}')
        return -1;
    size_t end = len - 1, i = end;
    if (i && l[i - 1] == '+')
        end = --i;
    while (i && l[i - 1] >= '0' && l[i - 1] <= '9')
        i--;
    if (i == end || i == 0 || l[i - 1] != '{' || end - i > 12)
        return -1;
    long long v = 0;
    for (size_t k = i; k < end; k++)
        v = v * 10 + (l[k] - '0');
    return v;
}
