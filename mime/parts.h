/* parts.h — the MIME tree walk shared by mb_mime_parse and
 * mb_mime_part_decode (internal). */
#ifndef MB_MIME_PARTS_H
#define MB_MIME_PARTS_H

#include "mime/mime_int.h"

/* One leaf part; every pointer owned, body span points into the message. */
typedef struct {
    char *path;        /* "1", "2.1" */
    char *type;        /* lowercase type/subtype */
    char *charset;     /* decoded param or NULL */
    char *filename;    /* filename= (2231/2047 decoded) else name=, or NULL */
    char *disposition; /* "attachment", "inline" or NULL */
    char *cid;         /* without <> */
    int cte;           /* CTE_* */
    mime_hsect hdr;    /* the part's own header section */
    const char *body, *body_end;
} mime_leaf;

typedef struct { mime_leaf *v; size_t n, cap; } mime_tree;

/* Walk the message; *top receives the message's header section. */
mb_status mime_tree_walk(const char *data, size_t len, mime_tree *t, mb_mime_defects *d,
                         mime_hsect *top);
void mime_tree_free(mime_tree *t);

#endif
