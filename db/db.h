/* db.h — the Postgres access layer every stage uses: one connection with
 * retrying connect, transparent reconnect, cached prepared statements,
 * transactions, a text-array builder for batched writes, the embedded
 * migrations, and a fault-injection hook for tests.
 *
 * One mb_db is one libpq connection: use it from one thread at a time.
 *
 * Lost connections (server restart, pg_terminate_backend, network):
 *   - Outside a transaction, a statement that fails because the connection
 *     dropped is retried once on a fresh connection (reconnect with backoff
 *     for up to MAILBUS_PG_CONNECT_TIMEOUT seconds). Such a statement may
 *     therefore run twice if the server applied it but the reply was lost:
 *     autocommit statements must be idempotent (every mailbus write is:
 *     INSERT ... ON CONFLICT, content addressing). Anything that is not goes
 *     inside mb_db_begin/commit.
 *   - Inside a transaction (mb_db_begin, or a BEGIN the caller sent), the
 *     server has already rolled the transaction back, so the statement
 *     returns MB_ERR_NET and mb_db_retryable() is true. The caller calls
 *     mb_db_rollback() (which succeeds and clears the transaction) and
 *     retries the WHOLE transaction; the next statement reconnects.
 *   - Server errors (constraint violation, syntax) return MB_ERR_DB with the
 *     server's message, SQLSTATE and a short form of the statement.
 *     Serialization failures and deadlocks are also mb_db_retryable().
 *   - Session state does not survive a reconnect: prepared statements are
 *     re-prepared automatically on first use, but advisory locks, SET and
 *     LISTEN do not come back; compare mb_db_generation() to detect it.
 *
 * The DSN's password never appears in logs or error messages. */
#ifndef MB_DB_H
#define MB_DB_H

#include "util/buf.h"
#include "util/mb.h"

#include <libpq-fe.h>
#include <stdbool.h>

typedef struct mb_db mb_db;

/* Connect to dsn (URI or key=value form). While the server is not up yet
 * (connection refused, starting up), retries with backoff for up to
 * MAILBUS_PG_CONNECT_TIMEOUT seconds (default 30); authentication errors and
 * a missing database fail at once. *out is owned by the caller (mb_db_free). */
mb_status mb_db_connect(const char *dsn, mb_db **out);
void mb_db_free(mb_db *db);

/* The live libpq connection, for what this layer does not wrap (COPY,
 * pipeline mode). It may change after any call that reconnects; do not keep
 * it across calls. NULL if the connection is currently down. */
PGconn *mb_db_conn(mb_db *db);

/* Run one or more SQL statements with no parameters and no result
 * (simple-query protocol, so "a; b; c" is allowed). */
mb_status mb_db_exec(mb_db *db, const char *sql);

/* Run one statement with text parameters ($1..$n; a NULL entry is SQL NULL).
 * On success *out (if out is non-NULL) is the result, which the caller
 * PQclear()s; with out NULL the result is discarded. */
mb_status mb_db_query(mb_db *db, const char *sql, int nparams, const char *const *params,
                      PGresult **out);

/* Register a named prepared statement. Idempotent: preparing the same name
 * with the same SQL again is a no-op; the same name with different SQL is
 * MB_ERR_INVALID. Prepared on the server now (so SQL errors show up at
 * start-up) and again, lazily, after each reconnect. */
mb_status mb_db_prepare(mb_db *db, const char *name, const char *sql, int nparams);
/* A module's statements, prepared together (mb_db_prepare_all). */
typedef struct {
    const char *name;
    int nparams;
    const char *sql;
} mb_db_stmt;
/* mb_db_prepare each of the n statements; the error names the one that failed. */
mb_status mb_db_prepare_all(mb_db *db, const mb_db_stmt *stmts, size_t n);
/* Execute a statement registered with mb_db_prepare; result as mb_db_query.
 * MB_ERR_NOTFOUND if name was never prepared; MB_ERR_INVALID if nparams
 * differs from the registered count. */
mb_status mb_db_exec_prepared(mb_db *db, const char *name, int nparams,
                              const char *const *params, PGresult **out);

/* Transactions (not nested). rollback always leaves the connection outside
 * a transaction and succeeds if the connection is gone (the server has
 * discarded the transaction already). commit of a transaction in which a
 * statement failed returns MB_ERR_DB ("rolled back"), never MB_OK. */
mb_status mb_db_begin(mb_db *db);
mb_status mb_db_commit(mb_db *db);
mb_status mb_db_rollback(mb_db *db);
bool mb_db_in_transaction(const mb_db *db);

/* Whether the last failure is worth retrying (the whole transaction if
 * inside one): connection lost, serialization failure, deadlock, admin
 * shutdown, server starting up. */
bool mb_db_retryable(const mb_db *db);
/* SQLSTATE of the last server error ("" if none / not a server error). */
const char *mb_db_sqlstate(const mb_db *db);
/* Increments on every (re)connect; session state is lost when it changes. */
unsigned mb_db_generation(const mb_db *db);

