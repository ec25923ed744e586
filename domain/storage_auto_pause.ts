/**
 * Storage auto-pause and auto-resume (DESIGN.md invariant 8): when a storage target reaches critical
 * capacity every running policy writing to it is paused with `pausedReason = "storage_critical"`, and when
 * the target is healthy again exactly those policies resume. Called by storage.ts after a capacity report
 * changed a target's health; each policy's change is checked against the target's health in its own write,
 * with its audit entry.
 */

import { appendAudit } from "./audit.ts";
import { policyKey } from "./keys/policies.ts";
import { withRetry } from "./kv.ts";
import { listPoliciesByTarget, type PolicyCore } from "./policies.ts";
import { systemActor } from "./rbac.ts";
import { CommitConflictError } from "./retry.ts";
import { targetKey } from "./storage_keys.ts";

/** What the pause needs of a target: its health, read in the same write as each policy. */
interface TargetHealth {
  health: string;
}

async function setPaused(
  kv: Deno.Kv,
  targetId: string,
  pause: boolean,
  now: Date,
): Promise<string[]> {
  const changed: string[] = [];
  const actor = systemActor("storage-health");
  for (const policy of await listPoliciesByTarget(kv, targetId)) {
    // "stop": the target's health changed meanwhile, so this follow-up is overtaken for every policy.
    const attempt = async (): Promise<{ value: "stop" | "next" } | null> => {
      const [entry, targetEntry] = await kv.getMany<[PolicyCore, TargetHealth]>([
        policyKey(policy.id),
        targetKey(targetId),
      ]);
      const p = entry.value;
      // The target as it is now decides, checked in the write: the follow-up of a report that a later
      // one already overtook (critical, then healthy) must not pause after the resume, or the reverse.
      const health = targetEntry.value?.health;
      if (pause ? health !== "critical" : health !== "healthy") return { value: "stop" };
      if (!p || p.targetId !== targetId) return { value: "next" };
      // Pause only running policies; resume only what this rule paused. Disabled stays disabled.
      if (pause ? p.pausedReason !== null : p.pausedReason !== "storage_critical") return { value: "next" };
      const next: PolicyCore = {
        ...p,
        pausedReason: pause ? "storage_critical" : null,
        updatedAt: now.toISOString(),
      };
      const op = kv.atomic().check(entry, targetEntry).set(policyKey(p.id), next);
      appendAudit(op, actor, {
        accountId: p.accountId,
        orgId: p.orgId,
        action: pause ? "policy.auto_pause" : "policy.auto_resume",
        objectType: "policy",
        objectId: p.id,
        summary: pause
          ? `Paused policy ${p.name}: its storage target reached critical capacity`
          : `Resumed policy ${p.name}: its storage target is healthy again`,
      }, now);
      if (!(await op.commit()).ok) return null;
      changed.push(p.id);
      return { value: "next" };
    };
    try {
      if (await withRetry(attempt, 5) === "stop") return changed;
    } catch (error) {
      // Giving up on this policy is deliberate, not a dropped change: every capacity report of a critical
      // (healthy) target pauses (resumes) its policies again, so the next report finishes what five lost
      // races left, and the report that triggered this has already committed (throwing would fail it).
      if (!(error instanceof CommitConflictError)) throw error;
    }
  }
  return changed;
}

/** Pauses every policy on the target with `paused_reason = storage_critical`. Returns their ids. */
export async function pausePoliciesForStorage(kv: Deno.Kv, targetId: string, now: Date): Promise<string[]> {
  return await setPaused(kv, targetId, true, now);
}

/** Resumes exactly the policies paused for storage_critical on the target. Returns their ids. */
export async function resumePoliciesForStorage(kv: Deno.Kv, targetId: string, now: Date): Promise<string[]> {
  return await setPaused(kv, targetId, false, now);
}
