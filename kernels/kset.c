/* The per-variant kernel set (kset.h): filled once, read on every call without lookups. */
#include "kernels/kset.h"

#include <pthread.h>

#include "bitrack/status.h"

int br_kernel_set_find(const char *name, struct br_kernel_set *out)
{
    const struct br_kernel_ops *k = name ? br_kernels_find(name) : NULL;
    if (!k) return BR_E_NOTFOUND;
    const struct br_attn_ops *attn = br_attn_find(name);
    *out = (struct br_kernel_set){
        .name = k->name,
        .ternary = k,
        .q8 = br_q8_ops_find(name),
        .q6k = br_q6k_find(name),
        .fhead = br_fhead_find(name),
        .attn = attn ? attn : &br_attn_ref,
    };
    return BR_OK;
}

static struct br_kernel_set active_set;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void choose_active(void)
{
    /* the active variant is available by construction, so this cannot fail */
    if (br_kernel_set_find(br_kernels_active()->name, &active_set) != BR_OK)
        br_kernel_set_find("ref", &active_set);
}

const struct br_kernel_set *br_kernel_set_active(void)
{
    pthread_once(&active_once, choose_active);
    return &active_set;
}
