/**
 * Minute job: four-eyes requests past their time limit become `expired` (nothing runs), and one stuck
 * `executing` after a crash becomes `interrupted` (approvals.ts `expireApprovalRequests`).
 */
import { expireApprovalRequests } from "../domain/approvals.ts";

export async function expireApprovals(kv: Deno.Kv, now: Date) {
  return await expireApprovalRequests(kv, now);
}
