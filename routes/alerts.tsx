/** Backup > Alerts: open, acknowledged and resolved alerts; acknowledge needs backup.manage. */
import { Hono } from "hono";
import { Badge, Csrf, DataTable, EmptyState, formatTime, PageHeader, type Tone } from "../components/ui.tsx";
import {
  acknowledgeAlert,
  type Alert,
  ALERT_SEVERITIES,
  ALERT_STATUSES,
  AlertFilter,
} from "../domain/alerts.ts";
import { can } from "../domain/rbac.ts";
import { getAlertsPage } from "../domain/read_models/admin.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { StaleCursorNotice } from "./paging.tsx";
import { redirectWithNotice, render } from "./render.tsx";

export const alertRoutes = new Hono<AppEnv>();

/** The badge tone of an alert severity (the notification pages use it too). */
export const SEVERITY_TONE: Record<Alert["severity"], Tone> = {
  critical: "bad",
  warning: "warn",
  info: "info",
};
const STATUS_TONE: Record<Alert["status"], Tone> = { open: "bad", acknowledged: "warn", resolved: "ok" };

function subjectLink(a: Alert) {
  if (a.subjectType === "protected_object") {
    return <a href={`/backup/protected?q=${encodeURIComponent(a.subjectName)}`}>{a.subjectName}</a>;
  }
  // The account itself (the consistency check): its details are on Health > Database, for platform admins.
  if (a.subjectType === "account") return <>{a.subjectName}</>;
  if (a.subjectType === "drill") {
    return <a href={`/backup/drills/${a.subjectId.split("~")[0]}`}>{a.subjectName}</a>;
  }
  const base =
    { engine: "/backup/engines/", storage_target: "/backup/storage/", host: "/backup/hosts/" }[a.subjectType];
  return <a href={base + a.subjectId}>{a.subjectName}</a>;
}

alertRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const raw = c.req.query();
  const filter = AlertFilter.parse({ status: "open", ...raw });
  const { page, staleCursor } = await getAlertsPage(kv, actor, { filter }, clock());
  const keep = Object.fromEntries(
    Object.entries({ status: filter.status, severity: filter.severity, cursor: page.cursor }).filter((
      [, v],
    ) => v !== ""),
  );
  return render(
    c,
    "Alerts",
    (
      <>
        <PageHeader
          title="Alerts"
          subtitle="One alert per subject and reason; it resolves by itself when the condition clears."
        />
        <StaleCursorNotice show={staleCursor} />
        <form method="get" class="filters">
          <select name="status" aria-label="Status">
            <option value="" selected={filter.status === ""}>Any status</option>
            {ALERT_STATUSES.map((s) => <option key={s} value={s} selected={filter.status === s}>{s}</option>)}
          </select>
          <select name="severity" aria-label="Severity">
            <option value="">Any severity</option>
            {ALERT_SEVERITIES.map((s) => (
              <option key={s} value={s} selected={filter.severity === s}>{s}</option>
            ))}
          </select>
          <button type="submit" class="btn">Filter</button>
        </form>
        {page.values.length === 0
          ? (
            <EmptyState title={filter.status === "open" ? "No open alerts" : "No alerts match"}>
              All quiet.
            </EmptyState>
          )
          : (
            <DataTable
              class="table table--cards"
              heads={["Severity", "Status", "Subject", "Message", "Opened", "Last seen", "Count", "Action"]}
            >
              {page.values.map((a) => (
                <tr key={a.id}>
                  <td data-label="Severity">
                    <Badge tone={SEVERITY_TONE[a.severity]}>{a.severity}</Badge>
                  </td>
                  <td class="cell-status" data-label="Status">
                    <Badge tone={STATUS_TONE[a.status]}>{a.status}</Badge>
                  </td>
                  <td data-label="Subject">{subjectLink(a)}</td>
                  <td data-label="Message">
                    {a.message}
                    {a.acknowledgedBy && <div class="hint">Acknowledged by {a.acknowledgedBy}</div>}
                  </td>
                  <td data-label="Opened" class="nowrap">{formatTime(a.openedAt)}</td>
                  <td data-label="Last seen" class="nowrap">
                    {formatTime(a.resolvedAt ?? a.lastSeenAt)}
                  </td>
                  <td data-label="Count">{a.count}</td>
                  <td data-label="Action">
                    {a.status === "open" &&
                      can(actor, "backup.manage", { accountId: a.accountId, orgId: a.orgId }) && (
                      <form method="post" action={`/backup/alerts/${a.id}/acknowledge`}>
                        <Csrf token={c.get("csrfToken")} />
                        <button type="submit" class="btn btn--small">Acknowledge</button>
                      </form>
                    )}
                  </td>
                </tr>
              ))}
            </DataTable>
          )}
        {page.cursor && (
          <nav class="pager">
            <a href={"?" + new URLSearchParams(keep).toString()}>Older alerts →</a>
          </nav>
        )}
      </>
    ),
  );
});

alertRoutes.post("/:alertId/acknowledge", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const alert = await acknowledgeAlert(kv, c.get("actor")!, c.req.param("alertId"), clock());
  return redirectWithNotice(c, "/backup/alerts", `Acknowledged: ${alert.message}`);
});
