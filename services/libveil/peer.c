/*
 * peer.c - who is calling.
 *
 * With TLS the identity is the URI SAN of the verified client certificate:
 * spiffe://<trust domain>/svc/<gateway|vault|consent|revocation|pseudonym>,
 * /app/<app id>, /admin/<name>, /counter/<name> (a public-service counter) or
 * /auditor/<name> (reads the admin audit log).  A TLS peer without a certificate is a
 * citizen's wallet; a plaintext peer is a probe on the health port, unless
 * the development switch is on, in which case it claims an identity in the
 * x-veil-dev-peer header.
 */
#include <stdio.h>
#include <string.h>
#include <grpc/grpc_security.h>

#include "internal.h"
#include "veil/formats.h"

static const struct {
    const char *name;
    unsigned role;
} services[] = {
    {"gateway", VEIL_PEER_GATEWAY},     {"vault", VEIL_PEER_VAULT},
    {"consent", VEIL_PEER_CONSENT},     {"revocation", VEIL_PEER_REVOCATION},
    {"pseudonym", VEIL_PEER_PSEUDONYM},
};

void veil_peer_from_uri(const char *uri, size_t len, const char *trust_domain, veil_peer *out)
{
    char prefix[160];
    size_t pl = (size_t)snprintf(prefix, sizeof prefix, "spiffe://%s/", trust_domain);

    out->role = 0;
    out->name[0] = '\0';
    if (len >= sizeof out->uri)
        len = sizeof out->uri - 1;
    memcpy(out->uri, uri, len);
    out->uri[len] = '\0';

    if (len <= pl || memcmp(uri, prefix, pl) != 0)
        return;
    const char *kind = uri + pl, *end = uri + len;
    const char *slash = memchr(kind, '/', (size_t)(end - kind));
    if (!slash)
        return;
    const char *name = slash + 1;
    size_t klen = (size_t)(slash - kind), nlen = (size_t)(end - name);
    char ident[sizeof out->name];
    if (nlen >= sizeof ident)
        return;
    memcpy(ident, name, nlen);
    ident[nlen] = '\0';
    if (!veil_ident_valid(ident))
        return;

    unsigned role = 0;
    if (klen == 3 && memcmp(kind, "svc", 3) == 0) {
        for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
            if (strlen(services[i].name) == nlen && memcmp(services[i].name, name, nlen) == 0)
                role = services[i].role;
    } else if (klen == 3 && memcmp(kind, "app", 3) == 0) {
        role = VEIL_PEER_APP;
    } else if (klen == 5 && memcmp(kind, "admin", 5) == 0) {
        role = VEIL_PEER_ADMIN;
    } else if (klen == 7 && memcmp(kind, "counter", 7) == 0) {
        role = VEIL_PEER_COUNTER;
    } else if (klen == 7 && memcmp(kind, "auditor", 7) == 0) {
        role = VEIL_PEER_AUDITOR;
    }
    if (!role)
        return;
    out->role = role;
    memcpy(out->name, name, nlen);
    out->name[nlen] = '\0';
}

static int is_tls(grpc_auth_context *ctx)
{
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    return p && p->value_length == 3 && memcmp(p->value, GRPC_SSL_TRANSPORT_SECURITY_TYPE, 3) == 0;
}

void veil_peer_identify(grpc_call *call, const char *trust_domain, int dev_plaintext,
                        const grpc_metadata_array *md, veil_peer *out)
{
    memset(out, 0, sizeof *out);
    grpc_auth_context *ctx = grpc_call_auth_context(call);

    if (!ctx || !is_tls(ctx)) {
        out->role = VEIL_PEER_PROBE;
        if (dev_plaintext) {
            for (size_t i = 0; i < md->count; i++) {
                grpc_slice k = md->metadata[i].key, v = md->metadata[i].value;
                if (GRPC_SLICE_LENGTH(k) == strlen(VEIL_DEV_PEER_HEADER) &&
                    memcmp(GRPC_SLICE_START_PTR(k), VEIL_DEV_PEER_HEADER, GRPC_SLICE_LENGTH(k)) ==
                        0) {
                    veil_peer_from_uri((const char *)GRPC_SLICE_START_PTR(v), GRPC_SLICE_LENGTH(v),
                                       trust_domain, out);
                    if (out->role == 0 && strcmp(out->uri, "citizen") == 0)
                        out->role = VEIL_PEER_CITIZEN;
                    break;
                }
            }
        }
        goto out;
    }

    /* A verified client certificate always yields x509_pem_cert. */
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    if (!grpc_auth_property_iterator_next(&it)) {
        out->role = VEIL_PEER_CITIZEN;
        goto out;
    }
    it = grpc_auth_context_find_properties_by_name(ctx, GRPC_PEER_URI_PROPERTY_NAME);
    const grpc_auth_property *p;
    while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
        veil_peer_from_uri(p->value, p->value_length, trust_domain, out);
        if (out->role)
            break;
    }
out:
    if (ctx)
        grpc_auth_context_release(ctx);
}
