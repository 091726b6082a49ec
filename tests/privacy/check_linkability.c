/*
 * check_linkability.c - veil tried as the apps would try it together (issue
 * 12).  Several citizens log in to all 81 apps of the first deployment; the
 * apps pool everything they ever receive - every field of every reply, every
 * claim and header of every assertion and event, the tickets' bytes, every
 * error message, when each thing arrived - and try to link accounts across
 * apps.  The suite fails on any link beyond the attribute values the
 * citizens consented to release.  Apps of one organisation that share a
 * sector (the Haipeng group's two shops) are one party: they are meant to
 * see one pseudonym.
 *
 * The checks, each an attack:
 * - shared values: a value seen in two parties' data that is not common to
 *   every citizen (an identifier, a cohort) links whoever it belongs to;
 * - ticket clocks: a phone's clock offset, read from a ticket's time against
 *   the arrival time, pairs accounts (issue 12 item 1: 100 % before);
 * - events: one fan-out's SETs, compared claim by claim and by arrival,
 *   must never single one person's pair out (items 2 and 6);
 * - refusals: what a refused login returns must not tell reasons apart
 *   (item 7);
 * That the gateway process never holds an ID number or a name (item 3) is
 * check_gateway's test_gateway_never_holds_the_identity.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ptest.h"
#include "veil/codec.h"
#include "veil/formats.h"

#define PEOPLE 4
#define MAX_APPS 128
static h_stack S;

/* The registry: what the apps are, from the sample file the stack seeded. */
static struct app {
    char id[65], sector[65], scope[256];
    char *attrs[16];
    size_t n_attrs;
} apps[MAX_APPS];
static size_t n_apps;

/* What the apps pooled: one value, who (party = sector index) saw it for whom. */
struct value {
    char *v;
    unsigned char party[MAX_APPS];
    unsigned people; /* bit p: seen for citizen p */
    char where[96];  /* the first place it was seen, for the failure message */
};
static struct value *pool;
static size_t n_pool, cap_pool;

static vw_wallet *w[PEOPLE];
static char id_numbers[PEOPLE][19];

static void load_registry(void)
{
    char path[1024], line[4096];
    snprintf(path, sizeof path, "%s/db/gateway/sample/first-deployment-apps.tsv",
             h_env("VEIL_SOURCE_DIR"));
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    int header = 1;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (header) {
            header = 0;
            continue;
        }
        struct app *a = &apps[n_apps++];
        char *save, *col[6] = {0};
        col[0] = strtok_r(line, "\t", &save);
        for (int i = 1; i < 6; i++)
            col[i] = strtok_r(NULL, "\t\n", &save);
        snprintf(a->id, sizeof a->id, "%s", col[0]);
        snprintf(a->sector, sizeof a->sector, "%s", col[2]);
        snprintf(a->scope, sizeof a->scope, "%s", col[4]);
        for (char *p = strtok_r(a->scope, ",", &save); p; p = strtok_r(NULL, ",", &save))
            a->attrs[a->n_attrs++] = p;
    }
    fclose(f);
    ck_assert_uint_ge(n_apps, 81); /* the 81 apps, and any venues the registry holds */
}

/* Apps sharing a sector are one party. */
static size_t party_of(size_t app)
{
    for (size_t i = 0; i < app; i++)
        if (strcmp(apps[i].sector, apps[app].sector) == 0)
            return i;
    return app;
}

static void observe(size_t app, int person, const char *v, const char *where)
{
    size_t i;
    for (i = 0; i < n_pool; i++)
        if (strcmp(pool[i].v, v) == 0)
            break;
    if (i == n_pool) {
        if (n_pool == cap_pool) {
            cap_pool = cap_pool ? 2 * cap_pool : 4096;
            pool = realloc(pool, cap_pool * sizeof *pool);
        }
        memset(&pool[i], 0, sizeof pool[i]);
        pool[i].v = strdup(v);
        snprintf(pool[i].where, sizeof pool[i].where, "%s at %s", where, apps[app].id);
        n_pool++;
    }
    pool[i].party[party_of(app)] = 1;
    pool[i].people |= 1u << person;
}

