#!/usr/bin/env bash
# Makes podman usable for `make test-containers` on a Debian 12 machine like CI's (root, no systemd
# as PID 1, cgroup v1 with a hybrid cgroup2, no CAP_SYS_RESOURCE, no container registry, a
# TLS-intercepting proxy), after ../shared/containers/containers-setup.sh of the machines we test on.
# Idempotent: a second run installs nothing and builds nothing. It leaves a machine's own podman set-up
# alone: containers.conf is written only where there is none (or it is this script's), and the base
# image is pulled where a registry answers; made only where none does.
#  - packages: podman with runc (crun 1.8 refuses this cgroup layout), the dnsname plugin (compose
#    services reach each other by name), debootstrap (the base image below);
#  - /etc/containers/containers.conf: ulimits this machine may grant (podman's default 1048576 needs
#    CAP_SYS_RESOURCE), runc, cgroupfs and a file events log (no systemd);
#  - docker.io/library/debian:bookworm-slim made with debootstrap from the Debian mirror, since no
#    registry is reachable. It trusts the machine's CA bundle (the proxy's), for apt and pip in
#    builds: a local test image, never one to publish.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "setup-podman.sh: run as root (it installs packages and writes /etc/containers)"; exit 2; }

PKGS="podman runc catatonit fuse-overlayfs slirp4netns uidmap debootstrap golang-github-containernetworking-plugin-dnsname curl"
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
fi

hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
[ "$hard_nofile" = unlimited ] && hard_nofile=16384
[ "$hard_nproc" = unlimited ] && hard_nproc=16384
nofile=$(( hard_nofile < 16384 ? hard_nofile : 16384 )); nproc=$(( hard_nproc < 16384 ? hard_nproc : 16384 ))
MARK="# written by the orchestrator's tests/containers/setup-podman.sh"
if [ ! -e /etc/containers/containers.conf ] || grep -qxF "$MARK" /etc/containers/containers.conf; then
mkdir -p /etc/containers
cat > /etc/containers/containers.conf <<CONF
$MARK
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi

BASE=docker.io/library/debian:bookworm-slim
if ! podman image exists "$BASE" && ! timeout 60 podman pull -q "$BASE" >/dev/null 2>&1; then
  echo "no registry answers: making $BASE with debootstrap"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  rootfs=$(mktemp -d /var/tmp/rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  : > "$rootfs/etc/resolv.conf"; echo localhost > "$rootfs/etc/hostname"
  mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/etc/ssl/certs"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  CA=/etc/ssl/certs/ca-certificates.crt
  tar -C "$rootfs" -c . | podman import -q \
    --change 'CMD ["bash"]' \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT=$CA REQUESTS_CA_BUNDLE=$CA SSL_CERT_FILE=$CA" \
    - "$BASE" >/dev/null
fi
echo "podman ready: $(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Store.GraphDriverName}} {{.Host.NetworkBackend}}'); base image $BASE"
