#!/usr/bin/env bash
# test_mime_addrs.sh — a differential test of the address parser: every From, To,
# Cc, Bcc and Reply-To address mb_mime_parse finds in other projects' mail
# (tests/fixtures/mime, and the whole corpus at $MB_MIME_CORPUS or
# /work/shared/corpus when present) must equal what Python's email package finds,
# apart from the differences mime_addrs.py lists with the reason mailbus is right.
# Needs no services.
set -euo pipefail
MB_BIN=${MB_BIN:?MB_BIN must point at the build bin directory}
SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

dirs=("$SRC/tests/fixtures/mime")
corpus=${MB_MIME_CORPUS:-/work/shared/corpus}
[[ -d $corpus ]] && dirs+=("$corpus")
find "${dirs[@]}" -type f \( -name '*.eml' -o -name '*.msg' -o -name 'msg_*.txt' \) -print0 |
  sort -z >"$W/files"
n=$(tr -cd '\0' <"$W/files" | wc -c)
((n >= 20)) || { echo "FAIL: only $n messages found in ${dirs[*]}" >&2; exit 1; }

xargs -0 "$MB_BIN/mb-test-mime_addrs" <"$W/files" >"$W/ours.tsv"
[[ -s $W/ours.tsv ]] || { echo "FAIL: no address found in $n messages" >&2; exit 1; }
if ! xargs -0 python3 "$SRC/tests/integration/mime_addrs.py" --ours "$W/ours.tsv" \
    <"$W/files" >"$W/diff.txt"; then
  cat "$W/diff.txt" >&2
  echo "FAIL: mailbus and Python's email package read addresses differently" >&2
  exit 1
fi
echo "ok   $(tail -n 1 "$W/diff.txt") ($(wc -l <"$W/ours.tsv") addresses)"
echo "PASS test_mime_addrs.sh"
