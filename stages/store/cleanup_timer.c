/* cleanup_timer.c — the store stage's cleanup thread (see cleanup_timer.h). */
#include "stages/store/cleanup_timer.h"

#include "bus/bus.h"
#include "db/db.h"
#include "stages/store/cleanup.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* The first look comes this soon after start (or after one interval, if
 * shorter): a store that restarts often still runs its passes. */
#define FIRST_LOOK_MS 10000

struct mb_cleanup_timer {
    pthread_t thread;
    mb_blob_store *blobs;
    int64_t every_ms;
    int64_t retention_s;
};

/* Set by mb_cleanup_timer_stop: the consume loop may also end without
 * mb_bus_stop (an error). One timer per process. */
static atomic_bool stop_flag;

static bool stop_asked(void) { return atomic_load(&stop_flag) || mb_bus_stopping(); }

/* One look: connect if needed, run a pass if one is due. */
static void look(mb_cleanup_timer *t, mb_db **db)
{
    mb_status s = MB_OK;
    if (!*db) s = mb_db_connect(mb_env("MAILBUS_PG_DSN", MB_DEFAULT_PG_DSN), db);
    bool due = false;
    if (!s) s = mb_cleanup_due(*db, t->every_ms, &due);
    if (!s && due) {
        mb_cleanup_opts o = {.retention_s = t->retention_s, .walk_dirs = 1, .stop = stop_asked};
        mb_cleanup_result r;
        s = mb_cleanup_pass(*db, t->blobs, &o, &r); /* logs its own line */
        mb_cleanup_result_free(&r);
        if (s)
            return;
    }
    if (s && s != MB_ERR_STOPPED)
        MB_WARN(NULL, NULL, "cleanup: %s; trying again in %lld s", mb_err_last(),
                (long long)(t->every_ms / 1000));
}

static void *timer_main(void *arg)
{
    mb_cleanup_timer *t = arg;
    mb_db *db = NULL;
    int64_t next = mb_mono_ms() + (t->every_ms < FIRST_LOOK_MS ? t->every_ms : FIRST_LOOK_MS);
    while (!stop_asked()) {
        if (mb_mono_ms() < next) {
            mb_nap_ms(100);
            continue;
        }
        look(t, &db);
        next = mb_mono_ms() + t->every_ms;
    }
    mb_db_free(db);
    return NULL;
}

mb_status mb_cleanup_timer_start(mb_blob_store *blobs, mb_cleanup_timer **out)
{
    *out = NULL;
    long every;
    int64_t retention;
    mb_status s = mb_env_int("MAILBUS_CLEANUP_EVERY_MS", 3600000, 0, 7L * 86400000, &every);
    if (!s) s = mb_cleanup_retention_env(&retention);
    if (s || every == 0)
        return s;
    mb_cleanup_timer *t = calloc(1, sizeof *t);
    if (!t)
        return mb_errf(MB_ERR_NOMEM, "cleanup timer");
    t->blobs = blobs;
    t->every_ms = every < 100 ? 100 : every;
    t->retention_s = retention;
    if (pthread_create(&t->thread, NULL, timer_main, t) != 0) {
        free(t);
        return mb_errf(MB_ERR_INTERNAL, "cleanup timer: cannot start its thread");
    }
    MB_INFO(NULL, NULL, "cleanup: a pass every %ld ms at most (retention %lld s)", every,
            (long long)retention);
    *out = t;
    return MB_OK;
}

void mb_cleanup_timer_stop(mb_cleanup_timer *t)
{
    if (!t)
        return;
    atomic_store(&stop_flag, true);
    pthread_join(t->thread, NULL);
    free(t);
}