/* Claims whose values are the consented attributes or times: not identifiers. */
static int attribute_claim(const char *name)
{
    size_t n;
    const veil_attr *cat = veil_attr_catalogue(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(cat[i].name, name) == 0)
            return 1;
    return 0;
}

static int time_claim(const char *name)
{
    return !strcmp(name, "iat") || !strcmp(name, "exp") || !strcmp(name, "nbf") ||
           !strcmp(name, "auth_time");
}

/* Every leaf of a JSON document, by path, except consented attribute values and times. */
static void observe_json(size_t app, int person, json_t *j, const char *path)
{
    char buf[512];
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            if (attribute_claim(k) || time_claim(k))
                continue;
            snprintf(buf, sizeof buf, "%s.%s", path, k);
            observe(app, person, k, buf); /* the names too: a per-person claim name links */
            observe_json(app, person, v, buf);
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) observe_json(app, person, v, path);
    } else {
        char *s = json_dumps(j, JSON_ENCODE_ANY);
        observe(app, person, s, path);
        free(s);
    }
}

/* A compact JWS as an app reads it: header and claims. */
static void observe_jws(size_t app, int person, const char *token, const char *what)
{
    json_t *h = json_loads(h_jws_header(token), 0, NULL), *c = e2e_claims(token);
    char path[64];
    snprintf(path, sizeof path, "%s header", what);
    observe_json(app, person, h, path);
    snprintf(path, sizeof path, "%s claims", what);
    observe_json(app, person, c, path);
    json_decref(h);
    json_decref(c);
}

/*
 * The ticket-clock attack: any 8 bytes of the ticket that read (big-endian)
 * as a time within a minute of its arrival.  Returns how many there were and
 * the first offset from arrival in *offset.
 */
static int ticket_times(const char *ticket, int64_t arrival, int64_t *offset)
{
    unsigned char raw[1024];
    size_t n;
    if (veil_b64url_decode(raw, sizeof raw, ticket, strlen(ticket), &n) != 0)
        return 0;
    int found = 0;
    for (size_t i = 0; i + 8 <= n; i++) {
        int64_t t = 0;
        for (int k = 0; k < 8; k++)
            t = (int64_t)((uint64_t)t << 8 | raw[i + k]);
        if (t > arrival - 60000 && t < arrival + 60000) {
            if (!found)
                *offset = t - arrival;
            found++;
        }
    }
    return found;
}

static int64_t clock_offset[PEOPLE] = {-1500, -500, 500, 1500}; /* each phone's clock, ms */
static int64_t seen_offset[PEOPLE][MAX_APPS];
static int time_found[PEOPLE][MAX_APPS];

/* One login as app a asks for it: the whole scope, the phone's clock off by its offset. */
static void login(size_t a, int p)
{
    unsigned char ch[32];
    char *ticket;
    ck_assert_int_eq(e2e_challenge(&S, apps[a].id, ch), VEIL_OK);
    ck_assert_int_eq(
        vw_ticket(w[p], apps[a].id, ch, 32, veil_now_ms() + clock_offset[p], &ticket), VEIL_OK);
    int64_t arrival = veil_now_ms();
    time_found[p][a] = ticket_times(ticket, arrival, &seen_offset[p][a]);
    Veil__Gateway__CompleteLoginResponse *r;
    veil_status st;
    ck_assert_int_eq(e2e_complete(&S, apps[a].id, ticket, (const char *const *)apps[a].attrs,
                                  apps[a].n_attrs, &r, &st),
                     VEIL_OK);
    free(ticket);
    observe(a, p, r->sub, "sub");
    if (r->previous_sub[0])
        observe(a, p, r->previous_sub, "previous_sub");
    for (size_t i = 0; i < r->n_released; i++)
        observe(a, p, r->released[i], "released");
    for (size_t i = 0; i < r->n_withheld; i++) {
        observe(a, p, r->withheld[i]->attribute, "withheld");
        observe(a, p, r->withheld[i]->reason, "withheld reason");
    }
    observe_jws(a, p, r->assertion, "assertion");
    e2e_free(r);
}

