/**
 * Backup > Platforms: third-party platforms (Veeam B&R, Cohesity) with their last sync status and error;
 * register, edit, test connectivity, sync now, delete with a confirmation page. Their imported jobs
 * appear in Jobs and their objects in Protected Objects.
 */
import { type Context, Hono } from "hono";
import {
  Badge,
  Checkbox,
  Csrf,
  DataTable,
  EmptyState,
  Field,
  FormActions,
  formatAge,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
  type Tone,
} from "../components/ui.tsx";
import type { ComponentChildren } from "preact";
import { ConflictError, type FieldErrors } from "../domain/errors.ts";
import {
  createPlatform,
  deletePlatform,
  type Platform,
  PLATFORM_TYPE_LABELS,
  PLATFORM_TYPES,
  PlatformCreateInput,
  platformScope,
  PlatformUpdateInput,
  requirePlatform,
  type SyncReport,
  updatePlatform,
} from "../domain/platforms.ts";
import { syncPlatform, testPlatform } from "../domain/platform_sync.ts";
import { can } from "../domain/rbac.ts";
import type { Org } from "../domain/types.ts";
import {
  getPlatformDelete,
  getPlatformDetail,
  getPlatformForm,
  getPlatformList,
} from "../domain/read_models/platforms.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { type FormFields, readForm, saveForm, str } from "./forms.ts";
import { confirmPage, redirectWithNotice, render } from "./render.tsx";

export const platformRoutes = new Hono<AppEnv>();

const SYNC_TONE: Record<SyncReport["status"], Tone> = { success: "ok", failed: "bad" };

function SyncBadge(props: { platform: Platform }) {
  const s = props.platform.lastSync;
  if (!s) return <Badge tone="muted">never synced</Badge>;
  return <Badge tone={SYNC_TONE[s.status]}>{s.status === "success" ? "synced" : "sync failed"}</Badge>;
}

/** When the next automatic sync is due (the minute tick starts it). */
function nextSync(p: Platform): ComponentChildren {
  if (!p.syncEnabled) return "sync off";
  if (!p.lastSync) return "at the next minute";
  return formatTime(
    new Date(Date.parse(p.lastSync.startedAt) + p.syncIntervalMinutes * 60_000).toISOString(),
  );
}

function summary(s: SyncReport): string {
  return [
    `jobs +${s.jobs.created} ~${s.jobs.updated} −${s.jobs.removed}`,
    `runs +${s.runs.imported} ~${s.runs.updated}`,
    `objects +${s.objects.created} ~${s.objects.updated} unprotected ${s.objects.unprotected}`,
    s.retries.started || s.retries.failed || s.retries.deferred
      ? `retries started ${s.retries.started}, failed ${s.retries.failed}, deferred ${s.retries.deferred}`
      : "",
  ].filter(Boolean).join(" · ");
}

platformRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const now = clock();
  const { platforms, orgName, manage } = await getPlatformList(kv, actor, {}, now);
  return render(
    c,
    "Platforms",
    (
      <>
        <PageHeader
          title="Platforms"
          subtitle="Third-party backup platforms. Their sync imports jobs, runs and protected objects automatically."
          actions={manage && <a class="btn btn--primary" href="/backup/platforms/new">Register platform</a>}
        />
        {platforms.length === 0
          ? (
            <EmptyState title="No platforms yet">
              For Veeam or Cohesity, skip engines, storage and policies: register the platform here and its
              sync imports jobs and protected objects.
              {manage && (
                <>
                  {" "}
                  <a href="/backup/platforms/new">Register the first platform</a>
                </>
              )}
            </EmptyState>
          )
          : (
            <DataTable
              class="table"
              testid="platforms-table"
              heads={["Name", "Type", "Organization", "Endpoint", "Last sync", "Next sync"]}
            >
              {platforms.map((p) => (
                <tr key={p.id} data-testid="platform-row">
                  <td>
                    <a href={`/backup/platforms/${p.id}`}>{p.name}</a>
                  </td>
                  <td>{PLATFORM_TYPE_LABELS[p.type]}</td>
                  <td>{orgName.get(p.orgId) ?? p.orgId}</td>
                  <td>
                    <code>{p.endpointUrl}</code>
                  </td>
                  <td>
                    <SyncBadge platform={p} /> {p.lastSync ? formatAge(p.lastSync.startedAt, now) : ""}
                    {p.lastSync?.error && (
                      <p class="field-error" data-testid="sync-error">{p.lastSync.error}</p>
                    )}
                  </td>
                  <td class="nowrap">{nextSync(p)}</td>
                </tr>
              ))}
            </DataTable>
          )}
      </>
    ),
  );
});

