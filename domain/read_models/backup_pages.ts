/**
 * Read models of the smaller Backup pages: Replicas, Scripts (and a script's delete confirmation), Protected
 * Objects, Getting started, Runs (the list) and one run.
 */
import { anomalyOfRun } from "../anomalies.ts";
import { namesOfRuns } from "../dashboard.ts";
import { EngineFilter, listEngines } from "../engines.ts";
import { readSetupProgress } from "../getting_started.ts";
import { getHost } from "../hosts.ts";
import { getJob } from "../job_queue.ts";
import { listPlatforms } from "../platforms.ts";
import { listPolicies } from "../policies.ts";
import { getPolicyOrRetired } from "../policy_reads.ts";
import { listProtectedObjects, type ProtectedFilter } from "../protected.ts";
import { type Actor, can } from "../rbac.ts";
import { getRecoveryKey } from "../recovery_keys.ts";
import { listReplicas } from "../replicas.ts";
import { jobErrorsPage, requireRun } from "../run_results.ts";
import { listRuns, type RunFilter } from "../runs.ts";
import { listScripts, type Script, scriptUsage } from "../scripts.ts";
import { listTargets, TargetFilter } from "../storage.ts";
import { listOrgs } from "../tenancy.ts";
import { readPage } from "./paging.ts";

/** Backup > Replicas: every rule, the policies the actor may add one to, the targets and engine names. */
export async function getReplicasPage(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const [rows, policies, targets, engines] = await Promise.all([
    listReplicas(kv, actor),
    listPolicies(kv, actor),
    listTargets(kv, actor, TargetFilter.parse({ limit: 200 })),
    listEngines(kv, actor, EngineFilter.parse({ limit: 200 })),
  ]);
  return {
    rows,
    targets,
    manageable: policies.filter((p) =>
      can(actor, "backup.manage", { accountId: p.accountId, orgId: p.orgId })
    ),
    besName: new Map(engines.values.map((e) => [e.id, e.name])),
  };
}

/** Backup > Scripts: the scripts matching `q`, and the organization names. */
export async function getScriptsPage(kv: Deno.Kv, actor: Actor, params: { q: string }, _now: Date) {
  const [scripts, orgs] = await Promise.all([
    listScripts(kv, actor, { q: params.q }),
    listOrgs(kv, actor, actor.accountId!),
  ]);
  return { scripts, orgs, orgName: new Map(orgs.map((o) => [o.id, o.name])) };
}

/** A script's delete confirmation: the hooks that use it. */
export async function getScriptDelete(kv: Deno.Kv, _actor: Actor, params: { script: Script }, _now: Date) {
  return { usage: await scriptUsage(kv, params.script.id) };
}

/** Backup > Protected Objects: the filter's page, and the names its rows and filters show. */
export async function getProtectedPage(
  kv: Deno.Kv,
  actor: Actor,
  params: { filter: ProtectedFilter },
  now: Date,
) {
  const { filter } = params;
  const [{ page, staleCursor }, orgs, engines, host, platforms] = await Promise.all([
    readPage(filter.cursor, (cursor) => listProtectedObjects(kv, actor, { ...filter, cursor }, now)),
    listOrgs(kv, actor, actor.accountId!),
    listEngines(kv, actor, { q: "", status: "", orgId: "", sort: "name", offset: 0, limit: 200 }),
    filter.hostId ? getHost(kv, filter.hostId) : null,
    listPlatforms(kv, actor),
  ]);
  return {
    page,
    staleCursor,
    orgs,
    engines,
    host,
    platforms,
    platformName: new Map(platforms.map((p) => [p.id, p.name])),
    orgName: new Map(orgs.map((o) => [o.id, o.name])),
    engineName: new Map(engines.values.map((e) => [e.id, e.name])),
  };
}

/** Getting started: the checklist, the organizations, and (for an all-scope admin) the recovery key. */
export async function getGettingStarted(kv: Deno.Kv, actor: Actor, _params: unknown, now: Date) {
  const admin = can(actor, "admin") && actor.orgScope === "all";
  const [progress, orgs, recoveryKey] = await Promise.all([
    readSetupProgress(kv, actor, now),
    listOrgs(kv, actor, actor.accountId!),
    admin ? getRecoveryKey(kv, actor.accountId!) : Promise.resolve(undefined),
  ]);
  return { admin, progress, orgs, recoveryKey };
}

/** Backup > Runs: the filter's page of runs (the first when the cursor is refused) with policy and host names. */
export async function getRunList(
  kv: Deno.Kv,
  actor: Actor,
  params: { filter: RunFilter; cursor: string | undefined },
  _now: Date,
) {
  const { page, staleCursor } = await readPage(
    params.cursor,
    (cursor) => listRuns(kv, actor, params.filter, { cursor, limit: 50 }),
  );
  const names = await namesOfRuns(kv, page.values);
  return { page, staleCursor, names };
}

/** Which run the run page shows, and which page of its per-file errors. */
export interface RunDetailParams {
  runId: string;
  errorsPage: number;
}

/** One run: its job, policy (even retired), host, the page of its per-file errors and its anomaly. */
export async function getRunDetail(kv: Deno.Kv, actor: Actor, params: RunDetailParams, _now: Date) {
  const run = await requireRun(kv, actor, params.runId);
  const [job, policy, host] = await Promise.all([
    run.jobId ? getJob(kv, run.jobId) : Promise.resolve(null),
    getPolicyOrRetired(kv, run.policyId),
    run.hostId ? getHost(kv, run.hostId) : Promise.resolve(null),
  ]);
  const errors = await jobErrorsPage(kv, job, params.errorsPage);
  const anomaly = await anomalyOfRun(kv, run.id);
  return { run, job, policy, host, errors, anomaly };
}
