/** Backup > Hosts: managed hosts (agents), their status, policies and protected objects. */
import { Hono } from "hono";
import {
  Badge,
  EmptyState,
  formatAge,
  formatTime,
  PageHeader,
  Pager,
  SortHeader,
  type Tone,
} from "../components/ui.tsx";
import { listAssignmentsByHost } from "../domain/assignments.ts";
import { HOST_STATUSES, HostFilter, type HostStatus, listHosts, requireHost } from "../domain/hosts.ts";
import { listProtectedByHost } from "../domain/protected.ts";
import { listOrgs } from "../domain/tenancy.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { render } from "./render.tsx";

export const hostRoutes = new Hono<AppEnv>();

const TONE: Record<HostStatus, Tone> = { pending: "info", online: "ok", offline: "bad" };

export function HostStatusBadge(props: { status: HostStatus }) {
  return <Badge tone={TONE[props.status]}>{props.status}</Badge>;
}

hostRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const filter = HostFilter.parse(c.req.query());
  const [{ values, total }, orgs] = await Promise.all([
    listHosts(kv, actor, filter),
    listOrgs(kv, actor, actor.accountId!),
  ]);
  const orgName = new Map(orgs.map((o) => [o.id, o.name]));
  const keep = { q: filter.q, status: filter.status, orgId: filter.orgId, sort: filter.sort };
  const filtered = Boolean(filter.q || filter.status || filter.orgId);
  const now = clock();
  return render(
    c,
    "Hosts",
    (
      <>
        <PageHeader
          title="Hosts"
          subtitle="Managed hosts: agents enroll with an organization's secret and heartbeat every minute."
        />
        <form method="get" class="filters">
          <input type="search" name="q" value={filter.q} placeholder="Hostname or IP" aria-label="Search" />
          <select name="status" aria-label="Status">
            <option value="">All statuses</option>
            {HOST_STATUSES.map((s) => <option key={s} value={s} selected={filter.status === s}>{s}</option>)}
          </select>
          <select name="orgId" aria-label="Organization">
            <option value="">All organizations</option>
            {orgs.map((o) => (
              <option key={o.id} value={o.id} selected={filter.orgId === o.id}>{o.name}</option>
            ))}
          </select>
          <button type="submit" class="btn">Filter</button>
          {filtered && <a href="/backup/hosts">Clear</a>}
        </form>
        {values.length === 0
          ? (
            <EmptyState title={filtered ? "No hosts match" : "No hosts enrolled yet"}>
              {!filtered &&
                "Install the agent on a host and enroll it with an organization's registration secret."}
            </EmptyState>
          )
          : (
            <div class="table-wrap">
              <table class="table">
                <thead>
                  <tr>
                    <SortHeader label="Hostname" field="hostname" sort={filter.sort} query={keep} />
                    <SortHeader label="IP address" field="ipAddress" sort={filter.sort} query={keep} />
                    <th>OS</th>
                    <SortHeader label="Status" field="status" sort={filter.sort} query={keep} />
                    <th>Organization</th>
                    <th>Relay</th>
                    <SortHeader
                      label="Last heartbeat"
                      field="lastHeartbeatAt"
                      sort={filter.sort}
                      query={keep}
                    />
                  </tr>
                </thead>
                <tbody>
                  {values.map((h) => (
                    <tr key={h.id}>
                      <td>
                        <a href={`/backup/hosts/${h.id}`}>{h.hostname}</a>
                      </td>
                      <td>
                        <code>{h.ipAddress}</code>
                      </td>
                      <td>{h.os}</td>
                      <td>
                        <HostStatusBadge status={h.status} />
                      </td>
                      <td>{orgName.get(h.orgId) ?? "—"}</td>
                      <td>{h.relay ? "yes" : "—"}</td>
                      <td class="nowrap">{formatAge(h.lastHeartbeatAt, now)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        <Pager total={total} offset={filter.offset} limit={filter.limit} query={keep} />
      </>
    ),
  );
});

hostRoutes.get("/:hostId", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const host = await requireHost(kv, actor, c.req.param("hostId"));
  const [assignments, objects] = await Promise.all([
    listAssignmentsByHost(kv, actor, host.id),
    listProtectedByHost(kv, actor, host.id),
  ]);
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
              <dd>{formatTime(host.lastHeartbeatAt)} ({formatAge(host.lastHeartbeatAt, clock())})</dd>
              <dt>Enrolled</dt>
              <dd>{formatTime(host.enrolledAt)}</dd>
              <dt>Relay-capable</dt>
              <dd>{host.relay ? "yes (can run storage health checks)" : "no"}</dd>
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
              <table class="table table--compact">
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
                      <td>{o.name}</td>
                      <td>{o.type}</td>
                      <td>{o.protection}</td>
                      <td>{o.rpoHours} h</td>
                      <td>{formatTime(o.lastBackupAt)}</td>
                      <td>{o.lastBackupStatus}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
        </section>
      </>
    ),
  );
});
