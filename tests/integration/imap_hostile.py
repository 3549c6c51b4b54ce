#!/usr/bin/env python3
"""imap_hostile.py — a small IMAP4rev1 server (Python 3 stdlib, one thread per
connection, plain TCP on 127.0.0.1, no TLS) that serves a fixed, deterministic
mailbox and lies on purpose, depending on the user name it is logged in with.
Real Dovecot never misbehaves like this; mailbus must survive a server that
does. With the user `good` it is a correct server that mailbus imports from
completely.

  imap_hostile.py STATE_DIR

Listens on an ephemeral port of 127.0.0.1, prints the port number on stdout
and serves until killed. Any password is accepted, any user name logs in (a
name not listed below behaves like `good`).

Protocol: CAPABILITY (IMAP4rev1 LITERAL+ IDLE: no CONDSTORE, QRESYNC,
SPECIAL-USE or XLIST, so mailbus sends no ENABLE or STATUS during an import),
LOGIN, LIST (reference "", patterns with * and %; delimiter "/"), STATUS
(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN), EXAMINE, SELECT (read-only
underneath: nothing can change), FETCH and UID FETCH (UID FLAGS RFC822.SIZE
INTERNALDATE RFC822 RFC822.HEADER RFC822.TEXT BODY[...] BODY.PEEK[...] with
sections "", HEADER, TEXT, HEADER.FIELDS[.NOT], 1 and <partial>; macros ALL
FAST FULL), SEARCH and UID SEARCH (ALL, sets, UID, SINCE/BEFORE/ON and the
SENT* forms on INTERNALDATE, flag keys, LARGER/SMALLER, NOT, OR, lists), IDLE
(nothing ever changes, so only DONE ends it), NOOP, CHECK, CLOSE, UNSELECT,
LOGOUT. Client literals {n} (answered "+") and {n+} are read. Anything else:
"<tag> BAD unknown command". A FETCH of sequence numbers beyond the last
message returns what exists (no error).

Mailbox (every user, contents differ by user name): INBOX with 6 messages
(UIDs 1..6) and Archive with 3 (UIDs 1..3); sequence numbers 1..N in UID
order, UIDVALIDITY 1, UIDNEXT N+1, messages never change. Each message is a
valid RFC 5322 text/plain message with CRLF line ends, 300-3000 bytes, user,
folder and UID in Subject and body, Message-ID <user.folder.uid@hostile.test>,
INTERNALDATE (and Date:) 2024-MM-DD 12:00:00 +0000 with DD = UID, MM 01 for
INBOX, 02 for Archive, 03 for the extra folders below; FLAGS (\\Seen) on odd
UIDs, () on even ones.

Misbehaviour, by user name. Unless said otherwise it hits only INBOX UID 2 and
only a UID FETCH that asks for a body (BODY[], BODY.PEEK[], RFC822...) and
whose set holds UID 2; everything else behaves like `good`. The messages of
that UID FETCH with a UID below 2 are sent first, correctly (responses always
go in UID order, whatever the order of the set); those above 2 are sent only
where said below.
  good          correct.
  lie-long      UID 2's BODY[] literal is announced 100 bytes longer than the
                data sent; after the data ")" CRLF and the tagged OK (nothing
                above UID 2), then the connection goes silent: commands are still read and logged,
                nothing is ever answered, until the client disconnects.
  lie-short     announced 100 bytes shorter than the data; all the data is
                sent anyway, then ")" CRLF, the messages above UID 2, the
                tagged OK (the client finds 100 bytes of message text where
                it expects protocol).
  huge-literal  UID 2's BODY[] announced as {2147483648}, then 64 KB blocks
                of 'x' as fast as the socket takes them until the client
                disconnects (a client that reads all 2 GiB gets ")" CRLF, the
                rest and the tagged OK).
  endless-line  instead of UID 2's response: "* 2 FETCH (UID 2 FLAGS (\\Seen "
                and then 'a' in 64 KB blocks, never a CRLF, until the client
                disconnects.
  unsolicited   every UID FETCH (any folder, any items) first gets, before the
                real data: "* 7 FETCH (UID X BODY[] {n}" with a forged message
                (Subject "FORGED ...", bytes unlike any real message) for a
                UID X that the command's set does not hold (3; else the lowest
                UID 1..N not asked for; else N+1), "* 40 EXISTS",
                "* OK [ALERT] you did not ask for this" and "+ nobody asked";
                then all the real data and the tagged OK, correctly.
  bye-fetch     the first 2 connections of this user (counted process-wide)
                that send such a UID FETCH get the messages below UID 2, then
                "* BYE shutting down" and the socket is closed (the tagged
                command is never answered); from the 3rd such connection on it
                is served correctly (the count never resets: start a new
                server per test).
  bad-utf7      LIST also returns folders whose names are not valid modified
                UTF-7: "Bad&Jjo" (unterminated), "Bad&AGE-" (plain ASCII "a"
                encoded), "Bad&-&" (stray "&" at the end), "Bad&ZeVnLIqe-X&"
                (valid, then a stray "&"), and the valid "Caf&AOk-" (Café).
                Each holds 2 messages (UIDs 1, 2) and answers STATUS, EXAMINE,
                FETCH under its raw name exactly as listed.
  many-folders  LIST also returns 100,000 empty folders F000000..F099999
                (STATUS/EXAMINE: 0 messages, UIDNEXT 1, UIDVALIDITY 1), sent
                in large writes.
  slowloris     UID 2's response: "* 2 FETCH (UID 2 BODY[] {size}" CRLF, then
                the message one byte per second (7-45 minutes for these
                sizes: in practice until the client disconnects); a client
                that waits it out gets ")" CRLF, the rest and the tagged OK.

Files in STATE_DIR:
  mailbox-<user>.tsv  "folder<TAB>uid<TAB>sha256-hex<TAB>size" of every message
                      that user sees (folders in LIST order, UIDs ascending),
                      written (atomically) when the user first logs in;
                      mailbox-good.tsv is also written at start-up. <user> is
                      the name with bytes other than [A-Za-z0-9._-] as "_".
  events              one line "<user> <kind>" each time a misbehaviour is
                      injected; kind is: lie-long, lie-short, huge-literal,
                      endless-line, unsolicited (per UID FETCH), bye-fetch (per
                      BYE sent), bad-utf7 and many-folders (per LIST that
                      carried the extra folders), slowloris.
  log                 one line per command received: "<user> <tag> <command>"
                      (user "-" before LOGIN; command truncated to 200
                      characters, literals inlined, bytes outside printable
                      ASCII as \\xNN, LOGIN's password shown as ***; the DONE
                      that ends IDLE has tag "-"), plus notes with tag "*":
                      "- * connect N", "<user> * disconnect N", "connection N
                      goes silent" (lie-long), "BYE sent on connection N"
                      (bye-fetch), and how much of a never-ending answer was
                      sent before the client went away ("client left after
                      ...").
"""
import datetime
import hashlib
import os
import re
import socket
import sys
import threading
import time

