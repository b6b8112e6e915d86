#!/bin/bash
# lvm.sh — rgmanager resource agent: a volume group (vg_name) or one
# logical volume of it (vg_name + lv_name), active only where its service
# runs. Two modes, chosen as rgmanager's lvm.sh chose them:
#
# - Clustered VG (the sixth vg_attr character is `c`): clvmd's locking
#   makes `-aey` exclusive across the cluster. start: `vgchange -aey VG`
#   (or `lvchange -aey VG/LV`); stop: `-an`.
# - Otherwise HA-LVM by tags: lvm.conf's activation/volume_list must hold
#   `@NODE` (this node's cluster name) and not the VG, so a node activates
#   the VG (or LV) only while it carries the node's tag. start: refuse if
#   another node that is a cluster member owns it (its tag); else strip
#   the tags (a dead owner's), add ours, activate. stop: deactivate, then
#   drop our tag. status: active and ours (else deactivated, failed).
#
# The node's name is $RGMANAGER_NODE (set by rgmanager), else `uname -n`;
# whether an owner is a member comes from `clustat -x -m NODE` (in the
# node's $CMAN_STATE_DIR).

OCF_SUCCESS=0 OCF_ERR_GENERIC=1 OCF_ERR_ARGS=2 OCF_ERR_INSTALLED=5
OCF_ERR_CONFIGURED=6 OCF_NOT_RUNNING=7

meta_data() {
  cat <<'XML'
<?xml version="1.0"?>
<resource-agent version="rgmanager 2.0" name="lvm">
  <version>1.0</version>
  <longdesc lang="en">An LVM volume group or logical volume active only where its service runs: exclusive activation through clvmd for a clustered VG, HA-LVM ownership tags otherwise.</longdesc>
  <shortdesc lang="en">LVM failover script</shortdesc>
  <parameters>
    <parameter name="name" unique="1" primary="1"><content type="string"/></parameter>
    <parameter name="vg_name" required="1"><content type="string"/></parameter>
    <parameter name="lv_name"><content type="string"/></parameter>
    <parameter name="self_fence"><content type="boolean" default="0"/></parameter>
    <parameter name="nfslock" inherit="service%nfslock"><content type="boolean"/></parameter>
  </parameters>
  <actions>
    <action name="start" timeout="300"/>
    <action name="stop" timeout="300"/>
    <action name="status" timeout="5" interval="1h"/>
    <action name="monitor" timeout="5" interval="1h"/>
    <action name="meta-data" timeout="5"/>
    <action name="validate-all" timeout="30"/>
  </actions>
  <special tag="rgmanager"><child type="lvm" start="1" stop="9"/></special>
</resource-agent>
XML
}

vg=$OCF_RESKEY_vg_name
lv=$OCF_RESKEY_lv_name
target=$vg${lv:+/$lv}
me=${RGMANAGER_NODE:-$(uname -n)}

