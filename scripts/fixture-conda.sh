#!/bin/sh
# kiln fixture: a stand-in for conda in the continuumio/miniconda3
# look-alike (the test machines reach no conda channel). It does what kiln's
# conda step asks of conda: `conda env create [--quiet] -p PREFIX -f FILE`
# makes PREFIX an environment of this image's python, with the `pip:`
# packages of FILE installed by pip; FILE's conda packages are listed and
# not installed.
set -eu
if [ "${1:-} ${2:-}" != "env create" ]; then
    echo "conda (kiln fixture stand-in): only 'conda env create -p PREFIX -f FILE' is supported" >&2
    exit 2
fi
shift 2
prefix='' file=''
while [ $# -gt 0 ]; do
    case $1 in
        -p | --prefix) prefix=$2; shift 2 ;;
        -f | --file) file=$2; shift 2 ;;
        -q | --quiet) shift ;;
        *) echo "conda (kiln fixture stand-in): unsupported argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$prefix" ] || [ -z "$file" ]; then
    echo "conda (kiln fixture stand-in): -p and -f are required" >&2
    exit 2
fi
if [ ! -r "$file" ]; then
    echo "EnvironmentFileNotFound: '$file' file not found" >&2
    exit 1
fi
# The file's dependencies: conda's on the first line, `- pip:` ones on the second.
deps=$(python3 -c '
import sys
conda, pip, in_pip, pip_indent = [], [], False, 0
for raw in open(sys.argv[1]):
    line = raw.split("#", 1)[0].rstrip()
    if not line.strip():
        continue
    indent = len(line) - len(line.lstrip())
    item = line.strip()
    if in_pip and indent <= pip_indent:
        in_pip = False
    if item == "- pip:":
        in_pip, pip_indent = True, indent
    elif item.startswith("- "):
        (pip if in_pip else conda).append(item[2:].strip())
print(" ".join(conda))
print(" ".join(pip))
' "$file")
conda_deps=$(printf '%s\n' "$deps" | sed -n 1p)
pip_deps=$(printf '%s\n' "$deps" | sed -n 2p)
echo "conda (kiln fixture stand-in): conda packages, not installed: ${conda_deps:-none}"
python3 -m venv "$prefix"
if [ -n "$pip_deps" ]; then
    # shellcheck disable=SC2086
    "$prefix/bin/python" -m pip install --no-warn-script-location $pip_deps
fi
