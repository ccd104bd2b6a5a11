/*
 * GGUF reading and writing (format: docs/FORMATS.md §1, versions 2 and 3).
 *
 * The reader maps a file read-only (or takes a caller's buffer) and validates everything
 * before handing out a pointer: magic, version, counts, every string and array length,
 * every value type, tensor dims and types, alignment, that each tensor lies inside the
 * file, unique names, and no overflow in any size computation. Memory it allocates is
 * bounded by the file's size (counts are checked against the bytes left before anything
 * is allocated), so a hostile header cannot ask for a huge allocation. A bad file gives
 * BR_E_FORMAT (or BR_E_UNSUPPORTED) and a message naming the field and its byte offset.
 *
 * The writer streams: metadata and tensor infos are declared first, then tensor data is
 * written in declaration order, so a 25 GB model never has to sit in memory.
 */
#ifndef BR_SHARDING_GGUF_H
#define BR_SHARDING_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"

enum br_gguf_vtype {
    BR_GGUF_U8 = 0,
    BR_GGUF_I8 = 1,
    BR_GGUF_U16 = 2,
    BR_GGUF_I16 = 3,
    BR_GGUF_U32 = 4,
    BR_GGUF_I32 = 5,
    BR_GGUF_F32 = 6,
    BR_GGUF_BOOL = 7,
    BR_GGUF_STRING = 8,
    BR_GGUF_ARRAY = 9,
    BR_GGUF_U64 = 10,
    BR_GGUF_I64 = 11,
    BR_GGUF_F64 = 12,
    BR_GGUF_VTYPE_COUNT
};

#define BR_GGUF_MAX_DIMS          4
#define BR_GGUF_MAX_NAME          64 /* tensor names are shorter than this */
#define BR_GGUF_DEFAULT_ALIGNMENT 32

/* One metadata value. Strings point into the file (not NUL-terminated). Arrays keep a
 * pointer to their first element in the file; numeric elements are read with
 * br_gguf_arr_* below, string elements through the offsets table the reader built. */
struct br_gguf_kv {
    const char *key; /* NUL-terminated, owned by the reader */
    enum br_gguf_vtype type;
    union {
        uint64_t u;
        int64_t i;
        double f;
        bool b;
        struct {
            const char *ptr;
            uint64_t len;
        } str;
        struct {
            enum br_gguf_vtype elem;
            uint64_t n;
            const uint8_t *data;         /* first element in the file */
            const uint64_t *str_offsets; /* string arrays: byte offset of element i's
                                            length field from data; else NULL */
        } arr;
    } v;
    uint64_t file_offset; /* where the key's record starts, for messages */
};

