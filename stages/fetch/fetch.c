/* fetch.c — one fetch task: download the chunk's messages into the blob
 * store and publish a parse record for each, with stages/common/download.h
 * (which has the order of effects that makes a crash lose nothing); the
 * task is acked when every group is through. This file holds the
 * connection (slot, reconnects, retries) and the task's verdict. */
#include "stages/fetch/fetch.h"

#include "schemas/schema.h"
#include "stages/common/download.h"
#include "stages/common/job.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NET_ATTEMPTS 3

typedef struct {
    mb_fetcher *f;
    mb_dl dl;
    mb_bus_delivery *d;
    bool busy;        /* no connection slot was free */
} task_ctx;

mb_status mb_fetcher_init(mb_fetcher *f, mb_stage *st)
{
    memset(f, 0, sizeof *f);
    f->st = st;
    mb_bus_provision_opts po;
    mb_status s = mb_stage_provision_opts(&po);
    f->max_deliver = po.max_deliver;
    f->slot.account_slot = f->slot.host_slot = -1;
    if (!s) s = mb_env_int("MAILBUS_IMAP_SLOT_WAIT_MS", 30000, 0, 3600000L, &f->slot_wait_ms);
    return s;
}

/* Close the connection, then give its slot back. */
static void drop_source(mb_fetcher *f)
{
    mb_source_free(f->src);
    f->src = NULL;
    free(f->folder);
    f->folder = NULL;
    mb_conn_slot_release(&f->slot);
}

void mb_fetcher_free(mb_fetcher *f)
{
    drop_source(f);
    mb_account_free(&f->account);
    f->account_id = 0;
}

/* While waiting for a connection slot: keep the task ours. */
static bool slot_tick(void *ctx)
{
    mb_bus_in_progress(ctx);
    return !mb_bus_stopping();
}

/* Connected to the task's account, holding a connection slot. Waits for a
 * slot up to slot_wait_ms (on the task's last allowed delivery: as long as it
 * takes), then MB_ERR_TIMEOUT with *busy set. */
static mb_status ensure_source(mb_fetcher *f, uint64_t account_id, mb_bus_delivery *d, bool *busy)
{
    if (f->src && f->account_id == account_id) {
        mb_status s = mb_conn_slot_renew(&f->slot);
        if (s != MB_ERR_NOTFOUND)
            return s;
        MB_WARN(NULL, f->account.name, "%s; reconnecting", mb_err_last());
    }
    mb_fetcher_free(f);
    char a[24];
    char *secret = NULL;
    mb_status s = mb_account_load(f->st->db, &f->st->keys, mb_u64s(a, account_id), &f->account, &secret);
    if (!s) s = mb_account_source(&f->account, secret, &f->src);
    mb_account_secret_free(secret);
    if (!s) {
        long wait = d->deliveries >= (uint64_t)f->max_deliver ? -1 : f->slot_wait_ms;
        s = mb_conn_slot_take(f->st->db, account_id, f->account.host, f->account.port, wait,
                              slot_tick, d, &f->slot);
        *busy = s == MB_ERR_TIMEOUT;
    }
    if (!s) s = mb_source_connect(f->src);
    if (s) {
        drop_source(f);
        return s;
    }
    f->account_id = account_id;
    return MB_OK;
}

static mb_status ensure_folder(mb_fetcher *f, const mb_rec_fetch *t)
{
    if (f->folder && !strcmp(f->folder, t->folder))
        return MB_OK;
    free(f->folder);
    f->folder = NULL;
    mb_folder_state fs;
    mb_status s = mb_source_open_folder(f->src, t->folder, &fs);
    if (s)
        return s;
    if (fs.uidvalidity != t->uidvalidity)
        return mb_errf(MB_ERR_NOTFOUND, "folder '%s': UIDVALIDITY changed from %" PRIu64
                       " to %" PRIu64 " since the scan", t->folder, t->uidvalidity, fs.uidvalidity);
    f->folder = mb_strdup(t->folder);
    return f->folder ? MB_OK : MB_ERR_NOMEM;
}

/* Whether a FETCH that failed with s may work on a new connection: the
 * connection was lost, the guard cut a server that broke a limit, or the
 * answer could not be parsed (imap_fail drops the session for each). */
static bool fetch_retryable(mb_status s) { return s == MB_ERR_NET || s == MB_ERR_INVALID; }

/* Download every message not done yet, in bounded groups, reconnecting on
 * network errors up to NET_ATTEMPTS times. Once a group's FETCH has failed,
 * the rest of the task is fetched one message at a time, so that a message
 * the server cannot deliver (a literal that lies, an answer that never ends,
 * a connection cut at the same place every time) holds up no other: a message
 * whose own FETCH fails NET_ATTEMPTS times is left for the next delivery of
 * the task (the last one gives up on it alone), and the others go on. Only a
 * failing FETCH is left behind this way: when connecting or opening the
 * folder fails, the whole task waits. */
