#!/usr/bin/env bash
# tlsfuzzer, a peer's TLS test suite, at a pinned commit, with its two
# dependencies (pinned) from PyPI in a virtual environment of its own, in an
# ignored folder: nothing is installed into the system's Python. Prints the
# folder (tlsfuzzer's scripts/ and tlsfuzzer/, and venv/). Idempotent.
#
# tlsfuzzer itself is on neither PyPI nor Debian: its files come from a git
# copy of its repository on this machine, TLSFUZZER_GIT (a work tree or a
# .git folder holding the commit; the default is where this workplace keeps
# fetched repositories). Exits 3, saying so, when there is none.
#   scripts/fetch-tlsfuzzer.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
commit=14555fe211456c46deccc4b2d94751dbd894aece
folder=${1:-$PWD/.build-tlsfuzzer}
source=${TLSFUZZER_GIT:-/work/.mirror/tlsfuzzer+tlsfuzzer/repo}
python_packages="tlslite-ng==0.9.0b2 ecdsa==0.19.2"
if [ "$(cat "$folder/version" 2>/dev/null)" = "$commit $python_packages" ]; then
    echo "$folder"
    exit 0
fi
if ! git -C "$source" cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "no copy of tlsfuzzer's commit $commit on this machine (TLSFUZZER_GIT=${source})" >&2
    exit 3
fi
rm -rf "$folder"
mkdir -p "$folder"
# Large data files elsewhere in the repository may be absent from the copy: only these two folders are taken.
git -C "$source" archive "$commit" scripts tlsfuzzer 2>/dev/null | tar -x -C "$folder"
python3 -m venv "$folder/venv"
"$folder/venv/bin/python" -m pip install --quiet --disable-pip-version-check $python_packages >&2
echo "$commit $python_packages" > "$folder/version"
echo "$folder"
