/**
 * Cross-key invariants of the stored data, checked over a whole KV: indexes point at live records,
 * children point at live parents (DESIGN.md §4), every vault record has its owner (vault_owners.ts),
 * and the dashboard's and the operational counters (ops_counters.ts) equal what they count. Used to
 * verify restored self-backups, by race tests, and (bounded) by the consistency check after resumed
 * deletions and on start (invariant_checks.ts).
 *
 * The checks fall into sections, each judged on data it read in full: a bounded run that runs out of
 * entries or time drops the section it was in (a half-read section would report false violations) and
 * says where it stopped, so the next run can start there.
 *
 * An engine marked `deleting` is a cascade in progress (engines.ts deleteEngine; a crash can stop it
 * half-way and the resume job finishes it): the engine, its targets, their policies and the policies'
 * replica rules, assignments and protected objects are skipped, not reported. What the cascade leaves
 * wrong is reported once it has finished and the engine is gone.
 */
import { runKey } from "./keys/runs.ts";
import { openAlertCountKey } from "./keys/alerts.ts";
import { failingPrefix, latestOutcomeKey } from "./keys/dashboard.ts";
import {
  platformJobsByAccountPrefix,
  platformJobsByVendorPrefix,
  platformObjectsPrefix,
  platformRunsPrefix,
} from "./keys/platforms.ts";
import { policiesByNamePrefix, policyCountsPrefix } from "./keys/policies.ts";
import { objectCountKey } from "./keys/protected.ts";
import { replicaCountKey, replicationsPrefix } from "./keys/replicas.ts";
import type { Alert } from "./alerts.ts";
import { counterValue } from "./kv.ts";
import type { Assignment } from "./assignments.ts";
import type { Engine } from "./engines.ts";
import type { Host } from "./hosts.ts";
import { opsCounterMismatches } from "./ops_counters.ts";
import type { PolicyCore } from "./policies.ts";
import { policyCountKey, policyNameKey } from "./policy_names.ts";
import type { ProtectedObject } from "./protected.ts";
import type { StorageTarget } from "./storage.ts";
import type { Org, User } from "./types.ts";
import type { VaultRecord } from "./vault.ts";
import { listVaultReferences } from "./vault_owners.ts";

/** One broken invariant: a sentence naming the keys involved, and the account it concerns (if known). */
export interface Violation {
  /** The account whose data is inconsistent; null when no account can be told (e.g. a dangling index). */
  accountId: string | null;
  /** Which section found it (see INVARIANT_SECTIONS). */
  section: SectionName;
  message: string;
}

/** The sections of the check, in their usual order. */
export const INVARIANT_SECTIONS = [
  { name: "tenancy", label: "Accounts, organizations and users" },
  { name: "engines", label: "Engines, storage targets and vault" },
  { name: "policies", label: "Policies and replica rules" },
  { name: "alerts", label: "Alerts and dashboard counters" },
  { name: "hosts", label: "Hosts, assignments and protected objects" },
  { name: "platforms", label: "Third-party platforms" },
  { name: "ops", label: "Operational counters (fleet, queue, deliveries)" },
] as const;
export type SectionName = (typeof INVARIANT_SECTIONS)[number]["name"];

/** Bounds of one run; without them a run reads the whole KV. */
export interface InvariantBounds {
  /** Stop after reading this many entries. */
  maxEntries?: number;
  /** Stop after this many milliseconds, as measured by `elapsedMs` (required with it). */
  timeBoxMs?: number;
  /** A monotonic clock in milliseconds (e.g. `() => performance.now()`), passed in by the caller. */
  elapsedMs?: () => number;
  /** The index in INVARIANT_SECTIONS to start at (a previous partial run's `nextSection`). */
  startSection?: number;
  /**
   * Report only violations seen twice: a section with violations is read again and only those found
   * both times are kept. The scans are not a snapshot (DESIGN.md §2), so a write racing the first read
   * (an alert raised between reading alerts and their counters) must not become a critical alert.
   * The second read counts against the same bounds; what it cannot reread is reported unconfirmed.
   */
  confirm?: boolean;
}