interface FormProps {
  csrf: string;
  action: string;
  orgs: Org[];
  values: FormFields;
  errors?: FieldErrors;
  error?: string;
  existing?: Platform;
}

/** The register / edit form; type and organization are fixed once registered. */
function PlatformForm(props: FormProps) {
  const v = (name: string) => str(props.values, name);
  const e = props.existing;
  const errors = props.errors ?? {};
  return (
    <form method="post" action={props.action} class="form" data-testid="platform-form">
      <Csrf token={props.csrf} />
      <FormErrors message={props.error} />
      {e
        ? (
          <p class="readonly">
            {PLATFORM_TYPE_LABELS[e.type]} in {props.orgs.find((o) => o.id === e.orgId)?.name ?? e.orgId}
          </p>
        )
        : (
          <>
            <Select
              name="type"
              label="Platform type"
              value={v("type") || "veeam"}
              errors={errors}
              options={PLATFORM_TYPES.map((t) => ({ value: t, label: PLATFORM_TYPE_LABELS[t] }))}
            />
            <Select
              name="orgId"
              label="Organization"
              value={v("orgId")}
              errors={errors}
              blank="Choose an organization…"
              options={props.orgs.map((o) => ({ value: o.id, label: o.name }))}
            />
          </>
        )}
      <Field name="name" label="Name" value={v("name")} errors={errors} required />
      <Field
        name="endpointUrl"
        label="API endpoint URL"
        type="url"
        value={v("endpointUrl")}
        errors={errors}
        hint="Veeam: https://vbr01.example.com:9419 · Cohesity: https://cohesity01.example.com"
        required
      />
      <fieldset class="type-fields">
        <legend>Credentials (the password is stored encrypted in the vault)</legend>
        {e && (
          <p class="hint">
            Password stored{" "}
            {formatTime(e.credentialRotatedAt)}. Type a new one to replace it; leave empty to keep it (it must
            be typed again when the endpoint URL or the CA certificate changes).
          </p>
        )}
        <Field name="username" label="User name" value={v("username")} errors={errors} autocomplete="off" />
        <Field name="password" label="Password" type="password" errors={errors} autocomplete="new-password" />
        <Field
          name="domain"
          label="Login domain (Cohesity)"
          value={v("domain")}
          errors={errors}
          hint="LOCAL or an Active Directory domain; ignored for Veeam"
        />
        <Field
          name="apiVersion"
          label="API revision (Veeam x-api-version)"
          value={v("apiVersion")}
          errors={errors}
          hint="Default 1.1-rev2; ignored for Cohesity"
        />
      </fieldset>
      <fieldset class="type-fields">
        <legend>TLS</legend>
        <p class="hint">
          The server's certificate is always verified. If it is signed by a private CA, paste that CA's
          certificate (PEM) here; it is trusted for this platform only.
        </p>
        <div class={errors.caCertificate ? "field field--error" : "field"}>
          <label for="f-caCertificate">CA certificate (optional, PEM)</label>
          <textarea id="f-caCertificate" name="caCertificate" rows={4}>{v("caCertificate")}</textarea>
          {errors.caCertificate && <p class="field-error">{errors.caCertificate}</p>}
        </div>
      </fieldset>
      <div class="grid-2">
        <Field
          name="syncIntervalMinutes"
          label="Sync interval (minutes)"
          type="number"
          value={v("syncIntervalMinutes") || "60"}
          errors={errors}
          hint="5–1440"
        />
        <Field
          name="defaultRpoHours"
          label="RPO of imported objects (hours)"
          type="number"
          value={v("defaultRpoHours") || "24"}
          errors={errors}
          hint="Platforms do not report an RPO: this one applies to every object they protect"
        />
      </div>
      <Checkbox name="syncEnabled" checked={v("syncEnabled") !== "off"} label="Sync automatically" />
      <FormActions
        submit={e ? "Save changes" : "Register platform"}
        cancel={e ? `/backup/platforms/${e.id}` : "/backup/platforms"}
      />
    </form>
  );
}