log() { echo "lvm.sh: $*" >&2; }
yes() { [[ $1 == 1 || $1 == yes || $1 == true || $1 == on ]]; }
trim() { local s=$*; s=${s#"${s%%[![:space:]]*}"}; echo "${s%"${s##*[![:space:]]}"}"; }

validate() {
  command -v lvm >/dev/null || { log "no lvm"; return $OCF_ERR_INSTALLED; }
  [[ -n $vg ]] || { log "no vg_name="; return $OCF_ERR_CONFIGURED; }
  return $OCF_SUCCESS
}

clustered() {
  local attr
  attr=$(trim "$(lvm vgs --noheadings -o vg_attr "$vg" 2>/dev/null)")
  [[ ${attr:5:1} == c ]]
}

# Each LV's attributes (one per line) of the VG, or of the LV.
lv_attrs() { lvm lvs --noheadings -o lv_attr "$target" 2>/dev/null; }

all_active() {
  local attrs a
  attrs=$(lv_attrs) || return 1
  [[ -n $attrs ]] || return 1
  while read -r a; do
    [[ ${a:4:1} == a ]] || return 1
  done <<<"$attrs"
}

none_active() {
  local a
  while read -r a; do
    [[ -z $a || ${a:4:1} != a ]] || return 1
  done <<<"$(lv_attrs)"
}

# ---------------------------------------------------------------- tag mode

# The tags of the VG (VG mode) or of the LV, one per line.
tags() {
  local t
  if [[ -n $lv ]]; then t=$(lvm lvs --noheadings -o lv_tags "$target" 2>/dev/null)
  else t=$(lvm vgs --noheadings -o vg_tags "$vg" 2>/dev/null); fi
  t=$(trim "$t")
  [[ -n $t ]] && tr ',' '\n' <<<"$t"
}

tag_change() {
  if [[ -n $lv ]]; then lvm lvchange "$@" "$target"; else lvm vgchange "$@" "$vg"; fi
}

# 0: clustat shows NODE as a cluster member; 1 otherwise.
is_member() {
  local line
  line=$(clustat -x -m "$1" --state-dir "${CMAN_STATE_DIR:-/var/run/cluster}" 2>/dev/null |
    grep "<node name=\"$1\"") || return 1
  [[ $line == *' state="1"'* ]]
}

# 0: someone else (a member) owns it; 1: we do; 2: free to claim.
owner() {
  local t others=0 mine=0
  while read -r t; do
    [[ -z $t ]] && continue
    if [[ $t == "$me" ]]; then mine=1
    elif is_member "$t"; then others=1
    fi
  done <<<"$(tags)"
  ((others)) && return 0
  ((mine)) && return 1
  return 2
}

strip_tags() {
  local t
  while read -r t; do
    [[ -z $t ]] && continue
    log "stripping tag $t from $target"
    tag_change --deltag "$t" >/dev/null || return 1
  done <<<"$(tags)"
  [[ -z $(tags) ]]
}

# HA-LVM needs activation/volume_list in lvm.conf, naming @NODE and not
# the VG (else any node could activate it).
setup_check() {
  local list
  list=$(lvm dumpconfig activation/volume_list 2>/dev/null) || {
    log "HA LVM: improper setup: \"volume_list\" not specified in lvm.conf"
    return 1
  }
  if ! grep -q -- "@$me\"" <<<"$list"; then
    log "HA LVM: improper setup: @$me missing from \"volume_list\" in lvm.conf"
    return 1
  fi
  if grep -q -- "\"$vg\"\|\"$vg/" <<<"$list"; then
    log "HA LVM: improper setup: $vg found in \"volume_list\" in lvm.conf"
    return 1
  fi
  return 0
}

tag_start() {
  setup_check || return $OCF_ERR_GENERIC
  if [[ -n $lv ]]; then
    local n
    n=$(lvm lvs --noheadings -o lv_name "$vg" 2>/dev/null | grep -c .)
    if ((n > 1)); then
      log "HA LVM requires only one logical volume per volume group ($vg has $n)"
      return $OCF_ERR_GENERIC
    fi
  fi
  owner
  case $? in
    0) log "$target is owned by another member: $(tags | tr '\n' ' ')"; return $OCF_ERR_GENERIC ;;
    1) log "$me owns $target" ;;
    2) log "$me can claim $target" ;;
  esac
  strip_tags || { log "cannot remove the tags of $target"; return $OCF_ERR_GENERIC; }
  tag_change --addtag "$me" >/dev/null || { log "cannot tag $target with $me"; return $OCF_ERR_GENERIC; }
  tag_change -ay >/dev/null || { log "cannot activate $target"; return $OCF_ERR_GENERIC; }
  all_active || { log "$target did not activate"; return $OCF_ERR_GENERIC; }
  return $OCF_SUCCESS
}

tag_stop() {
  setup_check || log "WARNING: an improper setup can cause data corruption"
  tag_change -an >/dev/null
  if ! none_active; then
    if yes "$OCF_RESKEY_self_fence"; then
      log "cannot deactivate $target: rebooting (self_fence)"
      sync
      reboot -fn
    fi
    log "cannot deactivate $target"
    return $OCF_ERR_GENERIC
  fi
  owner
  if (($? != 0)); then
    strip_tags || { log "cannot remove the tags of $target"; return $OCF_ERR_GENERIC; }
  fi
  return $OCF_SUCCESS
}

tag_status() {
  all_active || return $OCF_NOT_RUNNING
  owner
  if (($? != 1)); then
    log "WARNING: $target is active but $me does not own it: deactivating"
    tag_change -an >/dev/null
    return $OCF_ERR_GENERIC
  fi
  return $OCF_SUCCESS
}

# ---------------------------------------------------------------- clustered

cl_change() {
  if [[ -n $lv ]]; then lvm lvchange "$@" "$target"; else lvm vgchange "$@" "$vg"; fi
}

case $1 in
  meta-data) meta_data; exit $OCF_SUCCESS ;;
  validate-all|verify-all) validate; exit ;;
  start)
    validate || exit
    if clustered; then
      cl_change -aey || exit $OCF_ERR_GENERIC
      exit $OCF_SUCCESS
    fi
    tag_start; exit ;;
  stop)
    validate || exit
    if clustered; then
      cl_change -an || exit $OCF_ERR_GENERIC
      exit $OCF_SUCCESS
    fi
    tag_stop; exit ;;
  status|monitor)
    validate || exit
    if clustered; then
      all_active || exit $OCF_NOT_RUNNING
      exit $OCF_SUCCESS
    fi
    tag_status; exit ;;
  recover|restart) "$0" stop && "$0" start; exit ;;
  *) echo "usage: $0 {start|stop|status|monitor|restart|meta-data|validate-all}" >&2; exit $OCF_ERR_ARGS ;;
esac
