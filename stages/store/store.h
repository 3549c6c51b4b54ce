/* store.h — the store stage's batch writer. */
#ifndef MB_STORE_H
#define MB_STORE_H

#include "stages/common/stage.h"

mb_status mb_store_prepare(mb_db *db);
/* mb_bus_batch_fn: ctx is the mb_stage. */
void mb_store_handle(void *ctx, mb_bus_delivery *d, size_t n);

#endif
