/**
 * Capacity history of a storage target: usage % per day (up to 365 days) with the alert and critical
 * thresholds, a range switch and a hover readout. The server renders the same SVG without script.
 */
import { useComputed, useSignal } from "@preact/signals";

export interface Props {
  days: Array<{ day: string; usagePercent: number; usedBytes: number; totalBytes: number }>;
  alertThreshold: number;
  criticalThreshold: number;
}

const W = 640;
const H = 200;
const PAD = { left: 36, right: 8, top: 8, bottom: 22 };
const RANGES = [30, 90, 365] as const;

function bytes(n: number): string {
  const u = ["B", "KB", "MB", "GB", "TB", "PB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export default function CapacityChart(props: Props) {
  const range = useSignal<(typeof RANGES)[number]>(90);
  const hover = useSignal<number | null>(null);
  const shown = useComputed(() => props.days.slice(-range.value));
  const x = (i: number, n: number) => PAD.left + (n <= 1 ? 0 : (i / (n - 1)) * (W - PAD.left - PAD.right));
  const y = (pct: number) => PAD.top + (1 - pct / 100) * (H - PAD.top - PAD.bottom);
  const days = shown.value;
  const points = days.map((d, i) => `${x(i, days.length).toFixed(1)},${y(d.usagePercent).toFixed(1)}`).join(
    " ",
  );
  const h = hover.value !== null ? days[hover.value] : null;
  const onMove = (e: MouseEvent) => {
    const svg = e.currentTarget as SVGSVGElement;
    const rect = svg.getBoundingClientRect();
    const px = ((e.clientX - rect.left) / rect.width) * W;
    const i = Math.round(((px - PAD.left) / (W - PAD.left - PAD.right)) * (days.length - 1));
    hover.value = days.length ? Math.max(0, Math.min(days.length - 1, i)) : null;
  };
  return (
    <div class="chart">
      <div class="chart-tools" role="group" aria-label="Range">
        {RANGES.map((r) => (
          <button
            type="button"
            key={r}
            class={r === range.value ? "btn btn--small btn--primary" : "btn btn--small"}
            aria-pressed={r === range.value}
            onClick={() => (range.value = r)}
          >
            {r} days
          </button>
        ))}
        <span class="hint" data-testid="chart-readout">
          {h
            ? `${h.day}: ${h.usagePercent}% (${bytes(h.usedBytes)} of ${bytes(h.totalBytes)})`
            : days.length
            ? `${days.length} ${days.length === 1 ? "day" : "days"} of data`
            : ""}
        </span>
      </div>
      {days.length === 0
        ? <p class="muted">No capacity reported yet: the BES reports capacity with its heartbeats.</p>
        : (
          <svg
            viewBox={`0 0 ${W} ${H}`}
            class="chart-svg"
            role="img"
            aria-label={`Usage over the last ${days.length} ${days.length === 1 ? "day" : "days"}`}
            onMouseMove={onMove}
            onMouseLeave={() => (hover.value = null)}
          >
            {[0, 25, 50, 75, 100].map((p) => (
              <g key={p}>
                <line x1={PAD.left} x2={W - PAD.right} y1={y(p)} y2={y(p)} class="grid" />
                <text x={PAD.left - 4} y={y(p) + 4} text-anchor="end" class="axis">{p}%</text>
              </g>
            ))}
            <line
              x1={PAD.left}
              x2={W - PAD.right}
              y1={y(props.alertThreshold)}
              y2={y(props.alertThreshold)}
              class="threshold threshold--warn"
            />
            <line
              x1={PAD.left}
              x2={W - PAD.right}
              y1={y(props.criticalThreshold)}
              y2={y(props.criticalThreshold)}
              class="threshold threshold--bad"
            />
            <polyline points={points} class="series" />
            {days.length === 1 && (
              <circle cx={x(0, 1)} cy={y(days[0].usagePercent)} r="4" class="series-dot" />
            )}
            <text x={PAD.left} y={H - 6} class="axis">{days[0].day}</text>
            <text x={W - PAD.right} y={H - 6} text-anchor="end" class="axis">
              {days[days.length - 1].day}
            </text>
            {hover.value !== null && h && (
              <circle cx={x(hover.value, days.length)} cy={y(h.usagePercent)} r="4" class="series-dot" />
            )}
          </svg>
        )}
    </div>
  );
}
