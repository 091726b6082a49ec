/*
 * parallel.c - a batch's items over the calling thread and helper threads
 * (veil/parallel.h).
 *
 * One mutex guards a list of jobs, one per veil_helpers_for in progress.
 * Items are handed out by an atomic counter per job, so the threads working
 * on a job never wait for each other between items; the mutex is taken only
 * to post a job, to join or leave one, and to wait for its end.  A job lives
 * on its caller's stack: the caller takes it off the list when its own share
 * is done (every item has been handed out by then), then waits until no
 * helper still holds the job.  A helper leaves only after its last item
 * returned, so then every item has returned, and no helper touches the job
 * after the call returned.
 *
 * (veil_pool, the RPC server's workers, is not used here: an item pushed on
 * its ring stays there until a thread pops it, so a caller that had done
 * every item itself would still wait for a busy thread to pop its job.)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "veil/parallel.h"

struct job {
    void (*fn)(void *ctx, size_t i);
    void *ctx;
    size_t n;
    _Atomic size_t next;
    unsigned users;       /* helpers working on it; under mu */
    struct job *next_job; /* the next newer job; under mu */
};

struct veil_helpers {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was posted, or stopping */
    pthread_cond_t idle; /* the last helper working on a job left it */
    struct job *jobs;    /* oldest first: a few at most, one per batch being spread */
    int stopping;
    unsigned n_threads;
    pthread_t threads[];
};

/* Runs the job's items until none is left to hand out. */
static void work_on(struct job *j)
{
    for (size_t i; (i = atomic_fetch_add(&j->next, 1)) < j->n;)
        j->fn(j->ctx, i);
}

/* The oldest job with an item left to hand out; mu held. */
static struct job *pick(veil_helpers *h)
{
    for (struct job *j = h->jobs; j; j = j->next_job)
        if (atomic_load(&j->next) < j->n)
            return j;
    return NULL;
}

/* The link that points at j, or at the end of the list when j is NULL; mu held. */
static struct job **link_to(veil_helpers *h, const struct job *j)
{
    struct job **p = &h->jobs;
    while (*p != j)
        p = &(*p)->next_job;
    return p;
}

static void *helper_main(void *arg)
{
    veil_helpers *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        struct job *j;
        while (!h->stopping && !(j = pick(h)))
            pthread_cond_wait(&h->work, &h->mu);
        if (h->stopping)
            break;
        j->users++;
        pthread_mutex_unlock(&h->mu);
        work_on(j);
        pthread_mutex_lock(&h->mu);
        if (--j->users == 0)
            pthread_cond_broadcast(&h->idle);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

veil_err veil_helpers_new(unsigned threads, veil_helpers **out)
{
    *out = NULL;
    veil_helpers *h = calloc(1, sizeof *h + threads * sizeof(pthread_t));
    if (!h)
        return VEIL_ERR_NOMEM;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->work, NULL);
    pthread_cond_init(&h->idle, NULL);
    for (; h->n_threads < threads; h->n_threads++)
        if (pthread_create(&h->threads[h->n_threads], NULL, helper_main, h) != 0) {
            veil_helpers_free(h);
            return VEIL_ERR_NOMEM;
        }
    *out = h;
    return VEIL_OK;
}

void veil_helpers_free(veil_helpers *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    pthread_cond_broadcast(&h->work);
    pthread_mutex_unlock(&h->mu);
    for (unsigned i = 0; i < h->n_threads; i++)
        pthread_join(h->threads[i], NULL);
    pthread_cond_destroy(&h->idle);
    pthread_cond_destroy(&h->work);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void veil_helpers_for(veil_helpers *h, size_t n, void (*fn)(void *ctx, size_t i), void *ctx)
{
    if (!h || h->n_threads == 0 || n < 2) {
        for (size_t i = 0; i < n; i++)
            fn(ctx, i);
        return;
    }
    struct job j = {.fn = fn, .ctx = ctx, .n = n};
    atomic_init(&j.next, 0);
    pthread_mutex_lock(&h->mu);
    *link_to(h, NULL) = &j; /* the newest */
    pthread_cond_broadcast(&h->work);
    pthread_mutex_unlock(&h->mu);

    work_on(&j);

    pthread_mutex_lock(&h->mu);
    *link_to(h, &j) = j.next_job; /* no helper picks it up from now on */
    while (j.users > 0)
        pthread_cond_wait(&h->idle, &h->mu);
    pthread_mutex_unlock(&h->mu);
}