/* Is the server there? One round trip ("SELECT 1") on a live connection, or
 * ONE connect attempt when the connection is down (no backoff, no wait for
 * MAILBUS_PG_CONNECT_TIMEOUT). MB_OK, MB_ERR_NET (unreachable, starting up,
 * shutting down; mb_db_retryable() true) or MB_ERR_DB (the server answers
 * but refuses: authentication, a missing database, an aborted transaction). */
mb_status mb_db_ping(mb_db *db);

/* Called (from the waiting thread) at least every 250 ms while any mb_db of
 * the process waits to reconnect, so that work held during an outage can be
 * kept alive (stage.c heartbeats the records in hand). Process-wide; NULL
 * removes it. The "not reachable" and "connection lost" warnings are logged
 * at most once a minute per process, however many statements wait. */
void mb_db_set_wait_hook(void (*fn)(void));

/* Test hook: the n-th statement from now (1 = the next one; BEGIN/COMMIT
 * count, the automatic re-prepare does not) fails as if the connection had
 * dropped: its socket is shut down just before the statement is sent, so the
 * server really loses the session and rolls back. n <= 0 disarms. */
void mb_db_fault_after(mb_db *db, int n);

/* Render dsn for logs as user@host:port/dbname — never the password.
 * Appends to out. */
mb_status mb_db_dsn_describe(const char *dsn, mb_buf *out);

/* ---- mb_pgarr: Postgres array literals for batched writes ----------------
 *
 * A batch of N rows is one statement with one array parameter per column:
 *
 *   INSERT INTO t (a, b)
 *   SELECT * FROM unnest($1::bigint[], $2::text[])
 *   ON CONFLICT (a) DO UPDATE SET b = EXCLUDED.b
 *
 * Each element is written in the array-literal syntax ('{"x","y\"z",NULL}'):
 * strings are always double-quoted with " and \ escaped, so commas, braces,
 * spaces, the word NULL and the empty string survive. A per-row array column
 * (flags text[]) is passed as a text[] of array literals — build the inner
 * mb_pgarr, add its mb_pgarr_cstr() as a string, cast with x::text[] — since
 * unnest() of a 2-D array would flatten it.
 *
 * A zeroed mb_pgarr (MB_PGARR_INIT) is an empty array "{}". After a failed
 * add the literal is incomplete: reset it before reuse. */
typedef struct {
    mb_buf buf; /* owned: "{e1,e2" while building; "}" appended by cstr */
    size_t n;   /* elements added */
} mb_pgarr;

#define MB_PGARR_INIT {MB_BUF_INIT, 0}

void mb_pgarr_free(mb_pgarr *a);
void mb_pgarr_reset(mb_pgarr *a); /* back to empty, keep memory */
/* s (NUL-terminated UTF-8) as a quoted element; s == NULL adds SQL NULL.
 * MB_ERR_INVALID for invalid UTF-8 (Postgres would reject the whole batch). */
mb_status mb_pgarr_add_str(mb_pgarr *a, const char *s);
/* n bytes of s; an embedded NUL or invalid UTF-8 is MB_ERR_INVALID. */
mb_status mb_pgarr_add_strn(mb_pgarr *a, const char *s, size_t n);
mb_status mb_pgarr_add_null(mb_pgarr *a);
mb_status mb_pgarr_add_i64(mb_pgarr *a, int64_t v);
mb_status mb_pgarr_add_u64(mb_pgarr *a, uint64_t v);
mb_status mb_pgarr_add_bool(mb_pgarr *a, bool v);
/* Bytes as a bytea hex element ("\\x0a1b..."), for a $n::bytea[] parameter.
 * p == NULL adds SQL NULL. */
mb_status mb_pgarr_add_bytea(mb_pgarr *a, const unsigned char *p, size_t n);
/* Unix seconds as a UTC timestamptz element ("2024-01-31 12:00:00+00"). */
mb_status mb_pgarr_add_time(mb_pgarr *a, int64_t unix_secs);
/* The literal, e.g. "{1,2}". Valid until the next add/reset/free; NULL
 * only on allocation failure. Adding after cstr() continues the array. */
const char *mb_pgarr_cstr(mb_pgarr *a);

/* ---- migrations ------------------------------------------------------------ */

/* One embedded migration, generated from db/migrations/NNNN_name.sql. */
typedef struct {
    int version;      /* NNNN */
    const char *name; /* "init" */
    const char *sql;  /* file contents, NUL-terminated */
    size_t sql_len;
} mb_migration;

extern const mb_migration mb_migrations[]; /* ascending by version */
extern const size_t mb_migrations_count;

/* Bring the schema up to date: under a session advisory lock (so concurrent
 * callers — every stage does this at start-up — wait for each other),
 * create schema_migrations if missing and apply each missing migration in
 * its own transaction, recording it there. *applied_out (may be NULL) is how
 * many were applied by this call; 0 when already up to date. */
mb_status mb_db_migrate(mb_db *db, int *applied_out);
/* Highest applied version (0 for an empty database). */
mb_status mb_db_schema_version(mb_db *db, int *version_out);

#endif
