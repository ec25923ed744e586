/**
 * Run now (guide, Permissions Reference: backup.manage "run-now"): an operator starts a policy outside
 * its schedules. A full or incremental goes to every active host of the policy (or the hosts chosen); a
 * synthetic full is one job on the policy's BES per active host, each naming the host (its namespace) —
 * the jobs the scheduler would queue (same payload builder, same offline handling), with trigger `manual`. Refused, with the reason, while the policy is disabled or
 * paused, its BES is offline, or a run of the policy is already pending or running on one of those hosts.
 * Up to RUN_NOW_MAX_HOSTS hosts (fewer for large payloads), all or nothing: the runs, their jobs and the
 * audit entry commit in one atomic operation. More active hosts than one write takes are written in several
 * writes in host order, each with its runs, jobs and audit entry, while the policy's guard is marked
 * `writing` so another run now of it is refused; a later write refused because the policy or BES changed
 * stops there, and the runs of the earlier writes stay started (the message says how many).
 */
import { z } from "zod";
import { appendAudit, auditTarget } from "./audit.ts";
import { type Assignment, assignmentByPolicyKey, assignmentKey } from "./assignments.ts";
import { type Engine, engineKey, engineOnlineAt } from "./engines.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Host, hostKey } from "./hosts.ts";
import type { Job } from "./job_queue.ts";
import { type ActiveHost, activeHostsOf } from "./job_views.ts";
import { batchesOf, DISPATCH_MAX_HOSTS, dispatcher, dispatchPayload, hostsPerWrite } from "./dispatch.ts";
import { hostsNeedingFull } from "./repositories.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { type Policy, policyKey, requirePolicy } from "./policies.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { catchUpRunWithJob, offlineAlertId, splitOpenRuns } from "./run_lifecycle.ts";
import { isOpenRun, type Run, type RunKind } from "./runs.ts";
import { runKey, runNowGuardKey, runsOpenPrefix } from "./keys/runs.ts";
import { type StorageTarget, targetKey } from "./storage.ts";

export const RUN_NOW_KINDS = ["full", "incremental", "synthetic_full"] as const satisfies readonly RunKind[];
export const RUN_NOW_KIND_LABELS: Record<RunKind, string> = {
  full: "Full",
  incremental: "Incremental",
  synthetic_full: "Synthetic full (on the BES)",
};

/** Hosts one request may name, and one run-now write takes at most (the shared dispatch's limit). */
export const RUN_NOW_MAX_HOSTS = DISPATCH_MAX_HOSTS;
/** How long a run now's `writing` mark holds off another (it may have died part-way). */
const WRITING_HOLD_MS = 60_000;
/** Attempts when a racing run-now or policy change invalidates what was read. */
const ATTEMPTS = 5;

/** The request of a run now (the form, the JSON API and the domain). */
export const RunNowInput = z.object({
  kind: z.enum(RUN_NOW_KINDS, { error: "must be full, incremental or synthetic_full" }),
  hostIds: z.array(z.string().regex(/^[0-9A-Z]{26}$/, "must be host ids"), {
    error: "must be a list of host ids",
  })
    .min(1, "must name at least one host (leave it out to run on every active host)")
    .max(RUN_NOW_MAX_HOSTS, `must name at most ${RUN_NOW_MAX_HOSTS} hosts`)
    .transform((ids) => [...new Set(ids)])
    .optional(),
}).refine((v) => !(v.kind === "synthetic_full" && v.hostIds), {
  path: ["hostIds"],
  message: "must be left out for a synthetic full, which runs on the BES for every active host",
});
export type RunNowInput = z.input<typeof RunNowInput>;

/** What decides whether a policy may run now, before its hosts are looked at. */
interface RunNowFacts {
  policy: Pick<Policy, "name" | "enabled" | "pausedReason">;
  engine: Pick<Engine, "name" | "status" | "lastHeartbeatAt"> | null;
  /** Online means a heartbeat within 3 minutes of `now`. */
  now: Date;
}

/** Why the policy cannot run now, in words for the operator; null when it may. */
export function runNowBlockedReason(facts: RunNowFacts): string | null {
  const { policy, engine } = facts;
  if (!policy.enabled) return `Policy ${policy.name} is disabled: enable it to run it.`;
  if (policy.pausedReason === "storage_critical") {
    return `Policy ${policy.name} is paused (storage_critical): its storage target is at critical capacity. ` +
      "It resumes by itself when the target is healthy again.";
  }
  if (policy.pausedReason) return `Policy ${policy.name} is paused (${policy.pausedReason}).`;
  if (!engine) return `The BES of policy ${policy.name} is gone.`;
  if (engine.status === "deleting") return `BES ${engine.name} is being deleted.`;
  if (!engineOnlineAt(engine, facts.now)) {
    const last = engine.lastHeartbeatAt ? `last heartbeat ${engine.lastHeartbeatAt}` : "no heartbeat yet";
    return `BES ${engine.name} is offline (${last}).`;
  }
  return null;
}

