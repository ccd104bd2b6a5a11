/*
 * bitrack C client: a DEALER socket speaking protocol v1 (proto/PROTOCOL.md) to the
 * coordinator's ROUTER.
 *
 * One struct br_client per thread (thread-compatible, not thread-safe): each owns its own
 * ZeroMQ context and socket, so clients never share state. Calls are synchronous; a
 * generate call streams `token` events to a callback until `done` or `error`, sends a
 * `ping` every ping interval while it waits (so the server keeps the request alive), and
 * gives up with BR_E_TIMEOUT (after sending `cancel`) when the server says nothing about
 * the request for timeout_ms. Replies to earlier, abandoned requests are recognised by id
 * and dropped.
 *
 * With CurveZMQ credentials (br_client_connect_curve) the connection is encrypted and the
 * client authenticates with its key pair; a server that refuses the handshake (an
 * unauthorized key, a wrong server key, or one side without CurveZMQ) makes calls fail
 * with BR_E_UNAVAILABLE and a message saying which.
 */
#ifndef BITRACK_CLIENT_H
#define BITRACK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitrack/status.h"
#include "proto/proto.h"

#define BR_CLIENT_DEFAULT_ADDR "tcp://127.0.0.1:5555"
/* How long a call waits for a connection to the server before failing with
 * BR_E_UNAVAILABLE naming the address (no server, wrong port, a refused key). */
#define BR_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define BR_CLIENT_ADDR_MAX                   256

/* Normalises an endpoint into out (out_len bytes): "tcp://", "ipc://" and "inproc://"
 * endpoints pass through; "host:port" (host a name, an IPv4 address, "[v6]" or "*";
 * port 1..65535) becomes "tcp://host:port". BR_E_INVALID naming the address otherwise. */
int br_client_addr_normalize(const char *addr, char *out, size_t out_len, struct br_err *err);

struct br_client;

/* Creates a client connected (asynchronously, as ZeroMQ does) to addr (NULL = the default
 * address; "host:port" means tcp://host:port). A call fails with BR_E_UNAVAILABLE when no
 * connection is up within the connect timeout (BR_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS,
 * br_client_set_connect_timeout). timeout_ms: how long a call waits for the server's next message
 * about its request before failing with BR_E_TIMEOUT; <= 0 waits forever. On success *out owns the
 * client (free with br_client_close). */
int br_client_connect(const char *addr, int timeout_ms, struct br_client **out, struct br_err *err);

/* CurveZMQ credentials of a client: z85 keys (40 characters and a NUL). */
struct br_client_curve {
    char server_key[41]; /* the server's public key */
    char public_key[41];
    char secret_key[41];
};

/* Fills *out from the server's public key file and this client's secret key file (the
 * public key is derived from the secret one). Each file must state its kind (see
 * proto/keyfile.h): a secret key given as the server's key, or a public key given as the
 * client's, is BR_E_MISMATCH naming the file. BR_E_UNSUPPORTED when libzmq has no CURVE. */
int br_client_curve_load(const char *server_key_file, const char *secret_key_file,
                         struct br_client_curve *out, struct br_err *err);

/* br_client_connect with CurveZMQ encryption and authentication when curve is not NULL
 * (copied; plaintext when NULL). */
int br_client_connect_curve(const char *addr, int timeout_ms, const struct br_client_curve *curve,
                            struct br_client **out, struct br_err *err);

/* Closes the socket, frees the client, and sets *c to NULL; NULL-safe (c or *c). */
void br_client_close(struct br_client **c);

/* Changes the call timeout (see br_client_connect) and the ping interval (default 1000 ms;
 * <= 0 disables pings). */
void br_client_set_timeout(struct br_client *c, int timeout_ms);
void br_client_set_ping_interval(struct br_client *c, int interval_ms);
/* How long a call waits for a connection before it fails (<= 0: as long as the call
 * timeout). */
void br_client_set_connect_timeout(struct br_client *c, int timeout_ms);

/* Called for every `token` event and finally for the `done` or `error` response of a
 * generate call. resp is borrowed for the call. Return 0 to continue; non-zero asks the
 * server to cancel the request (the call then waits for the final `done`). */
typedef int (*br_client_cb)(const struct br_resp *resp, void *user);

/* Sends req (type BR_REQ_GENERATE; an empty or NULL id gets a fresh one, never one used
 * before by this client) and waits for its end. A given id is never sent while a request
 * with it may still run on the server (an earlier call with it timed out or failed and
 * its final event has not come): BR_E_DUPLICATE. Returns BR_OK on `done` (whatever its
 * finish_reason), the status for an `error` response (br_proto_code_status: BR_E_BUSY,
 * BR_E_PROTOCOL, ...) with the server's message in err, BR_E_TIMEOUT, BR_E_UNAVAILABLE when the
 * message cannot be sent. cb may be NULL. */
int br_client_generate(struct br_client *c, const struct br_req *req, br_client_cb cb, void *user,
                       struct br_err *err);

/* Sends `cancel` for the request id (fire and forget; the server answers on the
 * generate's own stream with done/cancelled, or nothing if the id is unknown). */
int br_client_cancel(struct br_client *c, const char *id, struct br_err *err);

/* Tokenizes text (len bytes). On success *tokens is malloc'd (caller frees) with *n ids. */
int br_client_tokenize(struct br_client *c, const char *text, size_t len, bool add_bos,
                       int32_t **tokens, uint32_t *n, struct br_err *err);

/* Detokenizes ids. On success *text is malloc'd, NUL-terminated (caller frees). */
int br_client_detokenize(struct br_client *c, const int32_t *tokens, uint32_t n, char **text,
                         size_t *len, struct br_err *err);

int br_client_health(struct br_client *c, enum br_health_state *state, struct br_err *err);

/* info / metrics: on success *out owns the decoded response (kv list); br_resp_free it. */
int br_client_info(struct br_client *c, struct br_resp *out, struct br_err *err);
int br_client_metrics(struct br_client *c, struct br_resp *out, struct br_err *err);

/* Sends `ping` and waits for `pong`. */
int br_client_ping(struct br_client *c, struct br_err *err);

#endif
