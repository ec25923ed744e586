/**
 * Notification rules: which alerts (minimum severity, organizations, events opened/resolved) go to which
 * channels (notification_channels.ts), their CRUD, and the routing of an alert event to channels that
 * notification_delivery.ts's dispatch uses.
 */
import { z } from "zod";
import { ALERT_SEVERITIES, type AlertEvent, type AlertSeverity } from "./alerts.ts";
import { appendAudit, commitAudited } from "./audit.ts";
import { ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { getManyValues } from "./kv.ts";
import { type Actor, authorize, inScope, type ScopedObject } from "./rbac.ts";
import { orgKey, resolveOwner } from "./tenancy.ts";
import type { Org, OrgScope } from "./types.ts";
import { DisplayName } from "./validation.ts";
import { channelKey, ruleKey, rulesByAccountKey, rulesByAccountPrefix } from "./keys/notifications.ts";
import {
  changeEntry,
  channelScope,
  checkAccountLimit,
  getEntries,
  type Kind,
  listAccountIds,
  type NotificationChannel,
  requireEntry,
  setEnabled,
} from "./notification_channels.ts";

export const NOTIFICATION_EVENTS = ["opened", "resolved"] as const;
export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];
export const MAX_RULES_PER_ACCOUNT = 50;

export interface NotificationRule {
  id: string;
  accountId: string;
  /** Whose alerts the rule routes: every org (and account-level alerts), or these orgs. */
  orgIds: OrgScope;
  name: string;
  minSeverity: AlertSeverity;
  events: NotificationEvent[];
  channelIds: string[];
  enabled: boolean;
  createdAt: string;
  updatedAt: string;
}

export function ruleScope(r: Pick<NotificationRule, "accountId" | "orgIds">): ScopedObject {
  return { accountId: r.accountId, orgIds: r.orgIds };
}

const Id = z.string().trim().min(1).max(40);
const unique = <T>(list: T[]) => [...new Set(list)];

export const RuleInput = z.object({
  name: DisplayName,
  minSeverity: z.enum(ALERT_SEVERITIES, { error: "must be critical, warning or info" }),
  orgIds: z.union([z.literal("all"), z.array(Id).min(1).max(100).transform(unique)], {
    error: "choose all organizations or at least one",
  }),
  events: z.array(z.enum(NOTIFICATION_EVENTS, { error: "must be opened or resolved" }))
    .min(1, "choose at least one event").transform(unique),
  channelIds: z.array(Id).min(1, "choose at least one channel").max(20, "may use at most 20 channels")
    .transform(unique),
  enabled: z.boolean().default(true),
  /** Needed only for system actors (CLI, jobs). */
  accountId: Id.optional(),
});
export type RuleInput = z.input<typeof RuleInput>;

const RULE: Kind<NotificationRule> = {
  label: "Notification rule",
  objectType: "notification_rule",
  key: ruleKey,
  scope: ruleScope,
  summarize: (r) => `notification rule ${r.name}`,
};

// ---------------------------------------------------------------------------------------------------
// Rules

/** Returns the rule if the actor may see it (its whole org scope); throws NotFoundError otherwise. */
export async function requireRule(kv: Deno.Kv, actor: Actor, id: string): Promise<NotificationRule> {
  return (await requireEntry(kv, actor, RULE, id)).value;
}

/** Rules of the actor's account in scope, by name. */
export async function listRules(kv: Deno.Kv, actor: Actor): Promise<NotificationRule[]> {
  if (!actor.accountId) return [];
  const ids = await listAccountIds(kv, rulesByAccountPrefix(actor.accountId));
  return (await getManyValues<NotificationRule>(kv, ids.map(ruleKey)))
    .filter((r) => inScope(actor, ruleScope(r)))
    .sort((a, b) => a.name.localeCompare(b.name));
}

type RuleData = z.output<typeof RuleInput>;

