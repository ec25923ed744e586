/**
 * Managed hosts: agents enroll with an org secret and send signed heartbeats; the sweep applies the
 * 3-minute offline rule (with a warning alert that the next heartbeat resolves); operators list and
 * open hosts within their org scope. Assignments to policies live in assignments.ts.
 */
import { readVisibleByPointerIndex } from "./pointer_index.ts";
import { hostsByAccountPrefix, liveHostsPrefix } from "./keys/hosts.ts";
import { z } from "zod";
import { lenientFilter, strictQuery } from "./list_filters.ts";
import { countNewHost } from "./protected.ts";
import { readOpenAlert, resolveAlert } from "./alerts.ts";
import { appendAudit, auditTarget } from "./audit.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import {
  claimRegistrationNonce,
  HEARTBEAT_INTERVAL_SECONDS,
  heartbeatCommitter,
  HeartbeatMetrics,
  KeyInAnotherTenantError,
  OFFLINE_AFTER_MS,
  refuseReplayedNonce,
  type RegistrationNonce,
  sweepLiveIndex,
} from "./engines.ts";
import { newId } from "./ids.ts";
import { AtomicRecorder } from "./group_commit.ts";
import { getManyValues, type Page, withRetry } from "./kv.ts";
import { pageOf, PageQuery, type SortKey } from "./paging.ts";
import { type Actor, inScope, principalActor } from "./rbac.ts";
import { countStatusChange } from "./ops_counters.ts";
import { decodePublicKey } from "./signing.ts";
import {
  hostByPublicKeyKey,
  hostDecommissionKey,
  hostKey,
  hostsByAccountKey,
  liveHostKey,
} from "./keys/hosts.ts";
export { hostByPublicKeyKey, hostDecommissionKey, hostKey, hostsByAccountKey, liveHostKey };

/**
 * pending: enrolled (or reactivated), no heartbeat yet; offline: silent for more than 3 minutes;
 * decommissioned: retired by an operator (archive.ts) — nothing is dispatched to it and heartbeats do
 * not bring it back; assigning it to a policy again does.
 */
export const HOST_STATUSES = ["pending", "online", "offline", "decommissioned"] as const;
export type HostStatus = (typeof HOST_STATUSES)[number];

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
  status: HostStatus;
  enrolledAt: string;
  updatedAt: string;
  lastHeartbeatAt: string | null;
  /** When an operator decommissioned the host (null or absent while it is in service). */
  decommissionedAt?: string | null;
  /**
   * What the agent backs up for a policy without include paths (its default roots), as it reported them
   * at enrollment or in its last heartbeat that carried them. Absent for agents that never reported any.
   */
  defaultRoots?: string[];
}

/** Most default roots an agent may report. */
export const MAX_DEFAULT_ROOTS = 64;

/** The default roots an agent reports: absolute paths (POSIX or Windows), at most MAX_DEFAULT_ROOTS. */
export const DefaultRoots = z.array(
  z.string().max(1024, "each root must be at most 1024 characters")
    .regex(/^(\/|[A-Za-z]:[\\/])/, "each root must be an absolute path")
    .refine((v) => !/\p{Cc}/u.test(v), "must not contain control characters")
    .refine((v) => !v.split(/[\\/]/).includes(".."), 'must not contain ".." segments'),
).max(MAX_DEFAULT_ROOTS, `at most ${MAX_DEFAULT_ROOTS} roots`);

/** True when the host's agent heartbeated within the offline window (3 minutes) of `now`, whatever its status. */
export function heartbeatFreshAt(host: Pick<Host, "lastHeartbeatAt">, now: Date): boolean {
  if (!host.lastHeartbeatAt) return false;
  return now.getTime() - Date.parse(host.lastHeartbeatAt) <= OFFLINE_AFTER_MS;
}

/**
 * True when the host may be given work at `now` (the host counterpart of `engineOnlineAt`): in service —
 * neither offline nor decommissioned (a retired host whose agent still heartbeats is left alone) — and
 * heartbeated within the offline window (explicit times, not the status alone).
 */
export function hostOnlineAt(host: Pick<Host, "status" | "lastHeartbeatAt">, now: Date): boolean {
  if (host.status === "offline" || host.status === "decommissioned") return false;
  return heartbeatFreshAt(host, now);
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
  /** What a policy without include paths backs up on this host (e.g. `["/"]`, `["/etc", "/home"]`). */
  defaultRoots: DefaultRoots.optional(),
}).strict();
export type AgentEnrollment = z.input<typeof AgentEnrollment>;

