#!/usr/bin/env bash
# Builds the release binaries and installs them under PREFIX (default
# /usr/local) with their usual names: Cargo cannot put a dot in a binary's
# name, so mkfs_clusterfs is installed as mkfs.clusterfs, and so on.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
cargo build --release --workspace --bins
mkdir -p "$prefix/sbin"
for bin in target/release/*; do
  [ -f "$bin" ] && [ -x "$bin" ] || continue
  name=$(basename "$bin")
  case "$name" in
    *.d|build|deps|examples|incremental) continue ;;
    mkfs_clusterfs|mount_clusterfs|fsck_clusterfs) name=${name/_/.} ;;
  esac
  install -m 0755 "$bin" "$prefix/sbin/$name"
done
# lvm2's command names are links to lvm, which dispatches on its name
# (lvm::commands::COMMANDS).
for cmd in pvcreate pvremove pvs pvdisplay pvscan pvck vgcreate vgextend vgreduce \
    vgremove vgchange vgs vgdisplay vgscan vgck lvcreate lvextend lvremove lvchange \
    lvs lvdisplay lvscan lvmconf; do
  ln -sf lvm "$prefix/sbin/$cmd"
done
# rgmanager's resource agents, where rgmanager looks for them.
mkdir -p "$prefix/share/cluster"
install -m 0755 rgmanager/agents/*.sh "$prefix/share/cluster/"
chmod 0644 "$prefix/share/cluster/fs-common.sh"
echo "installed into $prefix/sbin and $prefix/share/cluster"
