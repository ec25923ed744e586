/**
 * Backup > Jobs (guide, "Backup Job Management"): one view of every backup job with its last run, a
 * job's run history, and the job-level retry.
 *
 * A native job is a policy: its id is the policy id (the "source job id" the search matches), its source
 * is the policy's BES, its runs are the policy's runs. A platform job (domain/platforms.ts) is a vendor
 * job imported by platform sync: its source job id is the vendor's job id, and its runs are indexed in
 * `runs_by_policy` under the platform job's id like a policy's. `listJobs` merges both before
 * filtering, so every filter and the sort apply to both.
 *
 * The last run of a job is its newest run: one reverse list of `runs_by_policy` with limit 1, so the
 * list costs the same whatever the length of a job's history.
 */
import { engineKey, enginesByAccountPrefix } from "./keys/engines.ts";
import { assignmentKey, assignmentsByPolicyPrefix } from "./keys/policies.ts";
import { retryDispatchKey, retryDispatchPrefix, runsByPolicyPrefix } from "./keys/runs.ts";
import { z } from "zod";
import { auditTarget, commitAudited } from "./audit.ts";
import { nextRuns } from "./cron_rules.ts";
import { openIdCursor } from "./cursor.ts";
import type { Engine } from "./engines.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Host, hostKey } from "./hosts.ts";
import { RETRY_SCAN_LIMIT, retryBlockedReason, type RetryFacts } from "./job_rules.ts";
import { batchesOf, DISPATCH_MAX_HOSTS, dispatcher, hostsPerWrite, readDispatchPayload } from "./dispatch.ts";
import { hostsNeedingFull } from "./repositories.ts";
import { getManyValues } from "./kv.ts";
import {
  getPlatform,
  getPlatformJob,
  listVisiblePlatformJobs,
  type Platform,
  PLATFORM_TYPE_LABELS,
  type PlatformJob,
  type PlatformRun,
  readPlatformRetryFacts,
  retryPlatformJob,
} from "./platforms.ts";
import { type Policy, policyKey, requirePolicy } from "./policies.ts";
import {
  compareNameKeys,
  countVisiblePolicies,
  listPolicyNames,
  type PolicyNameEntry,
  policyNameKey,
} from "./policy_names.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { listRunsByPolicy, type Run, type RunKind, type RunStatus } from "./runs.ts";
import { retryGuardKey, runKey } from "./keys/runs.ts";

export { retryBlockedReason, type RetryFacts } from "./job_rules.ts";

/** The guide's job types. Native runs are full, incremental or synthetic full (counted as full). */
export const JOB_TYPES = ["full", "incremental", "differential", "snapshot", "log"] as const;
export type JobType = (typeof JOB_TYPES)[number];

/** Statuses the "last status" filter offers: the guide's five, skipped (engine offline), and never run. */
export const LAST_STATUSES = [
  "success",
  "warning",
  "failed",
  "running",
  "pending",
  "skipped",
  "never",
] as const;
export type LastStatus = (typeof LAST_STATUSES)[number];

export const JOB_SORTS = ["name", "-name", "lastRunAt", "-lastRunAt"] as const;

/** Where a job comes from: a BES of ours (native), or a third-party platform (synced). */
export type JobSource =
  | { kind: "bes"; besId: string }
  | { kind: "platform"; platformId: string; platformType: string; sourceJobId: string };

/** The newest run of a job, as the list shows it. */
export interface LastRun {
  id: string;
  status: RunStatus;
  kind: RunKind;
  /** The guide's type: a synthetic full counts as full. */
  type: JobType;
  trigger: Run["trigger"];
  /** When it started, or when it was scheduled while it has not started. */
  at: string;
  endedAt: string | null;
  retryable: boolean;
  hostId: string | null;
  errorReason: string | null;
}

/** One row of the jobs list (native or platform). */
export interface JobView {
  /** The job id: a native job's is its policy id. */
  id: string;
  name: string;
  source: JobSource;
  /** The BES (or platform) name; the id when it is gone. */
  sourceName: string;
  accountId: string;
  orgId: string | null;
  /** What it backs up: file or image for a native job. */
  backupType: string;
  schedules: { full: string; incremental: string | null; syntheticFull: string | null; timeZone: string };
  enabled: boolean;
  pausedReason: string | null;
  lastRun: LastRun | null;
}

