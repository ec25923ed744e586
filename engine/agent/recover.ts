/**
 * The recovery mode of the agent (docs/engines.md "Bare-metal restore"):
 *
 *   deno task agent recover --bes URL --bes-cert FILE --token TOKEN --disk PATH
 *
 * Redeems the one-time token at the BES (`POST /api/bmr/v1/redeem`, the BES's certificate the only one
 * trusted), opens the repository read-only through the BES's data API with the read token it got (renewed
 * by `POST /api/bmr/v1/renew`, which also carries the progress, every few seconds while the disk is
 * written), restores the image snapshot onto the disk (`restoreImage`: every chunk authenticated and
 * re-hashed before it is written), and reports the outcome with `POST /api/bmr/v1/done`. The keys live in
 * memory only and are wiped at the end; the token and the keys are never printed.
 */
import { parseArgs } from "node:util";
import { dataApiHttpClient, RemoteBackend } from "../protocol/remote_backend.ts";
import { restoreImage } from "../repo/image.ts";
import type { NamespaceKeys } from "../repo/keys.ts";
import { Repository } from "../repo/repository.ts";

export const RECOVER_USAGE = `Usage:
  deno task agent recover --bes URL --bes-cert FILE --token TOKEN --disk PATH [options]

Performs the bare-metal restore whose one-time token was shown when it started: the image is written onto
PATH (a block device such as /dev/sda, or a file). Everything on PATH is replaced.

Options:
  --bes URL            the BES's data API, e.g. https://10.0.0.5:8443
  --bes-cert FILE      the BES's certificate (PEM; the engine's page, or <BES data>/tls/cert.pem)
  --token TOKEN        the one-time token (or the environment variable CADRES_BMR_TOKEN)
  --disk PATH          the disk to write (a block device or a file)
  --zeroed             the disk is known to read as zeros: skip writing all-zero chunks
  --progress-seconds N how often progress is reported (default 3)`;

export class RecoverUsageError extends Error {}

export interface RecoverOptions {
  bes: string;
  certPem: string;
  token: string;
  disk: string;
  zeroed: boolean;
  progressSeconds: number;
}

/** What the BES answers to a redeemed token. */
interface Redeemed {
  restoreId: string;
  restorePointId: string;
  snapshot: string;
  repository: { target: string; path: string; generation: number };
  namespace: string;
  dataKey: string;
  idKey: string;
  readToken: string;
  session: string;
}

/** The outcome of a recovery, as reported with `/done`. */
export interface RecoverOutcome {
  status: "success" | "failed";
  restoreId: string | null;
  bytes: number;
  size: number;
  message: string;
}

export async function parseRecoverArgs(args: string[], env: { token?: string }): Promise<RecoverOptions> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        bes: { type: "string" },
        "bes-cert": { type: "string" },
        token: { type: "string" },
        disk: { type: "string" },
        zeroed: { type: "boolean" },
        "progress-seconds": { type: "string" },
      },
      strict: true,
    }));
  } catch (e) {
    throw new RecoverUsageError((e as Error).message);
  }
  if (!values.bes || !/^https:\/\//.test(values.bes)) {
    throw new RecoverUsageError("--bes URL is required (https://<BES>:8443)");
  }
  if (!values["bes-cert"]) throw new RecoverUsageError("--bes-cert FILE is required (the BES's certificate)");
  const token = values.token ?? env.token;
  if (!token) throw new RecoverUsageError("--token TOKEN (or CADRES_BMR_TOKEN) is required");
  if (!values.disk) throw new RecoverUsageError("--disk PATH is required (the disk to write)");
  let certPem: string;
  try {
    certPem = await Deno.readTextFile(values["bes-cert"]);
  } catch (e) {
    throw new RecoverUsageError(`--bes-cert ${values["bes-cert"]}: ${(e as Error).message}`);
  }
  if (!certPem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new RecoverUsageError(`--bes-cert ${values["bes-cert"]}: not a PEM certificate`);
  }
  const seconds = Number(values["progress-seconds"] ?? 3);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new RecoverUsageError("--progress-seconds must be a positive number");
  }
  return {
    bes: values.bes.replace(/\/+$/, ""),
    certPem,
    token,
    disk: values.disk,
    zeroed: values.zeroed ?? false,
    progressSeconds: seconds,
  };
}

async function errorOf(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body?.error?.message) return `${res.status} ${body.error.code}: ${body.error.message}`;
  } catch {
    // not JSON
  }
  return `${res.status} ${text.slice(0, 300)}`;
}

/**
 * Runs one bare-metal restore. Returns its outcome (also reported to the BES); throws only when the token
 * could not be redeemed (nothing was written then).
 */
