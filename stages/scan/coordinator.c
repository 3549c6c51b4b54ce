/* coordinator.c — drives running jobs: marks finished chunks done, publishes
 * the next fetch tasks (newest first) so that at most max_inflight chunks
 * per job are in flight, queues deferred attachment scans once every message
 * is stored, publishes a progress event per job about once a second (the
 * recount reads every job_messages row of the job), and completes jobs.
 * Paused jobs publish nothing new; cancelled ones are left alone. */
#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/scan/scan.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Passes (100 ms apart) between progress events of a job. */
#define REPORT_EVERY 10

static mb_status publish_chunk(mb_scan *sc, uint64_t chunk)
{
    mb_rec_fetch t;
    mb_status s = mb_job_chunk_task(sc->st->db, chunk, &t);
    if (s)
        return s;
    mb_buf b = MB_BUF_INIT;
    char subj[128], id[64], job[24], acct[24];
    s = mb_rec_encode(&mb_type_fetch, &t, &b);
    if (!s) s = mb_bus_subjectf(sc->st->bus, subj, sizeof subj, "fetch.%" PRIu64, t.account_id);
    if (!s) {
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
 * avscan record per pending attachment of the job, once. */
static mb_status queue_deferred_scans(mb_scan *sc, uint64_t job)
{
    mb_db *db = sc->st->db;
    char j[24];
    const char *p[] = {mb_u64s(j, job)};
    PGresult *r;
    mb_status s = mb_db_query(db,
        "UPDATE sync_jobs SET av_queued_at = now() WHERE id = $1::bigint AND av_queued_at IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $1::bigint AND state <> 'done') "
        "RETURNING account_id", 1, p, &r);
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
    if (s) {
        /* Try again next pass. */
        mb_db_query(db, "UPDATE sync_jobs SET av_queued_at = NULL WHERE id = $1::bigint", 1, p, NULL);
        return s;
    }
    MB_INFO(j, NULL, "queued %d deferred attachment scans", n);
    return MB_OK;
}

static mb_status coordinate_job(mb_scan *sc, uint64_t job, bool running)
{
    mb_db *db = sc->st->db;
    char j[24];
    mb_u64s(j, job);
    bool mine;
    mb_status s = mb_job_try_lock(db, 7002, job, &mine);
    if (s || !mine)
        return s;
    s = mb_job_chunks_mark_done(db, job); /* paused jobs finish their chunks too */
    if (!s && running) {
        uint64_t ids[64];
        size_t n = 0;
        s = mb_job_chunks_to_publish(db, job, sc->max_inflight, ids, MB_ARRAY_LEN(ids), &n);
        for (size_t i = 0; i < n && !s; i++)
            s = publish_chunk(sc, ids[i]);
        mb_job_info info;
        if (!s) s = mb_job_get(db, job, &info);
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
    mb_job_unlock(db, 7002, job);
    return s;
}

mb_status mb_scan_coordinate(mb_scan *sc)
{
    sc->pass++;
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
            if (s && !first) {
                char j[24];
                MB_WARN(mb_u64s(j, ids[i]), NULL, "coordination: %s", mb_err_last());
                first = s;
            }
        }
    }
    return first;
}
