/* commands.c — the job commands on <p>.cmd.<op>. Payload: a cmd/1 record
 * as msgpack or JSON (so `nats req mailbus.cmd.import.start
 * '{"account":"me"}'` works). Reply: one JSON object, {"ok":true,...} or
 * {"ok":false,"error":"..."}.
 *
 *   import.start   account, [folders], [since], [until], [defer_attachments]
 *                  -> {"ok":true,"job":N}
 *   sync.start     account, [folders], [defer_attachments] -> {"ok":true,"job":N}
 *                  (what changed since the last completed job: sync.c)
 *   Either is refused ({"ok":false,"error":"... already has an active job:
 *   import 12 is running ..."}) while the account has an active job.
 *   The job commands below (pause, resume, cancel, status) take any job.
 *   import.pause   job    running -> paused (in-flight chunks finish)
 *   import.resume  job    paused -> running
 *   import.cancel  job    -> cancelled (queued work is skipped)
 *   import.status  job    -> the job's progress event as JSON (an active job's
 *                         counters as the coordinator recounts them every second)
 *   schedule.set   account, every ("10m", "2h", "1d", "off", "auto"), [folders]
 *                  -> {"ok":true,"account":A,"folders":N,"every":E}: the
 *                  interval of the folders named, else the account's
 *                  (scheduler.c; "auto": back to the automatic interval)
 *   dlq.list|show|retry|purge   dead letters, as `mailbus dlq` (dlq_commands.c) */
#include "schemas/schema.h"
#include "sources/account.h"
#include "stages/common/job.h"
#include "stages/scan/dlq_commands.h"
#include "stages/scan/scan.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

mb_status mb_scan_parse_day(const char *s, int64_t *out)
{
    *out = 0;
    if (!s || !*s)
        return MB_OK;
    int y, m, d;
    char tail;
    if (sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || y < 1970 || y > 9999 || m < 1 ||
        m > 12 || d < 1 || d > 31)
        return mb_errf(MB_ERR_INVALID, "date '%s': expected YYYY-MM-DD", s);
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    *out = (int64_t)timegm(&tm);
    return MB_OK;
}

static void reply_error(mb_buf *reply, const char *msg)
{
    mb_buf_reset(reply);
    mb_buf_puts(reply, "{\"ok\":false,\"error\":");
    mb_buf_json_str(reply, msg, strlen(msg));
    mb_buf_puts(reply, "}");
}

static mb_status job_arg(const mb_rec_command *c, uint64_t *job)
{
    if (!c->job || mb_parse_u64(c->job, INT64_MAX, job))
        return mb_errf(MB_ERR_INVALID, "'%s' needs \"job\": a job id", c->op ? c->op : "command");
    return MB_OK;
}

/* import.start and sync.start (type "import", "sync"). */
static mb_status cmd_start(mb_scan *sc, mb_rec_command *c, const char *type, mb_buf *reply)
{
    if (!c->account || !*c->account)
        return mb_errf(MB_ERR_INVALID, "%s.start needs \"account\"", type);
    if (!strcmp(type, "sync") && ((c->since && *c->since) || (c->until && *c->until)))
        return mb_errf(MB_ERR_INVALID, "sync.start takes no since/until: a sync reads what "
                                       "changed in the whole folder");
    int64_t since, until;
    mb_status s = mb_scan_parse_day(c->since, &since);
    if (!s) s = mb_scan_parse_day(c->until, &until);
    if (s)
        return s;
    if (since && until && until <= since)
        return mb_errf(MB_ERR_INVALID, "until (%s) must be after since (%s)", c->until, c->since);
    mb_account a;
    if ((s = mb_account_load(sc->cmd_db, NULL, c->account, &a, NULL)))
        return s;
    mb_buf opts = MB_BUF_INIT;
    uint64_t job = 0;
    s = mb_rec_to_json(&mb_type_command, c, &opts);
    if (!s) s = mb_job_create(sc->cmd_db, a.id, type, mb_buf_cstr(&opts), &job);
    if (s == MB_ERR_BUSY) {
        char why[300]; /* mb_err_last() is the buffer mb_errf writes */
        snprintf(why, sizeof why, "%s", mb_err_last());
        mb_errf(s, "%s refused for account '%s': %s", type, a.name, why);
    }
    if (!s) {
        char j[24];
        MB_INFO(mb_u64s(j, job), a.name, "%s requested: %s", type, mb_buf_cstr(&opts));
        mb_scan_wake(sc);
        s = mb_buf_printf(reply, "{\"ok\":true,\"job\":%" PRIu64 "}", job);
    }
    mb_buf_free(&opts);
    mb_account_free(&a);
    return s;
}

