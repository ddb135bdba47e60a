#!/usr/bin/env bash
# Build (or reuse) the Python 2.7 virtualenv holding the Autobahn WebSocket
# Testsuite and print the path of its `wstest` as the last line on stdout
# (everything else goes to stderr), so a caller can do
#   WSTEST=$(bash conformance/setup-wstest.sh)
#
# Idempotent: a stamp in the virtualenv records the hash of the pin files and
# the interpreter; when it matches and wstest imports, nothing is done.
# Needs: CPython 2.7 (pyenv's 2.7.18), gcc and the Python 2 headers (wsaccel
# and zope.interface are built from sdists), and PyPI. Pins, with hashes:
# conformance/requirements-py2.txt and conformance/requirements-py2-virtualenv.txt.
#
# Environment:
#   WSTEST_VENV     where to build it (default: <repo>/.cache/wstest-venv, git-ignored)
#   WSTEST_PYTHON2  the Python 2.7 interpreter to use (default: pyenv's 2.7.18)
#   WSTEST_FORCE=1  rebuild even if the stamp matches
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
venv=${WSTEST_VENV:-$root/.cache/wstest-venv}
req=$here/requirements-py2.txt
req_venv=$here/requirements-py2-virtualenv.txt
stamp_file=$venv/.agw-wstest-stamp

log() { printf 'setup-wstest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Keep the caller's Python 3 environment out of the Python 2 tools.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PIP_USER PIP_REQUIRE_VIRTUALENV PIP_TARGET PIP_PREFIX VIRTUAL_ENV
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1 PIP_PROGRESS_BAR=off
export PYTHONWARNINGS=ignore

find_python2() {
    local cand
    if [ -n "${WSTEST_PYTHON2:-}" ]; then
        printf '%s\n' "$WSTEST_PYTHON2"; return 0
    fi
    if command -v pyenv >/dev/null 2>&1; then
        cand=$(PYENV_VERSION=2.7.18 pyenv which python2 2>/dev/null || true)
        if [ -n "$cand" ] && [ -x "$cand" ]; then printf '%s\n' "$cand"; return 0; fi
    fi
    for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7.18/bin/python2 \
                "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2; do
        if [ -x "$cand" ]; then printf '%s\n' "$cand"; return 0; fi
    done
    for cand in python2.7 python2; do
        if command -v "$cand" >/dev/null 2>&1; then command -v "$cand"; return 0; fi
    done
    return 1
}

py2=$(find_python2) || die "no Python 2.7 found (set WSTEST_PYTHON2, or install pyenv's 2.7.18)"
py2_version=$("$py2" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) \
    || die "$py2 does not run"
case $py2_version in
    2.7.*) ;;
    *) die "$py2 is Python $py2_version, not 2.7" ;;
esac

stamp=$(cat "$req" "$req_venv" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
stamp="$stamp $py2 $py2_version"

wstest_ok() {
    [ -x "$venv/bin/wstest" ] && "$venv/bin/python" -c 'import autobahntestsuite, autobahn, twisted' >/dev/null 2>&1
}

if [ "${WSTEST_FORCE:-0}" != 1 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && wstest_ok; then
    log "up to date: $venv"
    printf '%s\n' "$venv/bin/wstest"
    exit 0
fi

log "python2: $py2 ($py2_version)"

# virtualenv 20.x for python2 (its user site), if it has none. (Python 2's
# argparse prints --version on stderr.)
venv_version=$("$py2" -m virtualenv --version 2>&1 | awk '{print $2}' || true)
case $venv_version in
    20.*) log "virtualenv $venv_version already there" ;;
    *)
        log "installing virtualenv for $py2 (user site) from $req_venv"
        "$py2" -m pip install --user --no-deps --require-hashes --no-warn-script-location \
            -r "$req_venv" >&2
        venv_version=$("$py2" -m virtualenv --version 2>&1 | awk '{print $2}' || true)
        case $venv_version in
            20.*) ;;
            *) die "virtualenv did not install for $py2" ;;
        esac
        ;;
esac

log "building $venv"
case $venv in
    /|"$HOME"|"$root") die "refusing to replace $venv" ;;
esac
if [ -e "$venv" ] && [ ! -f "$venv/bin/activate" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
    die "$venv exists and is not a virtualenv; not replacing it"
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$py2" -m virtualenv --no-periodic-update --no-download -p "$py2" "$venv" >&2
# --no-build-isolation: the sdists build with the pinned setuptools/wheel in the
# virtualenv instead of whatever their pyproject.toml would fetch (wsaccel asks
# for Cython, which its sdist does not need: it ships the generated C).
"$venv/bin/python" -m pip install --no-deps --require-hashes --no-build-isolation \
    --no-warn-script-location -r "$req" >&2
"$venv/bin/python" -m pip check >&2 || die "pip check failed in $venv"
wstest_ok || die "wstest does not import in $venv"
"$venv/bin/wstest" --autobahnversion >&2 2>/dev/null || true
printf '%s\n' "$stamp" > "$stamp_file"
log "done: $venv"
printf '%s\n' "$venv/bin/wstest"