static void stack_up(void)
{
    pt_stack_up(&S);
}

static void stack_down(void)
{
    h_stack_down(&S);
}

/* One SET as the app holds it. */
struct set {
    json_t *claims;
    char kind[64], sub[256], rest[2048]; /* rest: everything but sub, aud, jti */
    int64_t arrival_s;
};

/* Polls app a for everything released; returns the count. */
static size_t poll(size_t a, char **cursor, struct set *out, size_t room)
{
    Veil__Gateway__PollEventsResponse *ev = e2e_poll(&S, apps[a].id, *cursor);
    size_t n = 0;
    for (; n < ev->n_events && n < room; n++) {
        struct set *s = &out[n];
        s->claims = e2e_claims(ev->events[n]);
        s->arrival_s = veil_now_ms() / 1000;
        json_t *copy = json_deep_copy(s->claims);
        json_object_del(copy, "aud");
        json_object_del(copy, "jti");
        const char *key;
        json_t *body;
        json_object_foreach(json_object_get(copy, "events"), key, body)
        {
            snprintf(s->kind, sizeof s->kind, "%s", key);
            json_t *subj = json_object_get(body, "subject");
            snprintf(s->sub, sizeof s->sub, "%s", json_string_value(json_object_get(subj, "sub")));
            json_object_del(subj, "sub");
        }
        char *text = json_dumps(copy, JSON_SORT_KEYS | JSON_COMPACT);
        snprintf(s->rest, sizeof s->rest, "%s", text);
        free(text);
        json_decref(copy);
    }
    free(*cursor);
    *cursor = strdup(ev->cursor);
    e2e_free(ev);
    return n;
}

/*
 * The shared-value attack: values seen by two or more parties that are not
 * common to every citizen.  Returns how many (printing the first few).
 */
static int shared_values(int print)
{
    unsigned everyone = (1u << PEOPLE) - 1;
    int links = 0;
    for (size_t i = 0; i < n_pool; i++) {
        int parties = 0;
        for (size_t a = 0; a < n_apps; a++)
            parties += pool[i].party[a];
        if (parties >= 2 && pool[i].people != everyone && links++ < 10 && print)
            fprintf(stderr, "linking value (%s, citizens %#x, %d parties): %.60s\n",
                    pool[i].where, pool[i].people, parties, pool[i].v);
    }
    return links;
}

static char *sub_of[PEOPLE][MAX_APPS];

/* Which citizen an app's sub belongs to (the test knows; the apps try to find out). */
static int person_of(size_t a, const char *sub)
{
    for (int p = 0; p < PEOPLE; p++)
        if (sub_of[p][a] && strcmp(sub_of[p][a], sub) == 0)
            return p;
    return -1;
}

#define WITHDRAWING_APPS 20

