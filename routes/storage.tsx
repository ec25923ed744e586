/** Backup > Storage: targets with live capacity, create per type, detail with history chart, edit, delete. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { redirectToApproval } from "./approvals.tsx";
import { type Context, Hono } from "hono";
import { dateTimeText } from "../components/time.tsx";
import { Island } from "../components/Island.tsx";
import {
  Badge,
  ConfirmForm,
  Csrf,
  EmptyState,
  Field,
  FormActions,
  formatAge,
  formatBytes,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
  type Tone,
} from "../components/ui.tsx";
import { type Engine } from "../domain/engines.ts";
import { ConflictError, type FieldErrors, ValidationError } from "../domain/errors.ts";
import { can } from "../domain/rbac.ts";
import {
  capacityRows,
  createTarget,
  CREDENTIAL_TYPES,
  deleteTarget,
  requireTarget,
  STORAGE_CHECKS,
  type StorageCheck,
  type StorageCheckView,
  type StorageTarget,
  TARGET_TYPE_LABELS,
  TARGET_TYPES,
  TargetCreateInput,
  TargetFilter,
  type TargetHealth,
  TargetUpdateInput,
  updateTarget,
} from "../domain/storage.ts";
import CapacityChart from "../islands/CapacityChart.tsx";
import CapacityWidget from "../islands/CapacityWidget.tsx";
import {
  getStorageDelete,
  getStorageDetail,
  getStorageList,
  getStorageNew,
} from "../domain/read_models/storage.ts";
import { requires } from "./access.ts";
import { FilteredList, listQuery } from "./list_page.tsx";
import type { AppEnv } from "./env.ts";
import { type FormFields, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";
import { STORAGE_CHECK_SEGMENTS, storageCheckHandler } from "./storage_checks.ts";
import {
  CONFIG_FIELDS,
  configFromForm,
  credentialsFromForm,
  targetFieldErrors,
  TYPE_GROUP,
} from "./storage_form.ts";

export const storageRoutes = new Hono<AppEnv>();

const HEALTH_TONE: Record<TargetHealth, Tone> = {
  unknown: "muted",
  healthy: "ok",
  warning: "warn",
  critical: "bad",
};

export function HealthBadge(props: { health: TargetHealth }) {
  return <Badge tone={HEALTH_TONE[props.health]}>{props.health}</Badge>;
}

/** The early warning, beside the health (never part of it): projected full within 14 days. */
function FullSoonBadge(props: { target: Pick<StorageTarget, "capacity"> }) {
  const cap = props.target.capacity;
  if (!cap?.fullSoon) return null;
  return (
    <span title={`Projected full on ${dateTimeText(cap.estimatedFullAt)} at the current growth`}>
      <Badge tone="warn">full within 14 days</Badge>
    </span>
  );
}

storageRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const list = listQuery(TargetFilter, c.req.query(), ["besId", "type", "health"]);
  const { filter, filtered } = list;
  const now = clock();
  const { targets: { values, total }, engines, fullest: all, engineName } = await getStorageList(
    kv,
    actor,
    { filter },
    now,
  );
  return render(
    c,
    "Storage",
    (
      <>
        <PageHeader
          title="Storage"
          subtitle="Storage targets attached to backup engines, with capacity reported by each engine's heartbeat."
          actions={can(actor, "backup.manage") && (
            <a class="btn btn--primary" href="/backup/storage/new">Add Storage Target</a>
          )}
        />
        {all.total > 0 && (
          <Island
            name="CapacityWidget"
            component={CapacityWidget}
            props={{ url: "/api/v1/storage-capacity", rows: capacityRows(all.values.slice(0, 10)) }}
          />
        )}
        <FilteredList
          list={list}
          path="/backup/storage"
          searchPlaceholder="Search name"
          filters={
            <>
              <select name="besId" aria-label="Engine">
                <option value="">All engines</option>
                {engines.values.map((e) => (
                  <option key={e.id} value={e.id} selected={filter.besId === e.id}>{e.name}</option>
                ))}
              </select>
              <select name="type" aria-label="Type">
                <option value="">All types</option>
                {TARGET_TYPES.map((t) => (
                  <option key={t} value={t} selected={filter.type === t}>{TARGET_TYPE_LABELS[t]}</option>
                ))}
              </select>
              <select name="health" aria-label="Health">
                <option value="">Any health</option>
                {["healthy", "warning", "critical", "unknown"].map((h) => (
                  <option key={h} value={h} selected={filter.health === h}>{h}</option>
                ))}
              </select>
            </>
          }
          empty={{
            title: filtered ? "No storage targets match" : "No storage targets yet",
            // Two parts (the body shows, empty, when a filter is set: as before the list helper).
            children: [
              !filtered && engines.total === 0 &&
              "Register a backup engine first: storage targets belong to an engine.",
              !filtered && engines.total > 0 && can(actor, "backup.manage") && (
                <a href="/backup/storage/new">Add the first storage target</a>
              ),
            ],
          }}
          columns={[
            { label: "Name", sort: "name" },
            { label: "Type" },
            { label: "Engine" },
            { label: "Health", sort: "health" },
            { label: "Usage", sort: "usage" },
            { label: "Used / total" },
            { label: "Full by" },
            { label: "Last report" },
          ]}
          count={values.length}
          total={total}
          rows={values.map((t) => (
            <tr key={t.id}>
              <td data-label="Name">
                <a href={`/backup/storage/${t.id}`}>{t.name}</a>
              </td>
              <td data-label="Type">{TARGET_TYPE_LABELS[t.type]}</td>
              <td data-label="Engine">{engineName.get(t.besId) ?? "—"}</td>
              <td class="cell-status nowrap" data-label="Health">
                <HealthBadge health={t.health} /> <FullSoonBadge target={t} />
              </td>
              <td data-label="Usage">{t.capacity ? `${t.capacity.usagePercent}%` : "—"}</td>
              <td data-label="Used / total" class="nowrap">
                {t.capacity
                  ? `${formatBytes(t.capacity.usedBytes)} / ${formatBytes(t.capacity.totalBytes)}`
                  : "—"}
              </td>
              <td data-label="Full by" class="nowrap">{formatTime(t.capacity?.estimatedFullAt)}</td>
              <td data-label="Last report" class="nowrap">{formatAge(t.capacity?.at, now)}</td>
            </tr>
          ))}
        />
      </>
    ),
  );
});

interface TargetFormProps {
  csrf: string;
  action: string;
  engines: Engine[];
  values: FormFields;
  errors?: FieldErrors;
  error?: string;
  existing?: StorageTarget;
}

