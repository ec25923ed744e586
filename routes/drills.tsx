/**
 * Backup > Drills: restore drill policies (domain/drills.ts) — the list with each drill's last run, a
 * drill's page with its settings and trend (RTO, bytes/s, pass/fail), a run's page with every failing
 * file, and the forms (new, edit, delete with confirmation, run now). Server-rendered; every form posts
 * with the CSRF field and answers 303 (or the form again with 422 and the field errors).
 */
import { type Context, Hono } from "hono";
import {
  Badge,
  Csrf,
  DataTable,
  EmptyState,
  Field,
  FormActions,
  formatBytes,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
  type Tone,
} from "../components/ui.tsx";
import {
  createDrill,
  deleteDrill,
  DRILL_MODE_LABELS,
  DRILL_MODES,
  DRILL_SCOPE_LABELS,
  DRILL_SCOPES,
  DrillInput,
  type DrillPolicy,
  type DrillRun,
  requireDrill,
  runDrillNow,
  updateDrill,
} from "../domain/drills.ts";
import { type FieldErrors, ValidationError } from "../domain/errors.ts";
import { authorize, can } from "../domain/rbac.ts";
import { getDrillDetail, getDrillForm, getDrillList, getDrillRun } from "../domain/read_models/drills.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { type FormFields, list, readForm, saveForm, str } from "./forms.ts";
import { confirmPage, redirectWithNotice, render } from "./render.tsx";

export const drillRoutes = new Hono<AppEnv>();

const STATUS_TONE: Record<DrillRun["status"], Tone> = {
  pending: "info",
  running: "info",
  passed: "ok",
  failed: "bad",
};

