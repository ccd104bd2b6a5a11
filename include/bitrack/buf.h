/*
 * A growable byte buffer: what the protocol codecs encode into (proto/) and what the GGUF
 * writer assembles a file's header in (sharding/gguf.c), kept in common so both use one.
 */
#ifndef BITRACK_BUF_H
#define BITRACK_BUF_H

#include <stddef.h>
#include <stdint.h>

/* Bytes owned by the buffer: data[0..len) valid, cap bytes allocated. Zero-initialise
 * (struct br_buf b = {0}) or br_buf_init; release with br_buf_free. */
struct br_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void br_buf_init(struct br_buf *b);
/* Frees the bytes and zeroes the struct; NULL-safe. */
void br_buf_free(struct br_buf *b);
/* Sets len to 0, keeping the allocation. */
void br_buf_reset(struct br_buf *b);
/* Appends n bytes (p may be NULL when n is 0); BR_E_NOMEM on failure (buffer unchanged). */
int br_buf_append(struct br_buf *b, const void *p, size_t n);

#endif
