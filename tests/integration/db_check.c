/* db_check.c — mb-test-db_check: the db/ access layer against a real
 * Postgres. Run by test_db.sh with MAILBUS_PG_DSN pointing at a fresh,
 * empty database of its own. Exercises: migrate (twice), queries and their
 * error text, prepared statements, reconnect after pg_terminate_backend
 * (outside and inside a transaction), mb_pgarr with hostile strings, a
 * batched idempotent upsert through unnest(), and fault injection at every
 * statement of a batch transaction with a retrying writer.
 *
 * Prints "ok - ..." per check; exits 1 at the first failure. */
#include "db/db.h"
#include "util/env.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "FAIL %s:%d: %s\n  ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, "\n  last error: %s\n", mb_err_last());                  \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)
#define OK(expr) CHECK((expr) == MB_OK, "%s", #expr)

static const char *dsn;

/* One value from a one-row query, copied to out. */
static void scalar(mb_db *db, const char *sql, int np, const char *const *p, char *out,
                   size_t n)
{
    PGresult *res = NULL;
    OK(mb_db_query(db, sql, np, p, &res));
    CHECK(PQntuples(res) == 1, "%s: %d rows", sql, PQntuples(res));
    snprintf(out, n, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static long scalar_long(mb_db *db, const char *sql)
{
    char v[64];
    scalar(db, sql, 0, NULL, v, sizeof v);
    return atol(v);
}

static void test_migrate(mb_db *db)
{
    int applied = -1, version = -1;
    OK(mb_db_schema_version(db, &version));
    CHECK(version == 0, "fresh database has version %d", version);
    OK(mb_db_migrate(db, &applied));
    CHECK(applied == (int)mb_migrations_count, "applied %d of %zu", applied,
          mb_migrations_count);
    OK(mb_db_migrate(db, &applied));
    CHECK(applied == 0, "second migrate applied %d", applied);
    OK(mb_db_schema_version(db, &version));
    CHECK(version == mb_migrations[mb_migrations_count - 1].version, "version %d", version);
    printf("ok - migrate: %zu applied, then 0, version %d\n", mb_migrations_count, version);
}

static void test_query(mb_db *db)
{
    PGresult *res = NULL;
    const char *p[] = {"abc", NULL};
    OK(mb_db_query(db, "SELECT $1::text, $2::text IS NULL, length($1)", 2, p, &res));
    CHECK(!strcmp(PQgetvalue(res, 0, 0), "abc") && !strcmp(PQgetvalue(res, 0, 1), "t") &&
              !strcmp(PQgetvalue(res, 0, 2), "3"),
          "params round trip");
    PQclear(res);

    mb_status st = mb_db_query(db, "SELECT *   FROM\n  no_such_table_xyz WHERE 1 = 1", 0, NULL,
                               &res);
    CHECK(st == MB_ERR_DB && res == NULL, "missing table gives MB_ERR_DB, got %d", st);
    CHECK(strstr(mb_err_last(), "no_such_table_xyz") && strstr(mb_err_last(), "42P01") &&
              strstr(mb_err_last(), "SELECT * FROM no_such_table_xyz"),
          "error names server message, SQLSTATE and statement");
    CHECK(!strcmp(mb_db_sqlstate(db), "42P01") && !mb_db_retryable(db), "sqlstate");

    /* commit after a failed statement must not report success */
    OK(mb_db_begin(db));
    CHECK(mb_db_exec(db, "SELECT 1/0") == MB_ERR_DB, "division by zero");
    CHECK(mb_db_in_transaction(db), "still in (aborted) transaction");
    st = mb_db_commit(db);
    CHECK(st == MB_ERR_DB && strstr(mb_err_last(), "rolled back"), "commit of failed tx: %d", st);
    CHECK(!mb_db_in_transaction(db), "commit ends the transaction");
    CHECK(mb_db_begin(db) == MB_OK && mb_db_begin(db) == MB_ERR_INVALID, "nested begin refused");
    OK(mb_db_rollback(db));
    printf("ok - query: params, NULL, error text, failed-commit detection\n");
}

static void test_prepare(mb_db *db)
{
    PGresult *res = NULL;
    OK(mb_db_prepare(db, "add", "SELECT $1::int + $2::int", 2));
    OK(mb_db_prepare(db, "add", "SELECT $1::int + $2::int", 2));
    CHECK(mb_db_prepare(db, "add", "SELECT $1::int - $2::int", 2) == MB_ERR_INVALID,
          "same name, different SQL");
    CHECK(mb_db_prepare(db, "broken", "SELEC oops", 0) == MB_ERR_DB &&
              strstr(mb_err_last(), "broken"),
          "bad SQL fails at prepare time");
    CHECK(mb_db_exec_prepared(db, "broken", 0, NULL, NULL) == MB_ERR_NOTFOUND,
          "failed prepare is not cached");
    const char *p[] = {"2", "3"};
    OK(mb_db_exec_prepared(db, "add", 2, p, &res));
    CHECK(!strcmp(PQgetvalue(res, 0, 0), "5"), "2+3=%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    CHECK(mb_db_exec_prepared(db, "add", 1, p, NULL) == MB_ERR_INVALID, "param count checked");
    CHECK(mb_db_exec_prepared(db, "nope", 0, NULL, NULL) == MB_ERR_NOTFOUND, "unknown name");
    printf("ok - prepare: idempotent, conflicting SQL refused, executes\n");
}

/* Kill db's backend from a second connection and wait until it is gone. */
static void terminate(mb_db *killer, mb_db *db)
{
    char pid[24], done[8];
    snprintf(pid, sizeof pid, "%d", PQbackendPID(mb_db_conn(db)));
    const char *p[] = {pid};
    scalar(killer, "SELECT pg_terminate_backend($1::int, 5000)", 1, p, done, sizeof done);
    CHECK(!strcmp(done, "t"), "pg_terminate_backend(%s) returned %s", pid, done);
}

static void test_reconnect(mb_db *db)
{
    mb_db *killer = NULL;
    OK(mb_db_connect(dsn, &killer));
    PGresult *res = NULL;
    const char *p[] = {"20", "22"};

    /* outside a transaction: the next call reconnects, re-prepares, succeeds */
    int pid0 = PQbackendPID(mb_db_conn(db));
    unsigned gen0 = mb_db_generation(db);
    terminate(killer, db);
    OK(mb_db_exec_prepared(db, "add", 2, p, &res));
    CHECK(!strcmp(PQgetvalue(res, 0, 0), "42"), "after reconnect 20+22=%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    CHECK(mb_db_generation(db) == gen0 + 1, "generation %u -> %u", gen0, mb_db_generation(db));
    CHECK(PQbackendPID(mb_db_conn(db)) != pid0, "new backend");

    terminate(killer, db);
    OK(mb_db_exec(db, "SELECT 1"));
    terminate(killer, db);
    OK(mb_db_query(db, "SELECT 1", 0, NULL, NULL));

    /* inside a transaction: the error is returned, the transaction retried */
    OK(mb_db_exec(db, "CREATE TABLE recon (v int)"));
    OK(mb_db_begin(db));
    OK(mb_db_exec(db, "INSERT INTO recon VALUES (1)"));
    terminate(killer, db);
    mb_status st = mb_db_exec(db, "INSERT INTO recon VALUES (2)");
    CHECK(st == MB_ERR_NET && mb_db_retryable(db), "lost connection in tx: %d", st);
    CHECK(strstr(mb_err_last(), "retry the transaction"), "error tells what to do");
    st = mb_db_exec(db, "INSERT INTO recon VALUES (3)");
    CHECK(st == MB_ERR_NET, "no silent autocommit after a lost transaction: %d", st);
    OK(mb_db_rollback(db));
    CHECK(!mb_db_in_transaction(db), "rollback cleared tx");
    OK(mb_db_begin(db));
    OK(mb_db_exec(db, "INSERT INTO recon VALUES (1); INSERT INTO recon VALUES (2)"));
    OK(mb_db_commit(db));
    CHECK(scalar_long(db, "SELECT count(*) FROM recon") == 2 &&
              scalar_long(db, "SELECT sum(v) FROM recon") == 3,
          "exactly the retried rows");
    mb_db_free(killer);
    printf("ok - reconnect after pg_terminate_backend (outside and inside a transaction)\n");
}

static const char *const nasty[] = {
    "plain", "", "with space", "com,ma", "{braces}", "}", "{", "\"", "quo\"te", "back\\slash",
    "\\", "\\\"", "NULL", "null", "'single'", "tab\there", "new\nline", "Grüße — 日本語 🎉",
    "a\\\"b\\\\c\"", "  padded  ", "{\"a\",\"b\"}", NULL, "x",
};

static void test_pgarr(mb_db *db)
{
    mb_pgarr a = MB_PGARR_INIT;
    size_t n = MB_ARRAY_LEN(nasty);
    for (size_t i = 0; i < n; i++)
        OK(mb_pgarr_add_str(&a, nasty[i]));
    const char *p[] = {mb_pgarr_cstr(&a)};
    PGresult *res = NULL;
    OK(mb_db_query(db, "SELECT x IS NULL, x FROM unnest($1::text[]) WITH ORDINALITY t(x, o) "
                       "ORDER BY o", 1, p, &res));
    CHECK((size_t)PQntuples(res) == n, "%d elements back, sent %zu", PQntuples(res), n);
    for (size_t i = 0; i < n; i++) {
        bool isnull = PQgetvalue(res, (int)i, 0)[0] == 't';
        CHECK(isnull == (nasty[i] == NULL), "element %zu NULL-ness", i);
        if (nasty[i])
            CHECK(!strcmp(PQgetvalue(res, (int)i, 1), nasty[i]), "element %zu: sent [%s] got [%s]",
                  i, nasty[i], PQgetvalue(res, (int)i, 1));
    }
    PQclear(res);

    /* bytea elements, including empty and all byte values */
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    mb_pgarr_reset(&a);
    OK(mb_pgarr_add_bytea(&a, all, sizeof all));
    OK(mb_pgarr_add_bytea(&a, all, 0));
    OK(mb_pgarr_add_bytea(&a, NULL, 0));
    p[0] = mb_pgarr_cstr(&a);
    OK(mb_db_query(db, "SELECT octet_length(x), md5(x), x IS NULL FROM unnest($1::bytea[]) "
                       "WITH ORDINALITY t(x, o) ORDER BY o", 1, p, &res));
    char md5all[40];
    scalar(db, "SELECT md5(decode(string_agg(lpad(to_hex(i), 2, '0'), ''), 'hex')) "
               "FROM generate_series(0, 255) i", 0, NULL, md5all, sizeof md5all);
    CHECK(PQntuples(res) == 3 && !strcmp(PQgetvalue(res, 0, 0), "256") &&
              !strcmp(PQgetvalue(res, 0, 1), md5all) && !strcmp(PQgetvalue(res, 1, 0), "0") &&
              !strcmp(PQgetvalue(res, 2, 2), "t"),
          "bytea round trip");
    PQclear(res);

    /* per-row arrays: a text[] of array literals, cast per row */
    mb_pgarr outer = MB_PGARR_INIT, inner = MB_PGARR_INIT;
    OK(mb_pgarr_add_str(&inner, "\\Seen"));
    OK(mb_pgarr_add_str(&inner, "$Label,\"x\"}"));
    OK(mb_pgarr_add_str(&outer, mb_pgarr_cstr(&inner)));
    mb_pgarr_reset(&inner);
    OK(mb_pgarr_add_str(&outer, mb_pgarr_cstr(&inner))); /* empty flags */
    p[0] = mb_pgarr_cstr(&outer);
    OK(mb_db_query(db, "SELECT coalesce(cardinality(f::text[]), -1), (f::text[])[1], "
                       "(f::text[])[2] FROM unnest($1::text[]) WITH ORDINALITY t(f, o) ORDER BY o",
                   1, p, &res));
    CHECK(PQntuples(res) == 2 && !strcmp(PQgetvalue(res, 0, 0), "2") &&
              !strcmp(PQgetvalue(res, 0, 1), "\\Seen") &&
              !strcmp(PQgetvalue(res, 0, 2), "$Label,\"x\"}") && !strcmp(PQgetvalue(res, 1, 0), "0"),
          "nested arrays: [%s] [%s] [%s] / [%s]", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
          PQgetvalue(res, 0, 2), PQgetvalue(res, 1, 0));
    PQclear(res);

    /* timestamps and numbers */
    mb_pgarr_reset(&a);
    OK(mb_pgarr_add_time(&a, 0));
    OK(mb_pgarr_add_time(&a, 1700000000));
    p[0] = mb_pgarr_cstr(&a);
    OK(mb_db_query(db, "SELECT extract(epoch FROM x)::bigint FROM unnest($1::timestamptz[]) x", 1,
                   p, &res));
    CHECK(!strcmp(PQgetvalue(res, 0, 0), "0") && !strcmp(PQgetvalue(res, 1, 0), "1700000000"),
          "timestamps");
    PQclear(res);
    mb_pgarr_reset(&a);
    OK(mb_pgarr_add_i64(&a, INT64_MIN));
    OK(mb_pgarr_add_u64(&a, 9223372036854775807ULL));
    OK(mb_pgarr_add_null(&a));
    p[0] = mb_pgarr_cstr(&a);
    OK(mb_db_query(db, "SELECT sum(x::numeric)::text, count(x) FROM unnest($1::bigint[]) x", 1, p,
                   &res));
    CHECK(!strcmp(PQgetvalue(res, 0, 0), "-1") && !strcmp(PQgetvalue(res, 0, 1), "2"),
          "bigints: %s", PQgetvalue(res, 0, 0));
    PQclear(res);
    mb_pgarr_free(&a);
    mb_pgarr_free(&inner);
    mb_pgarr_free(&outer);
    printf("ok - mb_pgarr: %zu hostile strings, bytea, nested arrays, times, bigints\n", n);
}

/* ---- a real batched idempotent upsert ----------------------------------- */

typedef struct {
    unsigned char sha[32];
    int64_t size;
    const char *message_id;
    const char *subject;
    int64_t date;
    const char *flag;
} test_email;

#define NROWS 600
static test_email rows[NROWS];
static char msgids[NROWS][48];

static void make_rows(void)
{
    for (int i = 0; i < NROWS; i++) {
        memset(rows[i].sha, 0, 32);
        rows[i].sha[0] = (unsigned char)(i >> 8);
        rows[i].sha[1] = (unsigned char)i;
        rows[i].sha[31] = 0xAB;
        rows[i].size = 1000 + i;
        snprintf(msgids[i], sizeof msgids[i], "<%d@example.org>", i);
        rows[i].message_id = msgids[i];
        rows[i].subject = nasty[i % MB_ARRAY_LEN(nasty)];
        rows[i].date = 1600000000 + i * 3600;
        rows[i].flag = i % 3 ? "\\Seen" : NULL;
    }
}

static const char upsert_sql[] =
    "INSERT INTO emails (account_id, blob_sha256, size, message_id, subject, date, flags) "
    "SELECT $1::bigint, h, z, m, s, d, f::text[] "
    "FROM unnest($2::bytea[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[], "
    "$7::text[]) AS r(h, z, m, s, d, f) "
    "ON CONFLICT (account_id, blob_sha256) DO UPDATE SET "
    "size = EXCLUDED.size, message_id = EXCLUDED.message_id, subject = EXCLUDED.subject, "
    "date = EXCLUDED.date, flags = EXCLUDED.flags";

/* Upsert rows [from, to) of account as ONE statement, whatever the count. */
static mb_status upsert_emails(mb_db *db, const char *account, int from, int to)
{
    mb_pgarr h = MB_PGARR_INIT, z = MB_PGARR_INIT, m = MB_PGARR_INIT, s = MB_PGARR_INIT,
             d = MB_PGARR_INIT, f = MB_PGARR_INIT, one = MB_PGARR_INIT;
    mb_status st = mb_db_prepare(db, "upsert_emails", upsert_sql, 7);
    for (int i = from; i < to && st == MB_OK; i++) {
        mb_pgarr_reset(&one);
        if (rows[i].flag)
            st = mb_pgarr_add_str(&one, rows[i].flag);
        if (st == MB_OK) st = mb_pgarr_add_bytea(&h, rows[i].sha, 32);
        if (st == MB_OK) st = mb_pgarr_add_i64(&z, rows[i].size);
        if (st == MB_OK) st = mb_pgarr_add_str(&m, rows[i].message_id);
        if (st == MB_OK) st = mb_pgarr_add_str(&s, rows[i].subject);
        if (st == MB_OK) st = mb_pgarr_add_time(&d, rows[i].date);
        if (st == MB_OK) st = mb_pgarr_add_str(&f, mb_pgarr_cstr(&one));
    }
    if (st == MB_OK) {
        const char *p[] = {account,          mb_pgarr_cstr(&h), mb_pgarr_cstr(&z),
                           mb_pgarr_cstr(&m), mb_pgarr_cstr(&s), mb_pgarr_cstr(&d),
                           mb_pgarr_cstr(&f)};
        st = mb_db_exec_prepared(db, "upsert_emails", 7, p, NULL);
    }
    mb_pgarr_free(&h); mb_pgarr_free(&z); mb_pgarr_free(&m); mb_pgarr_free(&s);
    mb_pgarr_free(&d); mb_pgarr_free(&f); mb_pgarr_free(&one);
    return st;
}

static void new_account(mb_db *db, const char *name, char *id, size_t n)
{
    const char *p[] = {name};
    scalar(db, "INSERT INTO accounts (name, kind, secret) VALUES ($1, 'imap', "
               "decode(repeat('ab', 40), 'hex')) RETURNING id", 1, p, id, n);
}

static long count_for(mb_db *db, const char *sql, const char *account)
{
    char v[64];
    const char *p[] = {account};
    scalar(db, sql, 1, p, v, sizeof v);
    return atol(v);
}

static void test_batch_upsert(mb_db *db)
{
    char acct[24];
    new_account(db, "batch", acct, sizeof acct);
    OK(upsert_emails(db, acct, 0, NROWS));
    long n1 = count_for(db, "SELECT count(*) FROM emails WHERE account_id = $1", acct);
    OK(upsert_emails(db, acct, 0, NROWS));
    long n2 = count_for(db, "SELECT count(*) FROM emails WHERE account_id = $1", acct);
    CHECK(n1 == NROWS && n2 == NROWS, "row counts %ld then %ld, want %d", n1, n2, NROWS);
    /* every value arrived intact */
    PGresult *res = NULL;
    const char *p[] = {acct};
    OK(mb_db_query(db, "SELECT get_byte(blob_sha256, 0) * 256 + get_byte(blob_sha256, 1), size, "
                       "message_id, subject IS NULL, subject, extract(epoch FROM date)::bigint, "
                       "array_to_string(flags, '|') FROM emails WHERE account_id = $1 ORDER BY 1",
                   1, p, &res));
    CHECK(PQntuples(res) == NROWS, "rows");
    for (int r = 0; r < NROWS; r++) {
        int i = atoi(PQgetvalue(res, r, 0));
        CHECK(i == r, "row %d has index %d", r, i);
        CHECK(atol(PQgetvalue(res, r, 1)) == rows[i].size, "size %d", i);
        CHECK(!strcmp(PQgetvalue(res, r, 2), rows[i].message_id), "message_id %d", i);
        CHECK((PQgetvalue(res, r, 3)[0] == 't') == (rows[i].subject == NULL), "subject null %d", i);
        if (rows[i].subject)
            CHECK(!strcmp(PQgetvalue(res, r, 4), rows[i].subject), "subject %d: [%s]", i,
                  PQgetvalue(res, r, 4));
        CHECK(atol(PQgetvalue(res, r, 5)) == rows[i].date, "date %d", i);
        CHECK(!strcmp(PQgetvalue(res, r, 6), rows[i].flag ? rows[i].flag : ""), "flags %d", i);
    }
    PQclear(res);
    printf("ok - batched upsert of %d rows in one statement, twice: %ld rows, values intact\n",
           NROWS, n2);
}

/* The writer a stage would use: the whole batch (three statements plus a
 * non-idempotent counter update) in one transaction, retried as a whole on
 * a retryable failure. Returns the number of attempts used. */
static int write_batch_tx(mb_db *db, const char *acct, const char *job)
{
    const char *p[] = {job};
    for (int attempt = 1; attempt <= 5; attempt++) {
        mb_status st = mb_db_begin(db);
        for (int b = 0; b < 3 && st == MB_OK; b++)
            st = upsert_emails(db, acct, b * (NROWS / 3), (b + 1) * (NROWS / 3));
        if (st == MB_OK)
            st = mb_db_query(db, "UPDATE sync_jobs SET stored = stored + 600 WHERE id = $1", 1, p,
                             NULL);
        if (st == MB_OK)
            st = mb_db_commit(db);
        if (st == MB_OK)
            return attempt;
        CHECK(mb_db_retryable(db), "failure not retryable (attempt %d)", attempt);
        OK(mb_db_rollback(db));
    }
    CHECK(0, "batch transaction did not succeed in 5 attempts");
    return 0;
}

static void test_fault_injection(mb_db *db)
{
    /* outside a transaction the dropped statement is transparently retried */
    unsigned gen0 = mb_db_generation(db);
    mb_db_fault_after(db, 1);
    PGresult *res = NULL;
    const char *ap[] = {"1", "1"};
    OK(mb_db_exec_prepared(db, "add", 2, ap, &res));
    CHECK(!strcmp(PQgetvalue(res, 0, 0), "2") && mb_db_generation(db) == gen0 + 1,
          "fault outside tx retried on a new session");
    PQclear(res);

    /* statements of write_batch_tx: BEGIN, 3 upserts, UPDATE, COMMIT */
    for (int k = 1; k <= 6; k++) {
        char name[32], acct[24], job[24];
        snprintf(name, sizeof name, "fault-%d", k);
        new_account(db, name, acct, sizeof acct);
        const char *p[] = {acct};
        scalar(db, "INSERT INTO sync_jobs (account_id, type) VALUES ($1, 'import') RETURNING id",
               1, p, job, sizeof job);
        gen0 = mb_db_generation(db);
        mb_db_fault_after(db, k);
        int attempts = write_batch_tx(db, acct, job);
        CHECK(mb_db_generation(db) == gen0 + 1, "k=%d: fault fired once (gen %u -> %u)", k, gen0,
              mb_db_generation(db));
        /* a drop before BEGIN is absorbed by the transparent retry */
        CHECK(attempts == (k == 1 ? 1 : 2), "k=%d: %d attempts", k, attempts);
        long n = count_for(db, "SELECT count(*) FROM emails WHERE account_id = $1", acct);
        long sz = count_for(db, "SELECT coalesce(sum(size), 0) FROM emails WHERE account_id = $1",
                            acct);
        const char *jp[] = {job};
        char stored[24];
        scalar(db, "SELECT stored FROM sync_jobs WHERE id = $1", 1, jp, stored, sizeof stored);
        long want_sz = 0;
        for (int i = 0; i < NROWS; i++)
            want_sz += rows[i].size;
        CHECK(n == NROWS && sz == want_sz && atol(stored) == NROWS,
              "k=%d: %ld rows (want %d), size sum %ld (want %ld), counter %s (want %d)", k, n,
              NROWS, sz, want_sz, stored, NROWS);
    }
    printf("ok - fault injected at each of the 6 statements of a batch transaction: retried "
           "writer leaves exactly %d rows and an exact counter\n", NROWS);
}

static void test_connect_errors(void)
{
    setenv("MAILBUS_PG_CONNECT_TIMEOUT", "1", 1);
    mb_db *db = NULL;
    time_t t0 = time(NULL);
    mb_status st = mb_db_connect("postgresql://u:pw_SHOULD_NOT_LEAK@127.0.0.1:1/x", &db);
    CHECK(st == MB_ERR_TIMEOUT && db == NULL, "unreachable server: %d", st);
    CHECK(time(NULL) - t0 <= 4, "connect timeout honoured");
    CHECK(strstr(mb_err_last(), "u@127.0.0.1:1/x") && !strstr(mb_err_last(), "pw_SHOULD"),
          "error names server, hides password");
    st = mb_db_connect("host=127.0.0.1 port=1 password=pw_SHOULD_NOT_LEAK dbname=x", &db);
    CHECK(st == MB_ERR_TIMEOUT && !strstr(mb_err_last(), "pw_SHOULD"), "key=value form");
    st = mb_db_connect("postgresql://u:pw_SHOULD_NOT_LEAK@127.0.0.1:notaport/x", &db);
    CHECK(st != MB_OK && !strstr(mb_err_last(), "pw_SHOULD"), "bad dsn hides password");
    unsetenv("MAILBUS_PG_CONNECT_TIMEOUT");
    printf("ok - connect errors: timeout honoured, server named, password never shown\n");
}

/* Child of test_late_server: a server that "comes up" late. It starts
 * listening on the already-bound socket only after delay_ms, then relays
 * one client connection to the real Postgres at pg_port. */
static void late_relay(int lfd, int pg_port, long delay_ms)
{
    struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    if (listen(lfd, 4) != 0)
        _exit(2);
    int c = accept(lfd, NULL, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in pg = {.sin_family = AF_INET, .sin_port = htons((uint16_t)pg_port)};
    inet_pton(AF_INET, "127.0.0.1", &pg.sin_addr);
    if (c < 0 || s < 0 || connect(s, (struct sockaddr *)&pg, sizeof pg) != 0)
        _exit(3);
    struct pollfd fds[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
    char buf[16384];
    for (;;) {
        if (poll(fds, 2, 10000) <= 0)
            _exit(0);
        for (int i = 0; i < 2; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n <= 0 || write(fds[1 - i].fd, buf, (size_t)n) != n)
                _exit(0);
        }
    }
}

/* mb_db_connect keeps retrying while the server is not up yet. */
static void test_late_server(mb_db *db)
{
    PGconn *pc = mb_db_conn(db);
    CHECK(pc && !strcmp(PQhost(pc), "127.0.0.1"), "test needs a TCP DSN to 127.0.0.1");
    int pg_port = atoi(PQport(pc));
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t alen = sizeof a;
    CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
              getsockname(lfd, (struct sockaddr *)&a, &alen) == 0,
          "bind a local port");
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0)
        late_relay(lfd, pg_port, 1500);
    close(lfd); /* bound but not listening: connects are refused until the child listens */

    char late_dsn[512];
    snprintf(late_dsn, sizeof late_dsn, "host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable",
             ntohs(a.sin_port), PQuser(pc), PQdb(pc));
    setenv("MAILBUS_PG_CONNECT_TIMEOUT", "20", 1);
    time_t t0 = time(NULL);
    mb_db *late = NULL;
    mb_status st = mb_db_connect(late_dsn, &late);
    unsetenv("MAILBUS_PG_CONNECT_TIMEOUT");
    CHECK(st == MB_OK, "connect to a server that comes up after 1.5 s");
    CHECK(time(NULL) - t0 >= 1, "it really waited");
    OK(mb_db_exec(late, "SELECT 1"));
    mb_db_free(late);
    int wst = 0;
    waitpid(pid, &wst, 0);
    CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "relay exit status %d", wst);
    printf("ok - connect waits for a server that is not up yet\n");
}

int main(void)
{
    mb_log_init("db_check");
    if (mb_env_require("MAILBUS_PG_DSN", &dsn) != MB_OK) {
        fprintf(stderr, "%s\n", mb_err_last());
        return 1;
    }
    make_rows();
    test_connect_errors();
    mb_db *db = NULL;
    OK(mb_db_connect(dsn, &db));
    test_late_server(db);
    test_migrate(db);
    test_query(db);
    test_prepare(db);
    test_reconnect(db);
    test_pgarr(db);
    test_batch_upsert(db);
    test_fault_injection(db);
    mb_db_free(db);
    printf("PASS db_check\n");
    return 0;
}
