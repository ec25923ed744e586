/** Replication status pieces: one look for a replication on the policy, restore point and Replicas pages. */
import {
  KEK_SOURCE_LABELS,
  type ReplicaRow,
  type ReplicaStats,
  type ReplicationStatus,
  type ReplicationView,
} from "../domain/replicas.ts";
import { firstLine } from "../domain/runs.ts";
import { Badge, formatBytes, formatTime, type Tone } from "./ui.tsx";

const TONE: Record<ReplicationStatus, Tone> = {
  pending: "muted",
  running: "info",
  succeeded: "ok",
  failed: "bad",
};

function ReplicationBadge(props: { status: ReplicationStatus }) {
  return <Badge tone={TONE[props.status]}>{props.status}</Badge>;
}

/** "12 replicated · 1 pending · 2 failed" */
export function replicaCounts(s: ReplicaStats): string {
  return `${s.replicated} replicated · ${s.pending} pending · ${s.failed} failed`;
}

/** A rule's last success (with its point) and last failure (with its error), for a table cell. */
export function ReplicaLastCell(props: { stats: ReplicaStats }) {
  const s = props.stats;
  return (
    <span data-testid="replica-last">
      {s.lastReplicatedPointId
        ? (
          <>
            last copy{" "}
            <a href={`/backup/restore/points/${s.lastReplicatedPointId}#replication`}>
              {formatTime(s.lastSuccessAt)}
            </a>
          </>
        )
        : "no copy yet"}
      {s.lastFailureAt && (
        <>
          {" · "}
          <span class="text-bad" title={s.lastError ?? ""}>
            last failure{" "}
            <a href={`/backup/restore/points/${s.lastFailedPointId}#replication`}>
              {formatTime(s.lastFailureAt)}
            </a>
            {s.lastError ? `: ${firstLine(s.lastError)}` : ""}
          </span>
        </>
      )}
    </span>
  );
}

/**
 * The header cells of a replication rule's columns (secondary target to last copy), as the Replicas page
 * and a policy's Replication section show them; `kek` names the KEK column.
 */
export function ReplicaRuleHeads(props: { kek: string }) {
  return (
    <>
      <th>Secondary target</th>
      <th>BES</th>
      <th>{props.kek}</th>
      <th>After full</th>
      <th>After incremental</th>
      <th>Offsite</th>
      <th>Points</th>
      <th>Last copy / failure</th>
    </>
  );
}

/** A replication rule's cells under `ReplicaRuleHeads`: target, BES, KEK, triggers, offsite, points, last copy. */
export function ReplicaRuleCells(props: { rule: ReplicaRow }) {
  const r = props.rule;
  return (
    <>
      <td>
        {r.targetName ?? "—"} {r.targetTypeLabel && <span class="muted">({r.targetTypeLabel})</span>}
      </td>
      <td>{r.targetBesName ?? "—"}</td>
      <td>{KEK_SOURCE_LABELS[r.kekSource]}</td>
      <td>{r.replicateAfterFull ? "yes" : "no"}</td>
      <td>{r.replicateAfterIncremental ? "yes" : "no"}</td>
      <td>{r.isOffsite ? <Badge tone="info">offsite</Badge> : "—"}</td>
      <td class="nowrap" data-testid="replica-counts">{replicaCounts(r.stats)}</td>
      <td>
        <ReplicaLastCell stats={r.stats} />
      </td>
    </>
  );
}

/** Replications, one row each: the point (optional), target, status, time, bytes and error. */
export function ReplicationTable(props: { rows: ReplicationView[]; showPoint?: boolean }) {
  return (
    <div class="table-wrap" tabIndex={0}>
      <table class="table table--compact" data-testid="replications">
        <thead>
          <tr>
            {props.showPoint && <th>Restore point</th>}
            <th>Replica target</th>
            <th>KEK</th>
            <th>Status</th>
            <th>Queued</th>
            <th>Ended</th>
            <th>Bytes</th>
            <th>Error</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((r) => (
            <tr key={`${r.restorePointId}/${r.ruleId}`} data-testid="replication-row" data-status={r.status}>
              {props.showPoint && (
                <td>
                  <a href={`/backup/restore/points/${r.restorePointId}#replication`}>
                    <code>{r.restorePointId.slice(-8)}</code>
                  </a>
                </td>
              )}
              <td>
                {r.targetName ?? r.targetId}
                {!r.ruleExists && <span class="muted">(rule removed)</span>}
              </td>
              <td>{r.kekSource ? KEK_SOURCE_LABELS[r.kekSource] : "—"}</td>
              <td>
                <ReplicationBadge status={r.status} />
              </td>
              <td class="nowrap">{formatTime(r.queuedAt)}</td>
              <td class="nowrap">
                {r.status === "running"
                  ? <>running (last report {formatTime(r.updatedAt)})</>
                  : formatTime(r.endedAt)}
              </td>
              <td class="nowrap">{r.status === "pending" ? "—" : formatBytes(r.bytes)}</td>
              <td title={r.error ?? ""}>{r.error ? firstLine(r.error) : "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
