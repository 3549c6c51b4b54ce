/* main.c — `mailbus`, the command-line client: dispatches to cmd_*.c. */
#include "cli/cli.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"account", mb_cli_account, "add, list, remove or test a mail account"},
    {"keys", mb_cli_keys, "keys rotate: re-seal every stored credential under a new key"},
    {"import", mb_cli_import, "start, pause, resume, cancel an import; prints the job id"},
    {"sync", mb_cli_sync, "sync an account: what changed since the last job (--wait)"},
    {"schedule", mb_cli_schedule, "when each folder is synced next; `schedule set` changes it"},
    {"history", mb_cli_history, "what each import and sync of an account did (--json)"},
    {"jobs", mb_cli_jobs, "import and sync jobs and their progress (--json)"},
    {"watch", mb_cli_watch, "live progress of a job until it ends"},
    {"messages", mb_cli_messages, "stored messages of an account as JSON lines"},
    {"export", mb_cli_export, "write an account's stored mail as Maildir, mbox or .eml files"},
    {"verify", mb_cli_verify, "compare what the server has with what is stored (--deep, --json)"},
    {"cleanup", mb_cli_cleanup, "purge emails deleted past the retention, remove unreferenced blobs"},
    {"migrate", mb_cli_migrate, "apply database migrations (safe to repeat)"},
    {"decode", mb_cli_decode, "read one msgpack record on stdin, print it as JSON"},
    {"encode", mb_cli_encode, "JSON on stdin -> msgpack record of SCHEMA"},
    {"dlq", mb_cli_dlq, "dlq list: show dead letters"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mailbus COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n`mailbus COMMAND --help` describes each command.\n"
               "Configuration comes from the environment (`scripts/services env`).\n");
}

int main(int argc, char **argv)
{
    /* The CLI's own output is the answer; its log lines are for problems
     * unless asked for (MAILBUS_LOG_LEVEL=info). */
    setenv("MAILBUS_LOG_LEVEL", "warn", 0);
    mb_log_init("cli");
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "mailbus: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
