/**
 * The batched dispatch shared by run now (run_now.ts) and job retries (job_views.ts): one job and its run
 * per host — a backup on the host's agent, or a synthetic full of the host's namespace on the policy's BES
 * (ENGINE.md §3: a repository's data is per host) — written in atomic operations of `hostsPerWrite`
 * hosts (KV allows 1000 mutations and 800 KiB per operation). What differs between callers is a
 * parameter: the run's trigger, and whether an offline agent gets the run the scheduler would give it
 * (`offlineHostRunInOp`: waiting for the agent with catch-up on, otherwise skipped) or its job anyway.
 */
import { ConflictError } from "./errors.ts";
import { type Engine, engineKey } from "./engines.ts";
import { addQueuedJob, EnqueueInput } from "./job_queue.ts";
import type { ActiveHost } from "./job_views.ts";
import { kvValueBytes } from "./kv.ts";
import type { Policy } from "./policies.ts";
import { buildBackupPayload, syntheticFullPayload } from "./backup_payload.ts";
import { newRunInOp, type Run, type RunKind } from "./runs.ts";
import { offlineHostRunInOp } from "./run_lifecycle.ts";
import { type StorageTarget, targetKey } from "./storage.ts";
import { hostBackupPayload } from "./repositories.ts";

/**
 * Hosts per write at most: each adds up to eight mutations (job, its queue entry, the queue counter and
 * its principal's queued-jobs counter, run, its three indexes), plus a few for the write itself, within
 * KV's 1000 (tests/integration/run_now_test.ts writes 200 hosts through it).
 */
export const DISPATCH_MAX_HOSTS = 120;
/** Estimated bytes of one write at most. */
const DISPATCH_MAX_BYTES = 600_000;

/** Hosts per write for a payload: within DISPATCH_MAX_HOSTS and DISPATCH_MAX_BYTES (a job and its run ≈ payload + 2 KB). */
export function hostsPerWrite(payload: Record<string, unknown>): number {
  const bytes = kvValueBytes(payload) + 2048;
  return Math.max(1, Math.min(DISPATCH_MAX_HOSTS, Math.floor(DISPATCH_MAX_BYTES / bytes)));
}

/** Splits `items` into writes of `perWrite`. */
export function batchesOf<T>(items: T[], perWrite: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += perWrite) out.push(items.slice(i, i + perWrite));
  return out;
}

/**
 * The job payload of a dispatch of `kind` for the policy with its BES and target (each host's job adds its
 * `hostId`: a synthetic full's names the namespace the BES makes it of).
 */
export async function dispatchPayload(
  kv: Deno.Kv,
  policy: Policy,
  engine: Engine,
  target: StorageTarget,
  kind: RunKind,
): Promise<Record<string, unknown>> {
  return kind === "synthetic_full"
    ? syntheticFullPayload(policy, target)
    : await buildBackupPayload(kv, policy, engine, target, kind);
}

/** Reads the policy's BES and target and builds the payload; ConflictError when either is gone. */
export async function readDispatchPayload(
  kv: Deno.Kv,
  policy: Policy,
  kind: RunKind,
): Promise<{ payload: Record<string, unknown>; besId: string }> {
  const [engine, target] = await kv.getMany<[Engine, StorageTarget]>([
    engineKey(policy.besId),
    targetKey(policy.targetId),
  ]);
  if (!engine.value || !target.value) throw new ConflictError("The job's BES or storage target is gone");
  return {
    payload: await dispatchPayload(kv, policy, engine.value, target.value, kind),
    besId: engine.value.id,
  };
}

/** What every write of one dispatch shares. */
export interface DispatchPlan {
  policy: Policy;
  kind: RunKind;
  payload: Record<string, unknown>;
  besId: string;
  trigger: "manual" | "retry";
  /**
   * null: every host gets its job (an offline agent picks it up when it returns). Otherwise an offline
   * host gets the scheduler's offline run instead, linked to its open offline alert from `alerts`.
   */
  offline: { alerts: Map<string, string | null> } | null;
  /**
   * Hosts with no restore point in the policy's current repository generation (`hostsNeedingFull`): an
   * incremental goes to them as a full.
   */
  needsFull?: Set<string>;
}

/**
 * Validates the plan's job once (each host's job differs only in its principal and `hostId`) and returns
 * the function adding one host's job and run to a write. A synthetic full is the BES's job (principal
 * `bes:<id>`) for that host's namespace, so an offline agent does not hold it up. (null: a job with no
 * host — nothing dispatches one any more; kept for the type.)
 */
export function dispatcher(
  plan: DispatchPlan,
): (op: Deno.AtomicOperation, host: ActiveHost | null, now: Date) => Run {
  const { policy, kind, payload, besId, trigger, offline } = plan;
  const needsFull = plan.needsFull ?? new Set<string>();
  const template = EnqueueInput.parse({
    kind: kind === "synthetic_full" ? "synthetic_full" : "backup",
    principal: `bes:${besId}`,
    accountId: policy.accountId,
    orgId: policy.orgId,
    payload,
  });
  const synthetic = kind === "synthetic_full";
  return (op, host, now) => {
    const sent = !host
      ? null
      : synthetic
      ? { payload: { ...template.payload, hostId: host.id }, kind }
      : hostBackupPayload(template.payload, kind, host.id, needsFull);
    const base = {
      policyId: policy.id,
      accountId: policy.accountId,
      orgId: policy.orgId,
      kind: sent?.kind ?? kind,
      trigger,
      scheduledFor: now.toISOString(),
    };
    if (host && offline && !synthetic && host.status === "offline") {
      return offlineHostRunInOp(op, policy, base, host, offline.alerts.get(host.id) ?? null, now);
    }
    const job = addQueuedJob(
      op,
      host && sent
        ? {
          ...template,
          principal: synthetic ? template.principal : `agent:${host.id}`,
          payload: sent.payload,
        }
        : template,
      now,
      { fresh: true },
    );
    return newRunInOp(op, {
      ...base,
      hostId: host?.id ?? null,
      jobId: job.id,
      status: "pending",
      error: null,
      alertId: null,
    }, now);
  };
}
