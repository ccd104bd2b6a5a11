/*
 * struct br_comm over MPI (see comm_mpi.h). Collectives run on a per-stage communicator;
 * pipeline and coordinator messages on the world communicator with their own tags, so a
 * result for rank 0 can never be taken for a pipeline message.
 *
 * Lost ranks. Open MPI without ULFM has no notion of a failed peer: a rank killed on this
 * machine is noticed by mpirun (which then sends SIGTERM to the others and SIGKILL a
 * second later), and a rank behind a dead link may never make a blocked call return. So
 * once watched (br_comm_mpi_watch), point-to-point operations are started non-blocking
 * and polled: rank 0 gives up after its step deadline, every rank gives up when a signal
 * arrived and a rank on this machine is gone, and the others also when rank 0 reports a
 * lost rank on TAG_LOST. To name a lost rank, start-up gathers every rank's pid, host name
 * and pid namespace. MPI's own collectives stay blocking (a TP group lives on one host,
 * where mpirun sees a death); the direct ones this file does itself (direct()) are
 * point-to-point messages and watched like them. Unwatched, every wait is a plain blocking
 * one.
 */
#include "worker/comm_mpi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <mpi.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bitrack/progress.h"
#include "sharding/plan.h"

enum { TAG_PIPE = 101, TAG_ROOT = 102, TAG_LOST = 103, TAG_DIRECT = 104 };

/* int32s of one block a direct reduce-scatter or all-reduce can sum: the plan's largest
 * (BR_COLL_DIRECT_BLOCK_MAX bytes of an even split), and room for a split in whole
 * 256-element chunks, whose largest block is up to 255 elements more. */
#define DSUM_BLOCK ((BR_COLL_DIRECT_BLOCK_MAX + 4096) / 4)

/* What start-up learns about every rank, to name a lost one. */
struct peer {
    int32_t pid;
    char host[92];  /* processor name, with Open MPI's daemon address when known */
    char space[96]; /* boot id and pid namespace: equal means pids can be checked here */
};

struct mpi_impl {
    MPI_Comm stage;
    int *bytes_counts, *bytes_displs; /* (tp,) scratch */
    struct peer *peers;               /* (world_size,) */
    int watched;
    double timeout_s;
    double spin_s; /* how long a watched wait polls before it starts sleeping */
    int (*interrupted)(void *);
    void *arg;
    double last_check;    /* when dead peers were last looked for */
    double signal_seen;   /* when interrupted() first said a signal arrived; 0 before */
    int failed;           /* an operation failed: the job is ending, later waits fail at once */
    MPI_Request lost_req; /* ranks != 0: the posted receive of rank 0's report */
    char lost_msg[256];
    double delay_s; /* emulated one-way link delay (BITRACK_EMULATED_DELAY_US), 0: none */
    int rounds;     /* message rounds of a collective of the TP group: ceil(log2 tp) */
    /* the idle doorbell (br_comm_mpi_doorbell): a UDP socket; rank 0 sends every other
     * rank a datagram when a step starts after a pause, the others sleep in poll() on it
     * while they wait for a step */
    int bell_fd;                 /* -1: none */
    struct sockaddr_in *bell_to; /* rank 0: (world_size,) where each rank listens */
    int nb_bcast;                /* broadcasts are non-blocking and waited like the rest */
    double last_ring, woken;
    /* direct collectives (direct()): (2 (tp-1),) requests; the others' buffers of a
     * max-all-reduce ((tp-1) x BR_COLL_DIRECT_MAX bytes); the others' parts of this rank's
     * block of a reduce-scatter or sum-all-reduce ((tp-1) x DSUM_BLOCK int32) */
    MPI_Request *dreq;
    float *dbuf;
    int32_t *dsum;
    double alpha_s, bw;    /* the link the choice assumes (br_comm_mpi_set_link) */
    uint64_t direct_calls; /* collectives taken the direct way (br_comm_mpi_direct_calls) */
};

/* An emulated link delay (launch/netns-cluster sets BITRACK_EMULATED_DELAY_US where the
 * kernel cannot delay packets): each completed receive, and each round of a collective,
 * costs the delay more, spent polling the clock and yielding the core (a sleep this short
 * overshoots by tens of us). */
static void emulate_delay(const struct br_comm *c, int rounds)
{
    const struct mpi_impl *m = c->impl;
    if (m->delay_s <= 0 || rounds <= 0) return;
    double until = br_now() + m->delay_s * rounds;
    while (br_now() < until) sched_yield(); /* the kernel threads moving packets may need it */
}

static int collective_done(const struct br_comm *c, int rc)
{
    if (rc == MPI_SUCCESS) emulate_delay(c, ((const struct mpi_impl *)c->impl)->rounds);
    return rc;
}

