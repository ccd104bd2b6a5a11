/*
 * bitrack client/server wire protocol, version 1 (see proto/PROTOCOL.md).
 *
 * Every message is one msgpack map in one ZeroMQ frame. This module turns bytes into C
 * structs and back, and nothing else: no sockets, no threads, no global state.
 *
 *   server side: br_proto_decode_request()  bytes -> struct br_req   (strictly checked)
 *                br_proto_encode_token() ...  values -> bytes         (one call per response)
 *   client side: br_proto_encode_request()  struct br_req -> bytes
 *                br_proto_decode_response() bytes -> struct br_resp   (strictly checked)
 *
 * Invariants:
 *  - Decoders never trust the peer: the whole buffer is pre-scanned (nesting depth,
 *    container counts against remaining bytes, total size) before msgpack-c allocates
 *    anything, and every known field is type- and range-checked against br_proto_limits.
 *    A bad message returns BR_E_PROTOCOL with a message naming the field; nothing crashes.
 *  - Decoded structs own all their memory (malloc); br_req_free / br_resp_free release it
 *    and leave the struct zeroed, so a second free is harmless. Strings are NUL-terminated
 *    and also carry their byte length.
 *  - Every string put on the wire is valid UTF-8: request strings are checked on decode,
 *    and response encoders replace invalid bytes with U+FFFD.
 */
#ifndef BITRACK_PROTO_H
#define BITRACK_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/buf.h"
#include "bitrack/status.h"

#define BR_PROTO_VERSION 1

/* ---- limits ---------------------------------------------------------------------------- */

/* What a decoder accepts. br_proto_limits_default fills the documented defaults; passing
 * lim = NULL to a decoder means the defaults. */
struct br_proto_limits {
    size_t max_msg_bytes;      /* whole message                      default 16 MiB */
    size_t max_id_bytes;       /* `id`, 1..this                      default 128 */
    size_t max_prompt_bytes;   /* `prompt`, `text`, sum of `messages[].content`: 1 MiB */
    uint32_t max_tokens_in;    /* `tokens` array length              default 131072 */
    int32_t max_new_tokens;    /* `max_tokens` upper bound           default 65536 */
    uint32_t max_stop;         /* `stop` strings                     default 16 */
    size_t max_stop_bytes;     /* each `stop` string, 1..this        default 256 */
    uint32_t max_stop_tokens;  /* `stop_tokens` entries              default 64 */
    uint32_t max_logit_bias;   /* `logit_bias` entries               default 1024 */
    uint32_t max_messages;     /* `messages` entries                 default 1024 */
    size_t max_template_bytes; /* `chat_template`                    default 64 KiB */
    int32_t vocab_size;        /* token ids must be < this; 0 = only check >= 0. default 0 */
};

void br_proto_limits_default(struct br_proto_limits *lim);

/* ---- requests (client -> server) ------------------------------------------------------- */

/* Every wire enum is one X-macro list of (enumerator, wire name): the enum and the name
 * table (br_proto_*_name, and the decoder's lookups) are both made from it, in order. */
#define BR_PROTO_ENUM_ENTRY(name, wire) name,

/* BR_REQ_NONE: not decoded (yet); cancel: cancels the generate request whose id is `id`;
 * ping: heartbeat, answered by `pong`. */
#define BR_REQ_TYPE_LIST(X)                                                                        \
    X(BR_REQ_NONE, "")                                                                             \
    X(BR_REQ_GENERATE, "generate")                                                                 \
    X(BR_REQ_CANCEL, "cancel")                                                                     \
    X(BR_REQ_TOKENIZE, "tokenize")                                                                 \
    X(BR_REQ_DETOKENIZE, "detokenize")                                                             \
    X(BR_REQ_HEALTH, "health")                                                                     \
    X(BR_REQ_INFO, "info")                                                                         \
    X(BR_REQ_METRICS, "metrics")                                                                   \
    X(BR_REQ_PING, "ping")
enum br_req_type { BR_REQ_TYPE_LIST(BR_PROTO_ENUM_ENTRY) };

/* Which of prompt / tokens / messages a generate request carries (exactly one). */
enum br_req_input {
    BR_INPUT_NONE = 0,
    BR_INPUT_PROMPT,
    BR_INPUT_TOKENS,
    BR_INPUT_MESSAGES,
};

#define BR_ROLE_LIST(X)                                                                            \
    X(BR_ROLE_SYSTEM, "system")                                                                    \
    X(BR_ROLE_USER, "user")                                                                        \
    X(BR_ROLE_ASSISTANT, "assistant")                                                              \
    X(BR_ROLE_TOOL, "tool")
enum br_chat_role { BR_ROLE_LIST(BR_PROTO_ENUM_ENTRY) };