const DateOnly = z.union([z.literal(""), z.iso.date({ error: "must be a date (YYYY-MM-DD)" })]);
const oneOf = (values: readonly string[]) => `must be one of ${values.join(", ")}`;

/** The filters of the jobs page and API. Dates are inclusive UTC days of the last run. */
export const JobFilter = z.object({
  q: z.string().trim().max(200, "must be at most 200 characters").default(""),
  source: z.union([
    z.literal(""),
    z.string().regex(/^(bes|platform):[0-9A-Za-z-]{1,64}$/, "must be a source such as bes:<id>"),
  ]).default(""),
  status: z.union([z.literal(""), z.enum(LAST_STATUSES)], { error: oneOf(LAST_STATUSES) }).default(""),
  type: z.union([z.literal(""), z.enum(JOB_TYPES)], { error: oneOf(JOB_TYPES) }).default(""),
  orgId: z.string().regex(/^[0-9A-Za-z-]{0,64}$/, "must be an organization id or account").default(""),
  from: DateOnly.default(""),
  to: DateOnly.default(""),
  sort: z.enum(JOB_SORTS, { error: oneOf(JOB_SORTS) }).default("name"),
  offset: z.coerce.number({ error: "must be a number" }).int("must be a whole number").min(
    0,
    "must be 0 or more",
  )
    .max(1_000_000, "must be at most 1000000").default(0),
  limit: z.coerce.number({ error: "must be a number" }).int("must be a whole number").min(1, "must be 1–200")
    .max(200, "must be 1–200").default(50),
}).refine((f) => !f.from || !f.to || f.from <= f.to, {
  path: ["to"],
  message: "must be on or after the from date",
});
export type JobFilter = z.infer<typeof JobFilter>;

/** Parses a query string's values (blank fields mean "not set"); the zod result, never a throw. */
export function parseJobFilter(query: Record<string, string | undefined>) {
  const given = Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined && v !== ""));
  return JobFilter.safeParse(given);
}

/** The guide's type of a native run kind (a synthetic full is a full). */
export function jobTypeOf(kind: RunKind): JobType {
  return kind === "incremental" ? "incremental" : "full";
}

function lastRunOf(run: Run): LastRun {
  return {
    id: run.id,
    status: run.status,
    kind: run.kind,
    // A platform run carries the vendor's type (differential, snapshot, log…).
    type: (run as Partial<PlatformRun>).platform?.jobType ?? jobTypeOf(run.kind),
    trigger: run.trigger,
    at: run.startedAt ?? run.scheduledFor,
    endedAt: run.endedAt,
    retryable: run.retryable,
    hostId: run.hostId,
    errorReason: run.error?.reason ?? null,
  };
}

/** The id of a policy's newest run, or null: one key of `runs_by_policy` read backwards. */
async function latestRunId(kv: Deno.Kv, policyId: string): Promise<string | null> {
  const it = kv.list<string>({ prefix: runsByPolicyPrefix(policyId) }, { reverse: true, limit: 1 });
  for await (const e of it) return e.value;
  return null;
}

/** The newest run of a policy, or null. */
export async function latestRun(kv: Deno.Kv, policyId: string): Promise<Run | null> {
  const id = await latestRunId(kv, policyId);
  return id ? (await kv.get<Run>(runKey(id))).value : null;
}

/** The newest run of each policy, by policy id (lists in parallel, runs read 10 at a time). */
async function latestRuns(kv: Deno.Kv, policyIds: string[]): Promise<Map<string, Run>> {
  const runIds: string[] = [];
  for (let i = 0; i < policyIds.length; i += 50) {
    const chunk = await Promise.all(policyIds.slice(i, i + 50).map((id) => latestRunId(kv, id)));
    for (const id of chunk) if (id) runIds.push(id);
  }
  const runs = await getManyValues<Run>(kv, runIds.map((id) => runKey(id)));
  return new Map(runs.map((r) => [r.policyId, r]));
}

