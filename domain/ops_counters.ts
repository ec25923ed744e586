/**
 * Operational counters: how many engines and hosts are in each status, how many jobs wait in the queue
 * (by kind, priority and the minute they were created) and how many notification deliveries are in
 * each status. Each is a KvU64 summed in the same atomic operation as the change it counts, so a
 * Prometheus scrape (routes/metrics.ts) reads a few dozen keys whatever the size of the fleet, never
 * the records themselves. The consistency check (invariants.ts) recounts them from the records, and
 * `rebuildOpsCounters` sets them from the records once on an installation that predates them.
 */
import { jobKey, queueRanksPrefix } from "./keys/jobs.ts";
import { deliveriesPrefix } from "./keys/notifications.ts";
import { dataFixKey } from "./keys/data_fixes.ts";
import type { Engine } from "./engines.ts";
import type { Host } from "./hosts.ts";
import type { Job } from "./job_queue.ts";
import { COUNT_DOWN, COUNT_UP, counterValue, getManyValues } from "./kv.ts";
import type { DeliveryStatus, NotificationDelivery } from "./notification_delivery.ts";
import {
  deliveryCountKey,
  deliveryCountsPrefix,
  fleetCountKey,
  fleetCountsPrefix,
  OPS_COUNTER_PREFIXES,
  principalQueueCountKey,
  queueCountKey,
  queueCountsPrefix,
} from "./keys/ops_counters.ts";
export { deliveryCountKey, fleetCountKey, OPS_COUNTER_PREFIXES, principalQueueCountKey, queueCountKey };

export type FleetKind = "engine" | "host";

/**
 * Adds to `op` the move of one engine or host from status `from` to `to` (null: created or removed).
 * Nothing when the status does not change.
 */
export function countStatusChange(
  op: Deno.AtomicOperation,
  kind: FleetKind,
  accountId: string,
  from: string | null,
  to: string | null,
): void {
  if (from === to) return;
  if (from !== null) op.sum(fleetCountKey(kind, accountId, from), COUNT_DOWN);
  if (to !== null) op.sum(fleetCountKey(kind, accountId, to), COUNT_UP);
}

/** The minute a job counts in while queued: the minute it was created. */
function queueMinute(job: Pick<Job, "createdAt">): string {
  return job.createdAt.slice(0, 16);
}

/**
 * Adds to `op` a job entering (+1) or leaving (-1) the queue, in its kind/priority/minute bucket and in its
 * principal's count; call it with every set or delete of its queue entry.
 */
export function countQueueEntry(
  op: Deno.AtomicOperation,
  job: Pick<Job, "kind" | "priority" | "createdAt" | "principal">,
  delta: 1 | -1,
): void {
  const n = delta > 0 ? COUNT_UP : COUNT_DOWN;
  op.sum(queueCountKey(job.kind, job.priority, queueMinute(job)), n).sum(
    principalQueueCountKey(job.principal),
    n,
  );
}

/** Adds to `op` a delivery's move from status `from` to `to` (null: created or purged). */
export function countDeliveryChange(
  op: Deno.AtomicOperation,
  accountId: string,
  from: DeliveryStatus | null,
  to: DeliveryStatus | null,
): void {
  if (from === to) return;
  if (from !== null) op.sum(deliveryCountKey(accountId, from), COUNT_DOWN);
  if (to !== null) op.sum(deliveryCountKey(accountId, to), COUNT_UP);
}

/**
 * Deletes the queue buckets that reached zero (one per minute that had queued jobs). Each delete is
 * checked against the versionstamp read, so a job queued in that bucket meanwhile is never lost.
 * Returns how many it deleted.
 */
export async function pruneQueueCounts(kv: Deno.Kv): Promise<number> {
  let deleted = 0;
  for await (const e of kv.list({ prefix: queueCountsPrefix() })) {
    if (counterValue(e.value) !== 0) continue;
    if ((await kv.atomic().check(e).delete(e.key).commit()).ok) deleted++;
  }
  return deleted;
}

/** What the counters hold, summed over every account. */
export interface OpsCounts {
  engines: Record<string, number>;
  hosts: Record<string, number>;
  /** `kind` → `priority` → jobs queued. */
  queued: Record<string, Record<string, number>>;
  /** Creation minute of the oldest queued job (`YYYY-MM-DDTHH:MM`), or null when the queue is empty. */
  oldestQueuedMinute: string | null;
  deliveries: Record<string, number>;
}

/** Reads every operational counter: a few keys per account, status, job kind and minute with queued jobs. */
export async function readOpsCounts(kv: Deno.Kv): Promise<OpsCounts> {
  const out: OpsCounts = { engines: {}, hosts: {}, queued: {}, oldestQueuedMinute: null, deliveries: {} };
  const add = (into: Record<string, number>, key: string, n: number) => into[key] = (into[key] ?? 0) + n;
  for await (const e of kv.list({ prefix: fleetCountsPrefix() })) {
    const [, kind, , status] = e.key as string[];
    add(kind === "engine" ? out.engines : out.hosts, status, counterValue(e.value));
  }
  for await (const e of kv.list({ prefix: queueCountsPrefix() })) {
    const [, kind, priority, minute] = e.key as string[];
    const n = counterValue(e.value);
    if (n === 0) continue;
    add(out.queued[kind] ??= {}, priority, n);
    if (out.oldestQueuedMinute === null || minute < out.oldestQueuedMinute) out.oldestQueuedMinute = minute;
  }
  for await (const e of kv.list({ prefix: deliveryCountsPrefix() })) {
    add(out.deliveries, String(e.key[2]), counterValue(e.value));
  }
  return out;
}

/**
 * How the recount reads records: a whole KV (`kvOpsReader`), or the invariant check's bounded reader
 * (invariants.ts), which counts each entry against its bounds.
 */
