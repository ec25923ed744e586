/** The KV keys of approvals (no imports). */

export function fourEyesSettingsKey(accountId: string) {
  return ["four_eyes_settings", accountId] as const;
}

export function approvalKey(id: string) {
  return ["approval_requests", id] as const;
}

export function approvalsByAccountKey(accountId: string, id: string) {
  return ["approval_requests_by_account", accountId, id] as const;
}

/** Requests not settled yet (pending or executing): what the expiry job scans. */
export function openApprovalKey(id: string) {
  return ["approval_requests_open", id] as const;
}

/** An account's requests (`approvalsByAccountKey`), every open request (`openApprovalKey`). */
export function approvalsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["approval_requests_by_account", accountId];
}
export function openApprovalsPrefix(): Deno.KvKey {
  return ["approval_requests_open"];
}
