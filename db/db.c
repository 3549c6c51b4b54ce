/* db.c — the libpq connection wrapper (see db.h for the contract on lost
 * connections and transactions). Everything that talks to the server goes
 * through run(), which owns the reconnect / retry-once / fault-injection
 * policy so it is the same for plain, parameterised and prepared statements. */
#include "db/db.h"

#include "util/env.h"
#include "util/log.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MB_DB_BACKOFF_FIRST_MS 100
#define MB_DB_BACKOFF_MAX_MS 2000
#define MB_DB_MSG_MAX 1024 /* cleaned error text kept from libpq */
#define MB_DB_STMT_SHORT 80 /* bytes of a statement quoted in errors */
#define MB_DB_WAIT_STEP_MS 250 /* the wait hook runs at least this often */
#define MB_DB_WARN_EVERY_S 60  /* one "not reachable" line per minute */

typedef struct {
    char *name;      /* owned */
    char *sql;       /* owned */
    int nparams;
    unsigned gen;    /* connection generation it was prepared on; 0 = never */
} mb_db_prep;

struct mb_db {
    char *dsn;        /* owned; may contain a password: never log it */
    char *password;   /* owned copy for scrubbing messages; NULL if none */
    char *desc;       /* owned, user@host:port/db for logs */
    PGconn *conn;     /* owned; NULL while down */
    unsigned gen;     /* bumped on each successful connect */
    long timeout_s;   /* MAILBUS_PG_CONNECT_TIMEOUT */
    bool in_tx;       /* the server session is inside a transaction block */
    bool retryable;   /* last failure is transient */
    char sqlstate[6]; /* last server error's SQLSTATE */
    int fault;        /* statements until the injected connection drop */
    mb_db_prep *preps;
    size_t nprep, capprep;
};

enum { K_SIMPLE, K_PARAMS, K_PREPARED };

/* ---- helpers ------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* The wait hook (db.h): process-wide, set once at start-up. */
static void (*_Atomic wait_hook)(void);

void mb_db_set_wait_hook(void (*fn)(void)) { atomic_store(&wait_hook, fn); }

/* Sleep ms while waiting for the server, running the wait hook every step. */
static void wait_ms(long ms)
{
    while (ms > 0) {
        void (*fn)(void) = atomic_load(&wait_hook);
        if (fn)
            fn();
        long step = ms < MB_DB_WAIT_STEP_MS ? ms : MB_DB_WAIT_STEP_MS;
        sleep_ms(step);
        ms -= step;
    }
}

/* One "not reachable" warning per minute per process, however many
 * statements and connections wait for the same outage. */
static _Atomic long last_warn_s;

static bool warn_due(void)
{
    long now = (long)now_s(), last = atomic_load(&last_warn_s);
    return (last == 0 || now - last >= MB_DB_WARN_EVERY_S) &&
           atomic_compare_exchange_strong(&last_warn_s, &last, now);
}

/* Copy libpq's message into out on one line (libpq uses "\n\t" layouts) and
 * replace every occurrence of the DSN's password with "***". libpq does not
 * normally echo the password, but this keeps the promise unconditional. */
