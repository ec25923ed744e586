/**
 * Backup > Dashboard (guide, "Monitoring and Dashboard"). The page renders every section on the server
 * (it works without JavaScript), each on its own: a section whose data source fails shows its own error
 * and the others render. Each section is also a fragment at /backup/dashboard/sections/:name, which the
 * DashboardSection island refreshes from. Until everything is set up, a getting-started checklist leads
 * (components/getting_started.tsx). Actions (retry, health check, integrity verify) need backup.manage
 * and are not rendered without it; deep links into Restore fail closed there for users without
 * backup.restore.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { Context } from "hono";
import type { ComponentChildren } from "preact";
import { renderToString as renderHtml } from "preact-render-to-string";
import { GETTING_STARTED_PATH, SetupChecklist } from "../components/getting_started.tsx";
import { NowContext } from "../components/time.tsx";
import { Island } from "../components/Island.tsx";
import {
  Badge,
  Csrf,
  formatBytes,
  formatDuration,
  formatTime,
  PageHeader,
  ShortId,
  type Tone,
} from "../components/ui.tsx";
import { last24hStart, type readHeatmap } from "../domain/dashboard.ts";
import { getDashboard, getDashboardSection } from "../domain/read_models/dashboard.ts";
import { ProvenRestoresCard } from "../components/proven_restores.tsx";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../domain/errors.ts";
import { can } from "../domain/rbac.ts";
import { retrySingleRun } from "../domain/run_retry.ts";
import { STORAGE_CHECKS, type StorageCheck, TARGET_TYPE_LABELS } from "../domain/storage.ts";
import DashboardSection, { type Props as DashboardSectionProps } from "../islands/DashboardSection.tsx";
import { requires } from "./access.ts";
import { RECOVERY_KEY_PATH } from "./admin_recovery_key.tsx";
import type { AppEnv } from "./env.ts";
import { redirectWithNotice, render } from "./render.tsx";
import { STORAGE_CHECK_SEGMENTS, storageCheckHandler } from "./storage_checks.ts";

export const dashboardRoutes = new Hono<AppEnv>();

/** The heatmap fragment's page of policies; a bad value falls back to the first page. */
const HeatmapQuery = z.object({ offset: z.coerce.number().int().min(0).max(1_000_000).catch(0) });

/** The sections in page order: name, title, and the guide's colour for the exception queues. */
export const SECTIONS = [
  { name: "summary", title: "Protection", tone: "neutral" },
  { name: "engines", title: "Backup engines", tone: "neutral" },
  { name: "activity", title: "Last 24 hours", tone: "neutral" },
  { name: "failed", title: "Failed backups", tone: "red" },
  { name: "suspicious", title: "Suspicious changes", tone: "red" },
  { name: "rpo", title: "RPO breaches", tone: "orange" },
  { name: "storage", title: "Storage health alerts", tone: "yellow" },
  { name: "verification", title: "Verification failures", tone: "yellow" },
  { name: "proven", title: "Last proven restore", tone: "neutral" },
  { name: "heatmap", title: "Backup outcomes, last 30 days", tone: "neutral" },
] as const;
type SectionName = (typeof SECTIONS)[number]["name"];

dashboardRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock, logger } = c.get("deps");
  const actor = c.get("actor")!;
  const [sections, { progress, progressError, recoveryKeyMissing }] = await Promise.all([
    Promise.all(SECTIONS.map((s) => renderSection(c, s.name))),
    getDashboard(kv, actor, {}, clock()),
  ]);
  // The checklist is a guide, not a data source to alarm about: when it fails, the page goes without it.
  if (progressError !== null) {
    logger.log("error", "getting_started_failed", { requestId: c.get("requestId"), error: progressError });
  }
  return render(
    c,
    "Dashboard",
    <>
      <PageHeader
        title="Dashboard"
        subtitle="Exceptions first: what failed, what is at risk, what needs a look."
      />
      {recoveryKeyMissing && (
        <p class="notice notice--warn" data-testid="recovery-key-missing">
          The account recovery key has not been created yet: without it, the backups cannot be opened if the
          control plane is lost. <a href={RECOVERY_KEY_PATH}>Create and download it</a>
        </p>
      )}
      {progress && !progress.complete && (
        <SetupChecklist progress={progress} manage={can(actor, "backup.manage")} />
      )}
      <div class="dash-grid">
        {SECTIONS.map((s, i) => {
          const rendered = sections[i];
          const props: DashboardSectionProps = {
            url: `/backup/dashboard/sections/${s.name}`,
            title: s.title,
            tone: s.tone,
            state: rendered.state,
            ...(rendered.state === "error" ? { error: rendered.error } : {}),
          };
          return (
            <div key={s.name} class={`dash-cell dash-cell-${s.name}`} id={`section-${s.name}`}>
              <Island
                name="DashboardSection"
                component={DashboardSection}
                props={props}
                serverProps={rendered.state === "ready" ? { html: rendered.html } : {}}
              />
            </div>
          );
        })}
      </div>
    </>,
  );
});

type Rendered = { state: "ready"; html: string } | { state: "error"; error: string };

/** Renders one section, or its error (logged) when its data source fails; scope errors propagate. */
async function renderSection(c: Context<AppEnv>, name: SectionName): Promise<Rendered> {
  try {
    return { state: "ready", html: await section(c, name) };
  } catch (error) {
    if (error instanceof ForbiddenError || error instanceof NotFoundError) throw error;
    c.get("deps").logger.log("error", "dashboard_section_failed", {
      section: name,
      requestId: c.get("requestId"),
      error: String(error),
    });
    return {
      state: "error",
      error: `The ${name} data source failed (request ${
        c.get("requestId")
      }). The other sections are unaffected.`,
    };
  }
}

function Metric(props: { label: string; value: number; tone?: Tone; href?: string }) {
  const value = <span class={`metric-value${props.tone ? ` tone-${props.tone}` : ""}`}>{props.value}</span>;
  return (
    <div class="metric" data-metric={props.label}>
      {props.href ? <a href={props.href}>{value}</a> : value}
      <span class="metric-label">{props.label}</span>
    </div>
  );
}

/** An empty queue: green when there is something being watched and all is well, muted when nothing is. */
function Empty(props: { text: string; quiet?: boolean; children?: ComponentChildren }) {
  return (
    <p class={props.quiet ? "dash-empty dash-empty--quiet" : "dash-empty"}>
      {props.quiet ? "" : <span aria-hidden="true">✓</span>} {props.text}
      {props.children}
    </p>
  );
}

