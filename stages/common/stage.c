/* stage.c — shared start-up, shutdown and event publishing (see stage.h). */
#include "stages/common/stage.h"

#include "schemas/schema.h"
#include "sources/account.h"
#include "stages/common/job.h"
#include "stages/common/supervisor.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *mb_u64s(char out[24], uint64_t v)
{
    snprintf(out, 24, "%" PRIu64, v);
    return out;
}

mb_status mb_stage_provision_opts(mb_bus_provision_opts *o)
{
    long ack, maxd, dup;
    memset(o, 0, sizeof *o);
    mb_status s = mb_env_int("MAILBUS_ACK_WAIT_MS", 60000, 1000, 3600000, &ack);
    if (!s) s = mb_env_int("MAILBUS_MAX_DELIVER", 8, 2, 1000, &maxd);
    if (!s) s = mb_env_int("MAILBUS_DUPLICATE_WINDOW_MS", 120000, 100, 86400000L, &dup);
    if (s)
        return s;
    o->ack_wait_ms = ack;
    o->max_deliver = maxd;
    o->duplicate_window_ms = dup;
    return MB_OK;
}

/* ---- outages: start-up waits, the consume probe, the job record ----------- */

static bool server_away(mb_status s) { return s == MB_ERR_NET || s == MB_ERR_TIMEOUT; }

/* One start-up wait step: a line at the first failure and then once a
 * minute, a one-second pause (cut short by a stop). */