struct br_chat_msg {
    enum br_chat_role role;
    char *content; /* owned, NUL-terminated, valid UTF-8 */
    size_t content_len;
};

struct br_logit_bias {
    int32_t token;
    float bias; /* finite in [-100, 100], or -INFINITY to ban the token */
};

/* Sampling parameters with their defaults (br_req_sampling_default) and accepted ranges. */
struct br_req_sampling {
    float temperature;       /* [0, 100], 0 = greedy             default 0 (greedy) */
    int32_t top_k;           /* [0, 1<<20], 0 = off              default 40 */
    float top_p;             /* [0, 1], 1 = off                  default 0.95 */
    float min_p;             /* [0, 1], 0 = off                  default 0.05 */
    float repeat_penalty;    /* (0, 10], 1 = off                 default 1.0 */
    int32_t repeat_last_n;   /* [0, 1<<20] tokens looked back    default 64 */
    float presence_penalty;  /* [-2, 2]                          default 0 */
    float frequency_penalty; /* [-2, 2]                          default 0 */
    bool has_seed;           /* false: the server picks a seed (also for seed = -1) */
    uint64_t seed;
    char **stop;      /* (n_stop) owned strings, each 1..max_stop_bytes bytes */
    size_t *stop_len; /* (n_stop) */
    uint32_t n_stop;
    int32_t *stop_tokens; /* (n_stop_tokens) */
    uint32_t n_stop_tokens;
    struct br_logit_bias *logit_bias; /* (n_logit_bias) */
    uint32_t n_logit_bias;
};

void br_req_sampling_default(struct br_req_sampling *s);

#define BR_REQ_MAX_TOP_LOGPROBS 20

/* One decoded request. Fields are meaningful only for the types noted. */
struct br_req {
    enum br_req_type type;
    int32_t version; /* `v` */
    char *id;        /* owned; every type; 1..max_id_bytes bytes */
    size_t id_len;

    /* generate */
    enum br_req_input input;
    char *prompt; /* BR_INPUT_PROMPT; also `text` of tokenize */
    size_t prompt_len;
    int32_t *tokens; /* (n_tokens) BR_INPUT_TOKENS; also detokenize's `tokens` */
    uint32_t n_tokens;
    struct br_chat_msg *messages; /* (n_messages) BR_INPUT_MESSAGES */
    uint32_t n_messages;
    int32_t max_tokens;   /* [1, max_new_tokens], default 256 */
    bool stream;          /* default false */
    bool logprobs;        /* default false */
    int32_t top_logprobs; /* alternatives per token, 0..BR_REQ_MAX_TOP_LOGPROBS, default 0;
                           * above 0 needs logprobs */
    bool add_bos;         /* default true for prompt/messages/tokenize, false for tokens */
    char *chat_template;  /* NULL = the model's own */
    size_t chat_template_len;
    struct br_req_sampling sampling;
};

/* Zeroes *r and applies the defaults above (type BR_REQ_NONE, version BR_PROTO_VERSION).
 * Use it before filling a request by hand for br_proto_encode_request. */
void br_req_init(struct br_req *r);

/* Frees everything *r owns and re-initialises it; NULL-safe. Only for requests whose
 * memory came from br_proto_decode_request (or malloc, same layout). */
void br_req_free(struct br_req *r);

/* Server side. Decodes one message. On success returns BR_OK and *out owns its memory.
 * On failure returns BR_E_PROTOCOL (BR_E_NOMEM if memory ran out), err names the field
 * ("max_tokens: must be an integer in [1, 65536], got -3"), and *out holds what was decoded
 * so far: in particular out->id is set whenever the message had a readable `id`, so the
 * caller can address its `error` (code bad_request) to it. Call br_req_free either way.
 * lim may be NULL (defaults); a server sets lim->vocab_size so token ids are range-checked.
 * Typical use in a front end:
 *
 *     rc = br_proto_decode_request(frame, n, &lim, &req, &err);
 *     if (rc) br_proto_encode_error(&out, req.id, br_proto_status_code(rc), err.msg);
 *     ...
 *     br_req_free(&req);
 */
int br_proto_decode_request(const void *buf, size_t len, const struct br_proto_limits *lim,
                            struct br_req *out, struct br_err *err);

/* Client side. Encodes *req (type must not be BR_REQ_NONE) into out, replacing its
 * contents. Writes every field relevant to req->type. BR_E_INVALID if req is
 * inconsistent (no id, unknown type), BR_E_NOMEM. */
int br_proto_encode_request(const struct br_req *req, struct br_buf *out);

/* ---- responses (server -> client) ------------------------------------------------------ */

