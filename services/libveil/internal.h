/*
 * internal.h - pieces of libveil shared between its own files only.
 * Nothing outside services/libveil includes this.
 */
#ifndef VEIL_INTERNAL_H
#define VEIL_INTERNAL_H

#include <pthread.h>
#include <grpc/grpc.h>

#include "veil/rpc.h"

/* A fixed set of threads running items from a bounded queue. */
struct veil_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void **ring;
    size_t cap, head, count;
    pthread_t *threads;
    int nthreads;
    int closing;
    const char *name;
    void (*run)(void *item);
};

int veil_pool_start(struct veil_pool *p, const char *name, int threads, size_t queue_max,
                    void (*run)(void *item));
/* Queues an item; returns -1 when the queue is full or closing. */
int veil_pool_push(struct veil_pool *p, void *item);
/* Runs what is queued, then joins every thread. */
void veil_pool_stop(struct veil_pool *p);

/* Works out who is calling (veil/rpc.h, veil_peer). */
/* Zeroes the bytes of a raw byte buffer we own, before destroying it (personal data). */
void veil_byte_buffer_wipe(grpc_byte_buffer *bb);

void veil_peer_identify(grpc_call *call, const char *trust_domain, int dev_plaintext,
                        const grpc_metadata_array *md, veil_peer *out);

/* Sets a peer from an identity URI (spiffe://<domain>/<kind>/<name>). */
void veil_peer_from_uri(const char *uri, size_t len, const char *trust_domain, veil_peer *out);

/* Health service state, read by health.c. */
int veil_server_is_serving(const veil_server *srv);
int veil_server_has_service(const veil_server *srv, const char *name);
/*
 * Adds grpc.health.v1.Health to srv, answering for that server alone; *out
 * receives its state, which the server frees with free() after it stopped.
 */
veil_err veil_health_add(veil_server *srv, void **out, char *errbuf, size_t errlen);

/* The transport credentials a configuration asks for; NULL and errbuf on failure. */
grpc_channel_credentials *veil_tls_channel_credentials(const veil_tls_config *tls, char *errbuf,
                                                       size_t errlen);
grpc_server_credentials *veil_tls_server_credentials(const veil_tls_config *tls,
                                                     int client_cert_optional, char *errbuf,
                                                     size_t errlen);

#endif
