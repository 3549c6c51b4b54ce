/* dlq_commands.h — the dead letter commands the scan stage serves on
 * <p>.cmd.dlq.* (see dlq_commands.c): the NATS form of `mailbus dlq`. */
#ifndef MB_SCAN_DLQ_COMMANDS_H
#define MB_SCAN_DLQ_COMMANDS_H

#include "bus/dlq.h"
#include "schemas/records.h"
#include "util/buf.h"

/* Run dlq command op ("dlq.list", "dlq.show", "dlq.retry", "dlq.purge") with
 * the arguments in c on bus b, appending the {"ok":true,...} reply to reply.
 * MB_ERR_NOTFOUND for a missing dead letter; MB_ERR_INVALID for an unknown
 * op or a bad argument, named (the caller replies {"ok":false,"error":...}). */
mb_status mb_scan_dlq_command(mb_bus *b, const char *op, const mb_rec_command *c, mb_buf *reply);

#endif
