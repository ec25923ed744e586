/**
 * Backup > Legal holds: the holds in scope, placing one on a host's, a policy's or one restore point's
 * restore points (backup.hold), and releasing one (four-eyes when on). See holds.ts.
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
} from "../components/ui.tsx";
import { requestIfFourEyes } from "../domain/approvals.ts";
import { ConflictError, type FieldErrors, NotFoundError } from "../domain/errors.ts";
import { HoldInput, type LegalHold, placeHold, releaseHold, requireHold } from "../domain/holds.ts";
import { can } from "../domain/rbac.ts";
import { getHoldsPage } from "../domain/read_models/holds.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

export const holdRoutes = new Hono<AppEnv>();

type Typed = { subject: string; pointId: string; reason: string; caseReference: string };

async function holdsPage(c: Context<AppEnv>, typed?: Typed, errors: FieldErrors = {}, message?: string) {
  const { kv, clock } = c.get("deps");
  // "Place legal hold" links from a restore point's or a host's page arrive with the subject chosen.
  typed ??= {
    subject: (c.req.query("subject") ?? "").slice(0, 60),
    pointId: (c.req.query("pointId") ?? "").slice(0, 40),
    reason: "",
    caseReference: "",
  };
  const actor = c.get("actor")!;
  const { holds, mayPlace, hosts, policies } = await getHoldsPage(
    kv,
    actor,
    { all: c.req.query("status") === "all" },
    clock(),
  );
  const csrf = c.get("csrfToken");
  const showAll = c.req.query("status") === "all";
  return render(
    c,
    "Legal holds",
    <>
      <PageHeader
        title="Legal holds"
        subtitle="Held restore points are never pruned or expired: retention keeps them (and the chain they depend on) and shows the hold as the reason."
      />
      <FormErrors message={message} />
      <p>
        {showAll
          ? <a href="/backup/holds">Active holds only</a>
          : <a href="/backup/holds?status=all">Include released holds</a>}
      </p>
      {holds.length === 0 ? <EmptyState title="No legal holds" /> : (
        <DataTable
          class="table table--cards"
          heads={["Case", "Covers", "Reason", "Placed", "Status", "Action"]}
        >
          {holds.map((h: LegalHold) => (
            <tr key={h.id} id={`hold-${h.id}`}>
              <td data-label="Case">{h.caseReference}</td>
              <td data-label="Covers">{h.scope} {h.subjectLabel}</td>
              <td data-label="Reason">{h.reason}</td>
              <td data-label="Placed" class="nowrap">{formatTime(h.placedAt)} by {h.placedByLabel}</td>
              <td data-label="Status">
                <Badge tone={h.status === "active" ? "warn" : "muted"}>{h.status}</Badge>
                {h.releasedAt && (
                  <div class="hint">
                    {formatTime(h.releasedAt)} by {h.releasedByLabel}
                  </div>
                )}
              </td>
              <td data-label="Action">
                {h.status === "active" && can(actor, "backup.hold", h) && (
                  <form method="post" action={`/backup/holds/${h.id}/release`}>
                    <Csrf token={csrf} />
                    <label class="choice">
                      <input type="checkbox" name="confirm" value="on" required />{" "}
                      Release: its points may expire
                    </label>
                    <button type="submit" class="btn btn--small">Release</button>
                  </form>
                )}
              </td>
            </tr>
          ))}
        </DataTable>
      )}
      {mayPlace && (
        <section class="panel" id="place">
          <h2>Place a hold</h2>
          <form method="post" action="/backup/holds" class="form">
            <Csrf token={csrf} />
            <div class={errors.subjectId ? "field field--error" : "field"}>
              <label for="f-subject">Hold every restore point of</label>
              <select id="f-subject" name="subject">
                <option value="">— a single restore point (id below) —</option>
                <optgroup label="Hosts">
                  {hosts.map((h) => (
                    <option key={h.id} value={`host:${h.id}`} selected={typed?.subject === `host:${h.id}`}>
                      {h.hostname}
                    </option>
                  ))}
                </optgroup>
                <optgroup label="Policies">
                  {policies.map((p) => (
                    <option
                      key={p.id}
                      value={`policy:${p.id}`}
                      selected={typed?.subject === `policy:${p.id}`}
                    >
                      {p.name}
                    </option>
                  ))}
                </optgroup>
              </select>
              {errors.subjectId && <p class="field-error">{errors.subjectId}</p>}
            </div>
            <Field
              name="pointId"
              label="Restore point id"
              value={typed?.pointId}
              hint="Only for a single restore point (shown on the point's page)"
            />
            <Field
              name="caseReference"
              label="Case reference"
              value={typed?.caseReference}
              errors={errors}
              required
            />
            <Field name="reason" label="Reason" value={typed?.reason} errors={errors} required />
            <FormActions submit="Place hold" />
          </form>
        </section>
      )}
    </>,
    Object.keys(errors).length || message ? 422 : 200,
  );
}

holdRoutes.get("/", requires("backup.view"), async (c) => await holdsPage(c));

holdRoutes.post("/", requires("backup.hold"), async (c) => {
  const { kv, clock } = c.get("deps");
  const form = await readForm(c);
  const typed: Typed = {
    subject: str(form, "subject"),
    pointId: str(form, "pointId").trim(),
    reason: str(form, "reason"),
    caseReference: str(form, "caseReference"),
  };
  const [scope, subjectId] = typed.subject ? typed.subject.split(":", 2) : ["point", typed.pointId];
  const parsed = HoldInput.safeParse({
    scope,
    subjectId,
    reason: typed.reason,
    caseReference: typed.caseReference,
  });
  if (!parsed.success) return await holdsPage(c, typed, fieldErrors(parsed.error), "The hold was not placed");
  try {
    const hold = await placeHold(kv, c.get("actor")!, parsed.data, clock());
    return redirectWithNotice(
      c,
      "/backup/holds",
      `Placed legal hold ${hold.caseReference} on ${hold.subjectLabel}.`,
    );
  } catch (e) {
    if (!(e instanceof NotFoundError) && !(e instanceof ConflictError)) throw e;
    return await holdsPage(c, typed, { subjectId: e.message }, "The hold was not placed");
  }
});

holdRoutes.post("/:holdId/release", requires("backup.hold"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const holdId = (await requireHold(kv, actor, c.req.param("holdId"))).id;
  if (str(await readForm(c), "confirm") !== "on") {
    return await holdsPage(c, undefined, {}, "Not released: tick the confirmation first.");
  }
  const request = await requestIfFourEyes(
    kv,
    actor,
    { kind: "legal_hold.release", input: { holdId } },
    clock(),
  );
  if (request) {
    return redirectWithNotice(
      c,
      `/backup/approvals/${request.id}`,
      "Four-eyes is on: the release waits for a second person's approval.",
    );
  }
  try {
    const hold = await releaseHold(kv, actor, holdId, clock());
    return redirectWithNotice(c, "/backup/holds", `Released legal hold ${hold.caseReference}.`);
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return await holdsPage(c, undefined, {}, `Not released: ${e.message}`);
  }
});
