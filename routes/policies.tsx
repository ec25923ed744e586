/** Backup > Policies: list, create and edit in sections (cron previews), enable/disable, delete. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { redirectToApproval } from "./approvals.tsx";
import { type Context, Hono } from "hono";
import { z } from "zod";
import { Island } from "../components/Island.tsx";
import { CronReading, PausedBadge } from "../components/words.tsx";
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
  Pager,
  Select,
} from "../components/ui.tsx";
import { describeCron, nextRuns } from "../domain/cron_rules.ts";
import { type Engine } from "../domain/engines.ts";
import { type FieldErrors, ValidationError } from "../domain/errors.ts";
import {
  BACKUP_TYPES,
  COMPRESSIONS,
  createPolicy,
  deletePolicy,
  effectiveExcludes,
  ENCRYPTIONS,
  EXCLUSION_TEMPLATES,
  IO_PRIORITIES,
  MAX_INCLUDE_PATHS,
  patchPolicy,
  type Policy,
  PolicyCreateInput,
  PolicyUpdateInput,
  requirePolicy,
  updatePolicy,
} from "../domain/policies.ts";
import { can } from "../domain/rbac.ts";
import { repositoryOf } from "../domain/repositories.ts";
import { type StorageTarget, TargetFilter } from "../domain/storage.ts";
import BesTargetFields from "../islands/BesTargetFields.tsx";
import CronField from "../islands/CronField.tsx";
import { previewPolicyRetention } from "../domain/retention_apply.ts";

import { requires } from "./access.ts";
import { postRunNow, type RunNowRefusal, RunNowSection } from "./policy_run_now.tsx";
import {
  type HookDraft,
  HooksSection,
  HostsSection,
  ReplicasSection,
  RetentionSection,
  RunsSection,
} from "./policy_sections.tsx";
import { HOOK_TYPE_LABELS } from "../domain/hooks.ts";
import {
  getPolicyDetail,
  getPolicyEdit,
  getPolicyList,
  type PolicyDetail,
} from "../domain/read_models/policy_detail.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, type FormFields, readForm, saveForm, str } from "./forms.ts";
import { confirmPage, redirectWithNotice, render } from "./render.tsx";

/** `?besId=` pre-selects the BES of a new policy (from an engine's page); anything else selects none. */
const NewPolicyQuery = z.object({ besId: z.string().regex(/^[0-9A-Z]{26}$/).catch("") }).catch({ besId: "" });

export const policyRoutes = new Hono<AppEnv>();

const BOOLEANS = [
  "deduplication",
  "vssEnabled",
  "catchUpOnReconnect",
  "verifyAfterBackup",
  "prePatchBackup",
  "archiveOnHostDeactivation",
  "enabled",
] as const;

const RETENTION_FIELDS = [
  ["retentionDaily", "Daily (1–365)"],
  ["retentionWeekly", "Weekly (0–52)"],
  ["retentionMonthly", "Monthly (0–120)"],
] as const;

/** The include paths field's example, one path per line. */
const INCLUDE_PLACEHOLDER = ["/etc", "/home", "/srv/data"].join("\n");

const lines = (v: string) => v.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);

/** The form as the domain input (checkboxes absent = false; numbers blank = default). */
function inputFromForm(f: FormFields) {
  const opt = (k: string) => str(f, k).trim() || undefined;
  return {
    name: str(f, "name"),
    besId: str(f, "besId"),
    targetId: str(f, "targetId"),
    backupType: str(f, "backupType"),
    timeZone: opt("timeZone"),
    fullSchedule: str(f, "fullSchedule"),
    incrementalSchedule: str(f, "incrementalSchedule").trim() || null,
    syntheticFullSchedule: str(f, "syntheticFullSchedule").trim() || null,
    includePaths: lines(str(f, "includePaths")),
    excludePaths: lines(str(f, "excludePaths")),
    excludePatterns: lines(str(f, "excludePatterns")),
    exclusionTemplate: str(f, "exclusionTemplate"),
    retentionDaily: opt("retentionDaily"),
    retentionWeekly: opt("retentionWeekly"),
    retentionMonthly: opt("retentionMonthly"),
    compression: opt("compression"),
    encryption: opt("encryption"),
    maxTransferMbps: opt("maxTransferMbps") ?? null,
    ioPriority: opt("ioPriority"),
    throttleSchedule: str(f, "throttleSchedule").trim() || null,
    verifySampleCount: opt("verifySampleCount"),
    rpoHours: opt("rpoHours") ?? null,
    ...Object.fromEntries(BOOLEANS.map((b) => [b, str(f, b) === "on"])),
  };
}