/* schedule.set: every folder of the account (the account's interval, which
 * folders without their own follow) or the folders named. */
static mb_status cmd_schedule_set(mb_scan *sc, mb_rec_command *c, mb_buf *reply)
{
    if (!c->account || !*c->account)
        return mb_errf(MB_ERR_INVALID, "schedule.set needs \"account\"");
    if (!c->every || !*c->every)
        return mb_errf(MB_ERR_INVALID, "schedule.set needs \"every\": 10m, 2h, 1d, off or auto");
    char secs[24];
    const char *every = secs; /* NULL: auto */
    int64_t n = 0;
    if (!strcmp(c->every, "auto"))
        every = NULL;
    else if (strcmp(c->every, "off") && (mb_parse_duration(c->every, &n) || n < 60))
        return mb_errf(MB_ERR_INVALID, "schedule.set: every '%s': expected an interval of at "
                                       "least 1m (10m, 2h, 1d), off or auto", c->every);
    snprintf(secs, sizeof secs, "%" PRId64, n);
    mb_account a;
    mb_status s = mb_account_load(sc->cmd_db, NULL, c->account, &a, NULL);
    if (s)
        return s;
    char id[24];
    mb_u64s(id, a.id);
    /* Every name must exist before anything changes. */
    for (size_t i = 0; i < c->folders.n && !s; i++) {
        const char *p[] = {id, c->folders.v[i]};
        PGresult *r;
        s = mb_db_query(sc->cmd_db, "SELECT 1 FROM folders WHERE account_id = $1::bigint "
                        "AND (name = $2 OR remote_name = $2) AND deleted_at IS NULL", 2, p, &r);
        if (!s && PQntuples(r) == 0)
            s = mb_errf(MB_ERR_NOTFOUND, "account '%s' has no folder '%s' (`mailbus schedule "
                        "%s` lists them)", a.name, c->folders.v[i], a.name);
        if (!s)
            PQclear(r);
    }
    const char *p[] = {id, every, NULL};
    for (size_t i = 0; i < c->folders.n && !s; i++) {
        p[2] = c->folders.v[i];
        s = mb_db_query(sc->cmd_db, "UPDATE folders SET sync_every = make_interval(secs => "
                        "$2::float8), next_sync_at = NULL WHERE account_id = $1::bigint "
                        "AND (name = $3 OR remote_name = $3) AND deleted_at IS NULL", 3, p, NULL);
    }
    if (!s && !c->folders.n)
        s = mb_db_query(sc->cmd_db, "WITH a AS (UPDATE accounts SET sync_every = make_interval("
                        "secs => $2::float8) WHERE id = $1::bigint) UPDATE folders "
                        "SET next_sync_at = NULL WHERE account_id = $1::bigint", 2, p, NULL);
    if (!s) {
        MB_INFO(NULL, a.name, "schedule set: %s every %s", c->folders.n ? "folders" : "account",
                c->every);
        s = mb_buf_printf(reply, "{\"ok\":true,\"account\":");
        if (!s) s = mb_buf_json_str(reply, a.name, strlen(a.name));
        if (!s) s = mb_buf_printf(reply, ",\"folders\":%zu,\"every\":", c->folders.n);
        if (!s) s = mb_buf_json_str(reply, c->every, strlen(c->every));
        if (!s) s = mb_buf_puts(reply, "}");
    }
    mb_account_free(&a);
    return s;
}

