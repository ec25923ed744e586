/**
 * Read models of the policy pages: everything the policy page (`getPolicyDetail`) and the policy form
 * (`getPolicyEdit`) show, read in one call and returned as plain data. The routes render it with
 * components that take props only (routes → read model → components; see the README's Architecture).
 */
import { listAssignableHosts, listAssignmentsByPolicy, requireAssignment } from "../assignments.ts";
import { type Engine, EngineFilter, listEngines } from "../engines.ts";
import { listHooksByPolicy } from "../hooks.ts";
import { hostnamesById } from "../hosts.ts";
import { listPolicies, type Policy, requirePolicy } from "../policies.ts";
import { type Actor, can } from "../rbac.ts";
import { evaluatePolicy321, listRecentReplications, listReplicasByPolicy } from "../replicas.ts";
import { RetentionCountsQuery } from "../retention.ts";
import { readRunNowState } from "../run_now.ts";
import { listRunsByPolicy } from "../runs.ts";
import { pointsByObject } from "../restore_points.ts";
import { previewPolicyRetention } from "../retention_apply.ts";
import { listScripts, type Script } from "../scripts.ts";
import { listTargets, type StorageTarget, TargetFilter } from "../storage.ts";

/** The BES and storage targets a policy form offers (those the actor may manage). */
export interface PolicyChoices {
  engines: Engine[];
  targets: StorageTarget[];
}

export async function getPolicyChoices(kv: Deno.Kv, actor: Actor): Promise<PolicyChoices> {
  const [engines, targets] = await Promise.all([
    listEngines(kv, actor, EngineFilter.parse({ limit: 200 })),
    listTargets(kv, actor, TargetFilter.parse({ limit: 200 })),
  ]);
  const usable = engines.values.filter((e) =>
    e.status !== "deleting" && can(actor, "backup.manage", { accountId: e.accountId, orgId: e.orgId })
  );
  return { engines: usable, targets: targets.values.filter((t) => usable.some((e) => e.id === t.besId)) };
}

/** "7. App Hooks" of the policy form: the hooks in execution order and the scripts of the policy's org. */
export interface PolicyHooks {
  manage: boolean;
  hooks: Awaited<ReturnType<typeof listHooksByPolicy>>;
  scripts: Script[];
}

export async function getPolicyHooks(kv: Deno.Kv, actor: Actor, policy: Policy): Promise<PolicyHooks> {
  const manage = can(actor, "backup.manage", { accountId: policy.accountId, orgId: policy.orgId });
  const [hooks, scripts] = await Promise.all([
    listHooksByPolicy(kv, actor, policy.id),
    listScripts(kv, actor),
  ]);
  return {
    manage,
    hooks,
    scripts: scripts.filter((s) => s.accountId === policy.accountId && s.orgId === policy.orgId),
  };
}

/** The policy form (new: `policy` null; edit: with its hooks section). */
export interface PolicyEdit {
  choices: PolicyChoices;
  hooks: PolicyHooks | null;
}

export async function getPolicyEdit(
  kv: Deno.Kv,
  actor: Actor,
  params: { policy: Policy | null },
  _now: Date,
): Promise<PolicyEdit> {
  const [choices, hooks] = await Promise.all([
    getPolicyChoices(kv, actor),
    params.policy ? getPolicyHooks(kv, actor, params.policy) : Promise.resolve(null),
  ]);
  return { choices, hooks };
}

/** The Run now panel: null when the actor may not run the policy (the panel says so). */
export type RunNowData = Awaited<ReturnType<typeof readRunNowState>> | null;

export interface PolicyRuns {
  manage: boolean;
  runs: Awaited<ReturnType<typeof listRunsByPolicy>>;
  hostNames: Map<string, string>;
  /** The newest run of each host (the only one offered a Retry). */
  latest: Set<string>;
}

export interface PolicyRetention {
  counts: { daily: number; weekly: number; monthly: number };
  /** The query's counts differ from the saved ones. */
  proposed: boolean;
  error: string | null;
  /** Per protected object (host id, or "bes"), sorted by host name. */
  objects: [string, Awaited<ReturnType<typeof pointsByObject>> extends Map<string, infer P> ? P : never][];
  previews: Awaited<ReturnType<typeof previewPolicyRetention>>;
  hostNames: Map<string, string>;
}

export interface PolicyHosts {
  manage: boolean;
  rows: Awaited<ReturnType<typeof listAssignmentsByPolicy>>;
  assignable: Awaited<ReturnType<typeof listAssignableHosts>>;
}

export interface PolicyReplicas {
  manage: boolean;
  rules: Awaited<ReturnType<typeof listReplicasByPolicy>>;
  recent: Awaited<ReturnType<typeof listRecentReplications>>;
  /** Targets a new rule may copy to. */
  candidates: StorageTarget[];
  threeTwoOne: Awaited<ReturnType<typeof evaluatePolicy321>>;
}

/** Everything the policy page shows below its header. */
export interface PolicyDetail {
  policy: Policy;
  canManage: boolean;
  choices: PolicyChoices;
  runNow: RunNowData;
  runs: PolicyRuns;
  retention: PolicyRetention;
  hosts: PolicyHosts;
  replicas: PolicyReplicas;
  hooks: Awaited<ReturnType<typeof listHooksByPolicy>>;
}