function formFromPolicy(p: Policy): FormFields {
  return {
    name: p.name,
    besId: p.besId,
    targetId: p.targetId,
    backupType: p.backupType,
    timeZone: p.timeZone,
    fullSchedule: p.fullSchedule,
    incrementalSchedule: p.incrementalSchedule ?? "",
    syntheticFullSchedule: p.syntheticFullSchedule ?? "",
    includePaths: (p.includePaths ?? []).join("\n"),
    excludePaths: p.excludePaths.join("\n"),
    excludePatterns: p.excludePatterns.join("\n"),
    exclusionTemplate: p.exclusionTemplate,
    retentionDaily: String(p.retentionDaily),
    retentionWeekly: String(p.retentionWeekly),
    retentionMonthly: String(p.retentionMonthly),
    compression: p.compression,
    encryption: p.encryption,
    maxTransferMbps: p.maxTransferMbps ? String(p.maxTransferMbps) : "",
    ioPriority: p.ioPriority,
    throttleSchedule: p.throttleSchedule ?? "",
    verifySampleCount: String(p.verifySampleCount),
    rpoHours: p.rpoDerived ? "" : String(p.rpoHours),
    ...Object.fromEntries(BOOLEANS.map((b) => [b, p[b] ? "on" : ""])),
  };
}

const NEW_DEFAULTS: FormFields = {
  backupType: "file",
  timeZone: "UTC",
  fullSchedule: "0 2 * * 0",
  incrementalSchedule: "0 2 * * 1-6",
  retentionDaily: "7",
  retentionWeekly: "4",
  retentionMonthly: "12",
  compression: "lz4",
  encryption: "AES-256-GCM",
  ioPriority: "normal",
  verifySampleCount: "50",
  ...Object.fromEntries(BOOLEANS.map((b) => [b, b === "prePatchBackup" ? "" : "on"])),
};

function Check(props: { name: string; label: string; form: FormFields }) {
  return (
    <label class="choice">
      <input type="checkbox" name={props.name} value="on" checked={str(props.form, props.name) === "on"} />
      {" "}
      {props.label}
    </label>
  );
}

function Section(props: { n: number; title: string; children: preact.ComponentChildren; open?: boolean }) {
  return (
    <details class="form-section" open={props.open ?? true}>
      <summary>
        {props.n}. {props.title}
      </summary>
      <div class="form-section-body">{props.children}</div>
    </details>
  );
}