/** Seconds as "12.3 s" or "4 min 5 s". */
export function formatSeconds(seconds: number | null): string {
  if (seconds === null) return "—";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds - m * 60)} s`;
}

export function RunStatus(props: { run: Pick<DrillRun, "status" | "rtoBreached"> }) {
  return (
    <>
      <Badge tone={STATUS_TONE[props.run.status]}>{props.run.status}</Badge>
      {props.run.rtoBreached && <Badge tone="warn">RTO breached</Badge>}
    </>
  );
}

type FormValues = {
  name: string;
  schedule: string;
  scopeType: string;
  policyIds: string[];
  hostIds: string[];
  mode: string;
  sampleCount: string;
  agentHostId: string;
  scratchPath: string;
  rtoObjectiveSeconds: string;
  /** Per-policy objectives by policy id (blank: the drill's). */
  policyRto: Record<string, string>;
  enabled: boolean;
};

function formValues(form: FormFields): FormValues {
  return {
    name: str(form, "name"),
    schedule: str(form, "schedule"),
    scopeType: str(form, "scopeType"),
    policyIds: list(form, "policyIds"),
    hostIds: list(form, "hostIds"),
    mode: str(form, "mode"),
    sampleCount: str(form, "sampleCount"),
    agentHostId: str(form, "agentHostId"),
    scratchPath: str(form, "scratchPath"),
    rtoObjectiveSeconds: str(form, "rtoObjectiveSeconds"),
    policyRto: Object.fromEntries(
      Object.keys(form).filter((k) => k.startsWith("rto_") && str(form, k).trim() !== "")
        .map((k) => [k.slice(4), str(form, k).trim()]),
    ),
    enabled: str(form, "enabled") === "on",
  };
}

function valuesOf(d: DrillPolicy): FormValues {
  return {
    name: d.name,
    schedule: d.schedule,
    scopeType: d.scopeType,
    policyIds: d.policyIds,
    hostIds: d.hostIds,
    mode: d.mode,
    sampleCount: String(d.sampleCount),
    agentHostId: d.agentHostId,
    scratchPath: d.scratchPath,
    rtoObjectiveSeconds: String(d.rtoObjectiveSeconds),
    policyRto: Object.fromEntries(
      (d.policyRtoObjectives ?? []).map((o) => [o.policyId, String(o.rtoObjectiveSeconds)]),
    ),
    enabled: d.enabled,
  };
}

/** The form as the input of DrillInput (the schema of POST /api/v1/drills); blank numbers take defaults. */
function asInput(v: FormValues) {
  return {
    name: v.name,
    schedule: v.schedule,
    scopeType: v.scopeType,
    policyIds: v.policyIds,
    hostIds: v.hostIds,
    mode: v.mode || undefined,
    sampleCount: v.sampleCount || undefined,
    agentHostId: v.agentHostId,
    scratchPath: v.scratchPath,
    rtoObjectiveSeconds: v.rtoObjectiveSeconds,
    policyRtoObjectives: Object.entries(v.policyRto).map(([policyId, seconds]) => ({
      policyId,
      rtoObjectiveSeconds: seconds,
    })),
    enabled: v.enabled,
  };
}

function Checklist(props: {
  name: string;
  legend: string;
  options: Array<{ value: string; label: string }>;
  checked: string[];
  errors?: FieldErrors;
}) {
  const error = props.errors?.[props.name];
  return (
    <fieldset class={error ? "field field--error" : "field"}>
      <legend>{props.legend}</legend>
      {props.options.length === 0 && <p class="hint">None in your scope.</p>}
      {props.options.map((o) => (
        <label key={o.value} class="choice">
          <input
            type="checkbox"
            name={props.name}
            value={o.value}
            checked={props.checked.includes(o.value)}
          />{" "}
          {o.label}
        </label>
      ))}
      {error && <p class="field-error">{error}</p>}
    </fieldset>
  );
}

async function formPage(
  c: Context<AppEnv>,
  drill: DrillPolicy | null,
  values: FormValues,
  errors?: FieldErrors,
  error?: string,
) {
  const { kv, clock } = c.get("deps");
  const { policies, hosts: inService } = await getDrillForm(kv, c.get("actor")!, {}, clock());
  const action = drill ? `/backup/drills/${drill.id}/edit` : "/backup/drills";
  const title = drill ? `Edit drill ${drill.name}` : "New restore drill";
  return render(
    c,
    title,
    <>
      <PageHeader
        title={title}
        subtitle="On its schedule, a drill restores the newest restore point of every policy and host in its scope to a scratch folder on an agent, verifies every byte, measures the time it took, and deletes the copy."
      />
      <form method="post" action={action} class="form">
        <Csrf token={c.get("csrfToken")} />
        <FormErrors message={error} />
        <Field name="name" label="Name" value={values.name} errors={errors} required />
        <Field
          name="schedule"
          label="Schedule (cron, UTC)"
          value={values.schedule}
          errors={errors}
          placeholder="0 3 * * 6"
          hint="minute hour day-of-month month day-of-week, e.g. 0 3 * * 6 (Saturdays 03:00)"
          required
        />
        <Select
          name="scopeType"
          label="Scope"
          value={values.scopeType || "policies"}
          errors={errors}
          options={DRILL_SCOPES.map((s) => ({ value: s, label: DRILL_SCOPE_LABELS[s] }))}
        />
        <Checklist
          name="policyIds"
          legend="Policies (scope: backup policies) — every host of each"
          options={policies.map((p) => ({ value: p.id, label: p.name }))}
          checked={values.policyIds}
          errors={errors}
        />
        <Checklist
          name="hostIds"
          legend="Hosts (scope: hosts) — every policy of each"
          options={inService.map((h) => ({ value: h.id, label: h.hostname }))}
          checked={values.hostIds}
          errors={errors}
        />
        <Select
          name="mode"
          label="What to restore"
          value={values.mode || "sample"}
          errors={errors}
          options={DRILL_MODES.map((m) => ({ value: m, label: DRILL_MODE_LABELS[m] }))}
        />
        <Field
          name="sampleCount"
          label="Files in the sample"
          type="number"
          value={values.sampleCount || "20"}
          errors={errors}
          hint="Used when restoring a sample: that many files, chosen at random, per policy and host"
        />
        <Select
          name="agentHostId"
          label="Agent that restores"
          value={values.agentHostId}
          errors={errors}
          blank="Choose a host"
          options={inService.map((h) => ({ value: h.id, label: h.hostname }))}
        />
        <Field
          name="scratchPath"
          label="Scratch folder on that agent"
          value={values.scratchPath}
          errors={errors}
          placeholder="/var/tmp/cadres-drills"
          hint="Each run restores into a folder of its own below this one and deletes it afterwards"
          required
        />
        <Field
          name="rtoObjectiveSeconds"
          label="RTO objective (seconds)"
          type="number"
          value={values.rtoObjectiveSeconds}
          errors={errors}
          hint="A drill that takes longer raises an alert"
          required
        />
        <fieldset
          class={errors?.policyRtoObjectives ? "field field--error" : "field"}
          data-testid="policy-rto"
        >
          <legend>RTO objective of single policies (seconds; blank: the drill's)</legend>
          {policies.map((p) => (
            <label key={p.id} class="choice">
              {p.name}{" "}
              <input
                type="number"
                min="1"
                name={`rto_${p.id}`}
                value={values.policyRto[p.id] ?? ""}
                aria-label={`RTO objective of ${p.name} in seconds`}
              />
            </label>
          ))}
          {errors?.policyRtoObjectives && <p class="field-error">{errors.policyRtoObjectives}</p>}
        </fieldset>
        <label class="choice">
          <input type="checkbox" name="enabled" value="on" checked={values.enabled} /> Enabled
        </label>
        <FormActions
          submit={drill ? "Save drill" : "Create drill"}
          cancel={drill ? `/backup/drills/${drill.id}` : "/backup/drills"}
        />
      </form>
    </>,
    errors || error ? 422 : 200,
  );
}

function TrendTable(props: { runs: DrillRun[] }) {
  return (
    <DataTable
      class="table"
      testid="drill-trend"
      heads={["Started", "Policy", "Host", "Result", "RTO", "Objective", "Throughput", "Files", "Failures"]}
    >
      {props.runs.map((r) => (
        <tr key={r.id}>
          <td class="nowrap">
            <a href={`/backup/drills/${r.drillId}/runs/${r.id}`}>{formatTime(r.createdAt)}</a>
          </td>
          <td>{r.policyName}</td>
          <td>{r.hostName}</td>
          <td>
            <RunStatus run={r} />
          </td>
          <td>{formatSeconds(r.rtoSeconds)}</td>
          <td>{formatSeconds(r.rtoObjectiveSeconds)}</td>
          <td>{r.bytesPerSecond === null ? "—" : `${formatBytes(r.bytesPerSecond)}/s`}</td>
          <td>{r.verified} of {r.files} verified</td>
          <td>{r.failureCount || ""}</td>
        </tr>
      ))}
    </DataTable>
  );
}

drillRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { drills, last } = await getDrillList(kv, actor, {}, clock());
  return render(
    c,
    "Restore drills",
    <>
      <PageHeader
        title="Restore drills"
        subtitle="Scheduled proof that restores work: restored to scratch, every byte verified, time measured."
      />
      {can(actor, "backup.restore") && (
        <p>
          <a class="btn btn--primary" href="/backup/drills/new">New drill</a>
        </p>
      )}
      {drills.length === 0 ? <EmptyState title="No restore drills yet" /> : (
        <DataTable
          class="table"
          heads={["Name", "Schedule", "Scope", "Restores", "RTO objective", "Last run"]}
        >
          {drills.map((d) => {
            const run = last.get(d.id);
            return (
              <tr key={d.id}>
                <td>
                  <a href={`/backup/drills/${d.id}`}>{d.name}</a>
                  {!d.enabled && <Badge tone="muted">disabled</Badge>}
                </td>
                <td>
                  <code>{d.schedule}</code>
                </td>
                <td>
                  {d.scopeType === "policies"
                    ? `${d.policyIds.length} policies`
                    : `${d.hostIds.length} hosts`}
                </td>
                <td>{d.mode === "sample" ? `${d.sampleCount} files` : "whole point"}</td>
                <td>{formatSeconds(d.rtoObjectiveSeconds)}</td>
                <td>
                  {run
                    ? (
                      <>
                        <RunStatus run={run} /> {formatTime(run.createdAt)}
                      </>
                    )
                    : "never"}
                </td>
              </tr>
            );
          })}
        </DataTable>
      )}
    </>,
  );
});

drillRoutes.get("/new", requires("backup.restore"), (c) =>
  formPage(c, null, {
    ...formValues({}),
    scopeType: "policies",
    mode: "sample",
    sampleCount: "20",
    rtoObjectiveSeconds: "900",
    policyRto: {},
    enabled: true,
  }));

drillRoutes.post("/", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const values = formValues(await readForm(c));
  return await saveForm(
    DrillInput.safeParse(asInput(values)),
    async (data) => {
      const drill = await createDrill(kv, c.get("actor")!, data, clock());
      return redirectWithNotice(c, `/backup/drills/${drill.id}`, `Drill ${drill.name} created.`);
    },
    (errors, error) => formPage(c, null, values, errors, error),
    { validationOnly: true },
  );
});

drillRoutes.get("/:drillId", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { drill, runs, policyNames } = await getDrillDetail(
    kv,
    actor,
    { drillId: c.req.param("drillId") },
    clock(),
  );
  const manage = can(actor, "backup.restore", { accountId: drill.accountId, orgId: drill.orgId });
  const passed = runs.filter((r) => r.status === "passed");
  return render(
    c,
    drill.name,
    <>
      <PageHeader title={`Restore drill ${drill.name}`} subtitle={drill.enabled ? "Enabled" : "Disabled"} />
      <dl class="facts">
        <dt>Schedule (UTC)</dt>
        <dd>
          <code>{drill.schedule}</code>
        </dd>
        <dt>Scope</dt>
        <dd>
          {DRILL_SCOPE_LABELS[drill.scopeType]}:{" "}
          {(drill.scopeType === "policies" ? drill.policyIds : drill.hostIds).join(", ")}
        </dd>
        <dt>Restores</dt>
        <dd>
          {drill.mode === "sample" ? `A sample of ${drill.sampleCount} files` : "The whole restore point"}
        </dd>
        <dt>Agent and scratch folder</dt>
        <dd>
          <a href={`/backup/hosts/${drill.agentHostId}`}>{drill.agentHostId}</a>:{" "}
          <code>{drill.scratchPath}</code>
        </dd>
        <dt>RTO objective</dt>
        <dd>
          {formatSeconds(drill.rtoObjectiveSeconds)}
          {(drill.policyRtoObjectives ?? []).map((o) => (
            <span key={o.policyId} class="sub">
              {policyNames.get(o.policyId) ?? o.policyId}: {formatSeconds(o.rtoObjectiveSeconds)}
            </span>
          ))}
        </dd>
        <dt>Passed</dt>
        <dd>{passed.length} of the last {runs.length} runs</dd>
      </dl>
      {manage && (
        <div class="form-actions">
          <form method="post" action={`/backup/drills/${drill.id}/run`}>
            <Csrf token={c.get("csrfToken")} />
            <button type="submit" class="btn btn--primary">Run now</button>
          </form>
          <a class="btn" href={`/backup/drills/${drill.id}/edit`}>Edit</a>
          <a class="btn btn--danger" href={`/backup/drills/${drill.id}/delete`}>Delete…</a>
        </div>
      )}
      <h2>Trend: the last {runs.length} runs</h2>
      {runs.length === 0 ? <EmptyState title="This drill has not run yet" /> : <TrendTable runs={runs} />}
    </>,
  );
});

drillRoutes.get("/:drillId/runs/:drillRunId", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const found = await getDrillRun(kv, c.get("actor")!, {
    drillId: c.req.param("drillId"),
    drillRunId: c.req.param("drillRunId"),
  }, clock());
  if (!found) return c.notFound();
  const { drill, run } = found;
  return render(
    c,
    `Drill run ${run.id}`,
    <>
      <PageHeader
        title={`Drill run: ${run.policyName} on ${run.hostName}`}
        subtitle={`Restore drill ${drill.name}`}
      />
      <p>
        <RunStatus run={run} />
      </p>
      {run.error && <p class="form-error">{run.error}</p>}
      <dl class="facts">
        <dt>Restore point</dt>
        <dd>
          <a href={`/backup/restore/points/${run.restorePointId}`}>{run.restorePointId}</a> (
          {formatTime(run.restorePointCompletedAt)})
        </dd>
        <dt>Time to restore and verify (RTO)</dt>
        <dd>
          {formatSeconds(run.rtoSeconds)} (objective {formatSeconds(run.rtoObjectiveSeconds)})
        </dd>
        <dt>Throughput</dt>
        <dd>{run.bytesPerSecond === null ? "—" : `${formatBytes(run.bytesPerSecond)}/s`}</dd>
        <dt>Restored</dt>
        <dd>
          {run.files} files, {formatBytes(run.bytes)}; {run.verified} verified against the backup's record
        </dd>
        <dt>Scratch copy removed</dt>
        <dd>{run.scratchRemoved === null ? "—" : run.scratchRemoved ? "yes" : "NO"}</dd>
        <dt>Started, ended</dt>
        <dd>
          {formatTime(run.createdAt)}, {run.endedAt ? formatTime(run.endedAt) : "—"}
        </dd>
      </dl>
      {run.failures.length > 0 && (
        <>
          <h2>Files that did not restore as backed up ({run.failureCount})</h2>
          <DataTable class="table" testid="drill-failures" heads={["File", "Problem"]}>
            {run.failures.map((f) => (
              <tr key={f.path}>
                <td>
                  <code>{f.path}</code>
                </td>
                <td>{f.message}</td>
              </tr>
            ))}
          </DataTable>
        </>
      )}
      <p>
        <a href={`/backup/drills/${drill.id}`}>Back to the drill</a>
      </p>
    </>,
  );
});

drillRoutes.post("/:drillId/run", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const id = c.req.param("drillId");
  try {
    const runs = await runDrillNow(kv, c.get("actor")!, id, clock());
    return redirectWithNotice(c, `/backup/drills/${id}`, `Drill started: ${runs.length} restore point(s).`);
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e;
    return redirectWithNotice(c, `/backup/drills/${id}`, `Not started: ${e.message}`);
  }
});

drillRoutes.get("/:drillId/edit", requires("backup.restore"), async (c) => {
  const { kv } = c.get("deps");
  const actor = c.get("actor")!;
  const drill = await requireDrill(kv, actor, c.req.param("drillId"));
  authorize(actor, "backup.restore", { accountId: drill.accountId, orgId: drill.orgId });
  return await formPage(c, drill, valuesOf(drill));
});

drillRoutes.post("/:drillId/edit", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const drill = await requireDrill(kv, actor, c.req.param("drillId"));
  const values = formValues(await readForm(c));
  return await saveForm(
    DrillInput.safeParse(asInput(values)),
    async (data) => {
      await updateDrill(kv, actor, drill.id, data, clock());
      return redirectWithNotice(c, `/backup/drills/${drill.id}`, `Drill ${data.name} saved.`);
    },
    (errors, error) => formPage(c, drill, values, errors, error),
  );
});

drillRoutes.get("/:drillId/delete", requires("backup.restore"), async (c) => {
  const { kv } = c.get("deps");
  const actor = c.get("actor")!;
  const drill = await requireDrill(kv, actor, c.req.param("drillId"));
  authorize(actor, "backup.restore", { accountId: drill.accountId, orgId: drill.orgId });
  return confirmPage(c, {
    title: "Delete drill",
    question: `Delete drill ${drill.name}?`,
    subtitle: "Its schedule stops; its past runs stay in the audit trail.",
    action: `/backup/drills/${drill.id}/delete`,
    cancel: `/backup/drills/${drill.id}`,
    label: "Delete drill",
  });
});

drillRoutes.post("/:drillId/delete", requires("backup.restore"), async (c) => {
  const { kv, clock } = c.get("deps");
  const drill = await deleteDrill(kv, c.get("actor")!, c.req.param("drillId"), clock());
  return redirectWithNotice(c, "/backup/drills", `Deleted drill ${drill.name}.`);
});