struct br_gguf_tensor {
    const char *name; /* NUL-terminated, owned by the reader */
    uint32_t n_dims;
    uint64_t ne[BR_GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint32_t type;                 /* enum br_ggml_type (sharding/types.h) */
    uint64_t offset;               /* from the data section's start */
    uint64_t nbytes;
    uint64_t nelem;
    const void *data;     /* inside the mapping */
    uint64_t info_offset; /* where its info record starts in the file, for messages */
};

struct br_gguf;

/* Opens and validates a file; on success *out owns the mapping (free with
 * br_gguf_close). On failure *out is NULL and err names the problem. */
int br_gguf_open(const char *path, struct br_gguf **out, struct br_err *err);

/* The same over a caller's buffer, which must outlive the reader (fuzzing, tests). */
int br_gguf_open_memory(const void *buf, size_t len, struct br_gguf **out, struct br_err *err);

/* NULL-safe; NULLs the caller's pointer. */
void br_gguf_close(struct br_gguf **g);

uint32_t br_gguf_version(const struct br_gguf *g);
uint64_t br_gguf_alignment(const struct br_gguf *g);
uint64_t br_gguf_data_offset(const struct br_gguf *g); /* start of the data section */
uint64_t br_gguf_file_size(const struct br_gguf *g);
const char *br_gguf_path(const struct br_gguf *g); /* "<memory>" for buffers */

size_t br_gguf_n_kv(const struct br_gguf *g);
const struct br_gguf_kv *br_gguf_kv_at(const struct br_gguf *g, size_t i);
const struct br_gguf_kv *br_gguf_find_kv(const struct br_gguf *g, const char *key);

size_t br_gguf_n_tensors(const struct br_gguf *g);
const struct br_gguf_tensor *br_gguf_tensor_at(const struct br_gguf *g, size_t i);
const struct br_gguf_tensor *br_gguf_find_tensor(const struct br_gguf *g, const char *name);

/* Typed getters. Any integer type (and bool) converts to the integer getters when the
 * value fits; F32/F64 convert to the float getter. BR_E_NOTFOUND when absent (err is then
 * left untouched), BR_E_FORMAT with a message when present with an unusable type/value. */
int br_gguf_get_u64(const struct br_gguf *g, const char *key, uint64_t *out, struct br_err *err);
int br_gguf_get_i64(const struct br_gguf *g, const char *key, int64_t *out, struct br_err *err);
int br_gguf_get_u32(const struct br_gguf *g, const char *key, uint32_t *out, struct br_err *err);
int br_gguf_get_f32(const struct br_gguf *g, const char *key, float *out, struct br_err *err);
int br_gguf_get_bool(const struct br_gguf *g, const char *key, bool *out, struct br_err *err);
/* String value into a caller buffer, NUL-terminated (BR_E_TOO_LONG if it does not fit). */
int br_gguf_get_str(const struct br_gguf *g, const char *key, char *buf, size_t cap,
                    struct br_err *err);

/* Array elements (kv->type must be BR_GGUF_ARRAY; i < kv->v.arr.n, checked by assert). */
double br_gguf_arr_f64(const struct br_gguf_kv *kv, uint64_t i);  /* numeric elements */
int64_t br_gguf_arr_i64(const struct br_gguf_kv *kv, uint64_t i); /* integer/bool elements */
void br_gguf_arr_str(const struct br_gguf_kv *kv, uint64_t i, const char **ptr, uint64_t *len);

/* Size in bytes of one value of a fixed-size type; 0 for string/array/unknown. */
size_t br_gguf_vtype_size(enum br_gguf_vtype t);
const char *br_gguf_vtype_name(enum br_gguf_vtype t);

/* ---- writer ---- */

struct br_gguf_writer;

int br_gguf_writer_create(struct br_gguf_writer **out);
void br_gguf_writer_destroy(struct br_gguf_writer **w);

/* Metadata, in the order given. Setting a key twice is BR_E_INVALID. */
int br_gguf_writer_set_u32(struct br_gguf_writer *w, const char *key, uint32_t v);
int br_gguf_writer_set_i32(struct br_gguf_writer *w, const char *key, int32_t v);
int br_gguf_writer_set_u64(struct br_gguf_writer *w, const char *key, uint64_t v);
int br_gguf_writer_set_f32(struct br_gguf_writer *w, const char *key, float v);
int br_gguf_writer_set_bool(struct br_gguf_writer *w, const char *key, bool v);
int br_gguf_writer_set_str(struct br_gguf_writer *w, const char *key, const char *v);
/* Any fixed-size scalar value type, raw little-endian bytes (tests of every type). */
int br_gguf_writer_set_raw(struct br_gguf_writer *w, const char *key, enum br_gguf_vtype t,
                           const void *v);
/* Arrays of a fixed-size element type: n elements of br_gguf_vtype_size(elem) bytes. */
int br_gguf_writer_set_arr(struct br_gguf_writer *w, const char *key, enum br_gguf_vtype elem,
                           const void *data, uint64_t n);
/* Arrays of strings: strs[i] with lens[i] bytes (lens NULL: strlen). */
int br_gguf_writer_set_arr_str(struct br_gguf_writer *w, const char *key, const char *const *strs,
                               const size_t *lens, uint64_t n);

/* Declares a tensor; data follows later in declaration order. nbytes is computed from the
 * type (sharding/types.h); BR_E_INVALID if the shape does not fit the type. */
int br_gguf_writer_add_tensor(struct br_gguf_writer *w, const char *name, uint32_t n_dims,
                              const uint64_t *ne, uint32_t type, struct br_err *err);

/* Writes the header (version 3) to path; after it, tensor data in declaration order. */
int br_gguf_writer_begin(struct br_gguf_writer *w, const char *path, struct br_err *err);
/* Appends bytes of the current tensor(s); padding between tensors is automatic. */
int br_gguf_writer_write(struct br_gguf_writer *w, const void *data, size_t n, struct br_err *err);
/* Checks every declared byte was written, pads, closes. */
int br_gguf_writer_finish(struct br_gguf_writer *w, struct br_err *err);

#endif
