/*
 * CurveZMQ for the ZeroMQ transport (see curve.h). The server's secret key comes from a
 * key file that states its kind (proto/keyfile.h). With a directory of authorized client
 * public keys, a ZAP handler (RFC 27) on its own thread admits only those keys; its socket
 * is bound before the router, so no handshake can happen while no handler is there to
 * refuse it. Every refusal is logged: an unknown key by the handler, a client without
 * CurveZMQ (or with the wrong server key) by the transport, from the router's monitor.
 */
#include "coordinator/curve.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bitrack/progress.h"
#include "proto/keyfile.h"

#define MONITOR "inproc://bitrack-monitor"

struct br_curve {
    const char *clients;    /* the directory, or NULL for --curve-any-client (borrowed) */
    char curve_secret[41];  /* the server's secret key, z85 */
    char (*curve_keys)[41]; /* (n_curve_keys,) authorized public keys, z85 */
    size_t n_curve_keys;
    void *zap;     /* ZAP REP socket; used by the ZAP thread */
    void *monitor; /* the router's failed handshakes (the transport's thread) */
    double monitor_last_log;
    long monitor_unlogged;
    pthread_t zap_thread;
    int zap_started;
    atomic_int quit;
};

static void *zap_main(void *arg);
static int load_keys(struct br_curve *s, const char *secret, const char *clients,
                     struct br_err *err);

int br_curve_check(const char *secret, const char *clients, int any_client, struct br_err *err)
{
    if (clients && !secret)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-clients %s needs --curve-secret FILE (the server's secret "
                          "key): without it the socket would be plaintext and the client list "
                          "ignored",
                          clients);
    if (any_client && !secret)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-any-client needs --curve-secret FILE (the server's secret key)");
    if (any_client && clients)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-any-client and --curve-clients %s contradict each other: give "
                          "one",
                          clients);
    if (secret && !clients && !any_client)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-secret needs --curve-clients DIR (the authorized client public "
                          "keys), or --curve-any-client to admit every client that has the "
                          "server's public key (encryption without client authentication)");
    if (secret && !zmq_has("curve"))
        return br_err_set(err, BR_E_UNSUPPORTED, "--curve-secret: this libzmq has no CurveZMQ");
    return BR_OK;
}

int br_curve_load(const char *secret, const char *clients, int any_client, struct br_curve **out,
                  struct br_err *err)
{
    *out = NULL;
    int rc = br_curve_check(secret, clients, any_client, err);
    if (rc || !secret) return rc;
    struct br_curve *s = calloc(1, sizeof *s);
    if (!s) return br_err_set(err, BR_E_NOMEM, "out of memory");
    s->clients = clients;
    rc = load_keys(s, secret, clients, err);
    if (rc) {
        br_curve_destroy(&s, NULL);
        return rc;
    }
    *out = s;
    return BR_OK;
}

static int load_keys(struct br_curve *s, const char *secret, const char *clients,
                     struct br_err *err)
{
    int rc;
    struct br_err kerr = {{0}};
    rc = br_key_file_read(secret, BR_KEY_SECRET, s->curve_secret, NULL, &kerr);
    if (rc) return br_err_set(err, rc, "--curve-secret: %s", kerr.msg);
    char pub[41];
    if (zmq_curve_public(pub, s->curve_secret))
        return br_err_set(err, BR_E_FORMAT, "--curve-secret: %s: not a usable CurveZMQ secret key",
                          secret);
    fprintf(stderr, "bitrack serve: CurveZMQ on; the server's public key is %s\n", pub);
    if (!clients) {
        fprintf(stderr, "bitrack serve: --curve-any-client: every client that has the server's "
                        "public key is admitted\n");
        return BR_OK;
    }
    DIR *d = opendir(clients);
    if (!d)
        return br_err_set(err, BR_E_INVALID, "--curve-clients %s: %s", clients, strerror(errno));
    /* Only a public key in a NAME.pub file counts: another file, or a .pub file holding a
     * secret key or a key of no stated kind, is named and skipped, never taken for a
     * client's key. */
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".pub") != 0) {
            fprintf(stderr, "bitrack serve: --curve-clients: skipping %s/%s (not a .pub file)\n",
                    clients, de->d_name);
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", clients, de->d_name);
        char key[41];
        if (br_key_file_read(path, BR_KEY_PUBLIC, key, NULL, &kerr)) {
            fprintf(stderr, "bitrack serve: --curve-clients: skipping %s\n", kerr.msg);
            continue;
        }
        char(*nk)[41] = realloc(s->curve_keys, (s->n_curve_keys + 1) * sizeof *nk);
        if (!nk) {
            closedir(d);
            return br_err_set(err, BR_E_NOMEM, "out of memory");
        }
        s->curve_keys = nk;
        memcpy(s->curve_keys[s->n_curve_keys++], key, 41);
    }
    closedir(d);
    if (s->n_curve_keys == 0)
        return br_err_set(err, BR_E_INVALID,
                          "--curve-clients %s holds no client public key (NAME.pub from bitrack "
                          "keygen): no client could connect",
                          clients);
    fprintf(stderr, "bitrack serve: %zu authorized client key%s in %s\n", s->n_curve_keys,
            s->n_curve_keys == 1 ? "" : "s", clients);
    return BR_OK;
}

