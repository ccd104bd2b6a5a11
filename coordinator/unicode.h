/*
 * Unicode helpers for the tokenizers: UTF-8 decoding that never fails, and the character
 * classes the pre-tokenizer rules are written in (\p{L}, \p{N}, \p{P}, \s).
 *
 * Invariants: br_uc_decode always consumes at least one byte, so a loop over any byte
 * string (invalid UTF-8, NUL bytes included) terminates; a byte that does not start a
 * valid, shortest-form sequence is returned on its own as BR_UC_INVALID_BASE + byte,
 * a value above U+10FFFF whose class is BR_UC_OTHER. The class table is generated from
 * Unicode data by unicode_gen.py (see unicode_data.h for the version).
 */
#ifndef BR_COORDINATOR_UNICODE_H
#define BR_COORDINATOR_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum br_uc_class {
    BR_UC_OTHER = 0,  /* symbols, marks, controls, unassigned, invalid bytes */
    BR_UC_LETTER = 1, /* general category L* */
    BR_UC_NUMBER = 2, /* N* */
    BR_UC_PUNCT = 3,  /* P* */
    BR_UC_SPACE = 4,  /* White_Space property (what \s matches) */
};

#define BR_UC_INVALID_BASE 0x110000u

/* Class of a code point (or of an invalid byte's BR_UC_INVALID_BASE + byte). */
enum br_uc_class br_uc_class_of(uint32_t cp);

/* Decodes the character at s[0..n) (n >= 1) into *cp; returns its length in bytes (1-4). */
size_t br_uc_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* Encodes cp (<= 0x10FFFF) as UTF-8 into buf (4 bytes room); returns the length. */
size_t br_uc_encode(uint32_t cp, uint8_t *buf);

/* Number of bytes at the end of s[0..n) that form the start of a valid multi-byte
 * character still missing bytes (0-3); a streaming decoder holds these back. */
size_t br_uc_incomplete_tail(const uint8_t *s, size_t n);

/* The Unicode version the class table was generated from. */
const char *br_uc_version(void);

#endif
