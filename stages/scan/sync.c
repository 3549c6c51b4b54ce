/* sync.c — a sync job's folders: what changed on the server since the last
 * completed job, found by the source's changes operation (QRESYNC,
 * CONDSTORE, or a UID-set comparison: sources/source.h) and applied here.
 *
 *   flags     changed flags go to the message's location (and the email);
 *   deleted   a location the server no longer has is removed (job_gone keeps
 *             it for the history); an email left without any location is
 *             marked deleted_at and purged later by the cleanup job;
 *   new       messages (UID >= the folder's last UIDNEXT) go through fetch,
 *             parse, store and avscan as in an import (mb_scan_rec), except
 *             those already stored at the same UIDVALIDITY and UID (a UID's
 *             content never changes);
 *   folders   LIST each sync: a folder without a row (or without state: its
 *             import never completed) is scanned whole; one whose
 *             UIDVALIDITY changed too, after its old locations are retired;
 *             a folder gone from the server is retired with its locations;
 *             a new name whose UIDVALIDITY equals exactly one vanished
 *             folder's (and whose UIDNEXT did not go back) is that folder
 *             renamed: it keeps its row, so its history and schedule.
 *             A sync of some folders reads only those, unless it asks for
 *             discovery (the scheduler's syncs): then also folders renamed
 *             and folders new on the server (unless the account's import
 *             named its folders: an account imported with --folders keeps
 *             to them), and it retires those gone.
 *
 * Comparisons happen in Postgres, against job_listing, written in batches as
 * the server's answers stream in: memory stays flat on a 1M-message folder.
 * Every step is idempotent, and the folders' new state is applied only when
 * the job completes (migration 0006), so a sync that dies half-way is simply
 * run again and finds what is left to do. A moved message is a deleted
 * location plus a new one: the email row is the same (it is keyed by its
 * bytes), but IMAP gives a third party no way to know the new UID holds the
 * same bytes before fetching them, so they are fetched again. */
#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/scan/scan.h"
#include "util/clock.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Entries of job_listing or vanished ranges held before they are written. */
#define LIST_BATCH 5000