function PolicyForm(props: {
  csrf: string;
  action: string;
  form: FormFields;
  engines: Engine[];
  targets: StorageTarget[];
  existing?: Policy;
  errors?: FieldErrors;
  error?: string;
  hooksSection?: preact.ComponentChildren;
  /** The last save changed retention in a way that needs confirming. */
  retentionWarning?: boolean;
}) {
  const f = props.form;
  const e = props.errors;
  const v = (k: string) => str(f, k);
  const zone = v("timeZone") || "UTC";
  const cronField = (name: string, label: string, required = false) => (
    <Island
      name="CronField"
      component={CronField}
      props={{ name, label, value: v(name), scheduleZone: zone, required, error: e?.[name] }}
    />
  );
  const template = EXCLUSION_TEMPLATES[v("exclusionTemplate")];
  return (
    <form method="post" action={props.action} class="form form--wide">
      <Csrf token={props.csrf} />
      <FormErrors message={props.error} />
      <Section n={1} title="General">
        <Field name="name" label="Name" value={v("name")} errors={e} required />
        {props.existing
          ? (
            <>
              <p class="readonly">
                BES: {props.engines.find((x) => x.id === props.existing!.besId)?.name ?? props.existing.besId}
                {" "}
                (cannot change)
              </p>
              <Select
                name="targetId"
                label="Storage target (one of this BES's)"
                value={v("targetId")}
                errors={e}
                blank="Choose a storage target…"
                options={props.targets.map((t) => ({ value: t.id, label: t.name }))}
              />
            </>
          )
          : (
            <Island
              name="BesTargetFields"
              component={BesTargetFields}
              props={{
                engines: props.engines.map((x) => ({ id: x.id, name: x.name })),
                targets: props.targets.map((t) => ({ id: t.id, name: t.name, besId: t.besId })),
                besId: v("besId"),
                targetId: v("targetId"),
                errors: { besId: e?.besId, targetId: e?.targetId },
              }}
            />
          )}
        <Select
          name="backupType"
          label="Backup type"
          value={v("backupType")}
          errors={e}
          options={BACKUP_TYPES.map((t) => ({
            value: t,
            label: t === "file" ? "File (file-level)" : "Image (full disk image)",
          }))}
        />
      </Section>
      <Section n={2} title="Schedule">
        <Field
          name="timeZone"
          label="Time zone the schedules are read in"
          value={zone}
          errors={e}
          hint="IANA name, e.g. UTC or Europe/Berlin"
        />
        {cronField("fullSchedule", "Full schedule (required)", true)}
        {cronField("incrementalSchedule", "Incremental schedule (optional)")}
        {cronField("syntheticFullSchedule", "Synthetic full schedule (optional)")}
        <Field
          name="rpoHours"
          label="RPO (hours)"
          type="number"
          value={v("rpoHours")}
          errors={e}
          hint="Leave empty to derive it: the longest gap between scheduled full/incremental runs plus 6 hours."
        />
      </Section>
      <Section n={3} title="Paths">
        <div class={e?.includePaths ? "field field--error" : "field"}>
          <label for="f-includePaths">Include paths (absolute, one per line)</label>
          <textarea
            id="f-includePaths"
            name="includePaths"
            placeholder={INCLUDE_PLACEHOLDER}
            aria-invalid={e?.includePaths ? "true" : undefined}
            aria-describedby="f-includePaths-hint"
          >
            {v("includePaths")}
          </textarea>
          <p class="hint" id="f-includePaths-hint">
            What each host backs up. Empty: the agent's default roots, which it reports when it enrolls (shown
            on the host's page). At most {MAX_INCLUDE_PATHS} paths, no “..”.
          </p>
          {e?.includePaths && <p class="field-error" role="alert">{e.includePaths}</p>}
        </div>
        <div class={e?.excludePaths ? "field field--error" : "field"}>
          <label for="f-excludePaths">Exclude paths (one per line)</label>
          <textarea id="f-excludePaths" name="excludePaths">{v("excludePaths")}</textarea>
          {e?.excludePaths && <p class="field-error">{e.excludePaths}</p>}
        </div>
        <div class={e?.excludePatterns ? "field field--error" : "field"}>
          <label for="f-excludePatterns">Exclude patterns (globs, one per line)</label>
          <textarea id="f-excludePatterns" name="excludePatterns">{v("excludePatterns")}</textarea>
        </div>
        <Select
          name="exclusionTemplate"
          label="Exclusion template"
          value={v("exclusionTemplate")}
          errors={e}
          blank="None"
          options={Object.entries(EXCLUSION_TEMPLATES).map(([k, t]) => ({ value: k, label: t.label }))}
        />
        <details>
          <summary class="hint">What each template excludes</summary>
          <dl class="facts">
            {Object.entries(EXCLUSION_TEMPLATES).map(([k, t]) => (
              <>
                <dt key={`t${k}`}>{t.label}</dt>
                <dd key={`p${k}`}>
                  <code>{t.patterns.join("  ")}</code>
                </dd>
              </>
            ))}
          </dl>
        </details>
        {template && (
          <p class="hint">
            Selected template adds: <code>{template.patterns.join("  ")}</code>
          </p>
        )}
      </Section>
      <Section n={4} title="Retention (Grandfather-Father-Son)">
        {props.retentionWarning && (
          <label class="choice notice notice--warn" data-testid="confirm-retention">
            <input type="checkbox" name="confirmRetention" value="on" />{" "}
            I understand: this change expires many restore points (see above). Save anyway.
          </label>
        )}
        <div class="grid-3">
          {RETENTION_FIELDS.map(([name, label]) => (
            <Field key={name} name={name} label={label} type="number" value={v(name)} errors={e} />
          ))}
        </div>
      </Section>
      <Section n={5} title="Data protection">
        {props.existing && (
          <p class="hint" data-testid="generation-hint">
            Changing the storage target, encryption or deduplication starts a new repository generation (now
            generation{" "}
            {props.existing.generation ?? 1}): each host's next backup is a full, and the older generations
            stay until their restore points expire.
          </p>
        )}
        <Select
          name="compression"
          label="Compression"
          value={v("compression")}
          errors={e}
          options={COMPRESSIONS.map((c) => ({
            value: c,
            label: c === "lz4" ? "lz4 (fast)" : c === "zstd" ? "zstd (better ratio)" : "none",
          }))}
        />
        <Select
          name="encryption"
          label="Encryption"
          value={v("encryption")}
          errors={e}
          options={ENCRYPTIONS.map((c) => ({ value: c, label: c }))}
        />
        <Check name="deduplication" label="Deduplication (content-addressed)" form={f} />
      </Section>
      <Section n={6} title="Performance and behavior">
        <Field
          name="maxTransferMbps"
          label="Max transfer (MBps, optional)"
          type="number"
          value={v("maxTransferMbps")}
          errors={e}
        />
        <Select
          name="ioPriority"
          label="IO priority"
          value={v("ioPriority")}
          errors={e}
          options={IO_PRIORITIES.map((c) => ({ value: c, label: c }))}
        />
        {cronField("throttleSchedule", "Throttle schedule (optional: when the cap applies)")}
        <Check name="vssEnabled" label="VSS snapshots on Windows, LVM freeze on Linux" form={f} />
        <Check name="catchUpOnReconnect" label="Catch up on reconnect (run missed backups)" form={f} />
        <Check name="verifyAfterBackup" label="Verify after backup" form={f} />
        <Field
          name="verifySampleCount"
          label="Verify sample count (1–10000)"
          type="number"
          value={v("verifySampleCount")}
          errors={e}
        />
        <Check name="prePatchBackup" label="Pre-patch backup (an incremental before OS patching)" form={f} />
        <Check
          name="archiveOnHostDeactivation"
          label="Archive backups when a host is decommissioned"
          form={f}
        />
        <Check name="enabled" label="Enabled" form={f} />
      </Section>
      {props.hooksSection}
      <FormActions
        submit={props.existing ? "Save policy" : "Create policy"}
        cancel={props.existing ? `/backup/policies/${props.existing.id}` : "/backup/policies"}
      />
    </form>
  );
}

