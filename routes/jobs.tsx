/**
 * Backup > Jobs: every job (native policies and platform jobs imported by platform sync) with its last
 * run and the guide's filters; a job's run history, newest first; the job-level retry (form, plus the
 * RetryJob island on the detail page for actors with backup.manage).
 */
import { HookOutputRow, RUN_TONE, runDuration, RunStatus } from "../components/runs.tsx";
import { PausedBadge, pausedText } from "../components/words.tsx";
import { Hono } from "hono";
import type { ComponentChildren } from "preact";
import { z } from "zod";
import { Island } from "../components/Island.tsx";
import {
  Badge,
  EmptyState,
  formatBytes,
  formatTime,
  PageHeader,
  Pager,
  ShortId,
  SortHeader,
} from "../components/ui.tsx";
import { describeCron } from "../domain/cron_rules.ts";
import { CursorField } from "../domain/cursor.ts";
import { ConflictError, type FieldErrors, ValidationError } from "../domain/errors.ts";
import {
  JOB_TYPES,
  type JobView,
  LAST_STATUSES,
  nextScheduledRun,
  parseJobFilter,
  type RetryFacts,
  retryJob,
} from "../domain/job_views.ts";
import { can } from "../domain/rbac.ts";
import { PLATFORM_TYPE_LABELS, type PlatformRun, type PlatformType } from "../domain/platforms.ts";
import type { Run } from "../domain/runs.ts";
import RetryJob from "../islands/RetryJob.tsx";
import { getJobDetail, getJobList } from "../domain/read_models/jobs.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors } from "./forms.ts";
import { StaleCursorNotice } from "./paging.tsx";
import { redirectWithNotice, render } from "./render.tsx";

export const jobRoutes = new Hono<AppEnv>();

function StatusBadge(props: { status: string | null; waiting?: boolean }) {
  if (!props.status) return <Badge tone="muted">never run</Badge>;
  return (
    <Badge tone={RUN_TONE[props.status] ?? "muted"}>
      {props.waiting ? "waiting for agent" : props.status}
    </Badge>
  );
}

const KIND_LABELS: Record<string, string> = {
  full: "full",
  incremental: "incremental",
  synthetic_full: "synthetic full",
};

/** The kind of a run as shown: a platform run's vendor type, a native run's kind. */
function kindLabel(run: Pick<Run, "kind"> & { platform?: PlatformRun["platform"] }): string {
  return run.platform?.jobType ?? KIND_LABELS[run.kind] ?? run.kind;
}

function scheduleSummary(job: JobView): string {
  if (job.source.kind === "platform") return "scheduled on the platform";
  const s = job.schedules;
  return [
    `full ${describeCron(s.full)}`,
    s.incremental ? `incremental ${describeCron(s.incremental)}` : "",
    s.syntheticFull ? `synthetic full ${describeCron(s.syntheticFull)}` : "",
  ].filter(Boolean).join("; ") + (s.timeZone !== "UTC" ? ` (${s.timeZone})` : "");
}

/** The detail page's Retry panel: what a retry does for this kind of job, the rule, and the island. */
function RetrySection(
  props: { jobId: string; csrfToken: string; facts: RetryFacts; children: ComponentChildren },
) {
  return (
    <section class="panel" id="retry">
      <h2>Retry</h2>
      <p class="hint">
        {props.children}{" "}
        Allowed when the latest run failed or ended with a warning and is marked retryable; retry runs are not
        retryable themselves.
      </p>
      <Island
        name="RetryJob"
        component={RetryJob}
        props={{ jobId: props.jobId, csrfToken: props.csrfToken, facts: props.facts }}
      />
    </section>
  );
}

const FILTER_KEYS = ["q", "source", "status", "type", "orgId", "from", "to", "sort"] as const;

