/*
 * check_erasure.c - issue 13 items 2 and 4 on a whole stack.
 *
 * Erasure forgets everywhere: after Erase, no table of any service's
 * database holds the subject reference (as bytes, hex or base64), yet every
 * app the citizen was linked to still gets its identity_erased event under
 * the pseudonym it knew.  An authority's suspension or revocation binds the
 * person: erasing such an identity and enrolling again with the same ID
 * number is refused, and what is kept for that holds no ID number.
 */
#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "e2e.h"
#include "veil/codec.h"
#include "veil/jws.h"

static h_stack S;

static void stack_up(void)
{
    h_stack_up(&S);
}

static void stack_down(void)
{
    h_stack_down(&S);
}

static PGconn *db(int which)
{
    PGconn *c = PQconnectdb(S.db[which]);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "cannot connect: %s", PQerrorMessage(c));
    return c;
}

/* The subject reference of a web number, read from the vault's database. */
static void subject_of(const char *web_number, unsigned char out[32])
{
    PGconn *c = db(1);
    const char *p[] = {web_number};
    PGresult *r = PQexecParams(c, "SELECT subject_ref FROM citizens WHERE web_number = $1", 1, NULL,
                               p, NULL, NULL, 1);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_int_eq(PQgetlength(r, 0, 0), 32);
    memcpy(out, PQgetvalue(r, 0, 0), 32);
    PQclear(r);
    PQfinish(c);
}

/*
 * How many rows of every table of one database hold needle: bytea columns
 * that contain its bytes, text columns that contain its hex, base64 or
 * base64url spelling.  Prints where it was found.
 */
static long rows_holding(int which, const unsigned char *needle, size_t n)
{
    static const char *const names[] = {"gateway", "vault", "consent", "revocation"};
    char hex[2 * 64 + 1], b64[96], b64url[96];
    sodium_bin2hex(hex, sizeof hex, needle, n);
    sodium_bin2base64(b64, sizeof b64, needle, n, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    veil_b64url_encode(b64url, sizeof b64url, needle, n);
    PGconn *c = db(which);
    PGresult *cols = PQexec(c, "SELECT table_name, column_name, data_type"
                               " FROM information_schema.columns WHERE table_schema = 'public'"
                               " AND data_type IN ('bytea', 'text', 'character varying', 'ARRAY')"
                               " ORDER BY table_name, column_name");
    ck_assert_int_eq(PQresultStatus(cols), PGRES_TUPLES_OK);
    long total = 0;
    for (int i = 0; i < PQntuples(cols); i++) {
        const char *t = PQgetvalue(cols, i, 0), *col = PQgetvalue(cols, i, 1);
        int bytea = strcmp(PQgetvalue(cols, i, 2), "bytea") == 0;
        char sql[512];
        if (bytea)
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM \"%s\" WHERE position($1::bytea in \"%s\") > 0", t, col);
        else
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM \"%s\" WHERE strpos(\"%s\"::text, $2) > 0"
                     " OR strpos(\"%s\"::text, $3) > 0 OR strpos(\"%s\"::text, $4) > 0",
                     t, col, col, col);
        const char *vals[] = {(const char *)needle, hex, b64, b64url};
        int lens[] = {(int)n, 0, 0, 0}, fmts[] = {1, 0, 0, 0};
        const Oid types[] = {17 /* bytea */, 25 /* text */, 25, 25};
        PGresult *r = PQexecParams(c, sql, 4, types, vals, lens, fmts, 0);
        ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
        long k = atol(PQgetvalue(r, 0, 0));
        if (k)
            fprintf(stderr, "check_erasure: %s.%s.%s holds it in %ld row(s)\n", names[which], t,
                    col, k);
        total += k;
        PQclear(r);
    }
    PQclear(cols);
    PQfinish(c);
    return total;
}

static long rows_holding_anywhere(const unsigned char *needle, size_t n)
{
    long total = 0;
    for (int i = 0; i < 4; i++)
        total += rows_holding(i, needle, n);
    return total;
}

static char *sub_at(const char *app, const vw_wallet *w)
{
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    veil_err err = e2e_login(&S, app, w, NULL, 0, &r, &st);
    if (err)
        ck_abort_msg("login to %s failed: %s: %s", app, veil_status_name(st.code), st.message);
    char *sub = strdup(r->sub);
    e2e_free(r);
    return sub;
}

static void erase(const vw_wallet *w)
{
    Veil__Gateway__ErasePayload ep = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    Veil__Empty *empty;
    veil_status st;
    ep.confirm = "erase my identity";
    veil_err err = e2e_citizen(&S, w, "Erase", &ep.base, &empty, &st);
    ck_assert_msg(err == VEIL_OK, "erase: %s: %s", veil_status_name(st.code), st.message);
    e2e_free(empty);
}

/* How many of app's events (from the start) are kind with subject sub, signature checked. */
static int events_now(const char *app, const char *kind, const char *sub)
{
    Veil__Gateway__PollEventsResponse *ev = e2e_poll(&S, app, NULL);
    int found = e2e_events_of(&S, ev, app, kind, sub);
    e2e_free(ev);
    return found;
}

/*
 * The same, waiting up to 5 s for at least one: the gateway releases events
 * in batches (GATEWAY_EVENT_BATCH_MS, 1 s in the harness) shared by every
 * app, so once one app has an erasure's event, every app has its own.
 */
static int events_for(const char *app, const char *kind, const char *sub)
{
    int found = 0;
    for (int i = 0; i < 50 && !(found = events_now(app, kind, sub)); i++)
        usleep(100 * 1000);
    return found;
}

