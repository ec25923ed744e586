/**
 * The scheduler (issue 5, core loop): the minute tick evaluates each enabled, unpaused policy's full /
 * incremental / synthetic-full schedules and dispatches — backup jobs to the agent of every active
 * assignment, synthetic fulls to the BES — recording one run per job, and dispatches the runs deferred
 * for an offline agent once it is back (catch-up on reconnect). The tick is idempotent: each (policy,
 * schedule, minute) is claimed with an atomic check, so a second tick — in this process or another
 * instance — dispatches nothing twice.
 */
import { commitOrConflict } from "./retry.ts";
import { hostsPrefix } from "./keys/hosts.ts";
import {
  assignmentKey,
  assignmentsByPolicyPrefix,
  assignmentsPrefix,
  hooksByPolicyAllPrefix,
  policiesPrefix,
  policyKey,
} from "./keys/policies.ts";
import {
  deferredPrefix,
  runByJobKey,
  runKey,
  runsOpenKey,
  schedulerCursorKey,
  scheduleSlotKey,
} from "./keys/runs.ts";
import { compileCron } from "./cron_rules.ts";
import { ValidationError } from "./errors.ts";
import { type Engine, engineKey } from "./engines.ts";
import { getManyValues } from "./kv.ts";
import { hookPlan } from "./hooks.ts";
import { consoleBusy, giveWayToConsole } from "./foreground.ts";
import { addQueuedJob, type EnqueueData, EnqueueInput, queueJobInOp } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import { hostKey } from "./hosts.ts";
import type { Assignment } from "./assignments.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey } from "./storage_keys.ts";
import { hostBackupPayload, hostsNeedingFull } from "./repositories.ts";
import { recordOutcomeInOp } from "./job_outcomes.ts";
import { firstLine, type NewRun, newRunInOp, type Run, type RunKind } from "./runs.ts";
import { offlineAlertId, offlineHostRunInOp } from "./run_lifecycle.ts";
import { agentBackupPayload, backupPayload, syntheticFullPayload } from "./backup_payload.ts";

function slotKey(policyId: string, kind: RunKind, minute: string) {
  return scheduleSlotKey(policyId, kind, minute);
}

/** Whether a 5-field cron fires within the minute starting at `minuteStart` (in `timeZone`). */
export function firesInMinute(expression: string, minuteStart: Date, timeZone: string): boolean {
  // Policies share few distinct (expression, time zone) pairs: a tick evaluates each once per minute.
  const minute = minuteStart.getTime();
  if (firesCache.minute !== minute) firesCache.minute = minute, firesCache.results.clear();
  const key = `${timeZone}\u0000${expression}`;
  const cached = firesCache.results.get(key);
  if (cached !== undefined) return cached;
  const r = compileCron(expression, timeZone);
  const next = r.ok ? r.cron.nextRun(new Date(minute - 1)) : null;
  const fires = next !== null && next.getTime() < minute + 60_000;
  if (firesCache.results.size < 50_000) firesCache.results.set(key, fires);
  return fires;
}

const firesCache = { minute: NaN, results: new Map<string, boolean>() };

/** The schedules of a policy due in a minute, full winning over incremental in the same minute. */
export function dueKinds(
  policy: Pick<Policy, "fullSchedule" | "incrementalSchedule" | "syntheticFullSchedule" | "timeZone">,
  minuteStart: Date,
): RunKind[] {
  const tz = policy.timeZone ?? "UTC";
  const kinds: RunKind[] = [];
  const full = firesInMinute(policy.fullSchedule, minuteStart, tz);
  if (full) kinds.push("full");
  if (!full && policy.incrementalSchedule && firesInMinute(policy.incrementalSchedule, minuteStart, tz)) {
    kinds.push("incremental");
  }
  if (policy.syntheticFullSchedule && firesInMinute(policy.syntheticFullSchedule, minuteStart, tz)) {
    kinds.push("synthetic_full");
  }
  return kinds;
}

/** `run` failed at `now` before any job ran it (its payload could not be built): final, not retryable. */
function failedBeforeDispatch(run: Run, message: string, now: Date): Run {
  const at = now.toISOString();
  return {
    ...run,
    status: "failed",
    error: { reason: "PAYLOAD_TOO_LARGE", message },
    errorLine: firstLine(message),
    startedAt: at,
    endedAt: at,
    retryable: false,
    updatedAt: at,
  };
}