int br_curve_apply(struct br_curve *s, void *zctx, void *router, struct br_err *err)
{
    if (!s) return BR_OK;
    int one = 1;
    if (zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, s->curve_secret, 40) ||
        zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "bitrack", 7))
        return br_err_set(err, BR_E_UNSUPPORTED, "%s: not a usable CurveZMQ secret key",
                          "--curve-secret");
    /* the monitor reports handshakes that failed before reaching the ZAP handler */
    if (zmq_socket_monitor(router, MONITOR,
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0) {
        s->monitor = zmq_socket(zctx, ZMQ_PAIR);
        if (s->monitor && zmq_connect(s->monitor, MONITOR)) {
            zmq_close(s->monitor);
            s->monitor = NULL;
        }
    }
    if (!s->clients) return BR_OK;
    int timeout = 200, linger = 0;
    s->zap = zmq_socket(zctx, ZMQ_REP);
    if (!s->zap || zmq_setsockopt(s->zap, ZMQ_RCVTIMEO, &timeout, sizeof timeout) ||
        zmq_setsockopt(s->zap, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(s->zap, "inproc://zeromq.zap.01"))
        return br_err_set(err, BR_E_INTERNAL, "cannot start the ZAP handler: %s",
                          zmq_strerror(zmq_errno()));
    if (pthread_create(&s->zap_thread, NULL, zap_main, s))
        return br_err_set(err, BR_E_INTERNAL, "cannot start the ZAP handler thread");
    s->zap_started = 1;
    return BR_OK;
}

/* The transport's thread: one monitor event (two frames: event number and value, then an address).
 */
void br_curve_handle_monitor(struct br_curve *s)
{
    static const char *const mismatch = "the client does not use CurveZMQ";
    uint8_t ev[6];
    char addr[256];
    int n = zmq_recv(s->monitor, ev, sizeof ev, ZMQ_DONTWAIT);
    if (n < 0) return;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(s->monitor, ZMQ_RCVMORE, &more, &ml);
    int al = more ? zmq_recv(s->monitor, addr, sizeof addr - 1, 0) : 0;
    addr[al > 0 ? (al < (int)sizeof addr ? al : (int)sizeof addr - 1) : 0] = '\0';
    if (n != 6) return;
    uint16_t event;
    uint32_t value;
    memcpy(&event, ev, 2);
    memcpy(&value, ev + 2, 4);
    /* a refused client retries every reconnect interval: one line per 10 s */
    double now = br_now();
    if (now - s->monitor_last_log < 10) {
        s->monitor_unlogged++;
        return;
    }
    s->monitor_last_log = now;
    char since[64] = "";
    if (s->monitor_unlogged)
        snprintf(since, sizeof since, "; %ld more since the last such line", s->monitor_unlogged);
    fprintf(stderr, "bitrack serve: refused a connection on %s: CurveZMQ handshake failed (%s%s)\n",
            addr,
            event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                    value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                ? mismatch
            : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                ? "protocol error; a wrong server key, or not a CurveZMQ client"
                : "the client broke off the handshake: it has no CurveZMQ, or another "
                  "server key",
            since);
    s->monitor_unlogged = 0;
}

/* ZAP handler: admits CURVE clients whose public key is authorized. A refused client
 * retries every reconnect interval; one line per key every 10 s is enough. */
static void *zap_main(void *arg)
{
    struct br_curve *s = arg;
    void *zap = s->zap;
    char last_refused[41] = "";
    double last_log = 0;
    while (!atomic_load(&s->quit)) {
        char parts[7][256];
        size_t lens[7] = {0};
        int n = 0, more = 1;
        while (more && n < 7) {
            int r = zmq_recv(zap, parts[n], sizeof parts[n], 0);
            if (r < 0) break;
            lens[n] = (size_t)r < sizeof parts[n] ? (size_t)r : sizeof parts[n];
            n++;
            size_t ml = sizeof more;
            zmq_getsockopt(zap, ZMQ_RCVMORE, &more, &ml);
        }
        if (n == 0) continue;
        while (more) { /* drain */
            char junk[256];
            if (zmq_recv(zap, junk, sizeof junk, 0) < 0) break;
            size_t ml = sizeof more;
            zmq_getsockopt(zap, ZMQ_RCVMORE, &more, &ml);
        }
        int ok = 0;
        char z85[41] = "(none)";
        if (n >= 7 && lens[5] == 5 && !memcmp(parts[5], "CURVE", 5) && lens[6] == 32) {
            zmq_z85_encode(z85, (const uint8_t *)parts[6], 32);
            for (size_t i = 0; i < s->n_curve_keys; i++) ok |= !strcmp(z85, s->curve_keys[i]);
        }
        if (!ok && (strcmp(z85, last_refused) || br_now() - last_log > 10)) {
            fprintf(stderr, "bitrack serve: refused a client: CurveZMQ key %s is not authorized\n",
                    z85);
            snprintf(last_refused, sizeof last_refused, "%s", z85);
            last_log = br_now();
        }
        const char *code = ok ? "200" : "400";
        zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(zap, parts[1], n > 1 ? lens[1] : 0, ZMQ_SNDMORE);
        zmq_send(zap, code, 3, ZMQ_SNDMORE);
        zmq_send(zap, ok ? "OK" : "unauthorized", ok ? 2 : 12, ZMQ_SNDMORE);
        zmq_send(zap, "", 0, ZMQ_SNDMORE);
        zmq_send(zap, "", 0, 0);
    }
    zmq_close(zap);
    return NULL;
}

void *br_curve_monitor_socket(struct br_curve *c)
{
    return c ? c->monitor : NULL;
}

void br_curve_destroy(struct br_curve **cp, void *router)
{
    if (!cp || !*cp) return;
    struct br_curve *c = *cp;
    atomic_store(&c->quit, 1);
    if (c->zap_started)
        pthread_join(c->zap_thread, NULL); /* it closes its socket */
    else if (c->zap)
        zmq_close(c->zap);
    if (c->monitor) {
        if (router) zmq_socket_monitor(router, NULL, 0);
        zmq_close(c->monitor);
    }
    free(c->curve_keys);
    free(c);
    *cp = NULL;
}