static const mb_db_stmt stmts[] = {
    /* Every folder of the account with the state of the last completed job,
     * the server's message count then included (not the locations held:
     * counting those took 40-70 ms at 100,000 messages, and "did messages go
     * since" is a question about the server's count). */
    {"sync_folders", 1,
     "SELECT f.id, coalesce(f.remote_name, f.name), f.name, coalesce(f.uidvalidity, 0), "
     "coalesce(f.uidnext, 0), coalesce(f.highest_modseq, 0), f.deleted_at IS NOT NULL, "
     "f.message_count FROM folders f WHERE f.account_id = $1 ORDER BY f.id"},
    /* Did the account's last completed import name its folders? */
    {"sync_import_chose", 1,
     "SELECT coalesce(jsonb_array_length(options->'folders'), 0) > 0 FROM sync_jobs "
     "WHERE account_id = $1 AND type = 'import' AND status = 'completed' "
     "ORDER BY id DESC LIMIT 1"},
    {"sync_listing_clear", 2, "DELETE FROM job_listing WHERE job_id = $1 AND folder_id = $2"},
    {"sync_listing_add", 4,
     "INSERT INTO job_listing (job_id, folder_id, uid, flags) "
     "SELECT DISTINCT ON (u.uid) $1, $2, u.uid, u.flags::text[] "
     "FROM unnest($3::bigint[], $4::text[]) WITH ORDINALITY AS u(uid, flags, i) "
     "ORDER BY u.uid, u.i DESC "
     "ON CONFLICT (job_id, folder_id, uid) DO UPDATE SET flags = EXCLUDED.flags"},
    /* The whole-folder paths compare against what the scan found. */
    {"sync_listing_from_scan", 2,
     "INSERT INTO job_listing (job_id, folder_id, uid, flags) "
     "SELECT job_id, folder_id, uid, flags FROM job_messages WHERE job_id = $1 AND folder_id = $2 "
     "ON CONFLICT (job_id, folder_id, uid) DO UPDATE SET flags = EXCLUDED.flags"},
    /* $3 uidvalidity. Flags are compared as sets. The email's flags follow
     * the location's (the last one written wins for a message in two
     * folders, as in the store). */
    {"sync_flags", 3,
     "WITH u AS (UPDATE email_locations l SET flags = j.flags, synced_at = now() "
     "FROM job_listing j WHERE j.job_id = $1 AND j.folder_id = $2 AND l.folder_id = $2 "
     "AND l.uidvalidity = $3 AND l.uid = j.uid "
     "AND NOT (l.flags @> j.flags AND l.flags <@ j.flags) RETURNING l.email_id, l.flags), "
     "e AS (UPDATE emails SET flags = u.flags FROM u WHERE emails.id = u.email_id) "
     "SELECT count(*) FROM u"},
    /* Locations gone: of another UIDVALIDITY, or below $4 (the last
     * UIDNEXT) and not listed. */
    {"sync_gone_unlisted", 4,
     "WITH d AS (DELETE FROM email_locations l WHERE l.folder_id = $2 AND (l.uidvalidity <> $3 "
     "OR (l.uid < $4 AND NOT EXISTS (SELECT 1 FROM job_listing j WHERE j.job_id = $1 "
     "AND j.folder_id = $2 AND j.uid = l.uid))) RETURNING l.uid, l.email_id) "
     "INSERT INTO job_gone (job_id, folder_id, uid, email_id) SELECT $1, $2, uid, email_id FROM d "
     "ON CONFLICT DO NOTHING"},
    {"sync_gone_ranges", 5,
     "WITH d AS (DELETE FROM email_locations l USING unnest($4::bigint[], $5::bigint[]) AS r(lo, hi) "
     "WHERE l.folder_id = $2 AND l.uidvalidity = $3 AND l.uid BETWEEN r.lo AND r.hi "
     "RETURNING l.uid, l.email_id) "
     "INSERT INTO job_gone (job_id, folder_id, uid, email_id) SELECT $1, $2, uid, email_id FROM d "
     "ON CONFLICT DO NOTHING"},
    {"sync_gone_all", 2,
     "WITH d AS (DELETE FROM email_locations l WHERE l.folder_id = $2 RETURNING l.uid, l.email_id) "
     "INSERT INTO job_gone (job_id, folder_id, uid, email_id) SELECT $1, $2, uid, email_id FROM d "
     "ON CONFLICT DO NOTHING"},
    /* After the locations are gone (a statement of its own: a statement
     * does not see its own deletions). */
    {"sync_mark_deleted", 2,
     "UPDATE emails e SET deleted_at = now() FROM job_gone g WHERE g.job_id = $1 "
     "AND g.folder_id = $2 AND e.id = g.email_id AND e.deleted_at IS NULL "
     "AND NOT EXISTS (SELECT 1 FROM email_locations l WHERE l.email_id = e.id)"},
    /* New messages already stored at this UIDVALIDITY and UID (a run again
     * after a crash, a folder whose import never completed) need no fetch. */
    {"sync_prune_stored", 3,
     "DELETE FROM job_messages m WHERE m.job_id = $1 AND m.folder_id = $2 AND EXISTS "
     "(SELECT 1 FROM email_locations l WHERE l.folder_id = $2 AND l.uidvalidity = $3 "
     "AND l.uid = m.uid)"},
    {"sync_rename", 4,
     "WITH old AS (UPDATE folders SET name = name || ' (retired ' || id || ')', remote_name = NULL, "
     "updated_at = now() "
     "WHERE account_id = $4 AND name = $2 AND deleted_at IS NOT NULL AND id <> $1) "
     "UPDATE folders SET name = $2, remote_name = $3, deleted_at = NULL, updated_at = now() "
     "WHERE id = $1"},
    {"sync_retire", 1,
     "UPDATE folders SET deleted_at = now(), updated_at = now() WHERE id = $1"},
};

mb_status mb_sync_prepare(mb_db *db)
{
    return mb_db_prepare_all(db, stmts, MB_ARRAY_LEN(stmts));
}

/* ---- the account's folders as Postgres knows them ----------------------- */

typedef struct {
    uint64_t id;
    char *remote, *name;     /* owned */
    mb_folder_state state;   /* of the last completed job; uidvalidity 0: none */
    bool retired;
    bool matched;            /* a server folder is this one (by name, or renamed) */
} known_folder;

typedef struct {
    known_folder *v;
    size_t n;
} known_list;

static void known_free(known_list *k)
{
    for (size_t i = 0; i < k->n; i++) {
        free(k->v[i].remote);
        free(k->v[i].name);
    }
    free(k->v);
    k->v = NULL;
    k->n = 0;
}

