/** Health > Overview (live architecture diagram) and Health > Database. */
import { Hono } from "hono";
import { Badge, EmptyState, formatBytes, formatTime, PageHeader, type Tone } from "../components/ui.tsx";
import { timeText } from "../components/time.tsx";
import { type InvariantCheckRecord } from "../domain/invariant_checks.ts";
import { getHealthDatabase, getHealthOverview } from "../domain/read_models/health.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { render } from "./render.tsx";

export const healthPages = new Hono<AppEnv>();

type NodeState = "ok" | "warn" | "bad" | "off";

interface DiagramNode {
  id: string;
  label: string;
  detail: string;
  state: NodeState;
  x: number;
  y: number;
  href?: string;
}

/** An SVG architecture diagram; each node's colour is its current state (classes, no inline style). */
function Diagram(props: { nodes: DiagramNode[]; links: Array<[string, string, string]> }) {
  const W = 170;
  const H = 56;
  const byId = new Map(props.nodes.map((n) => [n.id, n]));
  return (
    <svg
      viewBox="0 0 900 420"
      class="diagram"
      role="group"
      aria-label="Architecture of the control plane and its backups"
    >
      <defs>
        <marker
          id="arrow"
          viewBox="0 0 10 10"
          refX="9"
          refY="5"
          markerWidth="7"
          markerHeight="7"
          orient="auto-start-reverse"
        >
          <path d="M 0 0 L 10 5 L 0 10 z" class="diagram-arrow" />
        </marker>
      </defs>
      {props.links.map(([from, to, label]) => {
        const a = byId.get(from)!;
        const b = byId.get(to)!;
        // From box edge to box edge, so the arrowhead shows at the target's border.
        const [cx1, cy1, cx2, cy2] = [a.x + W / 2, a.y + H / 2, b.x + W / 2, b.y + H / 2];
        const dx = cx2 - cx1;
        const dy = cy2 - cy1;
        const t = Math.min(
          dx ? (W / 2 + 4) / Math.abs(dx) : Infinity,
          dy ? (H / 2 + 4) / Math.abs(dy) : Infinity,
        );
        const [x1, y1, x2, y2] = [cx1 + dx * t, cy1 + dy * t, cx2 - dx * t, cy2 - dy * t];
        return (
          <g key={`${from}-${to}`}>
            <line x1={x1} y1={y1} x2={x2} y2={y2} class="diagram-link" marker-end="url(#arrow)" />
            <text x={(x1 + x2) / 2} y={(y1 + y2) / 2 - 4} class="diagram-label" text-anchor="middle">
              {label}
            </text>
          </g>
        );
      })}
      {props.nodes.map((n) => (
        <a href={n.href ?? "#"} key={n.id} data-testid={`node-${n.id}`} data-state={n.state}>
          <rect x={n.x} y={n.y} width={W} height={H} rx="8" class={`diagram-node diagram-node--${n.state}`} />
          <text x={n.x + 10} y={n.y + 22} class="diagram-title">{n.label}</text>
          <text x={n.x + 10} y={n.y + 42} class="diagram-detail">{n.detail}</text>
        </a>
      ))}
    </svg>
  );
}

