/* proc.c — see proc.h. */
#include "util/proc.h"

#include <stdio.h>
#include <string.h>

bool mb_proc_stat(const char *path, char *buf, size_t cap, const char **fields)
{
    FILE *f = cap ? fopen(path, "re") : NULL;
    if (!f)
        return false;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || !p[2])
        return false;
    *fields = p + 2;
    return true;
}