static mb_status known_load(mb_db *db, uint64_t account, known_list *k)
{
    char a[24];
    const char *p[] = {mb_u64s(a, account)};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(db, "sync_folders", 1, p, &r);
    if (s)
        return s;
    int rows = PQntuples(r);
    k->v = calloc(rows ? (size_t)rows : 1, sizeof *k->v);
    if (!k->v)
        s = mb_errf(MB_ERR_NOMEM, "%d folders", rows);
    for (int i = 0; i < rows && !s; i++) {
        known_folder *f = &k->v[k->n++];
        f->id = strtoull(PQgetvalue(r, i, 0), NULL, 10);
        f->remote = mb_strdup(PQgetvalue(r, i, 1));
        f->name = mb_strdup(PQgetvalue(r, i, 2));
        f->state.uidvalidity = strtoull(PQgetvalue(r, i, 3), NULL, 10);
        f->state.uidnext = strtoull(PQgetvalue(r, i, 4), NULL, 10);
        f->state.highest_modseq = strtoull(PQgetvalue(r, i, 5), NULL, 10);
        f->retired = PQgetvalue(r, i, 6)[0] == 't';
        uint64_t count = strtoull(PQgetvalue(r, i, 7), NULL, 10);
        f->state.exists = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        if (!f->remote || !f->name)
            s = MB_ERR_NOMEM;
    }
    PQclear(r);
    if (s)
        known_free(k);
    return s;
}

static known_folder *known_by_remote(known_list *k, const char *remote)
{
    for (size_t i = 0; i < k->n; i++)
        if (!strcmp(k->v[i].remote, remote))
            return &k->v[i];
    return NULL;
}

/* ---- one folder ---------------------------------------------------------- */

/* The changes of one folder, on their way to Postgres. */
typedef struct {
    mb_scan_rec *rec;      /* new messages */
    uint64_t job, folder_id, uidvalidity;
    char j[24], f[24], v[24];
    mb_pgarr uids, flags, one;   /* listing batch (changed or present) */
    mb_pgarr lo, hi;             /* vanished batch */
} folder_sync;

static mb_status flush_listing(folder_sync *fs)
{
    if (fs->uids.n == 0)
        return MB_OK;
    mb_status s = mb_scan_keep_lease(fs->rec);
    const char *p[] = {fs->j, fs->f, mb_pgarr_cstr(&fs->uids), mb_pgarr_cstr(&fs->flags)};
    if (!s) s = mb_db_exec_prepared(fs->rec->db, "sync_listing_add", 4, p, NULL);
    mb_pgarr_reset(&fs->uids);
    mb_pgarr_reset(&fs->flags);
    return s;
}

static mb_status flush_vanished(folder_sync *fs)
{
    if (fs->lo.n == 0)
        return MB_OK;
    const char *p[] = {fs->j, fs->f, fs->v, mb_pgarr_cstr(&fs->lo), mb_pgarr_cstr(&fs->hi)};
    mb_status s = mb_db_exec_prepared(fs->rec->db, "sync_gone_ranges", 5, p, NULL);
    mb_pgarr_reset(&fs->lo);
    mb_pgarr_reset(&fs->hi);
    return s;
}

/* changed and present: the message's current flags, into job_listing. */
static mb_status on_listed(void *ctx, const mb_msg_info *m)
{
    folder_sync *fs = ctx;
    mb_pgarr_reset(&fs->one);
    mb_status s = mb_pgarr_add_u64(&fs->uids, m->uid);
    for (size_t i = 0; i < m->nflags && !s; i++)
        s = mb_pgarr_add_str(&fs->one, m->flags[i]);
    if (!s) s = mb_pgarr_add_str(&fs->flags, mb_pgarr_cstr(&fs->one));
    if (!s && fs->uids.n >= LIST_BATCH)
        s = flush_listing(fs);
    return s;
}

static mb_status on_vanished(void *ctx, uint64_t lo, uint64_t hi)
{
    folder_sync *fs = ctx;
    mb_status s = mb_pgarr_add_u64(&fs->lo, lo);
    if (!s) s = mb_pgarr_add_u64(&fs->hi, hi);
    if (!s && fs->lo.n >= LIST_BATCH)
        s = flush_vanished(fs);
    return s;
}

static mb_status on_added(void *ctx, const mb_msg_info *m)
{
    folder_sync *fs = ctx;
    return mb_scan_rec_msg(fs->rec, m);
}