export interface SectionOutcome {
  name: SectionName;
  label: string;
  /** `checked` in full; `cut` when the bounds ran out inside it; `not_reached` after a cut. */
  status: "checked" | "cut" | "not_reached";
  /** Entries it checked, whether read for it or already read by an earlier section. */
  entriesChecked: number;
  violations: number;
}

export interface InvariantReport {
  /** True when every section was checked in full. */
  complete: boolean;
  /** Entries read in all (both reads when confirming). */
  entriesRead: number;
  sections: SectionOutcome[];
  violations: Violation[];
  /** Where the next run should start: the cut section, or the first when this run was complete. */
  nextSection: number;
}

/** Thrown inside a section when the bounds run out; never escapes this module. */
class OutOfBounds extends Error {}

/** Reads the KV for the checks, counting entries against the bounds and caching whole prefixes. */
class Reader {
  /** Entries read from the KV (what the bounds count). */
  read = 0;
  /** Entries the checks looked at, including records reused from the cache. */
  checked = 0;
  readonly #cache = new Map<string, Map<string, unknown>>();
  readonly #start: number;
  constructor(readonly kv: Deno.Kv, readonly bounds: InvariantBounds) {
    if (bounds.timeBoxMs !== undefined && !bounds.elapsedMs) {
      throw new Error("checkInvariantsBounded(): timeBoxMs needs elapsedMs");
    }
    this.#start = bounds.elapsedMs?.() ?? 0;
  }

  /** Counts one entry read; throws OutOfBounds (before counting it) once the bounds are spent. */
  #tick() {
    const { maxEntries, timeBoxMs, elapsedMs } = this.bounds;
    if (maxEntries !== undefined && this.read >= maxEntries) throw new OutOfBounds();
    if (timeBoxMs !== undefined && elapsedMs!() - this.#start > timeBoxMs) throw new OutOfBounds();
    this.read++;
    this.checked++;
  }

  async *list<T>(prefix: Deno.KvKey): AsyncGenerator<Deno.KvEntry<T>> {
    for await (const e of this.kv.list<T>({ prefix }, { batchSize: 500 })) {
      this.#tick();
      yield e;
    }
  }

  async get<T>(key: Deno.KvKey): Promise<T | null> {
    this.#tick();
    return (await this.kv.get<T>(key)).value;
  }

  /** The values at `keys` that exist, in order (read ten at a time). */
  async getValues<T>(keys: Deno.KvKey[]): Promise<T[]> {
    const out: T[] = [];
    for (let i = 0; i < keys.length; i += 10) {
      const chunk = keys.slice(i, i + 10);
      for (const _ of chunk) this.#tick();
      for (const e of await this.kv.getMany<unknown[]>(chunk)) if (e.value !== null) out.push(e.value as T);
    }
    return out;
  }

  /** Drops what was read, so the next reads see the KV as it is now. */
  forget() {
    this.#cache.clear();
  }

  /** Every record under `[prefix]` by id (read once per run). */
  async all<T>(prefix: string): Promise<Map<string, T>> {
    const cached = this.#cache.get(prefix);
    if (cached) {
      this.checked += cached.size;
      return cached as Map<string, T>;
    }
    const out = new Map<string, T>();
    for await (const e of this.list<T>([prefix])) out.set(String(e.key[1]), e.value);
    this.#cache.set(prefix, out);
    return out;
  }

  async pointers(prefix: string): Promise<Array<{ key: Deno.KvKey; value: string }>> {
    const out = [];
    for await (const e of this.list<string>([prefix])) out.push({ key: e.key, value: e.value });
    return out;
  }
}

type Report = (accountId: string | null | undefined, message: string) => void;
type Section = (r: Reader, report: Report) => Promise<void>;

/** Every violated invariant over the whole KV, as sentences naming the keys involved. */
export async function checkInvariants(kv: Deno.Kv): Promise<string[]> {
  return (await checkInvariantsBounded(kv)).violations.map((v) => v.message);
}

/**
 * Checks the sections in order from `startSection` (wrapping round) until all are done or the bounds
 * run out; the section being read when they ran out is dropped and named. See InvariantBounds.
 */
