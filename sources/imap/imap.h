/* imap.h — the IMAP backend of sources/source.h (libetpan).
 *
 * Reads only: folders are opened with EXAMINE and bodies fetched with
 * BODY.PEEK[], so an import never changes \Seen or anything else.
 * mb_imap_append / mb_imap_create_folder exist for seeding tests and demos.
 *
 * TLS: Debian's libetpan is built with GnuTLS and verifies no certificate at
 * all, so after every handshake (imaps and STARTTLS), before a credential is
 * sent, the server's chain is checked here with OpenSSL against cfg->ca_file
 * (or the system store) and cfg->tls_name/host. Plain text is refused for a
 * host that is not loopback unless cfg->allow_plain_remote.
 *
 * The process must not die of SIGPIPE when a server drops the connection
 * mid-write: connect sets SIGPIPE to SIG_IGN if it is still SIG_DFL. */
#ifndef MB_SOURCES_IMAP_H
#define MB_SOURCES_IMAP_H

#include "sources/source.h"

/* A new, unconnected IMAP source; cfg's strings are copied. Free with
 * mb_source_free. MB_ERR_CONFIG names the bad setting. */
mb_status mb_source_imap_new(const mb_source_cfg *cfg, mb_source **out);

/* APPEND data to folder (raw server name) with the given flags
 * ("\\Seen", "$Label") and internal date (unix seconds; 0: server's now).
 * s must be an IMAP source, connected. */
mb_status mb_imap_append(mb_source *s, const char *folder, const char *data, size_t len,
                         const char *const *flags, size_t nflags, int64_t internal_date);
/* CREATE folder (raw server name); an existing folder is not an error. */
mb_status mb_imap_create_folder(mb_source *s, const char *folder);

/* Decode an IMAP modified UTF-7 name (RFC 3501 5.1.3) to UTF-8; *out is
 * malloc'd. MB_ERR_INVALID if the name is not valid modified UTF-7. */
mb_status mb_imap_utf7_decode(const char *in, char **out);

#endif