function JobFilters(props: {
  values: Record<string, string>;
  errors?: FieldErrors;
  sources: Array<{ value: string; label: string }>;
  orgs: Array<{ id: string; name: string }>;
}) {
  const v = props.values;
  const e = props.errors ?? {};
  const select = (
    name: string,
    label: string,
    all: string,
    options: Array<{ value: string; label: string }>,
  ) => (
    <select name={name} aria-label={label} aria-invalid={e[name] ? "true" : undefined}>
      <option value="">{all}</option>
      {options.map((o) => (
        <option key={o.value} value={o.value} selected={v[name] === o.value}>{o.label}</option>
      ))}
    </select>
  );
  return (
    <>
      <form method="get" action="/backup/jobs" class="filters" data-testid="job-filters">
        <input
          type="search"
          name="q"
          value={v.q ?? ""}
          placeholder="Policy name or source job id"
          aria-label="Search by policy name or source job id"
          aria-invalid={e.q ? "true" : undefined}
        />
        {select("source", "Source", "All sources", props.sources)}
        {select(
          "status",
          "Last status",
          "Any last status",
          LAST_STATUSES.map((s) => ({ value: s, label: s === "never" ? "never run" : s })),
        )}
        {select(
          "type",
          "Type",
          "All types",
          JOB_TYPES.map((t) => ({ value: t, label: t === "full" ? "full (and synthetic full)" : t })),
        )}
        {select("orgId", "Organization", "All organizations", [
          { value: "account", label: "Account-scoped" },
          ...props.orgs.map((o) => ({ value: o.id, label: o.name })),
        ])}
        <label>
          Last run from{" "}
          <input type="date" name="from" value={v.from ?? ""} aria-invalid={e.from ? "true" : undefined} />
        </label>
        <label>
          to <input type="date" name="to" value={v.to ?? ""} aria-invalid={e.to ? "true" : undefined} />
        </label>
        {v.sort && <input type="hidden" name="sort" value={v.sort} />}
        <button type="submit" class="btn">Filter</button>
        {FILTER_KEYS.some((k) => k !== "sort" && v[k]) && <a href="/backup/jobs">Clear</a>}
      </form>
      {Object.keys(e).length > 0 && (
        <div class="form-error" role="alert" data-testid="filter-errors">
          <p>These filters cannot be used:</p>
          <ul>
            {Object.entries(e).map(([field, message]) => (
              <li key={field}>
                <strong>{FIELD_LABELS[field] ?? field}</strong>: {message}
              </li>
            ))}
          </ul>
        </div>
      )}
      <p class="hint">
        The type is the last run's: native runs are full, incremental or synthetic full (a synthetic full
        counts as full); platform runs take the vendor's type, read as full, incremental, differential,
        snapshot (replicas, array snapshots) or log. Dates are the last run's day in UTC.
      </p>
    </>
  );
}

const FIELD_LABELS: Record<string, string> = {
  q: "Search",
  source: "Source",
  status: "Last status",
  type: "Type",
  orgId: "Organization",
  from: "From",
  to: "To",
  sort: "Sort",
  offset: "Offset",
  limit: "Page size",
  cursor: "Cursor",
};

jobRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const query = c.req.query();
  const parsed = parseJobFilter(query);
  const now = clock();
  const data = await getJobList(kv, actor, { filter: parsed.success ? parsed.data : null }, now);
  const { orgs, orgName, sources } = data;
  const typed = Object.fromEntries(FILTER_KEYS.map((k) => [k, String(query[k] ?? "").slice(0, 200)]));
  if (!parsed.success || !data.jobs) {
    return render(
      c,
      "Jobs",
      (
        <>
          <PageHeader title="Jobs" subtitle="Every backup job with its last run." />
          <JobFilters
            values={typed}
            errors={parsed.success ? undefined : fieldErrors(parsed.error)}
            sources={sources}
            orgs={orgs}
          />
        </>
      ),
      400,
    );
  }
  const filter = parsed.data;
  const { values, total } = data.jobs;
  const keep: Record<string, string> = Object.fromEntries(
    FILTER_KEYS.map((k) => [k, String(filter[k] ?? "")]).filter(([, v]) => v !== ""),
  );
  const filtered = FILTER_KEYS.some((k) => k !== "sort" && filter[k]);
  return render(
    c,
    "Jobs",
    (
      <>
        <PageHeader
          title="Jobs"
          subtitle="Every backup job with its last run: native BES jobs (one per policy) and, once platforms are connected, their synced jobs."
        />
        <JobFilters values={keep} sources={sources} orgs={orgs} />
        {values.length === 0
          ? (
            <EmptyState title={filtered ? "No jobs match these filters" : "No backup jobs yet"}>
              {filtered ? <a href="/backup/jobs">Clear the filters</a> : (
                <>
                  A native job appears here for each <a href="/backup/policies">backup policy</a>.
                </>
              )}
            </EmptyState>
          )
          : (
            <>
              <div class="table-wrap" tabIndex={0}>
                <table class="table table--cards" data-testid="jobs-table" data-run-table>
                  <thead>
                    <tr>
                      <SortHeader label="Job" field="name" sort={filter.sort} query={keep} />
                      <th>Source</th>
                      <th>Organization</th>
                      <th>Type and schedule</th>
                      <th>Last status</th>
                      <th>Last run</th>
                      <SortHeader label="Last run time" field="lastRunAt" sort={filter.sort} query={keep} />
                      <th>Next run</th>
                    </tr>
                  </thead>
                  <tbody>
                    {values.map((j) => {
                      const next = nextScheduledRun(j, now);
                      return (
                        <tr key={j.id} data-testid="job-row">
                          <td data-label="Job">
                            <a href={`/backup/jobs/${j.id}`}>{j.name}</a>
                          </td>
                          <td data-label="Source">
                            {j.sourceName}{" "}
                            <span class="muted">{j.source.kind === "bes" ? "BES" : "platform"}</span>
                          </td>
                          <td data-label="Organization">
                            {j.orgId ? orgName.get(j.orgId) ?? j.orgId : "Account-scoped"}
                          </td>
                          <td title={scheduleSummary(j)} data-label="Type">
                            {j.backupType}{" "}
                            <span class="hint">
                              {j.source.kind === "platform" ? "scheduled on the platform" : [
                                "full",
                                j.schedules.incremental ? "incremental" : "",
                                j.schedules.syntheticFull ? "synthetic full" : "",
                              ].filter(Boolean).join(" + ")}
                            </span>
                          </td>
                          <td class="cell-status" data-label="Last status">
                            <div class="run-status">
                              <StatusBadge status={j.lastRun?.status ?? null} />
                              {j.lastRun?.errorReason && (
                                <span class="run-error" data-testid="run-error">
                                  <code>{j.lastRun.errorReason}</code>
                                </span>
                              )}
                            </div>
                          </td>
                          <td data-label="Last run">
                            {j.lastRun
                              ? `${
                                j.source.kind === "platform"
                                  ? j.lastRun.type
                                  : KIND_LABELS[j.lastRun.kind] ?? j.lastRun.kind
                              }${
                                j.lastRun.trigger !== "schedule"
                                  ? ` (${j.lastRun.trigger.replace("_", "-")})`
                                  : ""
                              }`
                              : "—"}
                          </td>
                          <td data-label="Last run time">{j.lastRun ? formatTime(j.lastRun.at) : "—"}</td>
                          <td data-label="Next run">
                            {next
                              ? formatTime(next)
                              : j.source.kind === "platform"
                              ? (j.enabled ? "on the platform" : "disabled")
                              : j.pausedReason
                              ? pausedText(j.pausedReason)
                              : !j.enabled
                              ? "disabled"
                              : "—"}
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </div>
              <Pager total={total} offset={filter.offset} limit={filter.limit} query={keep} />
            </>
          )}
      </>
    ),
  );
});

const HistoryQuery = z.object({
  /** Checked by the list (a refused one shows the newest runs with a notice). */
  cursor: CursorField,
  limit: z.coerce.number({ error: "must be a number" }).int("must be a whole number").min(1, "must be 1–200")
    .max(200, "must be 1–200").default(50),
});

jobRoutes.get("/:jobId", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const query = Object.fromEntries(Object.entries(c.req.query()).filter(([, v]) => v !== ""));
  const parsed = HistoryQuery.safeParse(query);
  const page = parsed.success ? parsed.data : { cursor: "", limit: 50 };
  const { job, policy, platform, retry, history, staleCursor, org, hosts } = await getJobDetail(
    kv,
    actor,
    { jobId: c.req.param("jobId"), page: { ...page } },
    clock(),
  );
  if (staleCursor) page.cursor = "";
  const manage = can(actor, "backup.manage", { accountId: job.accountId, orgId: job.orgId });
  const last = job.lastRun;
  const orgLabel = job.orgId ? org?.name ?? job.orgId : "Account-scoped";
  const lastRunFacts = (
    <dd data-testid="job-last-run">
      <StatusBadge status={last?.status ?? null} /> {last && (
        <>
          {platform ? last.type : KIND_LABELS[last.kind] ?? last.kind} · {formatTime(last.at)} ·{" "}
          {last.retryable ? "retryable" : "not retryable"}
        </>
      )}
    </dd>
  );
  const historySection = (
    <section class="panel" id="runs">
      <h2>Run history</h2>
      <p class="hint">Newest first; times in UTC.</p>
      <StaleCursorNotice show={staleCursor} />
      {!parsed.success && (
        <p class="form-error" role="alert" data-testid="history-error">
          {Object.entries(fieldErrors(parsed.error)).map(([f, m]) => `${FIELD_LABELS[f] ?? f}: ${m}`)
            .join("; ")} — showing the newest runs instead.
        </p>
      )}
      {history.values.length === 0
        ? (
          <p class="muted">
            {page.cursor
              ? "No older runs."
              : platform
              ? "No runs imported yet: the platform's next sync brings them in."
              : "No runs yet: the scheduler dispatches at the next scheduled time."}
          </p>
        )
        : <RunHistory runs={history.values} hosts={hosts} />}
      <nav class="pager" aria-label="Run history pages">
        {page.cursor && <a href={`/backup/jobs/${job.id}#runs`}>← Newest runs</a>}
        {history.cursor && (
          <a href={`/backup/jobs/${job.id}?cursor=${history.cursor}#runs`} data-testid="older-runs">
            Older runs →
          </a>
        )}
      </nav>
    </section>
  );
  if (platform) {
    const p = platform.platform;
    const j = platform.job;
    const type = PLATFORM_TYPE_LABELS[p.type as PlatformType];
    return render(
      c,
      job.name,
      (
        <>
          <PageHeader
            title={job.name}
            subtitle={`Platform job of ${p.name} (${type}) · source job id ${j.vendorJobId}`}
            actions={<a class="btn" href={`/backup/platforms/${p.id}`}>Platform</a>}
          />
          <div class="grid-2">
            <section class="panel">
              <h2>Job</h2>
              <dl class="facts" data-testid="job-facts">
                <dt>Source</dt>
                <dd>
                  <a href={`/backup/platforms/${p.id}`}>{p.name}</a> ({type})
                </dd>
                <dt>Source job id</dt>
                <dd>
                  <code>{j.vendorJobId}</code>
                </dd>
                <dt>Organization</dt>
                <dd>{orgLabel}</dd>
                <dt>Vendor job type</dt>
                <dd>{j.vendorType} (runs are {j.jobType} unless a run says otherwise)</dd>
                <dt>Schedule</dt>
                <dd>Set on the platform</dd>
                <dt>State</dt>
                <dd>
                  {j.removed
                    ? <Badge tone="muted">removed on the platform</Badge>
                    : j.enabled
                    ? <Badge tone="ok">enabled</Badge>
                    : <Badge tone="muted">disabled on the platform</Badge>}
                </dd>
                <dt>Last run</dt>
                {lastRunFacts}
                <dt>Protected objects</dt>
                <dd>
                  <a href={`/backup/protected?source=platform:${p.id}`}>Objects of {p.name}</a>
                </dd>
              </dl>
            </section>
            {manage && (
              <RetrySection jobId={job.id} csrfToken={c.get("csrfToken") ?? ""} facts={retry.facts}>
                Retrying creates one pending run. The platform's next sync starts the job on{" "}
                {p.name}, and the syncs after it update the run from the platform's session.
              </RetrySection>
            )}
          </div>
          {historySection}
        </>
      ),
      parsed.success ? 200 : 400,
    );
  }
  if (!policy) throw new Error("A native job has a policy");
  return render(
    c,
    job.name,
    (
      <>
        <PageHeader
          title={job.name}
          subtitle={`Native job of BES ${job.sourceName} · source job id ${job.id}`}
          actions={<a class="btn" href={`/backup/policies/${policy.id}`}>Policy settings</a>}
        />
        <div class="grid-2">
          <section class="panel">
            <h2>Job</h2>
            <dl class="facts" data-testid="job-facts">
              <dt>Source</dt>
              <dd>
                <a href={`/backup/engines/${policy.besId}`}>{job.sourceName}</a> (BES)
              </dd>
              <dt>Organization</dt>
              <dd>{orgLabel}</dd>
              <dt>Backup type</dt>
              <dd>{job.backupType}</dd>
              <dt>Schedules</dt>
              <dd>{scheduleSummary(job)}</dd>
              <dt>State</dt>
              <dd>
                {job.pausedReason
                  ? <PausedBadge reason={job.pausedReason} targetId={policy?.targetId} />
                  : job.enabled
                  ? <Badge tone="ok">enabled</Badge>
                  : <Badge tone="muted">disabled</Badge>}
              </dd>
              <dt>Active hosts</dt>
              <dd>{retry.hosts.length}</dd>
              <dt>Last run</dt>
              {lastRunFacts}
            </dl>
          </section>
          {manage && (
            <RetrySection jobId={job.id} csrfToken={c.get("csrfToken") ?? ""} facts={retry.facts}>
              Retrying dispatches a new {last?.kind === "synthetic_full"
                ? `synthetic full on the BES for each of the ${retry.hosts.length} active host${
                  retry.hosts.length === 1 ? "" : "s"
                }`
                : (
                  `${
                    last ? KIND_LABELS[last.kind] ?? last.kind : "backup"
                  } run to each of the ${retry.hosts.length} active host${
                    retry.hosts.length === 1 ? "" : "s"
                  }`
                )}.
            </RetrySection>
          )}
        </div>
        {historySection}
      </>
    ),
    parsed.success ? 200 : 400,
  );
});

/** A time for a table cell (relative and absolute, like every time). */
function shortTime(iso: string | null | undefined) {
  return formatTime(iso);
}

/**
 * The guide's run history columns, one row per run (plus its hook output when there is some). The error
 * sits under the status so both stay in view; on a phone each run is a card, status first.
 */
function RunHistory(props: { runs: Run[]; hosts: Map<string, string> }) {
  return (
    <div class="table-wrap" tabIndex={0}>
      <table class="table table--compact table--cards" data-testid="run-history" data-run-table>
        <thead>
          <tr>
            <th>Status</th>
            <th>Host</th>
            <th>Kind</th>
            <th>Started / ended</th>
            <th>Duration</th>
            <th>Transferred</th>
            <th>Protected</th>
            <th>Restore point</th>
            <th>Retryable</th>
          </tr>
        </thead>
        <tbody>
          {props.runs.flatMap((r) => [
            <tr key={r.id} data-testid="history-row" data-run-id={r.id}>
              <td class="cell-status" data-label="Status">
                <RunStatus
                  run={r}
                  label={r.status === "pending" && !r.jobId && !(r as Partial<PlatformRun>).platform
                    ? "waiting for agent"
                    : undefined}
                />
              </td>
              <td data-label="Host">
                {r.hostId
                  ? props.hosts.get(r.hostId) ?? r.hostId
                  : (r as Partial<PlatformRun>).platform
                  ? "platform"
                  : "BES"}
              </td>
              <td data-label="Kind">
                {kindLabel(r as PlatformRun)}
                {r.trigger !== "schedule" ? ` (${r.trigger.replace("_", "-")})` : ""}
              </td>
              <td data-label="Started / ended">
                {(r as Partial<PlatformRun>).platform
                  ? (r.startedAt
                    ? <span class="nowrap">{shortTime(r.startedAt)}</span>
                    : <span class="muted">scheduled {shortTime(r.scheduledFor)}</span>)
                  : (
                    <a href={`/backup/runs/${r.id}`} title="Run details" class="nowrap">
                      {r.startedAt ? shortTime(r.startedAt) : <>scheduled {shortTime(r.scheduledFor)}</>}
                    </a>
                  )}
                <span class="sub nowrap">{r.endedAt ? <>ended {shortTime(r.endedAt)}</> : "not ended"}</span>
              </td>
              <td data-label="Duration">{runDuration(r)}</td>
              <td class="nowrap" data-label="Transferred">{formatBytes(r.bytesTransferred)}</td>
              <td class="nowrap" data-label="Protected">{formatBytes(r.protectedBytes)}</td>
              <td data-label="Restore point">{r.restorePointId ? <ShortId id={r.restorePointId} /> : "—"}</td>
              <td data-label="Retryable">{r.retryable ? "yes" : "no"}</td>
            </tr>,
            <HookOutputRow key={`${r.id}-hooks`} run={r} colSpan={9} />,
          ])}
        </tbody>
      </table>
    </div>
  );
}

jobRoutes.post("/:jobId/retry", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const id = c.req.param("jobId");
  try {
    const { runs } = await retryJob(kv, actor, id, clock());
    return redirectWithNotice(
      c,
      `/backup/jobs/${id}#runs`,
      `Retry queued: ${runs.length} new run${runs.length === 1 ? "" : "s"}.`,
    );
  } catch (e) {
    if (e instanceof ValidationError || e instanceof ConflictError) {
      return redirectWithNotice(c, `/backup/jobs/${id}`, `Not retried: ${e.message}`);
    }
    throw e;
  }
});