static struct mpi_impl *impl(const struct br_comm *c)
{
    return c->impl;
}

static int mpi_status(int rc)
{
    return rc == MPI_SUCCESS ? BR_OK : BR_E_UNAVAILABLE;
}

/* "rank 2 (pid 123 on node1 [10.0.0.2])" */
static void name_rank(const struct br_comm *c, int r, char *out, size_t n)
{
    const struct peer *p = impl(c)->peers ? &impl(c)->peers[r] : NULL;
    if (p)
        snprintf(out, n, "rank %d (pid %d on %s)", r, (int)p->pid, p->host);
    else
        snprintf(out, n, "rank %d", r);
}

/* Sets c->why and returns BR_E_UNAVAILABLE. */
static int lost(struct br_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lost(struct br_comm *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    impl(c)->failed = 1;
    return BR_E_UNAVAILABLE;
}

/* A rank sharing this machine's pid namespace whose process is gone (or a zombie), or -1. */
static int dead_peer(const struct br_comm *c)
{
    struct mpi_impl *m = impl(c);
    if (!m->peers) return -1;
    const struct peer *me = &m->peers[c->world_rank];
    for (int r = 0; r < c->world_size; r++) {
        const struct peer *p = &m->peers[r];
        if (r == c->world_rank || !me->space[0] || strcmp(p->space, me->space)) continue;
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)p->pid);
        FILE *f = fopen(path, "r");
        if (!f) return r;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* "pid (comm) S ...": the state follows the last ')' */
        const char *q = strrchr(buf, ')');
        if (q && (q[2] == 'Z' || q[2] == 'X')) return r;
    }
    return -1;
}

/* BR_E_UNAVAILABLE, c->why naming it, when a rank on this machine has died. */
static int check_peers(struct br_comm *c)
{
    int r = dead_peer(c);
    if (r < 0) return BR_OK;
    char who[160];
    name_rank(c, r, who, sizeof who);
    return lost(c, "%s has died", who);
}

int br_comm_mpi_dead_rank(const struct br_comm *c, char *why, size_t n)
{
    int r = dead_peer(c);
    if (r >= 0) {
        char who[160];
        name_rank(c, r, who, sizeof who);
        snprintf(why, n, "%s has died", who);
    }
    return r;
}

void br_comm_mpi_name_group(const struct br_comm *c, char *out, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    for (int t = 0; t < c->tp; t++) {
        int r = c->pp_rank * c->tp + t;
        if (r == c->world_rank || used + 2 >= n) continue;
        char who[160];
        name_rank(c, r, who, sizeof who);
        int k = snprintf(out + used, n - used, "%s%s", used ? ", " : "", who);
        if (k < 0) break;
        used += (size_t)k < n - used ? (size_t)k : n - used - 1;
    }
    if (!out[0]) snprintf(out, n, "none (no TP peers)");
}

/* How long a wait may go on after a stop signal before its peer is named as lost. */
#define STOP_WAIT_S 0.3

/* Completes req. peer: the world rank on the other end, or -1 for this stage's group.
 * Unwatched, this is MPI_Wait; watched, see the top of the file. */