static void clean_msg(const mb_db *db, const char *msg, char *out, size_t outsz)
{
    size_t o = 0;
    bool space = false;
    const char *pw = db ? db->password : NULL;
    size_t pwlen = pw ? strlen(pw) : 0;
    if (!msg)
        msg = "";
    for (const char *p = msg; *p && o + 4 < outsz;) {
        if (pwlen && !strncmp(p, pw, pwlen)) {
            memcpy(out + o, "***", 3);
            o += 3;
            p += pwlen;
            space = false;
            continue;
        }
        if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
            space = o > 0;
            p++;
            continue;
        }
        if (space) {
            out[o++] = ' ';
            space = false;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
}

/* First bytes of a statement on one line, for error messages: enough to
 * recognise it, cut on a UTF-8 boundary. */
static void short_stmt(const char *sql, char *out, size_t outsz)
{
    size_t o = 0;
    bool space = false, cut = false;
    for (const char *p = sql ? sql : ""; *p; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
            space = o > 0;
            continue;
        }
        if (o + (space ? 2 : 1) > MB_DB_STMT_SHORT || o + 5 >= outsz) {
            cut = true;
            break;
        }
        if (space) {
            out[o++] = ' ';
            space = false;
        }
        out[o++] = *p;
    }
    while (cut && o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
        o--;
    if (cut && o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0xC0)
        o--;
    if (cut) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static void notice_to_log(void *arg, const char *message)
{
    char buf[MB_DB_MSG_MAX];
    clean_msg(arg, message, buf, sizeof buf);
    MB_DEBUG(NULL, NULL, "postgres notice: %s", buf);
}

/* Connection failures that will not go away by waiting: fail fast on them
 * instead of spinning for the whole connect timeout. */
static bool connect_error_permanent(const char *msg)
{
    static const char *const permanent[] = {
        "authentication failed", "does not exist", "pg_hba.conf", "no password supplied",
        "invalid", "permission denied", "not permitted to log in",
    };
    for (size_t i = 0; i < MB_ARRAY_LEN(permanent); i++)
        if (strstr(msg, permanent[i]))
            return true;
    return false;
}

static bool sqlstate_retryable(const char *s)
{
    return !strcmp(s, "40001") || !strcmp(s, "40P01") || !strcmp(s, "57P01") ||
           !strcmp(s, "57P02") || !strcmp(s, "57P03") || !strcmp(s, "53300") ||
           !strncmp(s, "08", 2);
}

/* ---- dsn ------------------------------------------------------------------ */

static const char *opt_val(PQconninfoOption *opts, const char *key)
{
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, key))
            return o->val && *o->val ? o->val : NULL;
    return NULL;
}

/* Parse dsn without ever quoting it back: libpq's parse errors can echo
 * fragments of the string, which may include the password. */
static mb_status parse_dsn(const char *dsn, PQconninfoOption **opts_out)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (!opts) {
        /* a password can sit in "password=" or in a URI's user:pass@ part */
        const char *scheme = strstr(dsn, "://");
        const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
        const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
        bool has_pw = strstr(dsn, "password") || (at && colon && colon < at);
        mb_status st = mb_errf(MB_ERR_CONFIG, "postgres DSN is not a valid connection string%s%s",
                               has_pw || !err ? "" : ": ", has_pw || !err ? "" : err);
        PQfreemem(err);
        return st;
    }
    *opts_out = opts;
    return MB_OK;
}

mb_status mb_db_dsn_describe(const char *dsn, mb_buf *out)
{
    PQconninfoOption *opts = NULL;
    if (!dsn)
        return mb_errf(MB_ERR_CONFIG, "postgres DSN is empty");
    mb_status st = parse_dsn(dsn, &opts);
    if (st != MB_OK)
        return st;
    const char *user = opt_val(opts, "user"), *host = opt_val(opts, "host"),
               *hostaddr = opt_val(opts, "hostaddr"), *port = opt_val(opts, "port"),
               *dbname = opt_val(opts, "dbname");
    if (!host)
        host = hostaddr ? hostaddr : "local";
    st = mb_buf_printf(out, "%s%s%s%s%s%s%s", user ? user : "", user ? "@" : "", host,
                       port ? ":" : "", port ? port : "", dbname ? "/" : "",
                       dbname ? dbname : "");
    PQconninfoFree(opts);
    return st;
}

/* ---- connect ------------------------------------------------------------- */

static void drop_conn(mb_db *db)
{
    if (db->conn)
        PQfinish(db->conn);
    db->conn = NULL;
}

/* (Re)open the connection, retrying transient failures with exponential
 * backoff for up to timeout_s seconds (0: one attempt). */
