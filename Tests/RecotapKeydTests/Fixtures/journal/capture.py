"""Stand-in for journald and systemd's notify socket, for JournalNativeTests.

Run inside a private mount namespace with a fresh tmpfs on /run (never the host's):
binds /run/systemd/journal/socket, where libsystemd's sd_journal_sendv sends native
journal entries, and a notify socket; starts recotap-keyd with log.target=journal,
waits for READY=1, sends SIGTERM, and prints what arrived as JSON.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys


def parse(datagram):
    """Native journal protocol: NAME=value\\n, or NAME\\n<u64le length><bytes>\\n."""
    fields = []
    rest = datagram
    while rest:
        newline = rest.index(b"\n")
        line = rest[:newline]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            rest = rest[newline + 1:]
        else:
            name = line
            (length,) = struct.unpack("<Q", rest[newline + 1:newline + 9])
            value = rest[newline + 9:newline + 9 + length]
            rest = rest[newline + 9 + length + 1:]
        fields.append([name.decode(), value.decode("utf-8", "replace")])
    return fields


def main():
    daemon, config = sys.argv[1], sys.argv[2]
    os.makedirs("/run/systemd/journal", exist_ok=True)
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind("/run/systemd/journal/socket")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("/run/notify.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOTAP_KEYD_")}
    env["NOTIFY_SOCKET"] = "/run/notify.sock"
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.Popen(
        [daemon, "--config", config, "--log-target", "journal"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    notify.settimeout(60)
    notifications = []
    try:
        while True:
            message = notify.recv(4096).decode()
            notifications.append(message)
            if "READY=1" in message.split("\n"):
                break
    except socket.timeout:
        pass
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0].decode("utf-8", "replace")
    journal.settimeout(1)
    entries = []
    try:
        while True:
            entries.append(parse(journal.recv(1 << 20)))
    except socket.timeout:
        pass
    print(json.dumps({"exit": proc.returncode, "notifications": notifications,
                      "entries": entries, "output": output}))


main()
