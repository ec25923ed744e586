/**
 * Backup > Suspicious changes: the anomaly guard's flags (domain/anomalies.ts). The list (open ones first) and
 * one anomaly's page — the figures against the baseline, links to the run, the suspect point and the last clean
 * one — with its review as forms (CSRF, a confirmation tick, an optional note): approve as an expected change,
 * confirm the incident, release a confirmed incident. Reading needs backup.view, reviewing backup.manage.
 */
import { Hono } from "hono";
import { ANOMALY_STATUS, AnomalyChecks } from "../components/anomaly.tsx";
import { Badge, Csrf, EmptyState, formatTime, PageHeader } from "../components/ui.tsx";
import {
  type Anomaly,
  listAnomalies,
  requireAnomaly,
  type ReviewAction,
  reviewAnomaly,
  ReviewInput,
} from "../domain/anomalies.ts";
import { ConflictError } from "../domain/errors.ts";
import { can } from "../domain/rbac.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

export const anomalyRoutes = new Hono<AppEnv>();

anomalyRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv } = c.get("deps");
  const all = await listAnomalies(kv, c.get("actor")!, { limit: 200 });
  const open = all.filter((a) => a.status === "pending" || a.status === "incident");
  const closed = all.filter((a) => a.status !== "pending" && a.status !== "incident");
  return render(
    c,
    "Suspicious changes",
    <>
      <PageHeader
        title="Suspicious changes"
        subtitle="Backups whose change rate or entropy was far outside their host's baseline (possible ransomware)."
      />
      {all.length === 0
        ? (
          <EmptyState title="No suspicious change flagged">
            Every backup is compared with the last 30 of its host and policy; see the README's anomaly guard.
          </EmptyState>
        )
        : (
          <>
            <AnomalyTable rows={open} caption="Open: prune frozen for these hosts" />
            {closed.length > 0 && <AnomalyTable rows={closed} caption="Reviewed" />}
          </>
        )}
    </>,
  );
});