static mb_status open_conn(mb_db *db, long timeout_s)
{
    drop_conn(db);
    char ctimeout[24];
    snprintf(ctimeout, sizeof ctimeout, "%ld", db->timeout_s < 10 ? (db->timeout_s < 2 ? 2 : db->timeout_s) : 10);
    const char *const keys[] = {"dbname", "connect_timeout", "fallback_application_name", NULL};
    const char *const vals[] = {db->dsn, ctimeout, "mailbus", NULL};

    double deadline = now_s() + (double)timeout_s;
    long delay = MB_DB_BACKOFF_FIRST_MS;
    char msg[MB_DB_MSG_MAX];
    for (int attempt = 1;; attempt++) {
        PGconn *c = PQconnectdbParams(keys, vals, 1);
        if (!c)
            return mb_errf(MB_ERR_NOMEM, "postgres %s: out of memory connecting", db->desc);
        if (PQstatus(c) == CONNECTION_OK) {
            PQsetNoticeProcessor(c, notice_to_log, db);
            db->conn = c;
            db->gen++;
            db->in_tx = false;
            if (attempt > 1 || db->gen > 1)
                MB_INFO(NULL, NULL, "postgres %s: connected (attempt %d, session %u)", db->desc,
                        attempt, db->gen);
            atomic_store(&last_warn_s, 0); /* the next outage is reported at once */
            return MB_OK;
        }
        clean_msg(db, PQerrorMessage(c), msg, sizeof msg);
        PQfinish(c);
        if (connect_error_permanent(msg)) {
            db->retryable = false;
            return mb_errf(MB_ERR_DB, "postgres %s: %s", db->desc, msg);
        }
        if (timeout_s == 0) { /* a single attempt (mb_db_ping) */
            db->retryable = true;
            return mb_errf(MB_ERR_NET, "postgres %s: not reachable: %s", db->desc, msg);
        }
        if (now_s() + (double)delay / 1000.0 > deadline) {
            db->retryable = true;
            return mb_errf(MB_ERR_TIMEOUT,
                           "postgres %s: not reachable after %ld s "
                           "(MAILBUS_PG_CONNECT_TIMEOUT): %s",
                           db->desc, timeout_s, msg);
        }
        if (attempt == 1 && warn_due())
            MB_WARN(NULL, NULL, "postgres %s: not reachable yet (%s); retrying for up to %ld s",
                    db->desc, msg, timeout_s);
        wait_ms(delay);
        delay = delay * 2 > MB_DB_BACKOFF_MAX_MS ? MB_DB_BACKOFF_MAX_MS : delay * 2;
    }
}

mb_status mb_db_connect(const char *dsn, mb_db **out)
{
    *out = NULL;
    if (!dsn || !*dsn)
        return mb_errf(MB_ERR_CONFIG, "postgres DSN is empty (set MAILBUS_PG_DSN)");
    long timeout;
    mb_status st = mb_env_int("MAILBUS_PG_CONNECT_TIMEOUT", 30, 0, 86400, &timeout);
    if (st != MB_OK)
        return st;
    PQconninfoOption *opts = NULL;
    if ((st = parse_dsn(dsn, &opts)) != MB_OK)
        return st;

    mb_db *db = calloc(1, sizeof *db);
    mb_buf desc = MB_BUF_INIT;
    if (!db) {
        PQconninfoFree(opts);
        return mb_errf(MB_ERR_NOMEM, "out of memory");
    }
    db->timeout_s = timeout;
    const char *pw = opt_val(opts, "password");
    db->dsn = mb_strdup(dsn);
    db->password = pw ? mb_strdup(pw) : NULL;
    PQconninfoFree(opts);
    if (!db->dsn || (pw && !db->password) || mb_db_dsn_describe(dsn, &desc) != MB_OK ||
        !(db->desc = mb_buf_steal(&desc))) {
        mb_buf_free(&desc);
        mb_db_free(db);
        return mb_errf(MB_ERR_NOMEM, "out of memory");
    }
    if ((st = open_conn(db, db->timeout_s)) != MB_OK) {
        mb_db_free(db);
        return st;
    }
    *out = db;
    return MB_OK;
}

void mb_db_free(mb_db *db)
{
    if (!db)
        return;
    drop_conn(db);
    for (size_t i = 0; i < db->nprep; i++) {
        free(db->preps[i].name);
        free(db->preps[i].sql);
    }
    free(db->preps);
    if (db->password) /* do not leave the secret in freed heap memory */
        memset(db->password, 0, strlen(db->password));
    free(db->password);
    free(db->dsn);
    free(db->desc);
    free(db);
}

