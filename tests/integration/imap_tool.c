/* imap_tool.c — a small CLI over the IMAP source (sources/imap), used by
 * tests/integration/test_imap.sh to seed a mailbox and check what the source
 * returns. Output is line-oriented for grep/awk.
 *
 *   mb-test-imap_tool [--tls imaps|starttls|plain] [--host H] [--port P]
 *                     [--user U] [--ca FILE] [--tls-name N] [--timeout S]
 *                     [--repeat N] COMMAND ARGS...
 *     folders                      name<TAB>display<TAB>role|-<TAB>delim<TAB>noselect(0/1)
 *     status FOLDER                uidvalidity=.. uidnext=.. exists=.. highestmodseq=..
 *     scan FOLDER [SINCE [UNTIL]]  uid size internaldate flags...
 *     fetch FOLDER UID...          uid size sha256   (--repeat N: fetch the list N times)
 *     changes FOLDER UIDVALIDITY UIDNEXT MODSEQ EXISTS
 *                                  what changed since that state (mb_source_changes), one
 *                                  line per callback:  changed UID flags...
 *                                  present UID flags...   vanished LO HI
 *                                  added UID SIZE INTERNALDATE flags...   then
 *                                  method=unchanged|qresync|condstore|full|reset
 *                                  uidvalidity=.. uidnext=.. exists=.. highestmodseq=.. listed=0|1
 *     append FOLDER FILE [DATE [FLAG...]]
 *     create FOLDER
 *
 * The password comes from $MB_IMAP_PASSWORD (never argv, so it is not in ps);
 * an XOAUTH2 token from $MB_IMAP_TOKEN. Defaults come from the MAILBUS_IMAP_*
 * variables of `scripts/services env`. On failure it prints
 * "error: <status>: <message>" to stderr and exits with 10 + the mb_status. */
#include "sources/imap/imap.h"
#include "util/log.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(mb_status st) {
    fprintf(stderr, "error: %s: %s\n", mb_status_str(st), mb_err_last());
    return 10 + (int)st;
}

static int usage(void) {
    fprintf(stderr, "usage: mb-test-imap_tool [--tls imaps|starttls|plain] [--host H] [--port P] "
                    "[--user U] [--ca FILE] [--tls-name N] [--timeout S] [--repeat N] "
                    "folders|status|scan|fetch|changes|append|create ...\n");
    return 2;
}

static mb_status print_msg(void *ctx, const mb_msg_info *m) {
    (void)ctx;
    printf("%llu %llu %lld", (unsigned long long)m->uid, (unsigned long long)m->size,
           (long long)m->internal_date);
    for (size_t i = 0; i < m->nflags; i++)
        printf(" %s", m->flags[i]);
    printf("\n");
    return MB_OK;
}

static mb_status print_change(const char *what, const mb_msg_info *m, bool meta) {
    printf("%s %llu", what, (unsigned long long)m->uid);
    if (meta)
        printf(" %llu %lld", (unsigned long long)m->size, (long long)m->internal_date);
    for (size_t i = 0; i < m->nflags; i++)
        printf(" %s", m->flags[i]);
    printf("\n");
    return MB_OK;
}
static mb_status print_changed(void *ctx, const mb_msg_info *m) {
    (void)ctx;
    return print_change("changed", m, false);
}
static mb_status print_present(void *ctx, const mb_msg_info *m) {
    (void)ctx;
    return print_change("present", m, false);
}
static mb_status print_added(void *ctx, const mb_msg_info *m) {
    (void)ctx;
    return print_change("added", m, true);
}
static mb_status print_vanished(void *ctx, uint64_t lo, uint64_t hi) {
    (void)ctx;
    printf("vanished %llu %llu\n", (unsigned long long)lo, (unsigned long long)hi);
    return MB_OK;
}

static mb_status print_body(void *ctx, uint64_t uid, const char *data, size_t len) {
    (void)ctx;
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1)
        return mb_errf(MB_ERR_INTERNAL, "sha256 failed");
    printf("%llu %zu ", (unsigned long long)uid, len);
    for (unsigned i = 0; i < mdlen; i++)
        printf("%02x", md[i]);
    printf("\n");
    fflush(stdout);
    return MB_OK;
}

static mb_status read_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return mb_errf(MB_ERR_IO, "cannot open '%s'", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return mb_errf(MB_ERR_NOMEM, "reading '%s': out of memory", path);
    *out = buf;
    *len = n;
    return MB_OK;
}