export async function checkInvariantsBounded(
  kv: Deno.Kv,
  bounds: InvariantBounds = {},
): Promise<InvariantReport> {
  const n = INVARIANT_SECTIONS.length;
  const start = ((bounds.startSection ?? 0) % n + n) % n;
  const order = Array.from({ length: n }, (_, i) => (start + i) % n);
  const reader = new Reader(kv, bounds);
  const first = await runSections(reader, order);
  let { violations } = first;
  const suspect = order.filter((i) => first.found.get(i)?.length);
  if (bounds.confirm && suspect.length) {
    // The second read shares the bounds (and reads afresh).
    reader.forget();
    const again = await runSections(reader, suspect);
    violations = violations.filter((v) => {
      const i = INVARIANT_SECTIONS.findIndex((s) => s.name === v.section);
      const seen = again.found.get(i);
      // A section the second read could not finish keeps what the first read saw.
      return !seen || seen.some((w) => w.message === v.message && w.accountId === v.accountId);
    });
  }
  const sections: SectionOutcome[] = INVARIANT_SECTIONS.map((s, i) => ({
    name: s.name,
    label: s.label,
    status: first.cut === i ? "cut" : first.found.has(i) ? "checked" : "not_reached",
    entriesChecked: first.checked.get(i) ?? 0,
    violations: violations.filter((v) => v.section === s.name).length,
  }));
  // The next run starts at the cut section, unless it was this run's first (it alone outgrew the
  // bounds): then the next one starts after it, so the others get their turn.
  const nextSection = first.cut === null ? 0 : first.cut === start ? (first.cut + 1) % n : first.cut;
  return { complete: first.cut === null, entriesRead: reader.read, sections, violations, nextSection };
}

async function runSections(reader: Reader, order: number[]) {
  const found = new Map<number, Violation[]>();
  const checked = new Map<number, number>();
  let cut: number | null = null;
  for (const i of order) {
    const section = INVARIANT_SECTIONS[i];
    const own: Violation[] = [];
    const before = reader.checked;
    try {
      await SECTION_CHECKS[section.name](
        reader,
        (accountId, message) => own.push({ accountId: accountId ?? null, section: section.name, message }),
      );
    } catch (e) {
      if (!(e instanceof OutOfBounds)) throw e;
      checked.set(i, reader.checked - before);
      cut = i;
      break;
    }
    checked.set(i, reader.checked - before);
    found.set(i, own);
  }
  return { found, checked, cut, violations: order.flatMap((i) => found.get(i) ?? []) };
}

const SECTION_CHECKS: Record<SectionName, Section> = {
  tenancy: checkTenancy,
  engines: checkEnginesAndStorage,
  policies: checkPolicies,
  alerts: checkAlerts,
  hosts: checkHostInvariants,
  platforms: checkPlatformInvariants,
  ops: checkOpsCounterInvariants,
};

/** What a deletion cascade in progress covers: the engines marked `deleting` and everything under them. */
interface Cascades {
  engines: Set<string>;
  /** Targets of those engines, including ones already deleted that the engine still lists. */
  targets: Set<string>;
  /** Policies on those engines or writing to their targets. */
  policies: Set<string>;
}

/**
 * The cascades in progress, from the engines, policies and (unless `withTargets` is false, for a section
 * that needs only the policies) targets; each prefix is read once per run.
 */
async function cascadesInProgress(r: Reader, withTargets = true): Promise<Cascades> {
  const out: Cascades = { engines: new Set(), targets: new Set(), policies: new Set() };
  for (const engine of (await r.all<Engine>("engines")).values()) {
    if (engine.status !== "deleting") continue;
    out.engines.add(engine.id);
    for (const id of engine.storageTargetIds ?? []) out.targets.add(id);
  }
  if (out.engines.size === 0) return out;
  if (withTargets) {
    for (const t of (await r.all<StorageTarget>("storage_targets")).values()) {
      if (out.engines.has(t.besId)) out.targets.add(t.id);
    }
  }
  // A policy's target is on its own BES (invariant 2): a policy writing to a doomed target is doomed too.
  for (const p of (await r.all<PolicyCore>("policies")).values()) {
    if (out.engines.has(p.besId) || out.targets.has(p.targetId)) out.policies.add(p.id);
  }
  return out;
}

