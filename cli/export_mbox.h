/* export_mbox.h — an mboxrd file written one message at a time, for
 * `mailbus export --format mbox` (export_out.c).
 *
 * Each message is a line "From mailbus@localhost <asctime of its internal
 * date, UTC>", its bytes with every line matching ^>*From  given one more
 * '>', a newline if it does not end with one, and a blank line. The bytes
 * arrive in chunks cut anywhere (exp_mbox_write), so the start of a line is
 * held back until it is known whether it needs the '>'. Output is buffered
 * (64 KiB) and written at the file's current end, which the caller may move
 * back (exp_mbox_truncate) to resume after what an earlier run wrote. */
#ifndef MB_CLI_EXPORT_MBOX_H
#define MB_CLI_EXPORT_MBOX_H

#include "util/mb.h"

#include <stdint.h>

typedef struct exp_mbox exp_mbox;

/* Open (create, mode 600) path for writing at offset 0; *size: its size
 * now. *out: exp_mbox_close. */
mb_status exp_mbox_open(const char *path, exp_mbox **out, uint64_t *size);
/* The next message goes at pos: exp_mbox_seek keeps what follows (the
 * caller knows it is the message it would write), exp_mbox_truncate cuts
 * the file there. */
mb_status exp_mbox_seek(exp_mbox *m, uint64_t pos);
mb_status exp_mbox_truncate(exp_mbox *m, uint64_t pos);
/* Where the next message goes. */
uint64_t exp_mbox_pos(const exp_mbox *m);

/* One message: begin (its From line), write its bytes (any number of
 * times), then end (*start and *end: its bytes in the file) — or abandon,
 * which cuts the file back to where the message began. */
mb_status exp_mbox_begin(exp_mbox *m, int64_t internal_date);
mb_status exp_mbox_write(exp_mbox *m, const void *p, size_t n);
mb_status exp_mbox_end(exp_mbox *m, uint64_t *start, uint64_t *end);
mb_status exp_mbox_abandon(exp_mbox *m);

/* Close and free (NULL: nothing); an error closing is returned. */
mb_status exp_mbox_close(exp_mbox *m);

#endif