healthPages.get("/overview", requires("admin"), async (c) => {
  const { kv, clock, masterKey, config } = c.get("deps");
  const actor = c.get("actor")!;
  const now = clock();
  const { health: h, engines, probe } = await getHealthOverview(
    kv,
    actor,
    { masterKey, dataDir: config.dataDir },
    now,
  );
  const online = engines.values.filter((e) => e.status === "online" || e.status === "degraded").length;
  const offline = engines.values.filter((e) => e.status === "offline").length;
  const last = h.recentTriggers.find((t) => t.status !== "running");
  const nodes: DiagramNode[] = [
    {
      id: "engines",
      label: "Engines (BES)",
      detail: `${online} online · ${offline} offline`,
      state: offline ? "bad" : engines.total ? "ok" : "off",
      x: 20,
      y: 30,
      href: "/backup/engines",
    },
    { id: "cp", label: "Control plane", detail: `KV write ${probe.writeMs} ms`, state: "ok", x: 360, y: 30 },
    {
      id: "configdb",
      label: "Config DB",
      detail: `last verified ${timeText(h.lastVerifiedRestorable.config, now, "never")}`,
      state: h.newestBundleStale.config ? "warn" : "ok",
      x: 210,
      y: 170,
      href: "/health/database",
    },
    {
      id: "resultsdb",
      label: "Results DB",
      detail: `last verified ${timeText(h.lastVerifiedRestorable.results, now, "never")}`,
      state: h.newestBundleStale.results ? "warn" : "ok",
      x: 510,
      y: 170,
      href: "/health/database",
    },
    {
      id: "worker",
      label: "Backup worker",
      detail: h.running ? "running" : last ? `last ${last.status}` : "idle, no runs yet",
      state: h.running ? "ok" : last?.status === "failed" ? "bad" : last ? "ok" : "off",
      x: 360,
      y: 290,
      href: "/admin/maintenance",
    },
    {
      id: "volume",
      label: "Local backups",
      detail: `${h.bundleCount} bundles · ${formatBytes(h.freeDiskBytes)} free`,
      state: h.freeDiskBelowMinimum ? "bad" : "ok",
      x: 110,
      y: 340,
      href: "/health/backup",
    },
    {
      id: "s3",
      label: "S3 bucket",
      detail: h.s3Bucket ? (h.s3Reachable ? "reachable" : "unreachable") : "not configured",
      state: h.s3Bucket ? (h.s3Reachable ? "ok" : "bad") : "off",
      x: 640,
      y: 340,
      href: "/admin/backups",
    },
  ];
  return render(
    c,
    "Health · Overview",
    (
      <>
        <PageHeader
          title="Overview"
          subtitle="The control plane, its databases, its own backups and the engines, with each part's current state."
        />
        <section class="panel">
          <Diagram
            nodes={nodes}
            links={[
              ["engines", "cp", "heartbeats"],
              ["cp", "configdb", "read/write"],
              ["cp", "resultsdb", "read/write"],
              ["worker", "configdb", "export"],
              ["worker", "resultsdb", "export"],
              ["worker", "volume", "bundles"],
              ["volume", "s3", "copy"],
            ]}
          />
          <p class="hint">
            <Badge tone="ok">ok</Badge> <Badge tone="warn">attention</Badge> <Badge tone="bad">failing</Badge>
            {" "}
            <Badge tone="muted">not configured</Badge> — select a part for its page.
          </p>
        </section>
      </>
    ),
  );
});

const TRIGGER_LABEL: Record<InvariantCheckRecord["trigger"], string> = {
  startup: "on start",
  resumed_deletion: "after a resumed engine deletion",
};
const SECTION_STATUS: Record<InvariantCheckRecord["sections"][number]["status"], [Tone, string]> = {
  checked: ["ok", "checked"],
  cut: ["warn", "cut short"],
  not_reached: ["muted", "not reached"],
};

