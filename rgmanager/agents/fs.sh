#!/bin/bash
# fs.sh — rgmanager resource agent: a file system mounted only where its
# service runs (an exclusive mount that moves with the service).
# start: mount -t FSTYPE -o OPTIONS DEVICE MOUNTPOINT (3 tries), after
# `fsck -p` with force_fsck; stop: sync, umount (3 tries; force_unmount
# kills the users); status: depth 0 mounted, 10 readable, 20 writable
# (quick_status: depth 0 only). fsid and nfslock are for NFS exports,
# which we do not have: accepted, unused.

. "$(dirname "$0")/fs-common.sh"

meta_data() {
  cat <<'XML'
<?xml version="1.0"?>
<resource-agent version="rgmanager 2.0" name="fs">
  <version>1.0</version>
  <longdesc lang="en">A file system mounted where its service runs.</longdesc>
  <shortdesc lang="en">File system</shortdesc>
  <parameters>
    <parameter name="name" unique="1" primary="1"><content type="string"/></parameter>
    <parameter name="device" unique="1" required="1"><content type="string"/></parameter>
    <parameter name="mountpoint" unique="1" required="1"><content type="string"/></parameter>
    <parameter name="fstype"><content type="string"/></parameter>
    <parameter name="options"><content type="string"/></parameter>
    <parameter name="force_unmount"><content type="boolean"/></parameter>
    <parameter name="quick_status"><content type="boolean"/></parameter>
    <parameter name="self_fence"><content type="boolean"/></parameter>
    <parameter name="nfslock" inherit="service%nfslock"><content type="boolean"/></parameter>
    <parameter name="fsid"><content type="string"/></parameter>
    <parameter name="force_fsck"><content type="boolean"/></parameter>
  </parameters>
  <actions>
    <action name="start" timeout="900"/>
    <action name="stop" timeout="30"/>
    <action name="status" depth="0" interval="1m" timeout="10"/>
    <action name="status" depth="10" interval="1m" timeout="30"/>
    <action name="status" depth="20" interval="1m" timeout="30"/>
    <action name="meta-data" timeout="5"/>
    <action name="validate-all" timeout="5"/>
  </actions>
  <special tag="rgmanager"><child type="fs" start="2" stop="8"/></special>
</resource-agent>
XML
}

case $1 in
  meta-data) meta_data; exit $OCF_SUCCESS ;;
  validate-all) validate; exit ;;
  start)
    validate || exit
    if yes "$OCF_RESKEY_force_fsck" && ! is_mounted; then
      # fsck's exit status: 0 clean, 1 errors corrected; more is a failure.
      fsck -p ${fstype:+-t "$fstype"} "$device" >&2
      (( $? <= 1 )) || { echo "$0: fsck of $device failed" >&2; exit $OCF_ERR_GENERIC; }
    fi
    fs_start; exit ;;
  stop) validate || exit; fs_stop; exit ;;
  status|monitor)
    validate || exit
    yes "$OCF_RESKEY_quick_status" && OCF_CHECK_LEVEL=0
    fs_status; exit ;;
  *) echo "usage: $0 {start|stop|status|meta-data|validate-all}" >&2; exit $OCF_ERR_ARGS ;;
esac