static int wait_req(struct br_comm *c, MPI_Request *req, int peer, const char *what)
{
    struct mpi_impl *m = impl(c);
    char who[160];
    if (peer >= 0)
        name_rank(c, peer, who, sizeof who);
    else
        snprintf(who, sizeof who, "a rank of stage %d", c->pp_rank);
    if (m->failed) return BR_E_UNAVAILABLE;
    if (!m->watched) {
        int rc = MPI_Wait(req, MPI_STATUS_IGNORE);
        return rc == MPI_SUCCESS ? BR_OK : lost(c, "%s %s failed (MPI error %d)", what, who, rc);
    }
    double t0 = 0;
    int napping = 0;
    for (unsigned spins = 1;; spins++) {
        int done = 0, rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char s[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, s, &len);
            return lost(c, "%s %s failed: %s", what, who, s);
        }
        if (done) return BR_OK;
        if (!napping && spins % 256) continue;
        double now = br_now();
        if (t0 == 0) t0 = now;
        int got = 0;
        if (m->lost_req != MPI_REQUEST_NULL &&
            (MPI_Test(&m->lost_req, &got, MPI_STATUS_IGNORE) != MPI_SUCCESS || got)) {
            m->lost_msg[sizeof m->lost_msg - 1] = '\0';
            return lost(c, "rank 0 ended the job: %s", got ? m->lost_msg : "(unreadable)");
        }
        /* mpirun answers a dead rank with SIGTERM and, about a second later, SIGKILL. A
         * wait that goes on after the signal is most likely on the rank that died (one on
         * another host is not seen by the check below): name it while there is time. */
        if (m->interrupted && m->interrupted(m->arg)) {
            if (m->signal_seen == 0) m->signal_seen = now;
            if (now - m->signal_seen > STOP_WAIT_S && now - t0 > STOP_WAIT_S && dead_peer(c) < 0) {
                if (MPI_Test(req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) return BR_OK;
                return lost(c,
                            "no answer from %s for %.1f s after a stop signal (%s; mpirun "
                            "stops a job when one of its ranks dies)",
                            who, now - m->signal_seen, what);
            }
        }
        /* a dead rank on this machine: looked for every 0.1 s of waiting, and at once
         * after a signal; what it sent before dying still counts */
        if (now - t0 > 0.1 &&
            (now - m->last_check > 0.1 ||
             (m->interrupted && now - m->last_check > 0.02 && m->interrupted(m->arg)))) {
            m->last_check = now;
            int r = dead_peer(c);
            if (r >= 0 && MPI_Test(req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done)
                return BR_OK;
            if (r >= 0) return check_peers(c);
        }
        if (m->timeout_s > 0 && now - t0 > m->timeout_s) {
            /* a dead peer on this machine is the better name, when there is one */
            if (dead_peer(c) >= 0) return check_peers(c);
            return lost(c, "no answer from %s for %.1f s (%s)", who, now - t0, what);
        }
        /* since the wait began, or since the doorbell last rang */
        double base = m->woken > t0 ? m->woken : t0;
        if (c->idle && m->bell_fd >= 0 && now - base > BR_COMM_MPI_IDLE_S) {
            /* no step for a while: sleep until rank 0 rings (a step is coming) or 0.1 s
             * passes (the checks above run again) */
            struct pollfd p = {m->bell_fd, POLLIN, 0};
            if (poll(&p, 1, 100) > 0) {
                char b[16];
                while (recv(m->bell_fd, b, sizeof b, MSG_DONTWAIT) >= 0) {
                }
                m->woken = br_now();
            }
            napping = 1;
            continue;
        }
        if (now - base > m->spin_s) {
            /* idle for a while: poll less often, give the cores to others. Below the
             * default spin, naps grow with the wait (1/20 of it, 20 us to 1 ms): a long
             * wait wakes the core rarely, and is answered at most 5% late. */
            long ns = 100000;
            if (m->spin_s < BR_COMM_MPI_SPIN_S) {
                double nap = (now - base) / 20.0;
                ns = nap < 20e-6 ? 20000 : nap > 1e-3 ? 1000000 : (long)(nap * 1e9);
            }
            struct timespec ts = {0, ns};
            nanosleep(&ts, NULL);
            napping = 1;
        }
    }
}

/* One round of a direct collective (sharding/plan.h, br_coll_direct): rank r's send[r]
 * (send_bytes[r] bytes) goes to rank r, and rank r's message arrives at recv[r]
 * (recv_bytes[r] bytes), for every other rank of the stage; all posted at once, then waited
 * for (watched, like point-to-point messages). Empty messages are not sent: both ends
 * know the sizes. Between two ranks the messages of successive rounds and collectives
 * keep their order (MPI's non-overtaking rule), so one tag serves them all. */
static int direct(struct br_comm *c, const void *const *send, const int *send_bytes,
                  void *const *recv, const int *recv_bytes)
{
    struct mpi_impl *m = impl(c);
    int n = 0, rc = BR_OK;
    for (int r = 0; r < c->tp && !rc; r++)
        if (r != c->tp_rank && recv_bytes[r] > 0 &&
            MPI_Irecv(recv[r], recv_bytes[r], MPI_BYTE, r, TAG_DIRECT, m->stage, &m->dreq[n++]) !=
                MPI_SUCCESS)
            rc = lost(c, "a one-round exchange in stage %d failed", c->pp_rank);
    /* the ranks after this one first: not every rank starts with rank 0 */
    for (int k = 1; k < c->tp && !rc; k++) {
        int r = (c->tp_rank + k) % c->tp;
        if (send_bytes[r] > 0 && MPI_Isend(send[r], send_bytes[r], MPI_BYTE, r, TAG_DIRECT,
                                           m->stage, &m->dreq[n++]) != MPI_SUCCESS)
            rc = lost(c, "a one-round exchange in stage %d failed", c->pp_rank);
    }
    for (int i = 0; i < n && !rc; i++)
        rc = wait_req(c, &m->dreq[i], -1, "a one-round exchange with");
    if (!rc) emulate_delay(c, 1);
    return rc;
}

/* The same message to every other rank. */
static int direct_same(struct br_comm *c, const void *send, int bytes, void *const *recv,
                       const int *recv_bytes)
{
    const void *from[BR_PLAN_MAX_TP];
    int sizes[BR_PLAN_MAX_TP];
    for (int r = 0; r < c->tp; r++) from[r] = send, sizes[r] = bytes;
    return direct(c, from, sizes, recv, recv_bytes);
}

static int op_allgather(struct br_comm *c, const void *send, void *recv, const int *counts,
                        const int *displs)
{
    struct mpi_impl *m = impl(c);
    br_comm_count_allgather(c, counts);
    double total = 0;
    for (int r = 0; r < c->tp; r++) total += counts[r];
    if (m->dreq && br_coll_direct(BR_COLL_ALLGATHER, c->tp, total, m->alpha_s, m->bw)) {
        void *at[BR_PLAN_MAX_TP];
        for (int r = 0; r < c->tp; r++) at[r] = (char *)recv + displs[r];
        memmove(at[c->tp_rank], send, (size_t)counts[c->tp_rank]);
        m->direct_calls++;
        return direct_same(c, at[c->tp_rank], counts[c->tp_rank], at, counts);
    }
    return mpi_status(collective_done(c, MPI_Allgatherv(send, counts[c->tp_rank], MPI_BYTE, recv,
                                                        counts, displs, MPI_BYTE, m->stage)));
}

/* Direct reduce-scatter (round 1 of the direct all-reduce): block r of every rank's
 * `send` (counts[r] int32 at offs[r]) goes to rank r, and this rank's block becomes the
 * sum of all ranks' parts of it, added in rank order (int32 addition wraps and is exact,
 * so any order gives the same bits; rank order keeps it so should that change), into
 * out. */
static int direct_reduce_scatter(struct br_comm *c, const int32_t *send, int32_t *out,
                                 const int *counts, const int *offs)
{
    struct mpi_impl *m = impl(c);
    const void *from[BR_PLAN_MAX_TP];
    void *into[BR_PLAN_MAX_TP];
    int sizes[BR_PLAN_MAX_TP], mine[BR_PLAN_MAX_TP];
    int me = c->tp_rank, nb = counts[me];
    for (int r = 0, k = 0; r < c->tp; r++) {
        from[r] = send + offs[r];
        sizes[r] = 4 * counts[r];
        mine[r] = 4 * nb;
        into[r] = r == me ? NULL : m->dsum + (size_t)(k++) * DSUM_BLOCK;
    }
    int rc = direct(c, from, sizes, into, mine);
    if (rc) return rc;
    const int32_t *own = send + offs[me];
    for (int i = 0; i < nb; i++) {
        uint32_t s = 0;
        for (int r = 0; r < c->tp; r++)
            s += (uint32_t)(r == me ? own[i] : ((const int32_t *)into[r])[i]);
        out[i] = (int32_t)s;
    }
    return BR_OK;
}

/* Whether every block of counts fits the direct path's scratch (the same on every rank:
 * counts are). */
static int blocks_fit(const struct br_comm *c, const int *counts)
{
    for (int r = 0; r < c->tp; r++)
        if (counts[r] > DSUM_BLOCK) return 0;
    return 1;
}

static int op_reduce_scatter_i32(struct br_comm *c, const int32_t *send, int32_t *recv,
                                 const int *counts)
{
    struct mpi_impl *m = impl(c);
    br_comm_count_reduce_scatter(c, counts);
    double total = 0;
    for (int r = 0; r < c->tp; r++) total += 4.0 * counts[r];
    if (m->dreq && br_coll_direct(BR_COLL_REDUCE_SCATTER, c->tp, total, m->alpha_s, m->bw) &&
        blocks_fit(c, counts)) {
        int offs[BR_PLAN_MAX_TP];
        for (int r = 0, o = 0; r < c->tp; r++) offs[r] = o, o += counts[r];
        m->direct_calls++;
        return direct_reduce_scatter(c, send, recv, counts, offs);
    }
    return mpi_status(
        collective_done(c, MPI_Reduce_scatter(send, recv, counts, MPI_INT32_T, MPI_SUM, m->stage)));
}

static int op_allreduce_i32(struct br_comm *c, int32_t *buf, int n)
{
    struct mpi_impl *m = impl(c);
    br_comm_count_allreduce(c, n);
    if (m->dreq && br_coll_direct(BR_COLL_ALLREDUCE_I32, c->tp, 4.0 * n, m->alpha_s, m->bw)) {
        /* blocks of n / T, the first n % T one more (fits: at most DSUM_BLOCK) */
        int counts[BR_PLAN_MAX_TP], offs[BR_PLAN_MAX_TP], bytes[BR_PLAN_MAX_TP];
        void *at[BR_PLAN_MAX_TP];
        for (int r = 0, o = 0; r < c->tp; r++) {
            counts[r] = n / c->tp + (r < n % c->tp);
            offs[r] = o, o += counts[r];
            bytes[r] = 4 * counts[r];
            at[r] = buf + offs[r];
        }
        int me = c->tp_rank;
        m->direct_calls++;
        /* round 1 sums this rank's block in place (the others' parts of it are in dsum,
         * the rest of buf is sent before it is written), round 2 hands it to the others */
        int rc = direct_reduce_scatter(c, buf, buf + offs[me], counts, offs);
        return rc ? rc : direct_same(c, at[me], bytes[me], at, bytes);
    }
    return mpi_status(
        collective_done(c, MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_INT32_T, MPI_SUM, m->stage)));
}

