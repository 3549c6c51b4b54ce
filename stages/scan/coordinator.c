/* coordinator.c — drives running jobs: marks finished chunks done, publishes
 * the next fetch tasks (newest first) so that at most max_inflight chunks
 * per job are in flight, queues deferred attachment scans once every message
 * is stored, publishes a progress event per job about once a second (the
 * recount reads every job_messages row of the job), and completes jobs.
 * Paused jobs publish nothing new; cancelled ones are left alone. */
#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/common/lease.h"
#include "stages/scan/scan.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Passes (100 ms apart) between progress events of a job, and between
 * sweeps for chunks without progress. */
#define REPORT_EVERY 10
#define SWEEP_EVERY 50
#define CLEAR_LEASES_EVERY 36000

static mb_status publish_chunk(mb_scan *sc, uint64_t chunk)
{
    mb_rec_fetch t;
    int republished;
    mb_status s = mb_job_chunk_task(sc->st->db, chunk, &t, &republished);
    if (s)
        return s;
    mb_buf b = MB_BUF_INIT;
    char subj[128], id[64], job[24], acct[24];
    s = mb_rec_encode(&mb_type_fetch, &t, &b);
    if (!s) s = mb_bus_subjectf(sc->st->bus, subj, sizeof subj, "fetch.%" PRIu64, t.account_id);
    if (!s) {
        if (republished)
            snprintf(id, sizeof id, "fetch-%" PRIu64 "-%" PRIu64 "-r%d", t.job, chunk, republished);
        else
            snprintf(id, sizeof id, "fetch-%" PRIu64 "-%" PRIu64, t.job, chunk);
        mb_pub_headers h = {.msg_id = id, .schema = mb_type_fetch.schema,
                            .job = mb_u64s(job, t.job), .account = mb_u64s(acct, t.account_id)};
        s = mb_bus_publish(sc->st->bus, subj, b.data, b.len, &h);
    }
    if (!s) s = mb_job_chunk_published(sc->st->db, chunk);
    mb_buf_free(&b);
    mb_rec_free(&mb_type_fetch, &t);
    return s;
}

/* Deferred attachment scanning: once every chunk is done, publish one
 * avscan record per pending attachment of the job, and only then record
 * that they were queued (av_queued_at): a crash in between publishes them
 * again, which avscan takes as it takes any redelivery. */
static mb_status queue_deferred_scans(mb_scan *sc, uint64_t job)
{
    mb_db *db = sc->st->db;
    char j[24];
    const char *p[] = {mb_u64s(j, job)};
    PGresult *r;
    mb_status s = mb_db_query(db,
        "SELECT account_id FROM sync_jobs WHERE id = $1::bigint AND av_queued_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $1::bigint AND state <> 'done')",
        1, p, &r);
    if (s)
        return s;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return MB_OK;
    }
    uint64_t account = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    s = mb_db_query(db,
        "SELECT encode(e.blob_sha256, 'hex'), a.part, encode(a.sha256, 'hex'), a.size "
        "FROM attachments a JOIN emails e ON e.id = a.email_id "
        "WHERE a.job_id = $1::bigint AND a.scan_status = 'pending'", 1, p, &r);
    if (s)
        return s;
    char subj[128], acct[24];
    s = mb_bus_subjectf(sc->st->bus, subj, sizeof subj, "avscan.%" PRIu64, account);
    mb_buf b = MB_BUF_INIT;
    for (int i = 0; i < PQntuples(r) && !s; i++) {
        mb_rec_avscan rec = {.job = job, .account_id = account,
                             .email_sha256 = PQgetvalue(r, i, 0), .part = PQgetvalue(r, i, 1),
                             .sha256 = PQgetvalue(r, i, 2),
                             .size = strtoull(PQgetvalue(r, i, 3), NULL, 10)};
        char id[160];
        snprintf(id, sizeof id, "av-%s-%s", rec.email_sha256, rec.part);
        mb_pub_headers h = {.msg_id = id, .schema = mb_type_avscan.schema, .job = j,
                            .account = mb_u64s(acct, account)};
        mb_buf_reset(&b);
        s = mb_rec_encode(&mb_type_avscan, &rec, &b);
        if (!s) s = mb_bus_publish_async(sc->st->bus, subj, b.data, b.len, &h);
    }
    int n = PQntuples(r);
    PQclear(r);
    mb_buf_free(&b);
    if (!s) s = mb_bus_publish_flush(sc->st->bus, 30000);
    if (!s) s = mb_db_query(db, "UPDATE sync_jobs SET av_queued_at = now() WHERE id = $1::bigint",
                            1, p, NULL);
    if (s)
        return s; /* tried again next pass */
    MB_INFO(j, NULL, "queued %d deferred attachment scans", n);
    return MB_OK;
}

