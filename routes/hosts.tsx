/**
 * Backup > Hosts: managed hosts (agents), their status, policies and protected objects; decommissioning
 * a host (Archive On Host Deactivation, domain/archive.ts) with a typed confirmation.
 */
import { type Context, Hono } from "hono";
import { Badge, Csrf, formatAge, formatTime, PageHeader, type Tone } from "../components/ui.tsx";
import { decommissionHost, DecommissionInput } from "../domain/archive.ts";
import { ConflictError, type FieldErrors, ValidationError } from "../domain/errors.ts";
import { type Host, HOST_STATUSES, HostFilter, type HostStatus, requireHost } from "../domain/hosts.ts";
import { can } from "../domain/rbac.ts";
import { HoldPanel } from "../components/holds.tsx";
import { getHostDetail, getHostList } from "../domain/read_models/hosts.ts";
import { requires } from "./access.ts";
import { FilteredList, listQuery } from "./list_page.tsx";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

export const hostRoutes = new Hono<AppEnv>();

const TONE: Record<HostStatus, Tone> = {
  pending: "info",
  online: "ok",
  offline: "bad",
  decommissioned: "muted",
};

export function HostStatusBadge(props: { status: HostStatus }) {
  return <Badge tone={TONE[props.status]}>{props.status}</Badge>;
}

hostRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const list = listQuery(HostFilter, c.req.query(), ["status", "orgId"]);
  const { filter, filtered } = list;
  const now = clock();
  const { hosts: { values, total }, orgs, orgName } = await getHostList(kv, actor, { filter }, now);
  return render(
    c,
    "Hosts",
    (
      <>
        <PageHeader
          title="Hosts"
          subtitle="Managed hosts: agents enroll with an organization's secret and heartbeat every minute."
        />
        <FilteredList
          list={list}
          path="/backup/hosts"
          searchPlaceholder="Hostname or IP"
          filters={
            <>
              <select name="status" aria-label="Status">
                <option value="">All statuses</option>
                {HOST_STATUSES.map((s) => (
                  <option key={s} value={s} selected={filter.status === s}>{s}</option>
                ))}
              </select>
              <select name="orgId" aria-label="Organization">
                <option value="">All organizations</option>
                {orgs.map((o) => (
                  <option key={o.id} value={o.id} selected={filter.orgId === o.id}>{o.name}</option>
                ))}
              </select>
            </>
          }
          empty={{
            title: filtered ? "No hosts match" : "No hosts enrolled yet",
            children: !filtered &&
              "Install the agent on a host and enroll it with an organization's registration secret.",
          }}
          columns={[
            { label: "Hostname", sort: "hostname" },
            { label: "IP address", sort: "ipAddress" },
            { label: "OS" },
            { label: "Status", sort: "status" },
            { label: "Organization" },
            { label: "Relay" },
            { label: "Last heartbeat", sort: "lastHeartbeatAt" },
          ]}
          count={values.length}
          total={total}
          rows={values.map((h) => (
            <tr key={h.id}>
              <td data-label="Hostname">
                <a href={`/backup/hosts/${h.id}`}>{h.hostname}</a>
              </td>
              <td data-label="IP address">
                <code>{h.ipAddress}</code>
              </td>
              <td data-label="OS">{h.os}</td>
              <td class="cell-status" data-label="Status">
                <HostStatusBadge status={h.status} />
              </td>
              <td data-label="Organization">{orgName.get(h.orgId) ?? "—"}</td>
              <td data-label="Relay">{h.relay ? "yes" : "—"}</td>
              <td data-label="Last heartbeat" class="nowrap">{formatAge(h.lastHeartbeatAt, now)}</td>
            </tr>
          ))}
        />
      </>
    ),
  );
});

