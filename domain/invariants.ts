/**
 * Cross-key invariants of the stored data, checked over a whole KV: indexes point at live records,
 * children point at live parents (DESIGN.md §4), no orphaned vault record. Used to verify restored
 * self-backups and by race tests. Returns human-readable violations (empty when all hold).
 */
import type { Alert } from "./alerts.ts";
import { counterValue } from "./kv.ts";
import type { Assignment } from "./assignments.ts";
import type { Engine } from "./engines.ts";
import type { Host } from "./hosts.ts";
import type { PolicyCore } from "./policies.ts";
import type { ProtectedObject } from "./protected.ts";
import type { StorageTarget } from "./storage.ts";
import type { Org, User } from "./types.ts";

async function all<T>(kv: Deno.Kv, prefix: string): Promise<Map<string, T>> {
  const out = new Map<string, T>();
  for await (const e of kv.list<T>({ prefix: [prefix] })) out.set(String(e.key[1]), e.value);
  return out;
}

async function pointers(kv: Deno.Kv, prefix: string): Promise<Array<{ key: Deno.KvKey; value: string }>> {
  const out = [];
  for await (const e of kv.list<string>({ prefix: [prefix] })) out.push({ key: e.key, value: e.value });
  return out;
}

/** Every violated invariant, as a sentence naming the keys involved. */
export async function checkInvariants(kv: Deno.Kv): Promise<string[]> {
  const problems: string[] = [];
  const accounts = await all<{ id: string }>(kv, "accounts");
  const orgs = await all<Org>(kv, "orgs");
  const users = await all<User>(kv, "users");
  const engines = await all<Engine>(kv, "engines");
  const targets = await all<StorageTarget>(kv, "storage_targets");
  const policies = await all<PolicyCore>(kv, "policies");
  const alerts = await all<Alert>(kv, "alerts");
  const vault = await all<unknown>(kv, "vault");

  for (const org of orgs.values()) {
    if (!accounts.has(org.accountId)) {
      problems.push(`org ${org.id} belongs to missing account ${org.accountId}`);
    }
  }
  for (const user of users.values()) {
    if (!accounts.has(user.accountId)) {
      problems.push(`user ${user.id} belongs to missing account ${user.accountId}`);
    }
  }
  for (const p of await pointers(kv, "users_by_email")) {
    if (users.get(p.value)?.email !== p.key[1]) {
      problems.push(`users_by_email ${String(p.key[1])} points to a missing or different user`);
    }
  }
  for (const p of await pointers(kv, "orgs_by_account")) {
    if (!orgs.has(p.value)) problems.push(`orgs_by_account points to missing org ${p.value}`);
  }
  for (const engine of engines.values()) {
    for (const id of engine.storageTargetIds ?? []) {
      if (targets.get(id)?.besId !== engine.id) {
        problems.push(`engine ${engine.id} lists missing or foreign target ${id}`);
      }
    }
  }
  for (const p of await pointers(kv, "engines_by_public_key")) {
    if (!engines.has(p.value)) problems.push(`engines_by_public_key points to missing engine ${p.value}`);
  }
  const referencedVault = new Set<string>();
  for (const t of targets.values()) {
    const engine = engines.get(t.besId);
    if (!engine) problems.push(`storage target ${t.id} belongs to missing engine ${t.besId}`);
    else if (!engine.storageTargetIds.includes(t.id)) {
      problems.push(`engine ${t.besId} does not list its target ${t.id}`);
    }
    if (t.credentialId) {
      referencedVault.add(t.credentialId);
      if (!vault.has(t.credentialId)) {
        problems.push(`storage target ${t.id} refers to missing vault record ${t.credentialId}`);
      }
    }
  }
  // The self-backup's S3 secret is the other owner of a vault record.
  const selfBackup =
    (await kv.get<{ s3?: { credentialId: string | null } }>(["self_backup", "settings"])).value;
  if (selfBackup?.s3?.credentialId) referencedVault.add(selfBackup.s3.credentialId);
  // Third-party platforms keep their password in the vault.
  for (const p of (await all<{ id: string; credentialId: string | null }>(kv, "platforms")).values()) {
    if (!p.credentialId) continue;
    referencedVault.add(p.credentialId);
    if (!vault.has(p.credentialId)) {
      problems.push(`platform ${p.id} refers to missing vault record ${p.credentialId}`);
    }
  }
  for (const id of vault.keys()) {
    if (!referencedVault.has(id)) problems.push(`vault record ${id} is referenced by nothing`);
  }
  for (const p of await pointers(kv, "storage_targets_by_bes")) {
    if (!targets.has(p.value)) problems.push(`storage_targets_by_bes points to missing target ${p.value}`);
  }
  for (const policy of policies.values()) {
    const target = targets.get(policy.targetId);
    if (!target) problems.push(`policy ${policy.id} writes to missing target ${policy.targetId}`);
    else if (target.besId !== policy.besId) {
      problems.push(`policy ${policy.id} is on BES ${policy.besId} but its target is on ${target.besId}`);
    }
  }
  // Replica rules: their policy and target exist, and every target's reference count is exactly the
  // policies writing to it plus the replica rules copying to it (what makes FK RESTRICT hold).
  const replicas = await all<{ id: string; policyId: string; targetId: string }>(kv, "replicas");
  const refs = new Map<string, number>();
  for (const p of policies.values()) refs.set(p.targetId, (refs.get(p.targetId) ?? 0) + 1);
  for (const r of replicas.values()) {
    if (!policies.has(r.policyId)) {
      problems.push(`replica rule ${r.id} belongs to missing policy ${r.policyId}`);
    }
    if (!targets.has(r.targetId)) {
      problems.push(`replica rule ${r.id} copies to missing target ${r.targetId}`);
    }
    refs.set(r.targetId, (refs.get(r.targetId) ?? 0) + 1);
  }
  for (const t of targets.values()) {
    if ((t.policyCount ?? 0) !== (refs.get(t.id) ?? 0)) {
      problems.push(
        `storage target ${t.id} counts ${t.policyCount} references but has ${refs.get(t.id) ?? 0}`,
      );
    }
  }
  for (const p of await pointers(kv, "alerts_open")) {
    const alert = alerts.get(p.value);
    if (!alert || alert.status === "resolved") {
      problems.push(`alerts_open points to missing or resolved alert ${p.value}`);
    }
  }
  problems.push(...await checkCounters(kv, alerts));
  problems.push(...await checkHostInvariants(kv, policies));
  problems.push(...await checkPlatformInvariants(kv));
  return problems;
}

