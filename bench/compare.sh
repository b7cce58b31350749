#!/usr/bin/env bash
# SFTS side by side with socat, nginx + curl, python http.server, rsync daemon, tar | socat and
# openssl, on 127.0.0.1 (issue 6). See docs/BENCHMARKS.md.
#
#   bench/compare.sh            # full: 1 GiB file, 10,000 files, 64 clients, ... 5 runs each
#   bench/compare.sh --quick    # CI: small sizes, one run, well under 2 minutes
#   bench/compare.sh --help     # every option
#
# Installs the Debian packages it needs when they are missing (apt-get, as root), builds the
# release binaries, then runs bench/compare.py. Exit 0: everything ran (whatever the times);
# 1: a tool is broken (a transfer failed or its output differs); 2: usage; 3: missing tools.
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
        exec python3 -B bench/compare.py --help
    fi
done

# command -> Debian package
declare -A PACKAGES=(
    [socat]=socat [nginx]=nginx [rsync]=rsync [curl]=curl [openssl]=openssl
    [fincore]=util-linux [cmp]=diffutils [tar]=tar
)
missing=()
for cmd in "${!PACKAGES[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$cmd ]]; then
        missing+=("${PACKAGES[$cmd]}")
    fi
done
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench: need root to apt-get install ${missing[*]} (or install them yourself)" >&2
        exit 3
    fi
    export DEBIAN_FRONTEND=noninteractive
    # (If the nginx package starts its own server on port 80, it does not matter: the harness
    # runs its own instances on free ports.)
    if apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }; then
        :
    else
        echo "bench: apt-get install ${missing[*]} failed" >&2
        exit 3
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# --no-build, or --bin-dir DIR (binaries built elsewhere): use the binaries as they are.
build=1
args=()
for arg in "$@"; do
    case $arg in
        --no-build) build=0 ;;
        --bin-dir | --bin-dir=*) build=0; args+=("$arg") ;;
        *) args+=("$arg") ;;
    esac
done
if ((build)); then
    echo "bench: cargo build --release" >&2
    cargo build --release --quiet -p sfts-server -p sfts-client
fi

exec python3 -B bench/compare.py "${args[@]}"
