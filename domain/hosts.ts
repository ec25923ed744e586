/**
 * Managed hosts, as far as the engine protocol needs them: agents enroll with an org secret and send
 * signed heartbeats. The policies issue adds the Hosts pages and assignments on these keys.
 */
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import { HEARTBEAT_INTERVAL_SECONDS, HeartbeatMetrics } from "./engines.ts";
import { newId } from "./ids.ts";
import { withRetry } from "./kv.ts";
import type { Actor } from "./rbac.ts";
import { decodePublicKey } from "./signing.ts";

export interface Host {
  id: string;
  accountId: string;
  orgId: string;
  hostname: string;
  os: string;
  ipAddress: string;
  publicKey: string;
  version: string;
  relay: boolean;
  status: "pending" | "online" | "offline";
  enrolledAt: string;
  updatedAt: string;
  lastHeartbeatAt: string | null;
}

export function hostKey(id: string) {
  return ["hosts", id] as const;
}
export function hostsByAccountKey(accountId: string, id: string) {
  return ["hosts_by_account", accountId, id] as const;
}
export function hostByPublicKeyKey(publicKey: string) {
  return ["hosts_by_public_key", publicKey] as const;
}
export function liveHostKey(id: string) {
  return ["hosts_live", id] as const;
}

export const AgentEnrollment = z.object({
  hostname: z.string().trim().min(1, "is required").max(253)
    .regex(
      /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$/,
      "must be a valid hostname",
    ),
  os: z.string().trim().min(1, "is required").max(100),
  ipAddress: z.union([z.ipv4(), z.ipv6()], { error: "must be an IPv4 or IPv6 address" }),
  publicKey: z.string().superRefine((v, ctx) => {
    try {
      decodePublicKey(v);
    } catch (e) {
      ctx.addIssue({ code: "custom", message: (e as Error).message });
    }
  }),
  version: z.string().trim().min(1, "is required").max(50),
  relay: z.boolean().default(false),
}).strict();
export type AgentEnrollment = z.input<typeof AgentEnrollment>;

export const AgentHeartbeat = z.object({
  version: z.string().trim().min(1).max(50),
  metrics: HeartbeatMetrics,
});

function agentActor(host: Pick<Host, "id" | "hostname" | "accountId">): Actor {
  return {
    kind: "system",
    id: `agent:${host.id}`,
    label: `Agent ${host.hostname}`,
    accountId: host.accountId,
    role: null,
    permissions: new Set(),
    orgScope: "all",
  };
}

export async function getHost(kv: Deno.Kv, id: string): Promise<Host | null> {
  return (await kv.get<Host>(hostKey(id))).value;
}

/** Enrolls an agent into an org; the same public key again refreshes it (idempotent). */
export async function enrollHost(
  kv: Deno.Kv,
  tenant: { accountId: string; orgId: string },
  input: AgentEnrollment,
  now: Date,
): Promise<{ host: Host; created: boolean }> {
  const data = AgentEnrollment.parse(input);
  return await withRetry<{ host: Host; created: boolean }>(async () => {
    const at = now.toISOString();
    const pointer = await kv.get<string>(hostByPublicKeyKey(data.publicKey));
    if (pointer.value) {
      const entry = await kv.get<Host>(hostKey(pointer.value));
      const existing = entry.value;
      if (!existing) return null;
      if (existing.accountId !== tenant.accountId || existing.orgId !== tenant.orgId) {
        throw new ConflictError("This public key is already enrolled in another organization");
      }
      const next: Host = { ...existing, ...data, updatedAt: at };
      const op = kv.atomic().check(pointer, entry).set(hostKey(next.id), next);
      appendAudit(op, agentActor(next), {
        accountId: next.accountId,
        orgId: next.orgId,
        action: "host.reenroll",
        objectType: "host",
        objectId: next.id,
        summary: `Agent on ${next.hostname} enrolled again (${next.version})`,
      }, now);
      return (await op.commit()).ok ? { value: { host: next, created: false } } : null;
    }
    const host: Host = {
      id: newId(now),
      ...tenant,
      ...data,
      status: "pending",
      enrolledAt: at,
      updatedAt: at,
      lastHeartbeatAt: null,
    };
    const op = kv.atomic()
      .check({ key: hostByPublicKeyKey(data.publicKey), versionstamp: null })
      .set(hostKey(host.id), host)
      .set(hostsByAccountKey(host.accountId, host.id), host.id)
      .set(hostByPublicKeyKey(data.publicKey), host.id);
    appendAudit(op, agentActor(host), {
      accountId: host.accountId,
      orgId: host.orgId,
      action: "host.enroll",
      objectType: "host",
      objectId: host.id,
      summary: `Agent on ${host.hostname} (${host.os}, ${host.ipAddress}) enrolled`,
    }, now);
    return (await op.commit()).ok ? { value: { host, created: true } } : null;
  });
}

/** Records an agent heartbeat (claiming the request nonce in the same operation). */
export async function applyHostHeartbeat(
  kv: Deno.Kv,
  hostId: string,
  input: z.input<typeof AgentHeartbeat>,
  now: Date,
  nonce?: { key: Deno.KvKey; expireIn: number },
): Promise<{ host: Host; replayed: boolean }> {
  const data = AgentHeartbeat.parse(input);
  for (let i = 0; i < 10; i++) {
    const entry = await kv.get<Host>(hostKey(hostId));
    const host = entry.value;
    if (!host) throw new NotFoundError("Host not found");
    const next: Host = {
      ...host,
      status: "online",
      version: data.version,
      lastHeartbeatAt: now.toISOString(),
    };
    const op = kv.atomic().check(entry).set(hostKey(hostId), next).set(liveHostKey(hostId), true);
    if (nonce) {
      op.check({ key: nonce.key, versionstamp: null }).set(nonce.key, now.getTime(), {
        expireIn: nonce.expireIn,
      });
    }
    if ((await op.commit()).ok) return { host: next, replayed: false };
    if (nonce && (await kv.get(nonce.key)).versionstamp !== null) return { host, replayed: true };
  }
  throw new ConflictError("Heartbeat conflicted repeatedly; retry");
}

export { HEARTBEAT_INTERVAL_SECONDS };