/**
 * Third-party platforms (platforms.ts, platform_sync.ts): one platform job per vendor job and one run per
 * vendor run, their indexes one to one; imported jobs and objects belong to a live platform; a platform
 * job's entry in the failed-backups queue is its latest outcome's.
 */
async function checkPlatformInvariants(kv: Deno.Kv): Promise<string[]> {
  const problems: string[] = [];
  const platforms = await all<{ id: string; accountId: string }>(kv, "platforms");
  const jobs = await all<{ id: string; platformId: string; vendorJobId: string; accountId: string }>(
    kv,
    "platform_jobs",
  );
  const byVendor = new Map<string, string>();
  for await (const e of kv.list<string>({ prefix: ["platform_jobs_by_vendor"] })) {
    const job = jobs.get(e.value);
    if (!job || `${job.platformId}/${job.vendorJobId}` !== pairKey(e.key)) {
      problems.push(
        `platform_jobs_by_vendor ${pairKey(e.key)} points to a missing or different job ${e.value}`,
      );
    }
    byVendor.set(e.value, pairKey(e.key));
  }
  const byAccount = new Set<string>();
  for await (const e of kv.list<string>({ prefix: ["platform_jobs_by_account"] })) {
    if (jobs.get(e.value)?.accountId !== e.key[1]) {
      problems.push(`platform_jobs_by_account points to a missing or foreign job ${e.value}`);
    }
    byAccount.add(e.value);
  }
  for (const job of jobs.values()) {
    if (!platforms.has(job.platformId)) {
      problems.push(`platform job ${job.id} belongs to missing platform ${job.platformId}`);
    }
    if (!byVendor.has(job.id) || !byAccount.has(job.id)) {
      problems.push(`platform job ${job.id} is not indexed by vendor id and account`);
    }
  }
  for await (const e of kv.list<ProtectedObject>({ prefix: ["protected_objects"] })) {
    const o = e.value;
    if (o.source.kind === "platform" && !platforms.has(o.source.platformId)) {
      problems.push(`platform object ${o.id} belongs to missing platform ${o.source.platformId}`);
    }
  }
  for await (const e of kv.list<string>({ prefix: ["platform_runs"] })) {
    const run = (await kv.get<{ platform?: { platformId: string; runId: string | null } }>(["runs", e.value]))
      .value;
    if (run?.platform?.platformId !== e.key[1] || run.platform.runId !== e.key[2]) {
      problems.push(`platform_runs ${pairKey(e.key)} points to a missing or different run ${e.value}`);
    }
  }
  for await (const e of kv.list<string>({ prefix: ["runs_failing"] })) {
    const runId = String(e.key[3]);
    const run =
      (await kv.get<{ status: string; policyId: string; platform?: unknown }>(["runs", runId])).value;
    if (!run?.platform) continue; // native runs: runs.ts
    const latest =
      (await kv.get<{ failingKey: Deno.KvKey | null }>(["runs_latest", run.policyId, "bes"])).value;
    if (run.status !== "failed" || JSON.stringify(latest?.failingKey) !== JSON.stringify(e.key)) {
      problems.push(`runs_failing lists platform run ${runId}, which is not its job's latest failure`);
    }
    if (!jobs.has(run.policyId)) {
      problems.push(`runs_failing lists platform run ${runId} of missing platform job ${run.policyId}`);
    }
  }
  return problems;
}

