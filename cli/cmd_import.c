/* cmd_import.c — `mailbus import start|pause|resume|cancel`, `mailbus jobs`
 * and `mailbus watch`. Commands go to the scan stage over NATS
 * (<p>.cmd.import.*, JSON, the same as `nats req` would send); jobs are read
 * from Postgres; watch follows <p>.events.<job>.>. */
#include "bus/serve.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "schemas/schema.h"
#include "schemas/json.h"
#include "util/env.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char import_usage[] =
    "usage: mailbus import start ACCOUNT [--folders F1,F2,...] [--since YYYY-MM-DD]\n"
    "                            [--until YYYY-MM-DD] [--defer-attachments] [--watch]\n"
    "       mailbus import pause|resume|cancel|status JOB\n\n"
    "start prints the new job's id (with --watch it then follows it like `mailbus watch`).\n"
    "--since is inclusive, --until exclusive (internal dates, UTC). --defer-attachments\n"
    "scans attachments for viruses after every message is stored.\n";

static int import_start(int argc, char **argv)
{
    mb_rec_command c = {0};
    bool watch = false;
    mb_status s = MB_OK;
    for (int i = 1; i < argc && !s; i++) {
        if (!strcmp(argv[i], "--folders") && i + 1 < argc) s = mb_cli_split_folders(argv[++i], &c.folders);
        else if (!strcmp(argv[i], "--since") && i + 1 < argc) c.since = strdup(argv[++i]);
        else if (!strcmp(argv[i], "--until") && i + 1 < argc) c.until = strdup(argv[++i]);
        else if (!strcmp(argv[i], "--defer-attachments")) c.defer_attachments = true;
        else if (!strcmp(argv[i], "--watch")) watch = true;
        else if (argv[i][0] != '-' && !c.account) c.account = strdup(argv[i]);
        else {
            fprintf(stderr, "mailbus import start: unexpected '%s'\n%s", argv[i], import_usage);
            mb_rec_free(&mb_type_command, &c);
            return 2;
        }
    }
    if (!c.account) {
        fprintf(stderr, "mailbus import start: ACCOUNT is required\n%s", import_usage);
        mb_rec_free(&mb_type_command, &c);
        return 2;
    }
    c.op = strdup("import.start");
    mb_json *rep = NULL;
    if (!s) s = mb_cli_send_cmd("import.start", &c, &rep);
    mb_rec_free(&mb_type_command, &c);
    if (s)
        return mb_cli_fail("import start", s);
    uint64_t job = 0;
    mb_json_u64(mb_json_get(rep, "job"), &job);
    mb_json_free(rep);
    printf("%" PRIu64 "\n", job);
    fflush(stdout);
    if (!watch)
        return 0;
    char js[24];
    snprintf(js, sizeof js, "%" PRIu64, job);
    char *wargv[] = {"watch", js, NULL};
    return mb_cli_watch(2, wargv);
}

int mb_cli_import(int argc, char **argv)
{
    if (argc < 2 || mb_cli_want_help(argc, argv)) {
        fputs(import_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "start"))
        return import_start(argc - 1, argv + 1);
    static const char *const ops[] = {"pause", "resume", "cancel", "status"};
    for (size_t i = 0; i < MB_ARRAY_LEN(ops); i++) {
        if (strcmp(argv[1], ops[i]))
            continue;
        if (argc != 3) {
            fprintf(stderr, "mailbus import %s: JOB is required\n", ops[i]);
            return 2;
        }
        char op[32];
        snprintf(op, sizeof op, "import.%s", ops[i]);
        mb_rec_command c = {.op = op, .job = argv[2]};
        mb_json *rep = NULL;
        mb_status s = mb_cli_send_cmd(op, &c, &rep);
        if (s)
            return mb_cli_fail(op, s);
        const mb_json *st = mb_json_get(rep, "status");
        if (st && st->kind == MB_JSON_STR)
            printf("job %s: %s\n", argv[2], st->str);
        else
            printf("job %s: ok\n", argv[2]);
        mb_json_free(rep);
        return 0;
    }
    fprintf(stderr, "mailbus import: unknown subcommand '%s'\n%s", argv[1], import_usage);
    return 2;
}

