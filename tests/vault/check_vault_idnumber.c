/*
 * check_vault_idnumber.c - the vault's pure functions: GB 11643 parsing
 * over a table of valid and invalid numbers (the two examples printed in
 * the standard itself among them, as independent known answers), China
 * Standard Time dates, ages on and around birthdays including 29 February,
 * the province table, and a random-input sweep of the parser.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "harness.h"
#include "vault.h"

#define TODAY 20250615 /* a fixed "today" for the table */

static const struct {
    const char *s;
    vault_id_status want;
} table[] = {
    /* the examples of GB 11643-1999 itself */
    {"11010519491231002X", VAULT_ID_OK},
    {"440524188001010014", VAULT_ID_OK},
    /* lower-case x is accepted */
    {"11010519491231002x", VAULT_ID_OK},
    {"440305199003070014", VAULT_ID_OK},
    /* residence permits of Hong Kong, Macau and Taiwan residents; GB/T 2260's Taiwan */
    {"810000199001010019", VAULT_ID_OK},
    {"830000198512120024", VAULT_ID_OK},
    {"710000199001010015", VAULT_ID_OK},
    /* length */
    {"", VAULT_ID_LENGTH},
    {"11010519491231002", VAULT_ID_LENGTH},
    {"11010519491231002X1", VAULT_ID_LENGTH},
    {"4405241880010100140", VAULT_ID_LENGTH},
    /* characters */
    {"1101051949123100X2", VAULT_ID_CHARS},
    {"11010519491231002Y", VAULT_ID_CHARS},
    {"11010519491231002 ", VAULT_ID_CHARS},
    {"11010519491231-02X", VAULT_ID_CHARS},
    {"x10105194912310021", VAULT_ID_CHARS},
    /* region */
    {"990101199001010019", VAULT_ID_REGION},
    {"100101199001010012", VAULT_ID_REGION},
    {"000000199001010010", VAULT_ID_REGION},
    {"110000199001010013", VAULT_ID_REGION}, /* a province, not a place in it */
    {"811000199001010017", VAULT_ID_REGION}, /* permits use exactly 810000 */
    /* birth date */
    {"110105199013010011", VAULT_ID_DATE},
    {"110105199000010011", VAULT_ID_DATE},
    {"110105199002300011", VAULT_ID_DATE},
    {"110105199004310011", VAULT_ID_DATE},
    {"110105199001000011", VAULT_ID_DATE},
    {"110105199001320011", VAULT_ID_DATE},
    {"110105179912310011", VAULT_ID_DATE},
    {"110105190002290017", VAULT_ID_DATE}, /* 1900 was not a leap year */
    {"44030520990101001X", VAULT_ID_FUTURE},
    {"440305202506160017", VAULT_ID_FUTURE}, /* tomorrow */
    /* check character */
    {"11010519491231003X", VAULT_ID_CHECK},
    {"110105194912310021", VAULT_ID_CHECK},
    {"440524188001010015", VAULT_ID_CHECK},
    {"440305199003070041", VAULT_ID_CHECK}, /* two digits swapped */
};

START_TEST(test_table)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        struct vault_idnumber id;
        memset(&id, 0x5a, sizeof id);
        vault_id_status st = vault_idnumber_parse(table[i].s, strlen(table[i].s), TODAY, &id);
        ck_assert_msg(st == table[i].want, "%s: got %d, want %d", table[i].s, st, table[i].want);
        const char *msg = vault_id_status_message(st);
        ck_assert_ptr_nonnull(strstr(msg, st == VAULT_ID_OK ? "ok" : "id_number"));
        if (st != VAULT_ID_OK && table[i].s[0])
            ck_assert_ptr_null(strstr(msg, table[i].s));
    }
}
END_TEST

START_TEST(test_fields)
{
    struct vault_idnumber id;
    ck_assert_int_eq(vault_idnumber_parse("11010519491231002x", 18, TODAY, &id), VAULT_ID_OK);
    ck_assert_str_eq(id.text, "11010519491231002X");
    ck_assert_int_eq(id.region, 110105);
    ck_assert_int_eq(id.province, 11);
    ck_assert_int_eq(id.year, 1949);
    ck_assert_int_eq(id.month, 12);
    ck_assert_int_eq(id.day, 31);
    ck_assert_int_eq(id.sequence, 2);
    ck_assert_int_eq(id.female, 1);
    ck_assert_int_eq(vault_idnumber_parse("440524188001010014", 18, TODAY, &id), VAULT_ID_OK);
    ck_assert_int_eq(id.province, 44);
    ck_assert_int_eq(id.sequence, 1);
    ck_assert_int_eq(id.female, 0);
    /* born today is a past date for these purposes */
    ck_assert_int_eq(vault_idnumber_parse("440305202506150010", 18, TODAY, &id), VAULT_ID_OK);
    /* the parser reads exactly len bytes: a longer buffer does not count */
    ck_assert_int_eq(vault_idnumber_parse("11010519491231002X99", 18, TODAY, &id), VAULT_ID_OK);
    ck_assert_int_eq(vault_idnumber_parse(NULL, 0, TODAY, &id), VAULT_ID_LENGTH);
    ck_assert_int_eq(vault_idnumber_check_char("11010519491231002"), 'X');
    ck_assert_int_eq(vault_idnumber_check_char("44052418800101001"), '4');
}
END_TEST