const ListQuery = TargetFilter.pick({ q: true, offset: true, limit: true });

policyRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const query = ListQuery.parse(c.req.query());
  const { policies, engineName, targetName } = await getPolicyList(kv, actor, {}, clock());
  const needle = query.q.toLowerCase();
  const rows = policies.filter((p) => !needle || p.name.toLowerCase().includes(needle));
  return render(
    c,
    "Policies",
    (
      <>
        <PageHeader
          title="Policies"
          subtitle="What to back up, when, where to, and for how long."
          actions={can(actor, "backup.manage") && (
            <a class="btn btn--primary" href="/backup/policies/new">Add Policy</a>
          )}
        />
        <form method="get" class="filters">
          <input type="search" name="q" value={query.q} placeholder="Search name" aria-label="Search" />
          <button type="submit" class="btn">Filter</button>
        </form>
        {rows.length === 0
          ? (
            <EmptyState title={policies.length ? "No policies match" : "No policies yet"}>
              {!policies.length && "Create a policy after registering an engine and adding a storage target."}
            </EmptyState>
          )
          : (
            <DataTable
              class="table table--cards"
              heads={[
                "Name",
                "Type",
                "State",
                "BES → target",
                "Full",
                "Incremental",
                "RPO",
                "Retention d/w/m",
              ]}
            >
              {rows.slice(query.offset, query.offset + query.limit).map((p) => (
                <tr key={p.id}>
                  <td data-label="Name">
                    <a href={`/backup/policies/${p.id}`}>{p.name}</a>
                  </td>
                  <td data-label="Type">{p.backupType}</td>
                  <td class="cell-status" data-label="State">
                    <PolicyState policy={p} />
                  </td>
                  <td data-label="BES → target">
                    {engineName.get(p.besId) ?? "—"} → {targetName.get(p.targetId) ?? "—"}
                  </td>
                  <td data-label="Full">{describeCron(p.fullSchedule)}</td>
                  <td data-label="Incremental">
                    {p.incrementalSchedule ? describeCron(p.incrementalSchedule) : "—"}
                  </td>
                  <td data-label="RPO">{p.rpoHours} h</td>
                  <td data-label="Retention d/w/m">
                    {p.retentionDaily}/{p.retentionWeekly}/{p.retentionMonthly}
                  </td>
                </tr>
              ))}
            </DataTable>
          )}
        <Pager total={rows.length} offset={query.offset} limit={query.limit} query={{ q: query.q }} />
      </>
    ),
  );
});