PGconn *mb_db_conn(mb_db *db)
{
    if ((!db->conn || PQstatus(db->conn) != CONNECTION_OK) && !db->in_tx)
        if (open_conn(db, db->timeout_s) != MB_OK)
            return NULL;
    return db->conn && PQstatus(db->conn) == CONNECTION_OK ? db->conn : NULL;
}

bool mb_db_in_transaction(const mb_db *db) { return db->in_tx; }
bool mb_db_retryable(const mb_db *db) { return db->retryable; }
const char *mb_db_sqlstate(const mb_db *db) { return db->sqlstate; }
unsigned mb_db_generation(const mb_db *db) { return db->gen; }
void mb_db_fault_after(mb_db *db, int n) { db->fault = n > 0 ? n : 0; }

/* ---- statements ------------------------------------------------------------ */

static mb_db_prep *find_prep(mb_db *db, const char *name)
{
    for (size_t i = 0; i < db->nprep; i++)
        if (!strcmp(db->preps[i].name, name))
            return &db->preps[i];
    return NULL;
}

static bool result_ok(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* The one place that talks to the server. `what` is the SQL (or, for
 * K_PREPARED, the statement name). See db.h for the retry contract. */
static mb_status run(mb_db *db, int kind, const char *what, int nparams,
                     const char *const *params, PGresult **out)
{
    char msg[MB_DB_MSG_MAX], stmt[MB_DB_STMT_SHORT + 8];
    mb_db_prep *prep = NULL;
    if (out)
        *out = NULL;
    db->retryable = false;
    db->sqlstate[0] = '\0';

    if (kind == K_PREPARED) {
        if (!(prep = find_prep(db, what)))
            return mb_errf(MB_ERR_NOTFOUND, "prepared statement '%s' was never prepared", what);
        if (nparams != prep->nparams)
            return mb_errf(MB_ERR_INVALID, "prepared statement '%s' takes %d parameters, got %d",
                           what, prep->nparams, nparams);
        short_stmt(prep->sql, stmt, sizeof stmt);
    } else {
        short_stmt(what, stmt, sizeof stmt);
    }

    for (bool retried = false;; retried = true) {
        if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
            if (db->in_tx) {
                db->retryable = true;
                return mb_errf(MB_ERR_NET,
                               "postgres %s: connection lost inside a transaction; roll back "
                               "and retry the transaction (at: %s)", db->desc, stmt);
            }
            mb_status st = open_conn(db, db->timeout_s);
            if (st != MB_OK)
                return st;
        }
        bool in_tx = db->in_tx || PQtransactionStatus(db->conn) != PQTRANS_IDLE;

        PGresult *res = NULL;
        if (prep && prep->gen != db->gen) {
            res = PQprepare(db->conn, prep->name, prep->sql, prep->nparams, NULL);
            if (res && result_ok(res)) {
                prep->gen = db->gen;
                PQclear(res);
                res = NULL;
            }
        }
        if (!res) {
            if (db->fault > 0 && --db->fault == 0) {
                MB_DEBUG(NULL, NULL, "postgres %s: injected connection drop before: %s",
                         db->desc, stmt);
                shutdown(PQsocket(db->conn), SHUT_RDWR);
            }
            if (kind == K_SIMPLE)
                res = PQexec(db->conn, what);
            else if (kind == K_PARAMS)
                res = PQexecParams(db->conn, what, nparams, NULL, params, NULL, NULL, 0);
            else
                res = PQexecPrepared(db->conn, what, nparams, params, NULL, NULL, 0);
        }

        if (res && result_ok(res)) {
            db->in_tx = PQtransactionStatus(db->conn) != PQTRANS_IDLE;
            if (out)
                *out = res;
            else
                PQclear(res);
            return MB_OK;
        }

        if (!res || PQstatus(db->conn) != CONNECTION_OK) {
            clean_msg(db, PQerrorMessage(db->conn), msg, sizeof msg);
            PQclear(res);
            drop_conn(db);
            if (!in_tx && !retried) {
                if (warn_due())
                    MB_WARN(NULL, NULL, "postgres %s: connection lost (%s); reconnecting",
                            db->desc, msg);
                continue;
            }
            db->in_tx = in_tx; /* caller must still roll back */
            db->retryable = true;
            return mb_errf(MB_ERR_NET, "postgres %s: connection lost%s: %s (at: %s)", db->desc,
                           in_tx ? " inside a transaction; roll back and retry the transaction"
                                 : "",
                           msg, stmt);
        }

        const char *ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(db->sqlstate, sizeof db->sqlstate, "%s", ss ? ss : "");
        db->retryable = sqlstate_retryable(db->sqlstate);
        clean_msg(db, PQresultErrorMessage(res), msg, sizeof msg);
        PQclear(res);
        db->in_tx = PQtransactionStatus(db->conn) != PQTRANS_IDLE;
        if (prep)
            return mb_errf(MB_ERR_DB, "postgres: %s (SQLSTATE %s) in prepared statement '%s': %s",
                           msg, db->sqlstate, prep->name, stmt);
        return mb_errf(MB_ERR_DB, "postgres: %s (SQLSTATE %s) in: %s", msg, db->sqlstate, stmt);
    }
}

