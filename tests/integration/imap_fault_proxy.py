#!/usr/bin/env python3
"""imap_fault_proxy.py — a TCP proxy in front of the real Dovecot that answers
some commands with a tagged NO while a control file says so (used by
test_imap_no.sh). Real Dovecot never answers a FETCH with NO for a message it
cannot read (it sends BYE and disconnects), so the temporary NO of other
servers ([UNAVAILABLE], [SERVERBUG]) is injected here; everything else,
including the messages' bytes, comes from Dovecot unchanged.

  imap_fault_proxy.py UPSTREAM_HOST UPSTREAM_PORT CONTROL_DIR

Prints the listening port on stdout. Control files in CONTROL_DIR:
  fetch-no    holds UIDs (space separated): a UID FETCH whose set contains one
              of them is answered "<tag> NO [UNAVAILABLE] ..." and not forwarded
  scan-no     exists: a (non-UID) FETCH is answered "<tag> NO [SERVERBUG] ..."
  no-idle     exists: IDLE is taken out of the capabilities the server sends
              (a server without IDLE, for test_idle.sh)
Every injected NO appends one line ("fetch" or "scan") to CONTROL_DIR/injected.
"""
import os
import re
import socket
import sys
import threading

UP_HOST, UP_PORT, CTL = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def in_set(uid, s):
    for part in s.split(","):
        if ":" in part:
            a, b = part.split(":", 1)
            a = 2**32 if a == "*" else int(a)
            b = 2**32 if b == "*" else int(b)
            if min(a, b) <= uid <= max(a, b):
                return True
        elif part != "*" and int(part) == uid:
            return True
    return False


def injected(kind):
    with lock, open(os.path.join(CTL, "injected"), "a") as f:
        f.write(kind + "\n")


def verdict(line):
    """The NO to send instead of forwarding line, or None."""
    m = re.match(rb"(\S+) (UID )?FETCH (\S+) ", line, re.I)
    if not m:
        return None
    tag, by_uid, sset = m.group(1), m.group(2), m.group(3).decode()
    if by_uid:
        try:
            with open(os.path.join(CTL, "fetch-no")) as f:
                uids = [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return None
        if b"BODY" in line.upper() and any(in_set(u, sset) for u in uids):
            injected("fetch")
            return tag + b" NO [UNAVAILABLE] Message store temporarily unavailable (injected)\r\n"
    elif os.path.exists(os.path.join(CTL, "scan-no")):
        injected("scan")
        return tag + b" NO [SERVERBUG] Internal error occurred (injected)\r\n"
    return None


def pump_up(cli, srv, cf):
    """client -> server, line by line (literals passed through)."""
    try:
        while True:
            line = cf.readline()
            if not line:
                break
            m = re.search(rb"\{(\d+)\+?\}\r\n$", line)
            if m:
                srv.sendall(line)  # a synchronizing literal waits for "+" first
                srv.sendall(cf.read(int(m.group(1))))
                continue
            no = verdict(line)
            if no:
                cli.sendall(no)
            else:
                srv.sendall(line)
    except OSError:
        pass
    for s in (srv, cli):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def pump_down(srv, cli):
    try:
        while True:
            d = srv.recv(65536)
            if not d:
                break
            if os.path.exists(os.path.join(CTL, "no-idle")):
                d = re.sub(rb"(CAPABILITY[^\r\n]*?) IDLE(?=[ \]\r])", rb"\1", d)
            cli.sendall(d)
    except OSError:
        pass
    for s in (srv, cli):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(cli):
    try:
        srv = socket.create_connection((UP_HOST, UP_PORT))
    except OSError:
        cli.close()
        return
    cf = cli.makefile("rb")
    threading.Thread(target=pump_down, args=(srv, cli), daemon=True).start()
    pump_up(cli, srv, cf)


def main():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    print(ls.getsockname()[1], flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


main()