/** Checks a rule's orgs and channels against the account and the actor; returns the entries to check. */
async function checkRuleReferences(
  kv: Deno.Kv,
  actor: Actor,
  accountId: string,
  data: RuleData,
  /** Channel ids the rule already had: kept even when the actor cannot see them. */
  kept: ReadonlySet<string> = new Set(),
  /** Channel entries already read in this attempt (the rule's current channels): not read again. */
  known: ReadonlyMap<string, Deno.KvEntryMaybe<NotificationChannel>> = new Map(),
): Promise<Deno.KvEntryMaybe<unknown>[]> {
  const entries = data.orgIds === "all" ? [] : await getEntries<Org>(kv, data.orgIds.map(orgKey));
  if (data.orgIds !== "all") {
    const bad = entries.some((e) => {
      const org = e.value;
      return !org || org.accountId !== accountId || !inScope(actor, { accountId, orgId: org.id });
    });
    if (bad) {
      throw new ValidationError("Unknown organization", { orgIds: "Choose organizations you can see" });
    }
  }
  const missing = data.channelIds.filter((id) => !known.has(id));
  const fetched = await getEntries<NotificationChannel>(kv, missing.map(channelKey));
  const byId = new Map([...known, ...missing.map((id, i) => [id, fetched[i]] as const)]);
  const channelEntries = data.channelIds.map((id) => byId.get(id)!);
  const badChannel = channelEntries.some((e) =>
    !e.value || e.value.accountId !== accountId ||
    (!inScope(actor, channelScope(e.value)) && !kept.has(e.value.id))
  );
  if (badChannel) {
    throw new ValidationError("Unknown channel", { channelIds: "Choose channels you can see" });
  }
  return [...entries, ...channelEntries] as Deno.KvEntryMaybe<unknown>[];
}

/**
 * The scope of a rule's orgs in `accountId`. Throws ValidationError (field `orgIds`) when they are not all
 * in the actor's scope: an org-scoped operator routes only their orgs' alerts.
 */
function requireRuleOrgsInScope(
  actor: Actor,
  accountId: string,
  data: { orgIds: NotificationRule["orgIds"] },
) {
  const scope = { accountId, orgIds: data.orgIds };
  if (!inScope(actor, scope)) {
    throw new ValidationError("Outside your organizations", {
      orgIds: "Choose only organizations you manage",
    });
  }
  return scope;
}

/** The settings a rule takes from its input (with the channels it keeps). */
function ruleSettings(
  data: z.output<typeof RuleInput>,
  channelIds: string[],
): Pick<NotificationRule, "orgIds" | "name" | "minSeverity" | "events" | "channelIds" | "enabled"> {
  const { orgIds, name, minSeverity, events, enabled } = data;
  return { orgIds, name, minSeverity, events, channelIds, enabled };
}

function summarizeRule(r: NotificationRule, channels: number): string {
  const orgs = r.orgIds === "all" ? "all organizations" : `${r.orgIds.length} organization(s)`;
  return `rule ${r.name}: ${r.minSeverity} and above, ${r.events.join("+")}, ${orgs}, ${channels} channel(s)`;
}

/**
 * Creates a routing rule. Its orgs must be in the actor's scope (an org-scoped operator routes only
 * their orgs' alerts) and its channels visible to the actor. Needs backup.manage over those orgs.
 */
export async function createRule(
  kv: Deno.Kv,
  actor: Actor,
  input: RuleInput,
  now: Date,
): Promise<NotificationRule> {
  const data = RuleInput.parse(input);
  // The rule's orgs are checked against the account below (`ruleEntries`), not resolved from one org.
  const { accountId } = await resolveOwner(kv, actor, { accountId: data.accountId });
  const scope = requireRuleOrgsInScope(actor, accountId, data);
  authorize(actor, "backup.manage", scope);
  await checkAccountLimit(kv, rulesByAccountPrefix(accountId), MAX_RULES_PER_ACCOUNT, "notification rules");
  const refs = await checkRuleReferences(kv, actor, accountId, data);
  const at = now.toISOString();
  const rule: NotificationRule = {
    id: newId(now),
    accountId,
    ...ruleSettings(data, data.channelIds),
    createdAt: at,
    updatedAt: at,
  };
  const op = kv.atomic()
    .check({ key: ruleKey(rule.id), versionstamp: null }, ...refs)
    .set(ruleKey(rule.id), rule)
    .set(rulesByAccountKey(accountId, rule.id), rule.id);
  await commitAudited(
    op,
    actor,
    {
      ...scope,
      action: "notification_rule.create",
      objectType: "notification_rule",
      objectId: rule.id,
      summary: `Created ${summarizeRule(rule, rule.channelIds.length)}`,
    },
    now,
    "A channel or organization changed at the same time; try again",
  );
  return rule;
}

