/*
 * The OpenAI-compatible HTTP API's bodies: JSON in, JSON out (coordinator/frontend_http.c
 * serves them). No sockets and no threads here, so the parser can be unit-tested and
 * fuzzed alone (tests/unit/http_api_test.c, tests/fuzz/fuzz_http_request.c).
 *
 *   br_http_parse_request()   body of POST /v1/completions or /v1/chat/completions ->
 *                             a native generate request (proto/proto.h's struct br_req)
 *   br_http_*_json()          response objects, stream chunks, errors, the model list
 *
 * JSON is read and written with Jansson. Its parser is strict where a hostile body would
 * hurt: it refuses invalid UTF-8, NUL in strings, duplicate keys (JSON_REJECT_DUPLICATES),
 * integers that do not fit 64 bits and trailing bytes. What one parse may allocate is
 * bounded by a budget proportional to the body (br_http_parse_request), so a small body
 * of many tiny values cannot make the server allocate without bound.
 *
 * The request maps onto the same struct br_req the ZeroMQ protocol decodes, with the same
 * ranges and defaults (PROTOCOL.md), so both transports feed the scheduler identical
 * requests: a parameter the client leaves out takes the server's default, not OpenAI's.
 * Parameters this server cannot honour (n > 1, echo) are refused with a
 * 400 naming them, never silently ignored; fields it does not know are ignored, as in the
 * ZeroMQ protocol and as SDKs that send extra fields expect.
 */
#ifndef BR_COORDINATOR_HTTP_API_H
#define BR_COORDINATOR_HTTP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "proto/proto.h"

enum br_http_kind {
    BR_HTTP_COMPLETIONS = 0, /* POST /v1/completions: `prompt` */
    BR_HTTP_CHAT,            /* POST /v1/chat/completions: `messages` */
};

/* An OpenAI error object: {"error": {"message", "type", "param", "code"}}, sent with
 * `status`. param and code are empty when they do not apply (JSON null). */
struct br_http_error {
    int status;       /* HTTP status: 400, 401, 404, 413, 429, 500, 503 */
    const char *type; /* "invalid_request_error", "authentication_error", ... (static) */
    char param[64];
    char code[48];
    char message[512];
};

/* Fills *e (message printf-style); returns e->status for `return br_http_error_set(...)`. */
int br_http_error_set(struct br_http_error *e, int status, const char *param, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The error a native error code maps to: bad_request 400, too_long 400
 * (context_length_exceeded), busy 429, unavailable 503, cancelled 499, internal 500. */
void br_http_error_from_code(struct br_http_error *e, enum br_proto_code code, const char *msg);

/* A parsed generation request. */
struct br_http_req {
    enum br_http_kind kind;
    struct br_req req;    /* type GENERATE; stream, logprobs, sampling, input... (id unset) */
    char *model;          /* owned; NULL when absent */
    bool stream;          /* `stream` */
    bool include_usage;   /* `stream_options.include_usage` */
    bool logprobs;        /* the sampled token's logprob was asked for */
    int32_t top_logprobs; /* alternatives per token: chat `top_logprobs`, completions
                           * `logprobs` (also in req.top_logprobs) */
};

/* Parses and validates body[0..len) for `kind` against lim (NULL = PROTOCOL.md's
 * defaults; lim->vocab_size > 0 range-checks token ids, lim->max_prompt_bytes bounds the
 * prompt or the messages' content). On success BR_OK and *out owns its memory; on failure
 * BR_E_PROTOCOL (or BR_E_NOMEM) with *e a 400 naming the parameter. Either way call
 * br_http_req_free. */
int br_http_parse_request(enum br_http_kind kind, const char *body, size_t len,
                          const struct br_proto_limits *lim, struct br_http_req *out,
                          struct br_http_error *e);

/* Frees what *r owns and zeroes it; NULL-safe, idempotent. */
void br_http_req_free(struct br_http_req *r);

/* ---- encoders: each returns a malloc'd NUL-terminated JSON text (free()), or NULL when
 * memory ran out. Text arguments must be valid UTF-8 (token pieces from proto/proto.h's
 * decoder are). */

char *br_http_error_json(const struct br_http_error *e);

/* One alternative token: its bytes (not necessarily valid UTF-8: a token may end inside a
 * character) and logprob. */
struct br_http_alt {
    const char *bytes; /* (len) */
    size_t len;
    float logprob;
};

/* The alternatives at one position, most likely first (completions: plus the sampled
 * token when it is not among them, as OpenAI's "up to logprobs + 1"). */
struct br_http_top {
    uint32_t n;
    struct br_http_alt alt[BR_REQ_MAX_TOP_LOGPROBS + 1];
};

/* Token logprobs of a completion, in order: each token's text piece and logprob, and the
 * alternatives when they were asked for. */
struct br_http_logprobs {
    const char *const *pieces; /* (n) NUL-terminated */
    const float *logprobs;     /* (n) */
    size_t n;
    const struct br_http_top *top; /* (n), or NULL: no alternatives asked (chat
                                    * top_logprobs [], completions top_logprobs null) */
};

/* The non-streaming response: "text_completion" or "chat.completion". finish is
 * "stop" or "length". lp may be NULL (logprobs: null). */
char *br_http_completion_json(enum br_http_kind kind, const char *id, int64_t created,
                              const char *model, const char *text, size_t text_len,
                              const char *finish, const struct br_usage *usage,
                              const struct br_http_logprobs *lp);

/* One streamed chunk ("text_completion" or "chat.completion.chunk"). For chat, role_first
 * adds delta.role "assistant". finish is NULL until the last chunk. lp: this chunk's one
 * token (n <= 1) or NULL. usage: the include_usage chunk (choices empty); NULL otherwise;
 * with usage, piece/finish/lp are ignored. */
char *br_http_chunk_json(enum br_http_kind kind, const char *id, int64_t created, const char *model,
                         const char *piece, size_t piece_len, bool role_first, const char *finish,
                         const struct br_http_logprobs *lp, const struct br_usage *usage);

/* GET /v1/models: one model, with its vocabulary size and context in "meta". */
char *br_http_models_json(const char *model, int64_t created, int32_t n_vocab, int32_t n_ctx);

#endif
