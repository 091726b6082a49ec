/*
 * fuzz_idnumber - the national ID number parser (vault_idnumber_parse), as
 * the vault's Enrol runs it on whatever bytes arrive.  Besides "no crash, no
 * out-of-bounds read", every number it accepts must really be valid: 18
 * characters, the check character recomputed here independently (ISO 7064
 * MOD 11-2 with its weight table), a real date not after "today", a known
 * province, and the normalised text equal to the input with x upper-cased.
 * The first byte shifts "today" so dates near the boundary are explored.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char check_char(const char *s)
{
    static const int weights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += (s[i] - '0') * weights[i];
    return "10X98765432"[sum % 11];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int32_t today = 20000101 + (int32_t)data[0] * 1000; /* 2000 .. 2025 */
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct vault_idnumber id;
    memset(&id, 0xa5, sizeof id);
    vault_id_status st = vault_idnumber_parse(s, n, today, &id);
    if (vault_id_status_message(st) == NULL)
        abort();
    if (st != VAULT_ID_OK)
        return 0;
    if (n != 18 || id.text[18] != '\0')
        abort();
    for (int i = 0; i < 18; i++) {
        char want = s[i] == 'x' ? 'X' : s[i];
        if (id.text[i] != want || (i < 17 && (want < '0' || want > '9')))
            abort();
    }
    if (check_char(id.text) != id.text[17] || vault_idnumber_check_char(id.text) != id.text[17])
        abort();
    if (!vault_date_valid(id.year, id.month, id.day) || id.year < 1800 ||
        id.year * 10000 + id.month * 100 + id.day > today)
        abort();
    if (id.province != 83 && !vault_province_find(id.province))
        abort();
    if (id.female != (id.sequence % 2 == 0))
        abort();
    return 0;
}
