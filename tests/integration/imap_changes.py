#!/usr/bin/env python3
"""imap_changes.py — "another IMAP client" for the integration tests: it changes
a mailbox on the project's local Dovecot behind mailbus's back, and dumps the
server's exact state so a test can compare it with what mailbus imported.
Python 3 standard library only.

  imap_changes.py [--host H] [--port P] [--user U] [--timeout S] SUBCOMMAND ...
  (the connection options may also follow the subcommand)

Connection: plain IMAP (no TLS; the server is on loopback). --host defaults to
$MAILBUS_IMAP_HOST or 127.0.0.1 (127.0.0.2 is the same Dovecot advertising no
CONDSTORE/QRESYNC/MOVE), --port to $MAILBUS_IMAP_PORT or 10143, the user to
$MB_IMAP_USER; the password comes only from $MB_IMAP_PASSWORD (never argv, so
it is not visible in ps). Any failure — a connection error, or any command
answered with something other than OK — ends the run with exit status 1 and
"imap_changes: <command> ..." on stderr; usage errors exit 2.

Folder names are the raw names the server sends in LIST (modified UTF-7 for
non-ASCII names), both on output and on the command line.

Subcommands:

  state
      For every selectable folder (LIST "" "*", minus \\Noselect and
      \\NonExistent), opened with EXAMINE so nothing changes (not even \\Seen or
      \\Recent), one line per message:
          FOLDER<TAB>UIDVALIDITY<TAB>UID<TAB>FLAGS<TAB>SHA256
      FLAGS: the message's flags without \\Recent, sorted bytewise (LC_ALL=C),
      joined by single spaces ("" if none). SHA256: hex sha256 of the BODY[]
      bytes exactly as the server returns them. Sorted by folder, then UID.
      Flags (and sizes) come from one UID FETCH 1:* (UID FLAGS RFC822.SIZE);
      bodies from UID FETCH (UID BODY.PEEK[]) in batches of at most 200
      messages / 32 MiB, so memory stays bounded.

  mix --eml-dir DIR [--seed N] [--keep FOLDER]... [--skip ACTION]...
      [--rename-from F] [--rename-to F] [--delete F]
      A deterministic (seeded) set of mixed changes, done in this order, each
      on folders that exist and hold messages at that point, never on a
      folder named by --keep (unless --rename-from or --delete names it):
        append   3 messages (files of DIR, chosen by the seed) to each of 2
                 folders, with flags none / \\Seen / $Label1 in turn and the
                 internal date 01-Jan-2024 10:00:00 +0000
        flags    +\\Flagged on 3 messages without it, -\\Seen on 3 that have it,
                 +$Work on 2 (UID STORE +FLAGS.SILENT / -FLAGS.SILENT); each of
                 the three in one folder chosen by the seed
        expunge  3 messages of one folder (\\Deleted, then UID EXPUNGE of just
                 those; plain EXPUNGE if the server lacks UIDPLUS)
        move     3 messages from one folder to another (UID MOVE; without the
                 MOVE capability UID COPY + \\Deleted + UID EXPUNGE)
        copy     2 messages from one folder to another (UID COPY)
        create   the folder Projects/New (Projects<delimiter>New; "New" if the
                 server has no hierarchy delimiter) and 2 messages appended to it
        rename   one folder holding messages that is not INBOX, has no
                 special-use attribute and no children, and was not created by
                 this run (--rename-from picks it), to NAME-renamed
                 (--rename-to overrides)
        delete   one other such folder (not the renamed one; --delete picks it)
      --skip ACTION (repeatable) leaves an action out. The same seed on the same
      server state gives the same changes. It prints one line per change
      (fields separated by single spaces; folder names are printed raw, so a
      name with a space makes a line ambiguous — use `state` for exact checks):
          append FOLDER UID (FLAGS) FILE     e.g. append INBOX 121 (\\Seen) a.eml
          flag FOLDER UID +\\Flagged          (or -\\Seen, +$Work)
          expunge FOLDER UID
          move FROM UID TO NEWUID
          copy FROM UID TO NEWUID
          create FOLDER
          rename OLD NEW                     (and one such line per child folder
                                             the server renames along, if
                                             --rename-from names a parent)
          delete FOLDER
      UID/NEWUID are the server's (APPENDUID/COPYUID), "-" if it sent none;
      FILE is the file's name within DIR. If an action cannot be done (too few
      folders or messages), mix stops with an error after printing the changes
      already made.

  bench --eml-dir DIR [--seed N] [--new N] [--flag N] [--expunge N] [--move N]
      The changes of `scripts/bench sync`: exactly these counts, spread over
      the whole mailbox. The flagged, expunged and moved messages are disjoint,
      drawn by the seed uniformly from every message of every selectable
      folder (so across folders and UIDs; flagged ones among those without
      \\Flagged); each moved one goes to another folder chosen by the seed;
      the new ones are the first N files of DIR (name order), each appended
      to a folder chosen by the seed, without flags, at the server's time.
      Done in that order (append, flag, expunge, move), batched per folder: one
      UID STORE +FLAGS.SILENT (\\Flagged), one \\Deleted + UID EXPUNGE, one UID
      MOVE per destination. Prints the same lines as mix (append, flag,
      expunge, move); the same seed on the same server state gives the same
      changes.

  append FOLDER FILE [--flags '(\\Seen)'] [--date 'DD-Mon-YYYY HH:MM:SS +0000']
      One APPEND of FILE (without --date the server uses the current time).
      If the server answers NO [TRYCREATE] (no such folder), the folder is
      created and the APPEND sent again, as mail clients do. Prints the
      `append` line above.

  flags FOLDER UID (+|-)FLAG
      One UID STORE (e.g. `flags INBOX 7 +\\Flagged`, `flags INBOX 7 -- -\\Seen`;
      the `--` is optional). Fails if FOLDER has no message UID. Prints the
      `flag` line above.

Note imaplib's APPEND turns every bare LF or CR of the file into CRLF, so the
stored message (and its sha256 in `state`) is the CRLF form of the file.
"""
import argparse
import hashlib
import imaplib
import os
import random
import re
import sys

