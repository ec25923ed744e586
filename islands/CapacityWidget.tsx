/**
 * Live capacity: usage, free space, growth and estimated full date of storage targets, refreshed
 * from the JSON API every 30 seconds without a reload. The server renders the first snapshot.
 */
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { Time } from "../components/time.tsx";

export interface Row {
  id: string;
  name: string;
  health: string;
  usagePercent: number | null;
  freeBytes: number | null;
  growthBytesPerDay: number | null;
  estimatedFullAt: string | null;
  /** The early warning: full within 14 days at the current growth (beside the health, not part of it). */
  fullSoon: boolean;
  lastReportAt: string | null;
}

export interface Props {
  url: string;
  rows: Row[];
  refreshSeconds?: number;
}

function bytes(n: number | null): string {
  if (n === null) return "—";
  const u = ["B", "KB", "MB", "GB", "TB", "PB"];
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${n < 0 ? "-" : ""}${v.toFixed(i ? 1 : 0)} ${u[i]}`;
}

const TONE: Record<string, string> = { healthy: "ok", warning: "warn", critical: "bad", unknown: "muted" };

export default function CapacityWidget(props: Props) {
  const rows = useSignal(props.rows);
  const updated = useSignal<string>("");
  const failed = useSignal(false);
  useEffect(() => {
    const timer = setInterval(async () => {
      try {
        const res = await fetch(props.url, { headers: { accept: "application/json" } });
        if (!res.ok) throw new Error(`Request failed: GET ${props.url}`);
        rows.value = (await res.json()).values;
        updated.value = new Date().toISOString();
        failed.value = false;
      } catch {
        failed.value = true;
      }
    }, (props.refreshSeconds ?? 30) * 1000);
    return () => clearInterval(timer);
  }, [props.url]);
  return (
    <section class="panel" aria-live="polite">
      <h2>
        Capacity now{" "}
        <span class="hint" data-testid="widget-updated">
          {failed.value ? "refresh failed; retrying" : updated.value
            ? (
              <>
                updated <Time iso={updated.value} />
              </>
            )
            : "live, every 30 s"}
        </span>
      </h2>
      {rows.value.length === 0 ? <p class="muted">No storage targets.</p> : (
        <div class="table-wrap">
          <table class="table table--cards table--compact">
            <thead>
              <tr>
                <th>Target</th>
                <th>Health</th>
                <th>Usage</th>
                <th>Free</th>
                <th>Growth / day</th>
                <th>Full by</th>
              </tr>
            </thead>
            <tbody>
              {rows.value.map((r) => (
                <tr key={r.id} data-testid="widget-row">
                  <td data-label="Target">
                    <a href={`/backup/storage/${r.id}`}>{r.name}</a>
                  </td>
                  <td class="cell-status" data-label="Health">
                    <span class={`badge badge--${TONE[r.health] ?? "muted"}`}>{r.health}</span>
                    {r.fullSoon && (
                      <>
                        {" "}
                        <span class="badge badge--warn" data-testid="widget-full-soon">
                          full within 14 days
                        </span>
                      </>
                    )}
                  </td>
                  <td data-label="Usage">
                    <svg
                      class={`usage-bar usage-bar--${r.health}`}
                      viewBox="0 0 100 8"
                      preserveAspectRatio="none"
                      role="img"
                      aria-label={`${r.usagePercent ?? 0}% used`}
                    >
                      <rect width={r.usagePercent ?? 0} height="8" />
                    </svg>{" "}
                    {r.usagePercent === null ? "—" : `${r.usagePercent}%`}
                  </td>
                  <td data-label="Free">{bytes(r.freeBytes)}</td>
                  <td data-label="Growth / day">
                    {r.growthBytesPerDay === null ? "—" : bytes(Math.round(r.growthBytesPerDay))}
                  </td>
                  <td data-label="Full by">
                    <Time iso={r.estimatedFullAt} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