static int op_allreduce_max_f32(struct br_comm *c, float *buf, int n)
{
    struct mpi_impl *m = impl(c);
    br_comm_count_allreduce(c, n);
    if (m->dreq && br_coll_direct(BR_COLL_ALLREDUCE_MAX, c->tp, 4.0 * n, m->alpha_s, m->bw)) {
        void *at[BR_PLAN_MAX_TP];
        int sizes[BR_PLAN_MAX_TP];
        for (int r = 0, k = 0; r < c->tp; r++) {
            sizes[r] = 4 * n;
            at[r] = r == c->tp_rank ? NULL : m->dbuf + (size_t)(k++) * (size_t)n;
        }
        m->direct_calls++;
        int rc = direct_same(c, buf, 4 * n, at, sizes);
        if (rc) return rc;
        /* the maximum is order-free: each slot is the one rank's value that is not 0 */
        for (int k = 0; k < c->tp - 1; k++)
            for (int i = 0; i < n; i++) {
                float v = m->dbuf[(size_t)k * (size_t)n + (size_t)i];
                if (v > buf[i]) buf[i] = v;
            }
        return BR_OK;
    }
    return mpi_status(
        collective_done(c, MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_MAX, m->stage)));
}

/* Rank 0, as a step starts: wakes the ranks sleeping on the doorbell, unless it rang in
 * the last 2 ms (then nobody has waited long enough to be asleep). */