static mb_status cmd_transition(mb_scan *sc, mb_rec_command *c, const char *from,
                                const char *to, mb_buf *reply)
{
    uint64_t job;
    mb_status s = job_arg(c, &job);
    if (s)
        return s;
    char j[24];
    mb_u64s(j, job);
    const char *p[] = {j, to, from};
    PGresult *r;
    s = mb_db_query(sc->cmd_db,
                    "UPDATE sync_jobs SET status = $2, updated_at = now(), "
                    "finished_at = CASE WHEN $2 = 'cancelled' THEN now() END "
                    "WHERE id = $1::bigint AND status = ANY(string_to_array($3, ',')) RETURNING id",
                    3, p, &r);
    if (s)
        return s;
    int n = PQntuples(r);
    PQclear(r);
    if (n == 0) {
        mb_job_info info;
        if ((s = mb_job_get(sc->cmd_db, job, &info)))
            return s;
        return mb_errf(MB_ERR_INVALID, "job %s is %s: cannot go to %s", j, info.status, to);
    }
    MB_INFO(j, NULL, "job %s", to);
    return mb_buf_printf(reply, "{\"ok\":true,\"job\":%s,\"status\":\"%s\"}", j, to);
}

static mb_status cmd_status(mb_scan *sc, mb_rec_command *c, mb_buf *reply)
{
    uint64_t job;
    mb_status s = job_arg(c, &job);
    if (s)
        return s;
    mb_rec_event ev;
    if ((s = mb_job_read(sc->cmd_db, job, &ev)))
        return s;
    /* A job that failed or was cancelled got no last recount from the
     * coordinator: once, here (it changes no more). */
    if (!strcmp(ev.status, "failed") || !strcmp(ev.status, "cancelled")) {
        mb_rec_free(&mb_type_event, &ev);
        if ((s = mb_job_refresh(sc->cmd_db, job, &ev)))
            return s;
    }
    s = mb_buf_puts(reply, "{\"ok\":true,\"progress\":");
    if (!s) s = mb_rec_to_json(&mb_type_event, &ev, reply);
    if (!s) s = mb_buf_puts(reply, "}");
    mb_rec_free(&mb_type_event, &ev);
    return s;
}

void mb_scan_command(void *ctx, const char *subject, const void *data, size_t len, mb_buf *reply)
{
    mb_scan *sc = ctx;
    mb_rec_command c;
    const char *op = strstr(subject, ".cmd.");
    op = op ? op + 5 : subject;
    mb_status s = mb_rec_decode_auto(&mb_type_command, data, len, &c);
    if (s) {
        MB_WARN(NULL, NULL, "bad command on %s: %s", subject, mb_err_last());
        reply_error(reply, mb_err_last());
        return;
    }
    pthread_mutex_lock(&sc->cmd_mu);
    if (!strcmp(op, "import.start"))
        s = cmd_start(sc, &c, "import", reply);
    else if (!strcmp(op, "sync.start"))
        s = cmd_start(sc, &c, "sync", reply);
    else if (!strcmp(op, "import.pause"))
        s = cmd_transition(sc, &c, "running", "paused", reply);
    else if (!strcmp(op, "import.resume"))
        s = cmd_transition(sc, &c, "paused", "running", reply);
    else if (!strcmp(op, "import.cancel"))
        s = cmd_transition(sc, &c, "pending,scanning,running,paused", "cancelled", reply);
    else if (!strcmp(op, "import.status"))
        s = cmd_status(sc, &c, reply);
    else if (!strcmp(op, "schedule.set"))
        s = cmd_schedule_set(sc, &c, reply);
    else if (!strncmp(op, "dlq.", 4))
        s = mb_scan_dlq_command(sc->st->bus, op, &c, reply);
    else
        s = mb_errf(MB_ERR_INVALID, "unknown command '%s' (import.start, sync.start, "
                                    "import.pause, import.resume, import.cancel, import.status, "
                                    "schedule.set, dlq.list, dlq.show, dlq.retry, dlq.purge)", op);
    pthread_mutex_unlock(&sc->cmd_mu);
    if (s) {
        MB_WARN(c.job, c.account, "command %s: %s", op, mb_err_last());
        reply_error(reply, mb_err_last());
    }
    mb_rec_free(&mb_type_command, &c);
}
