/* log.h — one line per event: time, level, stage, job, account, message.
 *
 *   2026-11-28T22:10:00.123Z INFO  stage=fetch job=12 account=3 fetched 500 messages
 *
 * Lines go to stderr. The level threshold comes from MAILBUS_LOG_LEVEL
 * (debug|info|warn|error, default info). Never pass a password or token. */
#ifndef MB_LOG_H
#define MB_LOG_H

enum { MB_LOG_DEBUG, MB_LOG_INFO, MB_LOG_WARN, MB_LOG_ERROR };

/* Name this process's stage ("fetch", "cli", ...) for every line. */
void mb_log_init(const char *stage);
int mb_log_enabled(int level);
/* job and account may be NULL (printed as "-"). */
void mb_log(int level, const char *job, const char *account, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define MB_DEBUG(job, acct, ...) mb_log(MB_LOG_DEBUG, job, acct, __VA_ARGS__)
#define MB_INFO(job, acct, ...) mb_log(MB_LOG_INFO, job, acct, __VA_ARGS__)
#define MB_WARN(job, acct, ...) mb_log(MB_LOG_WARN, job, acct, __VA_ARGS__)
#define MB_ERROR(job, acct, ...) mb_log(MB_LOG_ERROR, job, acct, __VA_ARGS__)

#endif