/* ---- jobs ---------------------------------------------------------------- */

static const char *job_cols =
    "j.id, a.name, j.type, j.status, j.total_messages, j.total_bytes, j.scanned, j.fetched, "
    "j.parsed, j.stored, j.bytes_fetched, j.av_scanned, j.av_pending, j.av_infected, j.errors, "
    "coalesce(j.error, ''), to_char(j.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "extract(epoch FROM coalesce(j.finished_at, now()) - coalesce(j.started_at, j.created_at)), "
    "(SELECT count(*) FROM sync_history h WHERE h.job_id = j.id), "
    /* the latest `mailbus verify` that vouched for this job (verify_runs) */
    "coalesce((SELECT json_build_object('at', to_char(v.started_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'deep', v.deep, 'differences', v.differences, "
    "'missing', v.missing, 'counts', v.counts)::text FROM verify_runs v WHERE v.job_id = j.id "
    "ORDER BY v.id DESC LIMIT 1), 'null'), "
    "coalesce((SELECT CASE WHEN v.differences = 0 THEN 'ok' ELSE v.differences || ' diff' END "
    "FROM verify_runs v WHERE v.job_id = j.id ORDER BY v.id DESC LIMIT 1), '-')";

static const char *const job_names[] = {"id", "account", "type", "status", "total", "total_bytes",
                                        "scanned", "fetched", "parsed", "stored", "bytes",
                                        "av_scanned", "av_pending", "av_infected", "errors",
                                        "last_problem", "created", "seconds", "problems",
                                        "verified"};

int mb_cli_jobs(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        printf("usage: mailbus jobs [--json] [JOB]\n\nImport and sync jobs, newest first: status, "
               "counters per stage, problems, and whether `mailbus verify` has vouched for\n"
               "the job since (VERIFIED: ok, N diff, or - when never verified).\n");
        return 0;
    }
    bool json = false;
    const char *one = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else one = argv[i];
    }
    mb_db *db;
    mb_status s = mb_cli_db(&db);
    if (s)
        return mb_cli_fail("jobs", s);
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s FROM sync_jobs j JOIN accounts a ON a.id = j.account_id %s "
             "ORDER BY j.id DESC LIMIT 100", job_cols, one ? "WHERE j.id = $1::bigint" : "");
    const char *p[] = {one};
    PGresult *r;
    s = mb_db_query(db, sql, one ? 1 : 0, p, &r);
    mb_db_free(db);
    if (s)
        return mb_cli_fail("jobs", s);
    if (!json)
        printf("%-5s %-14s %-10s %8s %8s %8s %8s %8s %6s %5s %5s %8s %-9s\n", "JOB", "ACCOUNT",
               "STATUS", "TOTAL", "FETCHED", "PARSED", "STORED", "AV", "INFECT", "ERR", "PROB",
               "SECONDS", "VERIFIED");
    mb_buf line = MB_BUF_INIT;
    for (int i = 0; i < PQntuples(r); i++) {
        if (json) {
            mb_buf_reset(&line);
            mb_buf_putc(&line, '{');
            for (int c = 0; c < (int)MB_ARRAY_LEN(job_names); c++) {
                const char *v = PQgetvalue(r, i, c);
                mb_buf_printf(&line, "%s\"%s\":", c ? "," : "", job_names[c]);
                bool text = c == 1 || c == 2 || c == 3 || c == 15 || c == 16;
                if (text)
                    mb_buf_json_str(&line, v, strlen(v));
                else
                    mb_buf_puts(&line, v);
            }
            mb_buf_putc(&line, '}');
            puts(mb_buf_cstr(&line));
        } else {
            printf("%-5s %-14.14s %-10s %8s %8s %8s %8s %8s %6s %5s %5s %8.1f %-9s\n",
                   PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 3),
                   PQgetvalue(r, i, 4), PQgetvalue(r, i, 7), PQgetvalue(r, i, 8),
                   PQgetvalue(r, i, 9), PQgetvalue(r, i, 11), PQgetvalue(r, i, 13),
                   PQgetvalue(r, i, 14), PQgetvalue(r, i, 18), atof(PQgetvalue(r, i, 17)),
                   PQgetvalue(r, i, 20));
            if (one && *PQgetvalue(r, i, 15))
                printf("last problem: %s\n", PQgetvalue(r, i, 15));
        }
    }
    if (one && PQntuples(r) == 0) {
        PQclear(r);
        mb_buf_free(&line);
        fprintf(stderr, "mailbus jobs: no job %s\n", one);
        return 1;
    }
    mb_buf_free(&line);
    PQclear(r);
    return 0;
}

