/* tree.c — mb_mime_tree: a message's MIME tree walked once, so that many of
 * its parts can be decoded without walking it again for each (avscan
 * decodes every attachment of a message; a walk per part made a message of
 * n parts cost n walks of n parts). */
#include "mime/parts.h"

#include <stdlib.h>
#include <string.h>

struct mb_mime_tree {
    mime_tree t; /* leaves sorted by path, for bsearch */
};

static int by_path(const void *a, const void *b)
{
    return strcmp(((const mime_leaf *)a)->path, ((const mime_leaf *)b)->path);
}

mb_status mb_mime_tree_open(const char *data, size_t len, mb_mime_tree **out)
{
    *out = NULL;
    if (!data)
        return mb_errf(MB_ERR_INVALID, "mb_mime_tree_open: no message");
    mb_mime_tree *mt = calloc(1, sizeof *mt);
    if (!mt)
        return mb_errf(MB_ERR_NOMEM, "MIME tree");
    mb_mime_defects d;
    memset(&d, 0, sizeof d);
    mime_hsect top;
    mb_status s = mime_tree_walk(data, len, &mt->t, &d, &top);
    mb_mime_defects_free(&d);
    if (s) {
        free(mt);
        return s;
    }
    if (mt->t.n > 1)
        qsort(mt->t.v, mt->t.n, sizeof *mt->t.v, by_path);
    *out = mt;
    return MB_OK;
}

size_t mb_mime_tree_parts(const mb_mime_tree *mt)
{
    return mt ? mt->t.n : 0;
}

mb_status mb_mime_tree_decode(const mb_mime_tree *mt, const char *part_path, mb_mime_sink sink,
                              void *ctx)
{
    if (!mt || !part_path || !sink)
        return mb_errf(MB_ERR_INVALID, "mb_mime_tree_decode: missing argument");
    mime_leaf key;
    memset(&key, 0, sizeof key);
    key.path = (char *)part_path;
    const mime_leaf *l = mt->t.n ? bsearch(&key, mt->t.v, mt->t.n, sizeof *mt->t.v, by_path)
                                 : NULL;
    if (!l)
        return mb_errf(MB_ERR_NOTFOUND, "no leaf MIME part '%.64s' in message", part_path);
    char *buf = malloc(MB_MIME_CHUNK);
    if (!buf)
        return mb_errf(MB_ERR_NOMEM, "decode buffer");
    bool bad = false;
    mb_status s = mime_decode_body(l->cte, l->body, l->body_end, buf, sink, ctx, &bad);
    free(buf);
    return s;
}

void mb_mime_tree_free(mb_mime_tree *mt)
{
    if (!mt)
        return;
    mime_tree_free(&mt->t);
    free(mt);
}
