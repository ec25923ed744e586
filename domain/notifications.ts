/**
 * Alert notifications: channels (signed JSON webhooks, SMTP email) with their secrets in the vault,
 * routing rules (minimum severity, orgs, events), and delivery. Alerts write `AlertEvent`s into a
 * transactional outbox (alerts.ts); `dispatchAlertEvents` turns each event into one delivery per routed
 * channel — a job table in KV with a due-time index, no `kv.enqueue` — and `deliverDue` sends what is
 * due under a lease, retrying failures with exponential backoff. Every attempt is kept for the log.
 */
import { createHmac } from "node:crypto";
import { encodeTime } from "ulid";
import { z } from "zod";
import {
  type Alert,
  ALERT_SEVERITIES,
  type AlertEvent,
  alertEventKey,
  alertKey,
  type AlertSeverity,
} from "./alerts.ts";
import { appendAudit } from "./audit.ts";
import { CursorField, CursorList } from "./cursor.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { newId, randomToken } from "./ids.ts";
import { getManyValues, type Page, withRetry } from "./kv.ts";
import { type Actor, authorize, inScope, type ScopedObject } from "./rbac.ts";
import {
  sendMail,
  SMTP_TLS_MODES,
  type SmtpConnector,
  smtpConnector,
  SmtpError,
  type SmtpTlsMode,
} from "./smtp.ts";
import { orgKey, resolveOwner } from "./tenancy.ts";
import type { Org, OrgScope } from "./types.ts";
import { DisplayName } from "./validation.ts";
import { countDeliveryChange } from "./ops_counters.ts";
import { openSecret, sealSecret, vaultKey, type VaultRecord } from "./vault.ts";
import {
  channelKey,
  channelsByAccountKey,
  deliveriesByAccountKey,
  deliveriesByChannelKey,
  deliveryDueKey,
  deliveryKey,
  ruleKey,
  rulesByAccountKey,
} from "./keys/notifications.ts";
export {
  channelKey,
  channelsByAccountKey,
  deliveriesByAccountKey,
  deliveriesByChannelKey,
  deliveryDueKey,
  deliveryKey,
  ruleKey,
  rulesByAccountKey,
};

export { SMTP_TLS_MODES, type SmtpTlsMode };

export const CHANNEL_TYPES = ["webhook", "email"] as const;
export type ChannelType = (typeof CHANNEL_TYPES)[number];
export const CHANNEL_TYPE_LABELS: Record<ChannelType, string> = { webhook: "Webhook", email: "Email (SMTP)" };
export const SMTP_TLS_LABELS: Record<SmtpTlsMode, string> = {
  none: "None (plain text)",
  starttls: "STARTTLS",
  tls: "Implicit TLS",
};
export const NOTIFICATION_EVENTS = ["opened", "resolved"] as const;
export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];
export const DELIVERY_STATUSES = ["pending", "delivered", "failed"] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/**
 * Delay before attempt n+1 after n failed attempts (1, 2, 4, 8, 16 minutes).
 * Retry glossary: the **delivery backoff** (README › Architecture › "Retry: six meanings").
 */
export const BACKOFF_MINUTES = [1, 2, 4, 8, 16] as const;
/** Attempts before a delivery is given up as failed. */
export const MAX_ATTEMPTS = BACKOFF_MINUTES.length + 1;
/** How long a claimed delivery stays with its sender; longer than any send can take. */
export const LEASE_MS = 2 * 60_000;
export const WEBHOOK_TIMEOUT_MS = 10_000;
export const SMTP_TIMEOUT_MS = 30_000;
/** Finished deliveries older than this are purged from the log. */
export const DELIVERY_RETENTION_MS = 30 * 86_400_000;
export const MAX_CHANNELS_PER_ACCOUNT = 50;
export const MAX_RULES_PER_ACCOUNT = 50;
/** Header names of a signed webhook. */
export const SIGNATURE_HEADER = "X-Cadres-Signature";
export const TIMESTAMP_HEADER = "X-Cadres-Timestamp";

// ---------------------------------------------------------------------------------------------------
// Entities and keys

interface ChannelBase {
  id: string;
  accountId: string;
  /** The owning organization; null for an account-level channel. */
  orgId: string | null;
  name: string;
  enabled: boolean;
  createdAt: string;
  updatedAt: string;
}

export interface WebhookChannel extends ChannelBase {
  type: "webhook";
  url: string;
  /** Vault record of the HMAC signing secret. */
  secretId: string;
  secretSetAt: string;
}

export interface EmailChannel extends ChannelBase {
  type: "email";
  host: string;
  port: number;
  tlsMode: SmtpTlsMode;
  username: string;
  /** Vault record of the SMTP password, when the server needs one. */
  passwordId: string | null;
  from: string;
  to: string[];
}

export type NotificationChannel = WebhookChannel | EmailChannel;

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

/** What a notification says; the webhook body and the email are built from it. */
export interface NotificationPayload {
  event: NotificationEvent | "test";
  alertId: string | null;
  accountId: string;
  orgId: string | null;
  subject: { type: string; id: string; name: string } | null;
  reason: string | null;
  severity: AlertSeverity;
  message: string;
  /** How many times the condition was raised while the alert was open. */
  count: number;
  occurredAt: string;
  openedAt: string | null;
  resolvedAt: string | null;
}

export interface DeliveryAttempt {
  number: number;
  at: string;
  ok: boolean;
  durationMs: number;
  httpStatus: number | null;
  smtpReply: string | null;
  error: string | null;
}

export interface NotificationDelivery {
  id: string;
  accountId: string;
  /** The org of the alert (what the content is about); readers need it in scope, and the channel's. */
  orgId: string | null;
  channelId: string;
  channelName: string;
  channelType: ChannelType;
  channelOrgId: string | null;
  ruleIds: string[];
  payload: NotificationPayload;
  status: DeliveryStatus;
  attempts: DeliveryAttempt[];
  /** When the next attempt is due (pending only). */
  nextAttemptAt: string | null;
  /** While a sender holds it: until when. */
  leaseUntil: string | null;
  /** The time component of this delivery's current due-index key (pending only). */
  dueMs: number | null;
  createdAt: string;
  updatedAt: string;
}

