/** Pieces of the run tables (a policy's recent runs, a job's run history): one look for a run everywhere. */
import type { ResultStats } from "../domain/job_queue.ts";
import type { ErrorsPage } from "../domain/run_results.ts";
import { firstLine, type Run } from "../domain/runs.ts";
import { Badge, formatBytes, type Tone } from "./ui.tsx";

/** The badge tone of each run status. */
export const RUN_TONE: Record<string, Tone> = {
  success: "ok",
  warning: "warn",
  failed: "bad",
  running: "info",
  pending: "info",
  skipped: "muted",
};

/** How long a finished run took ("—" while it has not ended). */
export function runDuration(r: Pick<Run, "startedAt" | "endedAt">): string {
  if (!r.startedAt || !r.endedAt) return "—";
  const s = Math.max(0, Math.round((Date.parse(r.endedAt) - Date.parse(r.startedAt)) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** A run's failure reason and first error line (the whole message on hover), or "—". */
export function RunError(props: { run: Pick<Run, "error" | "errorLine"> }) {
  const { error, errorLine } = props.run;
  if (!error) return <>—</>;
  return (
    <span title={error.message}>
      <code>{error.reason}</code> {errorLine ?? firstLine(error.message)}
    </span>
  );
}

/**
 * A run's status badge with, under it, its failure reason and first error line (the whole message on
 * hover): the cell a run table keeps in view at any width. `label` replaces the status word.
 */
export function RunStatus(props: { run: Pick<Run, "status" | "error" | "errorLine">; label?: string }) {
  const { status, error, errorLine } = props.run;
  return (
    <div class="run-status">
      <Badge tone={RUN_TONE[status] ?? "muted"}>{props.label ?? status}</Badge>
      {error && (
        <span class="run-error" title={error.message} data-testid="run-error">
          <code>{error.reason}</code> {errorLine ?? firstLine(error.message)}
        </span>
      )}
    </div>
  );
}

/** The row under a run with what each hook printed (none when no hook reported). */
export function HookOutputRow(props: { run: Pick<Run, "id" | "hookOutput">; colSpan: number }) {
  const hooks = props.run.hookOutput ?? [];
  if (!hooks.length) return null;
  return (
    <tr class="run-detail" data-testid="run-hooks">
      <td colSpan={props.colSpan}>
        <details data-testid="hook-output">
          <summary>
            Hook output ({hooks.length}
            {hooks.some((h) => h.exitCode !== 0) ? ", failed" : ""})
          </summary>
          {hooks.map((h) => (
            <div key={h.hookId} class="hook-output">
              <strong>{h.type}</strong> exit {h.exitCode}
              <pre>{h.output}</pre>
            </div>
          ))}
        </details>
      </td>
    </tr>
  );
}

/** An engine-measured duration: "850 ms", "42 s", "3 min 5 s", "2 h 10 min". */
export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const count = (n: number | undefined) => n === undefined ? "—" : n.toLocaleString("en-US");

/**
 * What the engine measured (files, folders, bytes read, new and stored, duration, changes against the
 * parent), in human units; "not reported" when the engine sent nothing.
 */
export function EngineResults(
  props: { stats: ResultStats | null | undefined; errorCount?: number; testId?: string },
) {
  const s = props.stats;
  if (!s || !Object.keys(s).length) {
    return (
      <p class="muted" data-testid={props.testId ?? "engine-results"}>The engine reported no measures.</p>
    );
  }
  const changes = s.added !== undefined || s.modified !== undefined || s.deleted !== undefined;
  return (
    <dl class="facts" data-testid={props.testId ?? "engine-results"}>
      <dt>Files</dt>
      <dd data-stat="files">{count(s.files)}</dd>
      <dt>Folders</dt>
      <dd data-stat="dirs">{count(s.dirs)}</dd>
      <dt>Read</dt>
      <dd data-stat="bytesRead">{formatBytes(s.bytesRead)}</dd>
      <dt>New data</dt>
      <dd data-stat="bytesNew" title="Content not yet in the repository, before compression">
        {formatBytes(s.bytesNew)}
      </dd>
      {s.bytesNewIncompressible !== undefined && (
        <>
          <dt>Did not compress</dt>
          <dd
            data-stat="bytesNewIncompressible"
            title="New data stored raw because it did not compress (encrypted data does not)"
          >
            {formatBytes(s.bytesNewIncompressible)}
            {s.bytesNew
              ? ` (${Math.round(s.bytesNewIncompressible / s.bytesNew * 100)} % of the new data)`
              : ""}
          </dd>
        </>
      )}
      <dt>Stored</dt>
      <dd data-stat="bytesStored" title="Bytes added to the repository (compressed, encrypted)">
        {formatBytes(s.bytesStored)}
      </dd>
      <dt>Duration</dt>
      <dd data-stat="durationMs">{formatMs(s.durationMs)}</dd>
      {changes && (
        <>
          <dt>Changes</dt>
          <dd data-stat="changes">
            {count(s.added)} added · {count(s.modified)} modified · {count(s.deleted)} deleted
          </dd>
        </>
      )}
      {props.errorCount !== undefined && (
        <>
          <dt>Errors</dt>
          <dd data-stat="errors">{count(props.errorCount)}</dd>
        </>
      )}
    </dl>
  );
}

/** A page of per-file errors with links to the other pages (`link(page)`), saying when the engine cut the list. */
export function ErrorsList(props: { page: ErrorsPage; link: (page: number) => string }) {
  const { errors, page, pages, offset, kept, total } = props.page;
  if (total === 0) return <p class="muted" data-testid="errors-none">No per-file errors.</p>;
  return (
    <div data-testid="errors">
      {kept < total && (
        <p class="notice notice--warn" data-testid="errors-cut">
          The engine met {total.toLocaleString("en-US")} errors and sent the first{" "}
          {kept.toLocaleString("en-US")}; the rest are counted, not listed.
        </p>
      )}
      {errors.length > 0 && (
        <div class="table-wrap" tabIndex={0}>
          <table class="table table--compact table--cards" data-testid="errors-table">
            <thead>
              <tr>
                <th>Path</th>
                <th>Error</th>
              </tr>
            </thead>
            <tbody>
              {errors.map((e, i) => (
                <tr key={`${offset + i}`} data-testid="error-row">
                  <td data-label="Path">
                    <code>{e.path}</code>
                  </td>
                  <td data-label="Error">{e.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <nav class="pager" aria-label="Error pages">
        <span data-testid="errors-range">
          Errors {(offset + 1).toLocaleString("en-US")}–{(offset + errors.length).toLocaleString("en-US")} of
          {" "}
          {kept.toLocaleString("en-US")}
          {pages > 1 ? ` (page ${page + 1} of ${pages})` : ""}
        </span>
        {page > 0 && <a href={props.link(page - 1)}>← Previous errors</a>}
        {page + 1 < pages && <a href={props.link(page + 1)} data-testid="errors-next">Next errors →</a>}
      </nav>
    </div>
  );
}
