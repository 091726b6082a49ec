/*
 * items.c - the serving side of a batched method: each item's own status
 * (veil/items.h).
 */
#include <string.h>

#include "veil/items.h"
#include "veil/log.h"

veil_err veil_items_check(veil_call *call, size_t n, size_t max)
{
    if (n == 0 || n > max) {
        veil_call_fail(call, VEIL_ERR_INVALID, "items must hold 1 to %zu requests", max);
        return VEIL_ERR_INVALID;
    }
    return VEIL_OK;
}

void veil_item_end(veil_call *call, veil_item_outcome *o, veil_err err)
{
    char msg[256];
    veil_call_take_error(call, err, msg, sizeof msg);
    o->err = err;
    o->msg = err ? veil_call_strdup(call, msg) : NULL;
    if (err && !o->msg)
        o->msg = veil_err_message(err);
}

veil_err veil_item_single(veil_call *call, veil_err err, const veil_item_outcome *o)
{
    if (err || !o->err)
        return err;
    veil_call_fail(call, o->err, "%s", o->msg);
    return o->err;
}

veil_err veil_item_statuses(veil_call *call, const veil_item_outcome *outs, size_t n,
                            Veil__ItemStatus ***status)
{
    Veil__ItemStatus *st = veil_call_array(call, n, sizeof *st);
    Veil__ItemStatus **p = veil_call_array(call, n, sizeof *p);
    size_t refused = 0;
    if (!st || !p)
        return VEIL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        veil__item_status__init(&st[i]);
        st[i].code = (uint32_t)veil_err_status(outs[i].err);
        if (outs[i].err) {
            st[i].message = (char *)outs[i].msg;
            refused++;
        }
        p[i] = &st[i];
    }
    *status = p;
    if (refused)
        veil_log(VEIL_LOG_INFO, "batch items refused", VL_STR("method", veil_call_method(call)),
                 VL_INT("items", (long long)n), VL_INT("refused", (long long)refused), VL_END);
    return VEIL_OK;
}