/** Orgs and users belong to live accounts; their indexes point at them. */
async function checkTenancy(r: Reader, report: Report): Promise<void> {
  const accounts = await r.all<{ id: string }>("accounts");
  const orgs = await r.all<Org>("orgs");
  const users = await r.all<User>("users");
  for (const org of orgs.values()) {
    if (!accounts.has(org.accountId)) {
      report(org.accountId, `org ${org.id} belongs to missing account ${org.accountId}`);
    }
  }
  for (const user of users.values()) {
    if (!accounts.has(user.accountId)) {
      report(user.accountId, `user ${user.id} belongs to missing account ${user.accountId}`);
    }
  }
  for (const p of await r.pointers("users_by_email")) {
    const user = users.get(p.value);
    if (user?.email !== p.key[1]) {
      report(user?.accountId, `users_by_email ${String(p.key[1])} points to a missing or different user`);
    }
  }
  for (const p of await r.pointers("orgs_by_account")) {
    if (!orgs.has(p.value)) report(String(p.key[1]), `orgs_by_account points to missing org ${p.value}`);
  }
}

/**
 * Engines and their targets list each other; every vault record has exactly the owners that name it.
 * Skips engines being deleted and their targets.
 */
async function checkEnginesAndStorage(r: Reader, report: Report): Promise<void> {
  const engines = await r.all<Engine>("engines");
  const targets = await r.all<StorageTarget>("storage_targets");
  const vault = await r.all<VaultRecord>("vault");
  const cascades = await cascadesInProgress(r);
  for (const engine of engines.values()) {
    if (cascades.engines.has(engine.id)) continue;
    for (const id of engine.storageTargetIds ?? []) {
      if (targets.get(id)?.besId !== engine.id) {
        report(engine.accountId, `engine ${engine.id} lists missing or foreign target ${id}`);
      }
    }
  }
  for (const p of await r.pointers("engines_by_public_key")) {
    if (!engines.has(p.value)) report(null, `engines_by_public_key points to missing engine ${p.value}`);
  }
  for (const t of targets.values()) {
    if (cascades.targets.has(t.id)) continue;
    const engine = engines.get(t.besId);
    if (!engine) report(t.accountId, `storage target ${t.id} belongs to missing engine ${t.besId}`);
    else if (!engine.storageTargetIds.includes(t.id)) {
      report(t.accountId, `engine ${t.besId} does not list its target ${t.id}`);
    }
  }
  // Vault ownership, from the one list of owners (vault_owners.ts): every record is owned and sealed
  // for its owner, every owner's record exists. A target in a deletion cascade still owns its record,
  // which the cascade may already have removed.
  const referencedVault = new Set<string>();
  for (const ref of await listVaultReferences(r)) {
    referencedVault.add(ref.vaultId);
    const record = vault.get(ref.vaultId);
    if (!record) {
      if (ref.optional || (ref.storageTargetId && cascades.targets.has(ref.storageTargetId))) continue;
      report(ref.accountId, `${ref.owner} refers to missing vault record ${ref.vaultId}`);
    } else if (record.purpose !== ref.purpose) {
      report(
        ref.accountId ?? record.accountId,
        `vault record ${ref.vaultId} of ${ref.owner} is sealed for ${record.purpose}, not ${ref.purpose}`,
      );
    }
  }
  for (const [id, record] of vault) {
    if (!referencedVault.has(id)) report(record?.accountId, `vault record ${id} is referenced by nothing`);
  }
  for (const p of await r.pointers("storage_targets_by_bes")) {
    if (!targets.has(p.value) && !cascades.engines.has(String(p.key[1]))) {
      report(
        engines.get(String(p.key[1]))?.accountId,
        `storage_targets_by_bes points to missing target ${p.value}`,
      );
    }
  }
}

/**
 * A policy writes to a live target of its own BES (invariant 2); replica rules have their policy and
 * target; every target's reference count is exactly the policies writing to it plus the replica rules
 * copying to it (what makes FK RESTRICT hold, invariant 1). Skips what a cascade in progress covers.
 */
