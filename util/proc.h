/* proc.h — reading a process's /proc/<pid>/stat (or .../task/<tid>/stat). */
#ifndef MB_PROC_H
#define MB_PROC_H

#include <stdbool.h>
#include <stddef.h>

/* Read the stat file at path into buf (cap bytes); *fields points at field 3
 * (the state letter), past the command name, which may hold spaces and
 * parentheses. false if the file cannot be read or is malformed (the
 * process is gone). */
bool mb_proc_stat(const char *path, char *buf, size_t cap, const char **fields);

#endif
