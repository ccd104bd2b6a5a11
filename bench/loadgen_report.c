/*
 * The load generator's reports (see loadgen.h): JSON for machines, a table for people,
 * and an SVG throughput-vs-latency plot for sweeps, written by hand so the tool needs
 * nothing but libc. Every number printed comes from a br_loadgen_result; nothing here
 * invents data. JSON never holds NaN or infinities (they become null).
 */
#include <math.h>
#include <string.h>

#include "bench/loadgen.h"
#include "proto/proto.h"

/* ---- JSON ----------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* key (a JSON fragment such as `, "p50": `), then v; a NaN or an infinity as null */
static void json_num(FILE *f, const char *key, double v)
{
    fputs(key, f);
    if (isfinite(v))
        fprintf(f, "%.10g", v);
    else
        fputs("null", f);
}

static void json_dist(FILE *f, const char *name, const struct br_loadgen_dist *d)
{
    fprintf(f, "  \"%s\": {\"n\": %zu", name, d->n);
    json_num(f, ", \"mean\": ", d->mean);
    json_num(f, ", \"p50\": ", d->p50);
    json_num(f, ", \"p90\": ", d->p90);
    json_num(f, ", \"p99\": ", d->p99);
    json_num(f, ", \"min\": ", d->min);
    json_num(f, ", \"max\": ", d->max);
    fputs("},\n", f);
}

static void json_result(FILE *f, const struct br_loadgen_result *r, bool per_request)
{
    const struct br_loadgen_config *c = &r->config;
    fputs("{\n  \"config\": {\"server\": ", f);
    json_str(f, c->openai_url ? c->openai_url : c->server ? c->server : "tcp://127.0.0.1:5555");
    fprintf(f, ", \"api\": \"%s\"",
            c->openai_url ? (c->chat ? "openai-chat" : "openai-completions") : "bitrack-zmq");
    fprintf(f, ", \"mode\": \"%s\", \"concurrency\": %d", c->rate > 0 ? "open" : "closed",
            c->rate > 0 ? 0 : c->concurrency);
    json_num(f, ", \"rate\": ", c->rate);
    fprintf(f,
            ", \"max_concurrency\": %d, \"slots\": %d, \"requests\": %d, \"warmup\": %d, "
            "\"seed\": %llu",
            c->max_concurrency, r->slots, c->requests, c->warmup, (unsigned long long)c->seed);
    json_num(f, ", \"temperature\": ", c->temperature);
    fprintf(f, ", \"timeout_ms\": %d, \"banned_tokens\": [", c->timeout_ms);
    for (uint32_t i = 0; i < c->n_ban; i++) fprintf(f, "%s%d", i ? ", " : "", c->ban_tokens[i]);
    fputs("], \"workload\": ", f);
    json_str(f, c->workload ? c->workload : "");
    fputs(", \"percentiles\": \"nearest-rank\"},\n", f);
    json_num(f, "  \"duration_s\": ", r->duration_s);
    fprintf(f, ",\n  \"completed\": %d,\n  \"failed\": %d,\n  \"errors\": {", r->completed,
            r->failed);
    for (int k = 1; k < BR_LOADGEN_N_CODES; k++)
        fprintf(f, "%s\"%s\": %d", k > 1 ? ", " : "", br_loadgen_code_name((enum br_loadgen_code)k),
                r->errors[k]);
    fprintf(f, "},\n  \"input_tokens\": %llu,\n  \"output_tokens\": %llu,\n",
            (unsigned long long)r->in_tokens, (unsigned long long)r->out_tokens);
    json_num(f, "  \"request_throughput\": ", r->req_per_s);
    json_num(f, ",\n  \"input_throughput\": ", r->in_tok_per_s);
    json_num(f, ",\n  \"output_throughput\": ", r->out_tok_per_s);
    json_num(f, ",\n  \"mean_lateness_ms\": ", r->mean_lateness_ms);
    fputs(",\n", f);
    json_dist(f, "ttft_ms", &r->ttft);
    json_dist(f, "tpot_ms", &r->tpot);
    json_dist(f, "itl_ms", &r->itl);
    json_dist(f, "e2e_ms", &r->e2e);
    fputs("  \"first_error\": ", f);
    json_str(f, r->first_error);
    if (per_request) {
        fputs(",\n  \"requests\": [", f);
        for (size_t i = 0; i < r->n_records; i++) {
            const struct br_loadgen_record *q = &r->records[i];
            fprintf(f, "%s\n    {\"index\": %d, \"code\": \"%s\", \"finish\": ", i ? "," : "",
                    q->index, br_loadgen_code_name(q->code));
            if (q->finish >= 0)
                fprintf(f, "\"%s\"", br_proto_finish_name((enum br_finish)q->finish));
            else
                fputs("null", f);
            json_num(f, ", \"sched_ms\": ", q->sched_ms);
            json_num(f, ", \"start_ms\": ", q->start_ms);
            json_num(f, ", \"ttft_ms\": ", q->n_out >= 1 ? q->ttft_ms : NAN);
            json_num(f, ", \"tpot_ms\": ", q->n_out >= 2 ? q->tpot_ms : NAN);
            json_num(f, ", \"e2e_ms\": ", q->e2e_ms);
            fprintf(f, ", \"input_tokens\": %u, \"output_tokens\": %u, \"itl_ms\": [", q->n_in,
                    q->n_out);
            for (uint32_t k = 0; q->itl_ms && k + 1 < q->n_out; k++) {
                if (k) fputs(", ", f);
                fprintf(f, "%.4f", q->itl_ms[k]);
            }
            fputs("]}", f);
        }
        fputs("\n  ]", f);
    }
    fputs("\n}", f);
}