/** The create/edit form; type and engine are fixed once created. */
function TargetForm(props: TargetFormProps) {
  const v = (name: string) => str(props.values, name);
  const e = props.existing;
  return (
    <form method="post" action={props.action} class="form">
      <Csrf token={props.csrf} />
      <FormErrors message={props.error} />
      <Field name="name" label="Name" value={v("name")} errors={props.errors} required />
      {e
        ? (
          <p class="readonly">
            {TARGET_TYPE_LABELS[e.type]} on engine{" "}
            {props.engines.find((x) => x.id === e.besId)?.name ?? e.besId}
            <input type="hidden" name="type" value={e.type} />
          </p>
        )
        : (
          <>
            <Select
              name="type"
              label="Target type"
              value={v("type") || "s3"}
              errors={props.errors}
              options={TARGET_TYPES.map((t) => ({ value: t, label: TARGET_TYPE_LABELS[t] }))}
            />
            <Select
              name="besId"
              label="BES (backup engine)"
              value={v("besId")}
              errors={props.errors}
              blank="Choose an engine…"
              options={props.engines.map((x) => ({
                value: x.id,
                label: `${x.name}${x.orgId ? "" : " (account-scoped)"}`,
              }))}
            />
          </>
        )}
      {Object.entries(CONFIG_FIELDS).filter(([group]) => !e || TYPE_GROUP[e.type] === group).map((
        [group, fields],
      ) => (
        <fieldset class="type-fields" data-group={group} key={group}>
          <legend>{group === "s3" ? "S3 / S3 Compatible" : group.toUpperCase()} connection</legend>
          {fields.map((f) => (
            <Field
              key={f.name}
              name={`${group}_${f.name}`}
              label={f.label}
              value={v(`${group}_${f.name}`)}
              errors={props.errors}
              hint={f.hint}
            />
          ))}
        </fieldset>
      ))}
      <div class="grid-2">
        <Field
          name="alertThreshold"
          label="Alert threshold (%)"
          type="number"
          value={v("alertThreshold") || "85"}
          errors={props.errors}
          hint="Warning at or above this usage (default 85)"
        />
        <Field
          name="criticalThreshold"
          label="Critical threshold (%)"
          type="number"
          value={v("criticalThreshold") || "95"}
          errors={props.errors}
          hint="Policies auto-pause at or above this usage (default 95); must be higher than the alert threshold"
        />
      </div>
      <fieldset class="type-fields">
        <legend>Credentials (optional, stored encrypted in the vault)</legend>
        {e?.credentialType && (
          <p class="hint">
            Stored: {e.credentialType}
            {e.credentialUsername ? ` for ${e.credentialUsername}` : ""}, set{" "}
            {formatTime(e.credentialRotatedAt)}. Type a new secret to rotate it; leave empty to keep it.
          </p>
        )}
        <Field
          name="cred_username"
          label="Username / access key id"
          value={v("cred_username")}
          errors={props.errors}
        />
        <Field
          name="cred_secret"
          label="Secret (access key, password…)"
          type="password"
          errors={props.errors}
        />
        <Select
          name="cred_type"
          label="Credential type"
          value={v("cred_type") || "access_key"}
          errors={props.errors}
          options={CREDENTIAL_TYPES.map((t) => ({ value: t, label: t.replace("_", " ") }))}
        />
        {e?.credentialType && (
          <label class="choice">
            <input type="checkbox" name="removeCredentials" value="on" /> Remove the stored credentials
          </label>
        )}
        {props.errors?.credentials && <p class="field-error">{props.errors.credentials}</p>}
      </fieldset>
      <FormActions
        submit={e ? "Save changes" : "Create storage target"}
        cancel={e ? `/backup/storage/${e.id}` : "/backup/storage"}
      />
    </form>
  );
}

async function manageableEngines(c: Context<AppEnv>): Promise<Engine[]> {
  const { kv, clock } = c.get("deps");
  return (await getStorageNew(kv, c.get("actor")!, {}, clock())).engines;
}

storageRoutes.get("/new", requires("backup.manage"), async (c) => {
  const engines = await manageableEngines(c);
  return render(
    c,
    "Add storage target",
    (
      <>
        <PageHeader title="Add Storage Target" />
        {engines.length === 0
          ? <EmptyState title="No engine to attach storage to">Register a backup engine first.</EmptyState>
          : (
            <TargetForm
              csrf={c.get("csrfToken")}
              action="/backup/storage/new"
              engines={engines}
              values={{ besId: c.req.query("besId") ?? "", type: "s3" }}
            />
          )}
      </>
    ),
  );
});

function inputFromForm(form: FormFields) {
  const type = str(form, "type");
  return {
    name: str(form, "name"),
    type,
    config: configFromForm(type, form),
    alertThreshold: str(form, "alertThreshold") || undefined,
    criticalThreshold: str(form, "criticalThreshold") || undefined,
    credentials: credentialsFromForm(form),
  };
}

storageRoutes.post("/new", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const actor = c.get("actor")!;
  const form = await readForm(c);
  const input = { ...inputFromForm(form), besId: str(form, "besId") };
  const parsed = TargetCreateInput.safeParse(input);
  let errors: FieldErrors | undefined;
  let error: string | undefined;
  if (!parsed.success) errors = targetFieldErrors(input.type, parsed.error);
  else {
    try {
      const target = await createTarget(kv, actor, parsed.data, { now: clock(), masterKey });
      return redirectWithNotice(c, `/backup/storage/${target.id}`, `Storage target ${target.name} created.`);
    } catch (e) {
      if (!(e instanceof ValidationError) && !(e instanceof ConflictError)) throw e;
      errors = e instanceof ValidationError ? e.fields : undefined;
      error = e.message;
    }
  }
  return render(
    c,
    "Add storage target",
    (
      <>
        <PageHeader title="Add Storage Target" />
        <TargetForm
          csrf={c.get("csrfToken")}
          action="/backup/storage/new"
          engines={await manageableEngines(c)}
          values={form}
          errors={errors}
          error={error}
        />
      </>
    ),
    422,
  );
});

