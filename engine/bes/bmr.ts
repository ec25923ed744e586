/**
 * Bare-metal restore on the BES (ENGINE.md §4 "bmr"). The reference BES serves no PXE or ISO image: the
 * machine boots any Linux live environment and runs the recovery agent with the one-time token the operator
 * was shown and this BES's certificate:
 *
 *     deno task agent recover --bes <data URL> --bes-cert <cert.pem> --token <TOKEN> --disk <PATH>
 *
 * The `bmr` job holds the restore open (its progress reports keep its lease and renew its read token) until
 * the recovery agent redeems the token here, reports its progress, and reports the outcome — or the token
 * expires unredeemed, or the agent goes silent. The endpoints (no data token: the one-time token, then the
 * session it opens, is the credential), served beside the data API:
 *
 * - `POST /api/bmr/v1/redeem {"token"}`: the BES checks the token's SHA-256 against its waiting `bmr` jobs,
 *   redeems it with the control plane (`POST /api/bes/v1/bmr/redeem`, once: the control plane's atomic
 *   check), fetches the namespace's keys with its job's key endpoint and answers the recovery agent: the
 *   restore point's snapshot and repository, the keys (base64; sent once, never stored), a short-lived read
 *   token (the job's data token: read access to that namespace of that repository on this BES) and a session
 *   secret for what follows. 404 for an unknown or used token (repeated failures from one address: 429).
 * - `POST /api/bmr/v1/renew` (`Authorization: Bearer <session>`, body {percent?, bytesWritten?, message?}):
 *   the agent's progress; answers a fresh read token.
 * - `POST /api/bmr/v1/done` (same header, body {status, files, bytes, errors?, errorCount?, message?}): the
 *   outcome, which the job posts as its result.
 */
import { z } from "zod";
import { sha256Hex } from "../repo/chunk_id.ts";
import { readSnapshotInfo } from "../repo/snapshot.ts";
import type { EngineClient, EngineIdentity } from "../protocol/client.ts";
import { type JobKeyProvider, wipeKeys } from "./job_keys.ts";
import { type JobContext, JobFailure, type JobHandler, type JobOutcome } from "./jobs.ts";
import { checkKeysRepository } from "./keyed_jobs.ts";
import {
  describeRepositories,
  findSnapshot,
  jobRepositories,
  type KeylessServices,
  parsePayload,
  PolicyId,
  RepositoryRef,
  storageFailure,
} from "./keyless_jobs.ts";
import { type Logger, messageOf } from "./log.ts";

/** Where the endpoints live. */
export const BMR_BASE = "/api/bmr/v1";
/** A redeemed session without a word from its agent this long ends the job (failed). */
export const BMR_SILENCE_MS = 15 * 60_000;
/** Failed redemptions one address may make in `FAILURE_WINDOW_MS` before it is answered 429. */
const MAX_FAILURES = 20;
const FAILURE_WINDOW_MS = 15 * 60_000;

/** The command the operator runs in the live environment. */
export function recoveryCommand(dataUrl: string): string {
  return `deno task agent recover --bes ${dataUrl} --bes-cert FILE --token TOKEN --disk PATH`;
}

/** What the result and the waiting job's progress say to the operator. */
export function bmrInstructions(dataUrl: string, certFile: string | null): string {
  return `Boot any live environment on the machine and run the recovery agent: ${recoveryCommand(dataUrl)} ` +
    `(FILE: this BES's certificate${certFile ? `, ${certFile} on the BES` : ""}, also on its page in the ` +
    `control plane; TOKEN: the one-time token shown when the restore started; PATH: the disk to write, e.g. ` +
    `/dev/sda)`;
}

const BmrPayload = z.object({
  restoreId: z.string().min(1).max(128),
  restorePointId: z.string().min(1).max(200),
  engineRestorePointId: z.string().min(1).max(200).optional(),
  policyId: PolicyId,
  repository: RepositoryRef.optional(),
  targetId: z.string().min(1).max(40).optional(),
  tokenId: z.string().regex(/^[0-9a-f]{64}$/, "must be the token's SHA-256 (hex)"),
  tokenExpiresAt: z.iso.datetime({ offset: true }),
});

