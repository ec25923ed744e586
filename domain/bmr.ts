/**
 * Bare-metal restore (BMR): the request with its one-time token (stored only as its hash, expiring after
 * BMR_TOKEN_TTL_MS), the operator's instructions and recovery command, and the BES redeeming the token
 * exactly once (DESIGN.md invariant 7).
 */
import { appendAudit } from "./audit.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Engine, engineActor, engineKey } from "./engines.ts";
import { withRetry } from "./retry.ts";
import { newId, sha256Hex } from "./ids.ts";
import { bmrTokenKey, restoreKey, restorePointKey } from "./keys/restore.ts";
import type { Actor } from "./rbac.ts";
import { z } from "zod";
import { loadPoint, requireComplete, requireEngineOnline, type RestorePoint } from "./restore_points.ts";
import {
  commitRestore,
  describePoint,
  Id,
  imagePayload,
  newRestore,
  type RestoreRequest,
} from "./restore_requests.ts";

/** How long a bare-metal restore token can be redeemed. */
export const BMR_TOKEN_TTL_MS = 4 * 3600_000;

/** A bare-metal restore: network boot (pxe) or boot media (iso). */
export const BmrInput = z.object({
  restorePointId: Id,
  mode: z.enum(["pxe", "iso"], { error: "must be pxe or iso" }),
});

export type BmrInput = z.input<typeof BmrInput>;

/** A stored BMR token (by hash; the token itself is shown once and never stored). */
interface BmrToken {
  tokenHash: string;
  restoreId: string;
  restorePointId: string;
  besId: string;
  accountId: string;
  orgId: string | null;
  mode: "pxe" | "iso";
  expiresAt: string;
  usedAt: string | null;
  createdAt: string;
}

/** The data API URL of a BES as its recovery agent reaches it (the URL it reported, else its address and port). */
export function besDataUrl(engine: Pick<Engine, "hostname" | "port" | "dataUrl">): string {
  return engine.dataUrl ?? `https://${engine.hostname}:${engine.port}`;
}

/** The recovery agent's command line for a BES (TOKEN and the disk left for the operator). */
export function recoveryCommand(engine: Pick<Engine, "hostname" | "port" | "dataUrl">): string {
  return `deno task agent recover --bes ${
    besDataUrl(engine)
  } --bes-cert bes-cert.pem --token TOKEN --disk /dev/sdX`;
}

/**
 * What the operator does with a BMR token, step by step (docs/engines.md "Bare-metal restore"): the reference
 * BES serves no PXE or ISO image — the machine boots any Linux live environment (from the operator's network
 * boot server, or live media) and runs the recovery agent there with the token and the BES's certificate.
 */
export function bmrInstructions(
  mode: "pxe" | "iso",
  engine: Pick<Engine, "name" | "hostname" | "port" | "dataUrl" | "pxeNetwork">,
  expiresAt: string,
): string[] {
  const boot = mode === "pxe"
    ? `Boot the machine over the network (PXE) into a Linux live environment from your network boot server on ` +
      `the PXE network of BES ${engine.name}${engine.pxeNetwork ? ` (${engine.pxeNetwork})` : ""}. The BES ` +
      "itself serves no boot image: any live Linux with network access to the BES works."
    : "Boot the machine from Linux live media: a live ISO written to a USB stick or attached as virtual media " +
      "(any distribution with network access to the BES; the BES itself serves no ISO).";
  return [
    boot,
    `In the live environment, install Deno 2 and the Cadres source (the version of the BES), and save the ` +
    `certificate of BES ${engine.name} as bes-cert.pem (shown with the token; on the BES it is ` +
    "<BES data dir>/tls/cert.pem).",
    "Find the disk to restore onto (lsblk, as root): everything on it is overwritten.",
    `From the Cadres folder run: ${recoveryCommand(engine)} — TOKEN is the one-time token (or set ` +
    "CADRES_BMR_TOKEN and leave out --token, so it is not in the process list), /dev/sdX the disk.",
    "The recovery agent redeems the token with the BES (over its data API, trusting only that certificate), " +
    "writes the image onto the disk verifying every chunk, and reports its progress on this restore; it exits 0 " +
    "when the disk is restored.",
    `The token works once and expires at ${expiresAt}; after that, start a new bare-metal restore.`,
  ];
}

/**
 * Bare-metal restore of a complete restore point: its BES must be online at `now` (heartbeat within 3
 * minutes) and, for pxe, have PXE enabled. Creates a one-time token (a random UUID, stored only as its
 * SHA-256, expiring 4 h after `now`) and a `bmr` job on the BES (critical; its payload carries the token's
 * hash, never the token). Returns the token once. Throws ValidationError when a precondition fails.
 */
export async function requestBmr(
  kv: Deno.Kv,
  actor: Actor,
  input: BmrInput,
  now: Date,
): Promise<
  {
    restore: RestoreRequest;
    token: string;
    expiresAt: string;
    instructions: string[];
    /** The recovery agent's command for this BES (TOKEN and the disk to fill in). */
    command: string;
    /** The BES's certificate (PEM) the recovery agent pins; null before the BES reported one. */
    besCertificate: string | null;
  }