/** Hosts the policy page offers to pick from (a request names at most RUN_NOW_MAX_HOSTS). */
const PAGE_HOSTS = 200;

/**
 * What the policy page's Run now form needs: why the policy cannot run now (null when it can) and its
 * active hosts to pick from (at most PAGE_HOSTS; `moreHosts` when there are more).
 */
export async function readRunNowState(
  kv: Deno.Kv,
  policy: Policy,
  now: Date,
): Promise<{ blockedReason: string | null; hosts: ActiveHost[]; moreHosts: boolean }> {
  const [engine, hosts] = await Promise.all([
    kv.get<Engine>(engineKey(policy.besId)),
    activeHostsOf(kv, policy.id, { limit: PAGE_HOSTS + 1 }),
  ]);
  return {
    blockedReason: runNowBlockedReason({ policy, engine: engine.value, now }),
    hosts: hosts.slice(0, PAGE_HOSTS),
    moreHosts: hosts.length > PAGE_HOSTS,
  };
}

/** A run that run now created, with the host it is for (a synthetic full runs on the BES for it). */
export interface RunNowRun {
  run: Run;
  hostname: string | null;
}

/** What a policy's run-now guard holds: when it was last written, and whether a run now is mid-way. */
interface RunNowGuard {
  at: string;
  /** Set while a run now writes its runs in several atomic operations (more hosts than one takes). */
  writing?: boolean;
}

/** True while the guard's `writing` mark holds at `now`: set, and written less than WRITING_HOLD_MS ago. */
function stillWriting(guard: RunNowGuard | null, now: Date): boolean {
  if (!guard?.writing) return false;
  return now.getTime() - Date.parse(guard.at) < WRITING_HOLD_MS;
}

/**
 * Starts a policy now: one run per target host (a synthetic full: one per active host, run on the BES),
 * trigger `manual`, each with its job built like the scheduler's; an offline agent gets the run the
 * scheduler would give it (waiting for the agent with catch-up on, otherwise skipped), linked to the
 * host's offline alert — except for a synthetic full, which needs the BES only.
 *
 * Throws NotFoundError outside the actor's scope, ForbiddenError without backup.manage, ValidationError
 * (422) for a chosen host that is not an active host of the policy, ConflictError (409, the message says
 * why) when the policy is disabled or paused, its BES is offline, being deleted or gone, it has no active
 * host, or a run of it is already pending or running on a target host. Every write checks the policy,
 * its BES (a delete marking it `deleting` meanwhile makes the write fail and the re-read refuse) and the
 * policy's run-now guard, so two racing calls cannot both start a run for one host.
 *
 * More hosts than one atomic write takes (RUN_NOW_MAX_HOSTS, fewer for a large payload; `perWrite` for
 * tests) are written in several writes, in host order, each with its runs, jobs and audit entry. The
 * first marks the guard `writing` (another run now of the policy is refused meanwhile; the mark holds a
 * minute from its `at` should the process die part-way — KV's lazy expiry decides nothing), the last clears it. A later write that cannot commit
 * (the policy was disabled or paused, the BES went offline) stops there: the error names how many runs
 * had started.
 */
