/** The dashboard card "Last proven restore": per backup policy, its last passing restore drill and RTO. */
import type { ProvenRestore } from "../domain/drills.ts";
import { Badge, formatBytes, formatTime } from "./ui.tsx";

/** Seconds as "12.3 s" or "4 min 5 s". */
function seconds(s: number): string {
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/** Rows shown on the card (policies never proven first, then the oldest proof). */
export const PROVEN_CARD_ROWS = 20;

export function ProvenRestoresCard(
  props: { rows: Array<{ policy: { id: string; name: string }; proven: ProvenRestore | null }> },
) {
  const rows = [...props.rows].sort((a, b) =>
    (a.proven?.at ?? "").localeCompare(b.proven?.at ?? "") || a.policy.name.localeCompare(b.policy.name)
  ).slice(0, PROVEN_CARD_ROWS);
  return (
    <table class="table compact" data-testid="proven-restores">
      <thead>
        <tr>
          <th>Policy</th>
          <th>Last proven restore</th>
          <th>RTO</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(({ policy, proven }) => (
          <tr key={policy.id} data-policy={policy.id}>
            <td>
              <a href={`/backup/policies/${policy.id}`}>{policy.name}</a>
            </td>
            <td>
              {proven
                ? (
                  <>
                    <a href={`/backup/drills/${proven.drillId}/runs/${proven.drillRunId}`}>
                      {formatTime(proven.at)}
                    </a>
                    <span class="sub">{proven.hostName}, drill {proven.drillName}</span>
                  </>
                )
                : <Badge tone="warn">never proven</Badge>}
            </td>
            <td>
              {proven
                ? (
                  <>
                    {seconds(proven.rtoSeconds)}
                    {proven.rtoSeconds > proven.rtoObjectiveSeconds
                      ? <Badge tone="warn">over {seconds(proven.rtoObjectiveSeconds)}</Badge>
                      : <span class="sub">objective {seconds(proven.rtoObjectiveSeconds)}</span>}
                    {proven.bytesPerSecond !== null && (
                      <span class="sub">{formatBytes(proven.bytesPerSecond)}/s</span>
                    )}
                  </>
                )
                : "—"}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