function formFromTarget(t: StorageTarget): FormFields {
  const group =
    { s3: "s3", s3_compatible: "s3", smb: "smb", nfs: "nfs", iscsi: "iscsi", local: "local" }[t.type];
  const values: FormFields = {
    name: t.name,
    type: t.type,
    alertThreshold: String(t.alertThreshold),
    criticalThreshold: String(t.criticalThreshold),
    cred_username: t.credentialUsername ?? "",
    cred_type: t.credentialType ?? "access_key",
  };
  for (const [k, val] of Object.entries(t.config)) values[`${group}_${k}`] = String(val);
  return values;
}

const CHECK_TITLES: Record<StorageCheck, string> = {
  health_check: "Health check",
  verify: "Integrity verify",
};
const CHECK_WHAT: Record<StorageCheck, string> = {
  health_check:
    "a reachability probe from an online host of this target's organization (a relay host first; any host of the account for an account-level target); capacity arrives with the BES heartbeat.",
  verify: "catalog validation, chain integrity and a restore rehearsal, run by the target's BES.",
};
const CHECK_STATE_TONE: Record<StorageCheckView["state"], Tone> = {
  queued: "muted",
  running: "warn",
  succeeded: "ok",
  failed: "bad",
  cancelled: "muted",
  unknown: "muted",
};

/** What the engine reported, in a few words (probe or verification), or null. */
function checkOutput(view: StorageCheckView): string | null {
  const probe = view.output?.probe as { reachable?: boolean; latencyMs?: number } | undefined;
  if (probe) {
    return `${probe.reachable ? "reachable" : "not reachable"}${
      typeof probe.latencyMs === "number" ? `, ${probe.latencyMs} ms` : ""
    }`;
  }
  const v = view.output?.verification as
    | { status?: string; sampled?: number; failedCount?: number }
    | undefined;
  if (v) return `${v.status ?? "done"}: ${v.sampled ?? 0} sampled, ${v.failedCount ?? 0} failed`;
  return null;
}

