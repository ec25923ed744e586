/** Backup > Engines: list with filters, detail with health sparklines, edit (name, PXE), delete. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { redirectToApproval } from "./approvals.tsx";
import { type Context, Hono } from "hono";
import {
  Badge,
  Checkbox,
  Csrf,
  Field,
  FormActions,
  formatAge,
  formatBytes,
  formatDuration,
  formatTime,
  FormErrors,
  PageHeader,
  Sparkline,
  type Tone,
} from "../components/ui.tsx";
import {
  deleteEngine,
  type Engine,
  ENGINE_STATUSES,
  EngineFilter,
  type EngineStatus,
  EngineUpdate,
  listEngineMetrics,
  OFFLINE_AFTER_MS,
  refuseHeldEngineDeletion,
  requireEngine,
  updateEngine,
} from "../domain/engines.ts";
import { ConflictError, type FieldErrors, ValidationError } from "../domain/errors.ts";
import { listTargets, TARGET_TYPE_LABELS } from "../domain/storage.ts";
import { getEngineDelete, getEngineDetail, getEngineList } from "../domain/read_models/engines.ts";
import { requires } from "./access.ts";
import { FilteredList, listQuery } from "./list_page.tsx";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

export const engineRoutes = new Hono<AppEnv>();

const STATUS_TONE: Record<EngineStatus, Tone> = {
  pending: "info",
  online: "ok",
  offline: "bad",
  degraded: "warn",
  deleting: "muted",
};

/** The status badge of an engine. */
export function EngineStatusBadge(props: { status: EngineStatus }) {
  return <Badge tone={STATUS_TONE[props.status]}>{props.status}</Badge>;
}

engineRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const list = listQuery(EngineFilter, c.req.query(), ["orgId", "status"]);
  const { filter, filtered } = list;
  const now = clock();
  const { engines: { values, total }, orgs, orgName } = await getEngineList(kv, actor, { filter }, now);
  return render(
    c,
    "Engines",
    (
      <>
        <PageHeader
          title="Engines"
          subtitle="Backup Engine Services register themselves with an organization (or account) secret and heartbeat every minute."
        />
        <FilteredList
          list={list}
          path="/backup/engines"
          searchPlaceholder="Name, hostname or IP"
          filters={
            <>
              <select name="orgId" aria-label="Organization">
                <option value="">All organizations</option>
                <option value="account" selected={filter.orgId === "account"}>Account-scoped</option>
                {orgs.map((o) => (
                  <option key={o.id} value={o.id} selected={filter.orgId === o.id}>{o.name}</option>
                ))}
              </select>
              <select name="status" aria-label="Status">
                <option value="">All statuses</option>
                {ENGINE_STATUSES.map((s) => (
                  <option key={s} value={s} selected={filter.status === s}>{s}</option>
                ))}
              </select>
            </>
          }
          empty={{
            title: filtered ? "No engines match these filters" : "No engines registered yet",
            children: !filtered && (
              <>
                Install a BES in your network and register it with an organization's registration secret
                (Admin → Organizations). See <a href="/api/docs">the engine protocol</a>.
              </>
            ),
          }}
          columns={[
            { label: "Name", sort: "name" },
            { label: "Hostname" },
            { label: "IP address" },
            { label: "Status", sort: "status" },
            { label: "Version" },
            { label: "Organization" },
            { label: "Targets" },
            { label: "Managed" },
            { label: "Last heartbeat", sort: "lastHeartbeatAt" },
          ]}
          count={values.length}
          total={total}
          rows={values.map((e) => (
            <tr key={e.id}>
              <td data-label="Name">
                <a href={`/backup/engines/${e.id}`}>{e.name}</a>
              </td>
              <td data-label="Hostname">{e.hostname}</td>
              <td data-label="IP address">
                <code>{e.ipAddress}</code>
              </td>
              <td class="cell-status" data-label="Status">
                <EngineStatusBadge status={e.status} />
              </td>
              <td data-label="Version">{e.version}</td>
              <td data-label="Organization">
                {e.orgId ? orgName.get(e.orgId) ?? "—" : <span class="muted">Account</span>}
              </td>
              <td data-label="Targets">{e.storageTargetIds.length}</td>
              <td data-label="Managed" class="nowrap">{formatBytes(e.managedBytes)}</td>
              <td data-label="Last heartbeat" class="nowrap" title={e.lastHeartbeatAt ?? ""}>
                {formatAge(e.lastHeartbeatAt, now)}
              </td>
            </tr>
          ))}
        />
      </>
    ),
  );
});