export async function runPolicyNow(
  kv: Deno.Kv,
  actor: Actor,
  policyId: string,
  input: RunNowInput,
  now: Date,
  options: { perWrite?: number } = {},
): Promise<RunNowRun[]> {
  const visible = await requirePolicy(kv, actor, policyId);
  authorize(actor, "backup.manage", { accountId: visible.accountId, orgId: visible.orgId });
  const data = RunNowInput.parse(input);
  const attempt = async (): Promise<{ value: RunNowRun[] } | null> => {
    const [policyEntry, guard] = await kv.getMany<[Policy, RunNowGuard]>([
      policyKey(policyId),
      runNowGuardKey(policyId),
    ]);
    const policy = policyEntry.value;
    if (!policy) throw new NotFoundError("Policy not found");
    if (stillWriting(guard.value, now)) {
      throw new ConflictError(
        `Another run now of policy ${policy.name} is still starting its runs: try again in a moment.`,
      );
    }
    const [engineEntry, targetEntry] = await kv.getMany<[Engine, StorageTarget]>([
      engineKey(policy.besId),
      targetKey(policy.targetId),
    ]);
    const engine = engineEntry.value;
    const blocked = runNowBlockedReason({ policy, engine, now });
    if (blocked || !engine) throw new ConflictError(blocked ?? "The BES is gone");
    const target = targetEntry.value;
    if (!target) throw new ConflictError(`The storage target of policy ${policy.name} is gone.`);

    // A synthetic full too is one job per host: a repository's data is per host namespace (ENGINE.md §3).
    const hosts: ActiveHost[] = await targetHosts(kv, actor, policy, data.hostIds, data.kind);
    const ended = await refuseOpenRuns(kv, policy, data.kind, hosts);

    const payload = await dispatchPayload(kv, policy, engine, target, data.kind);
    const batches = batchesOf(hosts, options.perWrite ?? hostsPerWrite(payload));
    const offline = data.kind === "synthetic_full" ? [] : hosts.filter((h) => h.status === "offline");
    const alerts = new Map(
      await Promise.all(offline.map(async (h) => [h.id, await offlineAlertId(kv, "host", h.id)] as const)),
    );
    // An offline agent gets the run the scheduler would give it, linked to its offline alert.
    const dispatch = dispatcher({
      policy,
      kind: data.kind,
      payload,
      besId: engine.id,
      trigger: "manual",
      offline: { alerts },
      needsFull: await hostsNeedingFull(
        kv,
        policy,
        data.kind === "incremental" ? hosts.map((h) => h.id) : [],
      ),
    });
    const write = (
      entries: { policy: Deno.KvEntryMaybe<Policy>; engine: Deno.KvEntryMaybe<Engine> },
      guardStamp: string | null,
      index: number,
    ) => {
      const op = kv.atomic()
        .check(entries.policy)
        .check(entries.engine)
        .check({ key: runNowGuardKey(policyId), versionstamp: guardStamp })
        .set(
          runNowGuardKey(policyId),
          {
            at: now.toISOString(),
            ...(index < batches.length - 1 ? { writing: true } : {}),
          } satisfies RunNowGuard,
          // Only tidies the key away; whether the mark still holds is decided by its `at` (`stillWriting`).
          { expireIn: WRITING_HOLD_MS },
        );
      const created: RunNowRun[] = batches[index].map((host) => ({
        run: dispatch(op, host, now),
        hostname: host?.hostname ?? null,
      }));
      const part = batches.length > 1
        ? `; write ${index + 1} of ${batches.length}, ${hosts.length} hosts in all`
        : "";
      appendAudit(op, actor, {
        ...auditTarget("policy", policy),
        action: "policy.run_now",
        summary: data.kind === "synthetic_full"
          ? `Ran policy ${policy.name} now: ${created.length} synthetic full${
            created.length === 1 ? "" : "s"
          } on BES ${engine.name} (${namesOf(created.map((c) => c.hostname ?? ""))}${part})`
          : `Ran policy ${policy.name} now: ${created.length} ${data.kind} run${
            created.length === 1 ? "" : "s"
          } (${namesOf(created.map((c) => c.hostname ?? ""))}${part})`,
      }, now);
      return { op, created };
    };
    const first = write({ policy: policyEntry, engine: engineEntry }, guard.versionstamp, 0);
    const committed = await first.op.commit();
    if (!committed.ok) return null;
    const created = [...first.created];
    let stamp = committed.versionstamp;
    for (let index = 1; index < batches.length; index++) {
      stamp = await writeLaterBatch(kv, policyId, now, stamp, created.length, (entries, guardStamp) => {
        const w = write(entries, guardStamp, index);
        return { op: w.op, created: w.created, add: () => created.push(...w.created) };
      });
    }
    // Runs passed over because their job had ended are brought up to it now rather than at the next sweep.
    for (const job of ended) await catchUpRunWithJob(kv, job, now);
    return { value: created };
  };
  return await withRetry(
    attempt,
    ATTEMPTS,
    "The policy or its BES changed, or the policy was run by someone else meanwhile; try again",
  );
}

/**
 * Commits one later write of a run now that spans several, re-reading the policy and its BES when a
 * write fails (a heartbeat changed the BES entry): refused when either now blocks it or the guard is no
 * longer the one this run now wrote. Returns the guard's new versionstamp.
 */
async function writeLaterBatch(
  kv: Deno.Kv,
  policyId: string,
  now: Date,
  guardStamp: string,
  started: number,
  build: (
    entries: { policy: Deno.KvEntryMaybe<Policy>; engine: Deno.KvEntryMaybe<Engine> },
    guardStamp: string,
  ) => { op: Deno.AtomicOperation; add: () => void },
): Promise<string> {
  const attempt = async (): Promise<{ value: string } | null> => {
    const [policyEntry, guard] = await kv.getMany<[Policy, RunNowGuard]>([
      policyKey(policyId),
      runNowGuardKey(policyId),
    ]);
    const policy = policyEntry.value;
    const engineEntry = policy ? await kv.get<Engine>(engineKey(policy.besId)) : null;
    const blocked = !policy || !engineEntry
      ? "The policy is gone."
      : guard.versionstamp !== guardStamp
      ? "Another change of the policy's runs came in between."
      : runNowBlockedReason({ policy, engine: engineEntry.value, now });
    if (blocked || !engineEntry?.value) {
      throw new ConflictError(
        `Run now stopped after starting ${started} run${started === 1 ? "" : "s"}: ${blocked ?? "BES gone."}`,
      );
    }
    const { op, add } = build({ policy: policyEntry, engine: engineEntry }, guardStamp);
    const result = await op.commit();
    if (!result.ok) return null;
    add();
    return { value: result.versionstamp };
  };
  return await withRetry(
    attempt,
    ATTEMPTS * 2,
    `Run now stopped after starting ${started} runs: the policy kept changing; try again.`,
  );
}