async function checkPolicies(r: Reader, report: Report): Promise<void> {
  const targets = await r.all<StorageTarget>("storage_targets");
  const policies = await r.all<PolicyCore>("policies");
  const cascades = await cascadesInProgress(r);
  for (const policy of policies.values()) {
    if (cascades.policies.has(policy.id)) continue;
    const target = targets.get(policy.targetId);
    if (!target) report(policy.accountId, `policy ${policy.id} writes to missing target ${policy.targetId}`);
    else if (target.besId !== policy.besId) {
      report(
        policy.accountId,
        `policy ${policy.id} is on BES ${policy.besId} but its target is on ${target.besId}`,
      );
    }
  }
  // The name index (policy_names.ts): one entry per policy, under its name, with its org and BES.
  const named = new Set<string>();
  for await (
    const e of r.list<{ name: string; orgId: string | null; besId: string }>(policiesByNamePrefix())
  ) {
    const id = String(e.key[3]);
    const policy = policies.get(id);
    if (cascades.policies.has(id)) continue;
    if (
      !policy || policy.accountId !== e.key[1] || policyNameKey(policy.name) !== e.key[2] ||
      e.value.name !== policy.name || e.value.orgId !== policy.orgId || e.value.besId !== policy.besId
    ) {
      report(String(e.key[1]), `name index entry of policy ${id} does not match the policy`);
    } else named.add(id);
  }
  for (const policy of policies.values()) {
    if (!named.has(policy.id) && !cascades.policies.has(policy.id)) {
      report(policy.accountId, `policy ${policy.id} has no name index entry`);
    }
  }
  // The per-org policy counters count the policies (a policy is counted until its record is removed).
  const counted = new Map<string, number>();
  for (const p of policies.values()) {
    const key = JSON.stringify(policyCountKey(p.accountId, p.orgId));
    counted.set(key, (counted.get(key) ?? 0) + 1);
  }
  const seenCounters = new Set<string>();
  for await (const e of r.list(policyCountsPrefix())) {
    const key = JSON.stringify(e.key);
    seenCounters.add(key);
    if (counterValue(e.value) !== (counted.get(key) ?? 0)) {
      report(
        String(e.key[1]),
        `policy counter ${key} is ${counterValue(e.value)}, policies ${counted.get(key) ?? 0}`,
      );
    }
  }
  for (const [key, n] of counted) {
    if (!seenCounters.has(key)) {
      report(JSON.parse(key)[1], `policy counter ${key} is missing (policies ${n})`);
    }
  }
  const replicas = await r.all<{ id: string; accountId: string; policyId: string; targetId: string }>(
    "replicas",
  );
  const refs = new Map<string, number>();
  for (const p of policies.values()) refs.set(p.targetId, (refs.get(p.targetId) ?? 0) + 1);
  for (const rule of replicas.values()) {
    refs.set(rule.targetId, (refs.get(rule.targetId) ?? 0) + 1);
    if (cascades.policies.has(rule.policyId) || cascades.targets.has(rule.targetId)) continue;
    if (!policies.has(rule.policyId)) {
      report(rule.accountId, `replica rule ${rule.id} belongs to missing policy ${rule.policyId}`);
    }
    if (!targets.has(rule.targetId)) {
      report(rule.accountId, `replica rule ${rule.id} copies to missing target ${rule.targetId}`);
    }
  }
  for (const t of targets.values()) {
    if (cascades.targets.has(t.id)) continue;
    if ((t.policyCount ?? 0) !== (refs.get(t.id) ?? 0)) {
      report(
        t.accountId,
        `storage target ${t.id} counts ${t.policyCount} references but has ${refs.get(t.id) ?? 0}`,
      );
    }
  }
}

/**
 * The open-alert pointers point at open alerts, and the dashboard's counters equal what they count:
 * open alerts per org, and active / at-risk / swept breached protected objects per org.
 */