/**
 * A new run that failed before any job could be queued: written finished, with its outcome counted
 * like any failure (dashboard, failed queue, the object's backup-failed alert).
 */
async function recordFailedBeforeDispatch(
  kv: Deno.Kv,
  base: Omit<NewRun, "status" | "error" | "jobId" | "alertId">,
  message: string,
  now: Date,
): Promise<void> {
  const op = kv.atomic();
  const run = newRunInOp(
    op,
    { ...base, status: "pending", error: null, jobId: null, alertId: null },
    now,
    (created) => failedBeforeDispatch(created, message, now),
  );
  await recordOutcomeInOp(kv, op, "backup", run, run, now);
  await commitOrConflict(op, "Could not record the failed run; the next tick retries");
}

async function newRun(kv: Deno.Kv, base: NewRun, now: Date): Promise<Run> {
  const op = kv.atomic();
  const run = newRunInOp(op, base, now);
  await op.commit();
  return run;
}

/**
 * The minute tick. For each enabled, unpaused policy, claims each due (schedule, minute) once and
 * dispatches. An offline agent or BES gets a `skipped` run with reason ENGINE_OFFLINE linked to the
 * engine's offline alert, instead of a job that would only fail.
 *
 * So that a minute in which thousands of policies fire at once stays fast: the policies are scanned
 * (pure cron checks), then the due ones are taken SLOT_BATCH at a time — their slots claimed in one
 * write, the policies prepared DISPATCH_PARALLEL at a time (their reads overlap) — while their jobs and
 * runs stream into shared batch writes.
 */
export async function runSchedulerTick(
  kv: Deno.Kv,
  now: Date,
  options: { bulkReadMinPolicies?: number } = {},
): Promise<{ dispatched: number; skipped: number }> {
  const { minutes, cursor } = await tickMinutes(kv, now);
  const caughtUp = await catchUpDeferred(kv, now);
  const active: Policy[] = [];
  let policies = 0;
  for await (const entry of kv.list<Policy>({ prefix: policiesPrefix() }, { batchSize: 500 })) {
    policies++;
    if (entry.value.enabled && !entry.value.pausedReason) active.push(entry.value);
  }
  const due: DueSlot[] = [];
  for (const minuteStart of minutes) {
    for (const policy of active) {
      for (const kind of dueKinds(policy, minuteStart)) due.push({ policy, kind, minuteStart });
    }
  }
  const writer = new DispatchWriter(kv);
  const context = new TickContext(kv);
  // A storm — many policies, and at least a quarter of all, due in one minute — reads the assignments
  // and hosts in a few large scans instead of a few small reads per policy.
  if (due.length >= (options.bulkReadMinPolicies ?? BULK_READ_MIN_POLICIES) && due.length * 4 >= policies) {
    await context.preload(new Set(due.map((d) => d.policy.id)));
  }
  let skipped = 0;
  // Slots are claimed a batch at a time, right before that batch is dispatched: a crash mid-tick loses
  // at most the batch in hand (and the writes in flight), not every slot claimed ahead.
  for (let i = 0; i < due.length; i += SLOT_BATCH) {
    const claimed = await claimSlots(kv, due.slice(i, i + SLOT_BATCH));
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(DISPATCH_PARALLEL, claimed.length) }, async () => {
      while (next < claimed.length) {
        // A console request in flight goes first (bounded): the tick's work shares its thread.
        if (consoleBusy(kv)) await giveWayToConsole(kv, GIVE_WAY_MS);
        if (next >= claimed.length) break;
        const { policy, kind, minuteStart } = claimed[next++];
        skipped += await dispatchPolicy(kv, context, writer, policy, kind, minuteStart, now);
      }
    }));
  }
  const dispatched = await writer.close();
  // The cursor only moves forward (a late tick for an older minute leaves it; so does a racing tick that
  // moved it first: the check fails).
  const reached = minutes[minutes.length - 1];
  if (!cursor.value || Date.parse(cursor.value) < reached.getTime()) {
    await kv.atomic().check(cursor).set(schedulerCursorKey(), reached.toISOString()).commit();
  }
  return { dispatched: caughtUp + dispatched, skipped };
}

