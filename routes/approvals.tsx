/**
 * Backup > Approvals: four-eyes requests (pending and decided) with approve / refuse forms that ask
 * for confirmation, and Admin > Four-eyes: the account setting (approvals.ts).
 */
import { type Context, Hono } from "hono";
import {
  Badge,
  Csrf,
  DataTable,
  EmptyState,
  Field,
  FormActions,
  formatTime,
  FormErrors,
  PageHeader,
  type Tone,
} from "../components/ui.tsx";
import {
  APPROVAL_KIND_LABELS,
  type ApprovalRequest,
  type ApprovalStatus,
  approveRequest,
  canDecide,
  FourEyesSettingsInput,
  getFourEyesSettings,
  RefuseInput,
  refuseRequest,
  requestIfFourEyes,
  requireApproval,
  setFourEyesSettings,
} from "../domain/approvals.ts";
import { ConflictError, ForbiddenError } from "../domain/errors.ts";
import { getApprovalsPage } from "../domain/read_models/admin.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { noStore, redirectWithNotice, render } from "./render.tsx";

export const approvalRoutes = new Hono<AppEnv>();
export const fourEyesAdminRoutes = new Hono<AppEnv>();

const STATUS_TONE: Record<ApprovalStatus, Tone> = {
  pending: "warn",
  executing: "info",
  executed: "ok",
  failed: "bad",
  refused: "muted",
  expired: "muted",
  interrupted: "bad",
};

function RequestRows(props: { rows: ApprovalRequest[] }) {
  return (
    <DataTable
      class="table table--cards"
      heads={["Status", "Action", "Requested by", "Requested", "Expires / decided", "Outcome"]}
    >
      {props.rows.map((r) => (
        <tr key={r.id}>
          <td class="cell-status" data-label="Status">
            <Badge tone={STATUS_TONE[r.status]}>{r.status}</Badge>
          </td>
          <td data-label="Action">
            <a href={`/backup/approvals/${r.id}`}>{r.summary}</a>
            <div class="hint">{APPROVAL_KIND_LABELS[r.kind]}</div>
          </td>
          <td data-label="Requested by">{r.requestedByLabel}</td>
          <td data-label="Requested" class="nowrap">{formatTime(r.requestedAt)}</td>
          <td data-label="Expires / decided" class="nowrap">
            {r.decidedAt ? <>{formatTime(r.decidedAt)} by {r.decidedByLabel ?? "the system"}</> : (
              formatTime(r.expiresAt)
            )}
          </td>
          <td data-label="Outcome">{r.outcome ?? "—"}</td>
        </tr>
      ))}
    </DataTable>
  );
}

approvalRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { settings, pending, decided } = await getApprovalsPage(kv, actor, {}, clock());
  return render(
    c,
    "Approvals",
    <>
      <PageHeader
        title="Approvals"
        subtitle={settings.enabled
          ? `Four-eyes is on: destructive actions wait for a second person's approval (${settings.ttlHours} h limit).`
          : "Four-eyes is off: destructive actions run at once. An administrator turns it on under Admin > Four-eyes."}
      />
      <section class="panel">
        <h2>Waiting for approval</h2>
        {pending.length === 0 ? <EmptyState title="No pending requests" /> : <RequestRows rows={pending} />}
      </section>
      <section class="panel">
        <h2>Decided</h2>
        {decided.length === 0
          ? <EmptyState title="No decided requests yet" />
          : <RequestRows rows={decided} />}
      </section>
    </>,
  );
});