static void start_wait(const char *what, int64_t t0, int64_t *last_log)
{
    int64_t t = mb_mono_ms();
    if (*last_log == 0 || t - *last_log >= 60000) {
        MB_WARN(NULL, NULL, "%s: %s; waiting for it (%lld s so far)", what, mb_err_last(),
                (long long)((t - t0) / 1000));
        *last_log = t;
    }
    for (int i = 0; i < 20 && !mb_bus_stopping(); i++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Postgres: connect, migrate, prepare; while the server is away, wait. */
static mb_status start_db(mb_stage *st, const char *dsn, const char *where)
{
    int64_t t0 = mb_mono_ms(), last_log = 0;
    for (;;) {
        mb_status s = mb_db_connect(dsn, &st->db);
        if (!s) s = mb_db_migrate(st->db, NULL);
        if (!s) s = mb_job_prepare(st->db);
        if (!s || !server_away(s) || mb_bus_stopping()) {
            if (!s && last_log)
                MB_INFO(NULL, NULL, "postgres %s: up after %lld s", where,
                        (long long)((mb_mono_ms() - t0) / 1000));
            return s;
        }
        mb_db_free(st->db);
        st->db = NULL;
        char what[160];
        snprintf(what, sizeof what, "postgres %s", where);
        start_wait(what, t0, &last_log);
        if (mb_bus_stopping())
            return mb_errf(MB_ERR_STOPPED, "stopped while waiting for postgres");
    }
}

/* NATS: connect, provision; while the server (or JetStream) is away, wait. */
static mb_status start_bus(mb_stage *st, const mb_bus_opts *bo, const mb_bus_provision_opts *po)
{
    int64_t t0 = mb_mono_ms(), last_log = 0;
    for (;;) {
        mb_status s = mb_bus_connect(bo, &st->bus);
        if (!s) s = mb_bus_provision(st->bus, po);
        if (!s || !server_away(s) || mb_bus_stopping()) {
            if (!s && last_log)
                MB_INFO(NULL, NULL, "nats: up after %lld s", (long long)((mb_mono_ms() - t0) / 1000));
            return s;
        }
        mb_bus_free(st->bus);
        st->bus = NULL;
        start_wait("nats", t0, &last_log);
        if (mb_bus_stopping())
            return mb_errf(MB_ERR_STOPPED, "stopped while waiting for nats");
    }
}

/* The consume probe (bus.h): is Postgres there? */
static mb_status probe_db(void *ctx)
{
    mb_stage *st = ctx;
    return mb_db_ping(st->db);
}

/* After an outage that held records: one problem per job of those records
 * (not one per record), so the job shows what happened. */
static void record_outage(void *ctx, const mb_bus_delivery *d, size_t n, const char *what,
                          int64_t ms)
{
    mb_stage *st = ctx;
    for (size_t i = 0; i < n; i++) {
        const char *job = mb_bus_delivery_header(&d[i], "Mailbus-Job");
        const char *acct = mb_bus_delivery_header(&d[i], "Mailbus-Account");
        uint64_t j = 0, a = 0;
        if (!job || !acct || mb_parse_u64(job, UINT64_MAX, &j) || mb_parse_u64(acct, UINT64_MAX, &a))
            continue;
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++) {
            const char *other = mb_bus_delivery_header(&d[k], "Mailbus-Job");
            seen = other && !strcmp(other, job);
        }
        if (seen)
            continue;
        size_t mine = 0;
        for (size_t k = 0; k < n; k++) {
            const char *other = mb_bus_delivery_header(&d[k], "Mailbus-Job");
            mine += other && !strcmp(other, job);
        }
        char why[MB_BUS_REASON_MAX + 128];
        snprintf(why, sizeof why, "%s: %zu records held %lld s and handled again, no delivery "
                 "spent: %s", st->name, mine, (long long)(ms / 1000), what);
        if (mb_job_problem(st->db, j, a, "outage", why))
            MB_WARN(job, acct, "recording the outage on the job: %s", mb_err_last());
    }
}

bool mb_stage_wait_up(mb_stage *st, mb_status s)
{
    if (!server_away(s) || mb_bus_stopping())
        return false;
    int64_t t0 = mb_mono_ms(), last_log = 0;
    bool waited = false;
    while (!mb_bus_stopping()) {
        mb_status rc = mb_db_ping(st->db);
        const char *what = "postgres";
        if (!server_away(rc)) {
            rc = mb_bus_check(st->bus);
            what = "nats";
        }
        if (!server_away(rc))
            break;
        waited = true;
        start_wait(what, t0, &last_log);
    }
    if (waited && !mb_bus_stopping())
        MB_INFO(NULL, NULL, "servers answer again after %lld s",
                (long long)((mb_mono_ms() - t0) / 1000));
    return waited;
}

/* While a handler waits for Postgres, its records in hand stay alive. */
static void keep_hand_alive(void) { mb_bus_keepalive(); }

int mb_stage_start(mb_stage *st, const char *name, const char *usage, unsigned needs,
                   int default_batch, int argc, char **argv)
{
    memset(st, 0, sizeof *st);
    st->name = name;
    st->batch = default_batch;
    mb_log_init(name);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: mailbus-%s [--batch N]\n\n%s\n"
                   "  --batch N   records handled per batch (default %d)\n\n"
                   "Environment (see `scripts/services env`): MAILBUS_NATS_URL, MAILBUS_PREFIX,\n"
                   "MAILBUS_PG_DSN, MAILBUS_BLOB_DIR, MAILBUS_SECRET_KEY_FILE,\n"
                   "MAILBUS_CLAMD_SOCKET, MAILBUS_LOG_LEVEL. SIGTERM/SIGINT stop gracefully.\n"
                   "The process supervises a worker it restarts after a crash; a handler thread\n"
                   "spending MAILBUS_WATCHDOG_MS of CPU (60000) on one record is killed and the\n"
                   "record dead-lettered. MAILBUS_SUPERVISE=0 runs unsupervised.\n",
                   name, usage, default_batch);
            return 0;
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            uint64_t b;
            if (mb_parse_u64(argv[++i], 4096, &b) || b == 0) {
                fprintf(stderr, "mailbus-%s: --batch: expected 1..4096, got '%s'\n", name, argv[i]);
                return 2;
            }
            st->batch = (int)b;
        } else {
            fprintf(stderr, "mailbus-%s: unknown argument '%s' (try --help)\n", name, argv[i]);
            return 2;
        }
    }
    st->consume.batch = st->batch;
    st->consume.probe = probe_db;
    st->consume.outage_over = record_outage;
    st->consume.probe_ctx = st;

    /* Before any connection or thread exists: from here on this is the
     * worker (the supervisor returns its exit status). */
    int sv = mb_supervise(name);
    if (sv >= 0)
        return sv;
    mb_status s = mb_bus_install_signal_handlers();
    mb_db_set_wait_hook(keep_hand_alive);
    mb_buf where = MB_BUF_INIT;
    const char *dsn = mb_env("MAILBUS_PG_DSN", MB_DEFAULT_PG_DSN);
    mb_db_dsn_describe(dsn, &where);
    /* A server that is away at start is waited for, not a reason to exit. */
    if (!s) s = start_db(st, dsn, mb_buf_cstr(&where));
    if (s) {
        if (s != MB_ERR_STOPPED)
            MB_ERROR(NULL, NULL, "postgres %s: %s", mb_buf_cstr(&where), mb_err_last());
        mb_buf_free(&where);
        return mb_stage_finish(st, s);
    }
    mb_buf_free(&where);
    char cname[64];
    snprintf(cname, sizeof cname, "mailbus-%s", name);
    mb_bus_opts bo = {.name = cname};
    mb_bus_provision_opts po;
    s = mb_stage_provision_opts(&po);
    if (!s) s = start_bus(st, &bo, &po);
    if (s) {
        if (s != MB_ERR_STOPPED)
            MB_ERROR(NULL, NULL, "nats: %s", mb_err_last());
        return mb_stage_finish(st, s);
    }
    if (needs & MB_STAGE_BLOBS) {
        const char *dir;
        s = mb_env_require("MAILBUS_BLOB_DIR", &dir);
        if (!s) s = mb_blob_store_open(dir, &st->blobs);
        if (s) {
            MB_ERROR(NULL, NULL, "blob store: %s", mb_err_last());
            return mb_stage_finish(st, s);
        }
    }
    if (needs & MB_STAGE_KEY) {
        if ((s = mb_account_keys_load(&st->keys))) {
            MB_ERROR(NULL, NULL, "credential key: %s", mb_err_last());
            return mb_stage_finish(st, s);
        }
    }
    MB_INFO(NULL, NULL, "started (prefix %s, batch %d)", mb_bus_prefix(st->bus), st->batch);
    return -1;
}

