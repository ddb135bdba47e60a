#!/bin/sh
# Install agw into a fresh virtual environment: the Containerfile runs this,
# and so does CI (make deploy-check), so the image's install steps are tested.
#
#   deploy/install.sh PREFIX [SOURCE]
#
# PREFIX is the venv to create (e.g. /opt/agw); SOURCE the agw source tree
# (default: the tree this script is in).  Needs python3 with the venv module.
set -eu
prefix=${1:?usage: deploy/install.sh PREFIX [SOURCE]}
source=${2:-$(cd "$(dirname "$0")/.." && pwd)}
python=${PYTHON:-python3}

"$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --no-cache-dir --quiet --upgrade pip
"$prefix/bin/python" -m pip install --no-cache-dir --quiet "$source"
# Write Twisted's plugin cache now: at run time the install is read-only.
"$prefix/bin/python" -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
# The entry point works and finds the agw plugin.
"$prefix/bin/twistd" agw --help >/dev/null
echo "agw installed in $prefix"