/** Enabled / disabled / paused (with the system's reason). */
export function PolicyState(props: { policy: Policy }) {
  const p = props.policy;
  if (!p.enabled) return <Badge tone="muted">disabled</Badge>;
  if (p.pausedReason) return <PausedBadge reason={p.pausedReason} targetId={p.targetId} />;
  return <Badge tone="ok">enabled</Badge>;
}

/** The edit page of a policy with a refused hook form in its 7th section (422). */
export async function renderPolicyEdit(c: Context<AppEnv>, policy: Policy, hookDraft: HookDraft) {
  return await formPage(c, { form: formFromPolicy(policy), existing: policy, hookDraft, status: 422 });
}

async function formPage(
  c: Context<AppEnv>,
  opts: {
    form: FormFields;
    existing?: Policy;
    errors?: FieldErrors;
    error?: string;
    status?: 200 | 422;
    hookDraft?: HookDraft;
    retentionWarning?: boolean;
  },
) {
  const existing = opts.existing;
  const { kv, clock } = c.get("deps");
  const data = await getPolicyEdit(kv, c.get("actor")!, { policy: existing ?? null }, clock());
  const { engines, targets } = data.choices;
  const hooks = existing && data.hooks
    ? <HooksSection data={data.hooks} policy={existing} csrf={c.get("csrfToken")} draft={opts.hookDraft} />
    : null;
  return render(
    c,
    existing ? existing.name : "Add policy",
    (
      <>
        <PageHeader title={existing ? `Edit ${existing.name}` : "Add Policy"} />
        <PolicyForm
          csrf={c.get("csrfToken")}
          action={existing ? `/backup/policies/${existing.id}/edit` : "/backup/policies/new"}
          form={opts.form}
          engines={engines}
          targets={existing ? targets.filter((t) => t.besId === existing.besId) : targets}
          existing={existing}
          errors={opts.errors}
          error={opts.error}
          retentionWarning={opts.retentionWarning}
        />
        {hooks}
      </>
    ),
    opts.status ?? 200,
  );
}

