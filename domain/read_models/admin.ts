/** Read models of the Admin pages with more than one read (users, organizations, audit) and of Approvals and Alerts. */
import { type AlertFilter, listAlerts } from "../alerts.ts";
import { getFourEyesSettings, listApprovals } from "../approvals.ts";
import { type AuditFilter, listAudit } from "../audit.ts";
import type { Actor } from "../rbac.ts";
import { getAccount, listOrgs } from "../tenancy.ts";
import { listUsers } from "../users.ts";
import { readPage } from "./paging.ts";
import { accountOrgs } from "./common.ts";

/** Admin > Users: the account's users and organizations. */
export async function getUserList(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const [users, orgs] = await Promise.all([
    listUsers(kv, actor, actor.accountId!),
    listOrgs(kv, actor, actor.accountId!),
  ]);
  return { users, orgs };
}

/** Admin > Organizations: the account's organizations and the account. */
export async function getOrgList(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const [orgs, account] = await Promise.all([
    listOrgs(kv, actor, actor.accountId!),
    getAccount(kv, actor.accountId!),
  ]);
  return { orgs, account };
}

/** Admin > Audit: the filter's page (none for a refused filter: `filter` null) and the organization names. */
export async function getAuditPage(
  kv: Deno.Kv,
  actor: Actor,
  params: { filter: AuditFilter | null },
  _now: Date,
) {
  const { filter } = params;
  const [{ page, staleCursor }, orgs] = await Promise.all([
    filter
      ? readPage(filter.cursor, (cursor) => listAudit(kv, actor, { ...filter, cursor }))
      : Promise.resolve({ page: { values: [], cursor: "" }, staleCursor: false }),
    accountOrgs(kv, actor),
  ]);
  return { page, staleCursor, ...orgs };
}

/** Backup > Approvals: the account's four-eyes settings and the pending and decided requests. */
export async function getApprovalsPage(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const settings = await getFourEyesSettings(kv, actor.accountId ?? "");
  const [pending, decided] = await Promise.all([
    listApprovals(kv, actor, { status: "pending" }),
    listApprovals(kv, actor, { status: "decided" }),
  ]);
  return { settings, pending, decided };
}

/** Backup > Alerts: the filter's page of alerts (the first when the cursor is refused). */
export async function getAlertsPage(kv: Deno.Kv, actor: Actor, params: { filter: AlertFilter }, _now: Date) {
  const { filter } = params;
  return await readPage(filter.cursor, (cursor) => listAlerts(kv, actor, { ...filter, cursor }));
}
