/* scan.c — scanning one job's account: list folders with their roles, open
 * each selected one read-only, record UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ,
 * read every message's UID, size, internal date and flags in one pass,
 * written to Postgres in batches of SCAN_BATCH as they arrive (memory stays
 * bounded), then cut into chunks (job.c). A job interrupted by a crash is
 * simply scanned again: nothing is published before the scan completes
 * (except the few new messages of a sync's folder, which sync.c downloads
 * and hands on itself; a sync run again skips the folders it finished).
 * The scan of a job is a lease (lease.h), renewed as the scan goes on: a
 * copy that died leaves it to another once the lease expires. Its IMAP
 * connection holds a connection slot (connlimit.h), as fetch's do. */
#include "schemas/schema.h"
#include "sources/account.h"
#include "sources/connlimit.h"
#include "stages/common/job.h"
#include "stages/common/lease.h"
#include "stages/scan/scan.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Messages held before they are written: ~100 bytes each. */
#define SCAN_BATCH 5000

static void batch_clear(mb_scan_rec *fs)
{
    for (size_t i = 0; i < fs->n; i++) {
        for (size_t k = 0; k < fs->v[i].flags.n; k++)
            free(fs->v[i].flags.v[k]);
        free(fs->v[i].flags.v);
    }
    fs->n = 0;
}

/* Renew the scan lease when a third of its TTL has passed; a lease lost to
 * another copy (this one stalled past its expiry) stops this scan. */
mb_status mb_scan_keep_lease(mb_scan_rec *fs)
{
    if (mb_conn_slot_renew(fs->slot) == MB_ERR_NOTFOUND) /* transient: scanned again */
        return mb_errf(MB_ERR_NET, "IMAP connection slot lost (%s)", mb_err_last());
    int64_t now = mb_mono_ms();
    if (now - fs->renewed_ms < mb_lease_ttl_ms() / 3)
        return MB_OK;
    bool mine;
    mb_status s = mb_lease_take(fs->db, fs->lease, &mine);
    if (s)
        return s;
    if (!mine)
        return mb_errf(MB_ERR_STOPPED, "lease %s was taken over: another copy scans the job",
                       fs->lease);
    fs->renewed_ms = now;
    return MB_OK;
}

static mb_status batch_write(mb_scan_rec *fs)
{
    mb_status s = mb_scan_keep_lease(fs);
    if (!s) s = mb_job_folder_add(fs->db, fs->job, fs->folder_id, fs->v, fs->n);
    batch_clear(fs);
    return s;
}

/* Test-only: MAILBUS_FAULT_SCAN_FOLDER_DELAY_MS=N sleeps N ms after each
 * folder is recorded, so a test can kill the scan in the middle. */
