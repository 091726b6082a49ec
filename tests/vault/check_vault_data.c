/*
 * check_vault_data.c - what the vault does with a citizen's data, over real
 * gRPC and PostgreSQL: attribute release (exact set, values, age predicates
 * on and around today's birthday in China Standard Time), the access log
 * and its tamper detection (edited, reordered, deleted, moved and truncated
 * rows), erasure (nothing left, a new identity afterwards), master-key
 * rotation while serving (reads before, during and after, old key removed),
 * bulk loading of identities that log in like enrolled ones, and the access
 * log's partitioning migration on a populated log, then retention.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>

#include "vault.h"
#include "veil/migrate.h"
#include "vtest.h"

extern const veil_migration vault_migrations[];
extern const size_t vault_migrations_count;

static void person(vt *t, vt_device *d, const char *rid, const char *id, const char *name,
                   const char *app)
{
    veil_status st;
    vt_new_device(d);
    ck_assert_int_eq(vt_enrol(t, rid, id, name, d, NULL, &st), VEIL_OK);
    ck_assert_int_eq(vt_login(t, d, app, &st), VEIL_OK);
}

static const Veil__Attribute *find(const Veil__Vault__ReleaseAttributesResponse *r,
                                   const char *name)
{
    for (size_t i = 0; i < r->n_attributes; i++)
        if (strcmp(r->attributes[i]->name, name) == 0)
            return r->attributes[i];
    return NULL;
}

static int flag_of(vt *t, const unsigned char *subject, const char *name)
{
    const char *names[] = {name};
    Veil__Vault__ReleaseAttributesResponse *r;
    veil_status st;
    ck_assert_int_eq(vt_release(t, subject, "gov.socialsecurity", names, 1, "age check", &r, &st),
                     VEIL_OK);
    ck_assert_uint_eq(r->n_attributes, 1);
    ck_assert_int_eq(r->attributes[0]->value_case, VEIL__ATTRIBUTE__VALUE_FLAG);
    int v = r->attributes[0]->flag;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return v;
}

START_TEST(test_release_attributes)
{
    vt t;
    vt_start(&t, NULL);
    char id[19], id2[19];
    vt_id_number(id, "440305", 1990, 3, 7, 1);   /* Guangdong, male */
    vt_id_number(id2, "540102", 1950, 10, 1, 2); /* Xizang, female */
    vt_device d, d2;
    person(&t, &d, "r1", id, "王小明", "gov.tax");
    person(&t, &d2, "r2", id2, "卓玛", "gov.tax");
    veil_status st;
    Veil__Vault__ReleaseAttributesResponse *r;

    const char *all[] = {"province", "full_name",  "age_over_18", "real_name_verified",
                         "gender",   "birth_date", "age_over_60", "age_over_14"};
    ck_assert_int_eq(vt_release(&t, d.subject, "gov.tax", all, 8, "tax filing", &r, &st), VEIL_OK);
    ck_assert_uint_eq(r->n_attributes, 8);
    for (size_t i = 0; i < 8; i++)
        ck_assert_str_eq(r->attributes[i]->name, all[i]); /* exactly these, in this order */
    const Veil__Attribute *a = find(r, "province");
    ck_assert_int_eq(a->value_case, VEIL__ATTRIBUTE__VALUE_PROVINCE);
    ck_assert_str_eq(a->province->code, "44");
    ck_assert_str_eq(a->province->name, "广东省");
    ck_assert_str_eq(a->province->name_en, "Guangdong");
    ck_assert_str_eq(find(r, "full_name")->text, "王小明");
    ck_assert_str_eq(find(r, "gender")->text, "male");
    ck_assert_str_eq(find(r, "birth_date")->text, "1990-03-07");
    ck_assert(find(r, "age_over_18")->flag);
    ck_assert(find(r, "age_over_14")->flag);
    ck_assert(!find(r, "age_over_60")->flag);
    ck_assert(find(r, "real_name_verified")->flag);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    const char *some[] = {"gender", "province", "age_over_60"};
    ck_assert_int_eq(vt_release(&t, d2.subject, "gov.tax", some, 3, "pension", &r, &st), VEIL_OK);
    ck_assert_uint_eq(r->n_attributes, 3);
    ck_assert_str_eq(find(r, "gender")->text, "female");
    ck_assert_str_eq(find(r, "province")->province->code, "54");
    ck_assert_str_eq(find(r, "province")->province->name, "西藏自治区");
    ck_assert(find(r, "age_over_60")->flag);
    ck_assert_ptr_null(find(r, "full_name"));
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* bad requests: refused before the capability is looked at */
#define NO_CAP(subject, app, names, n, purpose, r, st)                                             \
    vt_release_raw(&t, subject, app, names, n, purpose, NULL, 0, NULL, r, st)
    const char *unknown[] = {"gender", "shoe_size"};
    ck_assert_int_eq(NO_CAP(d.subject, "gov.tax", unknown, 2, "x", &r, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "attributes[1] is not a known attribute");
    const char *raw_id[] = {"id_number"};
    ck_assert_int_eq(NO_CAP(d.subject, "gov.tax", raw_id, 1, "x", &r, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "attributes[0] is not a known attribute");
    const char *twice[] = {"gender", "gender"};
    ck_assert_int_eq(NO_CAP(d.subject, "gov.tax", twice, 2, "x", &r, &st), VEIL_ERR_INVALID);
    ck_assert_int_eq(NO_CAP(d.subject, "gov.tax", all, 0, "x", &r, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "attributes must name 1 to 32 attributes");
    ck_assert_int_eq(NO_CAP(d.subject, "gov.tax", all, 1, "", &r, &st), VEIL_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(st.message, "purpose"));
    ck_assert_int_eq(NO_CAP(d.subject, "GOV TAX", all, 1, "x", &r, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "app_id is not a valid app id");
#undef NO_CAP
    unsigned char nobody[32];
    randombytes_buf(nobody, 32);
    ck_assert_int_eq(vt_release(&t, nobody, "gov.tax", all, 1, "x", &r, &st), VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message,
                     "capability is required: VerifyTicket of this subject's ticket mints it");

    /* each release (and only a successful one) is in the log, with names and purpose */
    Veil__Vault__ListAccessLogResponse *log;
    ck_assert_int_eq(vt_subject_call(&t, "ListAccessLog", d.subject, 32, &log, &st), VEIL_OK);
    ck_assert(log->chain_valid);
    ck_assert_uint_eq(log->n_entries, 3);
    ck_assert_str_eq(log->entries[0]->action, "device_added");
    ck_assert_str_eq(log->entries[1]->action, "ticket_verified");
    ck_assert_str_eq(log->entries[1]->app_id, "gov.tax");
    ck_assert_uint_eq(log->entries[1]->n_attributes, 0);
    Veil__Vault__AccessLogEntry *e = log->entries[2];
    ck_assert_int_eq(e->seq, 3);
    ck_assert_str_eq(e->action, "attributes_released");
    ck_assert_str_eq(e->app_id, "gov.tax");
    ck_assert_str_eq(e->purpose, "tax filing");
    ck_assert_uint_eq(e->n_attributes, 8);
    for (size_t i = 0; i < 8; i++)
        ck_assert_str_eq(e->attributes[i], all[i]);
    ck_assert(llabs((long long)(e->at_ms - veil_now_ms())) < 60000);
    ck_assert(e->at_ms >= log->entries[0]->at_ms);
    protobuf_c_message_free_unpacked(&log->base, NULL);
    const char *secrets[] = {id, id2, "王小明", "卓玛", "1990-03-07"};
    for (int i = 0; i < 5; i++)
        ck_assert(!h_log_contains(&t.proc, secrets[i]));
    vt_stop(&t);
}
END_TEST

/* The date `years` before today (CST), or the day after it; 29 February falls back as the law does.
 */
static void years_ago(int years, int day_after, int *y, int *m, int *d)
{
    int ty, tm_, td;
    vt_today_cst(&ty, &tm_, &td);
    struct tm tm = {.tm_year = ty - years - 1900, .tm_mon = tm_ - 1, .tm_mday = td, .tm_hour = 12};
    if (tm_ == 2 && td == 29 &&
        !((ty - years) % 4 == 0 && ((ty - years) % 100 != 0 || (ty - years) % 400 == 0)))
        tm.tm_mday = day_after ? 29 : 28; /* timegm turns 29 Feb of a common year into 1 March */
    else if (day_after)
        tm.tm_mday++;
    time_t when = timegm(&tm);
    gmtime_r(&when, &tm);
    *y = tm.tm_year + 1900;
    *m = tm.tm_mon + 1;
    *d = tm.tm_mday;
}

START_TEST(test_age_boundaries)
{
    vt t;
    vt_start(&t, NULL);
    const int ages[] = {14, 18, 60};
    const char *flags[] = {"age_over_14", "age_over_18", "age_over_60"};
    for (int i = 0; i < 3; i++) {
        for (int after = 0; after < 2; after++) {
            int y, m, d;
            years_ago(ages[i], after, &y, &m, &d);
            char id[19], rid[32];
            vt_id_number(id, "210102", y, m, d, 10 + i * 2 + after);
            snprintf(rid, sizeof rid, "age-%d-%d", ages[i], after);
            vt_device dev;
            person(&t, &dev, rid, id, "边界", "game.tianfeng");
            /* born N years ago today: N today; born the day after: N only tomorrow */
            ck_assert_msg(flag_of(&t, dev.subject, flags[i]) == !after, "%s for %04d-%02d-%02d",
                          flags[i], y, m, d);
            for (int j = 0; j < 3; j++)
                if (j != i)
                    ck_assert_int_eq(flag_of(&t, dev.subject, flags[j]), ages[j] < ages[i]);
        }
    }
    /* someone born today is enrolled and is 0 */
    int y, m, d;
    years_ago(0, 0, &y, &m, &d);
    char id[19];
    vt_id_number(id, "210102", y, m, d, 99);
    vt_device baby;
    person(&t, &baby, "baby", id, "新生", "gov.socialsecurity");
    ck_assert_int_eq(flag_of(&t, baby.subject, "age_over_14"), 0);
    vt_stop(&t);
}
END_TEST

static void access_log(vt *t, const unsigned char *subject, int *valid, int64_t *first_bad,
                       size_t *n)
{
    Veil__Vault__ListAccessLogResponse *log;
    veil_status st;
    ck_assert_int_eq(vt_subject_call(t, "ListAccessLog", subject, 32, &log, &st), VEIL_OK);
    *valid = log->chain_valid;
    *first_bad = log->first_bad_seq;
    *n = log->n_entries;
    protobuf_c_message_free_unpacked(&log->base, NULL);
}

static void expect_log(vt *t, const unsigned char *subject, int valid, int64_t first_bad, size_t n)
{
    int v;
    int64_t fb;
    size_t count;
    access_log(t, subject, &v, &fb, &count);
    ck_assert_int_eq(v, valid);
    ck_assert_int_eq(fb, first_bad);
    ck_assert_uint_eq(count, n);
}

static void sql_subject(vt *t, const char *sql, const unsigned char *subject)
{
    PGresult *r = vt_sql_bytes(t, sql, subject, 32);
    PQclear(r);
}

START_TEST(test_access_log_tampering)
{
    vt t;
    vt_start(&t, NULL);
    char id[19], id2[19];
    vt_id_number(id, "350102", 1980, 5, 20, 31);
    vt_id_number(id2, "350102", 1981, 6, 21, 32);
    vt_device d, other;
    person(&t, &d, "r1", id, "林一", "chat.wechat");
    person(&t, &other, "r2", id2, "林二", "chat.wechat");
    veil_status st;
    ck_assert_int_eq(vt_login(&t, &d, "shop.taobao", &st), VEIL_OK);
    const char *names[] = {"age_over_18"};
    Veil__Vault__ReleaseAttributesResponse *r;
    ck_assert_int_eq(vt_release(&t, d.subject, "shop.taobao", names, 1, "age gate", &r, &st),
                     VEIL_OK);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ck_assert_int_eq(vt_login(&t, &d, "game.tianfeng", &st), VEIL_OK);
    /* device_added, login, release, login */
    expect_log(&t, d.subject, 1, 0, 5);

    /* keep a copy to restore after each tampering */
    PQclear(vt_sql(&t, "CREATE TABLE saved (LIKE access_log)"));
    sql_subject(&t, "INSERT INTO saved SELECT * FROM access_log WHERE subject_ref = $1", d.subject);

    /* an edited entry (ciphertext byte) */
    sql_subject(&t,
                "UPDATE access_log SET entry = set_byte(entry, 30, get_byte(entry, 30) # 1) "
                "WHERE subject_ref = $1 AND seq = 2",
                d.subject);
    expect_log(&t, d.subject, 0, 2, 5);
    Veil__Vault__ListAccessLogResponse *log;
    ck_assert_int_eq(vt_subject_call(&t, "ListAccessLog", d.subject, 32, &log, &st), VEIL_OK);
    ck_assert_str_eq(log->entries[1]->action, "unreadable");
    ck_assert_str_eq(log->entries[3]->action, "attributes_released");
    protobuf_c_message_free_unpacked(&log->base, NULL);
    sql_subject(&t,
                "UPDATE access_log l SET entry = s.entry FROM saved s "
                "WHERE l.subject_ref = $1 AND l.seq = s.seq",
                d.subject);
    expect_log(&t, d.subject, 1, 0, 5);

    /* an edited time */
    sql_subject(&t,
                "UPDATE access_log SET at_ms = at_ms - 3600000 WHERE subject_ref = $1 AND seq = 3",
                d.subject);
    expect_log(&t, d.subject, 0, 3, 5);
    sql_subject(&t,
                "UPDATE access_log l SET at_ms = s.at_ms FROM saved s "
                "WHERE l.subject_ref = $1 AND l.seq = s.seq",
                d.subject);
    expect_log(&t, d.subject, 1, 0, 5);

    /* two rows swapped (entries and MACs together: still out of place) */
    sql_subject(&t,
                "UPDATE access_log l SET entry = s.entry, mac = s.mac FROM saved s "
                "WHERE l.subject_ref = $1 AND l.subject_ref = s.subject_ref "
                "AND ((l.seq = 1 AND s.seq = 2) OR (l.seq = 2 AND s.seq = 1))",
                d.subject);
    expect_log(&t, d.subject, 0, 1, 5);
    sql_subject(&t,
                "UPDATE access_log l SET entry = s.entry, mac = s.mac FROM saved s "
                "WHERE l.subject_ref = $1 AND l.seq = s.seq",
                d.subject);
    expect_log(&t, d.subject, 1, 0, 5);

    /* a deleted middle row */
    sql_subject(&t, "DELETE FROM access_log WHERE subject_ref = $1 AND seq = 2", d.subject);
    expect_log(&t, d.subject, 0, 2, 4);
    sql_subject(&t, "INSERT INTO access_log SELECT * FROM saved WHERE seq = 2 AND subject_ref = $1",
                d.subject);
    expect_log(&t, d.subject, 1, 0, 5);

    /* a deleted last row: the stored head notices */
    sql_subject(&t, "DELETE FROM access_log WHERE subject_ref = $1 AND seq = 5", d.subject);
    expect_log(&t, d.subject, 0, 5, 4);
    sql_subject(&t, "INSERT INTO access_log SELECT * FROM saved WHERE seq = 5 AND subject_ref = $1",
                d.subject);
    expect_log(&t, d.subject, 1, 0, 5);

    /* another citizen's genuine row moved into this log as entry 6 */
    sql_subject(&t,
                "INSERT INTO access_log (subject_ref, seq, at_ms, entry, mac) "
                "SELECT $1, 6, at_ms, entry, mac FROM access_log "
                "WHERE subject_ref <> $1 AND seq = 1",
                d.subject);
    sql_subject(&t,
                "UPDATE access_heads SET seq = 6, head = (SELECT mac FROM access_log "
                "WHERE subject_ref = $1 AND seq = 6) WHERE subject_ref = $1",
                d.subject);
    expect_log(&t, d.subject, 0, 6, 6);
    /* the other citizen's log is untouched by all this */
    expect_log(&t, other.subject, 1, 0, 2);
    vt_stop(&t);
}
END_TEST

START_TEST(test_erase)
{
    vt t;
    vt_start(&t, NULL);
    char id[19], id2[19];
    vt_id_number(id, "530102", 1993, 7, 15, 51);
    vt_id_number(id2, "530102", 1994, 8, 16, 53);
    vt_device a, b, keep;
    person(&t, &a, "ra", id, "段一", "chat.wechat");
    vt_new_device(&b);
    veil_status st;
    ck_assert_int_eq(vt_enrol(&t, "rb", id, "段一", &b, NULL, &st), VEIL_OK);
    person(&t, &keep, "rk", id2, "段二", "chat.wechat");
    const char *names[] = {"full_name"};
    Veil__Vault__ReleaseAttributesResponse *r;
    ck_assert_int_eq(vt_release(&t, a.subject, "gov.tax", names, 1, "tax", &r, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* a capability minted before the erasure finds nobody after it */
    ck_assert_int_eq(vt_login(&t, &a, "gov.tax", &st), VEIL_OK);
    Veil__Empty *empty;
    ck_assert_int_eq(vt_subject_call(&t, "Erase", a.subject, 32, &empty, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&empty->base, NULL);

    /* nothing about the person is left; the other citizen is untouched */
    const char *tables[] = {"citizens", "devices", "access_heads", "access_log", "enrol_requests"};
    char sql[256];
    for (int i = 0; i < 5; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE subject_ref = $1", tables[i]);
        PGresult *res = vt_sql_bytes(&t, sql, a.subject, 32);
        ck_assert_msg(atoi(PQgetvalue(res, 0, 0)) == 0, "%s still holds rows", tables[i]);
        PQclear(res);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE subject_ref = $1", tables[i]);
        res = vt_sql_bytes(&t, sql, keep.subject, 32);
        ck_assert_msg(atoi(PQgetvalue(res, 0, 0)) > 0, "%s lost the other citizen", tables[i]);
        PQclear(res);
    }
    /* no tombstone either: erasure keeps no subject reference (issue 13 item 4) */
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM information_schema.tables"
                                    " WHERE table_name = 'erased_subjects'"),
                     0);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM authority_holds"), 0);

    /* every later call about the subject finds nothing, and a ticket says nothing more */
    ck_assert_int_eq(vt_login(&t, &a, "chat.wechat", &st), VEIL_ERR_UNAUTHENTICATED);
    ck_assert_str_eq(st.message, "login ticket could not be verified");
    ck_assert_int_eq(vt_login(&t, &b, "chat.wechat", &st), VEIL_ERR_UNAUTHENTICATED);
    ck_assert_int_eq(vt_release(&t, a.subject, "gov.tax", names, 1, "tax", &r, &st),
                     VEIL_ERR_NOT_FOUND);
    void *resp;
    ck_assert_int_eq(vt_subject_call(&t, "ListDevices", a.subject, 32, &resp, &st),
                     VEIL_ERR_NOT_FOUND);
    ck_assert_int_eq(vt_subject_call(&t, "ListAccessLog", a.subject, 32, &resp, &st),
                     VEIL_ERR_NOT_FOUND);
    Veil__Vault__LookupWebNumberRequest wn = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
    wn.admin = "admin/ops";
    wn.web_number = a.web_number;
    ck_assert_int_eq(veil_channel_call(t.ch, "LookupWebNumber", &wn.base, NULL, 5000, &resp, &st),
                     VEIL_ERR_NOT_FOUND);
    /*
     * Erasing again is fine, and a subject that never existed answers the
     * same: telling them apart would need a record of the erased one.
     */
    ck_assert_int_eq(vt_subject_call(&t, "Erase", a.subject, 32, &empty, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&empty->base, NULL);
    unsigned char never[32];
    randombytes_buf(never, 32);
    ck_assert_int_eq(vt_subject_call(&t, "Erase", never, 32, &empty, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&empty->base, NULL);
    ck_assert_int_eq(vt_login(&t, &keep, "chat.wechat", &st), VEIL_OK);

    /* the same person enrolling later is a new identity, with a new device key as well as an old
     * one */
    vt_device again;
    vt_new_device(&again);
    int fresh = -1;
    ck_assert_int_eq(vt_enrol(&t, "ra", id, "段一", &again, &fresh, &st), VEIL_OK);
    ck_assert_int_eq(fresh, 1);
    ck_assert_str_ne(again.web_number, a.web_number);
    ck_assert_int_eq(vt_login(&t, &again, "chat.wechat", &st), VEIL_OK);
    ck_assert_mem_ne(again.subject, a.subject, 32);
    vt_device old_key = a;
    ck_assert_int_eq(vt_enrol(&t, "ra-old-key", id, "段一", &old_key, &fresh, &st), VEIL_OK);
    ck_assert_int_eq(fresh, 0);
    expect_log(&t, again.subject, 1, 0, 3);
    vt_stop(&t);
}
END_TEST

struct reader {
    vt *t;
    vt_device *people;
    int n;
    atomic_int stop;
    int reads, failures;
};

static void *keep_reading(void *arg)
{
    struct reader *rd = arg;
    const char *names[] = {"birth_date"};
    while (!atomic_load(&rd->stop)) {
        for (int i = 0; i < rd->n; i++) {
            Veil__Vault__ReleaseAttributesResponse *r;
            veil_status st;
            if (vt_release(rd->t, rd->people[i].subject, "gov.tax", names, 1, "rotation", &r,
                           &st) == VEIL_OK) {
                rd->reads++;
                protobuf_c_message_free_unpacked(&r->base, NULL);
            } else {
                rd->failures++;
            }
        }
    }
    veil_client_thread_done();
    return NULL;
}

static void birth_dates_are(vt *t, vt_device *people, int n)
{
    for (int i = 0; i < n; i++) {
        const char *names[] = {"birth_date"};
        Veil__Vault__ReleaseAttributesResponse *r;
        veil_status st;
        char want[32];
        ck_assert_int_eq(vt_release(t, people[i].subject, "gov.tax", names, 1, "check", &r, &st),
                         VEIL_OK);
        snprintf(want, sizeof want, "%04d-01-%02d", 1960 + i, i + 1);
        ck_assert_str_eq(r->attributes[0]->text, want);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
}

/* An authority's hold: kept through an erasure, keyed by the blind index, refusing re-enrolment. */
START_TEST(test_authority_hold)
{
    vt t;
    vt_start(&t, NULL);
    char id[19];
    vt_id_number(id, "530102", 1990, 2, 3, 61);
    vt_device a;
    person(&t, &a, "ha", id, "段三", "chat.wechat");
    Veil__Vault__HoldIdentityRequest h = VEIL__VAULT__HOLD_IDENTITY_REQUEST__INIT;
    Veil__Empty *empty;
    veil_status st;
    h.subject_ref.data = a.subject;
    h.subject_ref.len = 32;
    h.state = "active";
    h.legal_basis = "";
    ck_assert_int_eq(veil_channel_call(t.ch, "HoldIdentity", &h.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "state must be suspended or revoked");
    h.state = "revoked";
    h.legal_basis = "ruling\nwith a control character";
    ck_assert_int_eq(veil_channel_call(t.ch, "HoldIdentity", &h.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_INVALID);
    h.legal_basis = "court order 7";
    ck_assert_int_eq(veil_channel_call(t.ch, "HoldIdentity", &h.base, NULL, 5000, &empty, &st),
                     VEIL_OK);
    protobuf_c_message_free_unpacked(&empty->base, NULL);
    ck_assert_int_eq(vt_subject_call(&t, "Erase", a.subject, 32, &empty, &st), VEIL_OK);
    protobuf_c_message_free_unpacked(&empty->base, NULL);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM authority_holds"
                                    " WHERE state = 'revoked' AND legal_basis = 'court order 7'"),
                     1);
    /* a hold on a subject that does not exist */
    ck_assert_int_eq(veil_channel_call(t.ch, "HoldIdentity", &h.base, NULL, 5000, &empty, &st),
                     VEIL_ERR_NOT_FOUND);
    vt_device again;
    vt_new_device(&again);
    ck_assert_int_eq(vt_enrol(&t, "hb", id, "段三", &again, NULL, &st), VEIL_ERR_PRECONDITION);
    ck_assert_str_eq(st.message,
                     "this identity is revoked by the authority: the citizen must contact the "
                     "authority");
    vt_stop(&t);
}
END_TEST

/* Issue 13: a new master key file at a restart changes nothing until the rotation command. */
START_TEST(test_master_key_version_explicit)
{
    vt t;
    vt_start(&t, NULL);
    vt_device a, b, c;
    char id[19];
    h_keyfile(t.keys, "master", 2);
    vt_restart(&t);
    vt_id_number(id, "410102", 1970, 2, 2, 120);
    person(&t, &a, "a", id, "钟某", "gov.tax");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens WHERE key_version = 1"), 1);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT version FROM key_state WHERE kind = 'master'"), 1);
    char out[8192];
    int rc = vt_command(&t, "rotate-master-key --to 2", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "(previous 1)"), "rotate-master-key: %s", out);
    vt_restart(&t);
    vt_id_number(id, "410102", 1971, 3, 3, 121);
    person(&t, &b, "b", id, "钟某", "gov.tax");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens WHERE key_version = 2"), 2);
    /* a master-3 file alone, again, changes nothing */
    h_keyfile(t.keys, "master", 3);
    vt_restart(&t);
    vt_id_number(id, "410102", 1972, 4, 4, 122);
    person(&t, &c, "c", id, "钟某", "gov.tax");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens WHERE key_version = 2"), 3);
    vt_stop(&t);
}
END_TEST

START_TEST(test_master_key_rotation)
{
    vt t;
    vt_start(&t, NULL);
    enum { N = 7 };
    vt_device people[N];
    for (int i = 0; i < N; i++) {
        char id[19], rid[16];
        vt_id_number(id, "410102", 1960 + i, 1, i + 1, 100 + i);
        snprintf(rid, sizeof rid, "p%d", i);
        person(&t, &people[i], rid, id, "钟某", "gov.tax");
    }
    birth_dates_are(&t, people, N);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens WHERE key_version = 1"), N);
    PGresult *before = vt_sql(&t, "SELECT wrapped_key FROM citizens ORDER BY subject_ref");

    /* a new master key; the rotation runs while the service keeps answering */
    h_keyfile(t.keys, "master", 2);
    struct reader rd = {.t = &t, .people = people, .n = N};
    pthread_t th;
    pthread_create(&th, NULL, keep_reading, &rd);
    char out[8192];
    int rc = vt_command(&t, "rotate-master-key --to 2 --batch 3", out, sizeof out);
    atomic_store(&rd.stop, 1);
    pthread_join(th, NULL);
    ck_assert_msg(rc == 0, "rotate-master-key: %s", out);
    ck_assert_msg(strstr(out, "7 re-wrapped"), "%s", out);
    ck_assert_int_eq(rd.failures, 0);
    ck_assert_int_gt(rd.reads, 0);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens WHERE key_version = 2"), N);
    PGresult *after = vt_sql(&t, "SELECT wrapped_key FROM citizens ORDER BY subject_ref");
    for (int i = 0; i < N; i++)
        ck_assert_str_ne(PQgetvalue(before, i, 0), PQgetvalue(after, i, 0));
    PQclear(before);
    PQclear(after);
    /* the running service reads through the new version (loaded on demand) */
    birth_dates_are(&t, people, N);

    /* once rotated, the old key can go: a restart without it still reads everything */
    char path[1200];
    snprintf(path, sizeof path, "%s/master-1.key", t.keys);
    ck_assert_int_eq(unlink(path), 0);
    vt_restart(&t);
    birth_dates_are(&t, people, N);
    vt_device late;
    char id[19];
    vt_id_number(id, "410102", 1999, 9, 9, 199);
    person(&t, &late, "late", id, "钟某", "gov.tax");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens WHERE key_version = 2"), N + 1);
    /* the access logs written before the rotation still open and verify */
    for (int i = 0; i < N; i++) {
        int valid;
        int64_t first_bad;
        size_t n;
        access_log(&t, people[i].subject, &valid, &first_bad, &n);
        ck_assert(valid);
        ck_assert_uint_ge(n, 4);
    }

    /* nothing left to do; unknown versions and bad arguments are refused */
    ck_assert_int_eq(vt_command(&t, "rotate-master-key --to 2", out, sizeof out), 0);
    ck_assert_msg(strstr(out, "0 re-wrapped"), "%s", out);
    /* a row naming a master key that is not there is reported, and the command fails */
    PQclear(vt_sql_bytes(&t, "UPDATE citizens SET key_version = 9 WHERE subject_ref = $1",
                         people[3].subject, 32));
    ck_assert_int_eq(vt_command(&t, "rotate-master-key --to 2", out, sizeof out), 1);
    ck_assert_msg(strstr(out, "1 could not be unwrapped"), "%s", out);
    ck_assert_msg(strstr(out, "master key version 9: 1 data keys"), "%s", out);
    PQclear(vt_sql_bytes(&t, "UPDATE citizens SET key_version = 2 WHERE subject_ref = $1",
                         people[3].subject, 32));
    ck_assert_int_eq(vt_command(&t, "rotate-master-key --to 5", out, sizeof out), 2);
    ck_assert_msg(strstr(out, "master-5.key"), "%s", out);
    ck_assert_int_eq(vt_command(&t, "rotate-master-key --too 2", out, sizeof out), 2);
    ck_assert_int_eq(vt_command(&t, "rotate-master-key --to 2 --batch 0", out, sizeof out), 2);
    vt_stop(&t);
}
END_TEST

START_TEST(test_bulk_enrol)
{
    vt t;
    vt_start(&t, NULL);
    char path[1024], args[1200], out[8192];
    snprintf(path, sizeof path, "%s/bulk-%d.txt", h_env("VEIL_TEST_DIR"), (int)getpid());
    snprintf(args, sizeof args, "bulk-enrol --count 40 --batch 15 --out '%s'", path);
    ck_assert_msg(vt_command(&t, args, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(strstr(out, "40 identities enrolled"), "%s", out);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 40);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM devices"), 40);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_heads"), 40);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(DISTINCT wrapped_key) FROM citizens"), 40);

    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int n = 0;
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_int_eq(line[0], '#');
    while (fgets(line, sizeof line, f)) {
        char device[64], seed64[128], wn[64];
        ck_assert_int_eq(sscanf(line, "%63s %127s %63s", device, seed64, wn), 3);
        n++;
        if (n % 9 != 1)
            continue;
        /* a bulk identity logs in, releases attributes and is found by web number */
        vt_device d;
        memset(&d, 0, sizeof d);
        unsigned char seed[32];
        size_t len;
        ck_assert_int_eq(veil_b64_decode(seed, sizeof seed, seed64, strlen(seed64), &len), 0);
        ck_assert_uint_eq(len, 32);
        crypto_sign_seed_keypair(d.pk, d.sk, seed);
        snprintf(d.device_id, sizeof d.device_id, "%.32s", device);
        ck_assert_int_eq(veil_device_id_parse(device, d.id), 0);
        ck_assert(veil_web_number_valid(wn));
        veil_status st;
        ck_assert_int_eq(vt_login(&t, &d, "shop.taobao", &st), VEIL_OK);
        const char *names[] = {"birth_date", "gender", "province", "real_name_verified",
                               "full_name"};
        Veil__Vault__ReleaseAttributesResponse *r;
        ck_assert_int_eq(vt_release(&t, d.subject, "shop.taobao", names, 5, "bench", &r, &st),
                         VEIL_OK);
        int y, m, dd;
        ck_assert_int_eq(sscanf(r->attributes[0]->text, "%d-%d-%d", &y, &m, &dd), 3);
        ck_assert(y >= 1940 && y <= 2004);
        ck_assert(strcmp(r->attributes[1]->text, "male") == 0 ||
                  strcmp(r->attributes[1]->text, "female") == 0);
        ck_assert_uint_eq(strlen(r->attributes[2]->province->code), 2);
        ck_assert(r->attributes[3]->flag);
        ck_assert(strlen(r->attributes[4]->text) >= 6); /* two or three CJK characters */
        protobuf_c_message_free_unpacked(&r->base, NULL);
        Veil__Vault__LookupWebNumberRequest req = VEIL__VAULT__LOOKUP_WEB_NUMBER_REQUEST__INIT;
        req.admin = "admin/ops";
        Veil__Vault__LookupWebNumberResponse *lr;
        req.web_number = wn;
        ck_assert_int_eq(
            veil_channel_call(t.ch, "LookupWebNumber", &req.base, NULL, 5000, &lr, &st), VEIL_OK);
        ck_assert_mem_eq(lr->subject_ref.data, d.subject, 32);
        protobuf_c_message_free_unpacked(&lr->base, NULL);
    }
    fclose(f);
    ck_assert_int_eq(n, 40);
    /* loading the same people again is refused (blind index); the next ones load */
    ck_assert_int_ne(vt_command(&t, args, out, sizeof out), 0);
    snprintf(args, sizeof args, "bulk-enrol --count 20 --first 40 --out '%s'", path);
    ck_assert_msg(vt_command(&t, args, out, sizeof out) == 0, "%s", out);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM citizens"), 60);
    remove(path);
    vt_stop(&t);
}
END_TEST

/*
 * Issue 12 item 4: the vault releases only against a capability that
 * VerifyTicket minted for that subject, app and challenge, once, within the
 * app's registered scope as the vault knows it.  A caller holding the
 * gateway's certificate but no verified ticket gets nothing.
 */
START_TEST(test_release_capability)
{
    vt t;
    vt_device d, other;
    veil_status st;
    Veil__Vault__ReleaseAttributesResponse *r;
    const char *bd[] = {"birth_date"}, *age[] = {"age_over_18"};
    char id[19], id2[19];
    vt_start(&t, NULL);
    vt_id_number(id, "110105", 1980, 5, 5, 123);
    vt_id_number(id2, "110105", 1981, 6, 6, 124);
    person(&t, &d, "cap-1", id, "王一", "gov.tax");
    person(&t, &other, "cap-2", id2, "王二", "shop.taobao");
    ck_assert_int_eq(vt_set_scope(&t, "gov.tax", bd, 1, &st), VEIL_OK);
    ck_assert_int_eq(vt_set_scope(&t, "shop.taobao", age, 1, &st), VEIL_OK);
    struct vt_cap cap = t.caps[0], cap_other = t.caps[1];
    ck_assert_mem_eq(cap.subject, d.subject, 32);

    /* the gateway's certificate alone: any subject, any app, no capability */
    ck_assert_int_eq(vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "x", NULL, 0, NULL, &r, &st),
                     VEIL_ERR_DENIED);
    ck_assert_int_eq(st.code, GRPC_STATUS_PERMISSION_DENIED);
    ck_assert_str_eq(st.message,
                     "capability is required: VerifyTicket of this subject's ticket mints it");
    /* a capability of another person, or for another app or challenge, is not this one */
    ck_assert_int_eq(vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "x", cap_other.cap, 57,
                                    cap_other.challenge, &r, &st),
                     VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "capability was not minted for this subject, app and challenge");
    ck_assert_int_eq(vt_release_raw(&t, d.subject, "shop.taobao", age, 1, "x", cap.cap, 57,
                                    cap.challenge, &r, &st),
                     VEIL_ERR_DENIED);
    unsigned char wrong[32];
    randombytes_buf(wrong, sizeof wrong);
    ck_assert_int_eq(
        vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "x", cap.cap, 57, wrong, &r, &st),
        VEIL_ERR_DENIED);
    unsigned char forged[57];
    memcpy(forged, cap.cap, 57);
    forged[8] ^= 1; /* a later expiry */
    ck_assert_int_eq(
        vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "x", forged, 57, cap.challenge, &r, &st),
        VEIL_ERR_DENIED);
    ck_assert_int_eq(
        vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "x", cap.cap, 56, cap.challenge, &r, &st),
        VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "capability must be the 57 bytes VerifyTicket returned");

    /* outside the app's registered scope: refused (and the capability spent) */
    const char *name[] = {"full_name"};
    ck_assert_int_eq(
        vt_release_raw(&t, d.subject, "gov.tax", name, 1, "x", cap.cap, 57, cap.challenge, &r, &st),
        VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "attributes[0] is outside the app's registered scope");
    ck_assert_int_eq(
        vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "x", cap.cap, 57, cap.challenge, &r, &st),
        VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "capability already used");

    /* a fresh login: released once, the second use refused */
    ck_assert_int_eq(vt_login(&t, &d, "gov.tax", &st), VEIL_OK);
    cap = t.caps[2];
    ck_assert_int_eq(
        vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "tax", cap.cap, 57, cap.challenge, &r, &st),
        VEIL_OK);
    ck_assert_str_eq(r->attributes[0]->text, "1980-05-05");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ck_assert_int_eq(
        vt_release_raw(&t, d.subject, "gov.tax", bd, 1, "tax", cap.cap, 57, cap.challenge, &r, &st),
        VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "capability already used");
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM used_capabilities"), 2);

    /* an app the vault has no scope for gets nothing */
    ck_assert_int_eq(vt_login(&t, &d, "news.unknown", &st), VEIL_OK);
    cap = t.caps[3];
    ck_assert_int_eq(vt_release_raw(&t, d.subject, "news.unknown", age, 1, "x", cap.cap, 57,
                                    cap.challenge, &r, &st),
                     VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "app has no registered scope in the vault");

    /* SetAppScopes refuses what is not a scope, and writes nothing */
    const char *unknown[] = {"age_over_18", "shoe_size"}, *twice[] = {"province", "province"};
    ck_assert_int_eq(vt_set_scope(&t, "Bad App", age, 1, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "apps[].app_id is not a valid app id");
    ck_assert_int_eq(vt_set_scope(&t, "news.unknown", unknown, 2, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "apps[].attributes holds an unknown attribute");
    ck_assert_int_eq(vt_set_scope(&t, "news.unknown", twice, 2, &st), VEIL_ERR_INVALID);
    ck_assert_str_eq(st.message, "apps[].attributes repeats an attribute");
    ck_assert_int_eq(
        vt_sql_int(&t, "SELECT count(*) FROM app_scopes WHERE app_id = 'news.unknown'"), 0);
    /* an empty scope is a scope: the app gets nothing */
    ck_assert_int_eq(vt_set_scope(&t, "news.unknown", NULL, 0, &st), VEIL_OK);
    ck_assert_int_eq(vt_login(&t, &d, "news.unknown", &st), VEIL_OK);
    cap = t.caps[4];
    ck_assert_int_eq(vt_release_raw(&t, d.subject, "news.unknown", age, 1, "x", cap.cap, 57,
                                    cap.challenge, &r, &st),
                     VEIL_ERR_DENIED);
    ck_assert_str_eq(st.message, "attributes[0] is outside the app's registered scope");
    vt_stop(&t);
}
END_TEST

/* ---- migration 006 on a populated access log ---- */

/* Runs sql on conn, failing the test unless it succeeds; the result (caller clears). */
static PGresult *must(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
                  "%s: %s", sql, PQerrorMessage(conn));
    return r;
}