export const AgentHeartbeat = z.object({
  version: z.string().trim().min(1).max(50),
  metrics: HeartbeatMetrics,
  /** Sent when they changed since enrollment (e.g. after `--include-root` changed); absent: unchanged. */
  defaultRoots: DefaultRoots.optional(),
});

function agentActor(host: Pick<Host, "id" | "hostname" | "accountId">): Actor {
  return principalActor(`agent:${host.id}`, `Agent ${host.hostname}`, host.accountId);
}

/** The tenancy of a host, for `inScope` and `authorize`. */
export function hostScope(host: Pick<Host, "accountId" | "orgId">) {
  return { accountId: host.accountId, orgId: host.orgId };
}

/** The host, or null; no scope check (protocol and jobs). */
export async function getHost(kv: Deno.Kv, id: string): Promise<Host | null> {
  return (await kv.get<Host>(hostKey(id))).value;
}

/** The hostnames of the given hosts by id (unknown ids and nulls left out); no scope check. */
export async function hostnamesById(
  kv: Deno.Kv,
  ids: Iterable<string | null | undefined>,
): Promise<Map<string, string>> {
  const unique = [...new Set([...ids].filter((id): id is string => Boolean(id)))];
  const hosts = await getManyValues<Host>(kv, unique.map((id) => hostKey(id)));
  return new Map(hosts.map((h) => [h.id, h.hostname]));
}

/** Returns the host if the actor may see it. Throws NotFoundError otherwise (also outside the scope). */
export async function requireHost(kv: Deno.Kv, actor: Actor, id: string): Promise<Host> {
  const host = await getHost(kv, id);
  if (!host || !inScope(actor, hostScope(host))) throw new NotFoundError(`Host ${id} not found`);
  return host;
}

const HOST_SORTS = [
  "hostname",
  "-hostname",
  "ipAddress",
  "-ipAddress",
  "status",
  "-status",
  "lastHeartbeatAt",
  "-lastHeartbeatAt",
] as const;

/** The filter fields of the Hosts page, once: the page reads them leniently, the API strictly. */
const HOST_FILTER_FIELDS = {
  /** Substring of the hostname or IP address, case-insensitive. */
  q: z.string().trim().max(200, "must be at most 200 characters"),
  orgId: z.string().max(40, "must be an organization id"),
  status: z.enum(["", ...HOST_STATUSES], { error: `must be one of ${HOST_STATUSES.join(", ")}` }),
  sort: z.enum(HOST_SORTS, { error: `must be one of ${HOST_SORTS.join(", ")}` }),
};

const HOST_FILTER_DEFAULTS = { q: "", orgId: "", status: "", sort: "hostname" } as const;

/** Filters of the hosts list; every field falls back to its default, so a raw query object parses. */
export const HostFilter = lenientFilter({
  ...HOST_FILTER_FIELDS,
  offset: z.coerce.number().int().min(0),
  limit: z.coerce.number().int().min(1).max(200),
}, { ...HOST_FILTER_DEFAULTS, offset: 0, limit: 50 });
export type HostFilter = z.infer<typeof HostFilter>;

/**
 * The same filters as a strict query (`GET /api/v1/hosts`): a bad value or an unknown field is refused
 * (422 naming it) instead of falling back; pages by cursor.
 */
export const HostQuery = strictQuery(HOST_FILTER_FIELDS, HOST_FILTER_DEFAULTS).extend(PageQuery.shape)
  .strict();
export type HostQuery = z.input<typeof HostQuery>;

type HostFilterFields = Pick<HostFilter, "q" | "orgId" | "status" | "sort">;

/** The sort key of a host under `sort`: the sorted field, then hostname and id (ties stay stable). */
function hostSortKey(h: Host, sort: HostFilterFields["sort"]): SortKey {
  const field = sort.replace(/^-/, "") as "hostname" | "ipAddress" | "status" | "lastHeartbeatAt";
  return [String(h[field] ?? ""), h.hostname, h.id];
}

/** Orders host sort keys: the first field in the sort's direction, then hostname and id ascending. */
function hostKeyOrder(sort: HostFilterFields["sort"]) {
  const dir = sort.startsWith("-") ? -1 : 1;
  return (a: SortKey, b: SortKey) =>
    dir * a[0].localeCompare(b[0]) || a[1].localeCompare(b[1]) || a[2].localeCompare(b[2]);
}