/** Every key of a delivery but the due index (which moves with each attempt). */
function deliveryKeys(d: Pick<NotificationDelivery, "id" | "accountId" | "channelId">): Deno.KvKey[] {
  return [
    deliveryKey(d.id),
    deliveriesByAccountKey(d.accountId, d.id),
    deliveriesByChannelKey(d.channelId, d.id),
  ];
}

/** Adds a new delivery with its indexes (and its due-index entry while pending) to `op`. */
function setDelivery(op: Deno.AtomicOperation, d: NotificationDelivery): Deno.AtomicOperation {
  const [primary, byAccount, byChannel] = deliveryKeys(d);
  op.set(primary, d).set(byAccount, d.id).set(byChannel, d.id);
  if (d.dueMs !== null) op.set(deliveryDueKey(d.dueMs, d.id), d.id);
  countDeliveryChange(op, d.accountId, null, d.status);
  return op;
}

export function channelScope(c: Pick<NotificationChannel, "accountId" | "orgId">): ScopedObject {
  return { accountId: c.accountId, orgId: c.orgId };
}
export function ruleScope(r: Pick<NotificationRule, "accountId" | "orgIds">): ScopedObject {
  return { accountId: r.accountId, orgIds: r.orgIds };
}
/** A delivery is visible to those who may see both its alert and its channel. */
function deliveryVisible(actor: Actor, d: NotificationDelivery): boolean {
  return inScope(actor, { accountId: d.accountId, orgId: d.orgId }) &&
    inScope(actor, { accountId: d.accountId, orgId: d.channelOrgId });
}

/** A webhook URL as shown to viewers and in audit summaries: the path may carry a token, so only the origin. */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return u.origin + (u.pathname === "/" && !u.search ? "" : "/…");
  } catch {
    return "(invalid URL)";
  }
}

/**
 * A channel as the JSON API returns it: a webhook's URL as its origin only (the path may carry a token),
 * and whether an SMTP password is stored — never a secret, and no vault ids.
 */
export function toPublicChannel(c: NotificationChannel) {
  const base = {
    id: c.id,
    accountId: c.accountId,
    orgId: c.orgId,
    type: c.type,
    name: c.name,
    enabled: c.enabled,
    createdAt: c.createdAt,
    updatedAt: c.updatedAt,
  };
  return c.type === "webhook" ? { ...base, url: displayUrl(c.url), secretSetAt: c.secretSetAt } : {
    ...base,
    host: c.host,
    port: c.port,
    tlsMode: c.tlsMode,
    username: c.username,
    hasPassword: c.passwordId !== null,
    from: c.from,
    to: c.to,
  };
}

// ---------------------------------------------------------------------------------------------------
// Input schemas (one source of truth for forms, JSON and the domain)

const Id = z.string().trim().min(1).max(40);
/** "" means account-level. */
const OwnerOrg = z.union([z.literal("").transform(() => null), Id]).nullable().default(null);

const WebhookUrl = z.url({ protocol: /^https?$/, error: "must be an http:// or https:// URL" })
  .max(2000, "must be at most 2000 characters");
const SigningSecret = z.string().min(16, "must be at least 16 characters").max(
  256,
  "must be at most 256 characters",
)
  .regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces");
const SmtpHost = z.string({ error: "is required" }).trim().min(1, "is required").max(253, "is too long")
  .refine(
    (v) =>
      z.ipv4().safeParse(v).success || z.ipv6().safeParse(v).success ||
      /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(v),
    "must be a hostname or IP address",
  );
const Port = z.coerce.number({ error: "must be a port number 1–65535" }).int("must be a whole number")
  .min(1, "must be a port number 1–65535").max(65535, "must be a port number 1–65535");
const EmailAddress = z.email({ error: "must be an email address" }).max(254, "is too long");
const Recipients = z.array(z.string().trim()).transform((list) => [...new Set(list.filter(Boolean))])
  .superRefine((list, ctx) => {
    if (!list.length) ctx.addIssue({ code: "custom", message: "needs at least one address" });
    if (list.length > 20) ctx.addIssue({ code: "custom", message: "may list at most 20 addresses" });
    const bad = list.find((a) => !EmailAddress.safeParse(a).success);
    if (bad) ctx.addIssue({ code: "custom", message: `"${bad.slice(0, 80)}" is not an email address` });
  });

const WebhookFields = z.object({
  type: z.literal("webhook"),
  name: DisplayName,
  url: WebhookUrl,
  /** The HMAC secret; generated when missing on create, kept when missing on update. */
  secret: SigningSecret.optional(),
  /** On update: replace the secret with a newly generated one (shown once). */
  rotateSecret: z.boolean().default(false),
});
const EmailFields = z.object({
  type: z.literal("email"),
  name: DisplayName,
  host: SmtpHost,
  port: Port,
  tlsMode: z.enum(SMTP_TLS_MODES, { error: "must be none, starttls or tls" }),
  username: z.string().trim().max(200, "must be at most 200 characters").regex(
    /^[^\p{Cc}]*$/u,
    "must not contain control characters",
  ).default(""),
  /** Kept when missing on update. */
  password: z.string().min(1).max(500, "must be at most 500 characters").optional(),
  /** On update: forget the stored password. */
  clearPassword: z.boolean().default(false),
  from: EmailAddress,
  to: Recipients,
});
const Owner = {
  /** The owning organization; null (or "") for an account-level channel. */
  orgId: OwnerOrg,
  /** Needed only for system actors (CLI, jobs); users create in their own account. */
  accountId: Id.optional(),
  enabled: z.boolean().default(true),
};

/** A new channel: its type's fields plus the owner. */
export const ChannelCreateInput = z.discriminatedUnion("type", [
  WebhookFields.extend(Owner),
  EmailFields.extend(Owner),
], { error: "must be webhook or email" });
export type ChannelCreateInput = z.input<typeof ChannelCreateInput>;

/**
 * An edit of a channel: the same fields; the type and owner never change. A webhook URL may carry a
 * token, so the edit form never shows it: an empty or missing URL keeps the stored one.
 */
export const ChannelUpdateInput = z.discriminatedUnion("type", [
  WebhookFields.extend({
    url: z.union([z.literal("").transform(() => undefined), WebhookUrl]).optional(),
  }),
  EmailFields,
], {
  error: "must be webhook or email",
});
export type ChannelUpdateInput = z.input<typeof ChannelUpdateInput>;

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