export interface OpsCounterReader {
  /** Every record under `[prefix]` by id. */
  all<T>(prefix: string): Promise<Map<string, T>>;
  list<T>(prefix: Deno.KvKey): AsyncIterable<Deno.KvEntry<T>>;
  /** The values at `keys` that exist, in order. */
  getValues<T>(keys: Deno.KvKey[]): Promise<T[]>;
}

/** An OpsCounterReader over a whole KV. */
export function kvOpsReader(kv: Deno.Kv): OpsCounterReader {
  return {
    async all<T>(prefix: string) {
      const out = new Map<string, T>();
      for await (const e of kv.list<T>({ prefix: [prefix] })) out.set(String(e.key[1]), e.value);
      return out;
    },
    list: <T>(prefix: Deno.KvKey) => kv.list<T>({ prefix }),
    getValues: <T>(keys: Deno.KvKey[]) => getManyValues<T>(kv, keys),
  };
}

/** The counter values the records imply, by counter key (JSON), for the consistency check and the rebuild. */
export async function recountOpsCounters(
  source: Deno.Kv | OpsCounterReader,
): Promise<Map<string, { key: Deno.KvKey; n: number }>> {
  const r = "getValues" in source ? source : kvOpsReader(source);
  const out = new Map<string, { key: Deno.KvKey; n: number }>();
  const add = (key: Deno.KvKey) => {
    const id = JSON.stringify(key);
    const cur = out.get(id) ?? { key, n: 0 };
    cur.n++;
    out.set(id, cur);
  };
  for (const engine of (await r.all<Engine>("engines")).values()) {
    add(fleetCountKey("engine", engine.accountId, engine.status));
  }
  for (const host of (await r.all<Host>("hosts")).values()) {
    add(fleetCountKey("host", host.accountId, host.status));
  }
  const pointers: Deno.KvKey[] = [];
  for await (const e of r.list<string>(queueRanksPrefix())) pointers.push(jobKey(e.value));
  for (const job of await r.getValues<Job>(pointers)) {
    add(queueCountKey(job.kind, job.priority, queueMinute(job)));
    add(principalQueueCountKey(job.principal));
  }
  for await (const e of r.list<NotificationDelivery>(deliveriesPrefix())) {
    add(deliveryCountKey(e.value.accountId, e.value.status));
  }
  return out;
}

/**
 * Set once the operational counters were built from the records (installations older than them; v2:
 * older than the per-principal queue counts).
 */
const OPS_COUNTERS_FIX_KEY = dataFixKey("ops_counters_v2");

/**
 * Data fix (once, marker): sets every operational counter to what the records imply, and deletes
 * counters no record backs. Run at start-up before the server answers; `force` runs it again.
 */
export async function rebuildOpsCounters(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<{ counters: number; skipped: boolean }> {
  if (!options.force && (await kv.get(OPS_COUNTERS_FIX_KEY)).value) return { counters: 0, skipped: true };
  const expected = await recountOpsCounters(kv);
  let op = kv.atomic();
  let n = 0;
  const flush = async () => {
    if (n && !(await op.commit()).ok) throw new Error("Could not write the operational counters");
    op = kv.atomic();
    n = 0;
  };
  for (const prefix of OPS_COUNTER_PREFIXES) {
    for await (const e of kv.list({ prefix: [prefix] })) {
      if (expected.has(JSON.stringify(e.key))) continue;
      op.delete(e.key);
      if (++n === 500) await flush();
    }
  }
  for (const { key, n: value } of expected.values()) {
    op.set(key, new Deno.KvU64(BigInt(value)));
    if (++n === 500) await flush();
  }
  await flush();
  await kv.set(OPS_COUNTERS_FIX_KEY, now.toISOString());
  return { counters: expected.size, skipped: false };
}

/** One operational counter that differs from what the records imply. */
export interface OpsCounterMismatch {
  key: Deno.KvKey;
  /** The account the counter is kept for; null for the queue counters (they are not per account). */
  accountId: string | null;
  stored: number;
  counted: number;
  message: string;
}

/**
 * Every operational counter that differs from what the records imply. Each counter lives in the same
 * logical database as the records it counts (self_backup.ts), so a restored Config DB alone agrees too.
 */
export async function opsCounterMismatches(
  source: Deno.Kv | OpsCounterReader,
): Promise<OpsCounterMismatch[]> {
  const r = "getValues" in source ? source : kvOpsReader(source);
  const expected = await recountOpsCounters(r);
  const stored = new Map<string, { key: Deno.KvKey; n: number }>();
  for (const prefix of OPS_COUNTER_PREFIXES) {
    for await (const e of r.list<Deno.KvU64>([prefix])) {
      stored.set(JSON.stringify(e.key), { key: e.key, n: counterValue(e.value) });
    }
  }
  const out: OpsCounterMismatch[] = [];
  for (const id of new Set([...expected.keys(), ...stored.keys()])) {
    const counted = expected.get(id)?.n ?? 0;
    const have = stored.get(id)?.n ?? 0;
    if (counted === have) continue;
    const key = (expected.get(id) ?? stored.get(id))!.key;
    out.push({
      key,
      accountId: key[0] === "fleet_counts"
        ? String(key[2])
        : key[0] === "delivery_counts"
        ? String(key[1])
        : null,
      stored: have,
      counted,
      message: `counter ${id} is ${have} but counts ${counted}`,
    });
  }
  return out;
}

/** Every operational counter that differs from what the records imply, as sentences (empty: all agree). */
export async function checkOpsCounters(kv: Deno.Kv): Promise<string[]> {
  return (await opsCounterMismatches(kv)).map((m) => m.message);
}
