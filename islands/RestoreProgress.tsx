/**
 * A restore request's live state: status, a progress bar from the job's reported percent, and when it
 * has finished the files, bytes and per-file errors the engine reported. Polls the JSON API every
 * 1.5 s while the restore is pending or running; the server renders the same view, so a reload shows
 * the current state without JavaScript.
 */
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { Badge, formatBytes, type Tone } from "../components/ui.tsx";
import type { RestoreRequest } from "../domain/restore_requests.ts";
import { requestJson } from "./restore_client.ts";

export type RestoreStatus = Pick<RestoreRequest, "id" | "status" | "progress" | "result" | "error">;

export interface Props {
  initial: RestoreStatus;
  /** What is restored where, for the status line: "File restore" and "3 paths to /restore on fs01". */
  headline?: { kind: string; what: string };
}

/** The status line's verb: it replaces "queued" as the restore moves on. */
const HEADLINE_VERB: Record<RestoreRequest["status"], string> = {
  pending: "queued",
  running: "running",
  success: "finished",
  warning: "finished with errors",
  failed: "failed",
};

/** The badge tone of a restore request's status (the restore pages use it too). */
export const REQUEST_TONE: Record<RestoreRequest["status"], Tone> = {
  pending: "info",
  running: "info",
  success: "ok",
  warning: "warn",
  failed: "bad",
};

const LABEL: Record<RestoreRequest["status"], string> = {
  pending: "waiting for the engine",
  running: "running",
  success: "finished",
  warning: "finished with errors",
  failed: "failed",
};

function active(s: RestoreStatus): boolean {
  return s.status === "pending" || s.status === "running";
}

export default function RestoreProgress(props: Props) {
  const state = useSignal(props.initial);
  useEffect(() => {
    if (!active(props.initial)) return;
    let stopped = false;
    const tick = async () => {
      try {
        const next = await requestJson<RestoreRequest>("GET", `/api/v1/restores/${props.initial.id}`);
        if (stopped) return;
        state.value = next;
        if (!active(next)) return;
      } catch {
        // keep the last known state; the next tick retries
      }
      if (!stopped) timer = setTimeout(tick, 1500);
    };
    let timer = setTimeout(tick, 1500);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  const s = state.value;
  const percent = s.status === "success" || s.status === "warning"
    ? 100
    : Math.round(s.progress?.percent ?? 0);
  return (
    <div class="restore-progress" aria-live="polite" data-testid="restore-progress" data-status={s.status}>
      {props.headline && (
        <p
          class={`notice${s.status === "failed" || s.status === "warning" ? " notice--warn" : ""}`}
          data-testid="restore-headline"
        >
          {props.headline.kind} {HEADLINE_VERB[s.status]}: {props.headline.what}
          {s.status === "success" && s.result ? ` (${s.result.files.toLocaleString("en")} files)` : ""}
          {s.status === "warning" && s.result
            ? ` (${s.result.files.toLocaleString("en")} files, ${s.result.errorCount} error${
              s.result.errorCount === 1 ? "" : "s"
            })`
            : ""}.
        </p>
      )}
      <p>
        <Badge tone={REQUEST_TONE[s.status]}>{LABEL[s.status]}</Badge>
        {active(s) && s.progress && ` ${formatBytes(s.progress.bytesTransferred)} transferred`}
      </p>
      {s.status !== "failed" && (
        <p class="progress-line">
          <progress max={100} value={percent} aria-label="Restore progress">{percent} %</progress>{" "}
          <span data-testid="restore-percent">{percent} %</span>
        </p>
      )}
      {s.error && <p class="form-error" role="alert">{s.error}</p>}
      {s.result && (
        <>
          <dl class="facts" data-testid="restore-result">
            <dt>Files restored</dt>
            <dd>{s.result.files.toLocaleString("en")}</dd>
            <dt>Bytes restored</dt>
            <dd>{formatBytes(s.result.bytes)}</dd>
            <dt>Errors</dt>
            <dd>
              {s.result.errorCount}
              {s.result.errorCount > s.result.errors.length
                ? ` (the first ${s.result.errors.length} are listed)`
                : ""}
            </dd>
          </dl>
          {s.result.errors.length > 0 && (
            <div class="table-wrap">
              <table class="table table--cards table--compact" data-testid="restore-errors">
                <thead>
                  <tr>
                    <th>Path</th>
                    <th>Error</th>
                  </tr>
                </thead>
                <tbody>
                  {s.result.errors.map((e, i) => (
                    <tr key={`${i}:${e.path}`}>
                      <td data-label="Path" class="wrap">
                        <code>{e.path}</code>
                      </td>
                      <td data-label="Error" class="wrap">{e.message}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </div>
  );
}