async function checkAlerts(r: Reader, report: Report): Promise<void> {
  const alerts = await r.all<Alert>("alerts");
  for (const p of await r.pointers("alerts_open")) {
    const alert = alerts.get(p.value);
    if (!alert || alert.status === "resolved") {
      report(alert?.accountId, `alerts_open points to missing or resolved alert ${p.value}`);
    }
  }
  const expected = new Map<string, number>();
  const bump = (key: Deno.KvKey) => {
    const k = JSON.stringify(key);
    expected.set(k, (expected.get(k) ?? 0) + 1);
  };
  for (const a of alerts.values()) {
    if (a.status !== "resolved") bump(openAlertCountKey(a.accountId, a.orgId));
  }
  for (const o of (await r.all<ProtectedObject>("protected_objects")).values()) {
    if (o.protection !== "active") continue;
    bump(objectCountKey(o.accountId, o.orgId, "protected"));
    if (o.lastBackupStatus === "failed") bump(objectCountKey(o.accountId, o.orgId, "at_risk"));
    if (o.breached) bump(objectCountKey(o.accountId, o.orgId, "breached"));
  }
  // Replication counts per rule, from the rule's records (a removed rule's records stay uncounted).
  const rules = await r.all<{ accountId: string }>("replicas");
  const ruleAccount = new Map<string, string>();
  for (const [id, rule] of rules) ruleAccount.set(id, rule.accountId);
  for await (const e of r.list<{ status: string }>(replicationsPrefix())) {
    const ruleId = String(e.key[2]);
    if (!rules.has(ruleId)) continue;
    const status = e.value.status === "success" ? "succeeded" : e.value.status;
    bump(replicaCountKey(ruleId, status as "pending" | "succeeded" | "failed"));
  }
  const stored = new Map<string, number>();
  for (const prefix of ["alert_counts", "po_counts", "replica_counts"]) {
    for await (const e of r.list<Deno.KvU64>([prefix])) {
      stored.set(JSON.stringify(e.key), counterValue(e.value));
    }
  }
  for (const key of new Set([...expected.keys(), ...stored.keys()])) {
    if ((expected.get(key) ?? 0) !== (stored.get(key) ?? 0)) {
      const [prefix, id] = JSON.parse(key) as [string, string];
      report(
        prefix === "replica_counts" ? ruleAccount.get(id) ?? null : id,
        `counter ${key} is ${stored.get(key) ?? 0} but counts ${expected.get(key) ?? 0}`,
      );
    }
  }
}

/**
 * Hosts, assignments (invariant 3: at most one per policy and host, which holds when every
 * `assignments_by_policy` pointer and every record agree one to one) and protected objects. Skips the
 * assignments, index entries and protected objects of policies a cascade in progress covers.
 */