/** "850 ms" / "4.2 s": the check's durations and time box are seconds, not minutes. */
function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** The last consistency check: when, how far it got, and what it found. */
function InvariantCheckPanel(props: { check: InvariantCheckRecord | null }) {
  const check = props.check;
  const bounds = [
    check?.maxEntries != null ? `${check.maxEntries.toLocaleString("en-US")} entries` : "",
    check?.timeBoxMs != null ? formatMs(check.timeBoxMs) : "",
  ].filter(Boolean).join(", ");
  return (
    <section class="panel" data-testid="invariant-check">
      <h2>Consistency check</h2>
      {!check
        ? (
          <EmptyState title="Never run">
            The cross-key invariant check runs on start and after a resumed engine deletion; its last result
            shows here.
          </EmptyState>
        )
        : (
          <>
            <dl class="facts">
              <dt>Last run</dt>
              <dd>
                {formatTime(check.startedAt)} ({TRIGGER_LABEL[check.trigger]}), took{" "}
                {formatMs(check.durationMs)}
              </dd>
              <dt>Coverage</dt>
              <dd data-testid="invariant-coverage">
                {check.complete ? <Badge tone="ok">complete</Badge> : <Badge tone="warn">partial</Badge>}{" "}
                {check.entriesRead.toLocaleString("en-US")} entries read
                {check.complete ? "" : " before its bounds ran out; the next run continues where it stopped"}
                {bounds && ` (bounds: ${bounds})`}
              </dd>
              <dt>Violations</dt>
              <dd data-testid="invariant-violation-count">
                {check.violationCount
                  ? <Badge tone="bad">{check.violationCount}</Badge>
                  : <Badge tone="ok">{check.complete ? "none" : "none in the areas checked"}</Badge>}
              </dd>
            </dl>
            <table class="table table--compact table--cards">
              <thead>
                <tr>
                  <th>Area</th>
                  <th>Status</th>
                  <th>Entries checked</th>
                  <th>Violations</th>
                </tr>
              </thead>
              <tbody>
                {check.sections.map((s) => (
                  <tr key={s.name} data-testid={`invariant-section-${s.name}`}>
                    <td data-label="Area">{s.label}</td>
                    <td class="cell-status" data-label="Status">
                      <Badge tone={SECTION_STATUS[s.status][0]}>{SECTION_STATUS[s.status][1]}</Badge>
                    </td>
                    <td data-label="Entries checked">{s.entriesChecked}</td>
                    <td data-label="Violations">{s.violations}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {check.violations.length > 0 && (
              <>
                <h3>What is wrong</h3>
                {check.violationCount > check.violations.length && (
                  <p class="hint">
                    The first {check.violations.length} of {check.violationCount}; the log has every one.
                  </p>
                )}
                <table class="table table--compact table--cards">
                  <thead>
                    <tr>
                      <th>Area</th>
                      <th>Alerted account</th>
                      <th>Violation</th>
                    </tr>
                  </thead>
                  <tbody>
                    {check.violations.map((v, i) => (
                      <tr key={i} data-testid="invariant-violation">
                        <td data-label="Area">
                          {check.sections.find((s) => s.name === v.section)?.label ?? v.section}
                        </td>
                        <td data-label="Alerted account">{v.accountName ?? "—"}</td>
                        <td data-label="Violation">{v.message}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </>
            )}
          </>
        )}
    </section>
  );
}

healthPages.get("/database", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { config, results, probe, check } = await getHealthDatabase(kv, actor, {}, clock());
  return render(
    c,
    "Health · Database",
    (
      <>
        <PageHeader
          title="Database"
          subtitle="The two logical databases in Deno KV: size, entries per area, last write, and a live read/write probe."
          actions={<span class="hint">Probe: write {probe.writeMs} ms · read {probe.readMs} ms</span>}
        />
        <div class="grid-2">
          {[config, results].map((db) => (
            <section class="panel" key={db.database}>
              <h2>{db.database === "config" ? "Config DB" : "Results DB"}</h2>
              <dl class="facts">
                <dt>Entries</dt>
                <dd data-testid={`${db.database}-entries`}>{db.entries}</dd>
                <dt>Approximate size</dt>
                <dd>{formatBytes(db.approxBytes)}</dd>
                <dt>Last write</dt>
                <dd>{formatTime(db.lastWriteAt)}</dd>
              </dl>
              <table class="table table--compact">
                <thead>
                  <tr>
                    <th>Area (key prefix)</th>
                    <th>Entries</th>
                    <th>Size</th>
                  </tr>
                </thead>
                <tbody>
                  {db.areas.map((a) => (
                    <tr key={a.prefix}>
                      <td>
                        <code>{a.prefix}</code>
                      </td>
                      <td>{a.entries}</td>
                      <td>{formatBytes(a.approxBytes)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
          ))}
        </div>
        <InvariantCheckPanel check={check} />
      </>
    ),
  );
});