/** The hosts a run now goes to: the chosen ones, each an active host of the policy, or all active. */
async function targetHosts(
  kv: Deno.Kv,
  actor: Actor,
  policy: Policy,
  hostIds: string[] | undefined,
  kind: RunKind,
): Promise<ActiveHost[]> {
  const active = await activeHostsOf(kv, policy.id);
  if (!hostIds) {
    if (!active.length) {
      throw new ConflictError(
        `Policy ${policy.name} has no active host to ${
          kind === "synthetic_full" ? "make a synthetic full of" : "back up"
        }: assign a host first.`,
      );
    }
    return active;
  }
  const byId = new Map(active.map((h) => [h.id, h]));
  const missing = hostIds.filter((id) => !byId.has(id));
  if (missing.length) {
    const id = missing[0];
    const pointer = (await kv.get<string>(assignmentByPolicyKey(policy.id, id))).value;
    const [assignment, host] = await Promise.all([
      pointer ? kv.get<Assignment>(assignmentKey(pointer)).then((e) => e.value) : null,
      kv.get<Host>(hostKey(id)).then((e) => e.value),
    ]);
    // A host outside the actor's scope is named by the id it was given, never by its name.
    const name = host && inScope(actor, host) ? host.hostname : id;
    const message = assignment && host
      ? `Host ${name} is ${assignment.state} on this policy, not active`
      : `Host ${name} is not assigned to this policy`;
    throw new ValidationError(message, { hostIds: message });
  }
  return hostIds.map((id) => byId.get(id)!);
}

/**
 * Refuses (409) when a run of the policy is pending or running on any of `hosts` (null: the BES): one
 * list of the policy's open-run index, kept to the target hosts, each entry confirmed against its run. A
 * run whose job already ended (or is gone) does not count: a process stopped between the job's end and
 * its run's update. Only filters; the minute sweep (`sweepOpenRuns`) repairs such runs, and the jobs of
 * those passed over are returned for the caller to hand over too.
 */
async function refuseOpenRuns(
  kv: Deno.Kv,
  policy: Policy,
  kind: RunKind,
  hosts: ActiveHost[],
): Promise<Job[]> {
  // "bes": a synthetic full from before they ran per host (no hostId) still holds off another.
  const wanted = new Set([...hosts.map((h) => h.id), ...(kind === "synthetic_full" ? ["bes"] : [])]);
  const runIds: string[] = [];
  for await (const e of kv.list<string>({ prefix: runsOpenPrefix(policy.id) }, { batchSize: 500 })) {
    if (wanted.has(String(e.key[2]))) runIds.push(e.value);
  }
  if (!runIds.length) return [];
  const listed = (await getManyValues<Run>(kv, runIds.map((id) => runKey(id)))).filter(isOpenRun);
  const { open, ended } = await splitOpenRuns(kv, listed);
  if (!open.length) return ended;
  const names = new Map<string | undefined, string>(hosts.map((h) => [h.id, h.hostname]));
  const busy = [...new Set(open.map((r) => names.get(r.hostId ?? undefined) ?? r.hostId ?? "its BES"))];
  const first = open[0];
  if (first.kind === "synthetic_full" && busy.length === 1) {
    const on = first.hostId ? `on its BES for ${busy[0]}` : "on its BES";
    throw new ConflictError(
      `A synthetic full of policy ${policy.name} is already ${first.status} ${on} (run ${first.id}): ` +
        "wait for it to finish.",
    );
  }
  const what = `${first.kind === "incremental" ? "An" : "A"} ${first.kind} run of policy ${policy.name}`;
  throw new ConflictError(
    busy.length === 1
      ? `${what} is already ${first.status} on ${busy[0]} (run ${first.id}): wait for it to finish.`
      : `Runs of policy ${policy.name} are already pending or running on ${namesOf(busy)}: ` +
        "wait for them to finish, or choose other hosts.",
  );
}

/** Up to five names, then how many more. */
function namesOf(names: string[]): string {
  const shown = names.slice(0, 5).join(", ");
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}