static void folder_sync_free(folder_sync *fs)
{
    mb_pgarr_free(&fs->uids);
    mb_pgarr_free(&fs->flags);
    mb_pgarr_free(&fs->one);
    mb_pgarr_free(&fs->lo);
    mb_pgarr_free(&fs->hi);
}

static uint64_t count_of(PGresult *r)
{
    uint64_t n = PQntuples(r) == 1 ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return n;
}

/* After the server's answers are in: flags from the listing; with a
 * complete listing below `below` (or a whole-folder scan), every location
 * not in it is gone, as is every location of another UIDVALIDITY; emails
 * left without a location are deleted; new messages already stored are not
 * fetched again. */
static mb_status reconcile(folder_sync *fs, bool listed, uint64_t below, uint64_t *flags_changed)
{
    mb_db *db = fs->rec->db;
    char b[24];
    const char *p[] = {fs->j, fs->f, fs->v, mb_u64s(b, below)};
    PGresult *r;
    mb_status s = flush_listing(fs);
    if (!s) s = flush_vanished(fs);
    if (!s) s = mb_db_exec_prepared(db, "sync_flags", 3, p, &r);
    if (!s)
        *flags_changed = count_of(r);
    if (!s && listed)
        s = mb_db_exec_prepared(db, "sync_gone_unlisted", 4, p, NULL);
    if (!s) s = mb_db_exec_prepared(db, "sync_mark_deleted", 2, p, NULL);
    if (!s) s = mb_db_exec_prepared(db, "sync_prune_stored", 3, p, NULL);
    if (!s) s = mb_db_exec_prepared(db, "sync_listing_clear", 2, p, NULL);
    return s;
}

static const char *method_name(int m)
{
    switch (m) {
    case MB_CHANGES_UNCHANGED: return "unchanged";
    case MB_CHANGES_QRESYNC: return "qresync";
    case MB_CHANGES_CONDSTORE: return "condstore";
    case MB_CHANGES_FULL: return "full";
    default: return "reset";
    }
}

/* Sync one server folder: its changes since k's state, or, without a usable
 * state (new folder, import never completed, UIDVALIDITY reset), the whole
 * folder compared with what is held. */
static mb_status sync_folder(mb_scan_rec *rec, uint64_t account, mb_source *src,
                             const mb_folder_info *fi, known_folder *k, const char *event,
                             const char *old_name, const char *jobs, const char *acct)
{
    int64_t t0 = mb_mono_ms();
    mb_db *db = rec->db;
    const char *shown = fi->display ? fi->display : fi->name;
    uint64_t folder_id = k ? k->id : 0;
    mb_status s = MB_OK;
    if (!k || k->retired)
        s = mb_scan_save_folder(db, account, fi, &folder_id);
    if (!s && fi->problem)
        mb_job_problem(db, rec->job, account, "sync", fi->problem);
    folder_sync fs = {.rec = rec, .job = rec->job, .folder_id = folder_id};
    mb_u64s(fs.j, rec->job);
    mb_u64s(fs.f, folder_id);
    const char *p[] = {fs.j, fs.f};
    if (!s) s = mb_scan_rec_folder(rec, folder_id);
    if (!s) s = mb_db_exec_prepared(db, "sync_listing_clear", 2, p, NULL);

    mb_folder_state known = {0};
    if (k && !k->retired && k->state.uidvalidity)
        known = k->state;
    mb_changes_cb cb = {.changed = on_listed, .present = on_listed, .added = on_added,
                        .vanished = on_vanished, .ctx = &fs};
    mb_changes_info ci = {0};
    if (!s) s = mb_source_changes(src, fi->name, &known, &cb, &ci);
    bool whole = !s && (ci.method == MB_CHANGES_RESET || !known.uidvalidity);
    if (whole) {
        /* The folder read again: every message is compared with what is
         * held (locations of another UIDVALIDITY all go). */
        if (!event && known.uidvalidity)
            event = "reset";
        else if (!event && (!k || k->retired))
            event = "created";
        fs.uidvalidity = ci.now.uidvalidity;
        s = mb_source_scan(src, 0, 0, mb_scan_rec_msg, rec);
    } else {
        fs.uidvalidity = known.uidvalidity;
    }
    mb_u64s(fs.v, fs.uidvalidity);
    uint64_t flags_changed = 0;
    if (!s) s = mb_scan_rec_flush(rec);
    if (!s && whole) s = mb_db_exec_prepared(db, "sync_listing_from_scan", 2, p, NULL);
    /* The server's answers are in; what follows is a few short statements:
     * one transaction, one commit (a WAL flush, 5-30 ms on a slow disk)
     * instead of eight. Lost half-way, the job's scan is run again. */
    bool tx = !s && !(s = mb_db_begin(db));
    /* Unchanged: nothing was listed, nothing vanished, nothing is new. */
    if (!s && ci.method != MB_CHANGES_UNCHANGED)
        s = reconcile(&fs, whole || ci.listed, whole ? UINT64_MAX >> 1 : known.uidnext,
                      &flags_changed);
    /* rec->total counts what was scanned; the pruned ones are not added. */
    uint64_t added = 0;
    if (!s) s = mb_scan_rec_cut(rec);
    if (!s && ci.method != MB_CHANGES_UNCHANGED) {
        char jb[24], fo[24];
        const char *q[] = {mb_u64s(jb, rec->job), mb_u64s(fo, folder_id)};
        PGresult *r;
        s = mb_db_query(db, "SELECT count(*) FROM job_messages WHERE job_id = $1::bigint "
                            "AND folder_id = $2::bigint", 2, q, &r);
        if (!s)
            added = count_of(r);
    }
    if (!s) {
        mb_job_folder jf = {.uidvalidity = ci.now.uidvalidity, .uidnext = ci.now.uidnext,
                            .highest_modseq = ci.now.highest_modseq,
                            .message_count = ci.now.exists,
                            .method = whole && !known.uidvalidity ? "scan" : method_name(ci.method),
                            .event = event, .old_name = old_name, .added = added,
                            .flags_changed = flags_changed, .duration_ms = mb_mono_ms() - t0};
        s = mb_job_folder_state(db, rec->job, folder_id, &jf);
    }
    if (tx && s)
        mb_db_rollback(db);
    else if (tx)
        s = mb_db_commit(db);
    folder_sync_free(&fs);
    if (s)
        return mb_err_wrap(s, "folder '%s'", shown);
    MB_INFO(jobs, acct, "synced %s (%s%s%s): %" PRIu64 " new, %" PRIu64 " flags changed",
            shown, whole && !known.uidvalidity ? "scan" : method_name(ci.method),
            event ? ", " : "", event ? event : "", added, flags_changed);
    return MB_OK;
}

