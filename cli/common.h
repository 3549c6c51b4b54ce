/* common.h — helpers shared by the cmd_*.c subcommands. */
#ifndef MB_CLI_COMMON_H
#define MB_CLI_COMMON_H

#include "bus/bus.h"
#include "db/db.h"

#include <stdbool.h>

/* Print "mailbus CMD: <last error>" to stderr; returns 1. */
int mb_cli_fail(const char *cmd, mb_status s);
/* Connect to MAILBUS_PG_DSN and make sure the schema is current. */
mb_status mb_cli_db(mb_db **out);
mb_status mb_cli_bus(mb_bus **out);
bool mb_cli_want_help(int argc, char **argv);

#endif