int br_loadgen_write_json(FILE *f, const struct br_loadgen_result *const *results, size_t n,
                          bool as_array, bool per_request)
{
    if (as_array || n != 1) fputs("[\n", f);
    for (size_t i = 0; i < n; i++) {
        if (i) fputs(",\n", f);
        json_result(f, results[i], per_request);
    }
    fputs(as_array || n != 1 ? "\n]\n" : "\n", f);
    return fflush(f) || ferror(f) ? BR_E_IO : BR_OK;
}

/* ---- tables --------------------------------------------------------------------------- */

static void mode_text(const struct br_loadgen_result *r, char *buf, size_t n)
{
    if (r->config.rate > 0)
        snprintf(buf, n, "open loop, Poisson %.3g req/s, max concurrency %d", r->config.rate,
                 r->slots);
    else
        snprintf(buf, n, "closed loop, concurrency %d", r->config.concurrency);
}

static void dist_row(FILE *f, const char *name, const struct br_loadgen_dist *d)
{
    if (!d->n) {
        fprintf(f, "%-6s %10s %10s %10s %10s %8s\n", name, "-", "-", "-", "-", "0");
        return;
    }
    fprintf(f, "%-6s %10.2f %10.2f %10.2f %10.2f %8zu\n", name, d->mean, d->p50, d->p90, d->p99,
            d->n);
}

void br_loadgen_print_table(FILE *f, const struct br_loadgen_result *r)
{
    char mode[128];
    mode_text(r, mode, sizeof mode);
    fprintf(f, "---------------- bitrack serving benchmark ----------------\n");
    fprintf(f, "%-34s %s\n", "mode", mode);
    if (r->config.workload) fprintf(f, "%-34s %s\n", "workload", r->config.workload);
    fprintf(f, "%-34s %d / %d\n", "requests completed / failed", r->completed, r->failed);
    for (int k = 1; k < BR_LOADGEN_N_CODES; k++)
        if (r->errors[k])
            fprintf(f, "  %-32s %d\n", br_loadgen_code_name((enum br_loadgen_code)k), r->errors[k]);
    if (r->first_error[0]) fprintf(f, "%-34s %s\n", "first error", r->first_error);
    fprintf(f, "%-34s %.3f\n", "duration (s)", r->duration_s);
    fprintf(f, "%-34s %llu / %llu\n", "input / output tokens", (unsigned long long)r->in_tokens,
            (unsigned long long)r->out_tokens);
    fprintf(f, "%-34s %.2f\n", "request throughput (req/s)", r->req_per_s);
    fprintf(f, "%-34s %.2f\n", "input token throughput (tok/s)", r->in_tok_per_s);
    fprintf(f, "%-34s %.2f\n", "output token throughput (tok/s)", r->out_tok_per_s);
    if (r->config.rate > 0)
        fprintf(f, "%-34s %.2f\n", "mean send lateness (ms)", r->mean_lateness_ms);
    fprintf(f, "%-6s %10s %10s %10s %10s %8s\n", "(ms)", "mean", "p50", "p90", "p99", "n");
    dist_row(f, "TTFT", &r->ttft);
    dist_row(f, "TPOT", &r->tpot);
    dist_row(f, "ITL", &r->itl);
    dist_row(f, "E2E", &r->e2e);
    fprintf(f, "------------------------------------------------------------\n");
}

void br_loadgen_print_sweep(FILE *f, const struct br_loadgen_result *const *results, size_t n)
{
    bool rate = n && results[0]->config.rate > 0;
    fprintf(f, "%8s %8s %10s %9s %9s %9s %9s %9s %9s %6s\n", rate ? "rate" : "conc", "req/s",
            "out tok/s", "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90", "E2E p50", "E2E p90",
            "errors");
    for (size_t i = 0; i < n; i++) {
        const struct br_loadgen_result *r = results[i];
        if (rate)
            fprintf(f, "%8.3g", r->config.rate);
        else
            fprintf(f, "%8d", r->config.concurrency);
        fprintf(f, " %8.2f %10.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %6d\n", r->req_per_s,
                r->out_tok_per_s, r->ttft.p50, r->ttft.p90, r->tpot.p50, r->tpot.p90, r->e2e.p50,
                r->e2e.p90, r->failed);
    }
}

/* ---- SVG ------------------------------------------------------------------------------ */

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `want` ticks on
 * [0, hi]. */
