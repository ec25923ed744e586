/**
 * What a record about one host's backups under one policy carries to name them (anomalies, drill runs,
 * proven restores): the scope it belongs to, and the policy's and host's ids with their names as they
 * were when written.
 */
export interface PolicyHostRecord {
  accountId: string;
  orgId: string | null;
  policyId: string;
  policyName: string;
  hostId: string;
  hostName: string;
}
