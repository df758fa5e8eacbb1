#!/bin/sh
# Debian/Ubuntu packages that fmseg's DICOM support needs to build and to test.
#
#   build:  cmake, libclang-dev (+ a C/C++ compiler) for dicom-pixeldata's `charls` (JPEG-LS:
#           CharLS is built with CMake, its bindings generated with bindgen/libclang) and
#           `openjpeg-sys` (JPEG 2000) features.
#   tests:  dcmtk (dcmconv, dcmcrle, dcmcjpeg, dcmcjpls: every transfer syntax from one series),
#           libgdcm-tools (gdcmconv --j2k), dcm2niix (geometry reference), dicom3tools (dciodvfy),
#           valgrind (the C ABI programs under memcheck, tests/cli/embed_c.rs).
#
# Idempotent: installs only what is missing. Works as root without sudo, or with sudo otherwise.
set -eu

PKGS="build-essential cmake libclang-dev dcmtk libgdcm-tools dcm2niix dicom3tools valgrind"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-debian-deps: all present ($PKGS)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-debian-deps: need root (or sudo) to install:$missing" >&2
    exit 1
fi

echo "install-debian-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $missing