START_TEST(test_dates)
{
    ck_assert(vault_date_valid(2000, 2, 29));
    ck_assert(!vault_date_valid(1900, 2, 29));
    ck_assert(vault_date_valid(2024, 2, 29));
    ck_assert(!vault_date_valid(2023, 2, 29));
    ck_assert(!vault_date_valid(2023, 6, 31));
    ck_assert(vault_date_valid(2023, 12, 31));
    ck_assert(!vault_date_valid(2023, 0, 1));
    /* China Standard Time is UTC+8 all year */
    ck_assert_int_eq(vault_today_cst(0), 19700101);
    ck_assert_int_eq(vault_today_cst(16LL * 3600 * 1000 - 1), 19700101);
    ck_assert_int_eq(vault_today_cst(16LL * 3600 * 1000), 19700102);
    ck_assert_int_eq(vault_today_cst(-8LL * 3600 * 1000), 19700101);
    ck_assert_int_eq(vault_today_cst(-8LL * 3600 * 1000 - 1), 19691231);
    /* 2024-02-29 16:00 UTC is already 1 March in Beijing */
    ck_assert_int_eq(vault_today_cst(1709222400000LL - 1), 20240229);
    ck_assert_int_eq(vault_today_cst(1709222400000LL), 20240301);
}
END_TEST

START_TEST(test_ages)
{
    /* a person is N on their Nth birthday, not the day before */
    ck_assert_int_eq(vault_age_on(20060315, 20240314), 17);
    ck_assert_int_eq(vault_age_on(20060315, 20240315), 18);
    ck_assert_int_eq(vault_age_on(20060315, 20240316), 18);
    ck_assert_int_eq(vault_age_on(19641231, 20241230), 59);
    ck_assert_int_eq(vault_age_on(19641231, 20241231), 60);
    ck_assert_int_eq(vault_age_on(20100101, 20231231), 13);
    ck_assert_int_eq(vault_age_on(20100101, 20240101), 14);
    ck_assert_int_eq(vault_age_on(20240615, 20240615), 0);
    /* born on 29 February: a year older on 1 March in common years, on 29 February in leap years */
    ck_assert_int_eq(vault_age_on(20000229, 20180228), 17);
    ck_assert_int_eq(vault_age_on(20000229, 20180301), 18);
    ck_assert_int_eq(vault_age_on(20000229, 20200228), 19);
    ck_assert_int_eq(vault_age_on(20000229, 20200229), 20);
    ck_assert_int_eq(vault_age_on(19640229, 20240228), 59);
    ck_assert_int_eq(vault_age_on(19640229, 20240229), 60);
}
END_TEST

START_TEST(test_provinces)
{
    size_t n;
    const struct vault_province *t = vault_province_table(&n);
    ck_assert_uint_eq(n, 34);
    for (size_t i = 0; i < n; i++) {
        ck_assert(t[i].code >= 11 && t[i].code <= 82);
        ck_assert(t[i].name[0] && t[i].name_en[0]);
        for (size_t j = 0; j < i; j++)
            ck_assert_int_ne(t[i].code, t[j].code);
        ck_assert_ptr_eq(vault_province_find(t[i].code), &t[i]);
    }
    ck_assert_str_eq(vault_province_find(44)->name, "广东省");
    ck_assert_str_eq(vault_province_find(44)->name_en, "Guangdong");
    ck_assert_str_eq(vault_province_find(81)->name_en, "Hong Kong");
    ck_assert_str_eq(vault_province_find(82)->name_en, "Macau");
    ck_assert_ptr_eq(vault_province_find(83), vault_province_find(71));
    ck_assert_ptr_null(vault_province_find(16));
    ck_assert_ptr_null(vault_province_find(0));
    ck_assert_ptr_null(vault_province_find(99));
}
END_TEST

/* Random and mutated inputs: never a crash, and every accepted one is consistent. */
START_TEST(test_random_inputs)
{
    static const char alphabet[] = "0123456789Xx -";
    char buf[24];
    int accepted = 0;
    for (int i = 0; i < 200000; i++) {
        size_t len = i % 5 == 0 ? randombytes_uniform(sizeof buf) : 18;
        if (i % 2) {
            memcpy(buf, "11010519491231002X", 18);
            buf[randombytes_uniform(18)] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
        } else {
            for (size_t k = 0; k < len; k++)
                buf[k] = i % 3 ? alphabet[randombytes_uniform(10)] : (char)randombytes_uniform(256);
        }
        struct vault_idnumber id;
        if (vault_idnumber_parse(buf, len, TODAY, &id) == VAULT_ID_OK) {
            accepted++;
            ck_assert_uint_eq(len, 18);
            ck_assert_int_eq(vault_idnumber_check_char(id.text), id.text[17]);
            ck_assert(vault_date_valid(id.year, id.month, id.day));
            ck_assert(id.year * 10000 + id.month * 100 + id.day <= TODAY);
            ck_assert_ptr_nonnull(vault_province_find(id.province));
            ck_assert_int_eq(id.female, id.sequence % 2 == 0);
        }
    }
    ck_assert_int_gt(accepted, 0);
}
END_TEST

int main(void)
{
    if (sodium_init() < 0)
        return EXIT_FAILURE;
    const TTest *const tests[] = {test_table,     test_fields,        test_dates, test_ages,
                                  test_provinces, test_random_inputs, NULL};
    const h_case cases[] = {{"idnumber", 60, NULL, NULL, NULL, NULL, tests}, {NULL}};
    return h_run_suite_forked(h_suite("vault_idnumber", cases));
}
