/* trigger.c — a change announced on an account's INBOX becomes a sync of
 * that folder (idle.h).
 *
 * The request is the one the CLI sends (`mailbus sync ACCOUNT --folders
 * INBOX`): <p>.cmd.sync.start with {"account":…,"folders":[…],
 * "origin":"idle"}, answered by the scan stage. While the account has another
 * active job (its import, a sync the scheduler or a person started) the
 * request is refused; the change stays pending and is asked for again about
 * every second until a sync is accepted — a sync already running may have
 * read INBOX before the new message arrived, so one more is needed. Changes
 * announced while one is pending make no further request: however many, they
 * cost one sync. When nobody answers (no scan stage running), no request is
 * sent for a few seconds, so a stalled bus does not hold the watcher loop up
 * once per pending account. */
#include "bus/serve.h"
#include "schemas/json.h"
#include "schemas/schema.h"
#include "stages/idle/idle.h"
#include "util/clock.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#define REQUEST_TIMEOUT_MS 5000
#define BUSY_RETRY_MS 1000     /* the account has an active job */
#define REFUSED_RETRY_MS 30000 /* refused for another reason (logged each time) */
#define NOBODY_RETRY_MS 5000   /* no answer: no request to anybody for this long */

void mb_idle_changed(mb_idle *w, mb_idle_acct *a, const char *how)
{
    (void)w;
    if (a->pending) {
        MB_DEBUG(NULL, a->name, "%s changed (%s); a sync is pending already", a->folder, how);
        return;
    }
    MB_INFO(NULL, a->name, "%s changed (%s): asking for a sync", a->folder, how);
    a->pending = true;
    a->refusal_logged = false;
    a->sync_at_ms = mb_mono_ms();
}

/* Send sync.start for a's folder; *job: the job started. Refused: MB_ERR_BUSY
 * because the account has an active job, MB_ERR_INVALID for anything else
 * (the account is gone...); no answer: MB_ERR_TIMEOUT or MB_ERR_BUS. */
static mb_status request(mb_idle *w, mb_idle_acct *a, uint64_t *job)
{
    *job = 0;
    char *folders[] = {a->folder};
    mb_rec_command c = {.op = "sync.start", .account = a->name, .origin = "idle",
                        .folders = {.v = folders, .n = 1}};
    mb_buf req = MB_BUF_INIT, rep = MB_BUF_INIT;
    mb_json *j = NULL;
    mb_status s = mb_rec_to_json(&mb_type_command, &c, &req);
    if (!s) s = mb_bus_request(w->st->bus, "cmd.sync.start", req.data, req.len,
                               REQUEST_TIMEOUT_MS, &rep);
    if (!s) s = mb_json_parse(rep.data ? rep.data : "", rep.len, &j);
    if (!s) {
        const mb_json *ok = mb_json_get(j, "ok");
        if (ok && ok->kind == MB_JSON_BOOL && ok->boolean) {
            mb_json_u64(mb_json_get(j, "job"), job);
        } else {
            const mb_json *e = mb_json_get(j, "error");
            const char *text = e && e->kind == MB_JSON_STR ? e->str : "refused";
            /* stages/common/job.c: "… already has an active job: …", or "had
             * an active job a moment ago: try again". */
            s = mb_errf(strstr(text, "an active job") ? MB_ERR_BUSY : MB_ERR_INVALID, "%s", text);
        }
    }
    mb_json_free(j);
    mb_buf_free(&req);
    mb_buf_free(&rep);
    return s;
}

int64_t mb_idle_trigger(mb_idle *w)
{
    int64_t now = mb_mono_ms(), next = INT64_MAX;
    for (size_t i = 0; i < w->n; i++) {
        mb_idle_acct *a = w->acct[i];
        if (!a->pending)
            continue;
        if (a->sync_at_ms > now || w->bus_quiet_until_ms > now) {
            int64_t at = a->sync_at_ms > w->bus_quiet_until_ms ? a->sync_at_ms
                                                                : w->bus_quiet_until_ms;
            next = at < next ? at : next;
            continue;
        }
        uint64_t job;
        char js[24];
        mb_status s = request(w, a, &job);
        now = mb_mono_ms();
        if (!s) {
            MB_INFO(mb_u64s(js, job), a->name, "sync of %s started", a->folder);
            a->pending = false;
            continue;
        }
        if (s == MB_ERR_BUSY) {
            if (!a->refusal_logged)
                MB_INFO(NULL, a->name, "sync of %s refused: %s; asking again every second",
                        a->folder, mb_err_last());
            a->refusal_logged = true;
            a->sync_at_ms = now + BUSY_RETRY_MS;
        } else if (s == MB_ERR_INVALID) {
            MB_WARN(NULL, a->name, "sync of %s refused: %s; asking again in %d s", a->folder,
                    mb_err_last(), REFUSED_RETRY_MS / 1000);
            a->sync_at_ms = now + REFUSED_RETRY_MS;
        } else {
            MB_WARN(NULL, a->name, "sync of %s: %s; asking again in %d s", a->folder,
                    mb_err_last(), NOBODY_RETRY_MS / 1000);
            a->sync_at_ms = now + NOBODY_RETRY_MS;
            w->bus_quiet_until_ms = now + NOBODY_RETRY_MS;
        }
        next = a->sync_at_ms < next ? a->sync_at_ms : next;
    }
    return next;
}