/** A (policy, schedule, minute) that is due. */
interface DueSlot {
  policy: Policy;
  kind: RunKind;
  minuteStart: Date;
}

/** How far back a tick looks for minutes no tick evaluated (a skipped cron run, a short outage). */
export const TICK_CATCH_UP_MINUTES = 10;

/**
 * The minutes this tick evaluates, oldest first: the current one, and before it every minute since the
 * last tick's, up to TICK_CATCH_UP_MINUTES back. Deno.cron skips a run while the previous one of the
 * same cron is still going, and a restart loses the minutes it was down: those schedules still run,
 * once (each slot is claimed), scheduled for their own minute. Older ones are not replayed: the RPO
 * of the objects shows the gap.
 */
async function tickMinutes(
  kv: Deno.Kv,
  now: Date,
): Promise<{ minutes: Date[]; cursor: Deno.KvEntryMaybe<string> }> {
  const current = Math.floor(now.getTime() / 60_000) * 60_000;
  const cursor = await kv.get<string>(schedulerCursorKey());
  const lastMs = cursor.value ? Date.parse(cursor.value) : NaN;
  const from = Number.isFinite(lastMs) && lastMs < current
    ? Math.max(lastMs + 60_000, current - TICK_CATCH_UP_MINUTES * 60_000)
    : current;
  const minutes: Date[] = [];
  for (let t = from; t <= current; t += 60_000) minutes.push(new Date(t));
  return { minutes, cursor };
}

/**
 * Claims due (policy, schedule, minute) slots (at most SLOT_BATCH) in one write; returns the ones this
 * tick won. When the write fails, another tick claimed one of them, and they are claimed one by one.
 */
async function claimSlots(kv: Deno.Kv, due: DueSlot[]): Promise<DueSlot[]> {
  const claimOne = (op: Deno.AtomicOperation, d: DueSlot) => {
    const key = slotKey(d.policy.id, d.kind, d.minuteStart.toISOString().slice(0, 16));
    return op.check({ key, versionstamp: null }).set(key, true, { expireIn: 2 * 86_400_000 });
  };
  const op = kv.atomic();
  for (const d of due) claimOne(op, d);
  if ((await op.commit()).ok) return due;
  const won: DueSlot[] = [];
  for (const d of due) if ((await claimOne(kv.atomic(), d).commit()).ok) won.push(d);
  return won;
}

/** Reads shared by the policies of one tick: each engine, target and hook plan is read once. */
class TickContext {
  #cache = new Map<string, Promise<unknown>>();
  /** After `preload`: the policies that have hooks, and each due policy's active hosts. */
  #withHooks: Set<string> | null = null;
  #hosts: Map<string, TickHost[]> | null = null;
  constructor(private kv: Deno.Kv) {}