/** Renders one section's fragment. Throws what its data source throws. */
async function section(c: Context<AppEnv>, name: SectionName): Promise<string> {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const now = clock();
  const manage = can(actor, "backup.manage");
  const csrf = c.get("csrfToken") ?? "";
  // Times in a fragment read the request's clock, like the pages' (routes/render.tsx).
  const renderToString = (node: ComponentChildren) =>
    renderHtml(<NowContext.Provider value={now}>{node}</NowContext.Provider>);
  const restoreLink = (hostId: string | null, restorePointId: string | null) =>
    "/backup/restore?" +
    new URLSearchParams({ ...(hostId ? { hostId } : {}), ...(restorePointId ? { restorePointId } : {}) });
  switch (name) {
    case "summary": {
      const s = await getDashboardSection(kv, actor, { name: "summary" }, now);
      return renderToString(
        <div class="metrics">
          <Metric label="Protected" value={s.protected} href="/backup/protected?protection=active" />
          <Metric
            label="At risk"
            value={s.atRisk}
            tone={s.atRisk ? "bad" : undefined}
            href="/backup/protected?lastBackupStatus=failed&protection=active"
          />
          <Metric
            label="RPO breach"
            value={s.rpoBreach}
            tone={s.rpoBreach ? "warn" : undefined}
            href="/backup/protected?rpoBreach=true"
          />
          <Metric label="Unprotected hosts" value={s.unprotectedHosts} href="/backup/hosts" />
        </div>,
      );
    }
    case "engines": {
      const e = await getDashboardSection(kv, actor, { name: "engines" }, now);
      if (e.online + e.offline + e.other === 0) {
        return renderToString(
          <Empty text="No backup engine registered yet." quiet>
            {" "}
            <a href={GETTING_STARTED_PATH}>Start one</a>
          </Empty>,
        );
      }
      return renderToString(
        <div class="metrics">
          <Metric
            label="BES online"
            value={e.online}
            tone={e.online ? "ok" : undefined}
            href="/backup/engines"
          />
          <Metric
            label="BES offline"
            value={e.offline}
            tone={e.offline ? "bad" : undefined}
            href="/backup/engines?status=offline"
          />
          {e.other > 0 && <Metric label="Pending or degraded" value={e.other} href="/backup/engines" />}
        </div>,
      );
    }
    case "activity": {
      const a = await getDashboardSection(kv, actor, { name: "activity" }, now);
      // The runs behind each count: the runs list filtered by status, ended within the same 24 hours.
      const since = last24hStart(now).toISOString();
      const runsOf = (status: string) => `/backup/runs?${new URLSearchParams({ status, endedAfter: since })}`;
      return renderToString(
        <div class="metrics">
          <Metric
            label="Success"
            value={a.success}
            tone={a.success ? "ok" : undefined}
            href={runsOf("success")}
          />
          <Metric
            label="Failed"
            value={a.failed}
            tone={a.failed ? "bad" : undefined}
            href={runsOf("failed")}
          />
          <Metric
            label="Warning"
            value={a.warning}
            tone={a.warning ? "warn" : undefined}
            href={runsOf("warning")}
          />
        </div>,
      );
    }
    case "proven": {
      const card = await getDashboardSection(kv, actor, { name: "proven" }, now);
      if (!card.policies && !card.rows.length) {
        return renderToString(<Empty text="No backup policies yet." quiet />);
      }
      return renderToString(
        <>
          <ProvenRestoresCard card={card} />
          <p class="sub">
            Proven by{" "}
            <a href="/backup/drills">restore drills</a>: restored, every byte verified, time measured.
          </p>
        </>,
      );
    }
    case "failed": {
      const { rows, watched } = await getDashboardSection(kv, actor, { name: "failed" }, now);
      if (!rows.length) {
        return renderToString(
          watched
            ? <Empty text="No failed backups: no host's latest backup failed" />
            : <Empty text="No backups set up yet." quiet />,
        );
      }
      return renderToString(
        <table class="table compact table--cards" data-run-table>
          <thead>
            <tr>
              <th>Backup</th>
              <th>Failure</th>
              {manage && <th>Action</th>}
            </tr>
          </thead>
          <tbody>
            {rows.map(({ run, policyName, hostName }) => (
              <tr key={run.id} data-run={run.id}>
                <td data-label="Backup">
                  <a href={`/backup/jobs/${run.policyId}`}>{policyName}</a>
                  <span class="sub">{hostName ?? ("platform" in run ? "platform" : "BES")}</span>
                </td>
                <td class="cell-status" data-label="Failure">
                  <div class="run-status">
                    <Badge tone="bad">{run.status}</Badge>
                    <span class="sub">{formatTime(run.endedAt)}</span>
                    {(run.errorLine || run.error) && (
                      <span class="run-error" title={run.error?.message} data-testid="run-error">
                        {run.error?.reason && <code>{run.error.reason}</code>} {run.errorLine ?? ""}
                      </span>
                    )}
                  </div>
                </td>
                {manage && (
                  <td data-label="Action">
                    {run.retryable
                      ? (
                        <form method="post" action={`/backup/dashboard/runs/${run.id}/retry`}>
                          <Csrf token={csrf} />
                          <button type="submit" class="btn small">Retry</button>
                        </form>
                      )
                      : (
                        <span class="muted" title="The engine marked this failure as not retryable">
                          not retryable
                        </span>
                      )}
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>,
      );
    }
    case "suspicious": {
      const { rows, watched } = await getDashboardSection(kv, actor, { name: "suspicious" }, now);
      if (!rows.length) {
        return renderToString(
          watched
            ? <Empty text="No suspicious change: every backup within its host's usual change rate" />
            : <Empty text="No backups to watch yet." quiet />,
        );
      }
      return renderToString(
        <>
          <table class="table compact table--cards" data-testid="suspicious-changes">
            <thead>
              <tr>
                <th>Host</th>
                <th>Why</th>
                <th>Status</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((a) => (
                <tr key={a.id} data-anomaly={a.id}>
                  <td data-label="Host">
                    <a href={`/backup/anomalies/${a.id}`}>{a.hostName}</a>
                    <span class="sub">{a.policyName} · {formatTime(a.flaggedAt)}</span>
                  </td>
                  <td data-label="Why">{a.verdict.reasons.join("; ")}</td>
                  <td class="cell-status" data-label="Status">
                    <Badge tone="bad">
                      {a.status === "pending" ? "review · prune frozen" : "incident · prune frozen"}
                    </Badge>
                    {manage && a.status === "pending" && (
                      <span class="sub">
                        <a href={`/backup/anomalies/${a.id}#review`}>Review</a>
                      </span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p>
            <a href="/backup/anomalies">All suspicious changes →</a>
          </p>
        </>,
      );
    }
    case "rpo": {
      const { rows, watched } = await getDashboardSection(kv, actor, { name: "rpo" }, now);
      if (!rows.length) {
        return renderToString(
          watched
            ? <Empty text="All objects within RPO" />
            : <Empty text="No protected objects yet: nothing to measure against an RPO." quiet />,
        );
      }
      return renderToString(
        <>
          <table class="table compact table--cards">
            <thead>
              <tr>
                <th>Object</th>
                <th>Host</th>
                <th>Last backup</th>
                <th>RPO</th>
                <th>Breach</th>
              </tr>
            </thead>
            <tbody>
              {rows.map(({ object, breachMs }) => (
                <tr key={object.id} data-object={object.id}>
                  {object.source.kind === "platform"
                    ? (
                      <>
                        <td data-label="Object">
                          <a
                            href={`/backup/protected?${new URLSearchParams({
                              source: `platform:${object.source.platformId}`,
                              q: object.name,
                            })}`}
                            title="Backed up by a third-party platform: restores happen there"
                          >
                            {object.name} ({object.type})
                          </a>
                        </td>
                        <td data-label="Host">
                          <a href={`/backup/platforms/${object.source.platformId}`}>platform</a>
                        </td>
                      </>
                    )
                    : (
                      <>
                        <td data-label="Object">
                          <a
                            href={restoreLink(object.hostId, object.lastRestorePointId ?? null)}
                            title="Open Restore for this host and its latest restore point"
                          >
                            {object.name} ({object.type})
                          </a>
                        </td>
                        <td data-label="Host">
                          <a href={`/backup/hosts/${object.hostId}`}>{object.name}</a>
                        </td>
                      </>
                    )}
                  <td data-label="Last backup">{formatTime(object.lastBackupAt)}</td>
                  <td data-label="RPO">{object.rpoHours} h</td>
                  <td class="cell-status" data-label="Breach">
                    <Badge tone="warn">{formatDuration(breachMs)}</Badge>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p>
            <a href="/backup/protected?rpoBreach=true">All objects in breach →</a>
          </p>
        </>,
      );
    }
    case "storage": {
      if (c.get("deps").config.faults.includes("dashboard.storage")) {
        throw new Error("Storage health is unavailable (fault injected by CADRES_FAULTS)");
      }
      const { targets, hasTargets } = await getDashboardSection(kv, actor, { name: "storage" }, now);
      if (!targets.length) {
        return renderToString(
          hasTargets ? <Empty text="All storage healthy" /> : <Empty text="No storage targets yet." quiet />,
        );
      }
      return renderToString(
        <div class="cards">
          {targets.map((t) => (
            <article key={t.id} class={`card health-${t.health}`} data-target={t.id}>
              <h3>
                <a href={`/backup/storage/${t.id}`}>{t.name}</a>
              </h3>
              <p>
                {TARGET_TYPE_LABELS[t.type]} ·{" "}
                {t.capacity ? `${t.capacity.usagePercent.toFixed(1)} % used` : "usage unknown"}
                {t.capacity ? ` · ${formatBytes(t.capacity.totalBytes - t.capacity.usedBytes)} free` : ""}
              </p>
              <p>
                <Badge tone={t.health === "critical" ? "bad" : "warn"}>{t.health}</Badge> · last check{" "}
                {formatTime(t.capacity?.at ?? null)}
              </p>
              {manage && (
                <div class="actions">
                  {(Object.keys(STORAGE_CHECKS) as StorageCheck[]).map((check) => (
                    <form
                      key={check}
                      method="post"
                      action={`/backup/dashboard/storage/${t.id}/${STORAGE_CHECK_SEGMENTS[check]}`}
                    >
                      <Csrf token={csrf} />
                      <button type="submit" class="btn small">
                        {check === "health_check" ? "Health check" : "Verify integrity"}
                      </button>
                    </form>
                  ))}
                </div>
              )}
            </article>
          ))}
        </div>,
      );
    }
    case "verification": {
      const { rows, watched } = await getDashboardSection(kv, actor, { name: "verification" }, now);
      if (!rows.length) {
        return renderToString(
          watched
            ? <Empty text="All verifications passing" />
            : <Empty text="No backups to verify yet." quiet />,
        );
      }
      return renderToString(
        <table class="table compact table--cards">
          <thead>
            <tr>
              <th>Restore point</th>
              <th>Host</th>
              <th>Policy</th>
              <th>Type</th>
              <th>Completed</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(({ point, policyName, hostName }) => (
              <tr key={point.id} data-point={point.id}>
                <td data-label="Restore point">
                  <a href={restoreLink(point.hostId, point.id)} aria-label={`Restore point ${point.id}`}>
                    <ShortId id={point.id} />
                  </a>
                </td>
                <td data-label="Host">{hostName ?? "BES"}</td>
                <td data-label="Policy">{policyName}</td>
                <td data-label="Type">{point.type}</td>
                <td data-label="Completed">{formatTime(point.completedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>,
      );
    }
    case "heatmap": {
      const { offset } = HeatmapQuery.parse(c.req.query());
      const { rows, total, dayLabels } = await getDashboardSection(
        kv,
        actor,
        { name: "heatmap", offset },
        now,
      );
      if (!rows.length) return renderToString(<Empty text="No backup policies yet" quiet />);
      return renderToString(<Heatmap rows={rows} dayLabels={dayLabels} total={total} offset={offset} />);
    }
  }
}

/** A mark in the cells that need a look, so colour is not the only thing telling them apart. */
const HEATMAP_GLYPH: Record<string, string> = { warning: "!", mixed: "/", failed: "×" };

function cellTone(d: { success: number; warning: number; failed: number }): string {
  if (d.failed && !d.success && !d.warning) return "failed";
  if (d.failed) return "mixed";
  if (d.warning) return "warning";
  if (d.success) return "success";
  return "none";
}

function Heatmap(
  props: {
    rows: Awaited<ReturnType<typeof readHeatmap>>["rows"];
    dayLabels: string[];
    total: number;
    offset: number;
  },
) {
  const size = 14;
  const gap = 3;
  const width = props.dayLabels.length * (size + gap);
  return (
    <div class="heatmap">
      <table class="heatmap-table">
        <tbody>
          {props.rows.map((row) => (
            <tr key={row.policyId}>
              <th scope="row">
                <a href={`/backup/jobs/${row.policyId}`}>{row.policyName}</a>
              </th>
              <td>
                <svg
                  width={width}
                  height={size}
                  viewBox={`0 0 ${width} ${size}`}
                  role="img"
                  aria-label={`${row.policyName}: daily backup outcomes`}
                >
                  {row.days.map((d, i) => {
                    const tone = cellTone(d);
                    return (
                      <g key={d.day}>
                        <rect
                          x={i * (size + gap)}
                          y={0}
                          width={size}
                          height={size}
                          rx={2}
                          class={`hm-${tone}`}
                        >
                          <title>
                            {`${d.day}: ${d.success} success, ${d.warning} warning, ${d.failed} failed`}
                          </title>
                        </rect>
                        {HEATMAP_GLYPH[tone] && (
                          <text
                            x={i * (size + gap) + size / 2}
                            y={size / 2}
                            class="hm-glyph"
                            text-anchor="middle"
                            dominant-baseline="central"
                            aria-hidden="true"
                          >
                            {HEATMAP_GLYPH[tone]}
                          </text>
                        )}
                      </g>
                    );
                  })}
                </svg>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="heatmap-legend">
        <span class="hm-key hm-success"></span> all succeeded{" "}
        <span class="hm-key hm-warning">{HEATMAP_GLYPH.warning}</span> warnings{" "}
        <span class="hm-key hm-mixed">{HEATMAP_GLYPH.mixed}</span> some failed{" "}
        <span class="hm-key hm-failed">{HEATMAP_GLYPH.failed}</span> all failed{" "}
        <span class="hm-key hm-none"></span> no backups · {props.dayLabels[0]} → {props.dayLabels.at(-1)}{" "}
        (UTC)
      </p>
      {props.total > props.rows.length && (
        <p class="muted">
          Showing policies {props.offset + 1}–{props.offset + props.rows.length} of {props.total}.{" "}
          <a href="/backup/jobs">All jobs →</a>
        </p>
      )}
    </div>
  );
}

// One route per section (no free-form parameter: every path is a known section).
for (const { name } of SECTIONS) {
  dashboardRoutes.get(`/sections/${name}`, requires("backup.view"), async (c) => {
    c.header("Cache-Control", "no-store");
    const rendered = await renderSection(c, name);
    if (rendered.state === "ready") return c.html(rendered.html);
    return c.html(`<p data-error>${escapeHtml(rendered.error)}</p>`, 500);
  });
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

dashboardRoutes.post("/runs/:runId/retry", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  try {
    // A platform run is job-level: its retry is the platform job's (one pending run for the next sync).
    const { runs, platform } = await retrySingleRun(kv, c.get("actor")!, c.req.param("runId"), clock());
    return redirectWithNotice(
      c,
      "/backup/dashboard",
      platform
        ? `Retry queued: run ${runs[0].id}, started by the next sync`
        : `Retry queued: run ${runs[0].id}`,
    );
  } catch (error) {
    // The guide's rules (latest run, failed or warning, retryable, not retried yet) come back as a notice.
    if (error instanceof ValidationError || error instanceof ConflictError) {
      return redirectWithNotice(c, "/backup/dashboard", `Not retried: ${error.message}`);
    }
    throw error;
  }
});

for (const check of Object.keys(STORAGE_CHECKS) as StorageCheck[]) {
  dashboardRoutes.post(
    `/storage/:targetId/${STORAGE_CHECK_SEGMENTS[check]}`,
    requires("backup.manage"),
    storageCheckHandler(check, () => "/backup/dashboard"),
  );
}