int mb_stage_finish(mb_stage *st, mb_status s)
{
    if (s && s != MB_ERR_STOPPED)
        MB_ERROR(NULL, NULL, "stopping: %s", mb_err_last());
    else if (st->bus)
        MB_INFO(NULL, NULL, "stopped");
    mb_blob_store_free(st->blobs);
    mb_bus_free(st->bus);
    mb_db_free(st->db);
    mb_bus_library_close();
    mb_account_keys_wipe(&st->keys);
    st->bus = NULL;
    st->db = NULL;
    st->blobs = NULL;
    if (s == MB_ERR_CONFIG)
        return MB_EXIT_CONFIG; /* restarting cannot help */
    return s && s != MB_ERR_STOPPED ? 1 : 0;
}

mb_status mb_stage_event(mb_bus *bus, const char *stage, const char *kind, mb_rec_event *ev)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ev->ts_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char *okind = ev->kind, *ostage = ev->stage;
    ev->kind = (char *)kind;
    ev->stage = (char *)stage;
    mb_buf b = MB_BUF_INIT;
    mb_status s = mb_rec_encode(&mb_type_event, ev, &b);
    ev->kind = okind;
    ev->stage = ostage;
    char subj[128], job[24];
    if (!s) s = mb_bus_subjectf(bus, subj, sizeof subj, "events.%" PRIu64 ".%s", ev->job, kind);
    if (!s) {
        mb_pub_headers h = {.schema = mb_type_event.schema, .job = mb_u64s(job, ev->job)};
        s = mb_bus_publish(bus, subj, b.data, b.len, &h);
    }
    mb_buf_free(&b);
    return s;
}

void mb_stage_undecodable(const mb_bus_delivery *d, const char *what, const char *reason)
{
    MB_ERROR(mb_bus_delivery_header(d, "Mailbus-Job"), mb_bus_delivery_header(d, "Mailbus-Account"),
             "%s record seq %" PRIu64 " is undecodable, nothing to settle: %s", what,
             d->stream_seq, reason);
}

void mb_stage_settle(mb_stage *st, const mb_rec_rawmsg *raw, int bit, const char *stage,
                     const char *reason, const char *how)
{
    char why[600], js[24], as[24];
    snprintf(why, sizeof why, "uid %" PRIu64 " (blob %.12s): %s", raw->uid,
             raw->sha256 ? raw->sha256 : "?", reason);
    MB_WARN(mb_u64s(js, raw->job), mb_u64s(as, raw->account_id), "gave up on %s; %s", why, how);
    mb_job_problem(st->db, raw->job, raw->account_id, stage, why);
    if (mb_job_mark(st->db, raw->job, bit, &raw->folder_id, &raw->uid, 1))
        MB_ERROR(js, as, "settling uid %" PRIu64 ": %s", raw->uid, mb_err_last());
}
