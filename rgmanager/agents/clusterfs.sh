#!/bin/bash
# clusterfs.sh — rgmanager resource agent: a cluster file system (GFS2)
# that every node may have mounted. start mounts it with mount.clusterfs
# (our GFS2 over FUSE, joining the cluster through the node's cmand: its
# state directory from CMAN_STATE_DIR) unless it is mounted already;
# stop leaves it mounted unless force_unmount; status as fs.sh.

. "$(dirname "$0")/fs-common.sh"

meta_data() {
  cat <<'XML'
<?xml version="1.0"?>
<resource-agent version="rgmanager 2.0" name="clusterfs">
  <version>1.0</version>
  <longdesc lang="en">A GFS2 file system mounted on the nodes running its service; left mounted on stop unless force_unmount.</longdesc>
  <shortdesc lang="en">Cluster file system</shortdesc>
  <parameters>
    <parameter name="name" unique="1" primary="1"><content type="string"/></parameter>
    <parameter name="device" required="1"><content type="string"/></parameter>
    <parameter name="mountpoint" required="1"><content type="string"/></parameter>
    <parameter name="fstype"><content type="string" default="gfs2"/></parameter>
    <parameter name="options"><content type="string"/></parameter>
    <parameter name="fsid"><content type="string"/></parameter>
    <parameter name="force_unmount"><content type="boolean" default="0"/></parameter>
    <parameter name="self_fence"><content type="boolean"/></parameter>
    <parameter name="nfslock" inherit="service%nfslock"><content type="boolean"/></parameter>
  </parameters>
  <actions>
    <action name="start" timeout="900"/>
    <action name="stop" timeout="30"/>
    <action name="status" depth="0" interval="1m" timeout="10"/>
    <action name="status" depth="10" interval="5m" timeout="30"/>
    <action name="status" depth="20" interval="10m" timeout="30"/>
    <action name="meta-data" timeout="5"/>
    <action name="validate-all" timeout="5"/>
  </actions>
  <special tag="rgmanager"><child type="clusterfs" start="3" stop="7"/></special>
</resource-agent>
XML
}

mount_clusterfs() {
  mkdir -p "$mountpoint" || return 1
  local prog
  prog=$(command -v mount.clusterfs || command -v mount_clusterfs) || {
    # Not ours: the system's GFS2 mount.
    mount -t "${fstype:-gfs2}" ${options:+-o "$options"} "$device" "$mountpoint"
    return
  }
  # Open to every user, as a kernel GFS2 mount is (the kernel still checks
  # modes: mount.clusterfs mounts with default_permissions); FUSE would
  # otherwise keep it to root, and the tutorial's Apache serves it as
  # www-data.
  "$prog" "$device" "$mountpoint" --state-dir "${CMAN_STATE_DIR:-/var/run/cluster}" \
    -o "allow_other${options:+,$options}"
}

case $1 in
  meta-data) meta_data; exit $OCF_SUCCESS ;;
  validate-all) validate; exit ;;
  start) validate || exit; MOUNT_FN=mount_clusterfs fs_start; exit ;;
  stop)
    validate || exit
    yes "$OCF_RESKEY_force_unmount" || exit $OCF_SUCCESS
    fs_stop; exit ;;
  status|monitor) validate || exit; fs_status; exit ;;
  *) echo "usage: $0 {start|stop|status|meta-data|validate-all}" >&2; exit $OCF_ERR_ARGS ;;
esac