/* ---- watch --------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    mb_rec_event ev;  /* latest */
    bool have;
    time_t at;
} watch_state;

static void on_event(void *ctx, const char *subject, const void *data, size_t len, mb_buf *reply)
{
    (void)subject;
    (void)reply;
    watch_state *w = ctx;
    mb_rec_event ev;
    if (mb_rec_decode(&mb_type_event, data, len, &ev))
        return;
    pthread_mutex_lock(&w->mu);
    /* Events of several coordinators can interleave: keep the newest. */
    if (!w->have || ev.ts_ms >= w->ev.ts_ms ||
        (ev.kind && (!strcmp(ev.kind, "completed") || !strcmp(ev.kind, "failed")))) {
        mb_rec_free(&mb_type_event, &w->ev);
        w->ev = ev;
        w->have = true;
        w->at = time(NULL);
    } else {
        mb_rec_free(&mb_type_event, &ev);
    }
    pthread_mutex_unlock(&w->mu);
}

/* The job's row as an event, for when no event arrives (finished job, or
 * no scan stage running). */
static mb_status poll_db(mb_db *db, const char *job, mb_rec_event *ev)
{
    const char *p[] = {job};
    PGresult *r;
    mb_status s = mb_db_query(db,
        "SELECT status, total_messages, total_bytes, scanned, fetched, parsed, stored, "
        "bytes_fetched, av_scanned, av_pending, av_infected, errors, error FROM sync_jobs "
        "WHERE id = $1::bigint", 1, p, &r);
    if (s)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return mb_errf(MB_ERR_NOTFOUND, "no job %s", job);
    }
    memset(ev, 0, sizeof *ev);
    uint64_t *f[] = {&ev->total, &ev->total_bytes, &ev->scanned, &ev->fetched, &ev->parsed,
                     &ev->stored, &ev->bytes, &ev->av_scanned, &ev->av_pending, &ev->av_infected,
                     &ev->errors};
    ev->status = strdup(PQgetvalue(r, 0, 0));
    for (int i = 0; i < 11; i++)
        *f[i] = strtoull(PQgetvalue(r, 0, i + 1), NULL, 10);
    if (!PQgetisnull(r, 0, 12))
        ev->error = strdup(PQgetvalue(r, 0, 12));
    PQclear(r);
    return MB_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void render(const mb_rec_event *ev, double elapsed, double rate, double mbps, bool tty)
{
    double eta = rate > 0 && ev->total > ev->stored ? (double)(ev->total - ev->stored) / rate : 0;
    printf("%s%-9s scanned %" PRIu64 " | fetched %" PRIu64 " | parsed %" PRIu64 " | stored %" PRIu64
           "/%" PRIu64 " | attachments scanned %" PRIu64 " (pending %" PRIu64 ", infected %" PRIu64
           ") | %.0f msg/s %.1f MB/s | %.0fs elapsed%s",
           tty ? "\r\033[K" : "", ev->status ? ev->status : "?", ev->scanned, ev->fetched,
           ev->parsed, ev->stored, ev->total, ev->av_scanned, ev->av_pending, ev->av_infected,
           rate, mbps, elapsed, "");
    if (eta > 0)
        printf(", ETA %.0fs", eta);
    if (ev->errors)
        printf(" | errors %" PRIu64, ev->errors);
    if (!tty)
        putchar('\n');
    fflush(stdout);
}

