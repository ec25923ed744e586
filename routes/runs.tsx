/**
 * Backup > Runs > one run: what it was (policy, host, kind, trigger, times), its outcome, what the engine
 * measured (files, bytes read, new and stored, duration, changes) and its per-file errors, a page at a
 * time (`?errorsPage=` links work without JavaScript). Needs backup.view on the run's org.
 */
import { Hono } from "hono";
import { z } from "zod";
import {
  EngineResults,
  ErrorsList,
  formatMs,
  HookOutputRow,
  RUN_TONE,
  runDuration,
  RunError,
} from "../components/runs.tsx";
import { Badge, formatBytes, formatTime, PageHeader } from "../components/ui.tsx";
import { type Job } from "../domain/job_queue.ts";
import { AnomalyMark } from "../components/anomaly.tsx";
import { getRunDetail } from "../domain/read_models/backup_pages.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { redirectWithNotice, render } from "./render.tsx";
import { getRun } from "../domain/run_results.ts";
import { retrySingleRun } from "../domain/run_retry.ts";
import { ConflictError, ValidationError } from "../domain/errors.ts";

export const runRoutes = new Hono<AppEnv>();

/** A running run's progress as its engine last reported it (reload the page for newer figures). */
function RunProgress({ progress }: { progress: Job["progress"] }) {
  if (!progress) return <span class="muted">started, no progress reported yet</span>;
  const percent = Math.round(progress.percent);
  return (
    <>
      <progress max={100} value={percent} aria-label="Backup progress">{percent} %</progress>{" "}
      <span data-testid="run-percent">{percent} %</span> · {formatBytes(progress.bytesTransferred)}{" "}
      transferred
      {progress.message ? ` · ${progress.message}` : ""}
    </>
  );
}

/** `?errorsPage=` (0-based); anything else is the first page. */
const RunQuery = z.object({ errorsPage: z.coerce.number().int().min(0).max(10_000).catch(0) }).catch({
  errorsPage: 0,
});

runRoutes.get("/:runId", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { errorsPage } = RunQuery.parse(c.req.query());
  const { run, job, policy, host, errors, anomaly } = await getRunDetail(
    kv,
    actor,
    { runId: c.req.param("runId"), errorsPage },
    clock(),
  );
  const hostName = run.hostId ? host?.hostname ?? "(deleted host)" : "BES";
  const fullReason = job?.payload.fullReason === "new_generation"
    ? " (a full: the first backup in a new repository generation)"
    : "";
  return render(
    c,
    `Run ${run.id}`,
    <>
      <PageHeader
        title={`${run.kind.replace("_", " ")} run · ${hostName}`}
        subtitle={
          <>
            Policy {policy?.name ?? run.policyId}
            {(policy && !policy.deletedAt) ? "" : policy ? " (deleted)" : ""} · scheduled{" "}
            {formatTime(run.scheduledFor)}
          </>
        }
        actions={(policy && !policy.deletedAt)
          ? <a class="btn" href={`/backup/policies/${run.policyId}#runs`}>Policy</a>
          : undefined}
      />
      {anomaly && <AnomalyMark anomaly={anomaly} mark="suspect" />}
      <div class="grid-2">
        <section class="panel">
          <h2>Run</h2>
          <dl class="facts" data-testid="run-facts">
            <dt>Status</dt>
            <dd>
              <Badge tone={RUN_TONE[run.status] ?? "muted"}>{run.status}</Badge>
            </dd>
            {/* Claiming the job marks the run running; the leased job carries the engine's last progress. */}
            {(run.status === "pending" || run.status === "running") && job?.status === "leased" && (
              <>
                <dt>Progress</dt>
                <dd data-testid="run-progress">
                  <RunProgress progress={job.progress} />
                </dd>
              </>
            )}
            <dt>Kind</dt>
            <dd>
              {run.kind.replace("_", " ")}
              {fullReason}
            </dd>
            <dt>Trigger</dt>
            <dd>{run.trigger.replace("_", "-")}</dd>
            <dt>Host</dt>
            <dd>
              {run.hostId && host ? <a href={`/backup/hosts/${run.hostId}`}>{hostName}</a> : hostName}
            </dd>
            <dt>Started</dt>
            <dd>{formatTime(run.startedAt)}</dd>
            <dt>Ended</dt>
            <dd>{formatTime(run.endedAt)}</dd>
            <dt>Duration</dt>
            <dd>{runDuration(run)}</dd>
            <dt>Transferred</dt>
            <dd>{formatBytes(run.bytesTransferred)}</dd>
            <dt>Protected</dt>
            <dd>{formatBytes(run.protectedBytes)}</dd>
            <dt>Restore point</dt>
            <dd>
              {run.restorePointId
                ? <a href={`/backup/restore/points/${run.restorePointId}`}>{run.restorePointId}</a>
                : "—"}
            </dd>
            <dt>Error</dt>
            <dd>
              <RunError run={run} />
            </dd>
            <dt>Retryable</dt>
            <dd>{run.retryable ? "yes" : "no"}</dd>
          </dl>
        </section>
        <section class="panel" id="results">
          <h2>Engine results</h2>
          <EngineResults
            stats={run.stats}
            errorCount={run.errorCount ?? (run.stats ? 0 : undefined)}
            testId="run-results"
          />
          {run.stats?.durationMs !== undefined && run.startedAt && (
            <p class="hint">The engine's own timing ({formatMs(run.stats.durationMs)}) excludes queueing.</p>
          )}
        </section>
      </div>
      <section class="panel" id="errors">
        <h2>Per-file errors</h2>
        <ErrorsList
          page={errors}
          link={(p) => `/backup/runs/${run.id}?${new URLSearchParams({ errorsPage: String(p) })}#errors`}
        />
      </section>
      {(run.hookOutput ?? []).length > 0 && (
        <section class="panel" id="hooks">
          <h2>Hooks</h2>
          <table class="table table--compact">
            <tbody>
              <HookOutputRow run={run} colSpan={1} />
            </tbody>
          </table>
        </section>
      )}
    </>,
  );
});

runRoutes.post("/:runId/retry", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const run = await retrySingleRun(kv, actor, c.req.param("runId"), clock()).then((o) => o.runs[0]).catch((
    e,
  ) => e);
  if (run instanceof ValidationError || run instanceof ConflictError) {
    const original = await getRun(kv, c.req.param("runId"));
    return redirectWithNotice(
      c,
      original ? `/backup/policies/${original.policyId}#runs` : "/backup/policies",
      `Not retried: ${run.message}`,
    );
  }
  if (run instanceof Error) throw run;
  return redirectWithNotice(c, `/backup/policies/${run.policyId}#runs`, "Retry queued.");
});