/*
 * Copies every row of every table to's schema has (but the migrations' own
 * table) from the database from, column by column as text: to may be at an
 * older schema version than from, as long as its columns exist there.
 */
static void copy_rows(const char *from, const char *to)
{
    PGconn *src = PQconnectdb(from), *dst = PQconnectdb(to);
    ck_assert(PQstatus(src) == CONNECTION_OK && PQstatus(dst) == CONNECTION_OK);
    PQclear(must(dst, "SET session_replication_role = replica")); /* no FK order to follow */
    PGresult *tables = must(dst, "SELECT c.relname, string_agg(quote_ident(a.attname), ',' "
                                 "ORDER BY a.attnum), count(*) FROM pg_class c "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace AND "
                                 "n.nspname = 'public' JOIN pg_attribute a ON a.attrelid = c.oid "
                                 "AND a.attnum > 0 AND NOT a.attisdropped WHERE c.relkind = 'r' "
                                 "AND c.relname <> 'veil_schema_migrations' GROUP BY c.relname");
    for (int t = 0; t < PQntuples(tables); t++) {
        const char *table = PQgetvalue(tables, t, 0), *cols = PQgetvalue(tables, t, 1);
        int n = atoi(PQgetvalue(tables, t, 2));
        char sql[2048];
        snprintf(sql, sizeof sql, "SELECT %s FROM %s", cols, table);
        PGresult *rows = must(src, sql);
        int k = snprintf(sql, sizeof sql, "INSERT INTO %s (%s) VALUES (", table, cols);
        for (int i = 0; i < n; i++)
            k += snprintf(sql + k, sizeof sql - (size_t)k, "%s$%d", i ? "," : "", i + 1);
        snprintf(sql + k, sizeof sql - (size_t)k, ")");
        for (int r = 0; r < PQntuples(rows); r++) {
            const char *values[64];
            ck_assert_int_le(n, 64);
            for (int i = 0; i < n; i++)
                values[i] = PQgetisnull(rows, r, i) ? NULL : PQgetvalue(rows, r, i);
            PGresult *ins = PQexecParams(dst, sql, n, NULL, values, NULL, NULL, 0);
            ck_assert_msg(PQresultStatus(ins) == PGRES_COMMAND_OK, "%s: %s", sql,
                          PQerrorMessage(dst));
            PQclear(ins);
        }
        PQclear(rows);
    }
    PQclear(tables);
    PQfinish(src);
    PQfinish(dst);
}

