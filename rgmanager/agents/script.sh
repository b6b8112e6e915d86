#!/bin/bash
# script.sh — rgmanager resource agent: an LSB init script.
#
# Parameters: name, file (the script), service_name (inherited from the
# service; unused). start/stop/status run
# `FILE start|stop|status`; any non-zero exit is a failure (1), except a
# stop of a script that is already stopped.

OCF_SUCCESS=0 OCF_ERR_GENERIC=1 OCF_ERR_ARGS=2 OCF_ERR_INSTALLED=5 OCF_ERR_CONFIGURED=6

meta_data() {
  cat <<'XML'
<?xml version="1.0"?>
<resource-agent version="rgmanager 2.0" name="script">
  <version>1.0</version>
  <longdesc lang="en">An LSB init script run as part of a service.</longdesc>
  <shortdesc lang="en">LSB init script</shortdesc>
  <parameters>
    <parameter name="name" unique="1" primary="1"><content type="string"/></parameter>
    <parameter name="file" unique="1" required="1"><content type="string"/></parameter>
    <parameter name="service_name" inherit="service%name"><content type="string"/></parameter>
  </parameters>
  <actions>
    <action name="start" timeout="60"/>
    <action name="stop" timeout="60"/>
    <action name="status" interval="30" timeout="30"/>
    <action name="monitor" interval="30" timeout="30"/>
    <action name="meta-data" timeout="5"/>
    <action name="validate-all" timeout="5"/>
  </actions>
  <special tag="rgmanager"><child type="script" start="9" stop="1"/></special>
</resource-agent>
XML
}

file=$OCF_RESKEY_file

validate() {
  [[ -n $file ]] || { echo "script.sh: no file=" >&2; return $OCF_ERR_CONFIGURED; }
  [[ -x $file ]] || { echo "script.sh: $file is not executable" >&2; return $OCF_ERR_INSTALLED; }
  return $OCF_SUCCESS
}

case $1 in
  meta-data) meta_data; exit $OCF_SUCCESS ;;
  validate-all) validate; exit ;;
  start|status|monitor)
    validate || exit
    action=$1; [[ $action == monitor ]] && action=status
    "$file" "$action" || exit $OCF_ERR_GENERIC
    exit $OCF_SUCCESS ;;
  stop)
    # A script that cannot run cannot have started anything.
    validate || exit $OCF_SUCCESS
    "$file" stop || exit $OCF_ERR_GENERIC
    exit $OCF_SUCCESS ;;
  recover|restart)
    validate || exit
    "$file" restart || exit $OCF_ERR_GENERIC
    exit $OCF_SUCCESS ;;
  *) echo "usage: $0 {start|stop|status|meta-data|validate-all}" >&2; exit $OCF_ERR_ARGS ;;
esac