/** The policy page; `query` carries the retention preview's proposed counts (`daily`, `weekly`, `monthly`). */
export async function getPolicyDetail(
  kv: Deno.Kv,
  actor: Actor,
  params: { policy: Policy; query: Record<string, string | undefined> },
  now: Date,
): Promise<PolicyDetail> {
  const { policy } = params;
  const canManage = can(actor, "backup.manage", { accountId: policy.accountId, orgId: policy.orgId });
  const [choices, runNow, runs, retention, hosts, replicas, hooks] = await Promise.all([
    getPolicyChoices(kv, actor),
    canManage ? readRunNowState(kv, policy, now) : Promise.resolve(null),
    readRuns(kv, policy, canManage),
    readRetention(kv, policy, params.query),
    readHosts(kv, actor, policy, canManage),
    readReplicas(kv, actor, policy, canManage, now),
    listHooksByPolicy(kv, actor, policy.id),
  ]);
  return { policy, canManage, choices, runNow, runs, retention, hosts, replicas, hooks };
}

async function readRuns(kv: Deno.Kv, policy: Policy, manage: boolean): Promise<PolicyRuns> {
  const runs = await listRunsByPolicy(kv, policy.id, 30);
  const hostNames = await hostnamesById(kv, runs.map((r) => r.hostId));
  const latest = new Set<string>();
  const seen = new Set<string>();
  for (const r of runs) if (!seen.has(r.hostId ?? "")) seen.add(r.hostId ?? ""), latest.add(r.id);
  return { manage, runs, hostNames, latest };
}

async function readRetention(
  kv: Deno.Kv,
  policy: Policy,
  query: Record<string, string | undefined>,
): Promise<PolicyRetention> {
  const current = {
    daily: policy.retentionDaily,
    weekly: policy.retentionWeekly,
    monthly: policy.retentionMonthly,
  };
  const asked = query.daily !== undefined || query.weekly !== undefined || query.monthly !== undefined;
  const parsed = asked ? RetentionCountsQuery.safeParse({ ...current, ...query }) : null;
  const error = parsed && !parsed.success ? parsed.error.issues.map((i) => i.message).join("; ") : null;
  const counts = parsed?.success ? parsed.data : current;
  const proposed = !!parsed?.success &&
    (counts.daily !== current.daily || counts.weekly !== current.weekly ||
      counts.monthly !== current.monthly);
  const groups = await pointsByObject(kv, policy.id);
  const previews = await previewPolicyRetention(kv, policy, counts, groups);
  const hostNames = await hostnamesById(kv, [...groups.keys()].filter((k) => k !== "bes"));
  const objects = [...groups.entries()].sort(([a], [b]) =>
    (hostNames.get(a) ?? a).localeCompare(hostNames.get(b) ?? b)
  );
  return { counts, proposed, error, objects, previews, hostNames };
}

async function readHosts(kv: Deno.Kv, actor: Actor, policy: Policy, manage: boolean): Promise<PolicyHosts> {
  const [rows, assignable] = await Promise.all([
    listAssignmentsByPolicy(kv, actor, policy.id),
    manage ? listAssignableHosts(kv, actor, policy.id) : Promise.resolve([]),
  ]);
  return { manage, rows, assignable };
}

async function readReplicas(
  kv: Deno.Kv,
  actor: Actor,
  policy: Policy,
  manage: boolean,
  now: Date,
): Promise<PolicyReplicas> {
  const [rules, targets] = await Promise.all([
    listReplicasByPolicy(kv, actor, policy.id),
    listTargets(kv, actor, TargetFilter.parse({ limit: 200 })),
  ]);
  const [recent, threeTwoOne] = await Promise.all([
    listRecentReplications(kv, actor, rules, now, { limit: 10 }),
    evaluatePolicy321(kv, actor, policy.id),
  ]);
  const candidates = targets.values.filter((t) =>
    t.id !== policy.targetId && !rules.some((r) => r.targetId === t.id)
  );
  return { manage, rules, recent, candidates, threeTwoOne };
}

/** Backup > Policies: every policy the actor sees, with the names of their engines and targets. */
export async function getPolicyList(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const [policies, engines, targets] = await Promise.all([
    listPolicies(kv, actor),
    listEngines(kv, actor, EngineFilter.parse({ limit: 200 })),
    listTargets(kv, actor, TargetFilter.parse({ limit: 200 })),
  ]);
  return {
    policies,
    engineName: new Map(engines.values.map((e) => [e.id, e.name])),
    targetName: new Map(targets.values.map((t) => [t.id, t.name])),
  };
}

/** The confirmation of removing a host from a policy: the assignment, its host and its policy. */
export async function getAssignmentRemove(
  kv: Deno.Kv,
  actor: Actor,
  params: { assignmentId: string },
  _now: Date,
) {
  const { assignment, host } = await requireAssignment(kv, actor, params.assignmentId);
  const policy = await requirePolicy(kv, actor, assignment.policyId);
  return { assignment, host, policy };
}