policyRoutes.get(
  "/new",
  requires("backup.manage"),
  (c) => formPage(c, { form: { ...NEW_DEFAULTS, besId: NewPolicyQuery.parse(c.req.query()).besId } }),
);

policyRoutes.post("/new", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const form = await readForm(c);
  return await saveForm(
    PolicyCreateInput.safeParse(inputFromForm(form)),
    async (data) => {
      const p = await createPolicy(kv, c.get("actor")!, data, clock());
      return redirectWithNotice(c, `/backup/policies/${p.id}`, `Policy ${p.name} created.`);
    },
    (errors, error) => formPage(c, { form, errors, error, status: 422 }),
  );
});

policyRoutes.get("/:policyId", requires("backup.view"), async (c) => {
  const p = await requirePolicy(c.get("deps").kv, c.get("actor")!, c.req.param("policyId"));
  return await policyPage(c, p);
});

/** Run now (routes/policy_run_now.tsx); a refusal renders the policy page again with it. */
policyRoutes.post("/:policyId/run", requires("backup.manage"), (c) => postRunNow(c, policyPage));

/** The policy page; `runNow` carries a refused Run now back to its panel (and sets the status). */
async function policyPage(c: Context<AppEnv>, p: Policy, runNow: RunNowRefusal | null = null) {
  const { kv, clock } = c.get("deps");
  const now = clock();
  const data = await getPolicyDetail(kv, c.get("actor")!, { policy: p, query: c.req.query() }, now);
  const { engines, targets } = data.choices;
  const canManage = data.canManage;
  const runs = nextRuns(p.fullSchedule, now, 3, p.timeZone);
  const csrf = c.get("csrfToken");
  return render(
    c,
    p.name,
    (
      <>
        <PageHeader
          title={p.name}
          subtitle={<>{p.backupType} policy · created {formatTime(p.createdAt)}</>}
          actions={<PolicyState policy={p} />}
        />
        {p.pausedReason === "storage_critical" && (
          <p class="notice notice--warn">
            Paused by the system: <a href={`/backup/storage/${p.targetId}`}>the storage target</a>{" "}
            is at critical capacity. It resumes by itself when the target is healthy again.
          </p>
        )}
        <div class="grid-2">
          <section class="panel">
            <h2>Where and when</h2>
            <dl class="facts">
              <dt>BES</dt>
              <dd>{engines.find((e) => e.id === p.besId)?.name ?? p.besId}</dd>
              <dt>Storage target</dt>
              <dd>
                <a href={`/backup/storage/${p.targetId}`}>
                  {targets.find((t) => t.id === p.targetId)?.name ?? p.targetId}
                </a>
              </dd>
              <dt>Full</dt>
              <dd>
                <CronReading expression={p.fullSchedule} /> ({p.timeZone})
              </dd>
              <dt>Incremental</dt>
              <dd>
                {p.incrementalSchedule ? <CronReading expression={p.incrementalSchedule} /> : "—"}
              </dd>
              <dt>Synthetic full</dt>
              <dd>{p.syntheticFullSchedule ? <CronReading expression={p.syntheticFullSchedule} /> : "—"}</dd>
              <dt>Next full runs</dt>
              <dd>
                <ul class="inline-list">
                  {runs.map((d) => <li key={d.toISOString()}>{formatTime(d.toISOString())}</li>)}
                </ul>
              </dd>
              <dt>RPO</dt>
              <dd>{p.rpoHours} h{p.rpoDerived ? " (derived from the schedules)" : ""}</dd>
            </dl>
          </section>
          <section class="panel">
            <h2>How</h2>
            <dl class="facts">
              <dt>Retention</dt>
              <dd>{p.retentionDaily} daily · {p.retentionWeekly} weekly · {p.retentionMonthly} monthly</dd>
              <dt>Data protection</dt>
              <dd>{p.compression} · {p.encryption} · dedup {p.deduplication ? "on" : "off"}</dd>
              <dt>Repository</dt>
              <dd data-testid="policy-repository">
                <code>{repositoryOf(p).path}</code> (generation {repositoryOf(p).generation})
              </dd>
              <dt>Includes</dt>
              <dd data-testid="policy-includes">
                {(p.includePaths ?? []).length
                  ? <code>{p.includePaths.join("  ")}</code>
                  : "the agent's default roots"}
              </dd>
              <dt>Excludes</dt>
              <dd>
                {effectiveExcludes(p).length ? <code>{effectiveExcludes(p).join("  ")}</code> : "none"}
                {p.excludePaths.length
                  ? (
                    <div>
                      Paths: <code>{p.excludePaths.join("  ")}</code>
                    </div>
                  )
                  : null}
              </dd>
              <dt>Performance</dt>
              <dd>
                {p.maxTransferMbps ? `${p.maxTransferMbps} MBps cap` : "no cap"} · IO {p.ioPriority}
                {p.throttleSchedule ? ` · throttled ${describeCron(p.throttleSchedule)}` : ""}
              </dd>
              <dt>Behavior</dt>
              <dd>
                VSS {p.vssEnabled ? "on" : "off"} · catch-up {p.catchUpOnReconnect ? "on" : "off"} · verify
                {" "}
                {p.verifyAfterBackup ? `on (${p.verifySampleCount} files)` : "off"} · pre-patch{" "}
                {p.prePatchBackup ? "on" : "off"} · archive on deactivation{" "}
                {p.archiveOnHostDeactivation ? "on" : "off"}
              </dd>
            </dl>
          </section>
        </div>
        <RunNowSection data={data.runNow} policy={p} csrf={csrf} refused={runNow} />
        <RunsSection data={data.runs} csrf={csrf} />
        <RetentionSection data={data.retention} policy={p} />
        <HostsSection data={data.hosts} policy={p} csrf={csrf} />
        <ReplicasSection data={data.replicas} policy={p} csrf={csrf} />
        <HooksSummary hooks={data.hooks} policy={p} />
        {canManage && (
          <section class="panel">
            <div class="form-actions">
              <a class="btn btn--primary" href={`/backup/policies/${p.id}/edit`}>Edit policy</a>
              <form method="post" action={`/backup/policies/${p.id}/toggle`}>
                <Csrf token={c.get("csrfToken")} />
                <button type="submit" class="btn">{p.enabled ? "Disable" : "Enable"}</button>
              </form>
              <a class="btn btn--danger" href={`/backup/policies/${p.id}/delete`}>Delete…</a>
            </div>
          </section>
        )}
      </>
    ),
    runNow?.status ?? 200,
  );
}