/** The orgs where the actor may register platforms. */
async function manageableOrgs(c: Context<AppEnv>): Promise<Org[]> {
  const { kv, clock } = c.get("deps");
  return (await getPlatformForm(kv, c.get("actor")!, {}, clock())).orgs;
}

/** The form's fields as the shared schema's input (blank numbers fall back to their defaults). */
function inputFromForm(form: FormFields) {
  return {
    name: str(form, "name"),
    endpointUrl: str(form, "endpointUrl"),
    username: str(form, "username"),
    password: str(form, "password"),
    domain: str(form, "domain"),
    apiVersion: str(form, "apiVersion"),
    caCertificate: str(form, "caCertificate"),
    syncIntervalMinutes: str(form, "syncIntervalMinutes") || undefined,
    defaultRpoHours: str(form, "defaultRpoHours") || undefined,
    syncEnabled: str(form, "syncEnabled") === "on",
  };
}

/** What was typed, without the password, to re-render a form. */
function typed(form: FormFields): FormFields {
  const { password: _password, ...rest } = form;
  return { ...rest, syncEnabled: str(form, "syncEnabled") === "on" ? "on" : "off" };
}

async function newPage(c: Context<AppEnv>, values: FormFields, errors?: FieldErrors, error?: string) {
  const orgs = await manageableOrgs(c);
  return render(
    c,
    "Register platform",
    (
      <>
        <PageHeader
          title="Register Platform"
          subtitle="A Veeam Backup & Replication server or a Cohesity cluster, reached through its REST API."
        />
        {orgs.length === 0
          ? (
            <EmptyState title="No organization you can manage">
              Ask an administrator for backup.manage.
            </EmptyState>
          )
          : (
            <PlatformForm
              csrf={c.get("csrfToken")}
              action="/backup/platforms/new"
              orgs={orgs}
              values={values}
              errors={errors}
              error={error}
            />
          )}
      </>
    ),
    errors || error ? 422 : 200,
  );
}

platformRoutes.get("/new", requires("backup.manage"), async (c) => await newPage(c, { type: "veeam" }));

platformRoutes.post("/new", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const form = await readForm(c);
  const input = { ...inputFromForm(form), type: str(form, "type"), orgId: str(form, "orgId") };
  // A refused or conflicting save shows the form again with what was typed.
  return await saveForm(
    PlatformCreateInput.safeParse(input),
    async (data) => {
      const platform = await createPlatform(kv, c.get("actor")!, data, { now: clock(), masterKey });
      return redirectWithNotice(
        c,
        `/backup/platforms/${platform.id}`,
        `Registered ${platform.name}. Test the connection, then sync (it also syncs on its own every ${platform.syncIntervalMinutes} min).`,
      );
    },
    (errors, error) => newPage(c, typed(form), errors, error),
    { invalid: "Check the fields below." },
  );
});

function formFromPlatform(p: Platform): FormFields {
  return {
    name: p.name,
    endpointUrl: p.endpointUrl,
    username: p.username,
    domain: p.domain,
    apiVersion: p.apiVersion,
    caCertificate: p.caCertificate ?? "",
    syncIntervalMinutes: String(p.syncIntervalMinutes),
    defaultRpoHours: String(p.defaultRpoHours),
    syncEnabled: p.syncEnabled ? "on" : "off",
  };
}

