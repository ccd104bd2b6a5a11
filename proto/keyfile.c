/*
 * CurveZMQ key files (see keyfile.h): one parser for the server and every C client, so
 * that they agree on what a key file is and which kind it holds.
 */
#include "proto/keyfile.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#define KIND_PUBLIC "bitrack CurveZMQ public key"
#define KIND_SECRET "bitrack CurveZMQ secret key"

const char *br_key_kind_name(enum br_key_kind k)
{
    return k == BR_KEY_PUBLIC   ? "public key"
           : k == BR_KEY_SECRET ? "secret key"
                                : "key of no stated kind";
}

int br_key_file_read(const char *path, enum br_key_kind want, char key[41], enum br_key_kind *kind,
                     struct br_err *err)
{
    if (kind) *kind = BR_KEY_UNKNOWN;
    FILE *f = fopen(path, "r");
    if (!f) return br_err_set(err, BR_E_IO, "%s: %s", path, strerror(errno));
    char line[512];
    int n_keys = 0, pub = 0, sec = 0, rc = BR_OK;
    while (rc == BR_OK && fgets(line, sizeof line, f)) {
        char *p = line;
        size_t n = strcspn(p, "\r\n");
        if (p[n] == '\0' && !feof(f)) {
            rc = br_err_set(err, BR_E_FORMAT, "%s: a line longer than %zu bytes; not a key file",
                            path, sizeof line - 2);
            break;
        }
        p[n] = '\0';
        while (*p == ' ' || *p == '\t') p++;
        n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) p[--n] = '\0';
        if (n == 0) continue;
        if (p[0] == '#') {
            p++;
            while (*p == ' ' || *p == '\t') p++;
            pub |= !strncmp(p, KIND_PUBLIC, strlen(KIND_PUBLIC));
            sec |= !strncmp(p, KIND_SECRET, strlen(KIND_SECRET));
            continue;
        }
        if (++n_keys > 1) {
            rc = br_err_set(err, BR_E_FORMAT,
                            "%s: more than one key line; a key file holds one key", path);
            break;
        }
        uint8_t raw[32];
        if (n != 40 || !zmq_z85_decode(raw, p)) {
            rc = br_err_set(err, BR_E_FORMAT, "%s: '%.48s' is not a 40-character z85 key", path, p);
            break;
        }
        memcpy(key, p, 41);
    }
    fclose(f);
    if (rc) return rc;
    if (n_keys == 0)
        return br_err_set(err, BR_E_FORMAT, "%s: no key (a line of 40 z85 characters)", path);
    if (pub && sec)
        return br_err_set(err, BR_E_FORMAT, "%s: states both kinds (public and secret key)", path);
    enum br_key_kind k = pub ? BR_KEY_PUBLIC : sec ? BR_KEY_SECRET : BR_KEY_UNKNOWN;
    if (kind) *kind = k;
    if (want == BR_KEY_UNKNOWN || k == want) return BR_OK;
    if (k == BR_KEY_UNKNOWN)
        return br_err_set(err, BR_E_MISMATCH,
                          "%s: does not say whether it holds a public or a secret key (no "
                          "'# " KIND_PUBLIC "' or '# " KIND_SECRET "' line); a %s is needed here "
                          "(bitrack keygen writes both kinds)",
                          path, br_key_kind_name(want));
    return br_err_set(err, BR_E_MISMATCH, "%s: holds a %s, but a %s is needed here%s", path,
                      br_key_kind_name(k), br_key_kind_name(want),
                      want == BR_KEY_SECRET ? " (PREFIX.key from bitrack keygen, not PREFIX.pub)"
                                            : " (PREFIX.pub from bitrack keygen, not PREFIX.key)");
}
