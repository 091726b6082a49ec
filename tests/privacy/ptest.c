/* ptest.c - the privacy suites' shared helpers (ptest.h). */
#include <check.h>
#include <time.h>

#include "ptest.h"
#include "veil/codec.h"

#define STR2(x) #x
#define STR(x) STR2(x)

void pt_stack_up(h_stack *s)
{
    static const char *const env[] = {"GATEWAY_EVENT_BATCH_MS=" STR(PT_BATCH_MS),
                                      "GATEWAY_EVENT_SETTLE_MS=" STR(PT_SETTLE_MS), NULL};
    h_stack_opts o = {.gateway_env = env};
    if (h_stack_start_opts(s, &o) != 0)
        ck_abort_msg("the stack did not start");
}

void pt_sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

void pt_batch_start(void)
{
    int64_t into = veil_now_ms() % PT_BATCH_MS;
    if (into > 100)
        pt_sleep_ms(PT_BATCH_MS - into + 50);
}

void pt_batch_released(void)
{
    pt_sleep_ms(PT_BATCH_MS - veil_now_ms() % PT_BATCH_MS + PT_SETTLE_MS + 400);
}

void pt_set_identity(h_stack *s, const vw_wallet *w, const char *state)
{
    e2e_set_identity(s, w, state, "privacy suite");
}