void mb_scan_fault_folder_delay(void)
{
    long ms = 0;
    if (mb_env_int("MAILBUS_FAULT_SCAN_FOLDER_DELAY_MS", 0, 0, 600000, &ms) || ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

mb_status mb_scan_rec_msg(void *ctx, const mb_msg_info *m)
{
    mb_scan_rec *fs = ctx;
    if (fs->n == SCAN_BATCH) {
        mb_status s = batch_write(fs);
        if (s)
            return s;
    }
    mb_fetch_item *it = &fs->v[fs->n];
    memset(it, 0, sizeof *it);
    it->uid = m->uid;
    it->size = m->size;
    it->internal_date = m->internal_date;
    fs->n++;
    fs->total++;
    if (m->nflags) {
        if (!(it->flags.v = calloc(m->nflags, sizeof(char *))))
            return mb_errf(MB_ERR_NOMEM, "scan: flags");
        for (size_t i = 0; i < m->nflags; i++) {
            if (!(it->flags.v[i] = mb_strdup(m->flags[i])))
                return MB_ERR_NOMEM;
            it->flags.n++;
        }
    }
    return MB_OK;
}

mb_status mb_scan_rec_init(mb_scan_rec *r, mb_db *db, uint64_t job, const char *lease,
                           mb_conn_slot *slot)
{
    memset(r, 0, sizeof *r);
    r->db = db;
    r->job = job;
    r->lease = lease;
    r->slot = slot;
    r->renewed_ms = mb_mono_ms();
    if (!(r->v = calloc(SCAN_BATCH, sizeof *r->v)))
        return mb_errf(MB_ERR_NOMEM, "scan batch of %d", SCAN_BATCH);
    return mb_job_cut_init(db, job, &r->cut);
}

mb_status mb_scan_rec_folder(mb_scan_rec *r, uint64_t folder_id)
{
    batch_clear(r);
    r->folder_id = folder_id;
    r->total = 0;
    return mb_job_folder_begin(r->db, r->job, folder_id);
}

mb_status mb_scan_rec_flush(mb_scan_rec *r)
{
    return batch_write(r);
}

mb_status mb_scan_rec_cut(mb_scan_rec *r)
{
    mb_status s = batch_write(r);
    for (bool more = true; !s && more;) {
        s = mb_scan_keep_lease(r);
        if (!s) s = mb_job_folder_cut(r->db, r->job, r->folder_id, &r->cut, &more);
    }
    batch_clear(r);
    return s;
}

void mb_scan_rec_free(mb_scan_rec *r)
{
    if (r->v)
        batch_clear(r);
    free(r->v);
    r->v = NULL;
}

bool mb_scan_selected(const mb_rec_command *opt, const mb_folder_info *f)
{
    if (f->noselect)
        return false;
    if (opt->folders.n == 0)
        return true;
    for (size_t i = 0; i < opt->folders.n; i++)
        if (!strcmp(opt->folders.v[i], f->name) || (f->display && !strcmp(opt->folders.v[i], f->display)))
            return true;
    return false;
}

/* The folder's row: names and role, kept current; a folder that comes back
 * after it was retired is live again. Its state (UIDVALIDITY, UIDNEXT, ...)
 * is the job's to record (mb_job_folder_state): the row gets it only when
 * the job completes. */
mb_status mb_scan_save_folder(mb_db *db, uint64_t account, const mb_folder_info *f, uint64_t *id)
{
    char a[24], d[2] = {f->delimiter, 0};
    const char *p[] = {mb_u64s(a, account), f->display ? f->display : f->name, f->role,
                       f->delimiter ? d : NULL, f->name};
    PGresult *r;
    mb_status s = mb_db_query(db,
        "INSERT INTO folders (account_id, name, role, delimiter, remote_name, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, now()) "
        "ON CONFLICT (account_id, name) DO UPDATE SET role = EXCLUDED.role, "
        "delimiter = EXCLUDED.delimiter, remote_name = EXCLUDED.remote_name, "
        "deleted_at = NULL, updated_at = now() RETURNING id",
        5, p, &r);
    if (s)
        return s;
    *id = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return MB_OK;
}

/* While waiting for a connection slot (all of the account's or server's are
 * in use): stop when the stage stops. */
static bool slot_tick(void *ctx)
{
    (void)ctx;
    return !mb_bus_stopping();
}

/* An import: every selected folder scanned whole. */
static mb_status import_folders(mb_scan_rec *rec, const mb_account *a, mb_source *src,
                                const mb_rec_command *opt, const mb_folder_info *fl, size_t nf,
                                const char *jobs)
{
    int64_t since, until;
    mb_status s = mb_scan_parse_day(opt->since, &since);
    if (!s) s = mb_scan_parse_day(opt->until, &until);
    size_t chosen = 0;
    for (size_t i = 0; i < nf && !s && !mb_bus_stopping(); i++) {
        if (!mb_scan_selected(opt, &fl[i]))
            continue;
        chosen++;
        const char *shown = fl[i].display ? fl[i].display : fl[i].name;
        int64_t t0 = mb_mono_ms();
        mb_folder_state fs;
        uint64_t folder_id = 0;
        s = mb_source_open_folder(src, fl[i].name, &fs);
        if (!s) s = mb_scan_save_folder(rec->db, a->id, &fl[i], &folder_id);
        if (!s && fl[i].problem)
            mb_job_problem(rec->db, rec->job, a->id, "scan", fl[i].problem);
        if (!s) s = mb_scan_rec_folder(rec, folder_id);
        if (!s) s = mb_source_scan(src, since, until, mb_scan_rec_msg, rec);
        if (!s) s = mb_scan_rec_cut(rec);
        if (!s) {
            mb_job_folder jf = {.uidvalidity = fs.uidvalidity, .uidnext = fs.uidnext,
                                .highest_modseq = fs.highest_modseq, .message_count = fs.exists,
                                .method = "scan", .added = rec->total,
                                .duration_ms = mb_mono_ms() - t0};
            s = mb_job_folder_state(rec->db, rec->job, folder_id, &jf);
        }
        if (!s)
            mb_scan_fault_folder_delay();
        if (!s)
            MB_INFO(jobs, a->name, "scanned %s: %zu messages (uidvalidity %" PRIu64
                    ", highestmodseq %" PRIu64 ")", shown, rec->total, fs.uidvalidity,
                    fs.highest_modseq);
        else
            mb_err_wrap(s, "folder '%s'", shown);
    }
    if (!s && opt->folders.n && chosen < opt->folders.n)
        s = mb_errf(MB_ERR_NOTFOUND, "%zu of the %zu requested folders do not exist on the server",
                    opt->folders.n - chosen, opt->folders.n);
    return s;
}

/* Connect (holding a connection slot), list the folders, and import or
 * sync them; returns MB_ERR_AUTH etc. for the job error. */
static mb_status scan_account(mb_scan_rec *rec, const mb_sync_ctx *cx, mb_source *src,
                              const mb_rec_command *opt, bool sync)
{
    const mb_account *a = cx->a;
    const char *jobs = cx->jobs;
    /* None free within MAILBUS_IMAP_SLOT_WAIT_MS is a transient failure: the
     * job stays scanning and is tried again. */
    long wait_ms = 0;
    mb_status s = mb_env_int("MAILBUS_IMAP_SLOT_WAIT_MS", 30000, 0, 3600000L, &wait_ms);
    if (!s) s = mb_conn_slot_take(rec->db, a->id, a->host, a->port, wait_ms, slot_tick, NULL,
                                  rec->slot);
    if (!s) s = mb_source_connect(src);
    mb_folder_info *fl = NULL;
    size_t nf = 0;
    if (!s) s = mb_source_list_folders(src, &fl, &nf);
    if (!s && sync)
        s = mb_sync_folders(rec, cx, src, opt, fl, nf);
    else if (!s)
        s = import_folders(rec, a, src, opt, fl, nf, jobs);
    mb_folder_info_free(fl, nf);
    return s;
}

/* Whether a failed scan is worth trying again later rather than failing
 * the job: the mail server or Postgres was unreachable, not wrong. */
static bool transient(mb_db *db, mb_status s)
{
    return s == MB_ERR_NET || s == MB_ERR_TIMEOUT || (s == MB_ERR_DB && mb_db_retryable(db));
}

/* How long job's scan has been failing transiently, counting from now if it
 * was not; ok forgets it. */
static int64_t failing_for(mb_scan *sc, uint64_t job, bool ok)
{
    int64_t now = mb_mono_ms(), ms = 0;
    pthread_mutex_lock(&sc->claim_mu);
    int at = -1, free_ = -1;
    for (int i = 0; i < (int)MB_ARRAY_LEN(sc->failing); i++) {
        if (sc->failing[i].job == job)
            at = i;
        else if (free_ < 0 && (!sc->failing[i].job ||
                               now - sc->failing[i].since_ms > 2 * sc->give_up_ms))
            free_ = i; /* free, or left by a job cancelled while it failed */
    }
    if (ok) {
        if (at >= 0)
            sc->failing[at].job = 0;
    } else if (at >= 0) {
        ms = now - sc->failing[at].since_ms;
    } else if (free_ >= 0) { /* a full table counts again later */
        sc->failing[free_].job = job;
        sc->failing[free_].since_ms = now;
    }
    pthread_mutex_unlock(&sc->claim_mu);
    return ms;
}

mb_status mb_scan_job(mb_scan *sc, mb_db *db, uint64_t job)
{
    char jobs[24];
    mb_u64s(jobs, job);
    /* One scanner per job, whichever copy of the stage gets there first. */
    char lease[MB_LEASE_NAME_MAX];
    mb_lease_job_name(lease, "scan", job);
    const char *lp[] = {jobs};
    bool mine;
    mb_status s = mb_lease_take(db, lease, &mine);
    if (s || !mine)
        return s;

    PGresult *o = NULL;
    mb_rec_command opt = {0};
    mb_account a = {0};
    char *secret = NULL;
    mb_source *src = NULL;
    mb_conn_slot slot = {.account_slot = -1, .host_slot = -1};
    mb_job_info info;
    s = mb_job_get(db, job, &info);
    if (!s && strcmp(info.status, "scanning")) {
        failing_for(sc, job, true); /* cancelled, or done by another copy meanwhile */
        goto out;
    }
    if (!s) s = mb_db_query(db, "SELECT options::text FROM sync_jobs WHERE id = $1::bigint", 1, lp, &o);
    if (!s) {
        const char *js = PQgetvalue(o, 0, 0);
        s = mb_rec_from_json(&mb_type_command, js, strlen(js), &opt);
    }
    char acct[24];
    if (!s) s = mb_account_load(db, &sc->st->keys, mb_u64s(acct, info.account_id), &a, &secret);
    if (!s) s = mb_account_source(&a, secret, &src);
    mb_scan_rec rec = {0};
    if (!s) s = mb_scan_rec_init(&rec, db, job, lease, &slot);
    if (!s) {
        MB_INFO(jobs, a.name, info.sync ? "syncing" : "scanning");
        mb_sync_ctx cx = {.st = sc->st, .a = &a, .secret = secret, .jobs = jobs};
        s = scan_account(&rec, &cx, src, &opt, info.sync);
    }
    mb_scan_rec_free(&rec);
    if (s == MB_ERR_STOPPED || (s == MB_OK && mb_bus_stopping())) {
        if (s)
            MB_WARN(jobs, a.name, "scan stopped: %s", mb_err_last());
        s = MB_OK; /* picked up again at the next start, or by the lease's new holder */
        goto out;
    }
    if (!s) {
        failing_for(sc, job, true);
        s = mb_job_scan_done(db, job);
        if (!s)
            mb_scan_wake_coordinator(sc);
        mb_rec_event ev;
        if (!s && !mb_job_refresh(db, job, &ev)) {
            MB_INFO(jobs, a.name, "scan complete: %" PRIu64 " messages, %" PRIu64 " bytes",
                    ev.total, ev.total_bytes);
            if (mb_stage_event(sc->st->bus, "scan", "progress", &ev))
                MB_WARN(jobs, a.name, "progress event: %s", mb_err_last());
            mb_rec_free(&mb_type_event, &ev);
        }
    } else {
        char msg[600];
        snprintf(msg, sizeof msg, "%s", mb_err_last());
        MB_ERROR(jobs, a.name ? a.name : acct, "scan failed: %s", msg);
        /* A transient failure is tried again, for MAILBUS_SCAN_GIVE_UP_MS:
         * a server unreachable that long is not coming back by itself, and
         * the job must end, failed with the reason. */
        char why[700];
        snprintf(why, sizeof why, "%s", msg);
        bool again = transient(db, s);
        int64_t failing_ms = again ? failing_for(sc, job, false) : 0;
        if (again && failing_ms >= sc->give_up_ms) {
            snprintf(why, sizeof why, "gave up after %lld s of failed scans: %s",
                     (long long)(failing_ms / 1000), msg);
            failing_for(sc, job, true);
            again = false;
        }
        if (again) {
            /* Leave the job scanning; the loop tries again after a pause (no
             * retry storm against a server that is down). The problem is
             * recorded once per run of identical failures (job.h). */
            mb_job_problem(db, job, info.account_id, "scan", msg);
            for (int i = 0; i < 20 && !mb_bus_stopping(); i++) {
                struct timespec ts = {0, 250 * 1000000L};
                nanosleep(&ts, NULL);
            }
            s = MB_OK;
        } else {
            s = mb_job_set_status(db, job, "failed", why);
            mb_rec_event ev;
            if (!s && !mb_job_refresh(db, job, &ev)) {
                mb_stage_event(sc->st->bus, "scan", "failed", &ev);
                mb_rec_free(&mb_type_event, &ev);
            }
        }
    }
out:
    if (o)
        PQclear(o);
    mb_source_free(src);
    mb_conn_slot_release(&slot); /* after the connection is dropped */
    mb_account_secret_free(secret);
    mb_account_free(&a);
    mb_rec_free(&mb_type_command, &opt);
    mb_lease_release(db, lease);
    return s;
}
