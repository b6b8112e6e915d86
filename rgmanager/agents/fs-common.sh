# fs-common.sh — shared by fs.sh and clusterfs.sh (sourced, not run).
# Parameters: name, device, mountpoint, fstype, options, force_unmount,
# self_fence.

OCF_SUCCESS=0 OCF_ERR_GENERIC=1 OCF_ERR_ARGS=2 OCF_ERR_INSTALLED=5
OCF_ERR_CONFIGURED=6 OCF_NOT_RUNNING=7

device=$OCF_RESKEY_device
mountpoint=${OCF_RESKEY_mountpoint%/}
[[ -z $mountpoint ]] && mountpoint=/
fstype=$OCF_RESKEY_fstype
options=$OCF_RESKEY_options
yes() { [[ $1 == 1 || $1 == yes || $1 == true || $1 == on ]]; }

validate() {
  [[ -n $device ]] || { echo "$0: no device=" >&2; return $OCF_ERR_CONFIGURED; }
  [[ $OCF_RESKEY_mountpoint == /* ]] || { echo "$0: mountpoint must be absolute" >&2; return $OCF_ERR_CONFIGURED; }
  return $OCF_SUCCESS
}

# True when something is mounted on the mount point (the kernel's table).
is_mounted() {
  awk -v m="$mountpoint" '{gsub(/\\040/, " ", $2); if ($2 == m) found=1} END {exit !found}' /proc/mounts
}

mount_once() {
  mkdir -p "$mountpoint" || return 1
  if [[ -n $fstype ]]; then
    mount -t "$fstype" ${options:+-o "$options"} "$device" "$mountpoint"
  else
    mount ${options:+-o "$options"} "$device" "$mountpoint"
  fi
}

# Up to 3 tries.
fs_start() {
  is_mounted && return $OCF_SUCCESS
  local i
  for i in 1 2 3; do
    "${MOUNT_FN:-mount_once}" && is_mounted && return $OCF_SUCCESS
    sleep 1
  done
  echo "$0: cannot mount $device on $mountpoint" >&2
  return $OCF_ERR_GENERIC
}

kill_users() {
  command -v fuser >/dev/null || return 0
  fuser -km -"$1" "$mountpoint" >/dev/null 2>&1
}

# sync, then up to 3 tries of umount; when it is busy, force_unmount
# kills the users (SIGTERM the first time, then SIGKILL) and tries again.
fs_stop() {
  is_mounted || return $OCF_SUCCESS
  sync
  local i
  for i in 1 2 3; do
    umount "$mountpoint" 2>/dev/null && ! is_mounted && return $OCF_SUCCESS
    if yes "$OCF_RESKEY_force_unmount"; then
      if (( i == 1 )); then kill_users TERM; else kill_users KILL; fi
      sleep 1
      umount "$mountpoint" 2>/dev/null && ! is_mounted && return $OCF_SUCCESS
    fi
    (( i < 3 )) && sleep "${FS_UMOUNT_RETRY_SLEEP:-5}"
  done
  echo "$0: cannot unmount $mountpoint" >&2
  if yes "$OCF_RESKEY_self_fence"; then
    echo "$0: self_fence: rebooting" >&2
    reboot -fn
  fi
  return $OCF_ERR_GENERIC
}

# depth 0: mounted; 10: readable; 20: writable.
fs_status() {
  is_mounted || return $OCF_NOT_RUNNING
  local depth=${OCF_CHECK_LEVEL:-0}
  if (( depth >= 10 )); then
    ls "$mountpoint" >/dev/null 2>&1 || return $OCF_ERR_GENERIC
  fi
  if (( depth >= 20 )); then
    local t="$mountpoint/.writable_test.$(hostname 2>/dev/null).$$"
    { : >"$t" && rm -f "$t"; } 2>/dev/null || return $OCF_ERR_GENERIC
  fi
  return $OCF_SUCCESS
}