int main(int argc, char **argv) {
    mb_log_init("imap_tool");
    mb_source_cfg cfg = {0};
    cfg.host = getenv("MAILBUS_IMAP_HOST") ? getenv("MAILBUS_IMAP_HOST") : "127.0.0.1";
    cfg.tls = MB_TLS_STARTTLS;
    cfg.user = getenv("MB_IMAP_USER");
    cfg.password = getenv("MB_IMAP_PASSWORD");
    cfg.xoauth2_token = getenv("MB_IMAP_TOKEN");
    cfg.ca_file = getenv("MAILBUS_IMAP_CA_FILE");
    cfg.timeout_s = 20;
    const char *port = NULL;
    long repeat = 1;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc)
            return usage();
        const char *v = argv[++i];
        if (strcmp(o, "--tls") == 0) {
            if (strcmp(v, "imaps") == 0)
                cfg.tls = MB_TLS_IMAPS;
            else if (strcmp(v, "starttls") == 0)
                cfg.tls = MB_TLS_STARTTLS;
            else if (strcmp(v, "plain") == 0)
                cfg.tls = MB_TLS_PLAIN;
            else
                return usage();
        } else if (strcmp(o, "--host") == 0) {
            cfg.host = v;
        } else if (strcmp(o, "--port") == 0) {
            port = v;
        } else if (strcmp(o, "--user") == 0) {
            cfg.user = v;
        } else if (strcmp(o, "--ca") == 0) {
            cfg.ca_file = v;
        } else if (strcmp(o, "--tls-name") == 0) {
            cfg.tls_name = v;
        } else if (strcmp(o, "--timeout") == 0) {
            cfg.timeout_s = atoi(v);
        } else if (strcmp(o, "--repeat") == 0) {
            repeat = atol(v);
        } else {
            return usage();
        }
    }
    if (i >= argc)
        return usage();
    if (!port)
        port = getenv(cfg.tls == MB_TLS_IMAPS ? "MAILBUS_IMAPS_PORT" : "MAILBUS_IMAP_PORT");
    cfg.port = port ? atoi(port) : 0;
    const char *cmd = argv[i++];

    mb_source *src = NULL;
    mb_status st = mb_source_imap_new(&cfg, &src);
    if (st != MB_OK)
        return fail(st);
    if ((st = mb_source_connect(src)) != MB_OK)
        goto out;

    if (strcmp(cmd, "folders") == 0) {
        mb_folder_info *f = NULL;
        size_t n = 0;
        if ((st = mb_source_list_folders(src, &f, &n)) != MB_OK)
            goto out;
        for (size_t k = 0; k < n; k++)
            printf("%s\t%s\t%s\t%c\t%d\n", f[k].name, f[k].display, f[k].role ? f[k].role : "-",
                   f[k].delimiter ? f[k].delimiter : '-', f[k].noselect ? 1 : 0);
        mb_folder_info_free(f, n);
    } else if (strcmp(cmd, "status") == 0 && i + 1 == argc) {
        mb_folder_state fs;
        if ((st = mb_source_open_folder(src, argv[i], &fs)) != MB_OK)
            goto out;
        printf("uidvalidity=%llu uidnext=%llu exists=%u highestmodseq=%llu\n",
               (unsigned long long)fs.uidvalidity, (unsigned long long)fs.uidnext, fs.exists,
               (unsigned long long)fs.highest_modseq);
    } else if (strcmp(cmd, "scan") == 0 && i < argc && argc - i <= 3) {
        mb_folder_state fs;
        int64_t since = i + 1 < argc ? atoll(argv[i + 1]) : 0;
        int64_t until = i + 2 < argc ? atoll(argv[i + 2]) : 0;
        if ((st = mb_source_open_folder(src, argv[i], &fs)) != MB_OK)
            goto out;
        st = mb_source_scan(src, since, until, print_msg, NULL);
    } else if (strcmp(cmd, "fetch") == 0 && i + 1 < argc) {
        mb_folder_state fs;
        if ((st = mb_source_open_folder(src, argv[i], &fs)) != MB_OK)
            goto out;
        size_t n = (size_t)(argc - i - 1);
        uint64_t *uids = calloc(n, sizeof *uids);
        if (!uids) {
            st = mb_errf(MB_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t k = 0; k < n; k++)
            uids[k] = strtoull(argv[i + 1 + (int)k], NULL, 10);
        for (long r = 0; r < repeat && st == MB_OK; r++)
            st = mb_source_fetch(src, uids, n, print_body, NULL);
        free(uids);
    } else if (strcmp(cmd, "changes") == 0 && i + 5 == argc) {
        static const char *const method[] = {"unchanged", "qresync", "condstore", "full", "reset"};
        mb_folder_state known = {.uidvalidity = strtoull(argv[i + 1], NULL, 10),
                                 .uidnext = strtoull(argv[i + 2], NULL, 10),
                                 .highest_modseq = strtoull(argv[i + 3], NULL, 10),
                                 .exists = (uint32_t)strtoul(argv[i + 4], NULL, 10)};
        mb_changes_cb cb = {.changed = print_changed, .present = print_present,
                            .added = print_added, .vanished = print_vanished};
        mb_changes_info info;
        if ((st = mb_source_changes(src, argv[i], &known, &cb, &info)) != MB_OK)
            goto out;
        printf("method=%s uidvalidity=%llu uidnext=%llu exists=%u highestmodseq=%llu listed=%d\n",
               info.method >= 0 && (size_t)info.method < sizeof method / sizeof *method
                   ? method[info.method]
                   : "?",
               (unsigned long long)info.now.uidvalidity, (unsigned long long)info.now.uidnext,
               info.now.exists, (unsigned long long)info.now.highest_modseq, info.listed ? 1 : 0);
    } else if (strcmp(cmd, "append") == 0 && i + 1 < argc) {
        char *data = NULL;
        size_t len = 0;
        int64_t date = i + 2 < argc ? atoll(argv[i + 2]) : 0;
        if ((st = read_file(argv[i + 1], &data, &len)) != MB_OK)
            goto out;
        size_t nflags = i + 3 < argc ? (size_t)(argc - i - 3) : 0;
        st = mb_imap_append(src, argv[i], data, len, (const char *const *)argv + i + 3, nflags,
                            date);
        free(data);
    } else if (strcmp(cmd, "create") == 0 && i + 1 == argc) {
        st = mb_imap_create_folder(src, argv[i]);
    } else {
        mb_source_free(src);
        return usage();
    }
out:
    fflush(stdout);
    if (st != MB_OK) {
        int rc = fail(st);
        mb_source_free(src);
        return rc;
    }
    mb_source_free(src);
    return 0;
}