  /** Scans hook pointers, assignments and hosts once for all of `policyIds`. */
  async preload(policyIds: Set<string>) {
    let scanned = 0;
    // Every 1,000 entries a console request in flight goes first (bounded), as in the dispatch.
    const giveWay = async () => {
      if (++scanned % 1000 === 0 && consoleBusy(this.kv)) await giveWayToConsole(this.kv, GIVE_WAY_MS);
    };
    const withHooks = new Set<string>();
    for await (const e of this.kv.list({ prefix: hooksByPolicyAllPrefix() }, { batchSize: 1000 })) {
      await giveWay();
      withHooks.add(String(e.key[1]));
    }
    const hostIdsByPolicy = new Map<string, string[]>();
    const needed = new Set<string>();
    for await (const e of this.kv.list<Assignment>({ prefix: assignmentsPrefix() }, { batchSize: 1000 })) {
      await giveWay();
      const a = e.value;
      if (a.state !== "active" || !policyIds.has(a.policyId)) continue;
      const list = hostIdsByPolicy.get(a.policyId);
      if (list) list.push(a.hostId);
      else hostIdsByPolicy.set(a.policyId, [a.hostId]);
      needed.add(a.hostId);
    }
    const hosts = new Map<string, TickHost>();
    for await (const e of this.kv.list<TickHost>({ prefix: hostsPrefix() }, { batchSize: 1000 })) {
      await giveWay();
      if (needed.has(e.value.id)) hosts.set(e.value.id, e.value);
    }
    this.#withHooks = withHooks;
    this.#hosts = new Map(
      [...hostIdsByPolicy].map(([policyId, ids]) => [policyId, ids.flatMap((id) => hosts.get(id) ?? [])]),
    );
  }

  #once<T>(key: string, read: () => Promise<T>): Promise<T> {
    let p = this.#cache.get(key) as Promise<T> | undefined;
    if (!p) this.#cache.set(key, p = read());
    return p;
  }
  engine(id: string) {
    return this.#once(`e:${id}`, async () => (await this.kv.get<Engine>(engineKey(id))).value);
  }
  target(id: string) {
    return this.#once(
      `t:${id}`,
      async () => (await this.kv.get<StorageTarget>(targetKey(id))).value,
    );
  }
  hooks(policyId: string) {
    if (this.#withHooks && !this.#withHooks.has(policyId)) return Promise.resolve([]);
    return this.#once(`h:${policyId}`, () => hookPlan(this.kv, policyId));
  }
  /** The hosts of a policy's active assignments. */
  async hosts(policyId: string): Promise<TickHost[]> {
    if (this.#hosts) return this.#hosts.get(policyId) ?? [];
    const assignmentIds: Deno.KvKey[] = [];
    for await (const a of this.kv.list<string>({ prefix: assignmentsByPolicyPrefix(policyId) })) {
      assignmentIds.push(assignmentKey(a.value));
    }
    const assignments = (await getManyValues<Assignment>(this.kv, assignmentIds)).filter((a) =>
      a.state === "active"
    );
    return await getManyValues(this.kv, assignments.map((a) => hostKey(a.hostId)));
  }
}

type TickHost = { id: string; status: string; hostname: string };

/**
 * Streams new jobs and runs into atomic writes of DISPATCH_BATCH jobs, DISPATCH_IN_FLIGHT at once.
 * Every key is fresh (no checks), so batches cannot conflict and their order does not matter.
 */
class DispatchWriter {
  #op: Deno.AtomicOperation;
  #size = 0;
  #bytes = 0;
  #written = 0;
  #inFlight: Promise<void>[] = [];
  constructor(private kv: Deno.Kv) {
    this.#op = kv.atomic();
  }

  /** The write to add one job (and its run) to; call `added` right after, before any await. */
  get op() {
    return this.#op;
  }

  /** Adds a host's job and its pending run to the current write; call `added` right after. */
  addRun(base: TickRunBase, job: EnqueueData, hostId: string, kind: RunKind, now: Date): void {
    const queued = addQueuedJob(this.#op, job, now, { fresh: true });
    newRunInOp(this.#op, {
      ...base,
      kind,
      hostId,
      jobId: queued.id,
      status: "pending",
      error: null,
      alertId: null,
    }, now);
  }

  async added(bytes: number) {
    this.#bytes += bytes;
    if (++this.#size >= DISPATCH_BATCH || this.#bytes > DISPATCH_BATCH_BYTES) await this.#flush();
  }

  async #flush() {
    if (this.#size) {
      const [op, size] = [this.#op, this.#size];
      const earlier = this.#inFlight.slice();
      const pending = (async () => {
        // While the console is in use, one write at a time, each after its requests (bounded): the
        // pages' reads would otherwise queue behind several large writes (domain/foreground.ts).
        if (consoleBusy(this.kv)) {
          await Promise.allSettled(earlier);
          await giveWayToConsole(this.kv, GIVE_WAY_MS);
        }
        // A failed commit here is a storage error, not a conflict: it propagates.
        if (!(await op.commit()).ok) throw new Error("Could not write a batch of scheduled jobs");
        this.#written += size;
      })();
      pending.catch(() => {}); // awaited in close(); this only keeps an early failure from being "unhandled"
      this.#inFlight.push(pending);
    }
    this.#op = this.kv.atomic();
    this.#size = 0;
    this.#bytes = 0;
    const limit = consoleBusy(this.kv) ? 1 : DISPATCH_IN_FLIGHT;
    while (this.#inFlight.length >= limit) await this.#inFlight.shift();
  }

  /** Writes what is left; returns the number of jobs written. */
  async close(): Promise<number> {
    await this.#flush();
    await Promise.all(this.#inFlight);
    return this.#written;
  }
}

/** What every run a tick dispatches for one (policy, schedule, minute) shares. */
type TickRunBase = Omit<NewRun, "kind" | "hostId" | "jobId" | "status" | "error" | "alertId">;

/** Dispatches one claimed (policy, schedule); returns the number of runs skipped or deferred. */
async function dispatchPolicy(
  kv: Deno.Kv,
  context: TickContext,
  writer: DispatchWriter,
  policy: Policy,
  kind: RunKind,
  minuteStart: Date,
  now: Date,
): Promise<number> {
  const [engine, target] = await Promise.all([context.engine(policy.besId), context.target(policy.targetId)]);
  if (!engine || !target) return 0;
  const base = {
    policyId: policy.id,
    accountId: policy.accountId,
    orgId: policy.orgId,
    kind,
    trigger: "schedule" as const,
    scheduledFor: minuteStart.toISOString(),
  };
  if (kind === "synthetic_full") {
    // One job per active host, on the BES: a repository's data is per host namespace (ENGINE.md §3), so
    // the BES makes each host's synthetic full of that host's chain with that namespace's keys. The
    // agent plays no part: an offline host still gets its job; an offline BES skips every host's run.
    const hosts = (await context.hosts(policy.id)).filter((h) => h.status !== "decommissioned");
    if (engine.status === "offline") {
      const alertId = await offlineAlertId(kv, "engine", engine.id);
      for (const host of hosts) {
        await newRun(kv, {
          ...base,
          hostId: host.id,
          jobId: null,
          status: "skipped",
          error: { reason: "ENGINE_OFFLINE", message: `BES ${engine.name} is offline` },
          alertId,
        }, now);
      }
      return hosts.length;
    }
    const template = EnqueueInput.parse({
      kind: "synthetic_full",
      principal: `bes:${engine.id}`,
      accountId: policy.accountId,
      orgId: policy.orgId,
      payload: syntheticFullPayload(policy, target),
    });
    for (const host of hosts) {
      writer.addRun(
        base,
        { ...template, payload: { ...template.payload, hostId: host.id } },
        host.id,
        kind,
        now,
      );
      await writer.added(2048);
    }
    return 0;
  }
  const [hooks, hosts] = await Promise.all([context.hooks(policy.id), context.hosts(policy.id)]);
  let payload: Record<string, unknown>;
  let bytes: number;
  try {
    ({ payload, bytes } = backupPayload(policy, engine, target, kind, hooks));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    // One policy that cannot be sent must not hold up the others: each of its hosts gets a failed run
    // that says why (and the object's backup-failed alert), and the tick goes on.
    for (const host of hosts) {
      await recordFailedBeforeDispatch(kv, { ...base, hostId: host.id }, error.message, now);
    }
    return hosts.length;
  }
  // A job and its run are about the payload's size plus 2 KB: batches stay under KV's 800 KB per write.
  const batchBytes = bytes + 2048;
  // Validated once per policy; each host's job differs only in its principal and `hostId`.
  const template = EnqueueInput.parse({
    kind: "backup",
    principal: `agent:${hosts[0]?.id ?? engine.id}`,
    accountId: policy.accountId,
    orgId: policy.orgId,
    payload,
  });
  // Hosts without a restore point in the policy's current generation back up in full (one read per
  // ten hosts, and only for incrementals of a policy past its first generation).
  const needsFull = await hostsNeedingFull(kv, policy, kind === "incremental" ? hosts.map((h) => h.id) : []);
  let skipped = 0;
  for (const host of hosts) {
    // Its assignments are archived with it; this guards the moment in between.
    if (host.status === "decommissioned") continue;
    if (host.status === "offline") {
      const op = kv.atomic();
      offlineHostRunInOp(op, policy, base, host, await offlineAlertId(kv, "host", host.id), now);
      await op.commit();
      skipped++;
      continue;
    }
    const sent = hostBackupPayload(template.payload, kind, host.id, needsFull);
    writer.addRun(
      base,
      { ...template, principal: `agent:${host.id}`, payload: sent.payload },
      host.id,
      sent.kind,
      now,
    );
    await writer.added(batchBytes);
  }
  return skipped;
}

/** Jobs (each with its run) per atomic write in the tick: 600 mutations, within KV's 1000. */
const DISPATCH_BATCH = 100;

/** Estimated bytes per batch write (KV allows 800 KB of mutations per atomic operation). */
const DISPATCH_BATCH_BYTES = 500_000;

/** Batch writes of one tick in flight at once. */
const DISPATCH_IN_FLIGHT = 4;

/** Claimed policies of one tick prepared at once (their reads overlap). */
const DISPATCH_PARALLEL = 16;

/** The longest a storm's write waits for the console's requests to finish (domain/foreground.ts). */
const GIVE_WAY_MS = 20;

/** Slot claims per atomic write (KV allows 100 checks per write). */
const SLOT_BATCH = 100;

/** From this many policies due in one tick on (and a quarter of all), the tick scans assignments and hosts whole. */
const BULK_READ_MIN_POLICIES = 500;

/**
 * Catch-up on reconnect: for every host that is online again, the newest deferred run of each policy
 * is dispatched once (trigger `catch_up`); older deferred runs of the same policy become skipped — a
 * missed window runs once, not once per missed schedule.
 */
async function catchUpDeferred(kv: Deno.Kv, now: Date): Promise<number> {
  const byHost = new Map<string, Array<{ key: Deno.KvKey; runId: string; policyId: string }>>();
  for await (const e of kv.list<string>({ prefix: deferredPrefix() })) {
    const hostId = String(e.key[1]);
    const entry = { key: e.key, runId: String(e.key[2]), policyId: e.value };
    const list = byHost.get(hostId);
    if (list) list.push(entry);
    else byHost.set(hostId, [entry]);
  }
  if (!byHost.size) return 0;
  // Every minute while hosts stay offline: their status is read in batches, not one read per host.
  const hosts = new Map(
    (await getManyValues<{ id: string; status: string }>(kv, [...byHost.keys()].map(hostKey)))
      .map((h) => [h.id, h]),
  );
  let dispatched = 0;
  for (const [hostId, entries] of byHost) {
    // A decommissioned host's deferred runs are skipped, like those of a deleted host.
    const found = hosts.get(hostId) ?? null;
    const host = found?.status === "decommissioned" ? null : found;
    if (host && host.status !== "online") continue;
    const newest = new Map<string, string>();
    for (const e of entries) if ((newest.get(e.policyId) ?? "") < e.runId) newest.set(e.policyId, e.runId);
    for (const e of entries) {
      const entry = await kv.get<Run>(runKey(e.runId));
      const run = entry.value;
      const op = kv.atomic().check(entry).delete(e.key);
      if (!run || run.status !== "pending" || run.jobId) {
        await op.commit();
        continue;
      }
      // Every outcome below but a dispatch ends the run.
      const ended = () => op.delete(runsOpenKey(run.policyId, run.hostId, run.id));
      const policy = host ? (await kv.get<Policy>(policyKey(run.policyId))).value : null;
      if (!policy || newest.get(e.policyId) !== e.runId) {
        ended().set(runKey(run.id), { ...run, status: "skipped", updatedAt: now.toISOString() });
        await op.commit();
        continue;
      }
      let sent: { payload: Record<string, unknown>; kind: RunKind } | null;
      try {
        sent = await agentBackupPayload(kv, policy, run.kind, hostId);
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        // The policy cannot be sent: the deferred run fails with the reason (and its outcome counts).
        const failed = failedBeforeDispatch({ ...run, trigger: "catch_up" }, error.message, now);
        ended().set(runKey(run.id), failed);
        await recordOutcomeInOp(kv, op, "backup", run, failed, now);
        await op.commit();
        continue;
      }
      if (!sent) {
        await ended().set(runKey(run.id), { ...run, status: "skipped", updatedAt: now.toISOString() })
          .commit();
        continue;
      }
      const job = queueJobInOp(op, {
        kind: "backup",
        principal: `agent:${hostId}`,
        accountId: run.accountId,
        orgId: run.orgId,
        payload: sent.payload,
      }, now);
      op.set(runKey(run.id), {
        ...run,
        kind: sent.kind,
        trigger: "catch_up",
        jobId: job.id,
        error: null,
        updatedAt: now.toISOString(),
      })
        .set(runByJobKey(job.id), run.id);
      if ((await op.commit()).ok) dispatched++;
    }
  }
  return dispatched;
}
