#!/bin/bash
# Cadres agent snapshot hook ("VSS" on Linux) for LVM and btrfs — docs/engines.md, "Agent", VSS.
#
#   snapshot-hook.sh create PATH              take a read-only snapshot of the file system holding PATH
#                                             and print, as the last line, where PATH reads in it (exit 0);
#                                             exit 3 when PATH's file system is neither LVM nor btrfs
#   snapshot-hook.sh remove PATH SNAPSHOT     remove what `create` made for PATH
#
# Install it as root-owned and not writable by others (the agent runs it as root), and start the agent with
#   --snapshot-hook /usr/local/lib/cadres/snapshot-hook.sh
# Settings (environment of the agent's service):
#   CADRES_SNAPSHOT_DIR   where snapshots are mounted or created (default /run/cadres-snapshots)
#   CADRES_LVM_SNAPSHOT_SIZE  copy-on-write space of an LVM snapshot (default 10%ORIGIN: the snapshot
#                         becomes invalid — and the backup reads fail, reported — if more than this is
#                         rewritten while the backup runs)
# Needs: findmnt (util-linux); lvs/lvcreate/lvremove (lvm2) for LVM; btrfs (btrfs-progs) for btrfs.
set -euo pipefail

SNAP_DIR="${CADRES_SNAPSHOT_DIR:-/run/cadres-snapshots}"
LVM_SIZE="${CADRES_LVM_SNAPSHOT_SIZE:-10%ORIGIN}"

die() { echo "snapshot-hook: $*" >&2; exit 1; }
unsupported() { echo "snapshot-hook: $*" >&2; exit 3; }

# The part of PATH below its mount point (empty for the mount point itself).
relative_to() {
  local path="$1" mount="$2"
  if [ "$mount" = "/" ]; then echo "${path#/}"; else local rest="${path#"$mount"}"; echo "${rest#/}"; fi
}

create() {
  local path="$1"
  [ -e "$path" ] || die "$path does not exist"
  local fstype source target
  fstype="$(findmnt -n -o FSTYPE -T "$path")" || die "cannot find the file system of $path"
  source="$(findmnt -n -o SOURCE -T "$path")"
  target="$(findmnt -n -o TARGET -T "$path")"
  local id
  id="$(date +%s)-$$-$RANDOM"
  mkdir -p "$SNAP_DIR"
  chmod 0700 "$SNAP_DIR"
  local rel
  rel="$(relative_to "$path" "$target")"
  case "$fstype" in
    btrfs)
      command -v btrfs >/dev/null || unsupported "btrfs-progs is not installed"
      # The mount point is a subvolume (the one mounted there): snapshot it read-only.
      local snap="$SNAP_DIR/btrfs-$id"
      btrfs subvolume snapshot -r "$target" "$snap" >&2 || die "btrfs subvolume snapshot of $target failed"
      echo "btrfs $snap" > "$SNAP_DIR/btrfs-$id.cadres"
      echo "${snap}${rel:+/$rel}"
      ;;
    ext2 | ext3 | ext4 | xfs)
      command -v lvs >/dev/null || unsupported "lvm2 is not installed"
      local lv vg
      lv="$(lvs --noheadings -o lv_name "$source" 2>/dev/null | tr -d ' ')" || true
      vg="$(lvs --noheadings -o vg_name "$source" 2>/dev/null | tr -d ' ')" || true
      [ -n "$lv" ] && [ -n "$vg" ] || unsupported "$source ($target) is not an LVM logical volume"
      local name="cadres-snap-$id"
      lvcreate --snapshot --extents "$LVM_SIZE" --name "$name" "$vg/$lv" >&2 ||
        lvcreate --snapshot --size 1G --name "$name" "$vg/$lv" >&2 || die "lvcreate of a snapshot of $vg/$lv failed"
      local mnt="$SNAP_DIR/lvm-$id"
      mkdir -p "$mnt"
      local opts
      case "$fstype" in
        xfs) opts="ro,nouuid,norecovery" ;;
        ext3 | ext4) opts="ro,noload" ;;
        *) opts="ro" ;;
      esac
      if ! mount -o "$opts" "/dev/$vg/$name" "$mnt" >&2; then
        lvremove -y "$vg/$name" >&2 || true
        rmdir "$mnt" || true
        die "cannot mount the snapshot /dev/$vg/$name"
      fi
      echo "lvm $vg/$name $mnt" > "$SNAP_DIR/lvm-$id.cadres"
      echo "${mnt}${rel:+/$rel}"
      ;;
    *)
      unsupported "$target is $fstype: only LVM (ext2/3/4, xfs) and btrfs can be snapshotted"
      ;;
  esac
}

remove() {
  local snapshot="$2"
  local f
  for f in "$SNAP_DIR"/*.cadres; do
    [ -e "$f" ] || continue
    read -r kind a b < "$f"
    case "$kind" in
      btrfs)
        if [ "$snapshot" = "$a" ] || [[ "$snapshot" == "$a/"* ]]; then
          btrfs subvolume delete "$a" >&2 || die "cannot delete $a"
          rm -f "$f"
          return 0
        fi
        ;;
      lvm)
        if [ "$snapshot" = "$b" ] || [[ "$snapshot" == "$b/"* ]]; then
          umount "$b" >&2 || die "cannot unmount $b"
          rmdir "$b" || true
          lvremove -y "$a" >&2 || die "cannot remove $a"
          rm -f "$f"
          return 0
        fi
        ;;
    esac
  done
  die "no snapshot of this hook at $snapshot"
}

case "${1:-}" in
  create) [ $# -eq 2 ] || die "usage: $0 create PATH"; create "$2" ;;
  remove) [ $# -eq 3 ] || die "usage: $0 remove PATH SNAPSHOT"; remove "$2" "$3" ;;
  *) die "usage: $0 create PATH | remove PATH SNAPSHOT" ;;
esac