static void ring(struct br_comm *c)
{
    struct mpi_impl *m = impl(c);
    if (c->world_rank != 0 || m->bell_fd < 0 || !m->bell_to) return;
    double now = br_now();
    if (now - m->last_ring < 0.002) return;
    m->last_ring = now;
    for (int r = 1; r < c->world_size; r++)
        if (m->bell_to[r].sin_port)
            sendto(m->bell_fd, "", 1, MSG_DONTWAIT, (const struct sockaddr *)&m->bell_to[r],
                   sizeof m->bell_to[r]);
}

static int op_send_next(struct br_comm *c, const void *buf, size_t bytes)
{
    ring(c);
    br_comm_count(c, bytes);
    int dest = c->world_rank + c->tp;
    MPI_Request req;
    if (MPI_Isend(buf, (int)bytes, MPI_BYTE, dest, TAG_PIPE, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return lost(c, "sending to rank %d failed", dest);
    return wait_req(c, &req, dest, "sending to");
}

static int op_recv_prev(struct br_comm *c, void *buf, size_t bytes)
{
    int src = c->world_rank - c->tp;
    MPI_Request req;
    if (MPI_Irecv(buf, (int)bytes, MPI_BYTE, src, TAG_PIPE, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return lost(c, "receiving from rank %d failed", src);
    int rc = wait_req(c, &req, src, "receiving from");
    if (!rc) emulate_delay(c, 1);
    return rc;
}

static int op_send_root(struct br_comm *c, const void *buf, size_t bytes, void **pending)
{
    br_comm_count(c, bytes);
    MPI_Request *req = malloc(sizeof *req);
    if (!req) return BR_E_NOMEM;
    int rc = MPI_Isend(buf, (int)bytes, MPI_BYTE, 0, TAG_ROOT, MPI_COMM_WORLD, req);
    if (rc != MPI_SUCCESS) {
        free(req);
        return BR_E_UNAVAILABLE;
    }
    *pending = req;
    return BR_OK;
}

static int op_wait_root(struct br_comm *c, void **pending)
{
    if (!*pending) return BR_OK;
    MPI_Request *req = *pending;
    int rc = wait_req(c, req, 0, "sending results to");
    if (rc) return rc; /* the request stays pending: its buffer may still be in use */
    free(req);
    *pending = NULL;
    return BR_OK;
}

static int op_recv_from(struct br_comm *c, int world_rank, void *buf, size_t bytes)
{
    MPI_Request req;
    if (MPI_Irecv(buf, (int)bytes, MPI_BYTE, world_rank, TAG_ROOT, MPI_COMM_WORLD, &req) !=
        MPI_SUCCESS)
        return lost(c, "receiving from rank %d failed", world_rank);
    int rc = wait_req(c, &req, world_rank, "receiving results from");
    if (!rc) emulate_delay(c, 1);
    return rc;
}

static int op_bcast(struct br_comm *c, void *buf, size_t bytes)
{
    struct mpi_impl *m = impl(c);
    ring(c);
    br_comm_count_bcast(c, bytes);
    if (!m->nb_bcast) {
        int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, m->stage);
        /* the root's send returns at once; the others receive it a delay later */
        return mpi_status(c->tp_rank == 0 ? rc : collective_done(c, rc));
    }
    /* every rank of the stage made the same choice (br_comm_mpi_doorbell is collective):
     * a non-blocking broadcast matches only non-blocking ones */
    MPI_Request req;
    if (MPI_Ibcast(buf, (int)bytes, MPI_BYTE, 0, m->stage, &req) != MPI_SUCCESS)
        return lost(c, "a broadcast in stage %d failed", c->pp_rank);
    int rc = wait_req(c, &req, c->tp_rank == 0 ? -1 : c->world_rank - c->tp_rank,
                      "broadcasting the step with");
    if (!rc && c->tp_rank != 0) emulate_delay(c, m->rounds);
    return rc;
}

static const struct br_comm_ops mpi_ops = BR_COMM_OPS_OF_OP_FUNCTIONS;

/* This process's pid, host and pid namespace (struct peer). */
static void describe_self(struct peer *p)
{
    memset(p, 0, sizeof *p);
    p->pid = (int32_t)getpid();
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS) snprintf(name, sizeof name, "?");
    /* Open MPI's daemon address tells apart hosts that share a name (containers,
     * network namespaces): "...;tcp://ADDR:PORT;..." */
    const char *uri = getenv("OMPI_MCA_orte_local_daemon_uri");
    const char *a = uri ? strstr(uri, "tcp://") : NULL;
    if (a) {
        a += 6;
        const char *z = strrchr(a, ':');
        const char *semi = strchr(a, ';');
        if (semi && z > semi) z = NULL;
        int n = z ? (int)(z - a) : 0;
        if (n > 0 && n < 40) snprintf(p->host, sizeof p->host, "%.48s [%.*s]", name, n, a);
    }
    if (!p->host[0]) snprintf(p->host, sizeof p->host, "%.48s", name);
    char boot[64] = "", ns[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f)) boot[0] = '\0';
        fclose(f);
        boot[strcspn(boot, "\n")] = '\0';
    }
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    if (n > 0) ns[n] = '\0';
    if (boot[0] && n > 0) snprintf(p->space, sizeof p->space, "%.40s %.50s", boot, ns);
}

