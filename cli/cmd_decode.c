/* cmd_decode.c — placeholder until the module lands. */
#include "cli/cli.h"
#include <stdio.h>
int mb_cli_decode(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "mailbus decode: not implemented yet\n");
    return 1;
}