async function checkHostInvariants(r: Reader, report: Report): Promise<void> {
  const policies = await r.all<PolicyCore>("policies");
  const doomed = (await cascadesInProgress(r, false)).policies;
  const hosts = await r.all<Host>("hosts");
  const assignments = await r.all<Assignment>("assignments");
  const objects = await r.all<ProtectedObject>("protected_objects");

  for (const p of await r.pointers("hosts_by_account")) {
    if (hosts.get(p.value)?.accountId !== p.key[1]) {
      report(String(p.key[1]), `hosts_by_account points to missing or foreign host ${p.value}`);
    }
  }
  for (const p of await r.pointers("hosts_by_public_key")) {
    const host = hosts.get(p.value);
    if (host?.publicKey !== p.key[1]) {
      report(host?.accountId, `hosts_by_public_key points to a missing or different host ${p.value}`);
    }
  }

  const byPolicy = new Map(
    (await r.pointers("assignments_by_policy")).map((p) => [pairKey(p.key), p.value]),
  );
  const byHost = new Map((await r.pointers("assignments_by_host")).map((p) => [pairKey(p.key), p.value]));
  const protectedByHost = new Map(
    (await r.pointers("protected_by_host")).map((p) => [pairKey(p.key), p.value]),
  );
  for (const a of assignments.values()) {
    if (doomed.has(a.policyId)) continue;
    const policy = policies.get(a.policyId);
    const host = hosts.get(a.hostId);
    if (!policy) report(a.accountId, `assignment ${a.id} belongs to missing policy ${a.policyId}`);
    if (!host) report(a.accountId, `assignment ${a.id} assigns missing host ${a.hostId}`);
    if (policy && host && policy.accountId !== host.accountId) {
      report(
        a.accountId,
        `assignment ${a.id} joins policy ${a.policyId} and host ${a.hostId} of different accounts`,
      );
    }
    if (byPolicy.get(`${a.policyId}/${a.hostId}`) !== a.id) {
      report(
        a.accountId,
        `assignment ${a.id} is not the one assignments_by_policy lists for its policy and host`,
      );
    }
    if (byHost.get(`${a.hostId}/${a.policyId}`) !== a.id) {
      report(
        a.accountId,
        `assignment ${a.id} is not the one assignments_by_host lists for its host and policy`,
      );
    }
    const object = objects.get(protectedByHost.get(`${a.hostId}/${a.policyId}`) ?? "");
    if (!object) report(a.accountId, `assignment ${a.id} has no protected object`);
    else if (object.protection !== a.state) {
      report(
        a.accountId,
        `protected object ${object.id} is ${object.protection} but assignment ${a.id} is ${a.state}`,
      );
    }
  }
  /** Reports each entry of a pair index (`"a/b" → id`) whose record is missing or keyed otherwise. */
  const checkPairIndex = <T extends { accountId: string }>(
    index: Map<string, string>,
    name: string,
    records: Map<string, T>,
    what: string,
    order: "policy/host" | "host/policy",
    pairOf: (record: T) => string,
  ) => {
    for (const [pair, id] of index) {
      const [first, second] = pair.split("/");
      if (doomed.has(order === "policy/host" ? first : second)) continue;
      const record = records.get(id);
      if (!record || pairOf(record) !== pair) {
        report(
          record?.accountId ?? (order === "policy/host" ? policies : hosts).get(first)?.accountId,
          `${name} ${pair} points to a missing or different ${what} ${id}`,
        );
      }
    }
  };
  checkPairIndex(
    byPolicy,
    "assignments_by_policy",
    assignments,
    "assignment",
    "policy/host",
    (a) => `${a.policyId}/${a.hostId}`,
  );
  checkPairIndex(
    byHost,
    "assignments_by_host",
    assignments,
    "assignment",
    "host/policy",
    (a) => `${a.hostId}/${a.policyId}`,
  );
  checkPairIndex(
    protectedByHost,
    "protected_by_host",
    objects,
    "protected object",
    "host/policy",
    (o) => `${o.hostId}/${o.policyId}`,
  );
  for (const p of await r.pointers("protected_by_account")) {
    if (objects.get(p.value)?.accountId !== p.key[1]) {
      report(
        String(p.key[1]),
        `protected_by_account points to missing or foreign protected object ${p.value}`,
      );
    }
  }
  // Platform objects (platform sync) have no host or assignment: `platform_objects` is their unique index.
  const platformObjects = new Map<string, string>();
  for await (const e of r.list<string>(platformObjectsPrefix())) {
    const o = objects.get(e.value);
    if (
      o?.source.kind !== "platform" || `${o.source.platformId}/${o.source.vendorObjectId}` !== pairKey(e.key)
    ) {
      report(
        o?.accountId,
        `platform_objects ${pairKey(e.key)} points to a missing or different protected object ${e.value}`,
      );
    }
    platformObjects.set(e.value, pairKey(e.key));
  }
  for (const o of objects.values()) {
    if (o.source.kind === "platform") {
      if (!platformObjects.has(o.id)) {
        report(o.accountId, `platform object ${o.id} is not indexed in platform_objects`);
      }
      continue;
    }
    if (doomed.has(o.policyId)) continue;
    if (protectedByHost.get(`${o.hostId}/${o.policyId}`) !== o.id) {
      report(
        o.accountId,
        `protected object ${o.id} is not the one protected_by_host lists for its host and policy`,
      );
    }
    const assigned = assignments.get(byPolicy.get(`${o.policyId}/${o.hostId}`) ?? "");
    if (!assigned && o.protection !== "unprotected") {
      report(o.accountId, `protected object ${o.id} is ${o.protection} without an assignment`);
    }
  }
}

