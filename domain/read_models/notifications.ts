/**
 * Read models of Backup > Notifications: the overview (channels, rules, delivery log), a channel's page, the
 * rule form and page, and what a channel's deletion would leave without it.
 */
import { type DeliveryFilter, listDeliveries } from "../notification_delivery.ts";
import { listChannels, type NotificationChannel } from "../notification_channels.ts";
import { listRules } from "../notification_rules.ts";
import type { Actor } from "../rbac.ts";
import { listOrgs } from "../tenancy.ts";
import { readPage } from "./paging.ts";

/** The organizations the actor sees (none without an account), and their names by id. */
export async function getNotificationOrgs(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const orgs = actor.accountId ? await listOrgs(kv, actor, actor.accountId) : [];
  return { orgs, names: new Map(orgs.map((o) => [o.id, o.name])) };
}

/** The overview: every channel and rule, and the filter's page of the delivery log. */
export async function getNotificationsOverview(
  kv: Deno.Kv,
  actor: Actor,
  params: { filter: DeliveryFilter },
  now: Date,
) {
  const { filter } = params;
  const [channels, rules, { page, staleCursor }, { names }] = await Promise.all([
    listChannels(kv, actor),
    listRules(kv, actor),
    readPage(filter.cursor, (cursor) => listDeliveries(kv, actor, { ...filter, cursor })),
    getNotificationOrgs(kv, actor, {}, now),
  ]);
  return { channels, rules, page, staleCursor, orgNames: names };
}

/** A channel's page: its deliveries (the filter's page), the org names, and the rules that use it. */
export async function getChannelDetail(
  kv: Deno.Kv,
  actor: Actor,
  params: { channel: NotificationChannel; filter: DeliveryFilter },
  now: Date,
) {
  const { filter } = params;
  const [{ page, staleCursor }, { names }, rules] = await Promise.all([
    readPage(filter.cursor, (cursor) => listDeliveries(kv, actor, { ...filter, cursor })),
    getNotificationOrgs(kv, actor, {}, now),
    listRules(kv, actor),
  ]);
  return {
    page,
    staleCursor,
    orgNames: names,
    usedBy: rules.filter((r) => r.channelIds.includes(params.channel.id)).map((r) => r.name),
  };
}

/** The rules that send to a channel (its delete confirmation lists them). */
export async function getChannelUsers(
  kv: Deno.Kv,
  actor: Actor,
  params: { channel: NotificationChannel },
  _now: Date,
) {
  return (await listRules(kv, actor)).filter((r) => r.channelIds.includes(params.channel.id));
}

/** The rule form and page: the organizations and every channel a rule may send to. */
export async function getRuleForm(kv: Deno.Kv, actor: Actor, _params: unknown, now: Date) {
  const [{ orgs, names }, channels] = await Promise.all([
    getNotificationOrgs(kv, actor, {}, now),
    listChannels(kv, actor),
  ]);
  return { orgs, orgNames: names, channels };
}