/* A folder the server no longer has: its locations go, the row is retired. */
static mb_status retire_folder(mb_scan_rec *rec, known_folder *k, const char *jobs,
                               const char *acct)
{
    char j[24], f[24];
    const char *p[] = {mb_u64s(j, rec->job), mb_u64s(f, k->id)};
    mb_status s = mb_db_exec_prepared(rec->db, "sync_gone_all", 2, p, NULL);
    if (!s) s = mb_db_exec_prepared(rec->db, "sync_mark_deleted", 2, p, NULL);
    mb_job_folder jf = {.method = "deleted", .event = "deleted"};
    if (!s) s = mb_job_folder_state(rec->db, rec->job, k->id, &jf);
    if (!s) s = mb_db_exec_prepared(rec->db, "sync_retire", 1, p + 1, NULL);
    if (s)
        return mb_err_wrap(s, "retiring folder '%s'", k->name);
    MB_INFO(jobs, acct, "folder %s is gone from the server: retired", k->name);
    return MB_OK;
}

/* A selectable server folder without a row of its name: is it a known
 * folder renamed? Exactly one live, unmatched folder with a state must have
 * its UIDVALIDITY, and the UIDNEXT must not have gone back. */
static known_folder *renamed_from(mb_source *src, known_list *k, const mb_folder_info *fi,
                                  mb_status *st)
{
    size_t cands = 0;
    for (size_t i = 0; i < k->n; i++)
        cands += !k->v[i].matched && !k->v[i].retired && k->v[i].state.uidvalidity;
    if (!cands)
        return NULL;
    mb_folder_state none = {0};
    mb_changes_cb cb = {0};
    mb_changes_info ci = {0};
    /* Nothing is known: only the open, which reports the state. */
    if ((*st = mb_source_changes(src, fi->name, &none, &cb, &ci)))
        return NULL;
    known_folder *hit = NULL;
    for (size_t i = 0; i < k->n; i++) {
        known_folder *c = &k->v[i];
        if (c->matched || c->retired || c->state.uidvalidity != ci.now.uidvalidity ||
            ci.now.uidnext < c->state.uidnext)
            continue;
        if (hit)
            return NULL; /* two candidates: cannot tell */
        hit = c;
    }
    return hit;
}

