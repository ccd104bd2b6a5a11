/* Growable byte buffer (see include/bitrack/buf.h). */
#include "bitrack/buf.h"

#include <stdlib.h>
#include <string.h>

#include "bitrack/status.h"

void br_buf_init(struct br_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void br_buf_free(struct br_buf *b)
{
    if (!b) return;
    free(b->data);
    br_buf_init(b);
}

void br_buf_reset(struct br_buf *b)
{
    b->len = 0;
}

int br_buf_append(struct br_buf *b, const void *p, size_t n)
{
    if (n == 0) return BR_OK; /* p may be NULL (an empty array), and memcpy forbids that */
    if (n > SIZE_MAX - b->len) return BR_E_NOMEM;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) return BR_E_NOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return BR_OK;
}
