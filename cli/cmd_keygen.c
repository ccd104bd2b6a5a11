/*
 * `bitrack keygen -o PREFIX [--force]`: a CurveZMQ key pair for `bitrack serve
 * --curve-secret` or a client's --curve-key. Writes PREFIX.key (the secret key, mode
 * 0600) and PREFIX.pub (the public key), each a '#' comment line and 40 z85 characters.
 * A server is given its .key file and a directory of its clients' .pub files; a client
 * its own .key file and the server's .pub file. Existing files are kept unless --force.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/cli.h"
#include "cli/opts.h"

/* Writes text to path, creating it with mode; O_EXCL unless force. 0 on success. */
static int write_key(const char *path, const char *text, mode_t mode, int force)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | (force ? 0 : O_EXCL), mode);
    if (fd < 0) {
        fprintf(stderr, "bitrack keygen: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (use --force to replace it)" : "");
        return -1;
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "bitrack keygen: writing %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    if (fchmod(fd, mode) || close(fd)) {
        fprintf(stderr, "bitrack keygen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int br_cmd_keygen(int argc, char **argv)
{
    const char *prefix = NULL;
    int force = 0;
    const struct br_opt opts[] = {
        BR_O_STR('o', "output", &prefix, "PREFIX", "write PREFIX.key (secret) and PREFIX.pub"),
        BR_O_FLAG('f', "force", &force, "replace existing files"),
    };
    const struct br_cmd_spec spec = {
        "keygen", NULL,
        "Makes a CurveZMQ key pair for `serve --curve-secret/--curve-clients` and the\n"
        "clients' --curve-key/--curve-server-key (docs/RELIABILITY.md, \"Security\").",
        opts, sizeof opts / sizeof *opts};
    int optind_, prc = br_opts_parse(&spec, argc, argv, &optind_);
    if (prc) return prc == BR_OPTS_HELP ? 0 : prc;
    if (!prefix || !prefix[0]) return br_cli_usage_error("keygen", "give -o PREFIX");
    if (optind_ < argc)
        return br_cli_usage_error("keygen", "unexpected argument '%s'", argv[optind_]);
    if (!zmq_has("curve")) {
        fprintf(stderr, "bitrack keygen: this libzmq was built without CurveZMQ\n");
        return 1;
    }
    char pub[41], sec[41], pub_path[4096], sec_path[4096], text[256];
    if (zmq_curve_keypair(pub, sec)) {
        fprintf(stderr, "bitrack keygen: zmq_curve_keypair: %s\n", zmq_strerror(zmq_errno()));
        return 1;
    }
    if ((size_t)snprintf(pub_path, sizeof pub_path, "%s.pub", prefix) >= sizeof pub_path ||
        (size_t)snprintf(sec_path, sizeof sec_path, "%s.key", prefix) >= sizeof sec_path)
        return br_cli_usage_error("keygen", "PREFIX is too long");
    snprintf(text, sizeof text, "# bitrack CurveZMQ secret key; keep it private\n%s\n", sec);
    if (write_key(sec_path, text, 0600, force)) return 1;
    snprintf(text, sizeof text, "# bitrack CurveZMQ public key\n%s\n", pub);
    if (write_key(pub_path, text, 0644, force)) {
        unlink(sec_path);
        return 1;
    }
    printf("%s\n", pub);
    fprintf(stderr, "bitrack keygen: wrote %s (secret) and %s (public)\n", sec_path, pub_path);
    return 0;
}
