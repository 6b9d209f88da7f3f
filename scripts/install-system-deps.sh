#!/usr/bin/env bash
# Installs the Debian packages the tests need, when missing:
# - chromium: the browser publisher tests (Playwright drives it);
# - firefox-esr: the second browser engine (opened directly, no driver);
# - GStreamer's webrtcbin with Debian's Python GI, websockets and cryptography:
#   the third-party (Raspberry Ninja-like) publisher the tests run with /usr/bin/python3;
# - iproute2: the network namespace those tests run in (libnice ignores loopback);
# - openssl: its CLI is the independent AES check.
set -euo pipefail
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || need+=(firefox-esr)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
gst_packages=(python3-gi python3-websockets python3-cryptography gir1.2-gst-plugins-bad-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-nice)
for pkg in "${gst_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1
  fi
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
