#include "CTLS.h"

int ctls_ctx_configure_defaults(SSL_CTX *ctx) {
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) return 0;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return 1;
}

/// The server's ALPN list in wire format, as the selection callback's argument.
typedef struct ctls_alpn_list {
    unsigned length;
    unsigned char bytes[];
} ctls_alpn_list;

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_length,
                       const unsigned char *offered, unsigned offered_length, void *arg) {
    (void)ssl;
    const ctls_alpn_list *ours = arg;
    unsigned char *chosen = NULL;
    unsigned char chosen_length = 0;
    if (SSL_select_next_proto(&chosen, &chosen_length, ours->bytes, ours->length, offered, offered_length) !=
        OPENSSL_NPN_NEGOTIATED) {
        // As CPython's ssl module: no protocol in common goes on without ALPN rather than failing.
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = chosen;
    *out_length = chosen_length;
    return SSL_TLSEXT_ERR_OK;
}

void *ctls_ctx_set_alpn_server(SSL_CTX *ctx, const unsigned char *protocols, unsigned length) {
    ctls_alpn_list *list = malloc(sizeof(ctls_alpn_list) + length);
    if (!list) return NULL;
    list->length = length;
    memcpy(list->bytes, protocols, length);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, list);
    return list;
}

BIO *ctls_memory_bio(void) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio) BIO_set_mem_eof_return(bio, -1);
    return bio;
}

// BIO_pending casts to int, which a memory BIO over 2 GiB would overflow.
size_t ctls_bio_pending(BIO *bio) { return BIO_ctrl_pending(bio); }

int ctls_set_server_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

int ctls_error_is_verify_failure(unsigned long code) {
    return ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED;
}

int ctls_error_is_certificate_rejection(unsigned long code) {
    if (ERR_GET_LIB(code) != ERR_LIB_SSL) return 0;
    switch (ERR_GET_REASON(code)) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return 1;
    default:
        return 0;
    }
}

void ctls_error_text(unsigned long code, char *buffer, size_t capacity) {
    const char *reason = ERR_reason_error_string(code);
    if (reason) {
        snprintf(buffer, capacity, "%s", reason);
    } else {
        ERR_error_string_n(code, buffer, capacity);
    }
}

/// Copies what `print` wrote into a memory BIO to `buffer` (NUL-terminated); returns its length.
static size_t copy_out(BIO *bio, char *buffer, size_t capacity) {
    if (capacity == 0) return 0;
    int length = BIO_read(bio, buffer, (int)(capacity - 1));
    if (length < 0) length = 0;
    buffer[length] = 0;
    BIO_free(bio);
    return (size_t)length;
}

size_t ctls_x509_name_text(X509 *certificate, int issuer, char *buffer, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return 0;
    X509_NAME *name = issuer ? X509_get_issuer_name(certificate) : X509_get_subject_name(certificate);
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    return copy_out(bio, buffer, capacity);
}

size_t ctls_x509_time_text(X509 *certificate, int not_after, char *buffer, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return 0;
    ASN1_TIME_print(bio, not_after ? X509_get0_notAfter(certificate) : X509_get0_notBefore(certificate));
    return copy_out(bio, buffer, capacity);
}

size_t ctls_x509_alt_names_text(X509 *certificate, char *buffer, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return 0;
    int index = X509_get_ext_by_NID(certificate, NID_subject_alt_name, -1);
    if (index >= 0) X509V3_EXT_print(bio, X509_get_ext(certificate, index), 0, 0);
    return copy_out(bio, buffer, capacity);
}

size_t ctls_x509_serial_text(X509 *certificate, char *buffer, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return 0;
    i2a_ASN1_INTEGER(bio, X509_get0_serialNumber(certificate));
    return copy_out(bio, buffer, capacity);
}
