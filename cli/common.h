/* common.h — helpers shared by the cmd_*.c subcommands. */
#ifndef MB_CLI_COMMON_H
#define MB_CLI_COMMON_H

#include "bus/bus.h"
#include "db/db.h"
#include "schemas/json.h"
#include "schemas/records.h"

#include <stdbool.h>

/* Print "mailbus CMD: <last error>" to stderr; returns 1. */
int mb_cli_fail(const char *cmd, mb_status s);
/* Connect to MAILBUS_PG_DSN and make sure the schema is current. */
mb_status mb_cli_db(mb_db **out);
mb_status mb_cli_bus(mb_bus **out);
bool mb_cli_want_help(int argc, char **argv);

/* Send c as JSON to <p>.cmd.<op> (what `nats req` would send) and wait up to
 * 10 s; on {"ok":true} *reply is the parsed reply (mb_json_free), else the
 * reply's error text is the error. */
mb_status mb_cli_send_cmd(const char *op, const mb_rec_command *c, mb_json **reply);
/* MB_ERR_NOTFOUND ("no account 'X'") unless an account has that name or id. */
mb_status mb_cli_account_exists(mb_db *db, const char *account);
/* "A,B,C" appended to out (owned strings). */
mb_status mb_cli_split_folders(const char *list, mb_strv *out);

#endif