static mb_status download(task_ctx *tc, const char *jobs)
{
    mb_fetcher *f = tc->f;
    const mb_rec_fetch *t = tc->dl.t;
    uint64_t uids[MB_DL_GROUP_MAX_MSGS];
    mb_status s = MB_OK, left = MB_OK;
    char left_why[600] = "";
    int attempts = 0;
    bool one_by_one = false;
    size_t i = 0;
    while (i < tc->dl.n && !mb_bus_stopping()) {
        size_t j = i;
        size_t k = mb_dl_group(&tc->dl, &j, uids);
        if (k == 0)
            break; /* every message done */
        if (one_by_one && k > 1) {
            for (j = i; tc->dl.ms[j].done || tc->dl.ms[j].uid != uids[0]; j++)
                ;
            j++;
            k = 1;
        }
        bool fetching = false;
        s = ensure_source(f, t->account_id, tc->d, &tc->busy);
        if (!s) s = ensure_folder(f, t);
        if (!s) {
            fetching = true;
            s = mb_dl_fetch(&tc->dl, f->src, uids, k);
        }
        if (s == MB_ERR_NET || (fetching && fetch_retryable(s))) {
            if (++attempts < NET_ATTEMPTS) {
                char why[600];
                snprintf(why, sizeof why, "folder '%s': FETCH failed for now (%s); "
                         "reconnecting, attempt %d", t->folder, mb_err_last(), attempts + 1);
                MB_WARN(jobs, f->account.name, "%s", why);
                mb_job_problem(f->st->db, t->job, t->account_id, "fetch", why);
                drop_source(f);
                struct timespec ts = {attempts, 0};
                nanosleep(&ts, NULL);
                mb_bus_in_progress(tc->d);
                one_by_one = one_by_one || fetching;
                s = MB_OK;
                continue; /* same group again; done messages are skipped */
            }
            if (fetching && one_by_one && k == 1) {
                snprintf(left_why, sizeof left_why, "folder '%s' UID %" PRIu64 ": %s", t->folder,
                         uids[0], mb_err_last());
                MB_WARN(jobs, f->account.name, "%s; left for the next delivery", left_why);
                left = s;
                attempts = 0;
                drop_source(f);
                s = MB_OK;
                i = j;
                continue;
            }
        }
        if (!s) s = mb_dl_hand_on(&tc->dl);
        if (s)
            break;
        mb_bus_in_progress(tc->d);
        i = j;
    }
    if (!s && mb_bus_stopping())
        s = mb_errf(MB_ERR_STOPPED, "stopping");
    if (!s && left)
        s = mb_errf(left, "%s", left_why);
    return s;
}

static void handle_one(mb_fetcher *f, mb_bus_delivery *d)
{
    mb_rec_fetch t;
    if (mb_rec_decode(&mb_type_fetch, d->data, d->len, &t)) {
        mb_bus_fail(d, "undecodable fetch task: %s", mb_err_last());
        return;
    }
    char jobs[24];
    mb_u64s(jobs, t.job);
    task_ctx tc = {.f = f, .d = d};
    mb_dl *dl = &tc.dl;
    mb_job_info info;
    mb_status s = mb_dl_init(dl, f->st, f->st->db, &t, true);
    if (!s) s = mb_job_get(f->st->db, t.job, &info);
    if (s == MB_ERR_NOTFOUND) {
        mb_bus_fail(d, "%s", mb_err_last());
        goto out;
    }
    if (!s && (!strcmp(info.status, "cancelled") || !strcmp(info.status, "failed"))) {
        mb_bus_done(d); /* the job is over: drop its work */
        goto out;
    }
    if (!s) s = download(&tc, jobs);
    if (s == MB_ERR_AUTH || s == MB_ERR_CONFIG) {
        char msg[600];
        snprintf(msg, sizeof msg, "account '%s': %s", f->account.name ? f->account.name : "?",
                 mb_err_last());
        mb_job_set_status(f->st->db, t.job, "failed", msg);
        mb_dl_give_up(dl, f->account.name, msg);
        mb_bus_fail(d, "%s", msg);
        goto out;
    }
    if (s == MB_ERR_NOTFOUND) { /* folder or UIDVALIDITY gone */
        mb_dl_give_up(dl, f->account.name, mb_err_last());
        mb_bus_done(d);
        goto out;
    }
    /* Whatever was downloaded is handed on even if the rest failed. */
    mb_status s2 = mb_dl_hand_on(dl);
    if (s2) {
        mb_bus_retry(d, 5000, "publishing parse records: %s", mb_err_last());
        goto out;
    }
    if (s == MB_ERR_STOPPED) {
        mb_bus_retry(d, 0, "stage stopping");
        goto out;
    }
    if (s == MB_ERR_TIMEOUT && tc.busy) {
        /* Not a failure: another process holds every slot. Back to the
         * stream, so this process can serve another account meanwhile. */
        MB_INFO(jobs, f->account.name, "chunk %" PRIu64 ": %s; handing it back", t.chunk_id,
                mb_err_last());
        mb_bus_retry(d, 1000, "%s", mb_err_last());
        goto out;
    }
    if (s) {
        if (d->deliveries >= (uint64_t)f->max_deliver) {
            mb_dl_give_up(dl, f->account.name, mb_err_last());
            mb_bus_fail(d, "%s", mb_err_last());
        } else {
            MB_WARN(jobs, f->account.name, "chunk %" PRIu64 ": %s; retrying in 10 s", t.chunk_id,
                    mb_err_last());
            mb_job_problem(f->st->db, t.job, t.account_id, "fetch", mb_err_last());
            mb_bus_retry(d, 10000, "%s", mb_err_last());
        }
        drop_source(f);
        goto out;
    }
    /* UIDs the server no longer has (expunged since the scan). */
    size_t gone = mb_dl_missing(dl);
    if (gone) {
        char why[128];
        snprintf(why, sizeof why, "%zu messages of folder '%s' vanished from the server", gone, t.folder);
        mb_dl_give_up(dl, f->account.name, why);
    }
    MB_INFO(jobs, f->account.name, "chunk %" PRIu64 ": fetched %zu of %zu messages", t.chunk_id,
            mb_dl_got(dl), t.items.n);
    mb_bus_done(d);
out:
    drop_source(f); /* an idle process holds no connection and no slot */
    mb_dl_free(dl);
    mb_rec_free(&mb_type_fetch, &t);
}

void mb_fetcher_handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        handle_one(ctx, &d[i]);
}
