/* log.c — single-line event log (see log.h). Each line is formatted into a
 * local buffer and written with one write(2) so concurrent threads and
 * processes sharing a log file do not interleave within a line. Messages
 * quote outside input (header bytes, server responses): control bytes are
 * written as \xNN, so an escape sequence in a mail never reaches a
 * terminal and a line break never forges a second event. */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_stage[32] = "-";
static int log_level = MB_LOG_INFO;

void mb_log_init(const char *stage)
{
    snprintf(log_stage, sizeof log_stage, "%s", stage ? stage : "-");
    const char *lv = getenv("MAILBUS_LOG_LEVEL");
    if (lv) {
        if (!strcasecmp(lv, "debug")) log_level = MB_LOG_DEBUG;
        else if (!strcasecmp(lv, "info")) log_level = MB_LOG_INFO;
        else if (!strcasecmp(lv, "warn")) log_level = MB_LOG_WARN;
        else if (!strcasecmp(lv, "error")) log_level = MB_LOG_ERROR;
    }
}

int mb_log_enabled(int level) { return level >= log_level; }

/* Append src to out[*n..cap-1), control bytes (and DEL) as \xNN, tab and
 * line breaks as a space. */
static void put_safe(char *out, size_t *n, size_t cap, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    for (; *src && *n + 4 < cap; src++) {
        unsigned char c = (unsigned char)*src;
        if (c == '\n' || c == '\r' || c == '\t') {
            out[(*n)++] = ' ';
        } else if (c < 0x20 || c == 0x7f) {
            out[(*n)++] = '\\';
            out[(*n)++] = 'x';
            out[(*n)++] = hex[c >> 4];
            out[(*n)++] = hex[c & 15];
        } else {
            out[(*n)++] = (char)c;
        }
    }
}

void mb_log(int level, const char *job, const char *account, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    if (level < log_level)
        return;
    if (level < MB_LOG_DEBUG || level > MB_LOG_ERROR)
        level = MB_LOG_ERROR;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    int h = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s stage=%s job=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], log_stage);
    size_t len = h < 0 ? 0 : (size_t)h;
    put_safe(line, &len, sizeof line, job && *job ? job : "-");
    put_safe(line, &len, sizeof line, " account=");
    put_safe(line, &len, sizeof line, account && *account ? account : "-");
    put_safe(line, &len, sizeof line, " ");
    put_safe(line, &len, sizeof line, msg);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