policyRoutes.get("/:policyId/edit", requires("backup.manage"), async (c) => {
  const p = await requirePolicy(c.get("deps").kv, c.get("actor")!, c.req.param("policyId"));
  return await formPage(c, { form: formFromPolicy(p), existing: p });
});

policyRoutes.post("/:policyId/edit", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const p = await requirePolicy(kv, actor, c.req.param("policyId"));
  const form = await readForm(c);
  // The edit form has no BES field; one sent anyway (a tampered form) must be the policy's own.
  const { besId, ...input } = inputFromForm(form);
  const parsed = PolicyUpdateInput.safeParse({ ...input, besId: besId || undefined });
  if (!parsed.success) {
    return await formPage(c, { form, existing: p, errors: fieldErrors(parsed.error), status: 422 });
  }
  // A retention change that would expire more than half of an object's restore points, or keep fewer
  // than two, needs an explicit confirmation.
  const counts = {
    daily: parsed.data.retentionDaily,
    weekly: parsed.data.retentionWeekly,
    monthly: parsed.data.retentionMonthly,
  };
  const changed = counts.daily !== p.retentionDaily || counts.weekly !== p.retentionWeekly ||
    counts.monthly !== p.retentionMonthly;
  if (changed && str(form, "confirmRetention") !== "on") {
    const preview = await previewPolicyRetention(kv, {
      id: p.id,
      accountId: p.accountId,
      timeZone: parsed.data.timeZone,
    }, counts);
    const warnings = Object.values(preview).filter((o) => o.needsConfirmation).map((o) => o.warning!);
    if (warnings.length) {
      const more = warnings.length > 1 ? ` (and ${warnings.length - 1} more protected objects)` : "";
      return await formPage(c, {
        form,
        existing: p,
        error: `This retention change needs confirmation: ${warnings[0]}${more}`,
        retentionWarning: true,
        status: 422,
      });
    }
  }
  try {
    // Turning encryption off or lowering retention waits for a second person when four-eyes is on.
    const request = await requestIfFourEyes(kv, actor, {
      kind: "policy.update",
      input: { policyId: p.id, mode: "update", fields: parsed.data },
    }, clock());
    if (request) return redirectToApproval(c, request);
    await updatePolicy(kv, actor, p.id, parsed.data, clock());
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e;
    return await formPage(c, { form, existing: p, errors: e.fields, error: e.message, status: 422 });
  }
  return redirectWithNotice(c, `/backup/policies/${p.id}`, `Saved ${parsed.data.name}.`);
});

