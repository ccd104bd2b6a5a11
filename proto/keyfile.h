/*
 * CurveZMQ key files: reading one and checking that it holds the kind of key its user
 * needs (a server's secret key, a client's secret key, a public key).
 *
 * Format (what `bitrack keygen` writes):
 *
 *     # bitrack CurveZMQ public key          (or: # bitrack CurveZMQ secret key...)
 *     <40 z85 characters: the 32-byte key>
 *
 * Lines starting with '#' (after blanks) are comments and empty lines are ignored; of the
 * rest there is exactly one, the key. A public and a secret key are both 32 random-looking
 * bytes, so nothing in the key itself tells them apart: the kind is the comment line
 * `# bitrack CurveZMQ public key` or `# bitrack CurveZMQ secret key` (at the start of a
 * comment, any text may follow). A file that states no kind, or both, is refused where a
 * key of a given kind is needed, so a public key given as a secret one (or a secret key
 * dropped among public ones) is caught at load instead of failing later as a handshake
 * nobody can explain. The file name plays no part.
 */
#ifndef BR_PROTO_KEYFILE_H
#define BR_PROTO_KEYFILE_H

#include "bitrack/status.h"

enum br_key_kind { BR_KEY_UNKNOWN = 0, BR_KEY_PUBLIC, BR_KEY_SECRET };

/* "public key" / "secret key" / "key of no stated kind" */
const char *br_key_kind_name(enum br_key_kind k);

/* Reads the key file at path into key (40 z85 characters and a NUL) and *kind (may be
 * NULL) the kind it states. want != BR_KEY_UNKNOWN: a file of another kind, or of none,
 * is an error (BR_E_MISMATCH) naming the file, both kinds and what to do.
 * BR_E_IO: the file cannot be read; BR_E_FORMAT: no key, a key that is not 40 z85
 * characters, more than one key, or both kinds stated. */
int br_key_file_read(const char *path, enum br_key_kind want, char key[41], enum br_key_kind *kind,
                     struct br_err *err);

#endif
