/* cmd_migrate.c — placeholder until the module lands. */
#include "cli/cli.h"
#include <stdio.h>
int mb_cli_migrate(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "mailbus migrate: not implemented yet\n");
    return 1;
}
