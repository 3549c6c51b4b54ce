/* cli.h — the `mailbus` command's subcommands. Each lives in cmd_<name>.c and
 * returns the process exit code (0 ok, 1 failure, 2 usage error). argv[0] is
 * the subcommand name. */
#ifndef MB_CLI_H
#define MB_CLI_H

int mb_cli_decode(int argc, char **argv);  /* msgpack record on stdin -> JSON */
int mb_cli_encode(int argc, char **argv);  /* JSON on stdin -> msgpack */
int mb_cli_migrate(int argc, char **argv); /* apply db/migrations */
int mb_cli_dlq(int argc, char **argv);     /* dlq list */
int mb_cli_account(int argc, char **argv); /* account add|list|remove|test */
int mb_cli_keys(int argc, char **argv);    /* keys rotate */
int mb_cli_import(int argc, char **argv);  /* import start|pause|resume|cancel|status */
int mb_cli_sync(int argc, char **argv);    /* sync ACCOUNT [--wait] */
int mb_cli_history(int argc, char **argv); /* sync_history of an account */
int mb_cli_schedule(int argc, char **argv); /* schedule [ACCOUNT]; schedule set */
int mb_cli_jobs(int argc, char **argv);    /* jobs table */
int mb_cli_watch(int argc, char **argv);   /* live progress of a job */
int mb_cli_messages(int argc, char **argv); /* stored messages as JSON lines */
int mb_cli_cleanup(int argc, char **argv);  /* one cleanup pass now */
int mb_cli_export(int argc, char **argv);   /* stored mail to Maildir, mbox or .eml files */
int mb_cli_verify(int argc, char **argv);   /* the server against what is stored */

#endif
