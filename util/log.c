/* log.c — single-line event log (see log.h). Each line is formatted into a
 * local buffer and written with one write(2) so concurrent threads and
 * processes sharing a log file do not interleave within a line. */
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
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s stage=%s job=%s account=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], log_stage,
                     job && *job ? job : "-", account && *account ? account : "-");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    /* One event, one line: fold any newline in the message. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