function nativeView(policy: Policy, engineName: string | undefined, run: Run | null): JobView {
  return {
    id: policy.id,
    name: policy.name,
    source: { kind: "bes", besId: policy.besId },
    sourceName: engineName ?? policy.besId,
    accountId: policy.accountId,
    orgId: policy.orgId,
    backupType: policy.backupType,
    schedules: {
      full: policy.fullSchedule,
      incremental: policy.incrementalSchedule ?? null,
      syntheticFull: policy.syntheticFullSchedule ?? null,
      timeZone: policy.timeZone ?? "UTC",
    },
    enabled: policy.enabled,
    pausedReason: policy.pausedReason,
    lastRun: run ? lastRunOf(run) : null,
  };
}

/** The view of a platform job; "schedules" are the platform's own, so they are left empty. */
function platformView(job: PlatformJob, platform: Pick<Platform, "name">, run: Run | null): JobView {
  return {
    id: job.id,
    name: job.name,
    source: {
      kind: "platform",
      platformId: job.platformId,
      platformType: job.platformType,
      sourceJobId: job.vendorJobId,
    },
    sourceName: platform.name,
    accountId: job.accountId,
    orgId: job.orgId,
    backupType: job.vendorType,
    schedules: { full: "", incremental: null, syntheticFull: null, timeZone: "UTC" },
    enabled: job.enabled && !job.removed,
    pausedReason: null,
    lastRun: run ? lastRunOf(run) : null,
  };
}

function sourceValue(s: JobSource): string {
  return s.kind === "bes" ? `bes:${s.besId}` : `platform:${s.platformId}`;
}

/** The fields of a job the cheap filters look at (a job view, or a policy's name index entry). */
interface JobFields {
  id: string;
  name: string;
  /** `bes:<id>` or `platform:<id>`. */
  source: string;
  /** The source job id the search matches whole (a native job's is its policy id). */
  sourceJobId: string;
  orgId: string | null;
}

/** True when the job's own fields (not its last run) match the filter. */
function matchesFields(job: JobFields, filter: JobFilter): boolean {
  const needle = filter.q.toLowerCase();
  return (!filter.source || job.source === filter.source) &&
    (!filter.orgId || (filter.orgId === "account" ? job.orgId === null : job.orgId === filter.orgId)) &&
    (!needle || job.name.toLowerCase().includes(needle) || job.sourceJobId.toLowerCase() === needle ||
      job.id.toLowerCase() === needle);
}

function matchesJob(job: JobView, filter: JobFilter): boolean {
  return matchesFields({
    id: job.id,
    name: job.name,
    source: sourceValue(job.source),
    sourceJobId: job.source.kind === "platform" ? job.source.sourceJobId : job.id,
    orgId: job.orgId,
  }, filter);
}

/** True when the job's last run matches the status, type and date filters. */
function matchesLastRun(job: Pick<JobView, "lastRun">, filter: JobFilter): boolean {
  const last = job.lastRun;
  if (filter.status && (filter.status === "never" ? last !== null : last?.status !== filter.status)) {
    return false;
  }
  if (filter.type && last?.type !== filter.type) return false;
  if (filter.from || filter.to) {
    const day = last?.at.slice(0, 10);
    if (!day || (filter.from && day < filter.from) || (filter.to && day > filter.to)) return false;
  }
  return true;
}

/** The filter's BES sources — every BES the actor can see — and their names by id. */
async function engineSources(kv: Deno.Kv, actor: Actor) {
  const keys: Deno.KvKey[] = [];
  if (actor.accountId) {
    for await (const e of kv.list<string>({ prefix: enginesByAccountPrefix(actor.accountId) })) {
      keys.push(engineKey(e.value));
    }
  }
  const visible = (await getManyValues<Engine>(kv, keys))
    .filter((e) => inScope(actor, { accountId: e.accountId, orgId: e.orgId }));
  const sources = visible.map((e) => ({ value: `bes:${e.id}`, label: e.name }))
    .sort((a, b) => a.label.localeCompare(b.label));
  return { sources, engines: new Map(visible.map((e) => [e.id, e.name])) };
}