PROG = "imap_changes"
MIX_ACTIONS = ("append", "flags", "expunge", "move", "copy", "create", "rename", "delete")
MIX_DATE = "01-Jan-2024 10:00:00 +0000"
MIX_APPEND_FLAGS = ("", "\\Seen", "$Label1")  # used in turn for appended messages
BODY_BATCH_MESSAGES = 200
BODY_BATCH_BYTES = 32 << 20
SPECIAL_USE = {"\\all", "\\archive", "\\drafts", "\\flagged", "\\junk", "\\sent", "\\trash"}

# imaplib's uid() only accepts commands listed in imaplib.Commands; MOVE is there
# since Python 3.6, but make sure (UID MOVE is only sent in the SELECTED state).
imaplib.Commands.setdefault("MOVE", ("SELECTED",))


class Fail(Exception):
    """A failure to report as "imap_changes: <message>" with exit status 1."""


def text(dat):
    """The server's text of a response (for error messages)."""
    parts = []
    for d in dat or []:
        if isinstance(d, tuple):
            d = d[0]
        if isinstance(d, bytes):
            d = d.decode("utf-8", "replace")
        if d is not None:
            parts.append(str(d))
    return " ".join(parts)


def call(what, fn, *args, **kwargs):
    """Every IMAP command goes through here: an answer other than OK is a
    failure naming the command (`what`). imaplib itself raises on BAD (and on NO
    for LOGIN) and on a lost connection; those name the command too."""
    try:
        typ, dat = fn(*args, **kwargs)
    except imaplib.IMAP4.abort as e:
        raise Fail("%s: connection lost: %s" % (what, e))
    except imaplib.IMAP4.error as e:
        raise Fail("%s failed: %s" % (what, e))
    if typ != "OK":
        raise Fail("%s failed: %s %s" % (what, typ, text(dat)))
    return dat


def to_bytes(s):
    """A name from argv or from the server as the exact bytes to send back."""
    return s.encode("utf-8", "surrogateescape")


def from_bytes(b):
    """Server bytes as str, reversibly (non-UTF-8 bytes survive as surrogates)."""
    return b.decode("utf-8", "surrogateescape")


def quote(s):
    """An IMAP quoted string for a folder or user name (imaplib quotes nothing but
    the LOGIN password). Names with CR, LF, NUL or 8-bit bytes would need a
    literal; Dovecot sends modified UTF-7, so they are refused rather than
    supported."""
    b = to_bytes(s)
    if any(c in (0, 10, 13) or c > 127 for c in b):
        raise Fail("name %r cannot be sent as an IMAP quoted string" % s)
    return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def unquote(b):
    """The value of an IMAP astring/nstring (quoted string or atom) as str."""
    if len(b) >= 2 and b[:1] == b'"' and b[-1:] == b'"':
        b = re.sub(rb"\\(.)", rb"\1", b[1:-1])
    return from_bytes(b)


