/*
 * CurveZMQ for the ZeroMQ transport: the server's keys, the ZAP handler that admits only
 * authorized client keys, and the log of refused handshakes (docs/RELIABILITY.md,
 * "Security").
 *
 * The Curve options are accepted only as a complete, consistent set (br_curve_check);
 * every key file is loaded at start and must state the kind it is given as (proto/
 * keyfile.h). br_curve_load runs in the caller's thread before anything listens, so a
 * misconfiguration stops the server with a message naming the flag.
 *
 * Threads: br_curve_apply starts the ZAP handler thread (its socket bound before the
 * router, so no handshake is ever accepted without the check); the monitor socket is
 * read by the transport's thread (br_curve_monitor_socket, br_curve_handle_monitor);
 * br_curve_destroy ends the ZAP thread.
 */
#ifndef BR_COORDINATOR_CURVE_H
#define BR_COORDINATOR_CURVE_H

#include "bitrack/status.h"

struct br_curve;

/* secret: the server's secret key file; clients: directory of NAME.pub files; any_client:
 * admit any client that has the server's public key. Names the missing or contradicting
 * flag (--curve-secret, --curve-clients, --curve-any-client); loads no file. */
int br_curve_check(const char *secret, const char *clients, int any_client, struct br_err *err);

/* Checks, then loads the keys; *out NULL when Curve is off (no secret). */
int br_curve_load(const char *secret, const char *clients, int any_client, struct br_curve **out,
                  struct br_err *err);

/* Puts the keys on the router (before it binds) and starts the ZAP handler; zctx is the
 * router's context. */
int br_curve_apply(struct br_curve *c, void *zctx, void *router, struct br_err *err);

/* The monitor socket of failed handshakes (NULL when none), and reading one event. */
void *br_curve_monitor_socket(struct br_curve *c);
void br_curve_handle_monitor(struct br_curve *c);

/* Stops the ZAP handler and the monitor (before the context is terminated); NULL-safe. */
void br_curve_destroy(struct br_curve **c, void *router);

#endif