STATE = sys.argv[1] if len(sys.argv) > 1 else None
CAPS = "IMAP4rev1 LITERAL+ IDLE"
DELIM = "/"
MAX_LINE = 1 << 20
BLOCK = b"x" * 65536
lock = threading.Lock()          # files, caches, counters
conn_counter = [0]
bye_count = {}                   # user -> connections that got the BYE
tsv_written = set()
mailbox_cache = {}               # user -> {folder: [Msg]}

BAD_UTF7 = ["Bad&Jjo", "Bad&AGE-", "Bad&-&", "Bad&ZeVnLIqe-X&", "Caf&AOk-"]
MANY = 100000
MANY_RE = re.compile(r"F0\d{5}\Z")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
WDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


class Gone(Exception):
    """The client went away (or the connection is to be dropped)."""


# ---- files ----------------------------------------------------------------

def safe(s):
    return re.sub(r"[^A-Za-z0-9._-]", "_", s)


def printable(b, limit=200):
    out = []
    n = 0
    for c in b:
        t = chr(c) if 32 <= c < 127 else "\\x%02x" % c
        out.append(t)
        n += len(t)
        if n >= limit:
            break
    return "".join(out)[:limit]


files = {}                       # name -> open file (appended, flushed per line)


def append_file(name, line):
    with lock:
        f = files.get(name)
        if f is None:
            f = files[name] = open(os.path.join(STATE, name), "a", buffering=1)
        f.write(line + "\n")


def log(user, tag, text):
    append_file("log", "%s %s %s" % (user or "-", tag, text))


def event(user, kind):
    append_file("events", "%s %s" % (user, kind))


# ---- the mailbox ----------------------------------------------------------

class Msg:
    __slots__ = ("uid", "data", "flags", "date", "header", "text")

    def __init__(self, uid, data, flags, date):
        self.uid, self.data, self.flags, self.date = uid, data, flags, date
        i = data.find(b"\r\n\r\n")
        self.header, self.text = data[: i + 4], data[i + 4:]


def hdr_safe(s):
    return re.sub(r"[^\x21-\x7e ]", "?", s)


def id_safe(s):
    return re.sub(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]", "_", s) or "_"