def uid_set(uids):
    """Sorted UIDs as a compact IMAP sequence set: 1:3,7,9:10."""
    out, uids = [], sorted(uids)
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else "%d:%d" % (uids[i], uids[j]))
        i = j + 1
    return ",".join(out)


def expand_set(s):
    """An IMAP UID set (no "*") as a list, in the order written (for COPYUID)."""
    out = []
    for part in s.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":", 1))
            out.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
        else:
            out.append(int(part))
    return out


def responses(data):
    """Group imaplib's untagged data for one response type into whole responses.

    imaplib stores a response that carries literals as one tuple per literal,
    (text up to and including "{N}", the N literal bytes), followed by a plain
    bytes item with the rest of the response after the last literal (often just
    b")", but it may hold more items, e.g. b" FLAGS (\\Seen))"). A response
    without literals is a single bytes item. Returns a list of (meta, literals)
    where meta is the response's text with the literal contents left out (so a
    regex can never match inside a message) and literals is a list of
    (text before the literal, literal bytes)."""
    out, pending = [], None
    for item in data or []:
        if item is None:
            continue
        if isinstance(item, tuple):
            pending = (pending or []) + [item]
        elif pending is not None:  # the trailer closing a response with literals
            out.append((b"".join(p for p, _ in pending) + item, pending))
            pending = None
        else:
            out.append((item, []))
    if pending is not None:
        out.append((b"".join(p for p, _ in pending), pending))
    return out


FLAGS_RE = re.compile(rb"\bFLAGS \(([^)]*)\)")
UID_RE = re.compile(rb"\bUID (\d+)")
SIZE_RE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def fetch_fields(meta):
    """(uid, flags or None, size or None) from the text of one FETCH response."""
    flags = None
    m = FLAGS_RE.search(meta)
    if m:
        flags = [from_bytes(f) for f in m.group(1).split()]
        meta = meta[: m.start()] + meta[m.end():]  # a keyword can't look like "UID n"
    m = UID_RE.search(meta)
    uid = int(m.group(1)) if m else None
    m = SIZE_RE.search(meta)
    size = int(m.group(1)) if m else None
    return uid, flags, size


class Folder:
    """One LIST entry."""

    def __init__(self, name, attrs, delim):
        self.name, self.attrs, self.delim = name, attrs, delim
        low = {a.lower() for a in attrs}
        self.selectable = not (low & {"\\noselect", "\\nonexistent"})
        self.special = bool(low & SPECIAL_USE)
        self.children = "\\haschildren" in low
        self.is_inbox = name.upper() == "INBOX"
        self.msgs = {}  # uid -> list of flags (filled by Imap.scan)


LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:[^"\\]|\\.)*")(?: (?P<name>.*))?$',
                     re.S)


