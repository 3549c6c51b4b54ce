/* fetch.h — the fetch stage's work: one fetch task in, messages into the
 * blob store, parse records out. */
#ifndef MB_FETCH_H
#define MB_FETCH_H

#include "sources/account.h"
#include "sources/connlimit.h"
#include "stages/common/stage.h"

typedef struct {
    mb_stage *st;
    int64_t max_deliver;
    /* The connection of the account being served, with its connection slot
     * (sources/connlimit.h): taken before connecting, renewed while
     * connected, given back with the connection at the end of each task so
     * that an idle process holds no slot. */
    uint64_t account_id;
    mb_account account;
    mb_source *src;
    char *folder;             /* folder open on src, or NULL */
    mb_conn_slot slot;
    long slot_wait_ms;        /* MAILBUS_IMAP_SLOT_WAIT_MS: wait for a slot, then hand the task back */
} mb_fetcher;

mb_status mb_fetcher_init(mb_fetcher *f, mb_stage *st);
void mb_fetcher_free(mb_fetcher *f);
void mb_fetcher_handle(void *ctx, mb_bus_delivery *d, size_t n);

#endif