/** The filter's platform sources: every platform in scope (jobs or not yet). */
function platformSources(platformJobs: Array<{ platform: Platform }>, platforms: Platform[] = []) {
  const byId = new Map([...platforms, ...platformJobs.map((p) => p.platform)].map((p) => [p.id, p]));
  return [...byId.values()].map((p) => ({
    value: `platform:${p.id}`,
    label: `${p.name} (${PLATFORM_TYPE_LABELS[p.type]})`,
  })).sort((a, b) => a.label.localeCompare(b.label));
}

/** The sources (BES and platforms) of the jobs the actor can see, for the filter. */
export async function listJobSources(
  kv: Deno.Kv,
  actor: Actor,
): Promise<Array<{ value: string; label: string }>> {
  authorize(actor, "backup.view");
  const [native, platformJobs] = await Promise.all([
    engineSources(kv, actor),
    listVisiblePlatformJobs(kv, actor),
  ]);
  return [...native.sources, ...platformSources(platformJobs)];
}

/** True when the filter or the sort needs every candidate's last run (not only the page's). */
function needsLastRuns(filter: JobFilter): boolean {
  return Boolean(filter.status || filter.type || filter.from || filter.to) ||
    filter.sort.endsWith("lastRunAt");
}

/** A job the cheap filters kept: a policy's name index entry, or a platform job's view. */
type Candidate =
  & { id: string; name: string; nameKey: string }
  & ({ entry: PolicyNameEntry; view?: undefined } | { entry?: undefined; view: JobView });

/** Merges two lists sorted by (name key, id) — ascending, or descending when `dir` is -1 — into one. */
function mergeByName(a: Candidate[], b: Candidate[], dir: number): Candidate[] {
  const out: Candidate[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && dir * compareNameKeys(a[i], b[j]) <= 0)) out.push(a[i++]);
    else out.push(b[j++]);
  }
  return out;
}

/**
 * The jobs in the actor's scope, filtered and sorted, one page of them (`total` before paging), with the
 * sources the filter can offer (every BES and platform in scope). Native jobs come from the policies' name
 * index (policy_names.ts: small entries already in name order, the search, BES and org filters applied
 * to them), platform jobs from their records; no policy record is read but the page's. Sorted by name
 * with no filter (the page's default), only the index's first offset + limit entries are read and the
 * total comes from the per-org counters, so the page costs the same with 100 policies or 100,000; only
 * the page's newest runs are read unless a filter on the last run's status, type or date, or the sort by
 * last run time, needs every candidate's. Names sort without accents and case ("Été" with "ete"), then
 * by id.
 */