const RedeemBody = z.object({ token: z.string().min(1).max(200) });
const RenewBody = z.object({
  percent: z.number().min(0).max(100).optional(),
  bytesWritten: z.number().int().min(0).optional(),
  message: z.string().max(500).optional(),
}).strict();
const DoneBody = z.object({
  status: z.enum(["success", "warning", "failed"]),
  files: z.number().int().min(0),
  bytes: z.number().int().min(0),
  errors: z.array(z.object({ path: z.string().min(1).max(4096), message: z.string().max(1000) }).strict())
    .max(100).default([]),
  errorCount: z.number().int().min(0).optional(),
  message: z.string().max(2000).optional(),
}).strict();

/** One waiting `bmr` job. */
interface Session {
  tokenId: string;
  ctx: JobContext;
  restoreId: string;
  restorePointId: string;
  snapshot: string;
  repository: { target: string; path: string; generation: number };
  namespace: string;
  expiresAt: number;
  /** Set once redeemed: the session secret's SHA-256, when, and when the agent last spoke. */
  redeemed: { secretHash: string; at: number; lastSeen: number } | null;
  /** Redemption in flight (one at a time). */
  redeeming: boolean;
  /** The outcome the agent reported. */
  outcome: JobOutcome | null;
}

/** What the BMR service needs of the BES. */
export interface BmrDeps {
  client: EngineClient;
  identity: () => EngineIdentity;
  keys: JobKeyProvider;
  services: KeylessServices;
  /** The data URL agents use, and the certificate file (null over plain HTTP). */
  dataUrl: () => string;
  certFile: string | null;
  log: Logger;
  now?: () => number;
  /** How often the waiting job looks at its session (default 500 ms). */
  pollMs?: number;
}

function json(body: unknown, status = 200): Response {
  return Response.json(body, { status, headers: { "cache-control": "no-store" } });
}

function refusal(status: number, code: string, message: string): Response {
  return json({ error: { code, message } }, status);
}

/** The `bmr` jobs waiting for their machine, and the endpoints the recovery agent calls. */
export class BmrService {
  #byToken = new Map<string, Session>();
  #bySecret = new Map<string, Session>();
  #failures = new Map<string, { count: number; since: number }>();
  readonly #now: () => number;

  constructor(readonly deps: BmrDeps) {
    this.#now = deps.now ?? (() => Date.now());
  }

  /** Jobs waiting now (for tests and the log). */
  get waiting(): number {
    return this.#byToken.size;
  }

  /** The `bmr` job handler. */
  handler(): JobHandler {
    return async (ctx) => {
      const p = parsePayload(ctx, BmrPayload);
      const id = p.engineRestorePointId ?? p.restorePointId;
      const located = await jobRepositories(this.deps.services, p);
      let path: string | null;
      let info;
      try {
        path = await findSnapshot(located, id);
        if (!path) {
          throw new JobFailure(
            "RESTORE_POINT_MISSING",
            `Restore point ${p.restorePointId} has no snapshot ${id} in ${
              describeRepositories(located, p.policyId)
            }`,
          );
        }
        info = await readSnapshotInfo(located.storage.at(path), id);
      } catch (e) {
        throw storageFailure(e, located.storage.target);
      }
      if (info.kind !== "image") {
        throw new JobFailure(
          "NOT_APPLICABLE",
          `Restore point ${p.restorePointId} is a ${info.kind} backup of files: a bare-metal restore writes a ` +
            `disk image (back up the disk with an image backup)`,
        );
      }
      const instructions = bmrInstructions(this.deps.dataUrl(), this.deps.certFile);
      const expiresAt = Date.parse(p.tokenExpiresAt);
      const session: Session = {
        tokenId: p.tokenId,
        ctx,
        restoreId: p.restoreId,
        restorePointId: p.restorePointId,
        snapshot: id,
        repository: { target: located.storage.target.id, path, generation: Number(path.split("/g").at(-1)) },
        namespace: info.namespace,
        expiresAt,
        redeemed: null,
        redeeming: false,
        outcome: null,
      };
      const bmr = {
        method: "live",
        instructions: "Boot any live environment and run the recovery agent",
        command: recoveryCommand(this.deps.dataUrl()),
        expiresAt: p.tokenExpiresAt,
      };
      this.#byToken.set(p.tokenId, session);
      try {
        ctx.progress({ percent: 0, message: `Waiting for the machine. ${instructions}` });
        for (;;) {
          ctx.signal.throwIfAborted();
          if (session.outcome) {
            const o = session.outcome;
            return { ...o, output: { ...o.output, bmr } };
          }
          const now = this.#now();
          if (!session.redeemed && !session.redeeming && now >= expiresAt) {
            return {
              status: "failed",
              retryable: false,
              error: {
                reason: "BMR_TOKEN_EXPIRED",
                message: `The token was not redeemed before it expired (${p.tokenExpiresAt}); start a new ` +
                  `bare-metal restore. ${instructions}`,
              },
              output: { files: 0, bytes: 0, bmr },
            };
          }
          if (session.redeemed && now - session.redeemed.lastSeen > BMR_SILENCE_MS) {
            return {
              status: "failed",
              retryable: false,
              error: {
                reason: "RECOVERY_AGENT_SILENT",
                message: `The recovery agent redeemed the token but has not reported for ${
                  Math.round(BMR_SILENCE_MS / 60_000)
                } minutes; the disk may be partly written. Start a new bare-metal restore.`,
              },
              output: { files: 0, bytes: 0, bmr },
            };
          }
          await new Promise((r) => setTimeout(r, this.deps.pollMs ?? 500));
        }
      } finally {
        this.#byToken.delete(p.tokenId);
        if (session.redeemed) this.#bySecret.delete(session.redeemed.secretHash);
      }
    };
  }