async function platformPage(
  c: Context<AppEnv>,
  platform: Platform,
  form?: { values: FormFields; errors?: FieldErrors; error?: string },
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { jobs, orgs } = await getPlatformDetail(kv, actor, { platform }, clock());
  const manage = can(actor, "backup.manage", platformScope(platform));
  const s = platform.lastSync;
  return render(
    c,
    platform.name,
    (
      <>
        <PageHeader
          title={platform.name}
          subtitle={
            <>
              {PLATFORM_TYPE_LABELS[platform.type]} · {orgs.find((o) => o.id === platform.orgId)?.name ??
                platform.orgId} · registered {formatTime(platform.createdAt)}
            </>
          }
          actions={<SyncBadge platform={platform} />}
        />
        <div class="grid-2">
          <section class="panel">
            <h2>Connection</h2>
            <dl class="facts" data-testid="platform-facts">
              <dt>Endpoint</dt>
              <dd>
                <code>{platform.endpointUrl}</code>
              </dd>
              <dt>User</dt>
              <dd>
                {platform.type === "cohesity" ? `${platform.domain}\\` : ""}
                {platform.username}
              </dd>
              <dt>Password</dt>
              <dd>
                {platform.credentialId
                  ? <>in the vault, set {formatTime(platform.credentialRotatedAt)}</>
                  : "none"}
              </dd>
              {platform.type === "veeam" && (
                <>
                  <dt>API revision</dt>
                  <dd>{platform.apiVersion}</dd>
                </>
              )}
              <dt>TLS</dt>
              <dd>
                {platform.endpointUrl.startsWith("http:")
                  ? "none: plain http on loopback (testing only)"
                  : `certificate verified${
                    platform.caCertificate ? " (system CAs and this platform's CA)" : ""
                  }`}
              </dd>
              <dt>Last test</dt>
              <dd data-testid="last-test">
                {platform.lastTest
                  ? (
                    <>
                      <Badge tone={platform.lastTest.ok ? "ok" : "bad"}>
                        {platform.lastTest.ok ? "connected" : "failed"}
                      </Badge>{" "}
                      {formatTime(platform.lastTest.at)} — {platform.lastTest.message}
                    </>
                  )
                  : "never tested"}
              </dd>
            </dl>
            {manage && (
              <form method="post" action={`/backup/platforms/${platform.id}/test`} class="inline-form">
                <Csrf token={c.get("csrfToken")} />
                <button type="submit" class="btn">Test connectivity</button>
              </form>
            )}
          </section>
          <section class="panel">
            <h2>Sync</h2>
            <dl class="facts" data-testid="sync-facts">
              <dt>Schedule</dt>
              <dd>
                {platform.syncEnabled
                  ? `every ${platform.syncIntervalMinutes} min`
                  : "off (Sync now still works)"}
              </dd>
              <dt>Last sync</dt>
              <dd>
                {s
                  ? (
                    <>
                      <SyncBadge platform={platform} /> {formatTime(s.startedAt)}
                    </>
                  )
                  : "never"}
              </dd>
              {s?.error && (
                <>
                  <dt>Error</dt>
                  <dd class="field-error" data-testid="sync-error">
                    {s.stage ? `${s.stage}: ` : ""}
                    {s.error}
                  </dd>
                </>
              )}
              {s && (
                <>
                  <dt>Changes</dt>
                  <dd>{summary(s)}</dd>
                </>
              )}
              {s?.warnings.length
                ? (
                  <>
                    <dt>Warnings</dt>
                    <dd>{s.warnings.join("; ")}</dd>
                  </>
                )
                : null}
              <dt>Last success</dt>
              <dd>{formatTime(platform.lastSuccessAt)}</dd>
              <dt>Next sync</dt>
              <dd>{nextSync(platform)}</dd>
              <dt>Objects' RPO</dt>
              <dd>{platform.defaultRpoHours} h</dd>
            </dl>
            {manage && (
              <form method="post" action={`/backup/platforms/${platform.id}/sync`} class="inline-form">
                <Csrf token={c.get("csrfToken")} />
                <button type="submit" class="btn btn--primary">Sync now</button>
              </form>
            )}
          </section>
        </div>
        <section class="panel">
          <h2>Imported jobs</h2>
          <p>
            <a href={`/backup/jobs?source=platform:${platform.id}`}>In Jobs</a> ·{" "}
            <a href={`/backup/protected?source=platform:${platform.id}`}>Protected objects</a>
          </p>
          {jobs.length === 0
            ? <p class="muted">None yet: the next sync imports the platform's jobs.</p>
            : (
              <DataTable
                class="table table--compact"
                testid="platform-jobs"
                heads={["Job", "Source job id", "Vendor type", "State", "Last outcome"]}
              >
                {jobs.map((j) => (
                  <tr key={j.id}>
                    <td>
                      <a href={`/backup/jobs/${j.id}`}>{j.name}</a>
                    </td>
                    <td>
                      <code>{j.vendorJobId}</code>
                    </td>
                    <td>{j.vendorType}</td>
                    <td>{j.removed ? "removed on the platform" : j.enabled ? "enabled" : "disabled"}</td>
                    <td>
                      {j.lastOutcome ? <>{j.lastOutcome.status}, {formatTime(j.lastOutcome.endedAt)}</> : "—"}
                    </td>
                  </tr>
                ))}
              </DataTable>
            )}
        </section>
        {manage && (
          <>
            <section class="panel">
              <h2>Edit</h2>
              <PlatformForm
                csrf={c.get("csrfToken")}
                action={`/backup/platforms/${platform.id}`}
                orgs={orgs}
                values={form?.values ?? formFromPlatform(platform)}
                errors={form?.errors}
                error={form?.error}
                existing={platform}
              />
            </section>
            <section class="panel panel--danger">
              <h2>Delete platform</h2>
              <p>
                Removes the platform, its vault credential, its imported jobs and their protected objects.
                Their run history is kept.
              </p>
              <a class="btn btn--danger" href={`/backup/platforms/${platform.id}/delete`}>Delete…</a>
            </section>
          </>
        )}
      </>
    ),
    form?.errors || form?.error ? 422 : 200,
  );
}

