/*
 * The request log (see reqlog.h). Lines go through a queue of at most QUEUE_MAX bytes to
 * one writer thread; JSON lines, and text values that need quoting, are encoded with
 * Jansson, so a client-chosen id holding quotes or newlines stays one well-formed line.
 */
#include "coordinator/reqlog.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define QUEUE_MAX ((size_t)4 << 20)

struct br_reqlog {
    enum br_reqlog_format fmt;
    FILE *f;
    int own; /* f was opened here */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct br_buf q; /* queued lines */
    unsigned long dropped;
    int quit;
    pthread_t thread;
};

static void *writer(void *arg)
{
    struct br_reqlog *l = arg;
    struct br_buf out = {0};
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->q.len && !l->quit) pthread_cond_wait(&l->cv, &l->mu);
        if (!l->q.len && l->quit) break;
        struct br_buf t = l->q; /* swap: write outside the lock */
        l->q = out;
        out = t;
        pthread_mutex_unlock(&l->mu);
        fwrite(out.data, 1, out.len, l->f);
        fflush(l->f);
        br_buf_reset(&out);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    br_buf_free(&out);
    return NULL;
}

int br_reqlog_open(const char *path, enum br_reqlog_format fmt, struct br_reqlog **out,
                   struct br_err *err)
{
    *out = NULL;
    struct br_reqlog *l = calloc(1, sizeof *l);
    if (!l) return br_err_set(err, BR_E_NOMEM, "out of memory");
    l->fmt = fmt;
    if (!path || !strcmp(path, "-")) {
        l->f = stderr;
    } else if (!(l->f = fopen(path, "a"))) {
        int e = errno;
        free(l);
        return br_err_set(err, BR_E_IO, "--log-file %s: %s", path, strerror(e));
    } else {
        l->own = 1;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, writer, l)) {
        if (l->own) fclose(l->f);
        free(l);
        return br_err_set(err, BR_E_INTERNAL, "cannot start the request log thread");
    }
    *out = l;
    return BR_OK;
}

void br_reqlog_close(struct br_reqlog **lp)
{
    if (!lp || !*lp) return;
    struct br_reqlog *l = *lp;
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    if (l->own) fclose(l->f);
    br_buf_free(&l->q);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
    *lp = NULL;
}

static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void timestamp(double now, char *buf, size_t n)
{
    time_t s = (time_t)now;
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03dZ", (int)((now - (double)s) * 1e3));
}

/* A text value: bare when it is a plain word, else a JSON string. */
static void text_value(const char *v, char *buf, size_t n)
{
    int plain = *v != '\0';
    for (const unsigned char *p = (const unsigned char *)v; *p && plain; p++)
        plain = *p > ' ' && *p != '"' && *p != '=' && *p != 0x7f;
    if (plain) {
        snprintf(buf, n, "%s", v);
        return;
    }
    json_t *s = json_string(v);
    char *q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    snprintf(buf, n, "%s", q ? q : "\"?\"");
    free(q);
    json_decref(s);
}

size_t br_reqlog_format(enum br_reqlog_format fmt, const struct br_outcome *o, double now,
                        char *buf, size_t n)
{
    char ts[40];
    timestamp(now, ts, sizeof ts);
    const double ms[3] = {o->queue_ms, o->ttft_ms, o->total_ms};
    const char *const ms_names[3] = {"queue_ms", "ttft_ms", "total_ms"};
    if (fmt == BR_REQLOG_JSON) {
        json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "ts", ts, "id", o->id, "transport", o->transport,
                              "client", o->client);
        if (!j) j = json_object();
        if (o->http_status) json_object_set_new(j, "status", json_integer(o->http_status));
        json_object_set_new(j, "prompt_tokens", json_integer(o->prompt_tokens));
        json_object_set_new(j, "output_tokens", json_integer(o->completion_tokens));
        for (int i = 0; i < 3; i++)
            if (ms[i] >= 0) json_object_set_new(j, ms_names[i], json_real(ms[i]));
        json_object_set_new(j, "result", json_string(o->result ? o->result : "other"));
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(j);
        int k = snprintf(buf, n, "%s\n", s ? s : "{}");
        free(s);
        return k < 0 ? 0 : (size_t)k < n ? (size_t)k : n - 1;
    }
    char id[300], client[160];
    text_value(o->id, id, sizeof id);
    text_value(o->client, client, sizeof client);
    size_t k = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(buf + k, n - k, __VA_ARGS__);                                            \
        if (w_ > 0) k += (size_t)w_ < n - k ? (size_t)w_ : n - k - 1;                              \
    } while (0)
    ADD("%s id=%s transport=%s client=%s", ts, id, o->transport, client);
    if (o->http_status) ADD(" status=%d", o->http_status);
    ADD(" prompt_tokens=%u output_tokens=%u", o->prompt_tokens, o->completion_tokens);
    for (int i = 0; i < 3; i++)
        if (ms[i] >= 0) ADD(" %s=%.1f", ms_names[i], ms[i]);
    ADD(" result=%s\n", o->result ? o->result : "other");
#undef ADD
    if (k == n - 1) buf[n - 2] = '\n';
    return k;
}

void br_reqlog_write(struct br_reqlog *l, const struct br_outcome *o)
{
    if (!l) return;
    char line[1024];
    size_t n = br_reqlog_format(l->fmt, o, wall_now(), line, sizeof line);
    pthread_mutex_lock(&l->mu);
    if (l->q.len + n + 64 > QUEUE_MAX) {
        l->dropped++;
    } else {
        if (l->dropped) {
            char note[64];
            int k = snprintf(note, sizeof note, "(request log: %lu lines dropped)\n", l->dropped);
            if (br_buf_append(&l->q, note, (size_t)k) == BR_OK) l->dropped = 0;
        }
        if (br_buf_append(&l->q, line, n) != BR_OK) l->dropped++;
        pthread_cond_signal(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
}