  /** The current read token of a session's job (renewed by its progress replies). */
  #readToken(s: Session): string | null {
    const fresh = s.ctx.lastProgressReply?.dataToken;
    return typeof fresh === "string" ? fresh : s.ctx.job.dataToken ?? null;
  }

  #failed(address: string): boolean {
    const now = this.#now();
    const f = this.#failures.get(address);
    const next = !f || now - f.since > FAILURE_WINDOW_MS
      ? { count: 1, since: now }
      : { ...f, count: f.count + 1 };
    this.#failures.set(address, next);
    if (this.#failures.size > 10_000) this.#failures.clear();
    return next.count > MAX_FAILURES;
  }

  #blocked(address: string): boolean {
    const f = this.#failures.get(address);
    return !!f && f.count >= MAX_FAILURES && this.#now() - f.since <= FAILURE_WINDOW_MS;
  }

  /** Answers `/api/bmr/v1/*`; null for other paths. */
  async fetch(req: Request, address: string): Promise<Response | null> {
    const path = new URL(req.url).pathname;
    if (!path.startsWith(`${BMR_BASE}/`)) return null;
    if (req.method !== "POST") return refusal(405, "method_not_allowed", "Use POST");
    let body: unknown;
    try {
      const text = await req.text();
      if (text.length > 256 * 1024) return refusal(413, "payload_too_large", "The body is over 256 KiB");
      body = JSON.parse(text);
    } catch {
      return refusal(400, "malformed", "The body is not JSON");
    }
    switch (path) {
      case `${BMR_BASE}/redeem`:
        return await this.#redeem(body, address);
      case `${BMR_BASE}/renew`:
      case `${BMR_BASE}/done`: {
        const m = (req.headers.get("authorization") ?? "").match(/^Bearer\s+(\S+)$/i);
        const s = m ? this.#bySecret.get(sha256Hex(new TextEncoder().encode(m[1]))) : undefined;
        if (!s || !s.redeemed) return refusal(401, "unauthorized", "Unknown or ended recovery session");
        s.redeemed.lastSeen = this.#now();
        return path.endsWith("/renew") ? this.#renew(s, body) : this.#done(s, body);
      }
      default:
        return refusal(404, "not_found", "No such endpoint");
    }
  }

  async #redeem(body: unknown, address: string): Promise<Response> {
    if (this.#blocked(address)) {
      return refusal(429, "rate_limited", "Too many failed redemptions from this address; wait 15 minutes");
    }
    const parsed = RedeemBody.safeParse(body);
    if (!parsed.success) return refusal(422, "invalid", "token: is required");
    const tokenId = sha256Hex(new TextEncoder().encode(parsed.data.token));
    const s = this.#byToken.get(tokenId);
    if (!s || s.redeemed || s.redeeming || s.outcome) {
      this.#failed(address);
      return refusal(
        404,
        "not_found",
        "Unknown or already used token (or its restore is not waiting on this BES)",
      );
    }
    s.redeeming = true;
    try {
      // Once, with the control plane: its atomic check makes a token usable exactly once.
      let res: Response;
      try {
        res = await this.deps.client.post(this.deps.identity(), "/api/bes/v1/bmr/redeem", {
          token: parsed.data.token,
        });
      } catch (e) {
        return refusal(
          503,
          "control_plane_unreachable",
          `The BES could not reach its control plane: ${messageOf(e)}`,
        );
      }
      const text = await res.text();
      if (res.status !== 200) {
        this.#failed(address);
        let message = text.slice(0, 300);
        try {
          message = JSON.parse(text)?.error?.message ?? message;
        } catch {
          // not JSON
        }
        const status = res.status === 404 || res.status === 409 ? res.status : 502;
        return refusal(status, status === 502 ? "control_plane_refused" : "not_redeemable", message);
      }
      const redeemed = JSON.parse(text) as { restoreId?: string; restorePointId?: string };
      if (redeemed.restoreId !== s.restoreId) {
        return refusal(409, "not_redeemable", "The token belongs to another restore");
      }
      const readToken = this.#readToken(s);
      if (!readToken) {
        return refusal(503, "no_read_token", "The control plane issued no read token for this restore");
      }
      let keys;
      try {
        keys = await this.deps.keys(s.ctx.job.id);
      } catch (e) {
        return refusal(503, "keys_unavailable", messageOf(e));
      }
      try {
        checkKeysRepository(keys, s.repository.target, s.repository.path);
        if (keys.namespace !== s.namespace) {
          return refusal(502, "key_mismatch", `The control plane gave the keys of another namespace`);
        }
        const secret = crypto.getRandomValues(new Uint8Array(32)).toBase64({
          alphabet: "base64url",
          omitPadding: true,
        });
        const now = this.#now();
        s.redeemed = { secretHash: sha256Hex(new TextEncoder().encode(secret)), at: now, lastSeen: now };
        this.#bySecret.set(s.redeemed.secretHash, s);
        s.ctx.progress({ percent: 1, message: "The recovery agent redeemed the token; restoring the disk" });
        this.deps.log.log("info", "bare-metal restore token redeemed", {
          jobId: s.ctx.job.id,
          restoreId: s.restoreId,
          from: address,
        });
        const reply = json({
          restoreId: s.restoreId,
          restorePointId: s.restorePointId,
          snapshot: s.snapshot,
          repository: s.repository,
          namespace: s.namespace,
          dataKey: keys.dataKey.toBase64(),
          idKey: keys.idKey.toBase64(),
          readToken,
          session: secret,
        });
        return reply;
      } catch (e) {
        if (e instanceof JobFailure) return refusal(502, "key_mismatch", e.message);
        throw e;
      } finally {
        wipeKeys(keys);
      }
    } finally {
      s.redeeming = false;
    }
  }

  #renew(s: Session, body: unknown): Response {
    const parsed = RenewBody.safeParse(body);
    if (!parsed.success) return refusal(422, "invalid", parsed.error.issues[0].message);
    const p = parsed.data;
    s.ctx.progress({
      percent: p.percent !== undefined ? Math.max(1, Math.min(99, p.percent)) : undefined,
      bytesTransferred: p.bytesWritten,
      message: p.message ? `Recovery agent: ${p.message}` : undefined,
    });
    const readToken = this.#readToken(s);
    if (!readToken) return refusal(409, "ended", "The restore's job ended");
    return json({ readToken });
  }

  #done(s: Session, body: unknown): Response {
    const parsed = DoneBody.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return refusal(422, "invalid", `${issue.path.join(".")}: ${issue.message}`);
    }
    const d = parsed.data;
    if (s.outcome) return json({ recorded: false });
    const errorCount = Math.max(d.errorCount ?? 0, d.errors.length);
    s.outcome = {
      status: d.status,
      bytesTransferred: d.bytes,
      protectedBytes: d.bytes,
      retryable: false,
      error: d.status === "success" ? null : {
        reason: d.status === "warning" ? "PARTIAL_FILES" : "RESTORE_FAILED",
        message: d.message ?? `${errorCount} errors while writing the disk`,
      },
      errors: d.errors,
      totals: errorCount > d.errors.length ? { errors: errorCount } : {},
      output: { files: d.files, bytes: d.bytes },
    };
    return json({ recorded: true });
  }
}