class Imap:
    """A logged-in imaplib connection with the few operations the tests need."""

    def __init__(self, args):
        user = args.user or os.environ.get("MB_IMAP_USER")
        password = os.environ.get("MB_IMAP_PASSWORD")
        if not user:
            raise Fail("no user: give --user or set MB_IMAP_USER")
        if password is None:
            raise Fail("no password: set MB_IMAP_PASSWORD")
        where = "%s:%s" % (args.host, args.port)
        try:
            self.c = imaplib.IMAP4(args.host, args.port, timeout=args.timeout)
        except OSError as e:
            raise Fail("connect to %s: %s" % (where, e))
        call("LOGIN as %s at %s" % (user, where), self.c.login, quote(user), password)
        # The pre-login capability list (all imaplib keeps) lacks MOVE, UIDPLUS...
        dat = call("CAPABILITY", self.c.capability)
        self.caps = set(text(dat).upper().split())
        self.selected = None

    def close(self):
        try:
            self.c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass

    def has(self, cap):
        return cap.upper() in self.caps

    # --- folders ----------------------------------------------------------------

    def folders(self):
        """Every LIST "" "*" entry as a dict name -> Folder."""
        dat = call('LIST "" "*"', self.c.list, '""', '"*"')
        out = {}
        for meta, lits in responses(dat):
            if lits:  # the name came as a literal: (b'(...) "/" {N}', name)
                head, name = lits[0][0], from_bytes(lits[0][1])
                head = re.sub(rb" ?\{\d+\}$", b"", head)
            else:
                head, name = meta, None
            m = LIST_RE.match(head)
            if not m:
                raise Fail("cannot parse LIST response %r" % meta)
            if name is None:
                name = unquote(m.group("name") or b"")
            attrs = [from_bytes(a) for a in m.group("attrs").split()]
            delim = None if m.group("delim") == b"NIL" else unquote(m.group("delim"))
            out[name] = Folder(name, attrs, delim)
        return out

    def delimiter(self):
        """The hierarchy delimiter (LIST "" ""), None if the server has none."""
        dat = call('LIST "" ""', self.c.list, '""', '""')
        for meta, _ in responses(dat):
            m = LIST_RE.match(meta)
            if m and m.group("delim") != b"NIL":
                return unquote(m.group("delim"))
        return None

    def open(self, name, readonly):
        """EXAMINE (readonly) or SELECT; returns (UIDVALIDITY, EXISTS)."""
        cmd = "EXAMINE" if readonly else "SELECT"
        call("%s %s" % (cmd, name), self.c.select, quote(name), readonly=readonly)
        self.selected = name
        uv = self.c.untagged_responses.get("UIDVALIDITY")
        if not uv:
            raise Fail("%s %s: no UIDVALIDITY in the answer" % (cmd, name))
        exists = self.c.untagged_responses.get("EXISTS") or [b"0"]
        return int(uv[-1]), int(exists[-1])

    def unselect(self):
        """Leave the selected folder without expunging anything (CLOSE would
        expunge \\Deleted messages): EXAMINE INBOX instead."""
        self.open("INBOX", True)

    def scan(self, name, readonly=True):
        """Open the folder; returns (UIDVALIDITY, {uid: (flags, size)})."""
        uidvalidity, exists = self.open(name, readonly)
        msgs = {}
        if exists:
            what = "UID FETCH 1:* (UID FLAGS RFC822.SIZE) in %s" % name
            dat = call(what, self.c.uid, "FETCH", "1:*", "(UID FLAGS RFC822.SIZE)")
            for meta, _ in responses(dat):
                uid, flags, size = fetch_fields(meta)
                if uid is None or flags is None:
                    continue  # an unsolicited FETCH without UID or FLAGS
                msgs[uid] = ([f for f in flags if f.lower() != "\\recent"], size or 0)
        return uidvalidity, msgs

    def snapshot(self):
        """All selectable folders (dict name -> Folder) with their messages' flags."""
        folders = {n: f for n, f in self.folders().items() if f.selectable}
        for f in folders.values():
            _, msgs = self.scan(f.name)
            f.msgs = {uid: flags for uid, (flags, _) in msgs.items()}
        return folders

    # --- messages -----------------------------------------------------------------

    def bodies(self, name, uids):
        """{uid: BODY[] bytes} for UIDs of the selected folder, one UID FETCH."""
        what = "UID FETCH %s (UID BODY.PEEK[]) in %s" % (uid_set(uids), name)
        dat = call(what, self.c.uid, "FETCH", uid_set(uids), "(UID BODY.PEEK[])")
        out = {}
        for meta, lits in responses(dat):
            uid, _, _ = fetch_fields(meta)
            if uid is None:
                continue
            body = None
            for before, lit in lits:
                if re.search(rb"\bBODY\[\] \{\d+\}$", before):
                    body = lit
            if body is None and re.search(rb'\bBODY\[\] (""|NIL)', meta):
                body = b""
            if body is not None:
                out[uid] = body
        return out

    def append(self, folder, data, flags, date):
        """APPEND; returns the new UID as str ("-" if no APPENDUID)."""
        self.c.untagged_responses.pop("APPENDUID", None)
        when = '"%s"' % date if date else None
        dat = call("APPEND to %s" % folder, self.c.append, quote(folder), flags or None, when, data)
        m = re.search(r"\[APPENDUID \d+ (\d+)\]", text(dat))
        return m.group(1) if m else "-"

    def store(self, uids, change):
        """UID STORE uids (+|-)FLAGS.SILENT (flag) in the selected folder."""
        sign, flag = change[0], change[1:]
        item = "%sFLAGS.SILENT" % sign
        what = "UID STORE %s %s (%s) in %s" % (uid_set(uids), item, flag, self.selected)
        return call(what, self.c.uid, "STORE", uid_set(uids), item, "(%s)" % flag)

    def expunge(self, uids):
        """Expunge just these (already \\Deleted) UIDs: UID EXPUNGE with UIDPLUS,
        else plain EXPUNGE (which also removes other \\Deleted messages)."""
        if self.has("UIDPLUS"):
            what = "UID EXPUNGE %s in %s" % (uid_set(uids), self.selected)
            call(what, self.c.uid, "EXPUNGE", uid_set(uids))
        else:
            call("EXPUNGE in %s" % self.selected, self.c.expunge)

    def move(self, uids, dest):
        """UID MOVE from the selected folder; without the MOVE capability RFC
        6851's fallback: UID COPY, then \\Deleted + expunge of just the
        originals. Returns copy_or_move's mapping."""
        if self.has("MOVE"):
            return self.copy_or_move("MOVE", uids, dest)
        mapping = self.copy_or_move("COPY", uids, dest)
        self.store(uids, "+\\Deleted")
        self.expunge(uids)
        return mapping

    def copy_or_move(self, verb, uids, dest):
        """UID COPY / UID MOVE from the selected folder; returns {old uid: new uid
        as str} from COPYUID ("-" for each if the server sent none)."""
        self.c.untagged_responses.pop("COPYUID", None)
        what = "UID %s %s %s from %s" % (verb, uid_set(uids), dest, self.selected)
        call(what, self.c.uid, verb, uid_set(uids), quote(dest))
        mapping = {u: "-" for u in uids}
        # COPY: in the tagged OK; MOVE: in an untagged OK. imaplib files both
        # response codes under their name.
        for code in self.c.untagged_responses.pop("COPYUID", []):
            m = re.match(rb"\d+ ([\d:,]+) ([\d:,]+)", code or b"")
            if m:
                src, dst = expand_set(m.group(1).decode()), expand_set(m.group(2).decode())
                mapping.update((s, str(d)) for s, d in zip(src, dst) if s in mapping)
        return mapping


