/**
 * Pre-patch backups: an agent about to apply OS patches asks for an incremental of each active assignment
 * whose policy has `prePatchBackup` on.
 */
import { assignmentKey, assignmentsByHostPrefix, policyKey } from "./keys/policies.ts";
import { getManyValues } from "./kv.ts";
import { queueJobInOp } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import { newRunInOp, type Run } from "./runs.ts";
import { agentBackupPayload } from "./backup_payload.ts";

/**
 * Pre-patch backup: an agent about to apply OS patches asks for an incremental of every active
 * assignment whose policy has `prePatchBackup` on. Returns the runs created.
 */
export async function requestPrePatch(kv: Deno.Kv, hostId: string, now: Date): Promise<Run[]> {
  const created: Run[] = [];
  const ids: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: assignmentsByHostPrefix(hostId) })) {
    ids.push(assignmentKey(e.value));
  }
  for (const a of await getManyValues<{ policyId: string; state: string }>(kv, ids)) {
    if (a.state !== "active") continue;
    const policy = (await kv.get<Policy>(policyKey(a.policyId))).value;
    if (!policy?.prePatchBackup || !policy.enabled || policy.pausedReason) continue;
    const sent = await agentBackupPayload(kv, policy, "incremental", hostId);
    if (!sent) continue;
    // The job and its run in one write, as the scheduler does.
    const op = kv.atomic();
    const job = queueJobInOp(op, {
      kind: "backup",
      principal: `agent:${hostId}`,
      accountId: policy.accountId,
      orgId: policy.orgId,
      priority: "high",
      payload: sent.payload,
    }, now);
    const run = newRunInOp(op, {
      policyId: policy.id,
      accountId: policy.accountId,
      orgId: policy.orgId,
      hostId,
      jobId: job.id,
      kind: sent.kind,
      trigger: "pre_patch",
      status: "pending",
      scheduledFor: now.toISOString(),
      error: null,
      alertId: null,
    }, now);
    if ((await op.commit()).ok) created.push(run);
  }
  return created;
}