/** Replaces a rule's settings. The actor needs backup.manage over its old and its new orgs. */
export async function updateRule(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: RuleInput,
  now: Date,
): Promise<NotificationRule> {
  const data = RuleInput.parse(input);
  return await changeEntry(kv, actor, RULE, id, async (entry) => {
    const current = entry.value;
    const scope = requireRuleOrgsInScope(actor, current.accountId, data);
    // The form lists only channels the actor can see: keep the others the rule already uses.
    const currentChannels = await getEntries<NotificationChannel>(kv, current.channelIds.map(channelKey));
    const known = new Map(current.channelIds.map((cid, i) => [cid, currentChannels[i]] as const));
    const hidden = currentChannels.flatMap((e) =>
      e.value && !inScope(actor, channelScope(e.value)) ? [e.value.id] : []
    );
    const channelIds = [...new Set([...data.channelIds, ...hidden])].slice(0, 20);
    const refs = await checkRuleReferences(
      kv,
      actor,
      current.accountId,
      { ...data, channelIds },
      new Set(hidden),
      known,
    );
    const next: NotificationRule = {
      ...current,
      ...ruleSettings(data, channelIds),
      updatedAt: now.toISOString(),
    };
    const op = kv.atomic().check(entry, ...refs).set(ruleKey(id), next);
    appendAudit(op, actor, {
      ...scope,
      action: "notification_rule.update",
      objectType: "notification_rule",
      objectId: id,
      summary: `Updated ${summarizeRule(next, next.channelIds.length)}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/** Enables or disables a rule. */
export async function setRuleEnabled(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  enabled: boolean,
  now: Date,
): Promise<NotificationRule> {
  return await setEnabled(kv, actor, RULE, id, enabled, now);
}

/** Deletes a rule; returns what it was. */
export async function deleteRule(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  now: Date,
): Promise<NotificationRule> {
  return await changeEntry(kv, actor, RULE, id, async (entry) => {
    const rule = entry.value;
    const op = kv.atomic().check(entry).delete(ruleKey(id)).delete(rulesByAccountKey(rule.accountId, id));
    appendAudit(op, actor, {
      ...ruleScope(rule),
      action: "notification_rule.delete",
      objectType: "notification_rule",
      objectId: id,
      summary: `Deleted ${RULE.summarize(rule)}`,
    }, now);
    return (await op.commit()).ok ? { value: rule } : null;
  });
}

// ---------------------------------------------------------------------------------------------------
// Routing

const SEVERITY_RANK: Record<AlertSeverity, number> = { info: 0, warning: 1, critical: 2 };

/** True when an alert of `severity` meets a rule's minimum. */
export function meetsSeverity(severity: AlertSeverity, minimum: AlertSeverity): boolean {
  return SEVERITY_RANK[severity] >= SEVERITY_RANK[minimum];
}

/** True when an enabled rule routes the event: its event kind, severity and org all match. */
export function ruleMatches(
  rule: Pick<NotificationRule, "enabled" | "events" | "minSeverity" | "orgIds">,
  event: Pick<AlertEvent, "event" | "severity" | "orgId">,
): boolean {
  if (!rule.enabled || !rule.events.includes(event.event)) return false;
  if (!meetsSeverity(event.severity, rule.minSeverity)) return false;
  // Account-level alerts (an account-scoped engine) belong to no org: only "all" rules route them.
  return rule.orgIds === "all" || (event.orgId !== null && rule.orgIds.includes(event.orgId));
}

/**
 * The channels an event goes to: every enabled channel of every matching enabled rule, once per
 * channel, with the rules that routed it.
 */
export function routeEvent(
  event: Pick<AlertEvent, "accountId" | "event" | "severity" | "orgId">,
  rules: NotificationRule[],
  channels: ReadonlyMap<string, NotificationChannel>,
): Array<{ channel: NotificationChannel; ruleIds: string[] }> {
  const out = new Map<string, { channel: NotificationChannel; ruleIds: string[] }>();
  for (const rule of rules) {
    if (rule.accountId !== event.accountId || !ruleMatches(rule, event)) continue;
    for (const channelId of rule.channelIds) {
      const channel = channels.get(channelId);
      if (!channel?.enabled || channel.accountId !== event.accountId) continue;
      const hit = out.get(channelId) ?? { channel, ruleIds: [] };
      hit.ruleIds.push(rule.id);
      out.set(channelId, hit);
    }
  }
  return [...out.values()];
}

/** An account's rules and the channels its enabled rules use, for `routeEvent`. */
export async function loadRouting(kv: Deno.Kv, accountId: string) {
  const ruleIds = await listAccountIds(kv, rulesByAccountPrefix(accountId));
  const rules = await getManyValues<NotificationRule>(kv, ruleIds.map(ruleKey));
  const channelIds = [...new Set(rules.flatMap((r) => r.enabled ? r.channelIds : []))];
  const channels = await getManyValues<NotificationChannel>(kv, channelIds.map(channelKey));
  return { rules, channels: new Map(channels.map((c) => [c.id, c])) };
}
