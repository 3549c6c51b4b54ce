/* cli.h — the `mailbus` command's subcommands. Each lives in cmd_<name>.c and
 * returns the process exit code (0 ok, 1 failure, 2 usage error). argv[0] is
 * the subcommand name. */
#ifndef MB_CLI_H
#define MB_CLI_H

int mb_cli_decode(int argc, char **argv);  /* msgpack record on stdin -> JSON */
int mb_cli_encode(int argc, char **argv);  /* JSON on stdin -> msgpack */
int mb_cli_migrate(int argc, char **argv); /* apply db/migrations */
int mb_cli_dlq(int argc, char **argv);     /* dlq list */

#endif