def make_message(user, folder, uid, month, forged=False):
    """(bytes, (y, m, d)) of one message, deterministic."""
    y, d = 2024, uid if 1 <= uid <= 28 else 28
    wday = WDAYS[datetime.date(y, month, d).weekday()]
    date = "%s, %d %s %d 12:00:00 +0000" % (wday, d, MONTHS[month - 1], y)
    tag = "FORGED " if forged else ""
    u, f = hdr_safe(user), hdr_safe(folder)
    lines = [
        "From: Hostile Sender <sender@hostile.test>",
        "To: %s <%s@hostile.test>" % (id_safe(user), id_safe(user)),
        "Subject: %s[hostile] user=%s folder=%s uid=%d" % (tag, u, f, uid),
        "Date: " + date,
        "Message-ID: <%s%s.%s.%d@hostile.test>" % ("forged." if forged else "", id_safe(user),
                                                  id_safe(folder), uid),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "%sThis is message uid %d of folder %s for user %s." % (tag, uid, f, u),
        "",
    ]
    seed = hashlib.sha256(("%s/%s/%d/%d" % (user, folder, uid, forged)).encode()).digest()
    target = 400 + int.from_bytes(seed[:4], "big") % 2200
    size = sum(len(x) + 2 for x in lines)
    k = 0
    while size < target:
        k += 1
        x = "%sline %03d of %s/%d: the quick brown fox jumps over the lazy dog %s" % (
            tag, k, f, uid, seed.hex()[k % 40: k % 40 + 16])
        lines.append(x)
        size += len(x) + 2
    lines.append("-- ")
    lines.append("end of uid %d" % uid)
    data = ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")
    return data, (y, month, d)


def folders_of(user):
    names = ["INBOX", "Archive"]
    if user == "bad-utf7":
        names += BAD_UTF7
    return names


def mailbox(user):
    """{folder: [Msg]} of the folders with messages (many-folders' are empty)."""
    with lock:
        mb = mailbox_cache.get(user)
    if mb is not None:
        return mb
    mb = {}
    for folder, n, month in [("INBOX", 6, 1), ("Archive", 3, 2)] + \
            ([(x, 2, 3) for x in BAD_UTF7] if user == "bad-utf7" else []):
        msgs = []
        for uid in range(1, n + 1):
            data, date = make_message(user, folder, uid, month)
            msgs.append(Msg(uid, data, ["\\Seen"] if uid % 2 else [], date))
        mb[folder] = msgs
    with lock:
        mailbox_cache.setdefault(user, mb)
        return mailbox_cache[user]


def find_folder(user, name):
    """The folder's real name and message list, or (None, None)."""
    if name.upper() == "INBOX":
        name = "INBOX"
    mb = mailbox(user)
    if name in mb:
        return name, mb[name]
    if user == "many-folders" and MANY_RE.match(name) and int(name[1:]) < MANY:
        return name, []
    return None, None


def write_tsv(user):
    with lock:
        if user in tsv_written:
            return
        tsv_written.add(user)
    mb = mailbox(user)
    rows = []
    for f in folders_of(user):
        for m in mb.get(f, []):
            rows.append("%s\t%d\t%s\t%d\n" % (f, m.uid, hashlib.sha256(m.data).hexdigest(), len(m.data)))
    path = os.path.join(STATE, "mailbox-%s.tsv" % safe(user))
    tmp = path + ".tmp.%d" % threading.get_ident()
    with open(tmp, "w") as fh:
        fh.write("".join(rows))
    os.replace(tmp, path)


# ---- command parsing ------------------------------------------------------

class ParseError(Exception):
    pass


class Atom(str):
    pass


class Str(str):
    """A quoted string or a literal (latin-1 decoded: bytes survive)."""


class Tokens:
    def __init__(self, text, lits):
        self.t, self.lits, self.p = text, list(lits), 0

    def end(self):
        return self.p >= len(self.t)

    def sp(self):
        while self.p < len(self.t) and self.t[self.p] == " ":
            self.p += 1

    def token(self):
        self.sp()
        if self.end():
            raise ParseError("missing argument")
        c = self.t[self.p]
        if c == "(":
            self.p += 1
            out = []
            while True:
                self.sp()
                if self.end():
                    raise ParseError("unterminated list")
                if self.t[self.p] == ")":
                    self.p += 1
                    return out
                out.append(self.token())
        if c == ")":
            raise ParseError("unexpected )")
        if c == '"':
            self.p += 1
            s = []
            while True:
                if self.end():
                    raise ParseError("unterminated string")
                c = self.t[self.p]
                self.p += 1
                if c == "\\" and not self.end():
                    s.append(self.t[self.p])
                    self.p += 1
                elif c == '"':
                    return Str("".join(s))
                else:
                    s.append(c)
        m = re.compile(r"\{(\d+)\+?\}").match(self.t, self.p)
        if m:
            self.p = m.end()
            if not self.lits:
                raise ParseError("literal missing")
            return Str(self.lits.pop(0))
        s = self.p
        depth = 0
        while self.p < len(self.t):
            c = self.t[self.p]
            if c == "[":
                depth += 1
            elif c == "]":
                depth -= 1
            elif depth == 0 and c in " ()":
                break
            self.p += 1
        return Atom(self.t[s:self.p])

    def rest(self):
        out = []
        while True:
            self.sp()
            if self.end():
                return out
            out.append(self.token())


