/*
 * The ZeroMQ transport (frontend_zmq.c): proto/PROTOCOL.md on a ROUTER socket, with
 * CurveZMQ (coordinator/curve.h) when configured. Started and stopped by the server
 * through coordinator/transport.h's struct br_transport_ops.
 */
#ifndef BR_COORDINATOR_FRONTEND_ZMQ_H
#define BR_COORDINATOR_FRONTEND_ZMQ_H

#include "coordinator/transport.h"

extern const struct br_transport_ops br_frontend_zmq;

#endif