policyRoutes.post("/:policyId/toggle", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const p = await requirePolicy(kv, actor, c.req.param("policyId"));
  // The same write as PATCH /api/v1/policies/{id} {"enabled": …}: only `enabled` is merged, onto the policy
  // as read inside the update's loop (a concurrent edit is kept; a derived RPO stays derived).
  await patchPolicy(kv, actor, p.id, { enabled: !p.enabled }, clock());
  return redirectWithNotice(
    c,
    `/backup/policies/${p.id}`,
    `${p.name} ${p.enabled ? "disabled" : "enabled"}.`,
  );
});

policyRoutes.get("/:policyId/delete", requires("backup.manage"), async (c) => {
  const p = await requirePolicy(c.get("deps").kv, c.get("actor")!, c.req.param("policyId"));
  return confirmPage(c, {
    title: "Delete policy",
    question: `Delete ${p.name}?`,
    explain: (
      <p>
        Deletes the policy with its host assignments, replication rules and app hooks. Its restore points and
        repositories are kept until they expire under the policy's last retention; its storage targets cannot
        be deleted while they hold them.
      </p>
    ),
    action: `/backup/policies/${p.id}/delete`,
    cancel: `/backup/policies/${p.id}`,
    label: "Delete policy",
  });
});

policyRoutes.post("/:policyId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const p = await requirePolicy(kv, actor, c.req.param("policyId"));
  const request = await requestIfFourEyes(
    kv,
    actor,
    { kind: "policy.delete", input: { policyId: p.id } },
    clock(),
  );
  if (request) return redirectToApproval(c, request);
  await deletePolicy(kv, actor, p.id, clock());
  return redirectWithNotice(c, "/backup/policies", `Deleted policy ${p.name}.`);
});

/** On the policy page: the hooks in execution order (they are edited in the form's 7th section). */
function HooksSummary(props: { hooks: PolicyDetail["hooks"]; policy: Policy }) {
  const { hooks } = props;
  return (
    <section class="panel">
      <h2>App hooks ({hooks.length})</h2>
      {hooks.length === 0 ? <p class="muted">None: backups are crash-consistent only.</p> : (
        <ol>
          {hooks.map((h) => (
            <li key={h.id}>
              <Badge tone="info">{HOOK_TYPE_LABELS[h.type]}</Badge>{" "}
              {h.templateLabel ?? h.scriptName ?? "script"} · {h.timeoutSeconds}{" "}
              s{h.failOnError ? " · fails the backup on error" : ""}
            </li>
          ))}
        </ol>
      )}
      <a href={`/backup/policies/${props.policy.id}/edit#hooks`}>Manage hooks</a>
    </section>
  );
}
