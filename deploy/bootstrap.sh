#!/usr/bin/env bash
# Installs fruits on one node and starts its part of the cluster: the scheduler on the primary
# node, an executor on the others. For plain VMs and as an EMR bootstrap action (on EMR the
# role comes from /mnt/var/lib/info/instance.json).
#
#   bootstrap.sh --binary URI --scheduler HOST:PORT --token-file PATH [--role primary|worker]
#                [--weights URI] [--region REGION] [--units DIR]
#
# URI: s3://bucket/key (with the aws CLI), https://... or a local path, of the fruits binary or
# of a .tar.gz holding it. The token file (the cluster's shared secret, the same on every node)
# is copied to /etc/fruits/cluster.token. DIR: the systemd units (default: systemd/ beside
# this script).
set -euo pipefail

binary="" scheduler="" role="" token_file="" weights="" region="${AWS_REGION:-}"
units="$(cd "$(dirname "$0")" && pwd)/systemd"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --scheduler) scheduler="$2"; shift 2 ;;
        --role) role="$2"; shift 2 ;;
        --token-file) token_file="$2"; shift 2 ;;
        --weights) weights="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        --units) units="$2"; shift 2 ;;
        *) echo "bootstrap.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ] || [ -z "$scheduler" ] || [ -z "$token_file" ]; then
    echo "bootstrap.sh: --binary, --scheduler and --token-file are required" >&2
    exit 2
fi
if [ -z "$role" ]; then
    if [ -f /mnt/var/lib/info/instance.json ] && grep -q '"isMaster": *true' /mnt/var/lib/info/instance.json; then
        role=primary
    elif [ -f /mnt/var/lib/info/instance.json ]; then
        role=worker
    else
        echo "bootstrap.sh: --role primary|worker (not on EMR)" >&2
        exit 2
    fi
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# 1. The binary.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
case "$binary" in
    s3://*) aws s3 cp --only-show-errors "$binary" "$tmp/download" ;;
    https://*|http://*) curl -fsSL -o "$tmp/download" "$binary" ;;
    *) cp "$binary" "$tmp/download" ;;
esac
if tar -tzf "$tmp/download" >/dev/null 2>&1; then
    tar -xzf "$tmp/download" -C "$tmp"
    found="$(find "$tmp" -type f -name fruits -perm -u+x | head -n 1)"
else
    found="$tmp/download"
fi
$sudo install -m 0755 "$found" /usr/local/bin/fruits
/usr/local/bin/fruits --version

# 2. The user, its folders, the token and the settings.
if ! id fruits >/dev/null 2>&1; then
    $sudo useradd --system --home-dir /var/lib/fruits --shell /usr/sbin/nologin fruits
fi
$sudo install -d -o fruits -g fruits -m 0750 /var/lib/fruits /var/lib/fruits/work
$sudo install -d -m 0755 /etc/fruits
$sudo install -o fruits -g fruits -m 0400 "$token_file" /etc/fruits/cluster.token
here="$(hostname -I 2>/dev/null | awk '{print $1}')"
{
    echo "FRUITS_SCHEDULER_BIND=${scheduler}"
    echo "FRUITS_EXECUTOR_TIMEOUT=60"
    echo "FRUITS_SCHEDULER=${scheduler}"
    echo "FRUITS_EXECUTOR_BIND=0.0.0.0:50051"
    echo "FRUITS_EXTERNAL_HOST=${here:-$(hostname)}"
    echo "FRUITS_HEARTBEAT=10"
    if [ -n "$weights" ]; then echo "FRUITS_WEIGHTS=${weights}"; fi
    if [ -n "$region" ]; then echo "AWS_REGION=${region}"; fi
} > "$tmp/fruits.env"
$sudo install -m 0644 "$tmp/fruits.env" /etc/fruits/fruits.env

# 3. The unit of this node's role, started now and at every boot.
unit=fruits-executor.service
if [ "$role" = primary ]; then unit=fruits-scheduler.service; fi
$sudo install -m 0644 "$units/$unit" "/etc/systemd/system/$unit"
$sudo systemctl daemon-reload
$sudo systemctl enable --now "$unit"
echo "bootstrap.sh: $unit started ($role)"