int br_comm_mpi_launched(void)
{
    int up = 0;
    MPI_Initialized(&up);
    return up || getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

double br_comm_mpi_link_delay_us(const struct br_comm *c)
{
    return impl(c)->delay_s * 1e6;
}

int br_comm_mpi_world_size(void)
{
    int up = 0, n = 1;
    MPI_Initialized(&up);
    if (up) MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

/* Where the launcher asked for it (BITRACK_RANK0_PIDFILE, launch/bitrack-launch), rank 0
 * writes "PID BOOT_ID PID_NAMESPACE": a launcher on the same machine can then tell when
 * rank 0 has ended while mpirun stays (Open MPI 4.1 waits for the daemon of an unreachable
 * host). Written to a temporary name and renamed, so a reader sees all of it or nothing. */
static void announce_rank0(const struct peer *me)
{
    const char *path = getenv("BITRACK_RANK0_PIDFILE");
    if (!path || !*path || !me->space[0]) return;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    int ok = fprintf(f, "%d %s\n", (int)me->pid, me->space) > 0;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) remove(tmp);
}

int br_comm_mpi_create(int *argc, char ***argv, int tp, int pp, struct br_comm **out,
                       struct br_err *err)
{
    *out = NULL;
    int up = 0, provided = 0;
    /* Waits in MPI yield the core while they poll (unless the user chose otherwise). A rank
     * has threads besides the one waiting (a server's front end and ZeroMQ I/O, the pool):
     * a poll that never yields keeps them off a core for a scheduler slice, since after
     * idleness their sleep earns them no priority over the pollers. Measured: the first
     * token after a second of idleness took 8-28 ms on 2 ranks of 2 cores, 1.0-1.3 ms with
     * the yield, and throughput did not change (docs/RELIABILITY.md, "Idle"). */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    MPI_Initialized(&up);
    if (!up && MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return br_err_set(err, BR_E_UNAVAILABLE, "MPI_Init failed");
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (tp < 1 || pp < 1 || tp * pp != size) {
        MPI_Finalize();
        return br_err_set(err, BR_E_INVALID, "--tp %d x --pp %d = %d ranks, but mpirun started %d",
                          tp, pp, tp * pp, size);
    }
    struct br_comm *c = calloc(1, sizeof *c);
    struct mpi_impl *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c), free(m);
        MPI_Finalize();
        return br_err_set(err, BR_E_NOMEM, "out of memory");
    }
    c->ops = &mpi_ops;
    c->impl = m;
    c->tp = tp, c->pp = pp;
    c->world_rank = rank, c->world_size = size;
    c->tp_rank = rank % tp, c->pp_rank = rank / tp;
    MPI_Comm_split(MPI_COMM_WORLD, c->pp_rank, c->tp_rank, &m->stage);
    /* errors come back as codes, so a lost peer is reported, not an instant abort */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(m->stage, MPI_ERRORS_RETURN);
    m->lost_req = MPI_REQUEST_NULL;
    for (int t = 1; t < tp; t *= 2) m->rounds++;
    const char *delay = getenv("BITRACK_EMULATED_DELAY_US");
    if (delay && *delay) {
        char *end;
        double us = strtod(delay, &end);
        if (end != delay && !*end && us >= 0 && us <= 1e6) m->delay_s = us * 1e-6;
    }
    m->bell_fd = -1;
    m->alpha_s = BR_COLL_ALPHA_S;
    m->bw = BR_COLL_BW;
    if (tp >= 3 && tp <= BR_PLAN_MAX_TP) {
        /* without them (out of memory) every collective takes MPI's own algorithm */
        m->dreq = malloc(2 * (size_t)(tp - 1) * sizeof *m->dreq);
        m->dbuf = malloc((size_t)(tp - 1) * BR_COLL_DIRECT_MAX);
        m->dsum = malloc((size_t)(tp - 1) * DSUM_BLOCK * sizeof *m->dsum);
        int have = m->dreq && m->dbuf && m->dsum, all = 0;
        /* every rank of the stage must choose alike */
        if (MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, m->stage) != MPI_SUCCESS || !all) {
            free(m->dreq), free(m->dbuf), free(m->dsum);
            m->dreq = NULL, m->dbuf = NULL, m->dsum = NULL;
        }
    }
    m->peers = calloc((size_t)size, sizeof *m->peers);
    struct peer me;
    describe_self(&me);
    if (rank == 0) announce_rank0(&me);
    if (m->peers) {
        if (MPI_Allgather(&me, sizeof me, MPI_BYTE, m->peers, sizeof me, MPI_BYTE,
                          MPI_COMM_WORLD) != MPI_SUCCESS) {
            free(m->peers);
            m->peers = NULL;
        }
    }
    *out = c;
    return BR_OK;
}

