/**
 * Notification channels: signed JSON webhooks and SMTP email, with their secrets in the vault (create,
 * edit, enable, delete, the signing secret). Rules (notification_rules.ts) route alerts to channels;
 * notification_delivery.ts sends to them, and notification_backoff.ts says when a failed send is retried.
 */
import { z } from "zod";
import { appendAudit, commitAudited } from "./audit.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { newId, randomToken } from "./ids.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { type Actor, authorize, inScope, type ScopedObject } from "./rbac.ts";
import { SMTP_TLS_MODES, type SmtpTlsMode } from "./smtp.ts";
import { resolveOwner } from "./tenancy.ts";
import { DisplayName } from "./validation.ts";
import {
  replaceVaultRecord,
  type SealingOptions,
  sealOwnedSecret,
  vaultKey,
  type VaultRecord,
} from "./vault.ts";
import {
  channelKey,
  channelsByAccountKey,
  channelsByAccountPrefix,
  ruleKey,
  rulesByAccountPrefix,
} from "./keys/notifications.ts";
import type { NotificationRule } from "./notification_rules.ts";

export const CHANNEL_TYPES = ["webhook", "email"] as const;
export type ChannelType = (typeof CHANNEL_TYPES)[number];
export const CHANNEL_TYPE_LABELS: Record<ChannelType, string> = { webhook: "Webhook", email: "Email (SMTP)" };
export const SMTP_TLS_LABELS: Record<SmtpTlsMode, string> = {
  none: "None (plain text)",
  starttls: "STARTTLS",
  tls: "Implicit TLS",
};
export const MAX_CHANNELS_PER_ACCOUNT = 50;

// ---------------------------------------------------------------------------------------------------
// The channel

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

export function channelScope(c: Pick<NotificationChannel, "accountId" | "orgId">): ScopedObject {
  return { accountId: c.accountId, orgId: c.orgId };
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

// ---------------------------------------------------------------------------------------------------
// Channels (and what channel and rule CRUD share)

/** What channel and rule CRUD share: how an object is keyed, scoped, named and summarized. */
export interface Kind<T extends { id: string; name: string; enabled: boolean }> {
  label: string;
  objectType: "notification_channel" | "notification_rule";
  key: (id: string) => Deno.KvKey;
  scope: (o: T) => ScopedObject;
  summarize: (o: T) => string;
}

export const CHANNEL: Kind<NotificationChannel> = {
  label: "Notification channel",
  objectType: "notification_channel",
  key: channelKey,
  scope: channelScope,
  summarize: (c) => summarizeChannel(c),
};

/** The object's entry if the actor may see it; throws NotFoundError otherwise. */
export async function requireEntry<T extends { id: string; name: string; enabled: boolean }>(
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
export async function entryForChange<T extends { id: string; name: string; enabled: boolean }>(
  kv: Deno.Kv,
  actor: Actor,
  kind: Kind<T>,
  id: string,
): Promise<Deno.KvEntry<T>> {
  const entry = await requireEntry(kv, actor, kind, id);
  authorize(actor, "backup.manage", kind.scope(entry.value));
  return entry;
}

/**
 * Runs `change` on the object's entry (`entryForChange`: in scope, backup.manage) in a checked write,
 * reading it again before each retry on conflict (`withRetry`).
 */
export async function changeEntry<T extends { id: string; name: string; enabled: boolean }, R>(
  kv: Deno.Kv,
  actor: Actor,
  kind: Kind<T>,
  id: string,
  change: (entry: Deno.KvEntry<T>) => Promise<{ value: R } | null>,
): Promise<R> {
  return await withRetry(async () => await change(await entryForChange(kv, actor, kind, id)));
}

/** Enables or disables a channel or rule, with its audit entry, in one atomic operation. */
export async function setEnabled<T extends { id: string; name: string; enabled: boolean; updatedAt: string }>(
  kv: Deno.Kv,
  actor: Actor,
  kind: Kind<T>,
  id: string,
  enabled: boolean,
  now: Date,
): Promise<T> {
  return await changeEntry(kv, actor, kind, id, async (entry) => {
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
export async function getEntries<T>(kv: Deno.Kv, keys: Deno.KvKey[]): Promise<Deno.KvEntryMaybe<T>[]> {
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

/** Throws ValidationError when the account already has `max` objects listed under `prefix` (`what`, plural). */
export async function checkAccountLimit(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
  max: number,
  what: string,
): Promise<void> {
  if ((await listAccountIds(kv, prefix)).length >= max) {
    throw new ValidationError(`An account may have at most ${max} ${what}`);
  }
}

export async function listAccountIds(kv: Deno.Kv, prefix: Deno.KvKey): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of kv.list<string>({ prefix })) ids.push(e.value);
  return ids;
}

/** Channels of the actor's account in scope, by name. */
export async function listChannels(kv: Deno.Kv, actor: Actor): Promise<NotificationChannel[]> {
  if (!actor.accountId) return [];
  const ids = await listAccountIds(kv, channelsByAccountPrefix(actor.accountId));
  return (await getManyValues<NotificationChannel>(kv, ids.map(channelKey)))
    .filter((c) => inScope(actor, channelScope(c)))
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function summarizeChannel(c: NotificationChannel): string {
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
  return await sealOwnedSecret(masterKey, channel, `notification_channel:${channel.id}`, plaintext, now);
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
  options: SealingOptions,
): Promise<{ channel: NotificationChannel; generatedSecret: string | null }> {
  const data = ChannelCreateInput.parse(input);
  const { now, masterKey } = options;
  const { accountId, orgEntry } = await resolveOwner(kv, actor, data);
  const scope = { accountId, orgId: data.orgId };
  authorize(actor, "backup.manage", scope);
  await checkAccountLimit(
    kv,
    channelsByAccountPrefix(accountId),
    MAX_CHANNELS_PER_ACCOUNT,
    "notification channels",
  );
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
  await commitAudited(
    op,
    actor,
    {
      ...scope,
      action: "notification_channel.create",
      objectType: "notification_channel",
      objectId: id,
      summary: `Created ${summarizeChannel(channel)}${vault ? "; secret stored in the vault" : ""}`,
    },
    now,
    "The organization changed at the same time; try again",
  );
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
  options: SealingOptions,
): Promise<{ channel: NotificationChannel; generatedSecret: string | null }> {
  const data = ChannelUpdateInput.parse(input);
  const { now, masterKey } = options;
  return await changeEntry(kv, actor, CHANNEL, id, async (entry) => {
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
        replaceVaultRecord(op, current.secretId, vault);
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
        replaceVaultRecord(op, current.passwordId, vault);
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
  return await changeEntry(kv, actor, CHANNEL, id, async (entry) => {
    const channel = entry.value;
    const ruleIds = await listAccountIds(kv, rulesByAccountPrefix(channel.accountId));
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
