#!/usr/bin/env python3
"""Socket activation the way systemd does it, for tests.

usage: activate.py API_SOCKET CREDENTIAL_SOCKET COMMAND [ARG...]

Binds and listens on both paths, then runs COMMAND with the listening sockets as
descriptors 3 and 4, LISTEN_FDS=2, LISTEN_PID=<its pid> and
LISTEN_FDNAMES=api:credential. Forwards SIGTERM/SIGINT and exits with its status.
"""
import os
import signal
import socket
import sys

# Foundation's Process starts children with most signals blocked; systemd starts
# services with none blocked.
signal.pthread_sigmask(signal.SIG_SETMASK, [])

paths = sys.argv[1:3]
command = sys.argv[3:]
sockets = []
for path in paths:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o660)
    s.listen(64)
    sockets.append(s)
print("activate.py: listening on %s" % " ".join(paths), file=sys.stderr, flush=True)

pid = os.fork()
if pid == 0:
    high = [os.dup(s.fileno()) for s in sockets]
    for index, fd in enumerate(high):
        os.dup2(fd, 3 + index, inheritable=True)
    env = dict(os.environ, LISTEN_FDS=str(len(sockets)), LISTEN_PID=str(os.getpid()),
               LISTEN_FDNAMES="api:credential")
    os.execve(command[0], command, env)

for s in sockets:
    s.close()


def forward(number, _frame):
    os.kill(pid, number)


signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
while True:
    try:
        _, status = os.waitpid(pid, 0)
        break
    except InterruptedError:
        continue
sys.exit(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8)
