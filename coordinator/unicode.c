/*
 * UTF-8 decoding and Unicode character classes (see unicode.h).
 *
 * The decoder accepts exactly the well-formed sequences of the Unicode standard (no
 * overlong forms, no surrogates, nothing above U+10FFFF); anything else is one invalid
 * byte. Classes come from a generated two-stage table (unicode_data.h), with a 128-entry
 * table in front because ASCII dominates real prompts.
 */
#include "coordinator/unicode.h"

#include <assert.h>

#include "coordinator/unicode_data.h"

/* ASCII classes, spelled out so the hot path needs no search. */
static const uint8_t ascii_class[128] = {
#define S BR_UC_SPACE
#define L BR_UC_LETTER
#define N BR_UC_NUMBER
#define P BR_UC_PUNCT
#define O BR_UC_OTHER
    O, O, O, O, O, O, O, O, O, S, S, S, S, S, O, O, /* 0x00 */
    O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, /* 0x10 */
    S, P, P, P, O, P, P, P, P, P, P, O, P, P, P, P, /* 0x20  !"#$%&'()*+,-./ */
    N, N, N, N, N, N, N, N, N, N, P, P, O, O, O, P, /* 0x30 0-9 :;<=>? */
    P, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* 0x40 @A-O */
    L, L, L, L, L, L, L, L, L, L, L, P, P, P, O, P, /* 0x50 P-Z [\]^_ */
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* 0x60 `a-o */
    L, L, L, L, L, L, L, L, L, L, L, P, O, P, O, O, /* 0x70 p-z {|}~ DEL */
#undef S
#undef L
#undef N
#undef P
#undef O
};

enum br_uc_class br_uc_class_of(uint32_t cp)
{
    if (cp < 128) return (enum br_uc_class)ascii_class[cp];
    if (cp > 0x10FFFF) return BR_UC_OTHER;
    return (enum br_uc_class)br_uc_blocks[br_uc_stage1[cp >> 7]][cp & 127];
}

/* Expected length of a sequence from its lead byte, 0 for bytes that cannot lead. */
static size_t lead_len(uint8_t b)
{
    if (b < 0x80) return 1;
    if (b < 0xC2) return 0; /* continuation bytes and overlong 2-byte leads */
    if (b < 0xE0) return 2;
    if (b < 0xF0) return 3;
    if (b < 0xF5) return 4;
    return 0;
}

/* Whether byte b may follow lead at position 1 (the second byte carries the range limits
 * that rule out overlong forms, surrogates and values above U+10FFFF). */
static int second_ok(uint8_t lead, uint8_t b)
{
    switch (lead) {
    case 0xE0:
        return b >= 0xA0 && b <= 0xBF;
    case 0xED:
        return b >= 0x80 && b <= 0x9F;
    case 0xF0:
        return b >= 0x90 && b <= 0xBF;
    case 0xF4:
        return b >= 0x80 && b <= 0x8F;
    default:
        return (b & 0xC0) == 0x80;
    }
}

size_t br_uc_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    assert(n >= 1);
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    size_t len = lead_len(b0);
    if (len == 0 || len > n || !second_ok(b0, s[1])) goto invalid;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) goto invalid;
    switch (len) {
    case 2:
        *cp = ((uint32_t)(b0 & 0x1F) << 6) | (s[1] & 0x3F);
        break;
    case 3:
        *cp = ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        break;
    default:
        *cp = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
              ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        break;
    }
    return len;
invalid:
    *cp = BR_UC_INVALID_BASE + b0;
    return 1;
}

size_t br_uc_encode(uint32_t cp, uint8_t *buf)
{
    assert(cp <= 0x10FFFF);
    if (cp < 0x80) {
        buf[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (uint8_t)(0xC0 | (cp >> 6));
        buf[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (uint8_t)(0xE0 | (cp >> 12));
        buf[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    buf[0] = (uint8_t)(0xF0 | (cp >> 18));
    buf[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    buf[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    buf[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

size_t br_uc_incomplete_tail(const uint8_t *s, size_t n)
{
    /* A pending character starts at most 3 bytes from the end; find its lead byte and
     * check that what follows it is a valid prefix that is still short. */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t b = s[n - back];
        if ((b & 0xC0) == 0x80) continue; /* continuation: keep looking for the lead */
        size_t len = lead_len(b);
        if (len <= back) return 0; /* ASCII, invalid lead, or already complete */
        if (back >= 2 && !second_ok(b, s[n - back + 1])) return 0;
        for (size_t i = 2; i < back; i++)
            if ((s[n - back + i] & 0xC0) != 0x80) return 0;
        return back;
    }
    return 0;
}

const char *br_uc_version(void)
{
    return BR_UC_UNICODE_VERSION;
}
