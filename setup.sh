#!/usr/bin/env bash
# All set-up on a fresh Debian machine, then one job:
#   ./setup.sh lab [OPTIONS]   build the virtual lab and run one machine end to end
#                              (QEMU + SeaBIOS + a Debian kernel that kexecs the payload)
#   ./setup.sh test [ARGS]     run the test suite (pytest ARGS)
# Installs the Debian packages it needs (as root, or with sudo), makes .venv,
# installs kexectest into it (editable), then runs the job.
set -euo pipefail
cd "$(dirname "$0")"

# chromium: the tests open the reports in it (tests/test_browser.py, driven by the test extra's
# playwright, which uses this browser and downloads none)
APT_PACKAGES=(python3 python3-venv python3-pip binutils openssl xorriso
              qemu-system-x86 kexec-tools busybox-static cpio ser2net chromium util-linux
              bochsbios vgabios isolinux syslinux-common)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,labgrid]'

job="${1:-}"
shift || true
case "$job" in
    lab)  exec .venv/bin/kexectest lab run "$@" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
    *)    echo "usage: ./setup.sh lab [OPTIONS] | ./setup.sh test [PYTEST ARGS]" >&2; exit 2 ;;
esac
