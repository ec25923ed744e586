/**
 * The storage target types and their labels, in a module of their own (no imports), so that replicas can
 * name a target's type without importing storage.ts (storage → policies → replicas would close a cycle).
 */
export const TARGET_TYPES = ["s3", "s3_compatible", "smb", "nfs", "iscsi", "local"] as const;
export type TargetType = (typeof TARGET_TYPES)[number];
export const TARGET_TYPE_LABELS: Record<TargetType, string> = {
  s3: "S3",
  s3_compatible: "S3 Compatible",
  smb: "SMB",
  nfs: "NFS",
  iscsi: "iSCSI",
  local: "Local",
};