// ---------------------------------------------------------------------------------------------------
// Channels

/** What channel and rule CRUD share: how an object is keyed, scoped, named and summarized. */
interface Kind<T extends { id: string; name: string; enabled: boolean }> {
  label: string;
  objectType: "notification_channel" | "notification_rule";
  key: (id: string) => Deno.KvKey;
  scope: (o: T) => ScopedObject;
  summarize: (o: T) => string;
}

const CHANNEL: Kind<NotificationChannel> = {
  label: "Notification channel",
  objectType: "notification_channel",
  key: channelKey,
  scope: channelScope,
  summarize: (c) => summarizeChannel(c),
};

const RULE: Kind<NotificationRule> = {
  label: "Notification rule",
  objectType: "notification_rule",
  key: ruleKey,
  scope: ruleScope,
  summarize: (r) => `notification rule ${r.name}`,
};

/** The object's entry if the actor may see it; throws NotFoundError otherwise. */
async function requireEntry<T extends { id: string; name: string; enabled: boolean }>(
  kv: Deno.Kv,
  actor: Actor,
  kind: Kind<T>,
  id: string,
): Promise<Deno.KvEntry<T>> {
  const entry = await kv.get<T>(kind.key(id));
  if (!entry.value || !inScope(actor, kind.scope(entry.value))) {
    throw new NotFoundError(`${kind.label} ${id} not found`);
  }
  return entry as Deno.KvEntry<T>;
}

/** As `requireEntry`, then backup.manage on the object: the start of every change. */
async function entryForChange<T extends { id: string; name: string; enabled: boolean }>(
  kv: Deno.Kv,
  actor: Actor,
  kind: Kind<T>,
  id: string,
): Promise<Deno.KvEntry<T>> {
  const entry = await requireEntry(kv, actor, kind, id);
  authorize(actor, "backup.manage", kind.scope(entry.value));
  return entry;
}

