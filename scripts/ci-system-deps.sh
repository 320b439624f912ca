#!/usr/bin/env bash
# Debian packages the device tests need: an SSH server for the loopback SSH device, qemu-user-static and
# debootstrap for the emulated arm64 board. Idempotent: installs only what is missing; needs root (CI runs as root).
# Without root it says what is missing and exits 0: the tests that need these packages skip with that reason.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
if [ ${#need[@]} -eq 0 ]; then
  echo "ci-system-deps: all present"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ci-system-deps: missing ${need[*]} and not root: device tests that need them will skip" >&2
  exit 0
fi
echo "ci-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "ci-system-deps: done"