#define DAY_MS  (86400LL * 1000)
#define STEP_MS (30 * DAY_MS) /* between two of a citizen's entries */

/*
 * Moves every citizen's access-log entries back in time, one every 30 days
 * up to now, and rechains them with the audit key as the vault would have
 * (the time is inside the chain value); the heads follow.  Returns the
 * number of rows.
 */
static int spread_over_months(const char *db, const veil_key *audit, int64_t now_ms)
{
    PGconn *c = PQconnectdb(db);
    ck_assert(PQstatus(c) == CONNECTION_OK);
    PGresult *rows = must(c, "SELECT subject_ref, seq, at_ms, entry, mac, "
                             "max(seq) OVER (PARTITION BY subject_ref) FROM access_log "
                             "ORDER BY subject_ref, seq");
    unsigned char prev[VAULT_HASH_BYTES] = {0}, prev_old[VAULT_HASH_BYTES] = {0}, subject[32],
                  entry[4096], mac[VAULT_HASH_BYTES];
    int n = PQntuples(rows);
    for (int i = 0; i < n; i++) {
        size_t len, sl, ml;
        unsigned char *sub = PQunescapeBytea((const unsigned char *)PQgetvalue(rows, i, 0), &sl);
        unsigned char *ent = PQunescapeBytea((const unsigned char *)PQgetvalue(rows, i, 3), &len);
        unsigned char *old = PQunescapeBytea((const unsigned char *)PQgetvalue(rows, i, 4), &ml);
        ck_assert(sl == 32 && ml == VAULT_HASH_BYTES && len <= sizeof entry);
        memcpy(subject, sub, 32);
        memcpy(entry, ent, len);
        int64_t seq = atoll(PQgetvalue(rows, i, 1)), last = atoll(PQgetvalue(rows, i, 5));
        if (seq == 1)
            memset(prev, 0, sizeof prev), memset(prev_old, 0, sizeof prev_old);
        /* the vault's own chain value first: this recomputation is the vault's */
        vault_chain_hash(audit, subject, prev_old, seq, atoll(PQgetvalue(rows, i, 2)), entry, len,
                         mac);
        ck_assert_int_eq(memcmp(mac, old, VAULT_HASH_BYTES), 0);
        memcpy(prev_old, old, sizeof prev_old);
        int64_t at = now_ms - (last - seq) * STEP_MS - 60000;
        vault_chain_hash(audit, subject, prev, seq, at, entry, len, mac);
        memcpy(prev, mac, sizeof prev);
        char at_text[24], seq_text[24];
        snprintf(at_text, sizeof at_text, "%lld", (long long)at);
        snprintf(seq_text, sizeof seq_text, "%lld", (long long)seq);
        const char *v[4] = {at_text, (const char *)mac, (const char *)subject, seq_text};
        const int lens[4] = {0, VAULT_HASH_BYTES, 32, 0}, fmt[4] = {0, 1, 1, 0};
        PGresult *u = PQexecParams(c,
                                   "UPDATE access_log SET at_ms = $1, mac = $2 "
                                   "WHERE subject_ref = $3 AND seq = $4",
                                   4, NULL, v, lens, fmt, 0);
        ck_assert_int_eq(PQresultStatus(u), PGRES_COMMAND_OK);
        PQclear(u);
        if (seq == last) {
            u = PQexecParams(c, "UPDATE access_heads SET head = $1 WHERE subject_ref = $2", 2,
                             NULL, v + 1, lens + 1, fmt + 1, 0);
            ck_assert_int_eq(PQresultStatus(u), PGRES_COMMAND_OK);
            PQclear(u);
        }
        PQfreemem(sub), PQfreemem(ent), PQfreemem(old);
    }
    PQclear(rows);
    PQfinish(c);
    sodium_memzero(entry, sizeof entry);
    return n;
}