/* Issue 13 item 4: after Erase, no table of any service holds the subject reference. */
START_TEST(test_erasure_forgets_everywhere)
{
    char id[19];
    e2e_id_number("11010519750505123", id);
    vw_wallet *w = e2e_enrol(&S, id, "赵敏");
    unsigned char subject[32];
    subject_of(w->web_number, subject);
    /* leave traces in every service: app links, consent grants and withdrawals, an unlink */
    char *sub_news = sub_at("news.xinwen", w), *sub_shop = sub_at("shop.jiale", w);
    const char *const attrs[] = {"province"};
    e2e_grant(&S, w, "shop.jiale", attrs, 1);
    char *sub_chat = sub_at("chat.lianxin", w);
    e2e_unlink(&S, w, "chat.lianxin");
    e2e_withdraw(&S, w, "shop.jiale", attrs, 1);
    /* the scan finds what is there (so it can fail): revocation and consent hold it now */
    ck_assert_int_gt(rows_holding(3, subject, 32), 0);
    ck_assert_int_gt(rows_holding(2, subject, 32), 0);
    ck_assert_int_gt(rows_holding(1, subject, 32), 0);

    erase(w);
    ck_assert_int_eq(rows_holding_anywhere(subject, 32), 0);
    /* nor anything of it: no web number either */
    ck_assert_int_eq(
        rows_holding_anywhere((const unsigned char *)w->web_number, strlen(w->web_number)), 0);

    /* apps still linked get their erasure event, under the pseudonym they know */
    ck_assert_int_eq(events_for("news.xinwen", "identity_erased", sub_news), 1);
    ck_assert_int_eq(events_for("shop.jiale", "identity_erased", sub_shop), 1);
    /* the app the citizen had left hears nothing more (it was told of the unlink) */
    ck_assert_int_eq(events_now("chat.lianxin", "identity_erased", sub_chat), 0);
    /* and no app's events name the person's pseudonym at another app */
    ck_assert_int_eq(events_now("news.xinwen", "identity_erased", sub_shop), 0);

    /* a repeated erasure finds nothing: the device is gone with the record */
    Veil__Gateway__ErasePayload ep = VEIL__GATEWAY__ERASE_PAYLOAD__INIT;
    Veil__Empty *empty;
    veil_status st;
    ep.confirm = "erase my identity";
    ck_assert_int_ne(e2e_citizen(&S, w, "Erase", &ep.base, &empty, &st), VEIL_OK);
    /* the same person may enrol again (no authority held them): a new identity */
    vw_wallet *again = e2e_enrol(&S, id, "赵敏");
    ck_assert_str_ne(again->web_number, w->web_number);
    free(sub_news), free(sub_shop), free(sub_chat);
    vw_wallet_free(again);
    vw_wallet_free(w);
}
END_TEST

/* Issue 13 item 2: an authority's state outlives an erasure and refuses a re-enrolment. */
static void authority_binds_the_person(const char *first17, const char *state)
{
    char id[19], expected[160];
    e2e_id_number(first17, id);
    vw_wallet *w = e2e_enrol(&S, id, "钱进");
    unsigned char subject[32];
    subject_of(w->web_number, subject);
    free(sub_at("news.xinwen", w));
    e2e_set_identity(&S, w, state, "court order 2026-117");
    erase(w);

    vw_wallet *again;
    ck_assert_int_eq(vw_wallet_new(&again), VEIL_OK);
    Veil__Gateway__WalletEnrolResponse *resp = NULL;
    veil_status st;
    ck_assert_int_eq(e2e_try_enrol(&S, again, id, "钱进", &resp, &st), VEIL_ERR_PRECONDITION);
    snprintf(expected, sizeof expected,
             "this identity is %s by the authority: the citizen must contact the authority", state);
    ck_assert_str_eq(st.message, expected);
    ck_assert_ptr_null(resp);

    /* what is kept: the hold, and nothing else about the person */
    ck_assert_int_eq(rows_holding_anywhere(subject, 32), 0);
    ck_assert_int_eq(rows_holding_anywhere((const unsigned char *)id, strlen(id)), 0);
    ck_assert_int_eq(
        rows_holding_anywhere((const unsigned char *)w->web_number, strlen(w->web_number)), 0);
    PGconn *c = db(1);
    const char *p[] = {state};
    PGresult *r = PQexecParams(c,
                               "SELECT length(blind_index) FROM authority_holds"
                               " WHERE legal_basis = 'court order 2026-117' AND state = $1",
                               1, NULL, p, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "32");
    PQclear(r);
    /* the blind index is keyed: not any unkeyed hash of the number */
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)id, strlen(id), NULL, 0);
    ck_assert_int_eq(rows_holding(1, h, 32), 0);
    crypto_hash_sha256(h, (const unsigned char *)id, strlen(id));
    ck_assert_int_eq(rows_holding(1, h, 32), 0);
    PQfinish(c);
    vw_wallet_free(again);
    vw_wallet_free(w);
}

START_TEST(test_revoked_identity_binds_the_person)
{
    authority_binds_the_person("42010619801212345", "revoked");
}
END_TEST

START_TEST(test_suspended_identity_binds_the_person)
{
    authority_binds_the_person("42010619810303456", "suspended");
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_erasure_forgets_everywhere,
                                  test_revoked_identity_binds_the_person,
                                  test_suspended_identity_binds_the_person, NULL};
    const h_case cases[] = {{"erasure", 300, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("erasure", cases));
}
