/*
 * Tensor decoding and encoding (docs/FORMATS.md §2).
 *
 * Non-ternary tensors (embeddings, the output head, norms) decode to float rows. Ternary
 * tensors (I2_S, TQ1_0, TQ2_0, or F32/F16/BF16 holding only {-s, 0, +s}) decode into the
 * canonical packed layout of kernels/ternary.h plus one scale per row. A sub-rectangle
 * (rows [row0, row1), columns [col0, col1)) can be decoded alone, which is how a rank
 * takes only its shard; scales and ternary checks always consider the whole row, so every
 * rank agrees on a row's scale.
 *
 * Ternary rules: a TQ1_0/TQ2_0 row whose blocks carry different scales is rejected (one
 * scale per row is what BitLinear needs); a float tensor is ternary when every row's
 * nonzero values are exactly +s or -s for one s per row (s = the row's max |value|).
 * A per-tensor scale, as I2_S stores, becomes the same value on every row.
 */
#ifndef BR_SHARDING_DECODE_H
#define BR_SHARDING_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "kernels/ternary.h"
#include "sharding/gguf.h"

/* Decodes rows [row0, row0 + nrows) of a 2-D tensor with ne0 elements per row into
 * out (nrows, ne0). Types: F32, F16, BF16, Q8_0, Q6_K. `data` is the tensor's first
 * byte. BR_E_UNSUPPORTED for other types. */
int br_decode_rows_f32(uint32_t type, const void *data, uint64_t ne0, uint64_t row0, uint64_t nrows,
                       float *out, struct br_err *err);
/* Whether br_decode_rows_f32 decodes `type` (F32, F16, BF16, Q8_0, Q6_K). */
bool br_decode_rows_supported(uint32_t type);

/* Decodes t, the 1-D (or 1 x n) float tensor `name`, which must hold n elements, all finite,
 * and copies its elements [e0, e1) to out (e1 - e0 floats). BR_E_FORMAT names the tensor
 * when it is missing (t NULL), of another size or not finite. */
int br_decode_norm(const struct br_gguf_tensor *t, const char *name, int64_t n, int64_t e0,
                   int64_t e1, float *out, struct br_err *err);

/* Decodes the sub-rectangle of a ternary weight tensor t (ne = {cols, rows}) into *out,
 * which this function initializes (br_tmat_init) with (row1-row0) x (col1-col0).
 * On error *out is freed and err names the tensor, row and reason. */
int br_decode_ternary(const struct br_gguf_tensor *t, int32_t row0, int32_t row1, int32_t col0,
                      int32_t col1, struct br_tmat *out, struct br_err *err);
/* The same with the codes in the caller's memory (br_tmat_init_in; NULL allocates). */
int br_decode_ternary_in(const struct br_gguf_tensor *t, int32_t row0, int32_t row1, int32_t col0,
                         int32_t col1, uint8_t *codes, struct br_tmat *out, struct br_err *err);

/* Byte size of a rows x cols ternary tensor in `type` (I2_S, TQ1_0, TQ2_0, F16, F32,
 * BF16); 0 if the shape does not fit the type. */
uint64_t br_encode_ternary_size(uint32_t type, int32_t rows, int32_t cols);

/* Encodes a whole ternary matrix (all rows must share one scale for I2_S; TQ types store
 * each row's scale in its blocks as f16) into out (br_encode_ternary_size bytes).
 * Rows may be encoded in pieces: rows [row0, row1) go to out, which then holds
 * (row1-row0) rows' bytes — except I2_S, whose scale tail follows only the last piece
 * (pass row1 == m->rows for it). */
int br_encode_ternary(uint32_t type, const struct br_tmat *m, int32_t row0, int32_t row1, void *out,
                      struct br_err *err);

/* Encodes float rows (nrows, ne0) to F32, F16, BF16, Q8_0 or Q6_K bytes (row-major). */
uint64_t br_encode_rows_size(uint32_t type, uint64_t ne0, uint64_t nrows);
int br_encode_rows_f32(uint32_t type, const float *x, uint64_t ne0, uint64_t nrows, void *out,
                       struct br_err *err);

#endif