/**
 * The dashboard's counters equal what they count: open alerts per org, and active / at-risk / swept
 * breached protected objects per org.
 */
async function checkCounters(kv: Deno.Kv, alerts: Map<string, Alert>): Promise<string[]> {
  const problems: string[] = [];
  const expected = new Map<string, number>();
  const bump = (key: string) => expected.set(key, (expected.get(key) ?? 0) + 1);
  for (const a of alerts.values()) {
    if (a.status !== "resolved") bump(JSON.stringify(["alert_counts", a.accountId, a.orgId ?? "-", "open"]));
  }
  for (const o of (await all<ProtectedObject>(kv, "protected_objects")).values()) {
    if (o.protection !== "active") continue;
    bump(JSON.stringify(["po_counts", o.accountId, o.orgId, "protected"]));
    if (o.lastBackupStatus === "failed") bump(JSON.stringify(["po_counts", o.accountId, o.orgId, "at_risk"]));
    if (o.breached) bump(JSON.stringify(["po_counts", o.accountId, o.orgId, "breached"]));
  }
  const stored = new Map<string, number>();
  for (const prefix of ["alert_counts", "po_counts"]) {
    for await (const e of kv.list<Deno.KvU64>({ prefix: [prefix] })) {
      stored.set(JSON.stringify(e.key), counterValue(e.value));
    }
  }
  for (const key of new Set([...expected.keys(), ...stored.keys()])) {
    if ((expected.get(key) ?? 0) !== (stored.get(key) ?? 0)) {
      problems.push(`counter ${key} is ${stored.get(key) ?? 0} but counts ${expected.get(key) ?? 0}`);
    }
  }
  return problems;
}

/**
 * Hosts, assignments (invariant 3: at most one per policy and host, which holds when every
 * `assignments_by_policy` pointer and every record agree one to one) and protected objects.
 */