void br_comm_mpi_watch(struct br_comm *c, double timeout_s, int (*interrupted)(void *), void *arg)
{
    struct mpi_impl *m = impl(c);
    m->watched = 1;
    m->timeout_s = timeout_s;
    if (m->spin_s <= 0) m->spin_s = BR_COMM_MPI_SPIN_S;
    m->interrupted = interrupted;
    m->arg = arg;
    if (c->world_rank != 0 && m->lost_req == MPI_REQUEST_NULL)
        MPI_Irecv(m->lost_msg, sizeof m->lost_msg, MPI_CHAR, 0, TAG_LOST, MPI_COMM_WORLD,
                  &m->lost_req);
}

/* This rank's address as the other hosts reach it: Open MPI's daemon address, or the
 * loopback address when there is none (one machine). */
static struct in_addr own_addr(void)
{
    struct in_addr a = {htonl(INADDR_LOOPBACK)};
    const char *uri = getenv("OMPI_MCA_orte_local_daemon_uri");
    const char *p = uri ? strstr(uri, "tcp://") : NULL;
    char ip[64];
    if (p && sscanf(p + 6, "%63[0-9.]", ip) == 1) inet_pton(AF_INET, ip, &a);
    return a;
}

int br_comm_mpi_doorbell(struct br_comm *c)
{
    struct mpi_impl *m = impl(c);
    struct bell {
        uint32_t addr;
        uint16_t port, ok;
    } me = {0, 0, 0};
    m->bell_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (m->bell_fd >= 0 && c->world_rank != 0) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_ANY)}};
        socklen_t len = sizeof sa;
        if (bind(m->bell_fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
            getsockname(m->bell_fd, (struct sockaddr *)&sa, &len) == 0) {
            me.addr = own_addr().s_addr;
            me.port = sa.sin_port;
            me.ok = 1;
        }
    }
    struct bell *all = c->world_rank == 0 ? calloc((size_t)c->world_size, sizeof *all) : NULL;
    int rc = MPI_Gather(&me, sizeof me, MPI_BYTE, all, sizeof me, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (c->world_rank == 0 && all && rc == MPI_SUCCESS) {
        m->bell_to = calloc((size_t)c->world_size, sizeof *m->bell_to);
        for (int r = 1; m->bell_to && r < c->world_size; r++)
            if (all[r].ok)
                m->bell_to[r] = (struct sockaddr_in){
                    .sin_family = AF_INET, .sin_port = all[r].port, .sin_addr = {all[r].addr}};
    }
    free(all);
    m->nb_bcast = rc == MPI_SUCCESS;
    return rc == MPI_SUCCESS ? BR_OK : BR_E_UNAVAILABLE;
}