/* The citizen's log through the vault: its length, chain, first seq and oldest time. */
static void log_of(vt *t, const unsigned char *subject, size_t n, int64_t first_seq)
{
    Veil__Vault__ListAccessLogResponse *log;
    veil_status st;
    ck_assert_int_eq(vt_subject_call(t, "ListAccessLog", subject, 32, &log, &st), VEIL_OK);
    ck_assert_msg(log->chain_valid, "chain broken at %lld", (long long)log->first_bad_seq);
    ck_assert_uint_eq(log->n_entries, n);
    ck_assert_int_eq(log->entries[0]->seq, first_seq);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_ne(log->entries[i]->action, "unreadable");
    protobuf_c_message_free_unpacked(&log->base, NULL);
}

/*
 * Issue 16 item 7: migration 006 (the access log partitioned by time) on a
 * populated log.  A database at version 5 - the schema before it - holds
 * two citizens' real entries (made by a vault, copied over) spread across
 * seven months with valid chains; migrating to the latest version keeps
 * every row (each citizen's log as long, the chain valid); retention then
 * drops the 30-day partitions that ended more than 100 days ago - only
 * entries that old - and the chains verify from their recorded bases.
 */
START_TEST(test_partitioning_a_populated_log)
{
    static const char *const env[] = {"VAULT_ACCESS_LOG_PARTITION_S=2592000",
                                      "VAULT_ACCESS_LOG_RETENTION_S=8640000", NULL};
    vt t;
    vt_start(&t, env);
    char id1[19], id2[19];
    vt_id_number(id1, "110105", 1980, 2, 3, 31);
    vt_id_number(id2, "110105", 1981, 4, 5, 32);
    vt_device a, b;
    person(&t, &a, "p1", id1, "郑一", "chat.wechat");
    person(&t, &b, "p2", id2, "郑二", "chat.wechat");
    veil_status st;
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(vt_login(&t, &a, i % 2 ? "shop.taobao" : "gov.tax", &st), VEIL_OK);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(vt_login(&t, &b, "gov.tax", &st), VEIL_OK);
    const size_t na = 8, nb = 4; /* device_added, then logins */
    log_of(&t, a.subject, na, 1);

    /* the schema before partitioning, filled with those rows */
    size_t before = 0;
    while (before < vault_migrations_count && vault_migrations[before].version < 6)
        before++;
    ck_assert_int_eq(vault_migrations[before].version, 6);
    ck_assert_ptr_nonnull(strstr(vault_migrations[before].name, "partition"));
    char *old = h_db_create("vault_v5"), err[512];
    int applied;
    ck_assert_msg(veil_migrate_apply(old, "vault", vault_migrations, before, &applied, err,
                                     sizeof err) == VEIL_OK,
                  "%s", err);
    copy_rows(t.db, old);
    char path[1200];
    snprintf(path, sizeof path, "%s/audit-1.key", t.keys);
    veil_key *audit;
    ck_assert_int_eq(veil_key_load(path, 1, &audit, err, sizeof err), VEIL_OK);
    int64_t now = (int64_t)time(NULL) * 1000;
    ck_assert_int_eq(spread_over_months(old, audit, now), (int)(na + nb));
    veil_key_free(audit);

    /* migrate it to the latest version and serve from it */
    free(t.db);
    t.db = old;
    snprintf(t.env[0], sizeof t.env[0], "VEIL_DATABASE_URL=%s", old);
    char out[4096];
    ck_assert_msg(vt_command(&t, "migrate", out, sizeof out) == 0, "vault migrate: %s", out);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_log"), (long long)(na + nb));
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_log_default"),
                     (long long)(na + nb));
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c "
                                    "ON c.oid = p.partrelid WHERE c.relname = 'access_log'"),
                     1);
    vt_restart(&t);
    log_of(&t, a.subject, na, 1);
    log_of(&t, b.subject, nb, 1);

    /* retention: the 30-day partitions that ended more than 100 days ago go, nothing else */
    const int64_t period = 30 * DAY_MS, cutoff = now - 100 * DAY_MS;
    size_t drop_a = 0, drop_b = 0;
    for (size_t k = 0; k < na; k++) /* entry seq k+1 lies (na-1-k) steps back */
        drop_a += ((now - (int64_t)(na - 1 - k) * STEP_MS - 60000) / period + 1) * period <=
                  cutoff;
    for (size_t k = 0; k < nb; k++)
        drop_b += ((now - (int64_t)(nb - 1 - k) * STEP_MS - 60000) / period + 1) * period <=
                  cutoff;
    ck_assert_uint_ge(drop_a, 3); /* the oldest entries (up to 210 days) are past retention */
    ck_assert_uint_lt(drop_a, na);
    ck_assert_msg(vt_command(&t, "access-log-retention", out, sizeof out) == 0, "%s", out);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_log_default"), 0);
    ck_assert_int_eq(vt_sql_int(&t, "SELECT count(*) FROM access_log"),
                     (long long)(na + nb - drop_a - drop_b));
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM access_log WHERE at_ms < %lld",
             (long long)(cutoff - period));
    ck_assert_int_eq(vt_sql_int(&t, sql), 0); /* everything that old is gone... */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM access_log_partitions WHERE hi <= %lld",
             (long long)cutoff);
    ck_assert_int_eq(vt_sql_int(&t, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM access_log WHERE at_ms >= %lld",
             (long long)cutoff);
    ck_assert_int_ge(vt_sql_int(&t, sql), 3); /* ...and nothing younger than 100 days went */
    log_of(&t, a.subject, na - drop_a, (int64_t)drop_a + 1);
    log_of(&t, b.subject, nb - drop_b, (int64_t)drop_b + 1);
    /* the log goes on from there */
    ck_assert_int_eq(vt_login(&t, &a, "gov.tax", &st), VEIL_OK);
    log_of(&t, a.subject, na - drop_a + 1, (int64_t)drop_a + 1);
    vt_stop(&t);
}
END_TEST

int main(void)
{
    const TTest *const tests[] = {test_release_attributes,
                                  test_release_capability,
                                  test_age_boundaries,
                                  test_access_log_tampering,
                                  test_erase,
                                  test_authority_hold,
                                  test_master_key_rotation,
                                  test_master_key_version_explicit,
                                  test_bulk_enrol,
                                  test_partitioning_a_populated_log,
                                  NULL};
    const h_case cases[] = {{"data", 90, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("vault_data", cases));
}
