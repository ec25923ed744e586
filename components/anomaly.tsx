/**
 * The anomaly guard's marks and figures (domain/anomalies.ts), shared by the run page, the restore point page
 * and the anomaly's own page: what was flagged, each signal against its threshold, and the review.
 */
import type { Anomaly } from "../domain/anomalies.ts";
import type { AnomalySignal } from "../domain/anomaly.ts";
import { Badge, formatBytes, formatTime, type Tone } from "./ui.tsx";

export const ANOMALY_STATUS: Record<Anomaly["status"], { label: string; tone: Tone }> = {
  pending: { label: "awaiting review · prune frozen", tone: "bad" },
  incident: { label: "confirmed incident · prune frozen", tone: "bad" },
  approved: { label: "approved as expected change", tone: "ok" },
  released: { label: "incident released", tone: "muted" },
};

const SIGNAL_LABEL: Record<AnomalySignal, string> = {
  changed_files: "Changed files",
  bytes_new: "New data",
  incompressible_share: "Did not compress",
};

function value(signal: AnomalySignal, n: number): string {
  if (signal === "bytes_new") return formatBytes(n);
  if (signal === "incompressible_share") return n > 1 ? "none (above 100 %)" : `${Math.round(n * 100)} %`;
  return Math.round(n).toLocaleString("en-US");
}

/** Each judged signal: this backup's value, the baseline's median, the threshold, and whether it fired. */
export function AnomalyChecks(props: { anomaly: Anomaly }) {
  const v = props.anomaly.verdict;
  return (
    <>
      <ul data-testid="anomaly-reasons">
        {v.reasons.map((r) => <li key={r}>{r}</li>)}
      </ul>
      <div class="table-wrap" tabIndex={0}>
        <table class="table table--compact table--cards" data-testid="anomaly-checks">
          <thead>
            <tr>
              <th>Signal</th>
              <th>This backup</th>
              <th>Baseline median</th>
              <th>Threshold</th>
              <th>Verdict</th>
            </tr>
          </thead>
          <tbody>
            {v.checks.map((c) => (
              <tr key={c.signal} data-signal={c.signal}>
                <td data-label="Signal">{SIGNAL_LABEL[c.signal]}</td>
                <td data-label="This backup">{value(c.signal, c.value)}</td>
                <td data-label="Baseline median">{value(c.signal, c.median)}</td>
                <td data-label="Threshold">{value(c.signal, c.threshold)}</td>
                <td class="cell-status" data-label="Verdict">
                  {c.fired ? <Badge tone="bad">outside</Badge> : <Badge tone="ok">within</Badge>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <p class="hint">
        Baseline: the last {v.baselineRuns} accepted backups of this host under policy{" "}
        {props.anomaly.policyName}.
      </p>
    </>
  );
}

/** The banner of a run or restore point the guard marked: suspect (with the figures) or last clean. */
export function AnomalyMark(props: { anomaly: Anomaly; mark: "suspect" | "last_clean" }) {
  const a = props.anomaly;
  const status = ANOMALY_STATUS[a.status];
  if (props.mark === "last_clean") {
    return (
      <section class="panel" id="anomaly" data-testid="anomaly-mark" data-mark="last_clean">
        <h2>
          Last clean restore point <Badge tone="ok">last clean</Badge>
        </h2>
        <p>
          The newest backup of {a.hostName} judged normal before the suspicious change of{" "}
          {formatTime(a.flaggedAt)}{" "}
          (<a href={`/backup/anomalies/${a.id}`}>{status.label}</a>): restore from here if that change was an
          attack.
        </p>
      </section>
    );
  }
  return (
    <section class="panel panel--danger" id="anomaly" data-testid="anomaly-mark" data-mark="suspect">
      <h2>
        Suspicious change <Badge tone={status.tone}>{status.label}</Badge>
      </h2>
      <p>
        This backup of {a.hostName} was far outside the host's usual change rate or entropy
        {a.status === "pending" || a.status === "incident"
          ? ", so prune is frozen for the host until an operator reviews it"
          : ""}. <a href={`/backup/anomalies/${a.id}`}>Review it</a>
        {a.lastCleanPointId && (
          <>
            {" "}· last clean point:{" "}
            <a href={`/backup/restore/points/${a.lastCleanPointId}`}>{a.lastCleanPointId}</a>
          </>
        )}
      </p>
      <AnomalyChecks anomaly={a} />
    </section>
  );
}
