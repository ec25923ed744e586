/** Pieces of the run tables (a policy's recent runs, a job's run history): one look for a run everywhere. */
import { firstLine, type Run } from "../domain/runs.ts";
import type { Tone } from "./ui.tsx";

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