/* A server folder a sync of some folders with discovery (the scheduler's)
 * reads although it was not asked for: one renamed from a known folder, or
 * one that has no row yet (created on the server) — unless the account's
 * import chose its folders: then a folder never imported is not one. */
static bool discovered(const mb_rec_command *opt, const mb_folder_info *f, bool renamed,
                       bool known, bool new_ok)
{
    return opt->discover && opt->folders.n && !f->noselect &&
           (renamed || (!known && new_ok));
}

/* Whether folders new on the server are imported by a sync with discovery:
 * not when the account's last completed import named its folders. */
static mb_status new_folders_wanted(mb_db *db, uint64_t account, bool *out)
{
    char a[24];
    const char *p[] = {mb_u64s(a, account)};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(db, "sync_import_chose", 1, p, &r);
    if (s)
        return s;
    *out = PQntuples(r) == 0 || PQgetvalue(r, 0, 0)[0] != 't';
    PQclear(r);
    return MB_OK;
}

mb_status mb_sync_folders(mb_scan_rec *rec, const mb_account *a, mb_source *src,
                          const mb_rec_command *opt, const mb_folder_info *fl, size_t nf,
                          const char *jobs)
{
    mb_db *db = rec->db;
    known_list k = {0};
    mb_status s = mb_sync_prepare(db);
    if (!s) s = known_load(db, a->id, &k);
    if (s)
        return s;
    /* Which server folder is which row: by name, then renames. */
    known_folder **match = calloc(nf ? nf : 1, sizeof *match);
    char **old_names = calloc(nf ? nf : 1, sizeof *old_names);
    if (!match || !old_names)
        s = mb_errf(MB_ERR_NOMEM, "%zu folders", nf);
    for (size_t i = 0; i < nf && !s; i++) {
        if ((match[i] = known_by_remote(&k, fl[i].name)))
            match[i]->matched = true;
    }
    bool new_ok = true;
    if (!s && opt->discover)
        s = new_folders_wanted(db, a->id, &new_ok);
    size_t chosen = 0;
    for (size_t i = 0; i < nf && !s && !mb_bus_stopping(); i++) {
        if (match[i] || !(mb_scan_selected(opt, &fl[i]) || discovered(opt, &fl[i], true, false, true)))
            continue;
        known_folder *was = renamed_from(src, &k, &fl[i], &s);
        if (!was || s)
            continue;
        char id[24];
        const char *p[] = {mb_u64s(id, was->id), fl[i].display ? fl[i].display : fl[i].name,
                           fl[i].name, NULL};
        char ac[24];
        p[3] = mb_u64s(ac, a->id);
        s = mb_db_exec_prepared(db, "sync_rename", 4, p, NULL);
        if (!s && !(old_names[i] = mb_strdup(was->name)))
            s = MB_ERR_NOMEM;
        if (!s) {
            MB_INFO(jobs, a->name, "folder %s was renamed %s", was->name,
                    fl[i].display ? fl[i].display : fl[i].name);
            was->matched = true;
            match[i] = was;
        }
    }
    for (size_t i = 0; i < nf && !s && !mb_bus_stopping(); i++) {
        if (mb_scan_selected(opt, &fl[i]))
            chosen++;
        else if (!discovered(opt, &fl[i], old_names[i] != NULL, match[i] != NULL, new_ok))
            continue;
        s = sync_folder(rec, a->id, src, &fl[i], match[i], old_names[i] ? "renamed" : NULL,
                        old_names[i], jobs, a->name);
        if (!s)
            mb_scan_fault_folder_delay();
    }
    if (!s && opt->folders.n && chosen < opt->folders.n && !opt->discover)
        s = mb_errf(MB_ERR_NOTFOUND, "%zu of the %zu requested folders do not exist on the server",
                    opt->folders.n - chosen, opt->folders.n);
    /* Folders gone from the server (only a sync that saw every folder can
     * tell: all of them, or some with discovery). */
    bool every = !opt->folders.n || opt->discover;
    for (size_t i = 0; i < k.n && !s && every && !mb_bus_stopping(); i++)
        if (!k.v[i].matched && !k.v[i].retired)
            s = retire_folder(rec, &k.v[i], jobs, a->name);
    for (size_t i = 0; old_names && i < nf; i++)
        free(old_names[i]);
    free(old_names);
    free(match);
    known_free(&k);
    return s;
}