/** Every host of the actor's account in its org scope matching the filter, unsorted. */
async function selectHosts(kv: Deno.Kv, actor: Actor, f: HostFilterFields): Promise<Host[]> {
  const needle = f.q.toLowerCase();
  const index = { prefix: hostsByAccountPrefix, key: hostKey, scope: hostScope };
  return await readVisibleByPointerIndex<Host>(
    kv,
    actor,
    index,
    (h) =>
      (!f.status || h.status === f.status) &&
      (!f.orgId || h.orgId === f.orgId) &&
      (!needle || h.hostname.toLowerCase().includes(needle) || h.ipAddress.toLowerCase().includes(needle)),
  );
}

/**
 * Hosts of the actor's account inside its org scope, filtered and sorted (ties by hostname, then id,
 * so pages are stable); `total` counts the matches before paging. Missing filter fields take their
 * defaults. A system actor (no account) gets an empty list.
 */
export async function listHosts(
  kv: Deno.Kv,
  actor: Actor,
  filter: Partial<z.input<typeof HostFilter>> = {},
): Promise<{ values: Host[]; total: number }> {
  const f = HostFilter.parse(filter);
  const order = hostKeyOrder(f.sort);
  const rows = (await selectHosts(kv, actor, f)).map((h) => ({ h, key: hostSortKey(h, f.sort) }))
    .sort((a, b) => order(a.key, b.key)).map((r) => r.h);
  return { values: rows.slice(f.offset, f.offset + f.limit), total: rows.length };
}

/**
 * The hosts list of `listHosts` (same filters, same order) by cursor, for the API: a page, the cursor
 * of the next ("" after the last) and `total`. Throws ZodError for a bad query, InvalidCursorError for
 * a cursor of another list or sort.
 */
export async function listHostsPage(
  kv: Deno.Kv,
  actor: Actor,
  query: HostQuery,
): Promise<Page<Host> & { total: number }> {
  const q = HostQuery.parse(query);
  const rows = await selectHosts(kv, actor, q);
  const page = pageOf(rows, {
    list: `hosts:${q.sort}`,
    key: (h) => hostSortKey(h, q.sort),
    compare: hostKeyOrder(q.sort),
    cursor: q.cursor,
    limit: q.limit,
  });
  return { ...page, total: rows.length };
}

/**
 * Enrolls an agent into an org; the same public key again refreshes it (idempotent). A key enrolled in
 * another org is a KeyInAnotherTenantError. With `nonce` (the protocol's signed enrollment) the nonce
 * is claimed in the same atomic write; a replay throws UnauthorizedError and changes nothing.
 */