# --- state ------------------------------------------------------------------------


def body_batches(msgs):
    """UIDs in ascending groups of at most BODY_BATCH_MESSAGES messages and
    (unless one message alone is bigger) BODY_BATCH_BYTES bytes."""
    batch, size = [], 0
    for uid in sorted(msgs):
        n = msgs[uid][1]
        if batch and (len(batch) >= BODY_BATCH_MESSAGES or size + n > BODY_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(uid)
        size += n
    if batch:
        yield batch


def cmd_state(imap, args):
    out = sys.stdout
    for name in sorted(f.name for f in imap.folders().values() if f.selectable):
        uidvalidity, msgs = imap.scan(name, readonly=True)
        for batch in body_batches(msgs):
            bodies = imap.bodies(name, batch)
            for uid in batch:
                if uid not in bodies:
                    raise Fail("%s UID %d: no BODY[] in the UID FETCH answer "
                               "(expunged during the dump?)" % (name, uid))
                flags = " ".join(sorted(msgs[uid][0]))
                sha = hashlib.sha256(bodies[uid]).hexdigest()
                out.write("%s\t%d\t%d\t%s\t%s\n" % (name, uidvalidity, uid, flags, sha))
    out.flush()


# --- mix --------------------------------------------------------------------------


def emit(*fields):
    """One summary line, fields separated by single spaces, flushed at once (so a
    failure later still leaves the changes already made on stdout)."""
    sys.stdout.write(" ".join(str(f) for f in fields) + "\n")
    sys.stdout.flush()


class Mix:
    def __init__(self, imap, args):
        self.imap, self.args = imap, args
        self.rng = random.Random(args.seed)
        self.keep = set(args.keep or [])
        self.created = set()  # folders this run created: not renamed or deleted
        self.renamed = None
        files = sorted(os.listdir(args.eml_dir))
        self.files = [f for f in files if os.path.isfile(os.path.join(args.eml_dir, f))]
        if not self.files:
            raise Fail("mix: no files in --eml-dir %s" % args.eml_dir)

    def candidates(self, snap, min_msgs=1, exclude=()):
        """Folders (sorted) holding at least min_msgs messages, not kept."""
        return [n for n in sorted(snap) if len(snap[n].msgs) >= min_msgs
                and n not in self.keep and n not in exclude]

    def need(self, action, items, count, what):
        if len(items) < count:
            raise Fail("mix %s: needs %d %s, found %d" % (action, count, what, len(items)))

    def append_files(self, folder, count):
        """APPEND count files chosen by the seed, flags none/\\Seen/$Label1 in turn."""
        if len(self.files) >= count:
            picks = self.rng.sample(self.files, count)
        else:
            picks = [self.rng.choice(self.files) for _ in range(count)]
        for i, name in enumerate(picks):
            with open(os.path.join(self.args.eml_dir, name), "rb") as fh:
                data = fh.read()
            flags = MIX_APPEND_FLAGS[i % len(MIX_APPEND_FLAGS)]
            uid = self.imap.append(folder, data, "(%s)" % flags if flags else None, MIX_DATE)
            emit("append", folder, uid, "(%s)" % flags, name)

    def do_append(self):
        folders = self.candidates(self.imap.snapshot())
        self.need("append", folders, 2, "folders holding messages")
        for folder in self.rng.sample(folders, 2):
            self.append_files(folder, 3)

    def do_flags(self):
        for change, count in (("+\\Flagged", 3), ("-\\Seen", 3), ("+$Work", 2)):
            snap = self.imap.snapshot()
            flag, adding = change[1:].lower(), change[0] == "+"

            def eligible(folder):
                return sorted(u for u, fl in snap[folder].msgs.items()
                              if (flag in (f.lower() for f in fl)) != adding)

            folders = [n for n in self.candidates(snap) if len(eligible(n)) >= count]
            self.need("flags %s" % change, folders, 1,
                      "folder with %d messages eligible" % count)
            folder = self.rng.choice(folders)
            uids = sorted(self.rng.sample(eligible(folder), count))
            self.imap.open(folder, False)
            self.imap.store(uids, change)
            for uid in uids:
                emit("flag", folder, uid, change)

    def do_expunge(self):
        snap = self.imap.snapshot()
        folders = self.candidates(snap, 3)
        self.need("expunge", folders, 1, "folder with 3 messages")
        folder = self.rng.choice(folders)
        uids = sorted(self.rng.sample(sorted(snap[folder].msgs), 3))
        self.imap.open(folder, False)
        self.imap.store(uids, "+\\Deleted")
        self.imap.expunge(uids)
        for uid in uids:
            emit("expunge", folder, uid)

    def transfer(self, action, count):
        """move/copy count messages between two folders chosen by the seed."""
        snap = self.imap.snapshot()
        sources = self.candidates(snap, count)
        self.need(action, sources, 1, "folder with %d messages" % count)
        src = self.rng.choice(sources)
        dests = self.candidates(snap, 1, exclude=(src,))
        self.need(action, dests, 1, "destination folder holding messages")
        dst = self.rng.choice(dests)
        uids = sorted(self.rng.sample(sorted(snap[src].msgs), count))
        self.imap.open(src, False)
        if action == "copy":
            mapping = self.imap.copy_or_move("COPY", uids, dst)
        else:
            mapping = self.imap.move(uids, dst)
        for uid in uids:
            emit(action, src, uid, dst, mapping[uid])

    def do_move(self):
        self.transfer("move", 3)

    def do_copy(self):
        self.transfer("copy", 2)

    def do_create(self):
        delim = self.imap.delimiter()
        name = "Projects%sNew" % delim if delim else "New"
        if name in self.imap.folders():
            raise Fail("mix create: %s already exists" % name)
        call("CREATE %s" % name, self.imap.c.create, quote(name))
        self.created.add(name)
        emit("create", name)
        self.append_files(name, 2)

    def movable(self, snap, given, exclude, action):
        """The folder to rename/delete: the given one (must exist), else one chosen
        by the seed among folders holding messages that are not INBOX, have no
        special-use attribute and no children, were not created by this run."""
        if given:
            if given not in snap:
                raise Fail("mix %s: no selectable folder %s" % (action, given))
            return given  # even if --keep names it: --keep only stops random picks
        folders = [n for n in self.candidates(snap, 1, exclude=exclude)
                   if not (snap[n].is_inbox or snap[n].special or snap[n].children
                           or n in self.created)]
        self.need(action, folders, 1,
                  "folder holding messages (not INBOX, special-use, a parent or new)")
        return self.rng.choice(folders)

    def do_rename(self):
        snap = self.imap.snapshot()
        old = self.movable(snap, self.args.rename_from, (), "rename")
        new = self.args.rename_to or old + "-renamed"
        if new in self.imap.folders():
            raise Fail("mix rename: %s already exists" % new)
        self.imap.unselect()
        call("RENAME %s %s" % (old, new), self.imap.c.rename, quote(old), quote(new))
        self.renamed = (old, new)
        emit("rename", old, new)
        # The server renames the folder's children along (only possible with
        # --rename-from): one more line each, so the summary covers every change.
        delim = snap[old].delim
        if delim:
            for child in sorted(n for n in snap if n.startswith(old + delim)):
                emit("rename", child, new + child[len(old):])

    def do_delete(self):
        snap = self.imap.snapshot()
        name = self.movable(snap, self.args.delete, self.renamed or (), "delete")
        self.imap.unselect()
        call("DELETE %s" % name, self.imap.c.delete, quote(name))
        emit("delete", name)

    def run(self):
        skip = set(self.args.skip or [])
        for action in MIX_ACTIONS:
            if action not in skip:
                getattr(self, "do_" + action)()


def cmd_mix(imap, args):
    Mix(imap, args).run()


# --- bench ------------------------------------------------------------------------


def by_folder(picks):
    """[(folder, uid)] as {folder: sorted uids}, folders in name order."""
    out = {}
    for folder, uid in picks:
        out.setdefault(folder, []).append(uid)
    return {f: sorted(out[f]) for f in sorted(out)}


def cmd_bench(imap, args):
    rng = random.Random(args.seed)
    counts = (args.new, args.flag, args.expunge, args.move)
    if min(counts) < 0:
        raise Fail("bench: counts must not be negative")
    files = sorted(f for f in os.listdir(args.eml_dir)
                   if os.path.isfile(os.path.join(args.eml_dir, f)))
    if len(files) < args.new:
        raise Fail("bench: --new %d needs as many files in %s, found %d"
                   % (args.new, args.eml_dir, len(files)))
    snap = imap.snapshot()
    names = sorted(snap)
    if not names or (args.move and len(names) < 2):
        raise Fail("bench: needs %d selectable folders, found %d"
                   % (2 if args.move else 1, len(names)))
    # The draws are made on the state before any change, so they do not depend
    # on the UIDs the server gives the appended messages.
    pool = [(f, u) for f in names for u in sorted(snap[f].msgs)]
    unflagged = [(f, u) for f, u in pool
                 if "\\flagged" not in (x.lower() for x in snap[f].msgs[u])]
    if len(unflagged) < args.flag:
        raise Fail("bench: --flag %d, only %d messages without \\Flagged"
                   % (args.flag, len(unflagged)))
    flagged = set(rng.sample(unflagged, args.flag))
    rest = [p for p in pool if p not in flagged]
    if len(rest) < args.expunge + args.move:
        raise Fail("bench: --expunge %d --move %d, only %d other messages"
                   % (args.expunge, args.move, len(rest)))
    picked = rng.sample(rest, args.expunge + args.move)
    expunged, moved = picked[:args.expunge], picked[args.expunge:]
    dests = {p: rng.choice([n for n in names if n != p[0]]) for p in moved}
    targets = [rng.choice(names) for _ in range(args.new)]

    for name, folder in zip(files, targets):
        with open(os.path.join(args.eml_dir, name), "rb") as fh:
            uid = imap.append(folder, fh.read(), None, None)
        emit("append", folder, uid, "()", name)
    for folder, uids in by_folder(flagged).items():
        imap.open(folder, False)
        imap.store(uids, "+\\Flagged")
        for uid in uids:
            emit("flag", folder, uid, "+\\Flagged")
    for folder, uids in by_folder(expunged).items():
        imap.open(folder, False)
        imap.store(uids, "+\\Deleted")
        imap.expunge(uids)
        for uid in uids:
            emit("expunge", folder, uid)
    for src, uids in by_folder(moved).items():
        imap.open(src, False)
        for dst in sorted({dests[(src, u)] for u in uids}):
            group = [u for u in uids if dests[(src, u)] == dst]
            mapping = imap.move(group, dst)
            for uid in group:
                emit("move", src, uid, dst, mapping[uid])


# --- append / flags ---------------------------------------------------------------


DATE_RE = re.compile(r"^[ 0-9]?[0-9]-[A-Z][a-z]{2}-[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$")


def cmd_append(imap, args):
    if args.date and not DATE_RE.match(args.date):
        raise Fail("append: --date %r is not DD-Mon-YYYY HH:MM:SS +ZZZZ" % args.date)
    flags = (args.flags or "").strip()
    if flags and not (flags.startswith("(") and flags.endswith(")")):
        flags = "(%s)" % flags
    with open(args.file, "rb") as fh:
        data = fh.read()
    try:
        uid = imap.append(args.folder, data, flags or None, args.date)
    except Fail as e:
        # A missing folder: create it and try again, as mail clients do.
        if "[TRYCREATE]" not in str(e):
            raise
        call("CREATE %s" % args.folder, imap.c.create, quote(args.folder))
        uid = imap.append(args.folder, data, flags or None, args.date)
    emit("append", args.folder, uid, flags or "()", os.path.basename(args.file))


def cmd_flags(imap, args):
    if not re.match(r"^[0-9]+$", args.uid) or int(args.uid) == 0:
        raise Fail("flags: UID %r is not a positive number" % args.uid)
    if not re.match(r"^[+-]\\?[^\s()\\{}\"%*\]]+$", args.change or ""):
        raise Fail("flags: %r is not +FLAG or -FLAG" % args.change)
    uid = int(args.uid)
    imap.open(args.folder, False)
    # A UID STORE of a missing UID is a silent OK (and a STORE that changes
    # nothing sends no FETCH), so look the UID up first.
    what = "UID FETCH %d (UID) in %s" % (uid, args.folder)
    dat = call(what, imap.c.uid, "FETCH", str(uid), "(UID)")
    if not any(fetch_fields(meta)[0] == uid for meta, _ in responses(dat)):
        raise Fail("flags: %s has no message with UID %d" % (args.folder, uid))
    imap.store([uid], args.change)
    emit("flag", args.folder, uid, args.change)


# --- command line -----------------------------------------------------------------


def add_connection_options(parser, defaults):
    """--host/--port/--user/--timeout, accepted before and after the subcommand.
    Only the main parser has defaults: a subparser's default would overwrite a
    value given before the subcommand."""
    def d(value):
        return value if defaults else argparse.SUPPRESS
    parser.add_argument("--host", default=d(os.environ.get("MAILBUS_IMAP_HOST") or "127.0.0.1"),
                        help="default $MAILBUS_IMAP_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int,
                        default=d(int(os.environ.get("MAILBUS_IMAP_PORT") or 10143)),
                        help="default $MAILBUS_IMAP_PORT or 10143")
    parser.add_argument("--user", default=d(None),
                        help="default $MB_IMAP_USER (the password: $MB_IMAP_PASSWORD)")
    parser.add_argument("--timeout", type=float, default=d(120.0),
                        help="socket timeout in seconds (default 120)")


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common, False)

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_options(p, True)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="state|mix|bench|append|flags")

    sub.add_parser("state", parents=[common], help="dump every message of every folder")

    m = sub.add_parser("mix", parents=[common], help="make a seeded set of mixed changes")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--eml-dir", required=True, help="messages to append (every file)")
    m.add_argument("--keep", action="append", metavar="FOLDER",
                   help="never pick (repeatable; --rename-from/--delete may still name it)")
    m.add_argument("--skip", action="append", choices=MIX_ACTIONS, help="leave out (repeatable)")
    m.add_argument("--rename-from", metavar="FOLDER")
    m.add_argument("--rename-to", metavar="FOLDER")
    m.add_argument("--delete", metavar="FOLDER")

    b = sub.add_parser("bench", parents=[common],
                       help="exactly N new, flagged, expunged, moved (scripts/bench sync)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--eml-dir", required=True, help="messages to append (the first --new files)")
    for what in ("new", "flag", "expunge", "move"):
        b.add_argument("--" + what, type=int, default=0, metavar="N")

    a = sub.add_parser("append", parents=[common], help="one APPEND")
    a.add_argument("folder")
    a.add_argument("file")
    a.add_argument("--flags", help="e.g. '(\\Seen $Label1)'")
    a.add_argument("--date", help="internal date, e.g. '01-Jan-2024 10:00:00 +0000'")

    f = sub.add_parser("flags", parents=[common], help="one UID STORE")
    f.add_argument("folder")
    f.add_argument("uid")
    f.add_argument("change", nargs="?", metavar="(+|-)FLAG")

    # argparse takes "-\Seen" for an unknown option: accept it as the change.
    args, extra = p.parse_known_args(argv)
    if args.cmd == "flags" and args.change is None and len(extra) == 1 \
            and extra[0].startswith("-"):
        args.change, extra = extra[0], []
    if extra:
        p.error("unrecognized arguments: %s" % " ".join(extra))
    if args.cmd == "flags" and args.change is None:
        p.error("flags: the (+|-)FLAG argument is required")
    return args


def main(argv):
    # Folder names are printed as the server's raw bytes (see from_bytes).
    sys.stdout.reconfigure(errors="surrogateescape")
    args = parse_args(argv)
    run = {"state": cmd_state, "mix": cmd_mix, "bench": cmd_bench, "append": cmd_append,
           "flags": cmd_flags}
    imap = None
    try:
        imap = Imap(args)
        run[args.cmd](imap, args)
    except Fail as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1
    except (imaplib.IMAP4.error, OSError, ValueError) as e:  # socket, files, imaplib
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1
    finally:
        if imap is not None:
            imap.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