> {
  const data = BmrInput.parse(input);
  const { point, engine } = await loadPoint(kv, actor, data.restorePointId);
  requireComplete(point, "used for a bare-metal restore");
  requireEngineOnline(engine, point, now, "a bare-metal restore");
  if (data.mode === "pxe" && !engine.pxeEnabled) {
    throw new ValidationError(
      `PXE boot is not enabled on BES ${engine.name}; enable it on the engine or boot from the ISO instead`,
      { mode: "PXE is not enabled on this BES" },
    );
  }
  const token = crypto.randomUUID();
  const tokenHash = sha256Hex(token);
  const expiresAt = new Date(now.getTime() + BMR_TOKEN_TTL_MS).toISOString();
  const ids = { id: newId(now), jobId: newId(now) };
  const restore = newRestore(
    actor,
    point,
    {
      kind: "bmr",
      targetHostId: null,
      targetPath: null,
      overwrite: true,
      paths: [],
      pathCount: 0,
      mode: data.mode,
      priority: "critical",
      tokenExpiresAt: expiresAt,
    },
    ids,
    now,
  );
  const record: BmrToken = {
    tokenHash,
    restoreId: restore.id,
    restorePointId: point.id,
    besId: engine.id,
    accountId: point.accountId,
    orgId: point.orgId,
    mode: data.mode,
    expiresAt,
    usedAt: null,
    createdAt: now.toISOString(),
  };
  const queued = await commitRestore(
    kv,
    actor,
    point,
    restore,
    {
      kind: "bmr",
      principal: `bes:${engine.id}`,
      payload: {
        ...imagePayload(point),
        mode: data.mode,
        pxeNetwork: data.mode === "pxe" ? engine.pxeNetwork : null,
        tokenId: tokenHash,
        tokenExpiresAt: expiresAt,
      },
    },
    {
      action: "restore.bmr",
      summary:
        `Requested a bare-metal restore (${data.mode}) of ${
          describePoint(point)
        } through BES ${engine.name}; ` +
        `one-time token expires ${expiresAt}`,
    },
    now,
    (op) => {
      // The explicit expiresAt decides; expireIn only collects the record some time after.
      op.check({ key: bmrTokenKey(tokenHash), versionstamp: null })
        .set(bmrTokenKey(tokenHash), record, { expireIn: BMR_TOKEN_TTL_MS + 86_400_000 });
    },
  );
  if (!queued) throw new ConflictError("The bare-metal restore could not be queued; try again");
  return {
    restore,
    token,
    expiresAt,
    instructions: bmrInstructions(data.mode, engine, expiresAt),
    command: recoveryCommand(engine),
    besCertificate: engine.certificate ?? null,
  };
}

/** A BMR token as sent: a UUID. */
export const BmrTokenInput = z.string({ error: "is required" }).trim().toLowerCase()
  .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, "must be a BMR token (a UUID)");

/**
 * Redeems a BMR token for the BES `besId` exactly once (DESIGN.md invariant 7): the token must exist for
 * this BES (else NotFoundError), be unused and not past its expiry at `now` (else ConflictError). The
 * check and the write are one atomic operation on the token record, so of concurrent redeems one wins.
 */
export async function redeemBmrToken(
  kv: Deno.Kv,
  besId: string,
  token: string,
  now: Date,
): Promise<{ restoreId: string; restorePointId: string; mode: "pxe" | "iso" }> {
  const parsed = BmrTokenInput.safeParse(token);
  if (!parsed.success) throw new NotFoundError("Unknown BMR token");
  const key = bmrTokenKey(sha256Hex(parsed.data));
  type Redeemed = { restoreId: string; restorePointId: string; mode: "pxe" | "iso" };
  const attempt = async (): Promise<{ value: Redeemed } | null> => {
    const entry = await kv.get<BmrToken>(key);
    const record = entry.value;
    if (!record || record.besId !== besId) throw new NotFoundError("Unknown BMR token");
    if (record.usedAt) throw new ConflictError(`This BMR token was already used at ${record.usedAt}`);
    if (now.getTime() > Date.parse(record.expiresAt)) {
      throw new ConflictError(`This BMR token expired at ${record.expiresAt}`);
    }
    const [restoreEntry, pointEntry] = await kv.getMany<[RestoreRequest, RestorePoint]>([
      restoreKey(record.restoreId),
      restorePointKey(record.restorePointId),
    ]);
    const restore = restoreEntry.value;
    if (!restore) throw new NotFoundError("Unknown BMR token");
    // The token unlocks a restore that is still under way, of a point that still exists in full.
    if (restore.status === "failed" || restore.status === "success" || restore.status === "warning") {
      throw new ConflictError(
        `This bare-metal restore has already ended (${restore.status}); start a new one`,
      );
    }
    if (pointEntry.value?.status !== "complete") {
      throw new ConflictError(
        "The restore point of this bare-metal restore is no longer complete (expired or removed)",
      );
    }
    const engine = (await kv.get<Engine>(engineKey(besId))).value;
    const at = now.toISOString();
    const op = kv.atomic().check(entry, restoreEntry, pointEntry).set(key, { ...record, usedAt: at }, {
      expireIn: BMR_TOKEN_TTL_MS + 86_400_000,
    });
    op.set(restoreKey(record.restoreId), { ...restore, tokenUsedAt: at, updatedAt: at });
    appendAudit(op, engineActor({ id: besId, name: engine?.name ?? besId, accountId: record.accountId }), {
      accountId: record.accountId,
      orgId: record.orgId,
      action: "restore.bmr_redeem",
      objectType: "restore",
      objectId: record.restoreId,
      summary: `BES ${
        engine?.name ?? besId
      } redeemed the one-time token of bare-metal restore ${record.restoreId}`,
    }, now);
    if (!(await op.commit()).ok) return null;
    return {
      value: { restoreId: record.restoreId, restorePointId: record.restorePointId, mode: record.mode },
    };
  };
  return await withRetry(attempt, 5, "This BMR token is being redeemed concurrently");
}