void br_comm_mpi_set_link(struct br_comm *c, double alpha_s, double bw)
{
    if (alpha_s >= 0) impl(c)->alpha_s = alpha_s;
    if (bw > 0) impl(c)->bw = bw;
}

uint64_t br_comm_mpi_direct_calls(const struct br_comm *c)
{
    return impl(c)->direct_calls;
}

void br_comm_mpi_set_spin(struct br_comm *c, double spin_s)
{
    impl(c)->spin_s = spin_s > 0 ? spin_s : BR_COMM_MPI_SPIN_S;
}

int br_comm_mpi_oversubscribed(const struct br_comm *c, int threads)
{
    return (long)br_comm_mpi_ranks_here(c) * threads > sysconf(_SC_NPROCESSORS_ONLN);
}

int br_comm_mpi_ranks_here(const struct br_comm *c)
{
    const struct mpi_impl *m = impl(c);
    if (!m->peers || !m->peers[c->world_rank].space[0]) return 1;
    int n = 0;
    for (int r = 0; r < c->world_size; r++)
        n += strcmp(m->peers[r].space, m->peers[c->world_rank].space) == 0;
    return n;
}

int br_comm_mpi_machines(const struct br_comm *c)
{
    const struct mpi_impl *m = impl(c);
    if (!m->peers) return c->world_size;
    int n = 0;
    for (int r = 0; r < c->world_size; r++) {
        int seen = 0;
        for (int q = 0; q < r && !seen; q++)
            seen = m->peers[r].space[0] && strcmp(m->peers[q].space, m->peers[r].space) == 0;
        n += !seen;
    }
    return n;
}

void br_comm_mpi_destroy(struct br_comm **cp)
{
    if (!cp || !*cp) return;
    struct br_comm *c = *cp;
    struct mpi_impl *m = impl(c);
    if (m->lost_req != MPI_REQUEST_NULL) {
        MPI_Cancel(&m->lost_req);
        MPI_Request_free(&m->lost_req);
    }
    MPI_Comm_free(&m->stage);
    if (m->bell_fd >= 0) close(m->bell_fd);
    free(m->bell_to);
    free(m->peers);
    free(m->dreq);
    free(m->dbuf);
    free(m->dsum);
    free(m);
    free(c);
    *cp = NULL;
    MPI_Finalize();
}

void br_comm_mpi_abort(struct br_comm *c, int code)
{
    if (c && c->world_rank == 0 && impl(c)->watched && c->world_size > 1) {
        /* tell every rank why, best effort: those behind a dead link never hear it */
        MPI_Request *reqs = calloc((size_t)c->world_size, sizeof *reqs);
        char msg[256];
        snprintf(msg, sizeof msg, "%s", c->why[0] ? c->why : "rank 0 failed");
        for (int r = 1; reqs && r < c->world_size; r++)
            if (MPI_Isend(msg, (int)strlen(msg) + 1, MPI_CHAR, r, TAG_LOST, MPI_COMM_WORLD,
                          &reqs[r]) != MPI_SUCCESS)
                reqs[r] = MPI_REQUEST_NULL;
        double t0 = br_now();
        int done = 0;
        while (reqs && !done && br_now() - t0 < 0.5) {
            reqs[0] = MPI_REQUEST_NULL;
            if (MPI_Testall(c->world_size, reqs, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS) break;
        }
        free(reqs);
    }
    MPI_Abort(MPI_COMM_WORLD, code);
}