mb_status mb_db_exec(mb_db *db, const char *sql)
{
    return run(db, K_SIMPLE, sql, 0, NULL, NULL);
}

mb_status mb_db_query(mb_db *db, const char *sql, int nparams, const char *const *params,
                      PGresult **out)
{
    if (nparams < 0 || (nparams > 0 && !params))
        return mb_errf(MB_ERR_INVALID, "mb_db_query: %d parameters but no array", nparams);
    return run(db, K_PARAMS, sql, nparams, params, out);
}

mb_status mb_db_prepare(mb_db *db, const char *name, const char *sql, int nparams)
{
    if (!name || !*name || strlen(name) >= 63)
        return mb_errf(MB_ERR_INVALID, "prepared statement name '%s' must be 1..62 bytes",
                       name ? name : "(null)");
    if (!sql || nparams < 0)
        return mb_errf(MB_ERR_INVALID, "prepared statement '%s': no SQL", name);
    mb_db_prep *p = find_prep(db, name);
    if (p) {
        if (strcmp(p->sql, sql) || p->nparams != nparams)
            return mb_errf(MB_ERR_INVALID,
                           "prepared statement '%s' already exists with different SQL", name);
        return MB_OK;
    }
    if (db->nprep == db->capprep) {
        size_t cap = db->capprep ? db->capprep * 2 : 16;
        mb_db_prep *v = realloc(db->preps, cap * sizeof *v);
        if (!v)
            return mb_errf(MB_ERR_NOMEM, "out of memory");
        db->preps = v;
        db->capprep = cap;
    }
    p = &db->preps[db->nprep];
    p->name = mb_strdup(name);
    p->sql = mb_strdup(sql);
    p->nparams = nparams;
    p->gen = 0;
    if (!p->name || !p->sql) {
        free(p->name);
        free(p->sql);
        return mb_errf(MB_ERR_NOMEM, "out of memory");
    }
    db->nprep++;

    /* Prepare on the server now so a broken statement fails at start-up.
     * A lost connection is not an error here: it is re-prepared on use. */
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK)
        return MB_OK;
    PGresult *res = PQprepare(db->conn, name, sql, nparams, NULL);
    if (res && result_ok(res)) {
        p->gen = db->gen;
        PQclear(res);
        return MB_OK;
    }
    char msg[MB_DB_MSG_MAX], stmt[MB_DB_STMT_SHORT + 8];
    if (!res || PQstatus(db->conn) != CONNECTION_OK) {
        PQclear(res);
        return MB_OK;
    }
    const char *ss = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(db->sqlstate, sizeof db->sqlstate, "%s", ss ? ss : "");
    clean_msg(db, PQresultErrorMessage(res), msg, sizeof msg);
    short_stmt(sql, stmt, sizeof stmt);
    PQclear(res);
    db->in_tx = PQtransactionStatus(db->conn) != PQTRANS_IDLE;
    db->nprep--;
    free(p->name);
    free(p->sql);
    return mb_errf(MB_ERR_DB, "postgres: %s (SQLSTATE %s) preparing '%s': %s", msg,
                   db->sqlstate, name, stmt);
}