export async function listJobs(
  kv: Deno.Kv,
  actor: Actor,
  filter: JobFilter,
): Promise<{ values: JobView[]; total: number; sources: Array<{ value: string; label: string }> }> {
  authorize(actor, "backup.view");
  const dir = filter.sort.startsWith("-") ? -1 : 1;
  const byName = !filter.sort.endsWith("lastRunAt");
  // The page's default (by name, no filter): the index's first entries and the counters' total suffice.
  const firstEntries = byName && !needsLastRuns(filter) && !filter.q && !filter.source && !filter.orgId;
  const [entries, platformJobs, { sources: nativeSources, engines }, countedTotal] = await Promise.all([
    listPolicyNames(kv, actor, {
      reverse: byName && dir < 0,
      max: firstEntries ? filter.offset + filter.limit : undefined,
    }),
    listVisiblePlatformJobs(kv, actor),
    engineSources(kv, actor),
    firstEntries ? countVisiblePolicies(kv, actor) : Promise.resolve(0),
  ]);
  const sources = [...nativeSources, ...platformSources(platformJobs)];
  const native: Candidate[] = entries.filter((e) =>
    matchesFields(
      { id: e.id, name: e.name, source: `bes:${e.besId}`, sourceJobId: e.id, orgId: e.orgId },
      filter,
    )
  ).map((entry) => ({ id: entry.id, name: entry.name, nameKey: entry.nameKey, entry }));
  const platform: Candidate[] = platformJobs.map(({ job, platform }) => platformView(job, platform, null))
    .filter((view) => matchesJob(view, filter))
    .map((view) => ({ id: view.id, name: view.name, nameKey: policyNameKey(view.name), view }))
    .sort((a, b) => dir * compareNameKeys(a, b));
  const candidates = mergeByName(native, platform, byName ? dir : 1);

  /** The views of the given candidates with their last runs (read now unless given); gone policies drop out. */
  const views = async (page: Candidate[], known?: Map<string, Run>) => {
    const runs = known ?? await latestRuns(kv, page.map((c) => c.id));
    const policies = new Map(
      (await getManyValues<Policy>(kv, page.flatMap((c) => c.entry ? [policyKey(c.id)] : [])))
        .map((p) => [p.id, p]),
    );
    return page.flatMap((c) => {
      const run = runs.get(c.id) ?? null;
      if (c.view) return [run ? { ...c.view, lastRun: lastRunOf(run) } : c.view];
      const policy = policies.get(c.id);
      return policy ? [nativeView(policy, engines.get(policy.besId), run)] : [];
    });
  };

  if (!needsLastRuns(filter)) {
    const page = candidates.slice(filter.offset, filter.offset + filter.limit);
    const total = firstEntries ? countedTotal + platform.length : candidates.length;
    return { values: await views(page), total, sources };
  }
  const runs = await latestRuns(kv, candidates.map((c) => c.id));
  const rows = candidates.map((c) => {
    const run = runs.get(c.id);
    return { c, last: run ? lastRunOf(run) : null };
  }).filter(({ last }) => matchesLastRun({ lastRun: last }, filter));
  if (!byName) {
    // Jobs that never ran sort after every job that did, in both directions.
    rows.sort((a, b) =>
      !a.last || !b.last
        ? (a.last ? -1 : b.last ? 1 : compareNameKeys(a.c, b.c))
        : dir * a.last.at.localeCompare(b.last.at) || compareNameKeys(a.c, b.c)
    );
  }
  const page = rows.slice(filter.offset, filter.offset + filter.limit).map((r) => r.c);
  return { values: await views(page, runs), total: rows.length, sources };
}

/** The next scheduled run of a native job after `now` (null when disabled, paused or never). */
export function nextScheduledRun(job: JobView, now: Date): string | null {
  if (!job.enabled || job.pausedReason || job.source.kind !== "bes") return null;
  const s = job.schedules;
  const next = [s.full, s.incremental, s.syntheticFull].filter((e): e is string => Boolean(e))
    .flatMap((e) => nextRuns(e, now, 1, s.timeZone))
    .sort((a, b) => a.getTime() - b.getTime())[0];
  return next ? next.toISOString() : null;
}

/** An active host of a policy: what a native retry dispatches to. */
export interface ActiveHost {
  id: string;
  hostname: string;
  status: Host["status"];
}

/** The active assignments' hosts of a policy, in host-id order (the order batched dispatch follows). */
export async function activeHostsOf(
  kv: Deno.Kv,
  policyId: string,
  options: { afterHostId?: string; limit?: number } = {},
): Promise<ActiveHost[]> {
  const prefix = assignmentsByPolicyPrefix(policyId);
  const selector = options.afterHostId
    ? { prefix, start: [...prefix, options.afterHostId + "\u0000"] }
    : { prefix };
  const out: ActiveHost[] = [];
  let page: Deno.KvKey[] = [];
  const flush = async () => {
    const assignments = (await getManyValues<{ id: string; hostId: string; policyId: string; state: string }>(
      kv,
      page,
    )).filter((a) => a.state === "active" && a.policyId === policyId);
    const hosts = await getManyValues<Host>(kv, assignments.map((a) => hostKey(a.hostId)));
    const byId = new Map(hosts.map((h) => [h.id, h]));
    for (const a of assignments) {
      const h = byId.get(a.hostId);
      // A decommissioned host's assignments are archived with it; this guards the moment in between.
      if (h && h.status !== "decommissioned") out.push({ id: h.id, hostname: h.hostname, status: h.status });
    }
    page = [];
  };
  for await (const e of kv.list<string>(selector)) {
    if (typeof e.value === "string") page.push(assignmentKey(e.value));
    if (page.length >= 100) await flush();
    if (options.limit && out.length >= options.limit) break;
  }
  await flush();
  out.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  return options.limit ? out.slice(0, options.limit) : out;
}

