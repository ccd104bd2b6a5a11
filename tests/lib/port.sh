# Sourced by the tests that start a server. br_free_port prints a TCP port on 127.0.0.1
# that the kernel just handed out and nothing listens on, so concurrent tests (and Open
# MPI's own ports) do not collide as they could with a port derived from a process id.
br_free_port() {
    "${PY:-/usr/bin/python3}" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