function AnomalyTable(props: { rows: Anomaly[]; caption: string }) {
  if (!props.rows.length) return <p class="muted">{props.caption}: none.</p>;
  return (
    <div class="table-wrap" tabIndex={0}>
      <table class="table table--cards" data-testid="anomalies">
        <caption>{props.caption}</caption>
        <thead>
          <tr>
            <th>Flagged</th>
            <th>Host</th>
            <th>Policy</th>
            <th>Why</th>
            <th>Status</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map((a) => (
            <tr key={a.id} data-anomaly={a.id}>
              <td data-label="Flagged">
                <a href={`/backup/anomalies/${a.id}`}>{formatTime(a.flaggedAt)}</a>
              </td>
              <td data-label="Host">{a.hostName}</td>
              <td data-label="Policy">{a.policyName}</td>
              <td data-label="Why">{a.verdict.reasons[0] ?? ""}</td>
              <td class="cell-status" data-label="Status">
                <Badge tone={ANOMALY_STATUS[a.status].tone}>{ANOMALY_STATUS[a.status].label}</Badge>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

const FORMS: Array<
  {
    action: ReviewAction;
    segment: string;
    from: Anomaly["status"];
    button: string;
    tick: string;
    danger?: boolean;
  }
> = [
  {
    action: "approve",
    segment: "approve",
    from: "pending",
    button: "Approve as expected change",
    tick: "I checked: this change was expected. The baseline accepts it and prune resumes for the host",
  },
  {
    action: "incident",
    segment: "incident",
    from: "pending",
    button: "Confirm incident",
    tick: "I confirm an incident: prune stays frozen for the host until it is released",
    danger: true,
  },
  {
    action: "release",
    segment: "release",
    from: "incident",
    button: "Release incident",
    tick:
      "The incident is handled: prune may resume for the host (older points expire under retention again)",
    danger: true,
  },
];

anomalyRoutes.get("/:anomalyId", requires("backup.view"), async (c) => {
  const { kv } = c.get("deps");
  const actor = c.get("actor")!;
  const a = await requireAnomaly(kv, actor, c.req.param("anomalyId"));
  const manage = can(actor, "backup.manage", { accountId: a.accountId, orgId: a.orgId });
  const csrf = c.get("csrfToken") ?? "";
  const status = ANOMALY_STATUS[a.status];
  const forms = FORMS.filter((f) => f.from === a.status);
  return render(
    c,
    `Suspicious change on ${a.hostName}`,
    <>
      <PageHeader
        title={`Suspicious change · ${a.hostName}`}
        subtitle={<>Policy {a.policyName} · flagged {formatTime(a.flaggedAt)}</>}
      />
      <section class="panel panel--danger" data-testid="anomaly">
        <h2>
          <Badge tone={status.tone}>{status.label}</Badge>
        </h2>
        <dl class="facts">
          <dt>Run</dt>
          <dd>
            <a href={`/backup/runs/${a.runId}`}>{a.runId}</a>
          </dd>
          <dt>Suspect restore point</dt>
          <dd>
            <a href={`/backup/restore/points/${a.restorePointId}`}>{a.restorePointId}</a>
          </dd>
          <dt>Last clean restore point</dt>
          <dd data-testid="last-clean">
            {a.lastCleanPointId
              ? <a href={`/backup/restore/points/${a.lastCleanPointId}`}>{a.lastCleanPointId}</a>
              : "none yet"}
          </dd>
          {a.reviewedAt && (
            <>
              <dt>Reviewed</dt>
              <dd>
                {formatTime(a.reviewedAt)} by {a.reviewedBy}
                {a.reviewNote ? ` — ${a.reviewNote}` : ""}
              </dd>
            </>
          )}
          {a.releasedAt && (
            <>
              <dt>Released</dt>
              <dd>
                {formatTime(a.releasedAt)} by {a.releasedBy}
                {a.releaseNote ? ` — ${a.releaseNote}` : ""}
              </dd>
            </>
          )}
        </dl>
        <AnomalyChecks anomaly={a} />
      </section>
      {manage && forms.length > 0 && (
        <section class="panel" id="review">
          <h2>Review</h2>
          {forms.map((f) => (
            <form
              key={f.action}
              method="post"
              action={`/backup/anomalies/${a.id}/${f.segment}`}
              class="form"
              data-testid={`review-${f.action}`}
            >
              <Csrf token={csrf} />
              <label class="choice">
                <input type="checkbox" name="confirm" value="on" required /> {f.tick}
              </label>
              <label>
                Note (optional) <input type="text" name="note" maxLength={500} />
              </label>
              <div class="form-actions">
                <button type="submit" class={f.danger ? "btn btn--danger" : "btn btn--primary"}>
                  {f.button}
                </button>
              </div>
            </form>
          ))}
        </section>
      )}
    </>,
  );
});

for (const f of FORMS) {
  anomalyRoutes.post(`/:anomalyId/${f.segment}`, requires("backup.manage"), async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const id = c.req.param("anomalyId");
    const back = `/backup/anomalies/${id}`;
    const form = await readForm(c);
    const parsed = ReviewInput.safeParse({ confirm: str(form, "confirm") === "on", note: str(form, "note") });
    // The anomaly's scope first: one out of scope is a 404 whatever the form says.
    await requireAnomaly(kv, actor, id);
    if (!parsed.success) {
      return redirectWithNotice(
        c,
        `${back}#review`,
        `Not done: ${parsed.error.issues[0]?.message ?? "invalid"}`,
      );
    }
    try {
      await reviewAnomaly(kv, actor, id, f.action, parsed.data, clock());
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      return redirectWithNotice(c, back, `Not done: ${e.message}`);
    }
    return redirectWithNotice(
      c,
      back,
      f.action === "approve"
        ? "Approved as an expected change: the baseline accepts it."
        : f.action === "incident"
        ? "Incident confirmed: prune stays frozen for the host until you release it."
        : "Incident released.",
    );
  });
}