#define BR_RESP_TYPE_LIST(X)                                                                       \
    X(BR_RESP_NONE, "")                                                                            \
    X(BR_RESP_TOKEN, "token")                                                                      \
    X(BR_RESP_DONE, "done")                                                                        \
    X(BR_RESP_ERROR, "error")                                                                      \
    X(BR_RESP_TOKENIZE, "tokenize")                                                                \
    X(BR_RESP_DETOKENIZE, "detokenize")                                                            \
    X(BR_RESP_HEALTH, "health")                                                                    \
    X(BR_RESP_INFO, "info")                                                                        \
    X(BR_RESP_METRICS, "metrics")                                                                  \
    X(BR_RESP_PONG, "pong")
enum br_resp_type { BR_RESP_TYPE_LIST(BR_PROTO_ENUM_ENTRY) };

#define BR_FINISH_LIST(X)                                                                          \
    X(BR_FINISH_STOP, "stop")                                                                      \
    X(BR_FINISH_LENGTH, "length")                                                                  \
    X(BR_FINISH_CANCELLED, "cancelled")                                                            \
    X(BR_FINISH_ERROR, "error")
enum br_finish { BR_FINISH_LIST(BR_PROTO_ENUM_ENTRY) };

/* The `code` of an `error` response. duplicate_id: a generate request reused the id of one
 * of this client's requests still in flight; the request in flight is unaffected. */
#define BR_PROTO_CODE_LIST(X)                                                                      \
    X(BR_PROTO_BAD_REQUEST, "bad_request")                                                         \
    X(BR_PROTO_TOO_LONG, "too_long")                                                               \
    X(BR_PROTO_BUSY, "busy")                                                                       \
    X(BR_PROTO_CANCELLED, "cancelled")                                                             \
    X(BR_PROTO_UNAVAILABLE, "unavailable")                                                         \
    X(BR_PROTO_INTERNAL, "internal")                                                               \
    X(BR_PROTO_DUPLICATE_ID, "duplicate_id")
enum br_proto_code { BR_PROTO_CODE_LIST(BR_PROTO_ENUM_ENTRY) };

#define BR_HEALTH_LIST(X)                                                                          \
    X(BR_HEALTH_LOADING, "loading")                                                                \
    X(BR_HEALTH_READY, "ready")                                                                    \
    X(BR_HEALTH_DRAINING, "draining")
enum br_health_state { BR_HEALTH_LIST(BR_PROTO_ENUM_ENTRY) };

struct br_usage {
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
};

struct br_timings {
    double queue_ms;     /* arrival -> admitted to the batch */
    double ttft_ms;      /* arrival -> first token */
    double total_ms;     /* arrival -> done */
    double tokens_per_s; /* completion tokens / decode time */
};

/* One entry of an `info` or `metrics` map. */
enum br_kv_kind {
    BR_KV_INT = 0,
    BR_KV_DOUBLE,
    BR_KV_STR,
    BR_KV_BOOL,
};

struct br_kv {
    const char *key; /* borrowed when encoding; owned when decoded into a br_resp */
    enum br_kv_kind kind;
    int64_t i;     /* BR_KV_INT, BR_KV_BOOL (0/1) */
    double d;      /* BR_KV_DOUBLE */
    const char *s; /* BR_KV_STR: borrowed when encoding; owned when decoded */
};

/* One decoded response. Fields are meaningful only for the types noted. */
/* One alternative of a token message: a token id, its logprob and its bytes (as UTF-8 on
 * the wire: U+FFFD for bytes that form no character, as a token may end inside one).
 * Decoded: text owned (NUL-terminated); encoded: borrowed bytes. */
struct br_resp_alt {
    int32_t token;
    float logprob;
    char *text;
    size_t text_len;
};

struct br_resp {
    enum br_resp_type type;
    char *id; /* owned; NULL on an `error` for a message whose id was unreadable */
    size_t id_len;

    /* token */
    uint32_t index; /* 0-based position among the completion tokens */
    int32_t token;  /* -1: a text-only event (see br_proto_encode_token) */
    bool has_logprob;
    float logprob;
    /* token: the piece; done: the full text when not streaming (else NULL);
     * detokenize: the text. Owned, NUL-terminated, valid UTF-8. */
    char *text;
    size_t text_len;
    /* token, when the request asked for top_logprobs: the alternatives, most likely first */
    struct br_resp_alt *top; /* (n_top) */
    uint32_t n_top;

    /* done */
    enum br_finish finish_reason;
    struct br_usage usage;
    struct br_timings timings;

    /* error */
    enum br_proto_code code;
    char *message; /* owned */

    /* tokenize */
    int32_t *tokens; /* (n_tokens) */
    uint32_t n_tokens;

    /* health */
    enum br_health_state state;

    /* info, metrics: keys and string values owned */
    struct br_kv *kv; /* (n_kv) */
    uint32_t n_kv;
};

