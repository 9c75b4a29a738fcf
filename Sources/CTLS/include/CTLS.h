// C shim over OpenSSL 3 (libssl, libcrypto): only what Swift cannot import directly.
//
// Most of OpenSSL's API is plain functions that Swift imports as they are (SSL_new, SSL_read,
// BIO_read, ERR_get_error, ...). What does not import: function-like macros (SSL_set_tlsext_host_name,
// SSL_CTX_set_min_proto_version, SSL_CTX_set_mode, BIO_set_mem_eof_return), option bits built from
// casts (SSL_OP_*), callbacks that must be C functions (ALPN selection), and text that OpenSSL only
// prints into a BIO (names, times, subject alternative names).
#ifndef CTLS_H
#define CTLS_H

// The one message a build on another platform (macOS) gets, before any missing Linux header.
#if !defined(__linux__)
#error "UringStreams needs Linux (io_uring); on other platforms depend on it with condition: .when(platforms: [.linux]) - see the README"
#endif

// OpenSSL's headers pull in these system headers; including them first makes them resolve to the
// Swift Glibc module's copies rather than to a second copy owned by this module.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/// Applies the settings every context of ours shares: TLS 1.2 minimum, no compression, no
/// renegotiation, and receive/send buffers released while a connection is idle. Returns 1 on success.
int ctls_ctx_configure_defaults(SSL_CTX *ctx);

/// Makes the server choose the first of its own ALPN protocols (wire format) that the client offers.
/// Returns the copy of the list the callback uses: free it (free()) once `ctx` is freed; NULL when
/// out of memory.
void *ctls_ctx_set_alpn_server(SSL_CTX *ctx, const unsigned char *protocols, unsigned length);

/// A memory BIO whose reads report "retry" when empty instead of end of file.
BIO *ctls_memory_bio(void);

/// Bytes waiting in a BIO (BIO_pending).
size_t ctls_bio_pending(BIO *bio);

/// Sets the SNI name (SSL_set_tlsext_host_name). Returns 1 on success.
int ctls_set_server_name(SSL *ssl, const char *name);

/// Whether an ERR_get_error code means a certificate was rejected, by us or by the peer's alert.
int ctls_error_is_certificate_rejection(unsigned long code);

/// Whether an ERR_get_error code is "certificate verify failed" (details in SSL_get_verify_result).
int ctls_error_is_verify_failure(unsigned long code);

/// The reason text of an error code ("wrong version number"), or its full string when the reason
/// has no text. Writes a NUL-terminated string into `buffer`.
void ctls_error_text(unsigned long code, char *buffer, size_t capacity);

/// One-line text of a certificate's subject or issuer (RFC 2253). Returns the length written.
size_t ctls_x509_name_text(X509 *certificate, int issuer, char *buffer, size_t capacity);

/// notBefore (0) or notAfter (1) as OpenSSL prints it ("Nov 21 11:00:00 2026 GMT").
size_t ctls_x509_time_text(X509 *certificate, int not_after, char *buffer, size_t capacity);

/// The subject alternative names as "DNS:example.com, IP Address:127.0.0.1" (empty when none).
size_t ctls_x509_alt_names_text(X509 *certificate, char *buffer, size_t capacity);

/// The serial number in upper-case hex, as Python's getpeercert() gives it.
size_t ctls_x509_serial_text(X509 *certificate, char *buffer, size_t capacity);

#endif