/** The host page; `decommission` carries a refused confirmation back to its form. */
async function hostPage(
  c: Context<AppEnv>,
  host: Host,
  decommission: { typed: string; errors?: FieldErrors; error?: string; status?: 409 | 422 } | null = null,
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { assignments, objects, holds, mayHold } = await getHostDetail(kv, actor, { host }, clock());
  return render(
    c,
    host.hostname,
    (
      <>
        <PageHeader
          title={host.hostname}
          subtitle={`${host.os} · ${host.ipAddress} · agent ${host.version}`}
          actions={<HostStatusBadge status={host.status} />}
        />
        <div class="grid-2">
          <section class="panel">
            <h2>Status</h2>
            <dl class="facts">
              <dt>Last heartbeat</dt>
              <dd>{formatAge(host.lastHeartbeatAt, clock())}</dd>
              <dt>Enrolled</dt>
              <dd>{formatTime(host.enrolledAt)}</dd>
              <dt>Relay-capable</dt>
              <dd>{host.relay ? "yes (can run storage health checks)" : "no"}</dd>
              <dt>Default roots</dt>
              <dd data-testid="default-roots">
                {host.defaultRoots?.length
                  ? <code>{host.defaultRoots.join("  ")}</code>
                  : <span class="muted">not reported by the agent</span>}
                <div class="hint">What a policy without include paths backs up on this host.</div>
              </dd>
            </dl>
          </section>
          <section class="panel">
            <h2>Policies ({assignments.length})</h2>
            {assignments.length === 0
              ? <p class="muted">Not assigned to any policy: this host is not protected.</p>
              : (
                <ul>
                  {assignments.map(({ assignment, policy }) => (
                    <li key={assignment.id}>
                      <a href={`/backup/policies/${policy.id}`}>{policy.name}</a> · {assignment.state}
                    </li>
                  ))}
                </ul>
              )}
          </section>
        </div>
        <section class="panel">
          <h2>Protected objects and last backups</h2>
          {objects.length === 0
            ? <p class="muted">None yet: assigning the host to a policy creates its protected object.</p>
            : (
              <table class="table table--cards table--compact">
                <thead>
                  <tr>
                    <th>Object</th>
                    <th>Type</th>
                    <th>Protection</th>
                    <th>RPO</th>
                    <th>Last backup</th>
                    <th>Status</th>
                  </tr>
                </thead>
                <tbody>
                  {objects.map((o) => (
                    <tr key={o.id}>
                      <td data-label="Object">{o.name}</td>
                      <td data-label="Type">{o.type}</td>
                      <td data-label="Protection">{o.protection}</td>
                      <td data-label="RPO">{o.rpoHours} h</td>
                      <td data-label="Last backup">{formatTime(o.lastBackupAt)}</td>
                      <td class="cell-status" data-label="Status">{o.lastBackupStatus}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
        </section>
        <HoldPanel
          holds={holds}
          noun="host"
          placeHref={mayHold
            ? `/backup/holds?${new URLSearchParams({ subject: `host:${host.id}` })}#place`
            : null}
        />
        {can(actor, "backup.restore", { accountId: host.accountId, orgId: host.orgId }) && (
          <section class="panel" id="file-history">
            <h2>File history</h2>
            <form method="post" action={`/backup/restore/hosts/${host.id}/history`} class="inline-form">
              <Csrf token={c.get("csrfToken") ?? ""} />
              <label for="file-history-path">File path</label>{" "}
              <input
                id="file-history-path"
                name="path"
                placeholder="/srv/data/report.xlsx"
                maxLength={4096}
                required
              />{" "}
              <button type="submit" class="btn">Show versions</button>
            </form>
            <p class="hint">
              Every version of one file across this host's restore points, each restorable in one click.
            </p>
          </section>
        )}
        {host.status === "decommissioned"
          ? (
            <section class="panel" id="decommission">
              <h2>Decommissioned</h2>
              {decommission?.error && <p class="form-error" role="alert">{decommission.error}</p>}
              <p data-testid="decommissioned">
                Decommissioned{" "}
                {formatTime(host.decommissionedAt)}: no backup is dispatched to this host. Its assignments are
                archived; under policies with “Archive on host deactivation” its restore points are kept until
                an operator expires them, under the others they follow retention.{" "}
                <a href={`/backup/restore?hostId=${host.id}`}>Its restore points</a>. Assigning the host to a
                policy again puts it back in service.
              </p>
            </section>
          )
          : can(actor, "backup.manage", { accountId: host.accountId, orgId: host.orgId }) && (
            <section class="panel panel--danger" id="decommission">
              <h2>Decommission</h2>
              <p>
                Retires the host: no more backups are dispatched to it and its {assignments.length}{" "}
                {assignments.length === 1 ? "assignment becomes" : "assignments become"}{" "}
                archived. Under policies with “Archive on host deactivation” its restore points are kept
                (archived) until an operator expires them; under the others they follow retention.
              </p>
              {decommission?.error && !decommission.errors && (
                <p class="form-error" role="alert">{decommission.error}</p>
              )}
              <form method="post" action={`/backup/hosts/${host.id}/decommission`} class="form">
                <Csrf token={c.get("csrfToken")} />
                <div class={decommission?.errors?.confirmHostname ? "field field--error" : "field"}>
                  <label for="f-confirmHostname">
                    Type <code>{host.hostname}</code> to confirm
                  </label>
                  <input
                    id="f-confirmHostname"
                    name="confirmHostname"
                    value={decommission?.typed ?? ""}
                    autocomplete="off"
                    required
                    aria-invalid={decommission?.errors?.confirmHostname ? "true" : undefined}
                    aria-describedby={decommission?.errors?.confirmHostname
                      ? "f-confirmHostname-error"
                      : undefined}
                  />
                  {decommission?.errors?.confirmHostname && (
                    <p class="field-error" id="f-confirmHostname-error">
                      {decommission.errors.confirmHostname}
                    </p>
                  )}
                </div>
                <div class="form-actions">
                  <button type="submit" class="btn btn--danger">Decommission host</button>
                </div>
              </form>
            </section>
          )}
      </>
    ),
    decommission ? decommission.status ?? 422 : 200,
  );
}

hostRoutes.get("/:hostId", requires("backup.view"), async (c) => {
  const host = await requireHost(c.get("deps").kv, c.get("actor")!, c.req.param("hostId"));
  return await hostPage(c, host);
});

hostRoutes.post("/:hostId/decommission", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const host = await requireHost(kv, actor, c.req.param("hostId"));
  const typed = str(await readForm(c), "confirmHostname");
  const parsed = DecommissionInput.safeParse({ confirmHostname: typed });
  if (!parsed.success) return await hostPage(c, host, { typed, errors: fieldErrors(parsed.error) });
  try {
    const done = await decommissionHost(kv, actor, host.id, parsed.data, clock());
    return redirectWithNotice(
      c,
      `/backup/hosts/${host.id}`,
      `Decommissioned ${host.hostname}: ${done.archivedAssignments} assignment${
        done.archivedAssignments === 1 ? "" : "s"
      } archived, ${done.archivedPoints} restore point${done.archivedPoints === 1 ? "" : "s"} kept.`,
    );
  } catch (e) {
    if (e instanceof ValidationError) {
      return await hostPage(c, host, { typed, errors: e.fields, error: e.message });
    }
    if (e instanceof ConflictError) {
      // Decommissioned meanwhile (or already): the page as it is now, with the reason.
      const current = await requireHost(kv, actor, host.id);
      return await hostPage(c, current, { typed, error: e.message, status: 409 });
    }
    throw e;
  }
});
