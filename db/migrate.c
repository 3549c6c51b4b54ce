/* migrate.c — applies the embedded migrations (db/migrations/NNNN_name.sql,
 * compiled in by embed_migrations.cmake). Every stage calls this at start-up and
 * `mailbus migrate` calls it on demand, often at the same moment: a session
 * advisory lock serialises them, and the second one in finds nothing to do. */
#include "db/db.h"

#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>

/* Fixed key for pg_advisory_lock: the bytes "mailbusM" as a bigint, so it is
 * recognisable in pg_locks and unlikely to collide with anything else. */
#define MB_DB_MIGRATE_LOCK "7881696737104327501"

static const char create_table_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version int PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

mb_status mb_db_schema_version(mb_db *db, int *version_out)
{
    PGresult *res = NULL;
    *version_out = 0;
    mb_status st = mb_db_query(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0,
                               NULL, &res);
    if (st != MB_OK)
        return st;
    bool exists = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!exists)
        return MB_OK;
    st = mb_db_query(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
                     &res);
    if (st != MB_OK)
        return st;
    *version_out = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return MB_OK;
}

static bool is_applied(const PGresult *res, int version)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (atoi(PQgetvalue(res, i, 0)) == version)
            return true;
    return false;
}

/* Apply one migration and record it, atomically. */
static mb_status apply_one(mb_db *db, const mb_migration *m)
{
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = {version, m->name};
    mb_status st = mb_db_begin(db);
    if (st == MB_OK)
        st = mb_db_exec(db, m->sql);
    if (st == MB_OK)
        st = mb_db_query(db, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                         params, NULL);
    if (st == MB_OK)
        st = mb_db_commit(db);
    if (st != MB_OK) {
        mb_status err = st;
        char *saved = mb_strdup(mb_err_last()); /* rollback may overwrite it */
        mb_db_rollback(db);
        st = mb_errf(err, "migration %04d_%s: %s", m->version, m->name,
                     saved ? saved : "(out of memory)");
        free(saved);
    }
    return st;
}

mb_status mb_db_migrate(mb_db *db, int *applied_out)
{
    int applied = 0;
    if (applied_out)
        *applied_out = 0;
    if (mb_db_in_transaction(db))
        return mb_errf(MB_ERR_INVALID, "migrate: called inside a transaction");

    mb_status st = mb_db_exec(db, "SELECT pg_advisory_lock(" MB_DB_MIGRATE_LOCK ")");
    if (st != MB_OK)
        return mb_err_wrap(st, "migrate: taking the migration lock");
    /* The lock lives in this session: if the connection is replaced under
     * us (transparent reconnect) we no longer hold it and must stop. */
    unsigned gen = mb_db_generation(db);
    PGresult *res = NULL;

    st = mb_db_exec(db, create_table_sql);
    if (st == MB_OK)
        st = mb_db_query(db, "SELECT version FROM schema_migrations ORDER BY version", 0, NULL,
                         &res);
    if (st == MB_OK && mb_db_generation(db) != gen)
        st = mb_errf(MB_ERR_NET, "migrate: connection lost while holding the migration lock; "
                     "run it again");
    if (st == MB_OK) {
        int newest_known = mb_migrations[mb_migrations_count - 1].version;
        int ntup = PQntuples(res);
        if (ntup > 0 && atoi(PQgetvalue(res, ntup - 1, 0)) > newest_known)
            MB_WARN(NULL, NULL, "migrate: database schema version %s is newer than this "
                    "binary's %d", PQgetvalue(res, ntup - 1, 0), newest_known);
    }
    for (size_t i = 0; st == MB_OK && i < mb_migrations_count; i++) {
        const mb_migration *m = &mb_migrations[i];
        if (is_applied(res, m->version))
            continue;
        if (mb_db_generation(db) != gen) {
            st = mb_errf(MB_ERR_NET, "migrate: connection lost while holding the migration "
                         "lock; run it again");
            break;
        }
        st = apply_one(db, m);
        if (st == MB_OK) {
            applied++;
            MB_INFO(NULL, NULL, "migrate: applied %04d_%s", m->version, m->name);
        }
    }
    PQclear(res);

    if (mb_db_generation(db) == gen) {
        mb_status err = st;
        char *saved = st != MB_OK ? mb_strdup(mb_err_last()) : NULL;
        mb_status ust = mb_db_exec(db, "SELECT pg_advisory_unlock(" MB_DB_MIGRATE_LOCK ")");
        if (err != MB_OK)
            st = mb_errf(err, "%s", saved ? saved : "migrate failed");
        else if (ust != MB_OK)
            st = mb_err_wrap(ust, "migrate: releasing the migration lock");
        free(saved);
    }
    if (applied_out)
        *applied_out = applied;
    return st;
}
