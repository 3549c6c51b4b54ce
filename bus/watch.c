/* watch.c — the worker's side of the shared "record in hand" block. */
#include "bus/watch.h"

#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static mb_watch *watch;

void mb_watch_attach(mb_watch *w) { watch = w; }
mb_watch *mb_watch_get(void) { return watch; }

static int my_tid(void)
{
    static _Thread_local int tid;
    if (!tid)
        tid = (int)syscall(SYS_gettid);
    return tid;
}

/* The calling thread's slot, claimed on first use; NULL when all are taken
 * (more handler threads than slots: those go unwatched). */
static mb_watch_slot *my_slot(void)
{
    int tid = my_tid();
    for (int i = 0; i < MB_WATCH_SLOTS; i++)
        if (atomic_load(&watch->slot[i].tid) == tid)
            return &watch->slot[i];
    for (int i = 0; i < MB_WATCH_SLOTS; i++) {
        int free_tid = 0;
        if (atomic_compare_exchange_strong(&watch->slot[i].tid, &free_tid, tid))
            return &watch->slot[i];
    }
    return NULL;
}

void mb_watch_begin(uint64_t seq, uint64_t deliveries, int batch)
{
    mb_watch_slot *s = watch ? my_slot() : NULL;
    if (!s)
        return;
    atomic_store(&s->seq, seq);
    atomic_store(&s->deliveries, deliveries);
    atomic_store(&s->batch, batch);
    atomic_fetch_add(&s->gen, 1);
}

void mb_watch_progress(void)
{
    mb_watch_slot *s = watch ? my_slot() : NULL;
    if (s)
        atomic_fetch_add(&s->gen, 1);
}

void mb_watch_batch_add(int i, uint64_t seq, const char *reply)
{
    if (!watch || i >= MB_WATCH_BATCH || !reply || strlen(reply) >= MB_WATCH_REPLY_MAX)
        return;
    watch->reply_seq[i] = seq;
    memcpy(watch->reply[i], reply, strlen(reply) + 1);
    atomic_store(&watch->nreply, i + 1);
}

void mb_watch_idle(void)
{
    if (!watch)
        return;
    atomic_store(&watch->nreply, 0);
    for (int i = 0; i < MB_WATCH_SLOTS; i++) {
        atomic_store(&watch->slot[i].seq, 0);
        atomic_fetch_add(&watch->slot[i].gen, 1);
        atomic_store(&watch->slot[i].tid, 0);
    }
}