/** Everything the retry rule and the detail page need about a job right now. */
export interface RetryState {
  facts: RetryFacts;
  latest: Run | null;
  hosts: ActiveHost[];
}

/** Reads the retry facts of a native job (its policy). */
export async function readRetryState(kv: Deno.Kv, policy: Policy): Promise<RetryState> {
  const [latest, hosts] = await Promise.all([latestRun(kv, policy.id), activeHostsOf(kv, policy.id)]);
  let inFlight = 0;
  if (latest && (latest.status === "failed" || latest.status === "warning") && latest.retryable) {
    // Only worth a scan when the latest run alone would allow the retry. Bounded: the newest runs.
    const seen = new Set<string>();
    for (const run of await listRunsByPolicy(kv, policy.id, RETRY_SCAN_LIMIT)) {
      const object = run.hostId ?? "bes";
      if (seen.has(object)) continue; // only each host's newest run counts
      seen.add(object);
      if (run.status === "pending" || run.status === "running") inFlight++;
    }
  }
  return {
    latest,
    hosts,
    facts: {
      latest: latest
        ? { status: latest.status, retryable: latest.retryable, trigger: latest.trigger, kind: latest.kind }
        : null,
      inFlight,
      activeHosts: hosts.length,
      pausedReason: policy.pausedReason,
    },
  };
}

/**
 * A job with what its detail page shows: the view, the retry facts and the active hosts — and its
 * policy (native) or platform job and platform (synced; no hosts).
 */
export async function getJob(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
): Promise<
  {
    job: JobView;
    policy: Policy | null;
    platform: { job: PlatformJob; platform: Platform } | null;
    retry: RetryState;
  }
> {
  authorize(actor, "backup.view");
  const synced = await findPlatformJob(kv, actor, id);
  if (synced) {
    const { facts, latest } = await readPlatformRetryFacts(kv, synced.job, synced.platform);
    return {
      job: platformView(synced.job, synced.platform, latest),
      policy: null,
      platform: synced,
      retry: { facts, latest, hosts: [] },
    };
  }
  const policy = await requireJobPolicy(kv, actor, id);
  const [engine, retry] = await Promise.all([
    kv.get<Engine>(engineKey(policy.besId)),
    readRetryState(kv, policy),
  ]);
  return { job: nativeView(policy, engine.value?.name, retry.latest), policy, platform: null, retry };
}

/** The platform job of that id with its platform, if it is one and the actor may see it. */
async function findPlatformJob(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
): Promise<{ job: PlatformJob; platform: Platform } | null> {
  const job = await getPlatformJob(kv, id);
  if (!job) return null;
  const platform = await getPlatform(kv, job.platformId);
  if (!platform || platform.status === "deleting" || !inScope(actor, job)) {
    throw new NotFoundError(`Job ${id} not found`);
  }
  return { job, platform };
}

async function requireJobPolicy(kv: Deno.Kv, actor: Actor, id: string): Promise<Policy> {
  try {
    return await requirePolicy(kv, actor, id);
  } catch (e) {
    if (e instanceof NotFoundError) throw new NotFoundError(`Job ${id} not found`);
    throw e;
  }
}

/**
 * A job's runs, newest first, a page at a time: `cursor` is the id of the last run of the previous page
 * ("" when there is no more). Throws NotFoundError outside the actor's scope, InvalidCursorError for a
 * cursor that is not a run id.
 */
export async function listJobRuns(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  page: { cursor?: string; limit: number },
): Promise<{ values: Run[]; cursor: string }> {
  authorize(actor, "backup.view");
  const owner = (await findPlatformJob(kv, actor, id))?.job ?? await requireJobPolicy(kv, actor, id);
  const prefix = runsByPolicyPrefix(owner.id);
  const cursor = openIdCursor(page.cursor);
  const selector = cursor ? { prefix, end: [...prefix, cursor] } : { prefix };
  const ids: string[] = [];
  for await (const e of kv.list<string>(selector, { reverse: true, limit: page.limit + 1 })) {
    ids.push(e.value);
  }
  const more = ids.length > page.limit;
  const shown = ids.slice(0, page.limit);
  const values = (await getManyValues<Run>(kv, shown.map((r) => runKey(r))))
    .filter((r) => inScope(actor, { accountId: r.accountId, orgId: r.orgId }));
  return { values, cursor: more ? shown[shown.length - 1] : "" };
}

