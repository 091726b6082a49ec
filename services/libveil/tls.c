/* tls.c - PEM files into guarded memory (veil/tls.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gnutls/x509.h>
#include <sodium.h>

#include "veil/tls.h"

#define PEM_MAX (256 * 1024)

veil_err veil_pem_read(const char *path, char **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (sodium_init() < 0) /* idempotent; guarded memory needs it */
        return VEIL_ERR_INTERNAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(errbuf, errlen, "%s: %s", path,
                 errno == ENOENT ? "does not exist" : "cannot be opened for reading");
        return VEIL_ERR_NOT_FOUND;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > PEM_MAX) {
        snprintf(errbuf, errlen, "%s: not a PEM file of a plausible size", path);
        close(fd);
        return VEIL_ERR_INVALID;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = sodium_malloc(cap);
    if (!buf) {
        close(fd);
        return VEIL_ERR_NOMEM;
    }
    while (len < cap - 1) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    if (len == 0 || !strstr(buf, "-----BEGIN ")) {
        snprintf(errbuf, errlen, "%s: not PEM", path);
        sodium_free(buf);
        return VEIL_ERR_INVALID;
    }
    *out = buf;
    return VEIL_OK;
}

void veil_pem_free(char *pem)
{
    if (pem)
        sodium_free(pem);
}

/* ---- credentials for grpc core (internal.h) ---- */

#include <grpc/grpc_security.h>
#include "internal.h"

struct pems {
    char *ca, *cert, *key;
};

static void pems_free(struct pems *p)
{
    veil_pem_free(p->ca);
    veil_pem_free(p->cert);
    veil_pem_free(p->key);
}

static int pems_read(const veil_tls_config *tls, int need_own, struct pems *p, char *errbuf,
                     size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (!tls->ca_file || !*tls->ca_file) {
        snprintf(errbuf, errlen, "TLS is on but no CA file is configured (VEIL_TLS_CA)");
        return -1;
    }
    if (veil_pem_read(tls->ca_file, &p->ca, errbuf, errlen) != VEIL_OK)
        return -1;
    int have_cert = tls->cert_file && *tls->cert_file, have_key = tls->key_file && *tls->key_file;
    if (need_own && !(have_cert && have_key)) {
        snprintf(errbuf, errlen, "TLS needs a certificate and key (VEIL_TLS_CERT, VEIL_TLS_KEY)");
        goto fail;
    }
    if (have_cert != have_key) {
        snprintf(errbuf, errlen, "a TLS certificate needs its key and the other way round");
        goto fail;
    }
    if (have_cert && (veil_pem_read(tls->cert_file, &p->cert, errbuf, errlen) != VEIL_OK ||
                      veil_pem_read(tls->key_file, &p->key, errbuf, errlen) != VEIL_OK))
        goto fail;
    return 0;
fail:
    pems_free(p);
    return -1;
}

int veil_cert_has_only_uri(const char *pem, const char *uri)
{
    gnutls_x509_crt_t crt;
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned)strlen(pem)};
    int match = 0, others = 0;
    if (!pem || gnutls_x509_crt_init(&crt) < 0)
        return 0;
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) >= 0) {
        for (unsigned i = 0;; i++) {
            char san[512];
            size_t len = sizeof san;
            unsigned critical;
            int type = gnutls_x509_crt_get_subject_alt_name(crt, i, san, &len, &critical);
            if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
                break;
            if (type == GNUTLS_SAN_URI) {
                if (len == strlen(uri) && memcmp(san, uri, len) == 0)
                    match = 1;
                else
                    others = 1;
            } else if (type < 0) {
                others = 1; /* unreadable: not what we expect */
                break;
            }
        }
    }
    gnutls_x509_crt_deinit(crt);
    return match && !others;
}

/* grpc's check after the chain verified: the server is the service we meant to call. */
static int verify_server_identity(const char *target_name, const char *peer_pem, void *userdata)
{
    (void)target_name;
    return veil_cert_has_only_uri(peer_pem, userdata) ? 0 : 1;
}

static void free_identity(void *userdata)
{
    free(userdata);
}

grpc_channel_credentials *veil_tls_channel_credentials(const veil_tls_config *tls, char *errbuf,
                                                       size_t errlen)
{
    if (tls->plaintext)
        return grpc_insecure_credentials_create();
    struct pems p;
    if (pems_read(tls, 0, &p, errbuf, errlen) != 0)
        return NULL;
    grpc_ssl_pem_key_cert_pair pair = {p.key, p.cert};
    /*
     * A DNS name proves only that the CA signed a certificate for that name;
     * between services the peer must be the very service meant (the vault must
     * be the vault, not another service holding a certificate of the same CA).
     */
    verify_peer_options verify = {0};
    if (tls->peer_identity && *tls->peer_identity) {
        if (!(verify.verify_peer_callback_userdata = strdup(tls->peer_identity))) {
            pems_free(&p);
            snprintf(errbuf, errlen, "out of memory");
            return NULL;
        }
        verify.verify_peer_callback = verify_server_identity;
        verify.verify_peer_destruct = free_identity;
    }
    /* grpc copies the PEM strings; ours are wiped right after. */
    grpc_channel_credentials *c = grpc_ssl_credentials_create(
        p.ca, p.cert ? &pair : NULL, verify.verify_peer_callback ? &verify : NULL, NULL);
    pems_free(&p);
    if (!c)
        snprintf(errbuf, errlen, "cannot build TLS credentials from %s", tls->ca_file);
    return c;
}

grpc_server_credentials *veil_tls_server_credentials(const veil_tls_config *tls,
                                                     int client_cert_optional, char *errbuf,
                                                     size_t errlen)
{
    struct pems p;
    if (pems_read(tls, 1, &p, errbuf, errlen) != 0)
        return NULL;
    grpc_ssl_pem_key_cert_pair pair = {p.key, p.cert};
    grpc_server_credentials *c = grpc_ssl_server_credentials_create_ex(
        p.ca, &pair, 1,
        client_cert_optional ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                             : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
        NULL);
    pems_free(&p);
    if (!c)
        snprintf(errbuf, errlen, "cannot build TLS server credentials (check %s and %s)",
                 tls->cert_file, tls->key_file);
    return c;
}