START_TEST(test_apps_pooling_everything_link_nobody)
{
    load_registry();
    /* citizens of different provinces and ages: their consented values differ */
    static const char *const first17[PEOPLE] = {"11010219800101201", "44030119900202302",
                                                "51010720000303403", "65010219700404504"};
    static const char *const names[PEOPLE] = {"甲一", "乙二", "丙三", "丁四"};
    for (int p = 0; p < PEOPLE; p++) {
        e2e_id_number(first17[p], id_numbers[p]);
        w[p] = e2e_enrol(&S, id_numbers[p], names[p]);
    }
    /* every citizen consents to every app's whole scope and logs in to every app */
    for (int p = 0; p < PEOPLE; p++)
        for (size_t a = 0; a < n_apps; a++) {
            e2e_grant(&S, w[p], apps[a].id, (const char *const *)apps[a].attrs, apps[a].n_attrs);
            login(a, p);
        }

    /* 1. shared values (and the attack works: a planted identifier is caught) */
    ck_assert_uint_gt(n_pool, PEOPLE * n_apps); /* every sub, claim and field pooled */
    int links = shared_values(1);
    ck_assert_msg(links == 0, "%d values link citizens across apps", links);
    observe(0, 2, "planted-identifier", "calibration");
    observe(n_apps - 1, 2, "planted-identifier", "calibration");
    ck_assert_int_eq(shared_values(0), 1);

    /* 2. ticket clocks (the detector finds a clear time where format 1 had it) */
    unsigned char clear[12] = {1, 2, 3};
    int64_t now = veil_now_ms() + 700, off = 0;
    for (int k = 0; k < 8; k++)
        clear[3 + k] = (unsigned char)((uint64_t)now >> (56 - 8 * k));
    char encoded[32];
    veil_b64url_encode(encoded, sizeof encoded, clear, sizeof clear);
    ck_assert_int_eq(ticket_times(encoded, now - 700, &off), 1);
    ck_assert_int_eq(off, 700);
    int readable = 0;
    for (int p = 0; p < PEOPLE; p++)
        for (size_t a = 0; a < n_apps; a++)
            readable += time_found[p][a] > 0;
    ck_assert_msg(readable == 0,
                  "%d of %zu tickets show the phone's clock to the app (issue 12 item 1)", readable,
                  PEOPLE * n_apps);

    /*
     * 3. events: two citizens suspended a second apart and two withdrawing
     * consent at twenty apps, all in one batch; every app polls throughout.
     */
    char *cursor[MAX_APPS] = {0};
    static struct set sets[MAX_APPS][16];
    size_t n_sets[MAX_APPS] = {0};
    for (int p = 0; p < PEOPLE; p++)
        for (size_t a = 0; a < n_apps; a++) {
            Veil__Gateway__CompleteLoginResponse *r;
            veil_status st;
            ck_assert_int_eq(e2e_login(&S, apps[a].id, w[p], NULL, 0, &r, &st), VEIL_OK);
            sub_of[p][a] = strdup(r->sub);
            e2e_free(r);
        }
    pt_batch_released();
    for (size_t a = 0; a < n_apps; a++) /* drain what the grants and logins made */
        for (size_t k = poll(a, &cursor[a], sets[a], 16); k; k--)
            json_decref(sets[a][k - 1].claims);
    pt_batch_start();
    int64_t t0 = veil_now_ms();
    pt_set_identity(&S, w[0], "suspended");
    pt_sleep_ms(1100); /* each its own second: a `toe` would tell them apart */
    pt_set_identity(&S, w[1], "suspended");
    for (size_t a = 0; a < WITHDRAWING_APPS; a++)
        for (int p = 2; p < PEOPLE; p++) {
            Veil__Gateway__WithdrawConsentPayload wp = VEIL__GATEWAY__WITHDRAW_CONSENT_PAYLOAD__INIT;
            Veil__Gateway__WithdrawConsentResponse *wr;
            veil_status st;
            wp.app_id = apps[a].id;
            ck_assert_int_eq(e2e_citizen(&S, w[p], "WithdrawConsent", &wp.base, &wr, &st),
                             VEIL_OK);
            e2e_free(wr);
        }
    ck_assert_msg(veil_now_ms() - t0 < PT_BATCH_MS - 500, "the events took longer than a batch");
    for (size_t a = 0; a < n_apps; a++)
        ck_assert_uint_eq(poll(a, &cursor[a], sets[a], 16), 0); /* nothing before it closes */
    pt_batch_released();
    for (size_t a = 0; a < n_apps; a++) {
        n_sets[a] = poll(a, &cursor[a], sets[a], 16);
        ck_assert_uint_eq(n_sets[a], a < WITHDRAWING_APPS ? 4 : 2);
        for (size_t i = 0; i < n_sets[a]; i++)
            ck_assert_int_ge(person_of(a, sets[a][i].sub), 0); /* named as the app knows them */
    }
    /*
     * Pairing: an event of party A and one of party B agreeing on everything
     * but sub, aud and jti, arriving in the same second.  A pair is linked
     * when exactly one B event qualifies - then it is certainly the person's.
     */
    int singled_out = 0, first_is_0 = 0, kinds_seen = 0;
    for (size_t a = 0; a < n_apps; a++) {
        for (size_t i = 0; i < n_sets[a]; i++)
            for (size_t b = 0; b < n_apps; b++) {
                if (party_of(b) == party_of(a))
                    continue;
                int candidates = 0;
                for (size_t j = 0; j < n_sets[b]; j++)
                    candidates += strcmp(sets[a][i].rest, sets[b][j].rest) == 0 &&
                                  sets[a][i].arrival_s == sets[b][j].arrival_s;
                singled_out += candidates == 1;
            }
        /* order: is the first suspension the same citizen's at every app? */
        for (size_t i = 0; i < n_sets[a]; i++)
            if (strstr(sets[a][i].kind, "identity_suspended")) {
                first_is_0 += person_of(a, sets[a][i].sub) == 0;
                kinds_seen++;
                break;
            }
    }
    ck_assert_msg(singled_out == 0, "%d event pairings single a citizen out", singled_out);
    ck_assert_int_eq(kinds_seen, (int)n_apps);
    /* by chance every app alike: 2 in 2^81 */
    ck_assert_msg(first_is_0 > 0 && first_is_0 < (int)n_apps,
                  "the order of events is the same at every app (%d of %zu put citizen 0 first)",
                  first_is_0, n_apps);
    for (size_t a = 0; a < n_apps; a++) {
        for (size_t i = 0; i < n_sets[a]; i++)
            json_decref(sets[a][i].claims);
        free(cursor[a]);
    }

    /*
     * 4. refusals: citizen 0 is suspended, citizen 1 now revoked, citizen 2's
     * phone revoked; what their logins return to the apps must be one status
     * and one message whatever the reason (the reason is the citizen's, on the
     * wallet's own API).
     */
    pt_set_identity(&S, w[1], "revoked");
    Veil__Gateway__RevokeDevicePayload rd = VEIL__GATEWAY__REVOKE_DEVICE_PAYLOAD__INIT;
    Veil__Empty *gone;
    veil_status rst;
    ck_assert_int_eq(e2e_citizen(&S, w[2], "RevokeDevice", &rd.base, &gone, &rst), VEIL_OK);
    e2e_free(gone);
    char first[256] = "";
    veil_err first_err = VEIL_OK;
    int different = 0;
    for (int p = 0; p < 3; p++)
        for (size_t a = 0; a < n_apps; a++) {
            Veil__Gateway__CompleteLoginResponse *r;
            veil_status st;
            veil_err err = e2e_login(&S, apps[a].id, w[p], NULL, 0, &r, &st);
            ck_assert_int_ne(err, VEIL_OK);
            if (!first[0]) {
                snprintf(first, sizeof first, "%s", st.message);
                first_err = err;
            }
            if (err != first_err || strcmp(first, st.message) != 0) {
                if (different++ < 3)
                    fprintf(stderr, "refusal of citizen %d at %s: %s %s\n", p, apps[a].id,
                            veil_err_name(err), st.message);
            }
        }
    ck_assert_msg(different == 0,
                  "refusals tell reasons apart: \"%s\" and %d others (issue 12 item 7)", first,
                  different);
    for (int p = 0; p < PEOPLE; p++) {
        for (size_t a = 0; a < n_apps; a++)
            free(sub_of[p][a]);
        vw_wallet_free(w[p]);
    }
    for (size_t i = 0; i < n_pool; i++)
        free(pool[i].v);
    free(pool);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_apps_pooling_everything_link_nobody, NULL};
    const h_case cases[] = {{"stack", 600, stack_up, stack_down, NULL, NULL, tests}, {NULL}};
    return h_run_suite(h_suite("linkability", cases));
}