/** Hosts per atomic write of a retry at most (the shared dispatch's limit, dispatch.ts). */
export const RETRY_BATCH = DISPATCH_MAX_HOSTS;

/** A retry too big for one write: the hosts after `afterHostId` still need their runs. */
interface RetryDispatch {
  policyId: string;
  kind: RunKind;
  retryOf: string;
  afterHostId: string;
  /** Hosts per write, fixed when the retry started. */
  perWrite: number;
  actorLabel: string;
  createdAt: string;
}

/** What a retry created: the runs and the hosts they went to (more may follow while `pending`). */
export interface RetryOutcome {
  runs: Run[];
  hosts: ActiveHost[];
  /** True when a crash left part of a large retry for `resumeJobRetries`. */
  pending: boolean;
}

/**
 * The retry dispatch of the policy's latest run kind for a batch of hosts: every active host gets its job,
 * trigger `retry` (an incremental as a full for a host new to the policy's repository generation).
 */
async function retryDispatcher(
  kv: Deno.Kv,
  policy: Policy,
  kind: RunKind,
  payload: Record<string, unknown>,
  besId: string,
  hosts: Array<ActiveHost | null>,
) {
  const ids = kind === "incremental" ? hosts.flatMap((h) => h ? [h.id] : []) : [];
  const needsFull = await hostsNeedingFull(kv, policy, ids);
  return dispatcher({ policy, kind, payload, besId, trigger: "retry", offline: null, needsFull });
}

/**
 * Retries a job (guide, "Retrying a Failed Job"): its latest run must be failed or warning and marked
 * retryable (`retryBlockedReason` says why not, and the same words reach the page). A native job's retry
 * dispatches a job of the latest run's kind for every active host of the policy — a backup to its agent,
 * or a synthetic full of its namespace to the BES. Retry runs are not retryable.
 *
 * Racing retries create one set of runs: the first write must create the latest run's guard key (the
 * same key `retryRun` creates, so a job retry and a run retry of that run exclude each other too). The
 * guard, the audit entry `job.retry` and the runs with their jobs commit in one atomic operation. A
 * policy with more hosts than fit in one write (RETRY_BATCH, or fewer for large payloads) also records
 * a dispatch cursor in that first write; each later write checks and advances the cursor with its batch
 * of hosts (in host-id order), so every host gets exactly one run even when `resumeJobRetries` finishes
 * a retry a crash interrupted.
 *
 * A platform job's retry is one pending run that the platform's next sync starts (`retryPlatformJob`).
 *
 * Throws NotFoundError outside the actor's scope, ForbiddenError without backup.manage, ValidationError
 * when the rule refuses (message = the reason), ConflictError when another retry won the race or the
 * BES or target is gone.
 * Retry glossary: the **job retry** (README › Architecture › "Retry: six meanings").
 */
