#!/usr/bin/env python3
"""mime_addrs.py --ours OURS.tsv FILE... — a differential test of mailbus's
address parsing against Python's email package (policy.default: RFC 5322 and
RFC 6532), run by test_mime_addrs.sh. OURS.tsv is what mb-test-mime_addrs
printed for the same files ("FILE<TAB>FIELD<TAB>NAME<TAB>ADDR" lines).

Known differences, where mailbus is right on purpose, are compared as equal:
  - repeated headers: mailbus reads every To (Cc, ...) of a message; the
    reference is asked for every occurrence too (msg.get_all);
  - "addr (Full Name)": mailbus shows the comment as the name (RFC 822
    style, as mail clients do); Python gives no name;
  - whitespace runs inside a name are one space in mailbus;
  - the null address "<>" is an empty address in mailbus.
Every other difference is printed and the exit status is 1."""
import email
import email.policy
import re
import sys

FIELDS = [("from", "From"), ("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"), ("reply-to", "Reply-To")]


def clean(s):
    return re.sub(r"[\t\r\n]", " ", s or "")


def reference(path):
    """(field, name, addr) of every address Python finds, and the raw values."""
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    rows, raw = [], {}
    for key, name in FIELDS:
        values = msg.get_all(name) or []
        raw[key] = " ".join(str(v) for n, v in msg.raw_items() if n.lower() == name.lower())
        for h in values:
            try:
                addrs = [a for g in h.groups for a in g.addresses]
            except Exception as e:  # noqa: BLE001 - the reference failed: a difference
                rows.append((key, "", "!error: %s" % e))
                continue
            for a in addrs:
                rows.append((key, clean(a.display_name), clean(a.addr_spec)))
    return rows, raw


def same(ours, ref, raw):
    (of, on, oa), (rf, rn, ra) = ours, ref
    rn = " ".join(rn.split())
    if ra == "<>":
        ra = ""
    if of != rf or oa != ra:
        return False
    if on == rn:
        return True
    # "addr (Full Name)": the comment is our name.
    return rn == "" and re.search(r"\(\s*" + re.escape(on).replace(r"\ ", r"\s+") + r"\s*\)", raw[of] or "")


def main():
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "--ours":
        sys.exit(__doc__)
    ours = {}
    with open(args[1], encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            p, field, name, addr = line.rstrip("\n").split("\t")
            ours.setdefault(p, []).append((field, name, addr))
    diffs = 0
    for path in args[2:]:
        ref, raw = reference(path)
        mine = ours.get(path, [])
        ok = len(mine) == len(ref) and all(same(m, r, raw) for m, r in zip(mine, ref))
        if not ok:
            diffs += 1
            print("DIFF %s" % path)
            for m in mine:
                print("  mailbus: %s" % "\t".join(m))
            for r in ref:
                print("  python:  %s" % "\t".join(r))
    print("%d messages compared, %d differ" % (len(args) - 2, diffs))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
