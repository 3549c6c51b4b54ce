/* tls_verify.h — check the certificate chain a libetpan TLS stream received
 * (internal to sources/imap). libetpan's GnuTLS build skips verification;
 * the handshake itself proved the peer owns the leaf key, so checking the
 * chain and name afterwards, before any credential is sent, is equivalent. */
#ifndef MB_SOURCES_IMAP_TLS_VERIFY_H
#define MB_SOURCES_IMAP_TLS_VERIFY_H

#include "util/mb.h"

#include <libetpan/libetpan.h>

/* MB_OK if the peer's chain leads to a trust anchor in ca_file (PEM; any
 * certificate in it, even a self-signed leaf, is trusted) or, when ca_file
 * is NULL, the system store, and the leaf is valid for name (a DNS name or
 * an IP address). MB_ERR_NET with the reason otherwise. */
mb_status mb_imap_tls_verify(mailstream *stream, const char *ca_file, const char *name);

#endif
