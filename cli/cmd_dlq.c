/* cmd_dlq.c — placeholder until the module lands. */
#include "cli/cli.h"
#include <stdio.h>
int mb_cli_dlq(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "mailbus dlq: not implemented yet\n");
    return 1;
}
