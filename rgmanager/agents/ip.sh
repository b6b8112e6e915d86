#!/bin/bash
# ip.sh — rgmanager resource agent: a floating IPv4 address.
#
# Parameters (OCF_RESKEY_*): address (A or A/prefix), monitor_link (1),
# sleeptime (seconds to wait after removing it, default 10),
# prefer_interface, family (auto or inet: IPv4 only here; inet6 is
# refused as not configured), nfslock (NFS lock recovery: accepted,
# unused).
# start: find an UP interface holding an address of the same subnet
# (link up when monitor_link=1); refuse if the address answers a ping
# (collision); `ip -f inet addr add dev D A/prefix`, then gratuitous ARP
# with `arping -U` when arping is installed. stop: `ip addr del`.
# status: the address is present and (monitor_link) the link is up;
# depth 10 adds a ping of the address. Exit codes are OCF's.

OCF_SUCCESS=0 OCF_ERR_GENERIC=1 OCF_ERR_ARGS=2 OCF_ERR_INSTALLED=5
OCF_ERR_CONFIGURED=6 OCF_NOT_RUNNING=7

meta_data() {
  cat <<'XML'
<?xml version="1.0"?>
<resource-agent version="rgmanager 2.0" name="ip">
  <version>1.0</version>
  <longdesc lang="en">A floating IPv4 address, added on the interface of its subnet.</longdesc>
  <shortdesc lang="en">IP address</shortdesc>
  <parameters>
    <parameter name="address" unique="1" primary="1"><content type="string"/></parameter>
    <parameter name="monitor_link"><content type="boolean" default="1"/></parameter>
    <parameter name="sleeptime"><content type="integer" default="10"/></parameter>
    <parameter name="prefer_interface"><content type="string"/></parameter>
    <parameter name="family"><content type="string" default="auto"/></parameter>
    <parameter name="nfslock" inherit="service%nfslock"><content type="boolean"/></parameter>
  </parameters>
  <actions>
    <action name="start" timeout="20"/>
    <action name="stop" timeout="20"/>
    <action name="status" interval="20" timeout="10"/>
    <action name="monitor" interval="20" timeout="10"/>
    <action name="status" depth="10" interval="60" timeout="20"/>
    <action name="meta-data" timeout="20"/>
    <action name="validate-all" timeout="20"/>
  </actions>
  <special tag="rgmanager"><attributes maxinstances="1"/></special>
</resource-agent>
XML
}

ip2int() {
  local IFS=. a b c d
  read -r a b c d <<<"$1"
  echo $(( (a << 24) | (b << 16) | (c << 8) | d ))
}

valid_ipv4() {
  [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
  local IFS=. o
  for o in $1; do (( o <= 255 )) || return 1; done
}

addr=${OCF_RESKEY_address%%/*}
want_prefix=
[[ $OCF_RESKEY_address == */* ]] && want_prefix=${OCF_RESKEY_address##*/}
monitor_link=${OCF_RESKEY_monitor_link:-1}
sleeptime=${OCF_RESKEY_sleeptime:-10}

link_up() {
  ip -o link show dev "$1" 2>/dev/null | grep -q 'LOWER_UP\|state UP'
}

# Prints "DEV PREFIX" of the interface that takes the address.
find_interface() {
  local target dev cidr net prefix mask best=
  target=$(ip2int "$addr")
  while read -r _ dev _ cidr _; do
    net=${cidr%/*}; prefix=${cidr#*/}
    [[ -n $want_prefix ]] && prefix=$want_prefix
    [[ $dev == lo ]] && continue
    mask=$(( prefix == 0 ? 0 : (0xffffffff << (32 - prefix)) & 0xffffffff ))
    (( ($(ip2int "$net") & mask) == (target & mask) )) || continue
    if [[ $monitor_link == 1 || $monitor_link == yes ]] && ! link_up "$dev"; then
      continue
    fi
    if [[ -n $OCF_RESKEY_prefer_interface && $dev == "$OCF_RESKEY_prefer_interface" ]]; then
      echo "$dev $prefix"; return 0
    fi
    [[ -z $best ]] && best="$dev $prefix"
  done < <(ip -o -f inet addr show)
  [[ -n $best ]] && { echo "$best"; return 0; }
  return 1
}

# Prints the device holding the address, if any.
holder() {
  ip -o -f inet addr show | awk -v a="$addr" '{split($4, p, "/"); if (p[1] == a) {print $2; exit}}'
}

validate() {
  command -v ip >/dev/null || { echo "ip.sh: no ip(8)" >&2; return $OCF_ERR_INSTALLED; }
  valid_ipv4 "$addr" || { echo "ip.sh: bad address '$OCF_RESKEY_address'" >&2; return $OCF_ERR_CONFIGURED; }
  case ${OCF_RESKEY_family:-auto} in
    auto|inet) ;;
    *) echo "ip.sh: family '$OCF_RESKEY_family' not supported (IPv4 only)" >&2; return $OCF_ERR_CONFIGURED ;;
  esac
  return $OCF_SUCCESS
}

do_start() {
  [[ -n $(holder) ]] && return $OCF_SUCCESS
  local found dev prefix
  found=$(find_interface) || { echo "ip.sh: no usable interface for $addr" >&2; return $OCF_ERR_GENERIC; }
  read -r dev prefix <<<"$found"
  if command -v ping >/dev/null && ping -c 1 -W 1 -q "$addr" >/dev/null 2>&1; then
    echo "ip.sh: IPv4 address collision $addr" >&2
    return $OCF_ERR_GENERIC
  fi
  ip -f inet addr add dev "$dev" "$addr/$prefix" || return $OCF_ERR_GENERIC
  if command -v arping >/dev/null; then
    (arping -q -c 2 -U -I "$dev" "$addr" >/dev/null 2>&1 &)
  fi
  return $OCF_SUCCESS
}

do_stop() {
  local dev
  dev=$(holder)
  [[ -z $dev ]] && return $OCF_SUCCESS
  local cidr
  cidr=$(ip -o -f inet addr show dev "$dev" | awk -v a="$addr" '{split($4, p, "/"); if (p[1] == a) {print $4; exit}}')
  ip -f inet addr del dev "$dev" "$cidr" || return $OCF_ERR_GENERIC
  (( sleeptime > 0 )) && sleep "$sleeptime"
  return $OCF_SUCCESS
}

do_status() {
  local dev
  dev=$(holder)
  [[ -z $dev ]] && return $OCF_NOT_RUNNING
  if [[ $monitor_link == 1 || $monitor_link == yes ]] && ! link_up "$dev"; then
    echo "ip.sh: link down on $dev" >&2
    return $OCF_ERR_GENERIC
  fi
  if (( ${OCF_CHECK_LEVEL:-0} >= 10 )) && command -v ping >/dev/null; then
    ping -c 1 -W 1 -q "$addr" >/dev/null 2>&1 || return $OCF_ERR_GENERIC
  fi
  return $OCF_SUCCESS
}

case $1 in
  meta-data) meta_data; exit $OCF_SUCCESS ;;
  validate-all) validate; exit ;;
  start) validate || exit; do_start; exit ;;
  stop) validate || exit; do_stop; exit ;;
  status|monitor) validate || exit; do_status; exit ;;
  recover|restart) validate || exit; do_stop && do_start; exit ;;
  *) echo "usage: $0 {start|stop|status|meta-data|validate-all}" >&2; exit $OCF_ERR_ARGS ;;
esac