function EnginePage(props: {
  csrf: string;
  engine: Engine;
  orgName: string;
  canManage: boolean;
  metrics: Awaited<ReturnType<typeof listEngineMetrics>>;
  targets: Awaited<ReturnType<typeof listTargets>>["values"];
  now: Date;
  values: { name: string; pxeEnabled: boolean; pxeNetwork: string };
  errors?: FieldErrors;
  error?: string;
}) {
  const { engine, metrics } = props;
  // The sweep marks a silent engine offline within a minute; judge by the heartbeat too, like the dashboard.
  const stale = engine.status === "offline" || !engine.lastHeartbeatAt ||
    props.now.getTime() - Date.parse(engine.lastHeartbeatAt) > OFFLINE_AFTER_MS;
  return (
    <>
      <PageHeader
        title={engine.name}
        subtitle={`${engine.hostname} · ${engine.ipAddress}:${engine.port} · ${engine.deploymentModel}`}
        actions={<EngineStatusBadge status={engine.status} />}
      />
      <div class="grid-2">
        <section class="panel">
          <h2>Status</h2>
          <dl class="facts">
            <dt>Status</dt>
            <dd>{engine.statusReason}</dd>
            <dt>Last heartbeat</dt>
            <dd>{formatAge(engine.lastHeartbeatAt, props.now)}</dd>
            <dt>Version</dt>
            <dd>{engine.version}</dd>
            <dt>Organization</dt>
            <dd>{props.orgName}</dd>
            <dt>Registered</dt>
            <dd>{formatTime(engine.registeredAt)}</dd>
            <dt>Managed bytes</dt>
            <dd>{formatBytes(engine.managedBytes)}</dd>
            <dt>PXE</dt>
            <dd>{engine.pxeEnabled ? `Enabled on ${engine.pxeNetwork}` : "Disabled"}</dd>
            <dt>Data API</dt>
            <dd>{engine.dataUrl ?? "Not reported"}</dd>
            {engine.certificateSha256 && (
              <>
                <dt>Certificate SHA-256</dt>
                <dd>
                  <code class="nowrap" data-testid="certificate-sha256">{engine.certificateSha256}</code>{" "}
                  (expires {formatTime(engine.certificateExpiresAt)})
                </dd>
              </>
            )}
          </dl>
        </section>
        <section class="panel" data-testid="engine-health">
          <h2>Health, last 24 hours</h2>
          {stale && (engine.metrics || metrics.length > 0) && (
            <p class="notice notice--warn" data-testid="metrics-stale">
              Stale: the engine is offline, so these are its last reports (the latest{" "}
              {formatAge(engine.lastHeartbeatAt, props.now)}), not its current state.
            </p>
          )}
          {metrics.length === 0 ? <p class="muted">No heartbeat with metrics yet.</p> : (
            <div class="sparks">
              {([
                ["CPU %", (m) => m.cpuPercent, 100],
                ["Memory %", (m) => m.memoryPercent, 100],
                ["Disk %", (m) => m.diskPercent, 100],
                ["Active jobs", (m) => m.activeJobs, undefined],
              ] as Array<[string, (m: (typeof metrics)[number]) => number, number | undefined]>).map((
                [label, pick, max],
              ) => (
                <Sparkline
                  key={label}
                  label={label}
                  values={metrics.map(pick)}
                  max={max}
                  from={metrics[0].at}
                  to={metrics.at(-1)!.at}
                  stale={stale}
                />
              ))}
            </div>
          )}
          {engine.metrics && (
            <p class="hint">
              {stale ? "Uptime at the last report" : "Uptime"}{" "}
              {formatDuration(engine.metrics.uptimeSeconds * 1000)} · {metrics.length}{" "}
              {metrics.length === 1 ? "sample" : "samples"}
            </p>
          )}
        </section>
      </div>
      <section class="panel">
        <h2>Storage targets ({props.targets.length})</h2>
        {props.targets.length === 0
          ? (
            <p class="muted">
              None yet.{" "}
              {props.canManage && <a href={`/backup/storage/new?besId=${engine.id}`}>Add a storage target</a>}
            </p>
          )
          : (
            <ul>
              {props.targets.map((t) => (
                <li key={t.id}>
                  <a href={`/backup/storage/${t.id}`}>{t.name}</a> · {TARGET_TYPE_LABELS[t.type]} · {t.health}
                </li>
              ))}
            </ul>
          )}
      </section>
      {props.canManage && engine.status !== "deleting" && (
        <>
          <section class="panel">
            <h2>Edit</h2>
            <form method="post" action={`/backup/engines/${engine.id}`} class="form">
              <Csrf token={props.csrf} />
              <FormErrors message={props.error} />
              <Field name="name" label="Name" value={props.values.name} errors={props.errors} required />
              <Checkbox
                name="pxeEnabled"
                checked={props.values.pxeEnabled}
                label="PXE enabled (network boot for bare-metal restore)"
              />
              <Field
                name="pxeNetwork"
                label="PXE network (CIDR)"
                value={props.values.pxeNetwork}
                errors={props.errors}
                hint="e.g. 10.20.0.0/24"
              />
              <FormActions submit="Save" />
            </form>
          </section>
          <section class="panel panel--danger">
            <h2>Delete engine</h2>
            <p>
              Deregisters the engine and deletes its storage targets and their policies. This cannot be
              undone.
            </p>
            <a class="btn btn--danger" href={`/backup/engines/${engine.id}/delete`}>Delete engine…</a>
          </section>
        </>
      )}
    </>
  );
}

