/*
 * idnumber.c - citizen identity numbers (GB 11643-1999), calendar dates in
 * China Standard Time, and ages.  Pure functions over their arguments: no
 * clock, no allocation, no global state, so they can be fuzzed and tested
 * against fixed dates.
 *
 * An ID number is 18 characters:
 *   RRRRRR  administrative division (GB/T 2260); the first two digits are
 *           the provincial-level division
 *   YYYYMMDD birth date
 *   SSS     sequence number; odd for men, even for women
 *   C       check character, ISO 7064 MOD 11-2 over the first 17 digits
 *           ('0'-'9' or 'X'; 'x' is accepted and normalised to 'X')
 */
#include <string.h>

#include "vault.h"

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int leap_year(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int vault_date_valid(int year, int month, int day)
{
    static const int days_in[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12 || day < 1)
        return 0;
    int max = days_in[month - 1] + (month == 2 && leap_year(year));
    return day <= max;
}

char vault_idnumber_check_char(const char digits[17])
{
    /* Weight of position i is 2^(17-i) mod 11. */
    static const int weight[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char check[11] = {'1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'};
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += (digits[i] - '0') * weight[i];
    return check[sum % 11];
}

static int number_at(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

vault_id_status vault_idnumber_parse(const char *s, size_t len, int32_t today_ymd,
                                     struct vault_idnumber *out)
{
    if (!s || len != 18)
        return VAULT_ID_LENGTH;
    for (int i = 0; i < 17; i++)
        if (!is_digit(s[i]))
            return VAULT_ID_CHARS;
    char last = s[17] == 'x' ? 'X' : s[17];
    if (!is_digit(last) && last != 'X')
        return VAULT_ID_CHARS;

    /*
     * The first two digits must be a provincial-level division.  The
     * county part is not checked against GB/T 2260: the list changes every
     * year and numbers issued under a retired code stay valid for life.  A
     * mainland number names a place below the province (not "0000"); the
     * residence permits of Hong Kong, Macau and Taiwan residents use
     * exactly 810000, 820000 and 830000 (and GB/T 2260 lists Taiwan as
     * 710000), so those must end in "0000".
     */
    int province = number_at(s, 2), below = number_at(s + 2, 4);
    if (!vault_province_find(province))
        return VAULT_ID_REGION;
    int outside_mainland = province == 71 || province >= 81;
    if (outside_mainland ? below != 0 : below == 0)
        return VAULT_ID_REGION;

    int year = number_at(s + 6, 4), month = number_at(s + 10, 2), day = number_at(s + 12, 2);
    if (year < 1800 || !vault_date_valid(year, month, day))
        return VAULT_ID_DATE;
    if (year * 10000 + month * 100 + day > today_ymd)
        return VAULT_ID_FUTURE;

    if (vault_idnumber_check_char(s) != last)
        return VAULT_ID_CHECK;

    memcpy(out->text, s, 17);
    out->text[17] = last;
    out->text[18] = '\0';
    out->region = number_at(s, 6);
    out->province = province;
    out->year = year;
    out->month = month;
    out->day = day;
    out->sequence = number_at(s + 14, 3);
    out->female = out->sequence % 2 == 0;
    return VAULT_ID_OK;
}

const char *vault_id_status_message(vault_id_status st)
{
    switch (st) {
    case VAULT_ID_OK:
        return "ok";
    case VAULT_ID_LENGTH:
        return "id_number must be 18 characters";
    case VAULT_ID_CHARS:
        return "id_number must be 17 digits followed by a digit or X";
    case VAULT_ID_REGION:
        return "id_number does not start with a known administrative division";
    case VAULT_ID_DATE:
        return "id_number does not hold a valid birth date";
    case VAULT_ID_FUTURE:
        return "id_number holds a birth date in the future";
    case VAULT_ID_CHECK:
        return "id_number check character is wrong";
    }
    return "id_number is not valid";
}

/* Floor division, for times before 1970 and the UTC+8 shift. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int32_t vault_today_cst(int64_t now_ms)
{
    /* Days since 1970-01-01 in UTC+8, then H. Hinnant's civil_from_days. */
    int64_t z = floor_div(floor_div(now_ms, 1000) + 8 * 3600, 86400) + 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    return (int32_t)(y * 10000 + m * 100 + d);
}

int vault_age_on(int32_t birth_ymd, int32_t today_ymd)
{
    int by = birth_ymd / 10000, bm = birth_ymd / 100 % 100, bd = birth_ymd % 100;
    int ty = today_ymd / 10000, tmd = today_ymd % 10000;
    /* This year's birthday; 29 February falls on 1 March in common years. */
    int bmd = bm * 100 + bd;
    if (bm == 2 && bd == 29 && !leap_year(ty))
        bmd = 301;
    int age = ty - by;
    if (tmd < bmd)
        age--;
    return age;
}