def astring(t):
    if isinstance(t, (Atom, Str)):
        return str(t)
    raise ParseError("string expected")


def parse_set(s, maxval):
    """[(lo, hi)] of a sequence set; '*' is maxval."""
    if not isinstance(s, Atom) or not re.fullmatch(r"[0-9*:,]+", s):
        raise ParseError("bad sequence set")
    out = []
    for part in s.split(","):
        ends = part.split(":")
        if len(ends) > 2 or "" in ends:
            raise ParseError("bad sequence set")
        v = []
        for e in ends:
            if e == "*":
                v.append(maxval)
            elif e.isdigit() and int(e) > 0:
                v.append(int(e))
            else:
                raise ParseError("bad sequence set")
        out.append((min(v), max(v)))
    return out


def in_set(n, ranges):
    return any(lo <= n <= hi for lo, hi in ranges)


def parse_date(t):
    m = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", astring(t))
    if not m or m.group(2).capitalize() not in MONTHS:
        raise ParseError("bad date")
    return (int(m.group(3)), MONTHS.index(m.group(2).capitalize()) + 1, int(m.group(1)))


FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
             "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}


def search_key(tk, msgs):
    """A predicate (seq, Msg) -> bool for the next search key in list tk."""
    t = tk.pop(0)
    if isinstance(t, list):
        preds = []
        sub = list(t)
        while sub:
            preds.append(search_key(sub, msgs))
        return lambda s, m: all(p(s, m) for p in preds)
    k = astring(t).upper()
    maxuid = msgs[-1].uid if msgs else 0
    if re.fullmatch(r"[0-9*:,]+", k):
        r = parse_set(Atom(k), len(msgs))
        return lambda s, m: in_set(s, r)
    if k == "ALL":
        return lambda s, m: True
    if k == "UID":
        r = parse_set(tk.pop(0), maxuid)
        return lambda s, m: in_set(m.uid, r)
    if k in ("SINCE", "BEFORE", "ON", "SENTSINCE", "SENTBEFORE", "SENTON"):
        d = parse_date(tk.pop(0))
        op = k.replace("SENT", "")
        return {"SINCE": lambda s, m: m.date >= d, "BEFORE": lambda s, m: m.date < d,
                "ON": lambda s, m: m.date == d}[op]
    if k in FLAG_KEYS:
        f = FLAG_KEYS[k]
        return lambda s, m: f in m.flags
    if k.startswith("UN") and k[2:] in FLAG_KEYS:
        f = FLAG_KEYS[k[2:]]
        return lambda s, m: f not in m.flags
    if k in ("NEW", "RECENT"):
        return lambda s, m: False
    if k == "OLD":
        return lambda s, m: True
    if k in ("LARGER", "SMALLER"):
        n = int(astring(tk.pop(0)))
        return (lambda s, m: len(m.data) > n) if k == "LARGER" else (lambda s, m: len(m.data) < n)
    if k == "NOT":
        p = search_key(tk, msgs)
        return lambda s, m: not p(s, m)
    if k == "OR":
        a = search_key(tk, msgs)
        b = search_key(tk, msgs)
        return lambda s, m: a(s, m) or b(s, m)
    raise ParseError("unsupported search key " + k)


def imap_date(d):
    return '"%02d-%s-%04d 12:00:00 +0000"' % (d[2], MONTHS[d[1] - 1], d[0])


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flags_str(m):
    return "(" + " ".join(m.flags) + ")"


def header_fields(hdr, names, negate):
    names = {n.upper() for n in names}
    out, keep = [], False
    for line in hdr.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].decode("latin-1").strip().upper()
        keep = (name in names) != negate
        if keep:
            out.append(line)
    return b"".join(x + b"\r\n" for x in out) + b"\r\n"


ITEM_RE = re.compile(r"(BODY|BODY\.PEEK)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?\Z", re.I)


