/*
 * Endpoint spelling shared by every place that takes an address (clients' --server,
 * serve's --listen, the C client library): users type "127.0.0.1:5555" as they would for
 * any TCP service, while ZeroMQ wants a transport prefix and answers a bare "host:port"
 * with EINVAL. So "host:port" means "tcp://host:port"; endpoints with a transport pass
 * through unchanged; anything else is refused with a message naming the address.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/client.h"

/* A port is 1..65535 in decimal, or "*" (bind to any port). */
static int port_ok(const char *p)
{
    if (!strcmp(p, "*")) return 1;
    if (!*p || strlen(p) > 5) return 0;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return 0;
    long v = strtol(p, NULL, 10);
    return v >= 1 && v <= 65535;
}

/* host:port; an IPv6 host is bracketed, so the port follows the last colon. For tcp://
 * ZeroMQ also takes "interface:port" and "source;host:port", which pass as a host. */
static int hostport_ok(const char *a)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || !port_ok(colon + 1)) return 0;
    if (a[0] == '[') {
        if (colon[-1] != ']') return 0;
    } else if (memchr(a, ':', (size_t)(colon - a)) && !strchr(a, ';')) {
        return 0; /* an IPv6 address without brackets */
    }
    for (const char *q = a; q < colon; q++)
        if (*q == ' ' || *q == '/' || *q == '\t') return 0;
    return 1;
}

int br_client_addr_normalize(const char *addr, char *out, size_t out_len, struct br_err *err)
{
    if (!addr || !*addr) return br_err_set(err, BR_E_INVALID, "empty address");
    size_t n = strlen(addr);
    const char *sep = strstr(addr, "://");
    int tcp = !sep || (sep - addr == 3 && !strncmp(addr, "tcp", 3));
    if (sep && !tcp && !(sep - addr == 3 && !strncmp(addr, "ipc", 3)) &&
        !(sep - addr == 6 && !strncmp(addr, "inproc", 6)))
        return br_err_set(err, BR_E_INVALID,
                          "address '%.200s': unknown transport (tcp://, ipc:// or inproc://)",
                          addr);
    if (tcp && !hostport_ok(sep ? sep + 3 : addr))
        return br_err_set(err, BR_E_INVALID,
                          "address '%.200s': give host:port or tcp://host:port (e.g. "
                          "127.0.0.1:5555)",
                          addr);
    if (n + (sep ? 1 : 7) > out_len)
        return br_err_set(err, BR_E_INVALID, "address too long: %.64s...", addr);
    snprintf(out, out_len, "%s%s", sep ? "" : "tcp://", addr);
    return BR_OK;
}