/* Frees everything *r owns and zeroes it; NULL-safe. */
void br_resp_free(struct br_resp *r);

/* Client side. Decodes one server message into *out (call br_resp_free after, success or
 * not). BR_E_PROTOCOL with a message naming the field on anything malformed; unknown
 * fields are ignored. lim bounds sizes (NULL = defaults; text may be up to max_msg_bytes). */
int br_proto_decode_response(const void *buf, size_t len, const struct br_proto_limits *lim,
                             struct br_resp *out, struct br_err *err);

/* Server side encoders: each replaces out's contents with one complete message. They
 * return BR_OK, BR_E_NOMEM, or BR_E_INVALID for a NULL id where one is required. Text
 * arguments are bytes (piece, len); invalid UTF-8 is replaced with U+FFFD, so callers
 * should hold back an incomplete trailing character (br_proto_utf8_complete). */

/* logprob: NULL when the request did not ask for logprobs. token -1 marks a text-only event
 * (bytes held back for UTF-8 completeness, flushed at the end); its index repeats the last
 * token's. */
int br_proto_encode_token(struct br_buf *out, const char *id, uint32_t index, int32_t token,
                          const char *piece, size_t piece_len, const float *logprob);
/* The same with the alternatives top (n_top, at most BR_REQ_MAX_TOP_LOGPROBS; sent only
 * with a logprob). */
int br_proto_encode_token_top(struct br_buf *out, const char *id, uint32_t index, int32_t token,
                              const char *piece, size_t piece_len, const float *logprob,
                              const struct br_resp_alt *top, uint32_t n_top);
/* text: the full completion for non-streaming requests, NULL when streaming. */
int br_proto_encode_done(struct br_buf *out, const char *id, enum br_finish reason,
                         const struct br_usage *usage, const struct br_timings *timings,
                         const char *text, size_t text_len);
/* id may be NULL (the request's id was unreadable): the message then has id nil. */
int br_proto_encode_error(struct br_buf *out, const char *id, enum br_proto_code code,
                          const char *message);
int br_proto_encode_tokenize(struct br_buf *out, const char *id, const int32_t *tokens,
                             uint32_t n_tokens);
int br_proto_encode_detokenize(struct br_buf *out, const char *id, const char *text,
                               size_t text_len);
int br_proto_encode_health(struct br_buf *out, const char *id, enum br_health_state state);
/* kv: (n) entries, keys and string values borrowed for the call. */
int br_proto_encode_info(struct br_buf *out, const char *id, const struct br_kv *kv, size_t n);
int br_proto_encode_metrics(struct br_buf *out, const char *id, const struct br_kv *kv, size_t n);
int br_proto_encode_pong(struct br_buf *out, const char *id);

/* Encodes any decoded response (the inverse of br_proto_decode_response); handy for
 * relays and fake servers. */
int br_proto_encode_response(const struct br_resp *r, struct br_buf *out);

/* ---- names and helpers ----------------------------------------------------------------- */

/* Wire names ("generate", "token", "stop", "bad_request", "ready", "user"); never NULL. */
const char *br_proto_req_type_name(enum br_req_type t);
const char *br_proto_resp_type_name(enum br_resp_type t);
const char *br_proto_finish_name(enum br_finish f);
const char *br_proto_code_name(enum br_proto_code c);
const char *br_proto_health_name(enum br_health_state s);
const char *br_proto_role_name(enum br_chat_role r);

/* The br_status a client reports for an error code (busy -> BR_E_BUSY, bad_request ->
 * BR_E_PROTOCOL, too_long -> BR_E_TOO_LONG, ...), and the code a server sends for a
 * status (BR_E_BUSY -> busy, BR_E_PROTOCOL/BR_E_INVALID/BR_E_RANGE -> bad_request, ...). */
int br_proto_code_status(enum br_proto_code c);
enum br_proto_code br_proto_status_code(int status);

/* Length of the longest prefix of s[0..len) that does not end inside an incomplete (but so
 * far valid) UTF-8 sequence. A streaming server emits s[0..n) and keeps s[n..len) until
 * the next token completes it; invalid bytes count as complete (they become U+FFFD). */
size_t br_proto_utf8_complete(const char *s, size_t len);
/* True when s[0..len) is valid UTF-8 (no overlongs, surrogates, or > U+10FFFF). */
bool br_proto_utf8_valid(const char *s, size_t len);
/* Appends s[0..len) to out with each byte that starts no valid character replaced by
 * U+FFFD: the rule the response encoders apply, for other encodings of the same text
 * (the HTTP API's JSON). BR_E_NOMEM (out unchanged but for what was appended). */
int br_proto_utf8_append(struct br_buf *out, const char *s, size_t len);

#endif
