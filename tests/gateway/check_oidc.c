/*
 * check_oidc.c - the OpenID Connect door end to end: a real stack whose
 * gateway opens its HTTPS door, driven by tests/gateway/oidc_rp.py - Debian's
 * python3-authlib as the relying party, veilctl as the phone, headless
 * Chromium (python3-selenium) for the login page.  One test per scenario;
 * the gateway is restarted with a short request lifetime and a low rate
 * limit for the two scenarios that need them.
 */
#include <check.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "stack.h"

static h_stack S;
static char *dir;
static char listen_env[64], issuer_env[96], rs256_env[1300];
static const char *gateway_env[8];

static void stack_up(void)
{
    char path[1200], cmd[1400];
    dir = h_tempdir("oidc");
    int port = h_free_port();
    snprintf(listen_env, sizeof listen_env, "GATEWAY_OIDC_LISTEN=127.0.0.1:%d", port);
    snprintf(issuer_env, sizeof issuer_env, "GATEWAY_OIDC_ISSUER=https://localhost:%d", port);
    snprintf(path, sizeof path, "%s/oidc-rs256.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s 2>/dev/null",
             path);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(rs256_env, sizeof rs256_env, "GATEWAY_OIDC_RS256_KEY=%s", path);
    gateway_env[0] = listen_env;
    gateway_env[1] = issuer_env;
    gateway_env[2] = rs256_env;
    gateway_env[3] = NULL;
    if (h_stack_start(&S, gateway_env) != 0)
        ck_abort_msg("the stack did not start");
    /* veilctl as the phone and the admin, as deploy/local/stack env sets it up */
    h_stack_oidc_env(&S, dir, issuer_env + strlen("GATEWAY_OIDC_ISSUER="));
}

static void stack_down(void)
{
    ck_assert_int_eq(h_stack_stop(&S), 0);
    free(dir);
}

/* Runs one scenario of oidc_rp.py; its output goes to the test log. */
static void scenario(const char *name)
{
    if (h_oidc_scenario(&S, name) != 0)
        ck_abort_msg("scenario %s failed", name);
}

/* Restarts the gateway with one more setting (NULL: back to the plain one). */
static void gateway_with(const char *extra)
{
    static const char *env[8];
    memcpy(env, gateway_env, sizeof env);
    env[3] = extra;
    env[4] = NULL;
    ck_assert_int_eq(h_stop(&S.gateway), 0);
    S.gateway_env = extra ? env : gateway_env;
    ck_assert_int_eq(h_stack_restart(&S, H_GATEWAY), 0);
}

START_TEST(test_eddsa_client_tls_client_auth)
{
    scenario("eddsa");
}
END_TEST

START_TEST(test_rs256_client_private_key_jwt)
{
    scenario("rs256");
}
END_TEST

START_TEST(test_errors_and_bad_input)
{
    scenario("errors");
}
END_TEST

START_TEST(test_login_page_in_chromium)
{
    scenario("browser");
}
END_TEST

/* Issue 17: the card form on the login page, in Chromium. */
START_TEST(test_card_form_in_chromium)
{
    scenario("card");
}
END_TEST

START_TEST(test_expired_request)
{
    gateway_with("GATEWAY_OIDC_REQUEST_TTL_S=2");
    scenario("expired");
    gateway_with(NULL);
}
END_TEST

START_TEST(test_rate_limit)
{
    gateway_with("GATEWAY_OIDC_RATE_PER_ADDR=5");
    scenario("ratelimit");
    gateway_with(NULL);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_eddsa_client_tls_client_auth,
                                  test_rs256_client_private_key_jwt,
                                  test_errors_and_bad_input,
                                  test_login_page_in_chromium,
                                  test_card_form_in_chromium,
                                  test_expired_request,
                                  test_rate_limit,
                                  NULL};
    const h_case cases[] = {{"oidc", 300, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("oidc", cases));
}
