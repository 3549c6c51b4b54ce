/* mime_addrs.c — the addresses mb_mime_parse finds in messages, one line each
 * (mb-test-mime_addrs), for test_mime_addrs.sh to compare with another parser:
 *
 *   mb-test-mime_addrs FILE...
 *
 * prints "FILE<TAB>FIELD<TAB>NAME<TAB>ADDR" for every address of From, To,
 * Cc, Bcc and Reply-To, in order; NAME is empty without one. Tabs and line
 * breaks inside a value are printed as spaces. Exits 1 if a file cannot be
 * read or parsed. */
#include "mime/mime.h"
#include "schemas/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(const char *s)
{
    for (; s && *s; s++)
        putchar(*s == '\t' || *s == '\r' || *s == '\n' ? ' ' : *s);
}

static void dump(const char *file, const char *field, const mb_addressv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        printf("%s\t%s\t", file, field);
        put(v->v[i].name);
        putchar('\t');
        put(v->v[i].addr);
        putchar('\n');
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: mb-test-mime_addrs FILE...\n");
        return argc < 2 ? 2 : 0;
    }
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        char *data = NULL;
        size_t len = 0, cap = 0;
        for (size_t n = 1; f && n;) {
            if (len == cap) {
                char *nd = realloc(data, cap = cap ? 2 * cap : 65536);
                if (!nd)
                    break;
                data = nd;
            }
            n = fread(data + len, 1, cap - len, f);
            len += n;
        }
        if (!f || ferror(f)) {
            fprintf(stderr, "mb-test-mime_addrs: cannot read %s\n", argv[i]);
            rc = 1;
        } else {
            mb_rec_parsed p;
            memset(&p, 0, sizeof p);
            if (mb_mime_parse(data, len, 0, &p) != MB_OK) {
                fprintf(stderr, "mb-test-mime_addrs: %s: %s\n", argv[i], mb_err_last());
                rc = 1;
            } else {
                dump(argv[i], "from", &p.from);
                dump(argv[i], "to", &p.to);
                dump(argv[i], "cc", &p.cc);
                dump(argv[i], "bcc", &p.bcc);
                dump(argv[i], "reply-to", &p.reply_to);
            }
            mb_mime_parsed_clear(&p);
        }
        if (f)
            fclose(f);
        free(data);
    }
    return rc;
}