mb_status mb_db_prepare_all(mb_db *db, const mb_db_stmt *stmts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mb_status s = mb_db_prepare(db, stmts[i].name, stmts[i].sql, stmts[i].nparams);
        if (s)
            return mb_err_wrap(s, "preparing %s", stmts[i].name);
    }
    return MB_OK;
}

mb_status mb_db_exec_prepared(mb_db *db, const char *name, int nparams,
                              const char *const *params, PGresult **out)
{
    if (!name)
        return mb_errf(MB_ERR_INVALID, "prepared statement name is NULL");
    if (nparams < 0 || (nparams > 0 && !params))
        return mb_errf(MB_ERR_INVALID, "prepared statement '%s': %d parameters but no array",
                       name, nparams);
    return run(db, K_PREPARED, name, nparams, params, out);
}

/* ---- transactions ---------------------------------------------------------- */

mb_status mb_db_begin(mb_db *db)
{
    if (db->in_tx)
        return mb_errf(MB_ERR_INVALID, "postgres %s: begin: already inside a transaction",
                       db->desc);
    return run(db, K_SIMPLE, "BEGIN", 0, NULL, NULL);
}

mb_status mb_db_commit(mb_db *db)
{
    if (!db->in_tx)
        return mb_errf(MB_ERR_INVALID, "postgres %s: commit: no transaction in progress",
                       db->desc);
    PGresult *res = NULL;
    mb_status st = run(db, K_SIMPLE, "COMMIT", 0, NULL, &res);
    /* Whatever happened, the transaction is over: committed, rolled back by
     * the server, or lost with the connection. */
    db->in_tx = false;
    if (st != MB_OK)
        return st;
    /* COMMIT of a transaction that had a failed statement "succeeds" with
     * the tag ROLLBACK; surface it as the failure it is. */
    bool rolled_back = !strcmp(PQcmdStatus(res), "ROLLBACK");
    PQclear(res);
    if (rolled_back)
        return mb_errf(MB_ERR_DB, "postgres %s: commit: the transaction was rolled back because "
                       "an earlier statement in it failed", db->desc);
    return MB_OK;
}

mb_status mb_db_rollback(mb_db *db)
{
    bool server_tx = db->conn && PQstatus(db->conn) == CONNECTION_OK &&
                     PQtransactionStatus(db->conn) != PQTRANS_IDLE;
    if (!server_tx) {
        /* Nothing to roll back on the server (or the session is gone and
         * took the transaction with it). */
        db->in_tx = false;
        return MB_OK;
    }
    mb_status st = run(db, K_SIMPLE, "ROLLBACK", 0, NULL, NULL);
    db->in_tx = false;
    if (st == MB_ERR_NET) /* the server discarded the transaction with the session */
        return MB_OK;
    return st;
}

/* ---- health ---------------------------------------------------------------- */

mb_status mb_db_ping(mb_db *db)
{
    db->retryable = false;
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK) {
        PGresult *res = PQexec(db->conn, "SELECT 1");
        bool ok = res && result_ok(res);
        PQclear(res);
        if (ok)
            return MB_OK;
        if (PQstatus(db->conn) == CONNECTION_OK) { /* e.g. an aborted transaction */
            char msg[MB_DB_MSG_MAX];
            clean_msg(db, PQerrorMessage(db->conn), msg, sizeof msg);
            return mb_errf(MB_ERR_DB, "postgres %s: ping: %s", db->desc, msg);
        }
        drop_conn(db);
    }
    db->retryable = true;
    if (db->in_tx)
        return mb_errf(MB_ERR_NET, "postgres %s: connection lost inside a transaction",
                       db->desc);
    return open_conn(db, 0);
}
