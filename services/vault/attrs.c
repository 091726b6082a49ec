/*
 * attrs.c - attribute release: exactly the attributes named, computed from
 * the decrypted profile, predicates preferred over raw values.  The raw ID
 * number is never an attribute.  Also the table of the 34 provincial-level
 * divisions (GB/T 2260) that `province` and ID validation use.
 */
#include <stdio.h>
#include <string.h>
#include <sodium.h>

#include "vault.h"

static const struct vault_province provinces[] = {
    {11, "北京市", "Beijing"},
    {12, "天津市", "Tianjin"},
    {13, "河北省", "Hebei"},
    {14, "山西省", "Shanxi"},
    {15, "内蒙古自治区", "Inner Mongolia"},
    {21, "辽宁省", "Liaoning"},
    {22, "吉林省", "Jilin"},
    {23, "黑龙江省", "Heilongjiang"},
    {31, "上海市", "Shanghai"},
    {32, "江苏省", "Jiangsu"},
    {33, "浙江省", "Zhejiang"},
    {34, "安徽省", "Anhui"},
    {35, "福建省", "Fujian"},
    {36, "江西省", "Jiangxi"},
    {37, "山东省", "Shandong"},
    {41, "河南省", "Henan"},
    {42, "湖北省", "Hubei"},
    {43, "湖南省", "Hunan"},
    {44, "广东省", "Guangdong"},
    {45, "广西壮族自治区", "Guangxi"},
    {46, "海南省", "Hainan"},
    {50, "重庆市", "Chongqing"},
    {51, "四川省", "Sichuan"},
    {52, "贵州省", "Guizhou"},
    {53, "云南省", "Yunnan"},
    {54, "西藏自治区", "Xizang"},
    {61, "陕西省", "Shaanxi"},
    {62, "甘肃省", "Gansu"},
    {63, "青海省", "Qinghai"},
    {64, "宁夏回族自治区", "Ningxia"},
    {65, "新疆维吾尔自治区", "Xinjiang"},
    {71, "台湾省", "Taiwan"},
    {81, "香港特别行政区", "Hong Kong"},
    {82, "澳门特别行政区", "Macau"},
};
#define N_PROVINCES (sizeof provinces / sizeof provinces[0])

const struct vault_province *vault_province_find(int code)
{
    /* Residence permits of Taiwan residents carry 83; the division is Taiwan (71). */
    if (code == 83)
        code = 71;
    for (size_t i = 0; i < N_PROVINCES; i++)
        if (provinces[i].code == code)
            return &provinces[i];
    return NULL;
}

const struct vault_province *vault_province_table(size_t *n)
{
    *n = N_PROVINCES;
    return provinces;
}

static Veil__Attribute *flag(veil_call *call, const char *name, int value)
{
    Veil__Attribute *a = veil_call_alloc(call, sizeof *a);
    if (!a)
        return NULL;
    veil__attribute__init(a);
    a->name = (char *)name;
    a->value_case = VEIL__ATTRIBUTE__VALUE_FLAG;
    a->flag = value != 0;
    return a;
}

static Veil__Attribute *text(veil_call *call, const char *name, const char *value)
{
    Veil__Attribute *a = veil_call_alloc(call, sizeof *a);
    if (!a)
        return NULL;
    veil__attribute__init(a);
    a->name = (char *)name;
    a->value_case = VEIL__ATTRIBUTE__VALUE_TEXT;
    a->text = (char *)value;
    return a;
}

static Veil__Attribute *province(veil_call *call, const char *name, int code)
{
    const struct vault_province *p = vault_province_find(code);
    Veil__Attribute *a = veil_call_alloc(call, sizeof *a);
    Veil__Province *pr = veil_call_alloc(call, sizeof *pr);
    char *code_text = veil_call_alloc(call, 3);
    if (!p || !a || !pr || !code_text)
        return NULL;
    snprintf(code_text, 3, "%02d", p->code);
    veil__province__init(pr);
    pr->code = code_text;
    pr->name = (char *)p->name;
    pr->name_en = (char *)p->name_en;
    veil__attribute__init(a);
    a->name = (char *)name;
    a->value_case = VEIL__ATTRIBUTE__VALUE_PROVINCE;
    a->province = pr;
    return a;
}

/*
 * Raw values point into *p and birth_date, which the caller keeps until the
 * reply is packed and then wipes; nothing personal is copied into the arena.
 */
veil_err vault_attrs_compute(veil_call *call, const struct vault_profile *p, int32_t today_ymd,
                             char *const *names, size_t n, char birth_date[11],
                             Veil__Attribute **out)
{
    struct vault_idnumber id;
    veil_err err = VEIL_ERR_INTERNAL; /* a stored profile always holds a valid number */
    if (vault_idnumber_parse(p->id_number, strlen(p->id_number), today_ymd, &id) != VAULT_ID_OK)
        goto out;
    int32_t birth = id.year * 10000 + id.month * 100 + id.day;
    int age = vault_age_on(birth, today_ymd);
    snprintf(birth_date, 11, "%04d-%02d-%02d", id.year, id.month, id.day);

    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        Veil__Attribute *a = NULL;
        if (strcmp(name, "real_name_verified") == 0)
            a = flag(call, name, p->face_match && p->full_name[0]);
        else if (strcmp(name, "age_over_14") == 0)
            a = flag(call, name, age >= 14);
        else if (strcmp(name, "age_over_18") == 0)
            a = flag(call, name, age >= 18);
        else if (strcmp(name, "age_over_60") == 0)
            a = flag(call, name, age >= 60);
        else if (strcmp(name, "province") == 0)
            a = province(call, name, id.province);
        else if (strcmp(name, "full_name") == 0)
            a = text(call, name, p->full_name);
        else if (strcmp(name, "gender") == 0)
            a = text(call, name, id.female ? "female" : "male");
        else if (strcmp(name, "birth_date") == 0)
            a = text(call, name, birth_date);
        else
            goto out; /* the catalogue grew without this table */
        if (!a) {
            err = VEIL_ERR_NOMEM;
            goto out;
        }
        out[i] = a;
    }
    err = VEIL_OK;
out:
    sodium_memzero(&id, sizeof id);
    return err;
}
