/* main.c — mailbus-avscan: scans each distinct attachment once with clamd.
 *
 * For each avscan record: if a verdict for the attachment's SHA-256 exists,
 * copy it to every pending attachment row with that hash; otherwise decode
 * the part from the message's .eml blob, stream it to clamd (INSTREAM),
 * record the verdict, and copy it. When clamd is down the record is retried
 * with growing delays; on its last allowed delivery the attachments are
 * marked 'error' so the job can complete with the problem visible. */
#include "av/clamd.h"
#include "mime/mime.h"
#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/common/stage.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Consumes avscan/1 records: decodes the attachment from its .eml blob and streams\n"
    "it to clamd (MAILBUS_CLAMD_SOCKET, INSTREAM), scanning each distinct attachment\n"
    "(by SHA-256) once; records clean / infected (with the signature) / error.";

typedef struct {
    mb_stage *st;
    const char *socket;
    int64_t max_deliver;
    bool clamd_down; /* an outage is recorded on the job once, not per record */
} avscan;

static mb_status sink(void *ctx, const void *p, size_t n)
{
    return mb_clamd_scan_write(ctx, p, n);
}

static mb_status apply(mb_db *db, const char *sha, const char *status, const char *sig)
{
    const char *p[] = {sha, status, sig};
    mb_status s = !status ? MB_OK : mb_db_query(db,
        "INSERT INTO av_verdicts (sha256, status, signature) VALUES (decode($1, 'hex'), $2, $3) "
        "ON CONFLICT (sha256) DO NOTHING", 3, p, NULL);
    if (!s)
        s = mb_db_query(db,
            "UPDATE attachments a SET scan_status = v.status, scan_signature = v.signature, "
            "scanned_at = v.scanned_at FROM av_verdicts v WHERE v.sha256 = decode($1, 'hex') "
            "AND a.sha256 = v.sha256 AND a.scan_status = 'pending'", 1, p, NULL);
    return s;
}

static mb_status known_verdict(mb_db *db, const char *sha, bool *known)
{
    const char *p[] = {sha};
    PGresult *r;
    mb_status s = mb_db_query(db, "SELECT 1 FROM av_verdicts WHERE sha256 = decode($1, 'hex')", 1, p, &r);
    if (s)
        return s;
    *known = PQntuples(r) > 0;
    PQclear(r);
    return MB_OK;
}

/* Scan the part with clamd. MB_ERR_NET: clamd unreachable (retry later). */
static mb_status scan_part(avscan *av, const mb_rec_avscan *r, mb_av_verdict *v, char *sig, size_t siglen)
{
    const char *data;
    size_t len;
    mb_blob_mapping *m;
    mb_status s = mb_blob_map(av->st->blobs, r->email_sha256, &data, &len, &m);
    if (s)
        return s;
    mb_clamd *c = NULL;
    s = mb_clamd_connect(av->socket, 30000, &c);
    if (!s) s = mb_clamd_scan_begin(c);
    if (!s) s = mb_mime_part_decode(data, len, r->part, sink, c);
    if (!s) s = mb_clamd_scan_end(c, v, sig, siglen);
    mb_clamd_free(c);
    mb_blob_unmap(m);
    return s;
}

static void handle_one(avscan *av, mb_bus_delivery *d)
{
    mb_rec_avscan r;
    if (mb_rec_decode(&mb_type_avscan, d->data, d->len, &r)) {
        mb_bus_fail(d, "undecodable avscan record: %s", mb_err_last());
        return;
    }
    char js[24], as[24];
    mb_u64s(js, r.job);
    mb_u64s(as, r.account_id);
    bool known = false;
    mb_status s = r.sha256 && r.email_sha256 && r.part ? MB_OK
                  : mb_errf(MB_ERR_INVALID, "avscan record without sha256/email/part");
    if (s) {
        mb_bus_fail(d, "%s", mb_err_last());
        goto out;
    }
    s = known_verdict(av->st->db, r.sha256, &known);
    if (!s && known) {
        s = apply(av->st->db, r.sha256, NULL, NULL);
    } else if (!s) {
        mb_av_verdict v;
        char sig[256] = "";
        s = scan_part(av, &r, &v, sig, sizeof sig);
        if (!s) {
            av->clamd_down = false;
            const char *status = v == MB_AV_CLEAN ? "clean" : v == MB_AV_INFECTED ? "infected" : "error";
            if (v == MB_AV_INFECTED)
                MB_WARN(js, as, "attachment %s (part %s of %.12s) infected: %s", r.sha256, r.part,
                        r.email_sha256, sig);
            else if (v == MB_AV_ERROR)
                mb_job_problem(av->st->db, r.job, r.account_id, "avscan", sig);
            s = apply(av->st->db, r.sha256, status, v == MB_AV_CLEAN ? NULL : sig);
        } else if (s == MB_ERR_NET || s == MB_ERR_TIMEOUT) {
            char why[400];
            snprintf(why, sizeof why, "clamd: %s", mb_err_last());
            if (d->deliveries >= (uint64_t)av->max_deliver) {
                mb_job_problem(av->st->db, r.job, r.account_id, "avscan", why);
                s = apply(av->st->db, r.sha256, "error", "clamd unavailable");
            } else {
                if (!av->clamd_down)
                    mb_job_problem(av->st->db, r.job, r.account_id, "avscan", why);
                av->clamd_down = true;
                int64_t delay = 2000LL << (d->deliveries < 5 ? d->deliveries : 5);
                MB_WARN(js, as, "%s; retrying in %lld ms", why, (long long)delay);
                mb_bus_retry(d, delay, "%s", why);
                goto out;
            }
        } else if (s == MB_ERR_NOTFOUND || s == MB_ERR_INVALID) {
            /* Blob or part missing: a permanent problem for this attachment. */
            char why[400];
            snprintf(why, sizeof why, "attachment %s: %s", r.sha256, mb_err_last());
            mb_job_problem(av->st->db, r.job, r.account_id, "avscan", why);
            s = apply(av->st->db, r.sha256, "error", why);
        }
    }
    if (s)
        mb_bus_retry(d, 2000, "%s", mb_err_last());
    else
        mb_bus_done(d);
out:
    mb_rec_free(&mb_type_avscan, &r);
}

static void handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        handle_one(ctx, &d[i]);
}

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "avscan", usage, MB_STAGE_BLOBS, 16, argc, argv);
    if (rc >= 0)
        return rc;
    avscan av = {.st = &st};
    mb_bus_provision_opts po;
    mb_status s = mb_stage_provision_opts(&po);
    av.max_deliver = po.max_deliver;
    if (!s) s = mb_env_require("MAILBUS_CLAMD_SOCKET", &av.socket);
    if (!s) s = mb_bus_consume(st.bus, "avscan", &st.consume, handle, &av);
    return mb_stage_finish(&st, s);
}