export async function enrollHost(
  kv: Deno.Kv,
  tenant: { accountId: string; orgId: string },
  input: AgentEnrollment,
  now: Date,
  options: { nonce?: RegistrationNonce } = {},
): Promise<{ host: Host; created: boolean }> {
  const data = AgentEnrollment.parse(input);
  const { nonce } = options;
  return await withRetry<{ host: Host; created: boolean }>(async () => {
    const at = now.toISOString();
    const pointer = await kv.get<string>(hostByPublicKeyKey(data.publicKey));
    if (pointer.value) {
      const entry = await kv.get<Host>(hostKey(pointer.value));
      const existing = entry.value;
      if (!existing) return null;
      if (existing.accountId !== tenant.accountId || existing.orgId !== tenant.orgId) {
        throw new KeyInAnotherTenantError("This public key is already enrolled in another organization");
      }
      const next: Host = { ...existing, ...data, updatedAt: at };
      const op = kv.atomic().check(pointer, entry).set(hostKey(next.id), next);
      claimRegistrationNonce(op, nonce, now);
      appendAudit(op, agentActor(next), {
        ...auditTarget("host", next),
        action: "host.reenroll",
        summary: `Agent on ${next.hostname} enrolled again (${next.version})`,
      }, now);
      if ((await op.commit()).ok) return { value: { host: next, created: false } };
      await refuseReplayedNonce(kv, nonce);
      return null;
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
    claimRegistrationNonce(op, nonce, now);
    countNewHost(op, host);
    countStatusChange(op, "host", host.accountId, null, host.status);
    appendAudit(op, agentActor(host), {
      ...auditTarget("host", host),
      action: "host.enroll",
      summary: `Agent on ${host.hostname} (${host.os}, ${host.ipAddress}) enrolled`,
    }, now);
    if ((await op.commit()).ok) return { value: { host, created: true } };
    await refuseReplayedNonce(kv, nonce);
    return null;
  });
}

/**
 * Adds to `op`: puts a decommissioned host back in service (it is being assigned to a policy again):
 * `online` when its agent heartbeated within the offline window (the sweep watches it again), else
 * `pending` until it does; a decommission still in progress stops. The caller checks the host's entry.
 * Returns the host as written.
 */
export function reactivateHostInOp(op: Deno.AtomicOperation, host: Host, now: Date): Host {
  // The host is still decommissioned here: only its heartbeat decides.
  const live = heartbeatFreshAt(host, now);
  const next: Host = {
    ...host,
    status: live ? "online" : "pending",
    decommissionedAt: null,
    updatedAt: now.toISOString(),
  };
  op.set(hostKey(host.id), next).delete(hostDecommissionKey(host.id));
  countStatusChange(op, "host", host.accountId, host.status, next.status);
  if (live) op.set(liveHostKey(host.id), true);
  return next;
}

/**
 * Records an agent heartbeat (claiming the request nonce in the same operation). A host that was
 * offline comes back online and its `host_offline` alert is resolved in that same operation. A
 * decommissioned host stays decommissioned (only its last heartbeat time is kept) and the sweep does
 * not watch it.
 */
export async function applyHostHeartbeat(
  kv: Deno.Kv,
  hostId: string,
  input: z.input<typeof AgentHeartbeat>,
  now: Date,
  nonce?: { key: Deno.KvKey; expireIn: number },
  options: {
    /** The host entry the caller already read (used for the first attempt). */
    entry?: Deno.KvEntryMaybe<Host>;
    /** Input already validated by the caller. */
    parsed?: boolean;
    /**
     * The public key the request's signature was verified with: an entry read again for a retry must
     * still carry it (a host's key never changes, so this only ever refuses what no longer exists).
     */
    signedWith?: string;
  } = {},
): Promise<{ host: Host; replayed: boolean; versionstamp?: string }> {
  const data = options.parsed ? input as z.infer<typeof AgentHeartbeat> : AgentHeartbeat.parse(input);
  let known = options.entry;
  for (let i = 0; i < 10; i++) {
    const entry = known ?? await kv.get<Host>(hostKey(hostId));
    known = undefined;
    const host = entry.value;
    if (!host) throw new NotFoundError("Host not found");
    if (options.signedWith !== undefined && host.publicKey !== options.signedWith) {
      throw new NotFoundError("Host not found");
    }
    const retired = host.status === "decommissioned";
    const next: Host = {
      ...host,
      status: retired ? "decommissioned" : "online",
      version: data.version,
      ...(data.defaultRoots ? { defaultRoots: data.defaultRoots } : {}),
      lastHeartbeatAt: now.toISOString(),
    };
    const op = new AtomicRecorder().check(entry).set(hostKey(hostId), next);
    countStatusChange(op, "host", host.accountId, host.status, next.status);
    if (!retired) op.set(liveHostKey(hostId), true);
    // Only a host the sweep took offline can have an open alert: skip the read otherwise.
    if (host.status === "offline") {
      resolveAlert(op, await readOpenAlert(kv, "host", hostId, "host_offline"), now);
    }
    if (nonce) {
      op.check({ key: nonce.key, versionstamp: null }).set(nonce.key, now.getTime(), {
        expireIn: nonce.expireIn,
      });
    }
    // Shared with concurrent heartbeats (BES and agents), each with its own checks.
    const res = await heartbeatCommitter(kv).submit(op);
    if (res.ok) return { host: next, replayed: false, versionstamp: res.versionstamp };
    if (nonce && (await kv.get(nonce.key)).versionstamp !== null) return { host, replayed: true };
  }
  throw new ConflictError("Heartbeat conflicted repeatedly; retry");
}

/**
 * The sweep: every online host silent for more than 3 minutes at `now` (exactly 3 minutes is still
 * online) goes offline with one warning alert `host_offline`, raised in the same atomic operation.
 * A host is a single machine, not shared infrastructure like a BES, hence a warning, not critical.
 * Idempotent for the same `now`. Returns the ids it took offline.
 */
export async function sweepHostHeartbeats(kv: Deno.Kv, now: Date): Promise<{ offline: string[] }> {
  // Hosts are read ten at a time; a host that must change is read again before each retry.
  const offline = await sweepLiveIndex<Host>(kv, {
    kind: "host",
    prefix: liveHostsPrefix(),
    recordKey: hostKey,
    liveKey: liveHostKey,
    watched: (host) => host.status === "online",
    offline: (host) => hostOnlineAt(host, now) ? null : { ...host, status: "offline" },
    offlineAlert: (host) => ({
      subjectName: host.hostname,
      reason: "host_offline",
      severity: "warning",
      message: `Host ${host.hostname} is offline: no agent heartbeat for more than 3 minutes`,
    }),
  }, now);
  return { offline };
}

export { HEARTBEAT_INTERVAL_SECONDS };