function requestPage(
  c: Context<AppEnv>,
  request: ApprovalRequest,
  error?: string,
) {
  const actor = c.get("actor")!;
  const now = c.get("deps").clock();
  const open = request.status === "pending" && now.getTime() < Date.parse(request.expiresAt);
  const own = actor.id === request.requestedById;
  const csrf = c.get("csrfToken");
  return render(
    c,
    "Approval request",
    <>
      <PageHeader title={request.summary} subtitle={APPROVAL_KIND_LABELS[request.kind]} />
      <FormErrors message={error} />
      <dl class="details">
        <dt>Status</dt>
        <dd>
          <Badge tone={STATUS_TONE[request.status]}>{request.status}</Badge>
        </dd>
        <dt>Requested by</dt>
        <dd>{request.requestedByLabel}, {formatTime(request.requestedAt)}</dd>
        <dt>Expires</dt>
        <dd>{formatTime(request.expiresAt)}</dd>
        <dt>Approver needs</dt>
        <dd>
          <code>{request.permission}</code> on this object, and must not be the requester
        </dd>
        {request.decidedAt && (
          <>
            <dt>Decided</dt>
            <dd>{formatTime(request.decidedAt)} by {request.decidedByLabel ?? "the system"}</dd>
          </>
        )}
        {request.outcome && (
          <>
            <dt>Outcome</dt>
            <dd>{request.outcome}</dd>
          </>
        )}
      </dl>
      {open && canDecide(actor, request) && (
        <section class="panel panel--danger">
          <h2>Approve</h2>
          <form method="post" action={`/backup/approvals/${request.id}/approve`} class="form">
            <Csrf token={csrf} />
            <label class="choice">
              <input type="checkbox" name="confirm" value="on" required />{" "}
              I checked this request: run “{request.summary}” now, as me
            </label>
            <div class="form-actions">
              <button type="submit" class="btn btn--danger">Approve and run</button>
            </div>
          </form>
        </section>
      )}
      {open && own && <p class="hint">You requested this: a second, different user must approve it.</p>}
      {open && (own || canDecide(actor, request)) && (
        <section class="panel">
          <h2>{own ? "Withdraw" : "Refuse"}</h2>
          <form method="post" action={`/backup/approvals/${request.id}/refuse`} class="form">
            <Csrf token={csrf} />
            <Field name="note" label="Note (optional)" />
            <label class="choice">
              <input type="checkbox" name="confirm" value="on" required />{" "}
              {own ? "Withdraw my request" : "Refuse this request: nothing of it runs"}
            </label>
            <div class="form-actions">
              <button type="submit" class="btn">{own ? "Withdraw" : "Refuse"}</button>
            </div>
          </form>
        </section>
      )}
      <p>
        <a href="/backup/approvals">All requests</a>
      </p>
    </>,
    error ? 422 : 200,
  );
}

approvalRoutes.get("/:requestId", requires("backup.view"), async (c) => {
  const request = await requireApproval(c.get("deps").kv, c.get("actor")!, c.req.param("requestId"));
  return await requestPage(c, request);
});

approvalRoutes.post("/:requestId/approve", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const actor = c.get("actor")!;
  const request = await requireApproval(kv, actor, c.req.param("requestId"));
  if (str(await readForm(c), "confirm") !== "on") {
    return await requestPage(c, request, "Not approved: tick the confirmation first.");
  }
  try {
    const { request: settled, outcome } = await approveRequest(kv, actor, request.id, {
      now: clock(),
      masterKey,
    });
    if (outcome?.secret) {
      noStore(c);
      return render(
        c,
        "Approved",
        <>
          <PageHeader title="Approved and run" subtitle={settled.summary} />
          <p>{settled.outcome}</p>
          <p>The new secret, shown this once — hand it to whoever needs it:</p>
          <pre class="command" data-testid="approved-secret"><code>{outcome.secret}</code></pre>
          <a href="/backup/approvals">All requests</a>
        </>,
      );
    }
    return redirectWithNotice(c, `/backup/approvals/${request.id}`, `${settled.status}: ${settled.outcome}`);
  } catch (e) {
    if (!(e instanceof ConflictError) && !(e instanceof ForbiddenError)) throw e;
    if (e instanceof ForbiddenError && actor.id !== request.requestedById) throw e;
    return await requestPage(c, await requireApproval(kv, actor, request.id), `Not approved: ${e.message}`);
  }
});