async function checkHostInvariants(kv: Deno.Kv, policies: Map<string, PolicyCore>): Promise<string[]> {
  const problems: string[] = [];
  const hosts = await all<Host>(kv, "hosts");
  const assignments = await all<Assignment>(kv, "assignments");
  const objects = await all<ProtectedObject>(kv, "protected_objects");

  for (const p of await pointers(kv, "hosts_by_account")) {
    if (hosts.get(p.value)?.accountId !== p.key[1]) {
      problems.push(`hosts_by_account points to missing or foreign host ${p.value}`);
    }
  }
  for (const p of await pointers(kv, "hosts_by_public_key")) {
    if (hosts.get(p.value)?.publicKey !== p.key[1]) {
      problems.push(`hosts_by_public_key points to a missing or different host ${p.value}`);
    }
  }

  const byPolicy = new Map(
    (await pointers(kv, "assignments_by_policy")).map((p) => [pairKey(p.key), p.value]),
  );
  const byHost = new Map((await pointers(kv, "assignments_by_host")).map((p) => [pairKey(p.key), p.value]));
  const protectedByHost = new Map(
    (await pointers(kv, "protected_by_host")).map((p) => [pairKey(p.key), p.value]),
  );
  for (const a of assignments.values()) {
    const policy = policies.get(a.policyId);
    const host = hosts.get(a.hostId);
    if (!policy) problems.push(`assignment ${a.id} belongs to missing policy ${a.policyId}`);
    if (!host) problems.push(`assignment ${a.id} assigns missing host ${a.hostId}`);
    if (policy && host && policy.accountId !== host.accountId) {
      problems.push(
        `assignment ${a.id} joins policy ${a.policyId} and host ${a.hostId} of different accounts`,
      );
    }
    if (byPolicy.get(`${a.policyId}/${a.hostId}`) !== a.id) {
      problems.push(`assignment ${a.id} is not the one assignments_by_policy lists for its policy and host`);
    }
    if (byHost.get(`${a.hostId}/${a.policyId}`) !== a.id) {
      problems.push(`assignment ${a.id} is not the one assignments_by_host lists for its host and policy`);
    }
    const object = objects.get(protectedByHost.get(`${a.hostId}/${a.policyId}`) ?? "");
    if (!object) problems.push(`assignment ${a.id} has no protected object`);
    else if (object.protection !== a.state) {
      problems.push(
        `protected object ${object.id} is ${object.protection} but assignment ${a.id} is ${a.state}`,
      );
    }
  }
  for (const [pair, id] of byPolicy) {
    const a = assignments.get(id);
    if (!a || `${a.policyId}/${a.hostId}` !== pair) {
      problems.push(`assignments_by_policy ${pair} points to a missing or different assignment ${id}`);
    }
  }
  for (const [pair, id] of byHost) {
    const a = assignments.get(id);
    if (!a || `${a.hostId}/${a.policyId}` !== pair) {
      problems.push(`assignments_by_host ${pair} points to a missing or different assignment ${id}`);
    }
  }

  for (const [pair, id] of protectedByHost) {
    const o = objects.get(id);
    if (!o || `${o.hostId}/${o.policyId}` !== pair) {
      problems.push(`protected_by_host ${pair} points to a missing or different protected object ${id}`);
    }
  }
  for (const p of await pointers(kv, "protected_by_account")) {
    if (objects.get(p.value)?.accountId !== p.key[1]) {
      problems.push(`protected_by_account points to missing or foreign protected object ${p.value}`);
    }
  }
  // Platform objects (platform sync) have no host or assignment: `platform_objects` is their unique index.
  const platformObjects = new Map<string, string>();
  for await (const e of kv.list<string>({ prefix: ["platform_objects"] })) {
    const o = objects.get(e.value);
    if (
      o?.source.kind !== "platform" || `${o.source.platformId}/${o.source.vendorObjectId}` !== pairKey(e.key)
    ) {
      problems.push(
        `platform_objects ${pairKey(e.key)} points to a missing or different protected object ${e.value}`,
      );
    }
    platformObjects.set(e.value, pairKey(e.key));
  }
  for (const o of objects.values()) {
    if (o.source.kind === "platform") {
      if (!platformObjects.has(o.id)) {
        problems.push(`platform object ${o.id} is not indexed in platform_objects`);
      }
      continue;
    }
    if (protectedByHost.get(`${o.hostId}/${o.policyId}`) !== o.id) {
      problems.push(
        `protected object ${o.id} is not the one protected_by_host lists for its host and policy`,
      );
    }
    const assigned = assignments.get(byPolicy.get(`${o.policyId}/${o.hostId}`) ?? "");
    if (!assigned && o.protection !== "unprotected") {
      problems.push(`protected object ${o.id} is ${o.protection} without an assignment`);
    }
  }
  return problems;
}

/** `a/b` of a two-part index key `[prefix, a, b]`. */
function pairKey(key: Deno.KvKey): string {
  return `${String(key[1])}/${String(key[2])}`;
}