/** Enables or disables a channel or rule, with its audit entry, in one atomic operation. */
async function setEnabled<T extends { id: string; name: string; enabled: boolean; updatedAt: string }>(
  kv: Deno.Kv,
  actor: Actor,
  kind: Kind<T>,
  id: string,
  enabled: boolean,
  now: Date,
): Promise<T> {
  return await withRetry(async () => {
    const entry = await entryForChange(kv, actor, kind, id);
    const current = entry.value;
    if (current.enabled === enabled) return { value: current };
    const next: T = { ...current, enabled, updatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(entry.key, next);
    appendAudit(op, actor, {
      ...kind.scope(current),
      action: `${kind.objectType}.${enabled ? "enable" : "disable"}`,
      objectType: kind.objectType,
      objectId: id,
      summary: `${enabled ? "Enabled" : "Disabled"} ${kind.summarize(current)}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/** `kv.getMany` for any number of keys (it takes at most 10 at a time). */
async function getEntries<T>(kv: Deno.Kv, keys: Deno.KvKey[]): Promise<Deno.KvEntryMaybe<T>[]> {
  const entries: Deno.KvEntryMaybe<T>[] = [];
  for (let i = 0; i < keys.length; i += 10) {
    entries.push(...await kv.getMany<T[]>(keys.slice(i, i + 10)));
  }
  return entries;
}

export async function getChannel(kv: Deno.Kv, id: string): Promise<NotificationChannel | null> {
  return (await kv.get<NotificationChannel>(channelKey(id))).value;
}

/** Returns the channel if the actor may see it; throws NotFoundError otherwise. */
export async function requireChannel(kv: Deno.Kv, actor: Actor, id: string): Promise<NotificationChannel> {
  return (await requireEntry(kv, actor, CHANNEL, id)).value;
}

async function listAccountIds(kv: Deno.Kv, prefix: Deno.KvKey): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of kv.list<string>({ prefix })) ids.push(e.value);
  return ids;
}

/** Channels of the actor's account in scope, by name. */
export async function listChannels(kv: Deno.Kv, actor: Actor): Promise<NotificationChannel[]> {
  if (!actor.accountId) return [];
  const ids = await listAccountIds(kv, ["notification_channels_by_account", actor.accountId]);
  return (await getManyValues<NotificationChannel>(kv, ids.map(channelKey)))
    .filter((c) => inScope(actor, channelScope(c)))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function summarizeChannel(c: NotificationChannel): string {
  return c.type === "webhook"
    ? `webhook channel ${c.name} (${displayUrl(c.url)})`
    : `email channel ${c.name} (${c.host}:${c.port}, ${c.tlsMode}, to ${c.to.join(", ")})`.slice(0, 300);
}

async function sealChannelSecret(
  masterKey: Uint8Array,
  channel: Pick<NotificationChannel, "id" | "accountId" | "orgId">,
  plaintext: string,
  now: Date,
): Promise<VaultRecord> {
  return await sealSecret(masterKey, {
    id: newId(now),
    accountId: channel.accountId,
    orgId: channel.orgId,
    purpose: `notification_channel:${channel.id}`,
    createdAt: now.toISOString(),
  }, plaintext);
}

/** A new webhook signing secret: 32 random bytes, prefixed so it is recognizable in a receiver's config. */
export function generateSigningSecret(): string {
  return `whsec_${randomToken(32)}`;
}

/**
 * Creates a channel in an organization (or at the account level), its secret sealed in the vault in
 * the same atomic operation. A webhook created without a secret gets a generated one, returned here
 * once as `generatedSecret` and never again. Needs backup.manage there. Throws ValidationError.
 */
export async function createChannel(
  kv: Deno.Kv,
  actor: Actor,
  input: ChannelCreateInput,
  options: { now: Date; masterKey: Uint8Array },
): Promise<{ channel: NotificationChannel; generatedSecret: string | null }> {
  const data = ChannelCreateInput.parse(input);
  const { now, masterKey } = options;
  const { accountId, orgEntry } = await resolveOwner(kv, actor, data);
  const scope = { accountId, orgId: data.orgId };
  authorize(actor, "backup.manage", scope);
  const existing = await listAccountIds(kv, ["notification_channels_by_account", accountId]);
  if (existing.length >= MAX_CHANNELS_PER_ACCOUNT) {
    throw new ValidationError(
      `An account may have at most ${MAX_CHANNELS_PER_ACCOUNT} notification channels`,
    );
  }
  if (data.type === "email" && data.username && !data.password) {
    throw new ValidationError("A username needs a password", { password: "Is required with a username" });
  }
  const at = now.toISOString();
  const id = newId(now);
  const base = {
    id,
    accountId,
    orgId: data.orgId,
    name: data.name,
    enabled: data.enabled,
    createdAt: at,
    updatedAt: at,
  };
  let channel: NotificationChannel;
  let vault: VaultRecord | null = null;
  let generatedSecret: string | null = null;
  if (data.type === "webhook") {
    const secret = data.secret ?? generateSigningSecret();
    if (!data.secret) generatedSecret = secret;
    vault = await sealChannelSecret(masterKey, base, secret, now);
    channel = { ...base, type: "webhook", url: data.url, secretId: vault.id, secretSetAt: at };
  } else {
    if (data.username && data.password) vault = await sealChannelSecret(masterKey, base, data.password, now);
    channel = {
      ...base,
      type: "email",
      host: data.host,
      port: data.port,
      tlsMode: data.tlsMode,
      username: data.username,
      passwordId: vault?.id ?? null,
      from: data.from,
      to: data.to,
    };
  }
  const op = kv.atomic()
    .check({ key: channelKey(id), versionstamp: null })
    .set(channelKey(id), channel)
    .set(channelsByAccountKey(accountId, id), id);
  if (vault) op.set(vaultKey(vault.id), vault);
  if (orgEntry) op.check(orgEntry);
  appendAudit(op, actor, {
    ...scope,
    action: "notification_channel.create",
    objectType: "notification_channel",
    objectId: id,
    summary: `Created ${summarizeChannel(channel)}${vault ? "; secret stored in the vault" : ""}`,
  }, now);
  if (!(await op.commit()).ok) {
    throw new ConflictError("The organization changed at the same time; try again");
  }
  return { channel, generatedSecret };
}

/**
 * Updates a channel's settings; a new secret or password replaces the stored one (rotation),
 * `rotateSecret` generates a webhook secret returned once. The type and owner never change.
 */
export async function updateChannel(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: ChannelUpdateInput,
  options: { now: Date; masterKey: Uint8Array },
): Promise<{ channel: NotificationChannel; generatedSecret: string | null }> {
  const data = ChannelUpdateInput.parse(input);
  const { now, masterKey } = options;
  return await withRetry(async () => {
    const entry = await entryForChange(kv, actor, CHANNEL, id);
    const current = entry.value;
    const at = now.toISOString();
    const op = kv.atomic().check(entry);
    const notes: string[] = [];
    let next: NotificationChannel;
    let generatedSecret: string | null = null;
    if (data.type === "webhook" && current.type === "webhook") {
      next = { ...current, name: data.name, url: data.url ?? current.url, updatedAt: at };
      if (data.url && data.url !== current.url) notes.push("changed the URL");
      const secret = data.rotateSecret ? generateSigningSecret() : data.secret;
      if (secret) {
        const vault = await sealChannelSecret(masterKey, current, secret, now);
        op.delete(vaultKey(current.secretId)).set(vaultKey(vault.id), vault);
        next = { ...next, secretId: vault.id, secretSetAt: at };
        if (data.rotateSecret) generatedSecret = secret;
        notes.push("rotated the signing secret");
      }
    } else if (data.type === "email" && current.type === "email") {
      next = {
        ...current,
        name: data.name,
        host: data.host,
        port: data.port,
        tlsMode: data.tlsMode,
        username: data.username,
        from: data.from,
        to: data.to,
        updatedAt: at,
      };
      if ((data.clearPassword || !data.username) && current.passwordId) {
        op.delete(vaultKey(current.passwordId));
        next = { ...next, passwordId: null };
        notes.push("removed the SMTP password");
      } else if (data.password && data.username) {
        const vault = await sealChannelSecret(masterKey, current, data.password, now);
        if (current.passwordId) op.delete(vaultKey(current.passwordId));
        op.set(vaultKey(vault.id), vault);
        next = { ...next, passwordId: vault.id };
        notes.push(current.passwordId ? "replaced the SMTP password" : "added an SMTP password");
      }
      if (next.username && !next.passwordId) {
        throw new ValidationError("A username needs a password", { password: "Is required with a username" });
      }
    } else {
      throw new ValidationError("The type of a channel cannot change", { type: "Cannot change" });
    }
    op.set(channelKey(id), next);
    appendAudit(op, actor, {
      ...channelScope(current),
      action: "notification_channel.update",
      objectType: "notification_channel",
      objectId: id,
      summary: `Updated ${summarizeChannel(next)}${notes.length ? "; " + notes.join(", ") : ""}`,
    }, now);
    return (await op.commit()).ok ? { value: { channel: next, generatedSecret } } : null;
  });
}

/** Enables or disables a channel (a disabled channel receives nothing; pending sends fail). */
export async function setChannelEnabled(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  enabled: boolean,
  now: Date,
): Promise<NotificationChannel> {
  return await setEnabled(kv, actor, CHANNEL, id, enabled, now);
}

/**
 * Deletes a channel with its vault secret, and removes it from the rules that use it, in one atomic
 * operation. Its delivery log stays; pending deliveries to it fail at their next attempt.
 */
export async function deleteChannel(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  now: Date,
): Promise<NotificationChannel> {
  return await withRetry(async () => {
    const entry = await entryForChange(kv, actor, CHANNEL, id);
    const channel = entry.value;
    const ruleIds = await listAccountIds(kv, ["notification_rules_by_account", channel.accountId]);
    const ruleEntries = await getEntries<NotificationRule>(kv, ruleIds.map(ruleKey));
    const op = kv.atomic().check(entry)
      .delete(channelKey(id))
      .delete(channelsByAccountKey(channel.accountId, id));
    if (channel.type === "webhook") op.delete(vaultKey(channel.secretId));
    if (channel.type === "email" && channel.passwordId) op.delete(vaultKey(channel.passwordId));
    let detached = 0;
    for (const r of ruleEntries) {
      if (!r.value?.channelIds.includes(id)) continue;
      op.check(r).set(r.key, { ...r.value, channelIds: r.value.channelIds.filter((c) => c !== id) });
      detached++;
    }
    appendAudit(op, actor, {
      ...channelScope(channel),
      action: "notification_channel.delete",
      objectType: "notification_channel",
      objectId: id,
      summary: `Deleted ${summarizeChannel(channel)} and its vault secret` +
        (detached ? `; removed it from ${detached} rule${detached === 1 ? "" : "s"}` : ""),
    }, now);
    return (await op.commit()).ok ? { value: channel } : null;
  });
}

// ---------------------------------------------------------------------------------------------------
// Rules

/** Returns the rule if the actor may see it (its whole org scope); throws NotFoundError otherwise. */
export async function requireRule(kv: Deno.Kv, actor: Actor, id: string): Promise<NotificationRule> {
  return (await requireEntry(kv, actor, RULE, id)).value;
}

/** Rules of the actor's account in scope, by name. */
export async function listRules(kv: Deno.Kv, actor: Actor): Promise<NotificationRule[]> {
  if (!actor.accountId) return [];
  const ids = await listAccountIds(kv, ["notification_rules_by_account", actor.accountId]);
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
  const scope = { accountId, orgIds: data.orgIds };
  if (!inScope(actor, scope)) {
    throw new ValidationError("Outside your organizations", {
      orgIds: "Choose only organizations you manage",
    });
  }
  authorize(actor, "backup.manage", scope);
  const existing = await listAccountIds(kv, ["notification_rules_by_account", accountId]);
  if (existing.length >= MAX_RULES_PER_ACCOUNT) {
    throw new ValidationError(`An account may have at most ${MAX_RULES_PER_ACCOUNT} notification rules`);
  }
  const refs = await checkRuleReferences(kv, actor, accountId, data);
  const at = now.toISOString();
  const rule: NotificationRule = {
    id: newId(now),
    accountId,
    orgIds: data.orgIds,
    name: data.name,
    minSeverity: data.minSeverity,
    events: data.events,
    channelIds: data.channelIds,
    enabled: data.enabled,
    createdAt: at,
    updatedAt: at,
  };
  const op = kv.atomic()
    .check({ key: ruleKey(rule.id), versionstamp: null }, ...refs)
    .set(ruleKey(rule.id), rule)
    .set(rulesByAccountKey(accountId, rule.id), rule.id);
  appendAudit(op, actor, {
    ...scope,
    action: "notification_rule.create",
    objectType: "notification_rule",
    objectId: rule.id,
    summary: `Created ${summarizeRule(rule, rule.channelIds.length)}`,
  }, now);
  if (!(await op.commit()).ok) {
    throw new ConflictError("A channel or organization changed at the same time; try again");
  }
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
  return await withRetry(async () => {
    const entry = await entryForChange(kv, actor, RULE, id);
    const current = entry.value;
    const scope = { accountId: current.accountId, orgIds: data.orgIds };
    if (!inScope(actor, scope)) {
      throw new ValidationError("Outside your organizations", {
        orgIds: "Choose only organizations you manage",
      });
    }
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
      orgIds: data.orgIds,
      name: data.name,
      minSeverity: data.minSeverity,
      events: data.events,
      channelIds,
      enabled: data.enabled,
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
  return await withRetry(async () => {
    const entry = await entryForChange(kv, actor, RULE, id);
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
// Routing and dispatch

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

async function loadRouting(kv: Deno.Kv, accountId: string) {
  const ruleIds = await listAccountIds(kv, ["notification_rules_by_account", accountId]);
  const rules = await getManyValues<NotificationRule>(kv, ruleIds.map(ruleKey));
  const channelIds = [...new Set(rules.flatMap((r) => r.enabled ? r.channelIds : []))];
  const channels = await getManyValues<NotificationChannel>(kv, channelIds.map(channelKey));
  return { rules, channels: new Map(channels.map((c) => [c.id, c])) };
}

function payloadOf(event: AlertEvent, alert: Alert | null): NotificationPayload {
  return {
    event: event.event,
    alertId: event.alertId,
    accountId: event.accountId,
    orgId: event.orgId,
    subject: { type: event.subjectType, id: event.subjectId, name: event.subjectName },
    reason: event.reason,
    severity: event.severity,
    message: event.message,
    count: event.count,
    occurredAt: event.at,
    openedAt: alert?.openedAt ?? (event.event === "opened" ? event.at : null),
    resolvedAt: event.event === "resolved" ? (alert?.resolvedAt ?? event.at) : null,
  };
}

/** A new pending delivery, due at `now`. */
function newDelivery(
  channel: NotificationChannel,
  payload: NotificationPayload,
  ruleIds: string[],
  now: Date,
): NotificationDelivery {
  const at = now.toISOString();
  return {
    id: newId(now),
    accountId: channel.accountId,
    orgId: payload.orgId,
    channelId: channel.id,
    channelName: channel.name,
    channelType: channel.type,
    channelOrgId: channel.orgId,
    ruleIds,
    payload,
    status: "pending",
    attempts: [],
    nextAttemptAt: at,
    leaseUntil: null,
    dueMs: now.getTime(),
    createdAt: at,
    updatedAt: at,
  };
}

/** Deliveries written per event at most (4 keys each, well under the 1000-mutation limit). */
const MAX_DELIVERIES_PER_EVENT = 100;

/**
 * Turns each outbox event into one pending delivery per routed channel and deletes the event, in one
 * atomic operation checked on the event: safe to run concurrently (the loser's check fails) and to
 * re-run (a handled event is gone). Returns how many events and deliveries it handled.
 */
export async function dispatchAlertEvents(
  kv: Deno.Kv,
  now: Date,
  options: { maxEvents?: number } = {},
): Promise<{ events: number; deliveries: number }> {
  const maxEvents = options.maxEvents ?? 1000;
  const routing = new Map<string, Awaited<ReturnType<typeof loadRouting>>>();
  let events = 0;
  let deliveries = 0;
  for await (const entry of kv.list<AlertEvent>({ prefix: ["alert_events"] }, { limit: maxEvents })) {
    const event = entry.value;
    let accountRouting = routing.get(event.accountId);
    if (!accountRouting) {
      accountRouting = await loadRouting(kv, event.accountId);
      routing.set(event.accountId, accountRouting);
    }
    const routes = routeEvent(event, accountRouting.rules, accountRouting.channels)
      .slice(0, MAX_DELIVERIES_PER_EVENT);
    const alert = routes.length ? (await kv.get<Alert>(alertKey(event.alertId))).value : null;
    const payload = payloadOf(event, alert);
    const op = kv.atomic().check(entry).delete(alertEventKey(event.id));
    for (const { channel, ruleIds } of routes) {
      setDelivery(op, newDelivery(channel, payload, ruleIds, now));
    }
    if ((await op.commit()).ok) {
      events++;
      deliveries += routes.length;
    }
  }
  return { events, deliveries };
}

// ---------------------------------------------------------------------------------------------------
// Sending

/**
 * Delay before the next attempt after `failed` failed attempts, or null when the delivery gives up.
 * Retry glossary: the **delivery backoff** (README › Architecture › "Retry: six meanings").
 */
export function nextBackoffMs(failed: number): number | null {
  if (failed >= MAX_ATTEMPTS) return null;
  return BACKOFF_MINUTES[Math.max(1, failed) - 1] * 60_000;
}

/** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, the value of X-Cadres-Signature. */
export function signWebhook(secret: string, timestamp: string, body: string): string {
  return "sha256=" + createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

/** The JSON body of a webhook attempt. */
export function webhookBody(
  delivery: Pick<NotificationDelivery, "id" | "payload">,
  attempt: number,
  now: Date,
  baseUrl?: string,
): string {
  const p = delivery.payload;
  return JSON.stringify({
    deliveryId: delivery.id,
    event: p.event,
    alertId: p.alertId,
    accountId: p.accountId,
    orgId: p.orgId,
    subject: p.subject,
    reason: p.reason,
    severity: p.severity,
    message: p.message,
    count: p.count,
    occurredAt: p.occurredAt,
    openedAt: p.openedAt,
    resolvedAt: p.resolvedAt,
    sentAt: now.toISOString(),
    attempt,
    ...(baseUrl ? { url: `${baseUrl}/backup/alerts` } : {}),
  });
}

const REASON_LABELS: Record<string, string> = {
  engine_offline: "engine offline",
  engine_degraded: "engine degraded",
  storage_warning: "storage needs attention",
  storage_critical: "storage critical",
  storage_full_soon: "storage full within 14 days",
  host_offline: "host offline",
  backup_failed: "backup failed",
  rpo_breach: "RPO breached",
  invariant_violation: "stored data inconsistent",
  drill_failed: "restore drill failed",
  rto_breach: "RTO objective breached",
  suspicious_change: "suspicious change (possible ransomware)",
};

/** The subject line and plain-text body of a notification email. */
export function emailContent(
  delivery: Pick<NotificationDelivery, "id" | "payload" | "channelName">,
  baseUrl?: string,
): { subject: string; text: string } {
  const p = delivery.payload;
  const what = p.subject ? `${p.subject.name}: ${REASON_LABELS[p.reason ?? ""] ?? p.reason}` : p.message;
  const subject = p.event === "test"
    ? `[Cadres] Test notification for ${delivery.channelName}`
    : p.event === "resolved"
    ? `[Cadres] RESOLVED ${what}`
    : `[Cadres] ${p.severity.toUpperCase()} ${what}`;
  const lines = [
    p.event === "test"
      ? "This is a test notification from Cadres Backup."
      : `Alert ${p.event} (${p.severity})`,
    "",
    p.message,
    "",
  ];
  if (p.subject) {
    lines.push(`Subject:    ${p.subject.type.replaceAll("_", " ")} ${p.subject.name} (${p.subject.id})`);
  }
  if (p.reason) lines.push(`Reason:     ${p.reason}`);
  lines.push(`Severity:   ${p.severity}`);
  if (p.alertId) lines.push(`Raised:     ${p.count} time${p.count === 1 ? "" : "s"}`);
  if (p.openedAt) lines.push(`Opened:     ${p.openedAt}`);
  if (p.resolvedAt) lines.push(`Resolved:   ${p.resolvedAt}`);
  lines.push(`Event time: ${p.occurredAt}`);
  if (p.alertId) lines.push(`Alert id:   ${p.alertId}`);
  lines.push(`Delivery:   ${delivery.id}`);
  if (baseUrl) lines.push("", `Alerts: ${baseUrl}/backup/alerts`);
  return { subject: subject.replace(/[\r\n]+/g, " ").slice(0, 200), text: lines.join("\n") + "\n" };
}

/** How deliveries reach the outside world; tests inject loopback servers' clients. */
export interface NotificationTransports {
  fetch: typeof fetch;
  smtp: SmtpConnector;
}

export interface SendOptions {
  masterKey: Uint8Array;
  transports?: Partial<NotificationTransports>;
  /** Public URL of the app, for a link in notifications. */
  baseUrl?: string;
  webhookTimeoutMs?: number;
  smtpTimeoutMs?: number;
}

async function readVault(kv: Deno.Kv, masterKey: Uint8Array, id: string): Promise<string | null> {
  const record = (await kv.get<VaultRecord>(vaultKey(id))).value;
  return record ? await openSecret(masterKey, record) : null;
}

function errorLine(error: unknown, url?: string): string {
  let text = error instanceof Error ? error.message : String(error);
  // fetch says only "fetch failed"; the reason (refused, DNS, TLS) is its cause.
  const cause = error instanceof Error ? error.cause : undefined;
  if (cause instanceof Error && cause.message) text += `: ${cause.message}`;
  // Network errors quote the URL, whose path may carry a token.
  if (url) {
    text = text.replaceAll(url, displayUrl(url));
    if (URL.canParse(url)) text = text.replaceAll(new URL(url).href, displayUrl(url));
  }
  return text.split("\n")[0].slice(0, 300);
}

/** The start of a response body (for the error line), without reading a large body to its end. */
async function readSnippet(res: Response): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (text.length < 1000) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } catch {
    // A body cut short (or timed out) still leaves the status to report.
  } finally {
    reader.cancel().catch(() => {});
  }
  return text;
}

/** Makes one attempt to send `delivery` through `channel`; never throws. */
async function attempt(
  kv: Deno.Kv,
  delivery: NotificationDelivery,
  channel: NotificationChannel,
  number: number,
  now: Date,
  options: SendOptions,
): Promise<DeliveryAttempt> {
  const started = performance.now();
  const result = (fields: Partial<DeliveryAttempt> & { ok: boolean }): DeliveryAttempt => ({
    number,
    at: now.toISOString(),
    durationMs: Math.round(performance.now() - started),
    httpStatus: null,
    smtpReply: null,
    error: null,
    ...fields,
  });
  try {
    if (channel.type === "webhook") {
      const secret = await readVault(kv, options.masterKey, channel.secretId);
      if (secret === null) {
        return result({ ok: false, error: "The channel's signing secret is missing from the vault" });
      }
      const body = webhookBody(delivery, number, now, options.baseUrl);
      const timestamp = String(Math.floor(now.getTime() / 1000));
      const doFetch = options.transports?.fetch ?? fetch;
      let res: Response;
      try {
        res = await doFetch(channel.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "user-agent": "Cadres-Backup-Notifications/1",
            "x-cadres-event": delivery.payload.event,
            "x-cadres-delivery": delivery.id,
            [TIMESTAMP_HEADER]: timestamp,
            [SIGNATURE_HEADER]: signWebhook(secret, timestamp, body),
          },
          body,
          redirect: "manual",
          signal: AbortSignal.timeout(options.webhookTimeoutMs ?? WEBHOOK_TIMEOUT_MS),
        });
      } catch (error) {
        const timedOut = error instanceof DOMException && error.name === "TimeoutError";
        return result({
          ok: false,
          error: timedOut
            ? `No response within ${(options.webhookTimeoutMs ?? WEBHOOK_TIMEOUT_MS) / 1000} s`
            : errorLine(error, channel.url),
        });
      }
      const text = await readSnippet(res);
      if (res.status >= 200 && res.status < 300) return result({ ok: true, httpStatus: res.status });
      const snippet = text.replace(/\s+/g, " ").trim().slice(0, 200);
      return result({
        ok: false,
        httpStatus: res.status,
        error:
          `HTTP ${res.status}${
            res.status >= 300 && res.status < 400 ? " (redirects are not followed)" : ""
          }` +
          (snippet ? `: ${snippet}` : ""),
      });
    }
    const password = channel.passwordId ? await readVault(kv, options.masterKey, channel.passwordId) : null;
    if (channel.passwordId && password === null) {
      return result({ ok: false, error: "The channel's SMTP password is missing from the vault" });
    }
    const { subject, text } = emailContent(delivery, options.baseUrl);
    const domain = channel.from.split("@")[1] ?? "cadres.invalid";
    const sent = await sendMail({
      host: channel.host,
      port: channel.port,
      tlsMode: channel.tlsMode,
      username: channel.username || undefined,
      password: password ?? undefined,
      timeoutMs: options.smtpTimeoutMs ?? SMTP_TIMEOUT_MS,
      connector: options.transports?.smtp ?? smtpConnector(),
    }, {
      from: channel.from,
      to: channel.to,
      subject,
      text,
      date: now,
      messageId: `${delivery.id}.${number}@${domain}`,
    });
    return result({ ok: true, smtpReply: sent.reply });
  } catch (error) {
    return result({
      ok: false,
      smtpReply: error instanceof SmtpError ? error.reply : null,
      error: errorLine(error),
    });
  }
}

/** The delivery after an attempt: delivered, rescheduled with backoff, or given up. */
export function afterAttempt(
  delivery: NotificationDelivery,
  result: DeliveryAttempt,
  now: Date,
): NotificationDelivery {
  const attempts = [...delivery.attempts, result];
  const base = { ...delivery, attempts, leaseUntil: null, updatedAt: now.toISOString() };
  if (result.ok) return { ...base, status: "delivered", nextAttemptAt: null, dueMs: null };
  const wait = nextBackoffMs(attempts.length);
  if (wait === null) return { ...base, status: "failed", nextAttemptAt: null, dueMs: null };
  const due = now.getTime() + wait;
  return { ...base, status: "pending", nextAttemptAt: new Date(due).toISOString(), dueMs: due };
}

/** Writes `next` over the claimed delivery, moving its due index; false when the lease was lost. */
async function finish(
  kv: Deno.Kv,
  claimed: { key: Deno.KvKey; versionstamp: string },
  leased: NotificationDelivery,
  next: NotificationDelivery,
): Promise<boolean> {
  const op = kv.atomic().check(claimed).set(deliveryKey(next.id), next);
  countDeliveryChange(op, next.accountId, leased.status, next.status);
  if (leased.dueMs !== null) op.delete(deliveryDueKey(leased.dueMs, leased.id));
  if (next.dueMs !== null) op.set(deliveryDueKey(next.dueMs, next.id), next.id);
  return (await op.commit()).ok;
}

/** Claims, sends and records one due delivery. Returns its new status, or null when skipped. */
async function deliverOne(
  kv: Deno.Kv,
  due: Deno.KvEntry<string>,
  now: Date,
  options: SendOptions,
): Promise<DeliveryStatus | null> {
  const id = due.value;
  const entry = await kv.get<NotificationDelivery>(deliveryKey(id));
  const delivery = entry.value;
  if (!delivery || delivery.status !== "pending" || delivery.dueMs !== due.key[1]) {
    // A stale index entry (its delivery finished or moved): drop it if nothing changed since.
    await kv.atomic().check(due).delete(due.key).commit();
    return null;
  }
  // Claim: move the due index to the lease's end, so a crashed sender's delivery comes back then.
  const leaseEnd = now.getTime() + LEASE_MS;
  const leased: NotificationDelivery = {
    ...delivery,
    leaseUntil: new Date(leaseEnd).toISOString(),
    dueMs: leaseEnd,
    updatedAt: now.toISOString(),
  };
  const claim = await kv.atomic().check(entry, due)
    .delete(due.key)
    .set(deliveryKey(id), leased)
    .set(deliveryDueKey(leaseEnd, id), id)
    .commit();
  if (!claim.ok) return null; // another sender has it
  const claimed = { key: deliveryKey(id), versionstamp: claim.versionstamp };
  const number = delivery.attempts.length + 1;
  const channel = await getChannel(kv, delivery.channelId);
  const result: DeliveryAttempt = channel?.enabled
    ? await attempt(kv, leased, channel, number, now, options)
    : {
      number,
      at: now.toISOString(),
      ok: false,
      durationMs: 0,
      httpStatus: null,
      smtpReply: null,
      error: channel ? "Not sent: the channel is disabled" : "Not sent: the channel was deleted",
    };
  const next = afterAttempt(leased, result, now);
  // A missing or disabled channel will not recover by retrying: give up now.
  if (!channel?.enabled) Object.assign(next, { status: "failed", nextAttemptAt: null, dueMs: null });
  return (await finish(kv, claimed, leased, next)) ? next.status : null;
}

/**
 * Sends the deliveries due at `now` (at most `limit`, `concurrency` at a time). Each is claimed with a
 * lease first (atomic check), so two instances never send one delivery concurrently; a failure is
 * rescheduled after 1, 2, 4, 8, 16 minutes and given up after MAX_ATTEMPTS. Idempotent per `now`.
 */
export async function deliverDue(
  kv: Deno.Kv,
  now: Date,
  options: SendOptions & { limit?: number; concurrency?: number },
): Promise<{ attempted: number; delivered: number; retrying: number; failed: number }> {
  const due: Deno.KvEntry<string>[] = [];
  const iter = kv.list<string>(
    { start: ["notification_due"], end: ["notification_due", now.getTime() + 1] },
    { limit: options.limit ?? 100 },
  );
  for await (const e of iter) due.push(e);
  const out = { attempted: 0, delivered: 0, retrying: 0, failed: 0 };
  const queue = [...due];
  const worker = async () => {
    for (let e = queue.shift(); e; e = queue.shift()) {
      const status = await deliverOne(kv, e, now, options);
      if (status === null) continue;
      out.attempted++;
      if (status === "delivered") out.delivered++;
      else if (status === "failed") out.failed++;
      else out.retrying++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 8) }, worker));
  return out;
}

/**
 * Sends a test notification through a channel now (enabled or not) and records it in the delivery
 * log with its one attempt, together with an audit entry. Needs backup.manage on the channel.
 */
export async function sendTestNotification(
  kv: Deno.Kv,
  actor: Actor,
  channelId: string,
  options: SendOptions & { now: Date },
): Promise<NotificationDelivery> {
  const { now } = options;
  const channel = (await entryForChange(kv, actor, CHANNEL, channelId)).value;
  const payload: NotificationPayload = {
    event: "test",
    alertId: null,
    accountId: channel.accountId,
    orgId: channel.orgId,
    subject: null,
    reason: null,
    severity: "info",
    message: `Test notification for channel ${channel.name}, sent by ${actor.label}.`,
    count: 0,
    occurredAt: now.toISOString(),
    openedAt: null,
    resolvedAt: null,
  };
  const pending = newDelivery(channel, payload, [], now);
  const result = await attempt(kv, pending, channel, 1, now, options);
  const delivery: NotificationDelivery = {
    ...pending,
    status: result.ok ? "delivered" : "failed",
    attempts: [result],
    nextAttemptAt: null,
    dueMs: null,
  };
  const op = setDelivery(kv.atomic(), delivery);
  appendAudit(op, actor, {
    ...channelScope(channel),
    action: "notification_channel.test",
    objectType: "notification_channel",
    objectId: channel.id,
    summary: `Sent a test notification through ${summarizeChannel(channel)}: ${
      result.ok ? "delivered" : "failed"
    }`,
  }, now);
  await op.commit();
  return delivery;
}

// ---------------------------------------------------------------------------------------------------
// The delivery log

export const DeliveryFilter = z.object({
  channelId: z.string().max(40).catch(""),
  status: z.enum(["", ...DELIVERY_STATUSES]).catch(""),
  cursor: CursorField,
  limit: z.coerce.number().int().min(1).max(200).catch(50),
});
export type DeliveryFilter = z.infer<typeof DeliveryFilter>;

/**
 * Deliveries the actor may see, newest first, filtered by channel and status; cursor-paginated.
 * Throws InvalidCursorError.
 */
export async function listDeliveries(
  kv: Deno.Kv,
  actor: Actor,
  filter: DeliveryFilter,
): Promise<Page<NotificationDelivery>> {
  if (!actor.accountId) return { values: [], cursor: "" };
  const prefix = filter.channelId
    ? ["notification_deliveries_by_channel", filter.channelId]
    : ["notification_deliveries_by_account", actor.accountId];
  const iter = CursorList.fromCursor<string>(kv, { prefix }, filter.cursor, {
    reverse: true,
    batchSize: 100,
  });
  const values: NotificationDelivery[] = [];
  // Each key is read with the cursor just after it, so a page ends exactly at its last row.
  let batch: Array<{ key: Deno.KvKey; cursor: string }> = [];
  let scanned = 0;
  const flush = async (): Promise<string | null> => {
    const entries = await kv.getMany<NotificationDelivery[]>(batch.map((b) => b.key));
    for (const [i, { value: d }] of entries.entries()) {
      if (!d || d.accountId !== actor.accountId || !deliveryVisible(actor, d)) continue;
      if (filter.status && d.status !== filter.status) continue;
      values.push(d);
      if (values.length >= filter.limit) return batch[i].cursor;
    }
    batch = [];
    return null;
  };
  for await (const e of iter) {
    batch.push({ key: deliveryKey(e.value), cursor: iter.cursor });
    scanned++;
    if (batch.length === 10 || scanned >= 5000) {
      const cursor = await flush();
      if (cursor !== null) return { values, cursor };
      if (scanned >= 5000) return { values, cursor: iter.cursor };
    }
  }
  const cursor = batch.length ? await flush() : null;
  return { values, cursor: cursor ?? "" };
}

/** Deletes finished deliveries older than `DELIVERY_RETENTION_MS` (ids are time-ordered). */
export async function purgeDeliveries(
  kv: Deno.Kv,
  now: Date,
  options: { limit?: number } = {},
): Promise<number> {
  const cutoff = encodeTime(Math.max(0, now.getTime() - DELIVERY_RETENTION_MS), 10) + "0".repeat(16);
  let removed = 0;
  const iter = kv.list<NotificationDelivery>(
    { start: ["notification_deliveries"], end: deliveryKey(cutoff) },
    { limit: options.limit ?? 500 },
  );
  for await (const e of iter) {
    const d = e.value;
    if (d.status === "pending") continue;
    const op = kv.atomic().check(e);
    for (const key of deliveryKeys(d)) op.delete(key);
    countDeliveryChange(op, d.accountId, d.status, null);
    if ((await op.commit()).ok) removed++;
  }
  return removed;
}