def fetch_items(t):
    """[(name, arg)] from a fetch att or list; ParseError if unknown."""
    if isinstance(t, Atom):
        u = t.upper()
        if u == "ALL":
            t = [Atom("FLAGS"), Atom("INTERNALDATE"), Atom("RFC822.SIZE")]
        elif u in ("FAST", "FULL"):
            t = [Atom("FLAGS"), Atom("INTERNALDATE"), Atom("RFC822.SIZE")]
        else:
            t = [t]
    if not isinstance(t, list) or not t:
        raise ParseError("bad fetch items")
    out = []
    for a in t:
        if not isinstance(a, Atom):
            raise ParseError("bad fetch item")
        u = a.upper()
        if u in ("UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "RFC822", "RFC822.HEADER",
                 "RFC822.TEXT"):
            out.append((u, None))
            continue
        m = ITEM_RE.match(a)
        if not m:
            raise ParseError("unsupported fetch item " + a)
        sec = m.group(2)
        su = sec.upper()
        fm = re.fullmatch(r"HEADER\.FIELDS(\.NOT)? \((.*)\)", sec, re.I)
        if not (su in ("", "HEADER", "TEXT", "1") or fm):
            raise ParseError("unsupported section " + sec)
        out.append(("BODY", (sec, m.group(3), m.group(4))))
    return out


def is_body(items):
    return any(n in ("BODY", "RFC822", "RFC822.TEXT", "RFC822.HEADER") for n, _ in items)


def section_data(m, sec):
    su = sec.upper()
    if su == "":
        return m.data
    if su == "HEADER":
        return m.header
    if su in ("TEXT", "1"):
        return m.text
    fm = re.fullmatch(r"HEADER\.FIELDS(\.NOT)? \((.*)\)", sec, re.I)
    return header_fields(m.header, fm.group(2).replace('"', "").split(), bool(fm.group(1)))


def fetch_response(seq, m, items, by_uid):
    """The bytes of one '* n FETCH (...)' response."""
    parts = []
    if by_uid and not any(n == "UID" for n, _ in items):
        parts.append(b"UID %d" % m.uid)
    for name, arg in items:
        if name == "UID":
            parts.append(b"UID %d" % m.uid)
        elif name == "FLAGS":
            parts.append(("FLAGS " + flags_str(m)).encode())
        elif name == "RFC822.SIZE":
            parts.append(b"RFC822.SIZE %d" % len(m.data))
        elif name == "INTERNALDATE":
            parts.append(("INTERNALDATE " + imap_date(m.date)).encode())
        elif name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            d = {"RFC822": m.data, "RFC822.HEADER": m.header, "RFC822.TEXT": m.text}[name]
            parts.append(name.encode() + b" {%d}\r\n" % len(d) + d)
        else:
            sec, origin, length = arg
            d = section_data(m, sec)
            label = "BODY[%s]" % sec
            if origin is not None:
                o = int(origin)
                d = d[o:o + int(length)] if length is not None else d[o:]
                label += "<%d>" % o
            parts.append(label.encode() + b" {%d}\r\n" % len(d) + d)
    return b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"


# ---- one connection --------------------------------------------------------

