/* export_maildir.h — the ":2," info of a Maildir++ file name for a message's
 * flags (`mailbus export --format maildir`, export_out.c): D draft, F flagged,
 * R answered, S seen, T deleted, then one letter per keyword, 'a' + its index
 * in the folder's dovecot-keywords file (Dovecot's format: "<index> <keyword>"
 * lines, at most 26 keywords per folder). The file is read when the folder is
 * opened (a run again, or Dovecot, may have written it) and rewritten, by a
 * rename, whenever a keyword is added, before any file name uses its letter.
 * A keyword that cannot have a letter (the 27th, one with a space or control
 * character) is left out of the names, with a warning once per folder. */
#ifndef MB_CLI_EXPORT_MAILDIR_H
#define MB_CLI_EXPORT_MAILDIR_H

#include "util/mb.h"

#include <stdint.h>

typedef struct exp_keywords exp_keywords;

/* The keywords of the Maildir folder directory dir (its dovecot-keywords,
 * if there is one); folder names it in warnings. *out: exp_keywords_free. */
mb_status exp_keywords_open(const char *dir, const char *folder, exp_keywords **out);
void exp_keywords_free(exp_keywords *k);

/* The info letters of flags (stored forms, keywords maybe in the
 * mb_imap_escape form, separated by '\n'), at most 31 plus the NUL. */
mb_status exp_maildir_info(exp_keywords *k, const char *flags, char out[64]);

/* (message, keyword) pairs left out of file names so far. */
uint64_t exp_keywords_left_out(const exp_keywords *k);

#endif
