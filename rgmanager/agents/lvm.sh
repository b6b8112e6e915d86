#!/bin/bash
# lvm.sh — rgmanager resource agent: activates a volume group (vg_name)
# or one logical volume (vg_name + lv_name) where its service runs,
# exclusively (`-aey`, which clustered locking makes exclusive across the
# cluster); stop deactivates (`-an`). Thin on purpose: the lvm tool does
# the locking. status: the LV (or every LV of the VG) is active.

OCF_SUCCESS=0 OCF_ERR_GENERIC=1 OCF_ERR_ARGS=2 OCF_ERR_INSTALLED=5
OCF_ERR_CONFIGURED=6 OCF_NOT_RUNNING=7

meta_data() {
  cat <<'XML'
<?xml version="1.0"?>
<resource-agent version="rgmanager 2.0" name="lvm">
  <version>1.0</version>
  <longdesc lang="en">An LVM volume group or logical volume activated exclusively where its service runs.</longdesc>
  <shortdesc lang="en">LVM</shortdesc>
  <parameters>
    <parameter name="name" unique="1" primary="1"><content type="string"/></parameter>
    <parameter name="vg_name" required="1"><content type="string"/></parameter>
    <parameter name="lv_name"><content type="string"/></parameter>
  </parameters>
  <actions>
    <action name="start" timeout="300"/>
    <action name="stop" timeout="300"/>
    <action name="status" interval="30" timeout="30"/>
    <action name="meta-data" timeout="5"/>
    <action name="validate-all" timeout="5"/>
  </actions>
  <special tag="rgmanager"><child type="lvm" start="1" stop="9"/></special>
</resource-agent>
XML
}

vg=$OCF_RESKEY_vg_name
lv=$OCF_RESKEY_lv_name
target=$vg${lv:+/$lv}

validate() {
  command -v lvm >/dev/null || { echo "lvm.sh: no lvm" >&2; return $OCF_ERR_INSTALLED; }
  [[ -n $vg ]] || { echo "lvm.sh: no vg_name=" >&2; return $OCF_ERR_CONFIGURED; }
  return $OCF_SUCCESS
}

change() {
  if [[ -n $lv ]]; then lvm lvchange "$@" "$target"; else lvm vgchange "$@" "$vg"; fi
}

do_status() {
  local attrs
  attrs=$(lvm lvs --noheadings -o lv_attr "$target" 2>/dev/null) || return $OCF_ERR_GENERIC
  [[ -n $attrs ]] || return $OCF_NOT_RUNNING
  # The fifth attribute character is the state: a = active.
  while read -r a; do
    [[ ${a:4:1} == a ]] || return $OCF_NOT_RUNNING
  done <<<"$attrs"
  return $OCF_SUCCESS
}

case $1 in
  meta-data) meta_data; exit $OCF_SUCCESS ;;
  validate-all) validate; exit ;;
  start) validate || exit; change -aey || exit $OCF_ERR_GENERIC; exit $OCF_SUCCESS ;;
  stop) validate || exit; change -an || exit $OCF_ERR_GENERIC; exit $OCF_SUCCESS ;;
  status|monitor) validate || exit; do_status; exit ;;
  *) echo "usage: $0 {start|stop|status|meta-data|validate-all}" >&2; exit $OCF_ERR_ARGS ;;
esac
