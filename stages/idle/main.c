/* main.c — mailbus-idle: push. Keeps each watched account's INBOX under IMAP
 * IDLE and asks for a sync of it when the server announces a change (idle.h:
 * watcher.c, roster.c, trigger.c). */
#include "stages/idle/idle.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static const char usage[] =
    "Push: watches the INBOX of every IMAP account whose first import has completed with\n"
    "IMAP IDLE (RFC 2177), all connections on one thread, and when the server announces a\n"
    "change (new, expunged or flagged messages) sends <prefix>.cmd.sync.start for that\n"
    "folder, as `mailbus sync ACCOUNT --folders INBOX` does; while the account has another\n"
    "active job the request is repeated every second until a sync is accepted. It watches;\n"
    "the scan stage syncs. Accounts whose server has no IDLE are skipped (left to the\n"
    "scheduler). Any number of copies may run: each account is watched by one copy at a\n"
    "time (lease idle:<account id>, MAILBUS_LEASE_MS).\n"
    "  MAILBUS_IDLE_MAX_ACCOUNTS  accounts (IDLE connections) one copy watches (1000)\n"
    "  MAILBUS_IDLE_RENEW_S       IDLE ended and begun again this often (1500; servers end\n"
    "                             an IDLE after 30 minutes or more)\n"
    "A dropped connection is made again after 0.5 s, doubling to 60 s. (--batch is unused.)";

/* Room for max_accounts sockets plus Postgres, NATS and the process's own:
 * the soft limit on descriptors is raised to the hard one, and the number of
 * accounts lowered if even that is too small. */
static size_t fit_descriptors(size_t max_accounts)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return max_accounts;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t cur = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            rl.rlim_cur = cur;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < max_accounts + 64) {
        size_t fit = rl.rlim_cur > 128 ? (size_t)rl.rlim_cur - 64 : 64;
        MB_WARN(NULL, NULL, "MAILBUS_IDLE_MAX_ACCOUNTS %zu: only %llu descriptors allowed "
                "(ulimit -n); watching at most %zu accounts", max_accounts,
                (unsigned long long)rl.rlim_cur, fit);
        return fit;
    }
    return max_accounts;
}

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "idle", usage, MB_STAGE_KEY, 1, argc, argv);
    if (rc >= 0)
        return rc;
    long max_accounts = 0, renew_s = 0;
    mb_status s = mb_env_int("MAILBUS_IDLE_MAX_ACCOUNTS", 1000, 1, 1000000, &max_accounts);
    if (!s) s = mb_env_int("MAILBUS_IDLE_RENEW_S", 1500, 1, 1740, &renew_s);
    mb_idle w = {.st = &st, .renew_ms = renew_s * 1000L};
    if (!s) {
        w.max_accounts = fit_descriptors((size_t)max_accounts);
        /* Leases renewed three times per TTL, the account list read as often
         * (at most every 5 s: a new account is watched soon after its import). */
        int64_t every = mb_lease_ttl_ms() / 3;
        w.roster_every_ms = every < 5000 ? every : 5000;
        MB_INFO(NULL, NULL, "watching up to %zu accounts, IDLE renewed every %ld s, leases "
                "renewed every %" PRId64 " ms", w.max_accounts, renew_s, w.roster_every_ms);
        s = mb_idle_run(&w);
    }
    if (s)
        mb_bus_stop();
    mb_idle_roster_clear(&w);
    return mb_stage_finish(&st, s);
}
