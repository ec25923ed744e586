/** The dashboard card "Last proven restore": per backup policy, its last passing restore drill and RTO. */
import type { ProvenCard } from "../domain/proven_restores.ts";
import { Badge, formatBytes, formatTime } from "./ui.tsx";

/** Seconds as "12.3 s" or "4 min 5 s". */
function seconds(s: number): string {
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

export function ProvenRestoresCard(props: { card: ProvenCard }) {
  const { rows, unproven, policies } = props.card;
  return (
    <>
      {unproven > 0 && (
        <p data-testid="proven-unproven">
          <Badge tone="warn">never proven</Badge> {unproven} of {policies}{" "}
          {policies === 1 ? "policy has" : "policies have"} no proven restore yet
        </p>
      )}
      {rows.length > 0 && (
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
                  {proven.hidden
                    ? formatTime(proven.at)
                    : (
                      <a href={`/backup/drills/${proven.drillId}/runs/${proven.drillRunId}`}>
                        {formatTime(proven.at)}
                      </a>
                    )}
                  <span class="sub">
                    {proven.hidden
                      ? "on a host of another organization"
                      : <>{proven.hostName}, drill {proven.drillName}</>}
                  </span>
                </td>
                <td>
                  {seconds(proven.rtoSeconds)}
                  {proven.rtoSeconds > proven.rtoObjectiveSeconds
                    ? <Badge tone="warn">over {seconds(proven.rtoObjectiveSeconds)}</Badge>
                    : <span class="sub">objective {seconds(proven.rtoObjectiveSeconds)}</span>}
                  {proven.bytesPerSecond !== null && (
                    <span class="sub">{formatBytes(proven.bytesPerSecond)}/s</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