platformRoutes.get("/:platformId", requires("backup.view"), async (c) => {
  const platform = await requirePlatform(c.get("deps").kv, c.get("actor")!, c.req.param("platformId"));
  return await platformPage(c, platform);
});

platformRoutes.post("/:platformId", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const actor = c.get("actor")!;
  const platform = await requirePlatform(kv, actor, c.req.param("platformId"));
  const form = await readForm(c);
  return await saveForm(
    PlatformUpdateInput.safeParse(inputFromForm(form)),
    async (data) => {
      const next = await updatePlatform(kv, actor, platform.id, data, { now: clock(), masterKey });
      return redirectWithNotice(c, `/backup/platforms/${platform.id}`, `Saved ${next.name}.`);
    },
    (errors, error) => platformPage(c, platform, { values: typed(form), errors, error }),
    { invalid: "Check the fields below." },
  );
});

platformRoutes.post("/:platformId/test", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const id = c.req.param("platformId");
  const outcome = await testPlatform(kv, c.get("actor")!, id, { masterKey, now: clock() });
  return redirectWithNotice(
    c,
    `/backup/platforms/${id}`,
    outcome.ok ? outcome.message : `Test failed: ${outcome.message}`,
  );
});

platformRoutes.post("/:platformId/sync", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const actor = c.get("actor")!;
  const id = c.req.param("platformId");
  try {
    // syncPlatform checks the actor's scope and permission (NotFoundError / ForbiddenError).
    const report = await syncPlatform(kv, id, { masterKey, now: clock(), actor });
    return redirectWithNotice(
      c,
      `/backup/platforms/${id}`,
      report.status === "success"
        ? `Synced: ${summary(report)}.`
        : `Sync failed (${report.stage}): ${report.error}`,
    );
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return redirectWithNotice(c, `/backup/platforms/${id}`, e.message);
  }
});

platformRoutes.get("/:platformId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const platform = await requirePlatform(kv, actor, c.req.param("platformId"));
  const { footprint } = await getPlatformDelete(kv, actor, { platform }, clock());
  return confirmPage(c, {
    title: "Delete platform",
    question: `Delete ${platform.name}?`,
    action: `/backup/platforms/${platform.id}/delete`,
    cancel: `/backup/platforms/${platform.id}`,
    label: "Delete platform",
    inForm: (
      <p data-testid="delete-footprint">
        Removes the platform and its vault credential, its {footprint.jobs} imported job(s) and its{" "}
        {footprint.objects}{" "}
        protected object(s) (they leave the dashboard counts and their open alerts are resolved). The runs
        already imported stay in the run history. Nothing is changed on the platform itself. This cannot be
        undone; registering the platform again imports everything anew.
      </p>
    ),
  });
});

platformRoutes.post("/:platformId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const platform = await requirePlatform(kv, actor, c.req.param("platformId"));
  await deletePlatform(kv, actor, platform.id, clock());
  return redirectWithNotice(c, "/backup/platforms", `Deleted platform ${platform.name}.`);
});
