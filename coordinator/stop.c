/* Stop conditions of a generation (see stop.h). */
#include "coordinator/stop.h"

#include <string.h>

#include "proto/proto.h"

enum br_sample_stop_reason br_sample_stop_token(const struct br_sample_stop *s, int32_t token,
                                                int32_t n_generated)
{
    for (int32_t i = 0; i < s->n_tokens; i++)
        if (s->tokens[i] == token) return BR_SAMPLE_STOP_TOKEN;
    if (s->max_tokens > 0 && n_generated >= s->max_tokens) return BR_SAMPLE_STOP_LENGTH;
    return BR_SAMPLE_STOP_NONE;
}

/* First occurrence of needle (nl > 0,) in hay (hl,), or NULL. Written out rather than
 * memmem, which is not in C11; stop strings and generations are short. */
static const char *find_bytes(const char *hay, size_t hl, const char *needle, size_t nl)
{
    for (size_t i = 0; i + nl <= hl; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, nl) == 0) return hay + i;
    return NULL;
}

enum br_sample_stop_reason br_sample_stop_text(const struct br_sample_stop *s, const char *text,
                                               size_t len, size_t from, size_t *emit_len)
{
    if (from > len) from = len;
    size_t first = len + 1;
    for (int32_t i = 0; i < s->n_strings; i++) {
        size_t sl = strlen(s->strings[i]);
        if (sl == 0 || sl > len - from) continue;
        const char *hit = find_bytes(text + from, len - from, s->strings[i], sl);
        if (hit && (size_t)(hit - text) < first) first = (size_t)(hit - text);
    }
    if (first <= len) {
        *emit_len = first;
        return BR_SAMPLE_STOP_STRING;
    }
    /* No match: hold back the longest tail that a stop string starts with. */
    size_t hold = 0;
    for (int32_t i = 0; i < s->n_strings; i++) {
        size_t sl = strlen(s->strings[i]);
        size_t k = sl > 0 ? sl - 1 : 0;
        if (k > len - from) k = len - from;
        for (; k > hold; k--)
            if (memcmp(text + len - k, s->strings[i], k) == 0) {
                hold = k;
                break;
            }
    }
    /* and an unfinished character at the end (from is where earlier text was cut) */
    size_t u = len - from - br_proto_utf8_complete(text + from, len - from);
    if (u > hold) hold = u;
    *emit_len = len - hold < from ? from : len - hold;
    return BR_SAMPLE_STOP_NONE;
}