int mb_cli_watch(int argc, char **argv)
{
    if (argc != 2 || mb_cli_want_help(argc, argv)) {
        fprintf(argc == 2 ? stdout : stderr,
                "usage: mailbus watch JOB\n\nLive progress per stage from the job's events "
                "(<prefix>.events.JOB.>): scanned, fetched, parsed, stored, attachments\n"
                "scanned, messages/s, MB/s, ETA. Exits 0 when the job completes, 1 if it "
                "fails or is cancelled.\n");
        return argc == 2 ? 0 : 2;
    }
    const char *job = argv[1];
    uint64_t jid;
    if (mb_parse_u64(job, INT64_MAX, &jid))
        return mb_cli_fail("watch", MB_ERR_INVALID);
    watch_state w = {.mu = PTHREAD_MUTEX_INITIALIZER};
    mb_db *db = NULL;
    mb_bus *bus = NULL;
    mb_bus_sub *sub = NULL;
    char suffix[64];
    snprintf(suffix, sizeof suffix, "events.%s.>", job);
    mb_status s = mb_cli_db(&db);
    if (!s) s = mb_cli_bus(&bus);
    if (!s) s = mb_bus_serve(bus, suffix, NULL, on_event, &w, &sub);
    bool tty = isatty(STDOUT_FILENO);
    double t0 = now_s(), last_print = 0, rate = 0, mbps = 0;
    uint64_t prev_stored = 0, prev_bytes = 0;
    double prev_t = t0;
    int rc = 1;
    while (!s) {
        mb_rec_event cur = {0};
        bool fresh = false;
        pthread_mutex_lock(&w.mu);
        if (w.have && time(NULL) - w.at < 3) {
            cur = w.ev; /* borrowed while locked: copy what we print */
            cur.status = w.ev.status ? strdup(w.ev.status) : NULL;
            cur.kind = w.ev.kind ? strdup(w.ev.kind) : NULL;
            cur.error = w.ev.error ? strdup(w.ev.error) : NULL;
            cur.stage = NULL;
            fresh = true;
        }
        pthread_mutex_unlock(&w.mu);
        if (!fresh && (s = poll_db(db, job, &cur)))
            break;
        double t = now_s();
        if (t - prev_t >= 1.0) {
            double dt = t - prev_t;
            double r1 = (double)(cur.stored - (cur.stored < prev_stored ? cur.stored : prev_stored)) / dt;
            double m1 = (double)(cur.bytes - (cur.bytes < prev_bytes ? cur.bytes : prev_bytes)) / dt / 1e6;
            rate = prev_stored || prev_bytes ? 0.5 * rate + 0.5 * r1 : r1;
            mbps = prev_stored || prev_bytes ? 0.5 * mbps + 0.5 * m1 : m1;
            prev_stored = cur.stored;
            prev_bytes = cur.bytes;
            prev_t = t;
        }
        const char *st = cur.status ? cur.status : "";
        bool over = !strcmp(st, "completed") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
        if (over || t - last_print >= (tty ? 0.25 : 2.0)) {
            render(&cur, t - t0, rate, mbps, tty);
            last_print = t;
        }
        if (over) {
            if (tty)
                putchar('\n');
            if (strcmp(st, "completed"))
                fprintf(stderr, "job %s %s%s%s\n", job, st, cur.error ? ": " : "",
                        cur.error ? cur.error : "");
            rc = strcmp(st, "completed") ? 1 : 0;
            mb_rec_free(&mb_type_event, &cur);
            break;
        }
        mb_rec_free(&mb_type_event, &cur);
        usleep(250000);
    }
    mb_bus_unsubscribe(sub);
    mb_bus_free(bus);
    mb_db_free(db);
    pthread_mutex_lock(&w.mu);
    mb_rec_free(&mb_type_event, &w.ev);
    pthread_mutex_unlock(&w.mu);
    if (s)
        return mb_cli_fail("watch", s);
    return rc;
}