export async function recover(
  options: RecoverOptions,
  log: (level: "info" | "error", message: string) => void,
): Promise<RecoverOutcome> {
  const client = dataApiHttpClient(options.certPem);
  const post = (path: string, body: unknown, session?: string) =>
    fetch(`${options.bes}/api/bmr/v1/${path}`, {
      method: "POST",
      client,
      headers: {
        "content-type": "application/json",
        ...(session ? { authorization: `Bearer ${session}` } : {}),
      },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
  let keys: NamespaceKeys | null = null;
  try {
    const res = await post("redeem", { token: options.token }).catch((e) => {
      throw new Error(`Cannot reach the BES at ${options.bes}: ${(e as Error).message}`);
    });
    if (res.status !== 200) throw new Error(`The BES refused the token: ${await errorOf(res)}`);
    const r = await res.json() as Redeemed;
    keys = {
      namespace: r.namespace,
      dataKey: Uint8Array.fromBase64(r.dataKey),
      idKey: Uint8Array.fromBase64(r.idKey),
    };
    log("info", `token redeemed: restore ${r.restoreId}, restore point ${r.restorePointId}`);

    let readToken = r.readToken;
    let progress = { bytes: 0, total: 0 };
    let ended = false;
    const renew = async (message?: string) => {
      const percent = progress.total
        ? Math.min(99, Math.round(progress.bytes / progress.total * 1000) / 10)
        : 0;
      const reply = await post("renew", {
        percent,
        bytesWritten: progress.bytes,
        ...(message ? { message } : {}),
      }, r.session);
      if (reply.status !== 200) {
        throw new Error(`The BES refused the progress report: ${await errorOf(reply)}`);
      }
      readToken = ((await reply.json()) as { readToken: string }).readToken;
    };
    // Progress (and a fresh read token) every few seconds while the disk is written.
    let renewError: string | null = null;
    const timer = setInterval(() => {
      if (ended) return;
      renew(`writing ${options.disk}`).catch((e) => {
        renewError = (e as Error).message;
        log("error", renewError);
      });
    }, options.progressSeconds * 1000);

    let outcome: RecoverOutcome;
    try {
      const remote = new RemoteBackend({ url: options.bes, token: () => readToken, client });
      const repo = await Repository.openNamespace(remote, keys);
      await renew(`restoring ${r.snapshot.slice(0, 12)} onto ${options.disk}`);
      const result = await restoreImage(repo.namespace(keys.namespace), r.snapshot, {
        target: options.disk,
        overwrite: true,
        targetZeroed: options.zeroed,
        progress: (p) => {
          progress = { bytes: p.bytes, total: p.totalBytes ?? 0 };
        },
      });
      if (result.errors.length === 0) {
        outcome = {
          status: "success",
          restoreId: r.restoreId,
          bytes: result.bytesWritten,
          size: result.size,
          message: `${result.target}: ${result.size} bytes restored, every chunk verified`,
        };
      } else {
        outcome = {
          status: "failed",
          restoreId: r.restoreId,
          bytes: result.bytesWritten,
          size: result.size,
          message:
            `${result.target}: ${result.errors.length} chunks could not be restored (damaged or missing ` +
            `data); ${result.blockDevice ? "those ranges keep their old bytes" : "the file was not written"}`,
        };
      }
      ended = true;
      clearInterval(timer);
      const done = await post("done", {
        status: outcome.status,
        files: outcome.status === "success" ? 1 : 0,
        bytes: outcome.bytes,
        errors: result.errors.slice(0, 100).map((e) => ({
          path: `${result.target} @ ${e.offset}`,
          message: `chunk ${e.chunk}: ${e.error}`.slice(0, 1000),
        })),
        errorCount: result.errors.length,
        message: outcome.message,
      }, r.session);
      if (done.status !== 200) log("error", `The BES did not record the outcome: ${await errorOf(done)}`);
    } catch (e) {
      ended = true;
      clearInterval(timer);
      const message = `Restoring onto ${options.disk} failed: ${(e as Error).message}` +
        (renewError ? ` (last progress report: ${renewError})` : "");
      outcome = { status: "failed", restoreId: r.restoreId, bytes: progress.bytes, size: 0, message };
      const done = await post("done", {
        status: "failed",
        files: 0,
        bytes: progress.bytes,
        errors: [],
        message: message.slice(0, 2000),
      }, r.session).catch((err) => {
        log("error", `Cannot report the failure to the BES: ${(err as Error).message}`);
        return null;
      });
      if (done && done.status !== 200) {
        log("error", `The BES did not record the outcome: ${await errorOf(done)}`);
      }
    }
    log(outcome.status === "success" ? "info" : "error", outcome.message);
    return outcome;
  } finally {
    if (keys) {
      keys.dataKey.fill(0);
      keys.idKey.fill(0);
    }
    client.close();
  }
}