async function enginePage(
  c: Context<AppEnv>,
  engine: Engine,
  values?: { name: string; pxeEnabled: boolean; pxeNetwork: string },
  errors?: FieldErrors,
  error?: string,
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const now = clock();
  const { metrics, targets, orgName, canManage } = await getEngineDetail(kv, actor, { engine }, now);
  return render(
    c,
    engine.name,
    (
      <EnginePage
        csrf={c.get("csrfToken")}
        engine={engine}
        orgName={orgName}
        canManage={canManage}
        metrics={metrics}
        targets={targets}
        now={now}
        values={values ??
          { name: engine.name, pxeEnabled: engine.pxeEnabled, pxeNetwork: engine.pxeNetwork ?? "" }}
        errors={errors}
        error={error}
      />
    ),
    errors || error ? 422 : 200,
  );
}

engineRoutes.get("/:engineId", requires("backup.view"), async (c) => {
  const engine = await requireEngine(c.get("deps").kv, c.get("actor")!, c.req.param("engineId"));
  return await enginePage(c, engine);
});

engineRoutes.post("/:engineId", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const engine = await requireEngine(kv, actor, c.req.param("engineId"));
  const form = await readForm(c);
  const values = {
    name: str(form, "name"),
    pxeEnabled: str(form, "pxeEnabled") === "on",
    pxeNetwork: str(form, "pxeNetwork"),
  };
  const parsed = EngineUpdate.safeParse(values);
  if (!parsed.success) return await enginePage(c, engine, values, fieldErrors(parsed.error));
  try {
    await updateEngine(kv, actor, engine.id, values, clock());
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e;
    return await enginePage(c, engine, values, e.fields, e.message);
  }
  return redirectWithNotice(c, `/backup/engines/${engine.id}`, `Saved ${values.name}.`);
});

/** The delete confirmation: says what goes with the engine and asks for its name. */
async function deleteEnginePage(c: Context<AppEnv>, engine: Engine, typed?: string, refusal?: string) {
  const { kv, clock } = c.get("deps");
  const { targetCount } = await getEngineDelete(kv, c.get("actor")!, { engine }, clock());
  return render(
    c,
    "Delete engine",
    (
      <>
        <PageHeader title={`Delete ${engine.name}?`} />
        {refusal && <p class="form-error" role="alert" data-testid="delete-refused">{refusal}</p>}
        <p>
          This deregisters the engine and deletes, permanently, its {targetCount}{" "}
          storage target{targetCount === 1 ? "" : "s"}, every policy that writes to them, and those policies'
          host assignments, hooks and replication rules. Backup data already on storage is not touched by the
          control plane.
        </p>
        <p>Type the engine's name to confirm.</p>
        <form method="post" action={`/backup/engines/${engine.id}/delete`} class="form">
          <Csrf token={c.get("csrfToken")} />
          <Field
            name="confirm"
            label={`Engine name (${engine.name})`}
            value={typed}
            errors={typed === undefined
              ? undefined
              : { confirm: "Type the engine's name exactly to confirm" }}
            required
          />
          <div class="form-actions">
            <button type="submit" class="btn btn--danger">Delete engine</button>
            <a class="btn btn--ghost" href={`/backup/engines/${engine.id}`}>Cancel</a>
          </div>
        </form>
      </>
    ),
    refusal ? 409 : typed === undefined ? 200 : 422,
  );
}

engineRoutes.get("/:engineId/delete", requires("backup.manage"), async (c) => {
  const engine = await requireEngine(c.get("deps").kv, c.get("actor")!, c.req.param("engineId"));
  return await deleteEnginePage(c, engine);
});

engineRoutes.post("/:engineId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const engine = await requireEngine(kv, actor, c.req.param("engineId"));
  const form = await readForm(c);
  if (str(form, "confirm").trim() !== engine.name) {
    return await deleteEnginePage(c, engine, str(form, "confirm"));
  }
  try {
    // Held points are never pruned or expired: refused before any approval request, and again on delete.
    await refuseHeldEngineDeletion(kv, engine);
    const request = await requestIfFourEyes(kv, actor, {
      kind: "engine.delete",
      input: { engineId: engine.id },
    }, clock());
    if (request) return redirectToApproval(c, request);
    await deleteEngine(kv, actor, engine.id, clock());
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return await deleteEnginePage(c, engine, undefined, e.message);
  }
  return redirectWithNotice(c, "/backup/engines", `Deleted engine ${engine.name} and everything under it.`);
});
