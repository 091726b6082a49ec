/*
 * veil/tls.h - transport security from configuration.
 *
 * Production is mTLS everywhere: every service presents a certificate from the
 * deployment's CA and the caller's identity is the URI SAN of its client
 * certificate (spiffe://<trust domain>/svc/<service>, /app/<app id> or
 * /admin/<name>).  Plaintext exists only behind an explicit development
 * switch and logs a loud warning; in that mode a caller states its identity in
 * the x-veil-dev-peer header, which is exactly as trustworthy as it sounds.
 */
#ifndef VEIL_TLS_H
#define VEIL_TLS_H

#include "veil/err.h"

typedef struct veil_tls_config {
    const char *ca_file;      /* PEM bundle of the CA that signs peers */
    const char *cert_file;    /* this process's certificate chain (PEM) */
    const char *key_file;     /* its private key (PEM) */
    int plaintext;            /* development only */
    const char *dev_identity; /* plaintext mode: the identity URI this client claims */
    const char *server_name;  /* client: name to check in the server's certificate */
    /*
     * client: the identity URI the server's certificate must hold as its only
     * URI SAN (e.g. spiffe://veil/svc/vault); NULL or "" checks only the chain
     * and the name.  Every service-to-service channel sets it.
     */
    const char *peer_identity;
} veil_tls_config;

/* Whether a PEM certificate holds uri as its one and only URI SAN. */
int veil_cert_has_only_uri(const char *pem, const char *uri);

/* The header a plaintext-mode client uses to claim an identity. */
#define VEIL_DEV_PEER_HEADER "x-veil-dev-peer"

/*
 * Reads a PEM file into a NUL-terminated string in guarded memory; the caller
 * frees it with veil_pem_free (which wipes it, as it may hold a private key).
 */
veil_err veil_pem_read(const char *path, char **out, char *errbuf, size_t errlen) VEIL_WUR;
void veil_pem_free(char *pem);

#endif