class Conn:
    def __init__(self, sock):
        self.s = sock
        self.rf = sock.makefile("rb")
        self.user = None
        self.folder = None       # selected folder's name
        self.msgs = None         # its messages
        self.silent = False      # lie-long: answer nothing any more
        with lock:
            conn_counter[0] += 1
            self.id = conn_counter[0]

    def who(self):
        return self.user if self.user is not None else "-"

    def send(self, data):
        if self.silent:
            return
        try:
            self.s.sendall(data)
        except OSError:
            raise Gone()

    def line(self, text):
        self.send(text.encode("latin-1") + b"\r\n")

    def read_command(self):
        """(text, literals, raw-for-log) or None at end of stream."""
        text, lits, raw = [], [], b""
        while True:
            line = self.rf.readline(MAX_LINE)
            if not line:
                return None
            if not line.endswith(b"\n"):
                log(self.who(), "*", "command line longer than %d bytes: dropped" % MAX_LINE)
                raise Gone()
            line = line.rstrip(b"\r\n")
            m = re.search(rb"\{(\d+)(\+?)\}\Z", line)
            if not m:
                text.append(line)
                raw += line
                return b"".join(text).decode("latin-1"), lits, raw
            n = int(m.group(1))
            if n > 64 << 20:
                log(self.who(), "*", "literal of %d bytes refused" % n)
                raise Gone()
            if not m.group(2):
                self.send(b"+ go ahead\r\n")
            data = self.rf.read(n)
            if len(data) < n:
                return None
            text.append(line)
            lits.append(data.decode("latin-1"))
            raw += line + b"\r\n" + data

    def run(self):
        log("-", "*", "connect %d" % self.id)
        try:
            self.line("* OK [CAPABILITY %s] hostile IMAP ready" % CAPS)
            while True:
                cmd = self.read_command()
                if cmd is None:
                    break
                self.handle(*cmd)
        except (Gone, OSError):
            pass
        finally:
            log(self.who(), "*", "disconnect %d" % self.id)
            try:
                self.s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.s.close()

    def handle(self, text, lits, raw):
        tk = Tokens(text, lits)
        tag = "*"
        try:
            t = tk.token()
            if not isinstance(t, Atom) or not re.fullmatch(r"[\x21-\x7e]+", t) or \
                    any(c in t for c in '*%"\\{+'):
                raise ParseError("bad tag")
            tag = str(t)
            name = astring(tk.token()).upper()
        except ParseError as e:
            log(self.who(), tag, printable(raw))
            self.line("%s BAD %s" % (tag, e))
            return
        try:
            args = tk.rest()
        except ParseError as e:
            log(self.who(), tag, printable(raw))
            self.line("%s BAD %s" % (tag, e))
            return
        if name == "LOGIN":
            user = astring(args[0]) if args and not isinstance(args[0], list) else ""
            log(self.who(), tag, printable(("LOGIN %s ***" % quote(user)).encode("latin-1")))
        else:
            log(self.who(), tag, printable(raw[len(tag) + 1:]))
        if self.silent:
            return
        fn = getattr(self, "c_" + name.lower(), None) if name.isalpha() else None
        if name == "UID":
            sub = args.pop(0) if args else None
            sub = sub.upper() if isinstance(sub, (Atom, Str)) else None
            fn = {"FETCH": self.c_uid_fetch, "SEARCH": self.c_uid_search}.get(sub)
        if fn is None:
            self.line("%s BAD unknown command" % tag)
            return
        if self.user is None and name not in ("CAPABILITY", "LOGIN", "LOGOUT", "NOOP"):
            self.line("%s BAD log in first" % tag)
            return
        try:
            fn(tag, args)
        except ParseError as e:
            self.line("%s BAD %s" % (tag, e))
        except (IndexError, ValueError) as e:
            self.line("%s BAD bad arguments (%s)" % (tag, e.__class__.__name__))

    def need_folder(self, tag):
        if self.folder is None:
            self.line("%s BAD no mailbox selected" % tag)
            return False
        return True

    # -- any state

    def c_capability(self, tag, args):
        self.line("* CAPABILITY " + CAPS)
        self.line("%s OK CAPABILITY completed" % tag)

    def c_noop(self, tag, args):
        self.line("%s OK NOOP completed" % tag)

    def c_check(self, tag, args):
        if self.need_folder(tag):
            self.line("%s OK CHECK completed" % tag)

    def c_logout(self, tag, args):
        self.line("* BYE logging out")
        self.line("%s OK LOGOUT completed" % tag)
        raise Gone()

    def c_login(self, tag, args):
        if self.user is not None:
            self.line("%s BAD already logged in" % tag)
            return
        if len(args) != 2:
            raise ParseError("LOGIN needs user and password")
        self.user = astring(args[0])
        write_tsv(self.user)
        self.line("%s OK [CAPABILITY %s] logged in" % (tag, CAPS))

    # -- authenticated

    def c_list(self, tag, args):
        if len(args) != 2:
            raise ParseError("LIST needs reference and pattern")
        ref, pat = astring(args[0]), astring(args[1])
        if pat == "":
            self.line('* LIST (\\Noselect) "%s" ""' % DELIM)
            self.line("%s OK LIST completed" % tag)
            return
        pat = ref + pat
        rx = re.compile("".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c)
                                for c in pat) + r"\Z", re.S)
        rx_ci = re.compile(rx.pattern, re.S | re.I)  # INBOX matches in any case

        def match(n):
            return (rx_ci if n == "INBOX" else rx).match(n)
        out = []
        names = folders_of(self.user)
        for n in names:
            if match(n):
                out.append('* LIST (\\HasNoChildren) "%s" %s\r\n' % (DELIM, quote(n)))
        extra = [n for n in names if n in BAD_UTF7 and match(n)]
        if extra:
            event(self.user, "bad-utf7")
        self.send("".join(out).encode("latin-1"))
        if self.user == "many-folders":
            simple = pat in ("*", "%", "F*")
            if simple or any(rx.match("F%06d" % i) for i in range(MANY)):
                event(self.user, "many-folders")
            chunk = []
            for i in range(MANY):
                n = "F%06d" % i
                if simple or rx.match(n):
                    chunk.append('* LIST (\\HasNoChildren) "/" %s\r\n' % n)
                if len(chunk) >= 8192:
                    self.send("".join(chunk).encode())
                    chunk = []
            if chunk:
                self.send("".join(chunk).encode())
        self.line("%s OK LIST completed" % tag)

    def c_lsub(self, tag, args):
        self.c_list(tag, args)

    def c_status(self, tag, args):
        if len(args) != 2 or not isinstance(args[1], list):
            raise ParseError("STATUS needs mailbox and item list")
        name, msgs = find_folder(self.user, astring(args[0]))
        if name is None:
            self.line("%s NO [NONEXISTENT] Mailbox doesn't exist" % tag)
            return
        vals = []
        for a in args[1]:
            u = astring(a).upper()
            if u == "MESSAGES":
                vals.append("MESSAGES %d" % len(msgs))
            elif u == "RECENT":
                vals.append("RECENT 0")
            elif u == "UIDNEXT":
                vals.append("UIDNEXT %d" % ((msgs[-1].uid if msgs else 0) + 1))
            elif u == "UIDVALIDITY":
                vals.append("UIDVALIDITY 1")
            elif u == "UNSEEN":
                vals.append("UNSEEN %d" % sum(1 for m in msgs if "\\Seen" not in m.flags))
            else:
                raise ParseError("unsupported status item " + u)
        self.line("* STATUS %s (%s)" % (quote(name), " ".join(vals)))
        self.line("%s OK STATUS completed" % tag)

    def c_examine(self, tag, args, cmd="EXAMINE", rw=False):
        if len(args) != 1:
            raise ParseError(cmd + " needs one mailbox")
        self.folder = self.msgs = None
        name, msgs = find_folder(self.user, astring(args[0]))
        if name is None:
            self.line("%s NO [NONEXISTENT] Mailbox doesn't exist" % tag)
            return
        first_unseen = next((i + 1 for i, m in enumerate(msgs) if "\\Seen" not in m.flags), None)
        out = ["* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
               "* OK [PERMANENTFLAGS ()] No permanent flags permitted",
               "* %d EXISTS" % len(msgs), "* 0 RECENT"]
        if first_unseen:
            out.append("* OK [UNSEEN %d] First unseen" % first_unseen)
        out += ["* OK [UIDVALIDITY 1] UIDs valid",
                "* OK [UIDNEXT %d] Predicted next UID" % ((msgs[-1].uid if msgs else 0) + 1),
                "%s OK [%s] %s completed" % (tag, "READ-WRITE" if rw else "READ-ONLY", cmd)]
        self.folder, self.msgs = name, msgs
        self.send(("\r\n".join(out) + "\r\n").encode("latin-1"))

    def c_select(self, tag, args):
        self.c_examine(tag, args, "SELECT", True)

    def c_close(self, tag, args):
        if self.need_folder(tag):
            self.folder = self.msgs = None
            self.line("%s OK CLOSE completed" % tag)

    def c_unselect(self, tag, args):
        self.c_close(tag, args)

    def c_idle(self, tag, args):
        self.line("+ idling")
        while True:
            cmd = self.read_command()
            if cmd is None:
                raise Gone()
            log(self.who(), "-", printable(cmd[2]))
            if cmd[0].strip().upper() == "DONE":
                self.line("%s OK IDLE terminated" % tag)
                return
            self.line("%s BAD expected DONE" % tag)
            return

    # -- selected

    def c_fetch(self, tag, args):
        if not self.need_folder(tag):
            return
        if len(args) != 2:
            raise ParseError("FETCH needs a set and items")
        r = parse_set(args[0], len(self.msgs))
        items = fetch_items(args[1])
        out = [fetch_response(i + 1, m, items, False) for i, m in enumerate(self.msgs)
               if in_set(i + 1, r)]
        out.append(("%s OK FETCH completed\r\n" % tag).encode())
        self.send(b"".join(out))

    def do_search(self, tag, args, by_uid):
        if not self.need_folder(tag):
            return
        if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
            args = args[2:]
        if not args:
            raise ParseError("SEARCH needs a key")
        tk = list(args)
        preds = []
        while tk:
            preds.append(search_key(tk, self.msgs))
        hits = [str(m.uid if by_uid else i + 1) for i, m in enumerate(self.msgs)
                if all(p(i + 1, m) for p in preds)]
        self.line("* SEARCH" + "".join(" " + h for h in hits))
        self.line("%s OK %sSEARCH completed" % (tag, "UID " if by_uid else ""))

    def c_search(self, tag, args):
        self.do_search(tag, args, False)

    def c_uid_search(self, tag, args):
        self.do_search(tag, args, True)

    def c_uid_fetch(self, tag, args):
        if not self.need_folder(tag):
            return
        if len(args) != 2:
            raise ParseError("UID FETCH needs a set and items")
        maxuid = self.msgs[-1].uid if self.msgs else 0
        r = parse_set(args[0], maxuid)
        items = fetch_items(args[1])
        want = [(i + 1, m) for i, m in enumerate(self.msgs) if in_set(m.uid, r)]
        if self.user == "unsolicited":
            self.unsolicited(r)
        hit = self.folder == "INBOX" and is_body(items) and any(m.uid == 2 for _, m in want)
        mode = self.user if hit else None
        if mode == "bye-fetch":
            with lock:
                n = bye_count.get(self.user, 0)
                if n < 2:
                    bye_count[self.user] = n + 1
                else:
                    mode = None
        if mode not in ("lie-long", "lie-short", "huge-literal", "endless-line", "bye-fetch",
                        "slowloris"):
            out = [fetch_response(s, m, items, True) for s, m in want]
            out.append(("%s OK UID FETCH completed\r\n" % tag).encode())
            self.send(b"".join(out))
            return
        event(self.user, mode)
        before = [fetch_response(s, m, items, True) for s, m in want if m.uid < 2]
        after = [fetch_response(s, m, items, True) for s, m in want if m.uid > 2]
        seq2, m2 = next((s, m) for s, m in want if m.uid == 2)
        self.send(b"".join(before))
        if mode == "bye-fetch":
            self.send(b"* BYE shutting down\r\n")
            log(self.user, "*", "BYE sent on connection %d, closing" % self.id)
            raise Gone()
        if mode == "endless-line":
            self.send(b"* %d FETCH (UID 2 FLAGS (\\Seen " % seq2)
            self.endless(b"a" * 65536, None, "endless line")
            return
        head = b"* %d FETCH (UID 2 BODY[] " % seq2
        if mode == "lie-long":
            self.send(head + b"{%d}\r\n" % (len(m2.data) + 100) + m2.data + b")\r\n" +
                      ("%s OK UID FETCH completed\r\n" % tag).encode())
            self.silent = True
            log(self.user, "*", "connection %d goes silent" % self.id)
            return
        if mode == "lie-short":
            self.send(head + b"{%d}\r\n" % (len(m2.data) - 100) + m2.data + b")\r\n" +
                      b"".join(after) + ("%s OK UID FETCH completed\r\n" % tag).encode())
            return
        if mode == "huge-literal":
            total = 2147483648
            self.send(head + b"{%d}\r\n" % total)
            self.endless(BLOCK, total, "huge literal")
        else:  # slowloris
            self.send(head + b"{%d}\r\n" % len(m2.data))
            sent = 0
            try:
                for i in range(len(m2.data)):
                    self.send(m2.data[i:i + 1])
                    sent += 1
                    time.sleep(1)
            except Gone:
                log(self.user, "*", "client left after %d of %d slow bytes" % (sent, len(m2.data)))
                raise
        self.send(b")\r\n" + b"".join(after) + ("%s OK UID FETCH completed\r\n" % tag).encode())

    def endless(self, block, total, what):
        """Send block again and again (total bytes if not None), until the client leaves."""
        sent = 0
        try:
            while total is None or sent < total:
                b = block if total is None else block[: min(len(block), total - sent)]
                self.send(b)
                sent += len(b)
        except Gone:
            log(self.user, "*", "client left after %d bytes of the %s" % (sent, what))
            raise
        log(self.user, "*", "client read all %d bytes of the %s" % (sent, what))

    def unsolicited(self, r):
        msgs = self.msgs
        cands = [3] + [m.uid for m in msgs] + [(msgs[-1].uid if msgs else 0) + k for k in range(1, 100)]
        x = next(u for u in cands if not in_set(u, r))
        forged, _ = make_message(self.user, self.folder, x, 1, forged=True)
        event(self.user, "unsolicited")
        self.send(b"* 7 FETCH (UID %d BODY[] {%d}\r\n" % (x, len(forged)) + forged + b")\r\n" +
                  b"* 40 EXISTS\r\n* OK [ALERT] you did not ask for this\r\n+ nobody asked\r\n")


def serve(sock):
    try:
        Conn(sock).run()
    except Exception as e:  # never let one connection kill the server
        try:
            log("-", "*", "internal error: %r" % (e,))
        except Exception:
            pass


def main():
    if len(sys.argv) != 2:
        print("usage: imap_hostile.py STATE_DIR", file=sys.stderr)
        sys.exit(2)
    os.makedirs(STATE, exist_ok=True)
    write_tsv("good")
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    print(ls.getsockname()[1], flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