/* Hand back the job's published chunks that made no progress for
 * stall_ms, as a problem on the job — unless a stage's stream still holds
 * records of the account (a stage down or far behind: the work is queued,
 * not lost, and handing it out again would only pile up copies). */
static mb_status sweep(mb_scan *sc, const mb_job_info *info)
{
    size_t n = 0;
    mb_status s = mb_job_chunks_stalled(sc->st->db, info->id, sc->stall_ms, &n);
    if (s || n == 0)
        return s;
    static const char *const streams[][2] = {{"FETCH", "fetch"}, {"PARSE", "parse"},
                                             {"STORE", "store"}};
    for (size_t i = 0; i < MB_ARRAY_LEN(streams); i++) {
        char subj[64];
        bool queued;
        snprintf(subj, sizeof subj, "%s.%" PRIu64, streams[i][1], info->account_id);
        if ((s = mb_bus_has_records(sc->st->bus, streams[i][0], subj, &queued)))
            return s;
        if (queued)
            return MB_OK;
    }
    if ((s = mb_job_chunks_hand_back(sc->st->db, info->id, sc->stall_ms, &n)) || n == 0)
        return s;
    char msg[200], j[24];
    snprintf(msg, sizeof msg, "%zu chunks made no progress for %lld ms and nothing of the "
             "account is queued: handed out again", n, (long long)sc->stall_ms);
    MB_WARN(mb_u64s(j, info->id), NULL, "%s", msg);
    return mb_job_problem(sc->st->db, info->id, info->account_id, "sweep", msg);
}

static mb_status coordinate_job(mb_scan *sc, uint64_t job, bool running)
{
    mb_db *db = sc->st->db;
    char j[24];
    mb_u64s(j, job);
    /* One coordinator per job: the lease is renewed every pass and kept
     * between passes, so a job stays with its coordinator while that one
     * lives, and passes to another copy once a dead one's lease expires. */
    char lease[MB_LEASE_NAME_MAX];
    mb_lease_job_name(lease, "coord", job);
    bool mine;
    mb_job_info info;
    mb_status s = mb_lease_take(db, lease, &mine);
    if (s || !mine)
        return s;
    s = mb_job_get(db, job, &info);
    if (!s) s = mb_job_chunks_mark_done(db, job); /* paused jobs finish their chunks too */
    if (!s && running && sc->pass % SWEEP_EVERY == 0)
        s = sweep(sc, &info);
    if (!s && running) {
        uint64_t ids[64];
        size_t n = 0;
        s = mb_job_chunks_to_publish(db, job, sc->max_inflight, ids, MB_ARRAY_LEN(ids), &n);
        for (size_t i = 0; i < n && !s; i++)
            s = publish_chunk(sc, ids[i]);
        if (!s && info.defer_attachments)
            s = queue_deferred_scans(sc, job);
    }
    bool done = false;
    if (!s && running) s = mb_job_try_complete(db, job, &done);
    mb_rec_event ev;
    bool report = done || sc->pass % REPORT_EVERY == 0;
    if (!s && report && !(s = mb_job_refresh(db, job, &ev))) {
        s = mb_stage_event(sc->st->bus, "scan", done ? "completed" : "progress", &ev);
        if (done)
            MB_INFO(j, NULL, "job completed: %" PRIu64 " stored, %" PRIu64 " errors, %" PRIu64
                    " attachments scanned, %" PRIu64 " infected", ev.stored, ev.errors,
                    ev.av_scanned, ev.av_infected);
        mb_rec_free(&mb_type_event, &ev);
    }
    /* A completed job leaves the lists; a cancelled one's lease just
     * expires (and is cleared with the other stale ones). */
    if (!s && done)
        s = mb_lease_release(db, lease);
    return s;
}

mb_status mb_scan_coordinate(mb_scan *sc)
{
    sc->pass++;
    /* Leases of jobs that ended without releasing them (cancelled, or a
     * holder that died) are only rows: clear old ones now and then. */
    if (sc->pass % CLEAR_LEASES_EVERY == 1)
        mb_db_query(sc->st->db, "DELETE FROM leases WHERE expires_at < now() - interval '1 hour'",
                    0, NULL, NULL);
    static const char *const states[] = {"running", "paused"};
    mb_status first = MB_OK;
    for (size_t k = 0; k < MB_ARRAY_LEN(states); k++) {
        uint64_t ids[256];
        size_t n = 0;
        mb_status s = mb_job_list_status(sc->st->db, states[k], ids, MB_ARRAY_LEN(ids), &n);
        if (s)
            return s;
        for (size_t i = 0; i < n && !mb_bus_stopping(); i++) {
            s = coordinate_job(sc, ids[i], k == 0);
            if (s && !first) /* the caller logs it */
                first = mb_err_wrap(s, "job %" PRIu64, ids[i]);
        }
    }
    return first;
}