export async function retryJob(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  now: Date,
  /** `perWrite`: hosts per atomic write (default from RETRY_BATCH and the payload size; tests use small ones). */
  options: { perWrite?: number } = {},
): Promise<RetryOutcome> {
  if (await findPlatformJob(kv, actor, id)) {
    return { runs: [await retryPlatformJob(kv, actor, id, now)], hosts: [], pending: false };
  }
  const policy = await requireJobPolicy(kv, actor, id);
  authorize(actor, "backup.manage", { accountId: policy.accountId, orgId: policy.orgId });
  const state = await readRetryState(kv, policy);
  const reason = retryBlockedReason(state.facts);
  if (reason || !state.latest) {
    throw new ValidationError(reason ?? "Nothing to retry", { job: reason ?? "Nothing to retry" });
  }
  const latest = state.latest;
  const kind = latest.kind;
  const { payload, besId } = await readDispatchPayload(kv, policy, kind);
  // A synthetic full too goes per active host (each a BES job for that host's namespace).
  const targets: ActiveHost[] = state.hosts;
  const perWrite = options.perWrite ?? hostsPerWrite(payload);
  const batches = batchesOf(state.hosts, perWrite);
  const first = batches[0];

  const op = kv.atomic().check({ key: retryGuardKey(latest.id), versionstamp: null });
  const dispatch = await retryDispatcher(kv, policy, kind, payload, besId, first);
  const runs = first.map((host) => dispatch(op, host, now));
  op.set(retryGuardKey(latest.id), runs[0].id);
  const rest = batches.length > 1;
  if (rest) {
    const dispatch: RetryDispatch = {
      policyId: policy.id,
      kind,
      retryOf: latest.id,
      afterHostId: first[first.length - 1]!.id,
      perWrite,
      actorLabel: actor.label,
      createdAt: now.toISOString(),
    };
    op.set(retryDispatchKey(policy.id, latest.id), dispatch);
  }
  await commitAudited(
    op,
    actor,
    {
      ...auditTarget("job", policy),
      action: "job.retry",
      summary: kind === "synthetic_full"
        ? `Retried job ${policy.name}: ${targets.length} synthetic full${
          targets.length === 1 ? "" : "s"
        } on the BES for its active hosts after ${latest.status} run ${latest.id}`
        : `Retried job ${policy.name}: ${targets.length} ${kind} run${
          targets.length === 1 ? "" : "s"
        } on its active hosts after ${latest.status} run ${latest.id}`,
    },
    now,
    "This job has already been retried",
  );
  if (!rest) return { runs, hosts: first, pending: false };
  const more = await continueRetry(kv, retryDispatchKey(policy.id, latest.id), now);
  return {
    runs: [...runs, ...more.runs],
    hosts: [...first, ...more.hosts],
    pending: more.pending,
  };
}

/** Writes the remaining batches of a large retry, each checked against (and advancing) its cursor. */
async function continueRetry(
  kv: Deno.Kv,
  key: Deno.KvKey,
  now: Date,
): Promise<{ runs: Run[]; hosts: ActiveHost[]; pending: boolean }> {
  const runs: Run[] = [];
  const hosts: ActiveHost[] = [];
  for (let conflicts = 0; conflicts < 20;) {
    const entry = await kv.get<RetryDispatch>(key);
    const d = entry.value;
    if (!d) return { runs, hosts, pending: false };
    const policy = (await kv.get<Policy>(policyKey(d.policyId))).value;
    if (!policy) {
      await kv.atomic().check(entry).delete(key).commit();
      return { runs, hosts, pending: false };
    }
    const { payload, besId } = await readDispatchPayload(kv, policy, d.kind).catch((e) => {
      if (e instanceof ConflictError) return { payload: null, besId: "" };
      throw e;
    });
    if (!payload) {
      await kv.atomic().check(entry).delete(key).commit(); // BES or target gone: nothing to dispatch to
      return { runs, hosts, pending: false };
    }
    const perWrite = d.perWrite;
    const batch = await activeHostsOf(kv, d.policyId, { afterHostId: d.afterHostId, limit: perWrite });
    const op = kv.atomic().check(entry);
    const dispatch = await retryDispatcher(kv, policy, d.kind, payload, besId, batch);
    const written = batch.map((h) => dispatch(op, h, now));
    if (batch.length < perWrite) op.delete(key);
    else op.set(key, { ...d, afterHostId: batch[batch.length - 1].id });
    if ((await op.commit()).ok) {
      runs.push(...written);
      hosts.push(...batch);
      if (batch.length < perWrite) return { runs, hosts, pending: false };
    } else {
      conflicts++; // another process (resumeJobRetries) advanced the cursor: read it again
    }
  }
  return { runs, hosts, pending: true };
}

/**
 * Finishes retries that a crash (or a lost race with this job) left part-way: for each recorded dispatch
 * cursor, writes the remaining hosts' runs. Idempotent; meant for the minute tick. Returns runs created.
 * Retry glossary: finishes a **job retry** (README › Architecture › "Retry: six meanings").
 */
export async function resumeJobRetries(kv: Deno.Kv, now: Date): Promise<number> {
  let created = 0;
  for await (const e of kv.list<RetryDispatch>({ prefix: retryDispatchPrefix() })) {
    created += (await continueRetry(kv, e.key, now)).runs.length;
  }
  return created;
}
