/* pool.c - worker threads fed from a bounded ring (internal.h, struct veil_pool). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "veil/client.h"
#include "veil/log.h"

static void *pool_main(void *arg)
{
    struct veil_pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->count == 0 && !p->closing)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->count == 0) { /* closing and nothing left */
            pthread_mutex_unlock(&p->mu);
            break;
        }
        void *item = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->mu);
        p->run(item);
    }
    veil_client_thread_done();
    return NULL;
}

int veil_pool_start(struct veil_pool *p, const char *name, int threads, size_t queue_max,
                    void (*run)(void *item))
{
    memset(p, 0, sizeof *p);
    p->name = name;
    p->run = run;
    p->cap = queue_max;
    p->ring = calloc(queue_max, sizeof *p->ring);
    p->threads = calloc((size_t)threads, sizeof *p->threads);
    if (!p->ring || !p->threads)
        goto fail;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, pool_main, p) != 0) {
            veil_log(VEIL_LOG_ERROR, "cannot start thread", VL_STR("pool", name), VL_END);
            veil_pool_stop(p);
            return -1;
        }
        p->nthreads++;
    }
    return 0;
fail:
    free(p->ring);
    free(p->threads);
    memset(p, 0, sizeof *p);
    return -1;
}

int veil_pool_push(struct veil_pool *p, void *item)
{
    int rc = -1;
    pthread_mutex_lock(&p->mu);
    if (!p->closing && p->count < p->cap) {
        p->ring[(p->head + p->count) % p->cap] = item;
        p->count++;
        pthread_cond_signal(&p->cv);
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void veil_pool_stop(struct veil_pool *p)
{
    if (!p->ring)
        return;
    pthread_mutex_lock(&p->mu);
    p->closing = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->ring);
    free(p->threads);
    memset(p, 0, sizeof *p);
}