/**
 * Third-party platforms (platforms.ts, platform_sync.ts): one platform job per vendor job and one run per
 * vendor run, their indexes one to one; imported jobs and objects belong to a live platform; a platform
 * job's entry in the failed-backups queue is its latest outcome's.
 */
async function checkPlatformInvariants(r: Reader, report: Report): Promise<void> {
  const platforms = await r.all<{ id: string; accountId: string }>("platforms");
  const jobs = await r.all<{ id: string; platformId: string; vendorJobId: string; accountId: string }>(
    "platform_jobs",
  );
  const byVendor = new Map<string, string>();
  for await (const e of r.list<string>(platformJobsByVendorPrefix())) {
    const job = jobs.get(e.value);
    if (!job || `${job.platformId}/${job.vendorJobId}` !== pairKey(e.key)) {
      report(
        job?.accountId ?? platforms.get(String(e.key[1]))?.accountId,
        `platform_jobs_by_vendor ${pairKey(e.key)} points to a missing or different job ${e.value}`,
      );
    }
    byVendor.set(e.value, pairKey(e.key));
  }
  const byAccount = new Set<string>();
  for await (const e of r.list<string>(platformJobsByAccountPrefix())) {
    if (jobs.get(e.value)?.accountId !== e.key[1]) {
      report(String(e.key[1]), `platform_jobs_by_account points to a missing or foreign job ${e.value}`);
    }
    byAccount.add(e.value);
  }
  for (const job of jobs.values()) {
    if (!platforms.has(job.platformId)) {
      report(job.accountId, `platform job ${job.id} belongs to missing platform ${job.platformId}`);
    }
    if (!byVendor.has(job.id) || !byAccount.has(job.id)) {
      report(job.accountId, `platform job ${job.id} is not indexed by vendor id and account`);
    }
  }
  for (const o of (await r.all<ProtectedObject>("protected_objects")).values()) {
    if (o.source.kind === "platform" && !platforms.has(o.source.platformId)) {
      report(o.accountId, `platform object ${o.id} belongs to missing platform ${o.source.platformId}`);
    }
  }
  type PlatformRun = {
    accountId: string;
    status: string;
    policyId: string;
    platform?: { platformId: string; runId: string | null };
  };
  for await (const e of r.list<string>(platformRunsPrefix())) {
    const run = await r.get<PlatformRun>(runKey(e.value));
    if (run?.platform?.platformId !== e.key[1] || run.platform.runId !== e.key[2]) {
      report(
        run?.accountId ?? platforms.get(String(e.key[1]))?.accountId,
        `platform_runs ${pairKey(e.key)} points to a missing or different run ${e.value}`,
      );
    }
  }
  for await (const e of r.list<string>(failingPrefix())) {
    const runId = String(e.key[3]);
    const run = await r.get<PlatformRun>(runKey(runId));
    if (!run?.platform) continue; // native runs: runs.ts
    const latest = await r.get<{ failingKey: Deno.KvKey | null }>(latestOutcomeKey(run.policyId, null));
    if (run.status !== "failed" || JSON.stringify(latest?.failingKey) !== JSON.stringify(e.key)) {
      report(
        run.accountId,
        `runs_failing lists platform run ${runId}, which is not its job's latest failure`,
      );
    }
    if (!jobs.has(run.policyId)) {
      report(
        run.accountId,
        `runs_failing lists platform run ${runId} of missing platform job ${run.policyId}`,
      );
    }
  }
}

/**
 * The operational counters (ops_counters.ts: engines and hosts by status, queued jobs by kind, priority
 * and minute, deliveries by status) equal what the records imply.
 */
async function checkOpsCounterInvariants(r: Reader, report: Report): Promise<void> {
  for (const m of await opsCounterMismatches(r)) report(m.accountId, m.message);
}

/** `a/b` of a two-part index key `[prefix, a, b]`. */
function pairKey(key: Deno.KvKey): string {
  return `${String(key[1])}/${String(key[2])}`;
}