/** Health check and integrity verify for every target: the latest of each, and buttons for backup.manage. */
function ChecksPanel(props: {
  target: StorageTarget;
  checks: Record<StorageCheck, StorageCheckView | null>;
  canManage: boolean;
  csrf: string;
}) {
  const { target, checks, canManage, csrf } = props;
  return (
    <section class="panel" id="checks">
      <h2>Storage checks</h2>
      <table class="table table--compact table--cards">
        <thead>
          <tr>
            <th>Check</th>
            <th>Last requested</th>
            <th>Ran on</th>
            <th>State</th>
            <th>Result</th>
            {canManage && <th>Action</th>}
          </tr>
        </thead>
        <tbody>
          {(Object.keys(STORAGE_CHECKS) as StorageCheck[]).map((check) => {
            const view = checks[check];
            const output = view && checkOutput(view);
            return (
              <tr key={check} data-check={check}>
                <td class="nowrap" data-label="Check">{CHECK_TITLES[check]}</td>
                <td data-label="Last requested">
                  {view
                    ? (
                      <>
                        <span class="nowrap">{formatTime(view.requestedAt)}</span>
                        <div class="hint">by {view.requestedBy}</div>
                      </>
                    )
                    : "never"}
                </td>
                <td data-label="Ran on">{view?.runsOn ?? "—"}</td>
                <td class="cell-status" data-label="State">
                  {view ? <Badge tone={CHECK_STATE_TONE[view.state]}>{view.state}</Badge> : "—"}
                </td>
                <td data-label="Result" data-testid={`check-result-${check}`}>
                  {!view || (!view.result && !view.message) ? "—" : (
                    <>
                      {view.result && (
                        <Badge
                          tone={view.result === "success" ? "ok" : view.result === "warning" ? "warn" : "bad"}
                        >
                          {view.result}
                        </Badge>
                      )} {output}
                      {view.message && <div class="hint">{view.message}</div>}
                      {view.finishedAt && <div class="hint">{formatTime(view.finishedAt)}</div>}
                    </>
                  )}
                </td>
                {canManage && (
                  <td data-label="Action">
                    <form
                      method="post"
                      action={`/backup/storage/${target.id}/${STORAGE_CHECK_SEGMENTS[check]}`}
                      class="inline-form"
                    >
                      <Csrf token={csrf} />
                      <button type="submit" class="btn btn--small">{CHECK_TITLES[check]}</button>
                    </form>
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
      <ul class="hint">
        {(Object.keys(STORAGE_CHECKS) as StorageCheck[]).map((check) => (
          <li key={check}>{CHECK_TITLES[check]}: {CHECK_WHAT[check]}</li>
        ))}
      </ul>
    </section>
  );
}

async function targetPage(
  c: Context<AppEnv>,
  target: StorageTarget,
  values?: FormFields,
  errors?: FieldErrors,
  error?: string,
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const now = clock();
  const { engine, history, policies, refs, checks, canManage } = await getStorageDetail(
    kv,
    actor,
    { target },
    now,
  );
  const cap = target.capacity;
  return render(
    c,
    target.name,
    (
      <>
        <PageHeader
          title={target.name}
          subtitle={`${TARGET_TYPE_LABELS[target.type]} on ${engine?.name ?? "—"} · created ${
            formatTime(target.createdAt)
          }`}
          actions={
            <>
              <HealthBadge health={target.health} /> <FullSoonBadge target={target} />
            </>
          }
        />
        <div class="grid-2">
          <section class="panel">
            <h2>Capacity</h2>
            {cap
              ? (
                <dl class="facts">
                  <dt>Usage</dt>
                  <dd>{cap.usagePercent}%{cap.status === "healthy" ? "" : ` — ${cap.statusReason}`}</dd>
                  <dt>Used / total</dt>
                  <dd>
                    {formatBytes(cap.usedBytes)} of {formatBytes(cap.totalBytes)}{" "}
                    ({formatBytes(cap.freeBytes)} free)
                  </dd>
                  <dt>Growth</dt>
                  <dd>
                    {cap.growthBytesPerDay === null
                      ? "needs two reports"
                      : `${formatBytes(Math.round(cap.growthBytesPerDay))} per day`}
                  </dd>
                  <dt>Estimated full</dt>
                  <dd>
                    {cap.estimatedFullAt ? formatTime(cap.estimatedFullAt) : "not growing"}
                    {cap.fullSoon ? " — within 14 days at the current growth (early warning)" : ""}
                  </dd>
                  <dt>Thresholds</dt>
                  <dd>alert {target.alertThreshold}% · critical {target.criticalThreshold}%</dd>
                  <dt>Last report</dt>
                  <dd>{formatAge(cap.at, now)}</dd>
                </dl>
              )
              : (
                <p class="muted">
                  No capacity reported yet. The engine reports capacity with its heartbeats.
                </p>
              )}
          </section>
          <section class="panel">
            <h2>Connection</h2>
            <dl class="facts">
              {Object.entries(target.config).map(([k, val]) => (
                <>
                  <dt key={`k${k}`}>{k}</dt>
                  <dd key={`v${k}`}>{String(val) || "—"}</dd>
                </>
              ))}
              <dt>Credentials</dt>
              <dd>
                {target.credentialType
                  ? `${target.credentialType}${
                    target.credentialUsername ? ` (${target.credentialUsername})` : ""
                  }, in the vault`
                  : "none"}
              </dd>
              <dt>Policies</dt>
              <dd>{policies.length ? policies.map((p) => p.name).join(", ") : "none"}</dd>
            </dl>
          </section>
        </div>
        <section class="panel">
          <h2>Capacity history</h2>
          <Island
            name="CapacityChart"
            component={CapacityChart}
            props={{
              days: history.days.map((d) => ({
                day: d.day,
                usagePercent: d.usagePercent,
                usedBytes: d.usedBytes,
                totalBytes: d.totalBytes,
              })),
              alertThreshold: target.alertThreshold,
              criticalThreshold: target.criticalThreshold,
            }}
          />
        </section>
        <ChecksPanel target={target} checks={checks} canManage={canManage} csrf={c.get("csrfToken")} />
        {canManage && (
          <>
            <section class="panel">
              <h2>Edit</h2>
              <TargetForm
                csrf={c.get("csrfToken")}
                action={`/backup/storage/${target.id}`}
                engines={engine ? [engine] : []}
                values={values ?? formFromTarget(target)}
                errors={errors}
                error={error}
                existing={target}
              />
            </section>
            <section class="panel panel--danger">
              <h2>Delete storage target</h2>
              {refs
                ? <p>Used by {refs}: remove or reassign those first.</p>
                : <p>Removes the target, its capacity history and its vault credential.</p>}
              <a class="btn btn--danger" href={`/backup/storage/${target.id}/delete`}>Delete…</a>
            </section>
          </>
        )}
      </>
    ),
    errors || error ? 422 : 200,
  );
}

storageRoutes.get("/:targetId", requires("backup.view"), async (c) => {
  const target = await requireTarget(c.get("deps").kv, c.get("actor")!, c.req.param("targetId"));
  return await targetPage(c, target);
});

storageRoutes.post("/:targetId", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const actor = c.get("actor")!;
  const target = await requireTarget(kv, actor, c.req.param("targetId"));
  const form = await readForm(c);
  const input = {
    ...inputFromForm(form),
    type: target.type,
    removeCredentials: str(form, "removeCredentials") === "on",
  };
  input.config = configFromForm(target.type, form);
  const parsed = TargetUpdateInput.safeParse(input);
  if (!parsed.success) return await targetPage(c, target, form, targetFieldErrors(target.type, parsed.error));
  try {
    await updateTarget(kv, actor, target.id, parsed.data, { now: clock(), masterKey });
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e;
    return await targetPage(c, target, form, e.fields, e.message);
  }
  return redirectWithNotice(c, `/backup/storage/${target.id}`, `Saved ${parsed.data.name}.`);
});

storageRoutes.get("/:targetId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const target = await requireTarget(kv, actor, c.req.param("targetId"));
  const { refs, held } = await getStorageDelete(kv, actor, { target }, clock());
  return render(
    c,
    "Delete storage target",
    (
      <>
        <PageHeader title={`Delete ${target.name}?`} />
        {held.count > 0 && (
          <p class="form-error" data-testid="target-holds-points">
            This target still holds {held.count.toLocaleString("en-US")}{" "}
            restore point{held.count === 1 ? "" : "s"}{" "}
            (in the repositories of its policies, including older generations and deleted policies). It can be
            deleted once they have expired.
          </p>
        )}
        {refs
          ? (
            <p class="form-error">
              This target is used by {refs}. Remove or reassign those first.
            </p>
          )
          : held.count > 0
          ? null
          : (
            <ConfirmForm
              action={`/backup/storage/${target.id}/delete`}
              cancel={`/backup/storage/${target.id}`}
              csrf={c.get("csrfToken")}
              label="Delete storage target"
            >
              <p>
                Removes the storage target, its capacity history and its vault credential. This cannot be
                undone.
              </p>
            </ConfirmForm>
          )}
      </>
    ),
  );
});

storageRoutes.post("/:targetId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const target = await requireTarget(kv, actor, c.req.param("targetId"));
  try {
    const request = await requestIfFourEyes(kv, actor, {
      kind: "target.delete",
      input: { targetId: target.id },
    }, clock());
    if (request) return redirectToApproval(c, request);
    await deleteTarget(kv, actor, target.id, clock());
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return render(
      c,
      "Delete storage target",
      (
        <>
          <PageHeader title={`Cannot delete ${target.name}`} />
          <p class="form-error" role="alert">{e.message}</p>
          <a href={`/backup/storage/${target.id}`}>Back</a>
        </>
      ),
      409,
    );
  }
  return redirectWithNotice(c, "/backup/storage", `Deleted storage target ${target.name}.`);
});

for (const check of Object.keys(STORAGE_CHECKS) as StorageCheck[]) {
  storageRoutes.post(
    `/:targetId/${STORAGE_CHECK_SEGMENTS[check]}`,
    requires("backup.manage"),
    storageCheckHandler(check, (targetId) => `/backup/storage/${targetId}#checks`),
  );
}