static double nice_step(double hi, int want)
{
    double raw = hi / want, p = pow(10.0, floor(log10(raw))), m = raw / p;
    return p * (m <= 1.0 ? 1.0 : m <= 2.0 ? 2.0 : m <= 5.0 ? 5.0 : 10.0);
}

static void tick_label(char *buf, size_t n, double v, double step)
{
    if (step >= 1.0)
        snprintf(buf, n, "%.0f", v);
    else if (step >= 0.1)
        snprintf(buf, n, "%.1f", v);
    else if (step >= 0.01)
        snprintf(buf, n, "%.2f", v);
    else
        snprintf(buf, n, "%.3g", v);
}

static double y_value(const struct br_loadgen_result *r, enum br_loadgen_plot_y y, bool p90)
{
    const struct br_loadgen_dist *d = y == BR_LOADGEN_PLOT_E2E    ? &r->e2e
                                      : y == BR_LOADGEN_PLOT_TTFT ? &r->ttft
                                                                  : &r->tpot;
    return p90 ? d->p90 : d->p50;
}

int br_loadgen_plot_svg(FILE *f, const struct br_loadgen_result *const *results, size_t n,
                        enum br_loadgen_plot_y y)
{
    enum { W = 760, H = 500, ML = 80, MR = 150, MT = 50, MB = 70 };
    const double pw = W - ML - MR, ph = H - MT - MB;
    const char *yname = y == BR_LOADGEN_PLOT_E2E    ? "end-to-end latency"
                        : y == BR_LOADGEN_PLOT_TTFT ? "time to first token"
                                                    : "time per output token";
    double xmax = 0.0, ymax = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (results[i]->out_tok_per_s > xmax) xmax = results[i]->out_tok_per_s;
        if (y_value(results[i], y, true) > ymax) ymax = y_value(results[i], y, true);
        if (y_value(results[i], y, false) > ymax) ymax = y_value(results[i], y, false);
    }
    if (!(xmax > 0.0)) xmax = 1.0;
    if (!(ymax > 0.0)) ymax = 1.0;
    double xs = nice_step(xmax * 1.05, 6), ys = nice_step(ymax * 1.1, 6);
    double xhi = ceil(xmax * 1.05 / xs) * xs, yhi = ceil(ymax * 1.1 / ys) * ys;
#define PX(v) (ML + (v) / xhi * pw)
#define PY(v) (MT + ph - (v) / yhi * ph)
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d "
            "%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            W, H, W, H, W, H);
    fprintf(f,
            "<text x=\"%d\" y=\"28\" font-size=\"15\" text-anchor=\"middle\">bitrack serving "
            "benchmark: output throughput vs %s</text>\n",
            ML + (int)pw / 2, yname);
    /* grid and ticks */
    char lab[32];
    for (int k = 0; k * xs <= xhi + xs * 1e-6; k++) {
        double v = k * xs;
        tick_label(lab, sizeof lab, v, xs);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                PX(v), MT, PX(v), MT + ph, PX(v), MT + ph + 18, lab);
    }
    for (int k = 0; k * ys <= yhi + ys * 1e-6; k++) {
        double v = k * ys;
        tick_label(lab, sizeof lab, v, ys);
        fprintf(f,
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                ML, PY(v), ML + pw, PY(v), ML - 6, PY(v) + 4, lab);
    }
    fprintf(f,
            "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%.1f\" stroke=\"black\"/>\n",
            ML, MT + ph, ML + pw, MT + ph, ML, MT, ML, MT + ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">output tokens/s</text>\n",
            ML + pw / 2, H - 20);
    fprintf(f,
            "<text transform=\"translate(22 %.1f) rotate(-90)\" text-anchor=\"middle\">%s "
            "(ms)</text>\n",
            MT + ph / 2, yname);
    /* the p50 and p90 series, in sweep order */
    static const char *const color[2] = {"#1f77b4", "#d62728"};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color[s],
                s ? " stroke-dasharray=\"6 4\"" : "");
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%s%.1f,%.1f", i ? " " : "", PX(results[i]->out_tok_per_s),
                    PY(y_value(results[i], y, s)));
        fputs("\"/>\n", f);
        for (size_t i = 0; i < n; i++) {
            double px = PX(results[i]->out_tok_per_s), py = PY(y_value(results[i], y, s));
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", px, py, color[s]);
            if (results[i]->config.rate > 0)
                snprintf(lab, sizeof lab, "%.3g/s", results[i]->config.rate);
            else
                snprintf(lab, sizeof lab, "c=%d", results[i]->config.concurrency);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%s\">%s</text>\n",
                    px + 6, py - 6, color[s], lab);
        }
    }
    /* legend */
    for (int s = 0; s < 2; s++) {
        double ly = MT + 10 + 20 * s;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\"%s/>\n"
                "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                ML + pw + 15, ly, ML + pw + 45, ly, color[s], s ? " stroke-dasharray=\"6 4\"" : "",
                ML + pw + 52, ly + 4, s ? "p90" : "p50");
    }
    fputs("</svg>\n", f);
#undef PX
#undef PY
    return fflush(f) || ferror(f) ? BR_E_IO : BR_OK;
}