approvalRoutes.post("/:requestId/refuse", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const request = await requireApproval(kv, actor, c.req.param("requestId"));
  const form = await readForm(c);
  if (str(form, "confirm") !== "on") {
    return await requestPage(c, request, "Not refused: tick the confirmation first.");
  }
  const parsed = RefuseInput.safeParse({ note: str(form, "note") });
  if (!parsed.success) {
    return await requestPage(c, request, `Not refused: the note ${fieldErrors(parsed.error).note}`);
  }
  try {
    const refused = await refuseRequest(kv, actor, request.id, parsed.data, clock());
    return redirectWithNotice(c, "/backup/approvals", `Refused: ${refused.summary}`);
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return await requestPage(c, await requireApproval(kv, actor, request.id), `Not refused: ${e.message}`);
  }
});

async function settingsPage(
  c: Context<AppEnv>,
  form?: { enabled: boolean; ttlHours: string },
  errors: Record<string, string> = {},
) {
  const settings = await getFourEyesSettings(c.get("deps").kv, c.get("actor")!.accountId ?? "");
  const enabled = form?.enabled ?? settings.enabled;
  return render(
    c,
    "Four-eyes",
    <>
      <PageHeader
        title="Four-eyes approval"
        subtitle="When on, deleting a BES, a storage target or a policy, expiring a restore point early, turning a policy's encryption off, lowering its retention, rotating a secret or a vault key, and releasing a legal hold become requests that a second user must approve."
      />
      <FormErrors message={Object.keys(errors).length ? "The setting was not saved" : undefined} />
      <form method="post" action="/admin/four-eyes" class="form">
        <Csrf token={c.get("csrfToken")} />
        <label class="choice">
          <input type="checkbox" name="enabled" value="on" checked={enabled} />{" "}
          Require a second person's approval for destructive actions
        </label>
        <Field
          name="ttlHours"
          label="Requests expire after (hours)"
          type="number"
          value={form?.ttlHours ?? String(settings.ttlHours)}
          errors={errors}
          hint="1–168; an expired request changes nothing"
        />
        <FormActions submit="Save" />
      </form>
      {settings.updatedAt && (
        <p class="hint">Last changed {formatTime(settings.updatedAt)} by {settings.updatedBy}</p>
      )}
    </>,
    Object.keys(errors).length ? 422 : 200,
  );
}

fourEyesAdminRoutes.get("/", requires("admin"), async (c) => await settingsPage(c));

fourEyesAdminRoutes.post("/", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const form = await readForm(c);
  const typed = { enabled: str(form, "enabled") === "on", ttlHours: str(form, "ttlHours") || "24" };
  const parsed = FourEyesSettingsInput.safeParse(typed);
  if (!parsed.success) return await settingsPage(c, typed, fieldErrors(parsed.error));
  const actor = c.get("actor")!;
  if (!parsed.data.enabled && actor.accountId) {
    // Turning the guard off while it is on waits for a second admin, like the actions it guards.
    const request = await requestIfFourEyes(kv, actor, {
      kind: "four_eyes.disable",
      input: { accountId: actor.accountId },
    }, clock());
    if (request) return redirectToApproval(c, request);
  }
  const saved = await setFourEyesSettings(kv, actor, parsed.data, clock());
  return redirectWithNotice(
    c,
    "/admin/four-eyes",
    saved.enabled ? `Four-eyes is on (${saved.ttlHours} h limit).` : "Four-eyes is off.",
  );
});

/** Where a page sends its user when four-eyes turned their action into a request. */
export function redirectToApproval(c: Context<AppEnv>, request: ApprovalRequest) {
  return redirectWithNotice(
    c,
    `/backup/approvals/${request.id}`,
    `Four-eyes is on: “${request.summary}” waits for a second person's approval; nothing changed yet.`,
  );
}
