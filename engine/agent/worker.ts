/**
 * The agent's worker process (worker_protocol.ts): started by the agent for each backup or restore, under
 * nice/ionice when the policy asks, it reads its request and the job's data tokens from stdin, talks to the
 * BES's data API only (pinned certificate, the newest token), and writes progress and one outcome to stdout.
 * It never talks to the control plane and holds no identity.
 */
import { RemoteBackend } from "../protocol/remote_backend.ts";
import type { Backend } from "../repo/backend.ts";
import { CachingBackend, ObjectCache } from "./cache.ts";
import type { NamespaceKeys } from "../repo/keys.ts";
import { describeFailure } from "./failure.ts";
import { readLines } from "./lines.ts";
import { runBackup } from "./worker_backup.ts";
import { runRestoreFiles, runRestoreImage } from "./worker_restore.ts";
import { runDrill } from "./worker_drill.ts";
import {
  type ParentMessage,
  WORKER_LINE_PREFIX,
  type WorkerMessage,
  type WorkerRequest,
} from "./worker_protocol.ts";

const encoder = new TextEncoder();
function send(message: WorkerMessage): void {
  Deno.stdout.writeSync(encoder.encode(WORKER_LINE_PREFIX + JSON.stringify(message) + "\n"));
}

async function main(): Promise<number> {
  const lines = readLines(Deno.stdin.readable);
  const first = await lines.next();
  if (first.done) return 2;
  const start = JSON.parse(first.value) as ParentMessage;
  if (start.type !== "start") throw new Error("The worker expects a start message first");
  let token = start.token;
  // Later lines renew the token (each progress reply carries a fresh one). The agent closes this pipe only
  // after the worker ended: its end means the agent is gone (killed), and the job with it — its lease runs
  // out and the control plane retries it. The worker stops at once rather than go on unsupervised (a backup
  // stopped so writes no snapshot; a restore's retry removes the partial files it left).
  (async () => {
    for await (const line of lines) {
      try {
        const m = JSON.parse(line) as ParentMessage;
        if (m.type === "token" && typeof m.token === "string") token = m.token;
      } catch {
        // ignore a garbled line
      }
    }
  })().catch(() => {}).finally(() => {
    console.error("worker: the agent is gone (its pipe closed): stopping");
    Deno.exit(75);
  });
  const request: WorkerRequest = start.request;
  const keys: NamespaceKeys = {
    namespace: request.data.namespace,
    dataKey: Uint8Array.fromBase64(request.data.dataKey),
    idKey: Uint8Array.fromBase64(request.data.idKey),
  };
  request.data.dataKey = "";
  request.data.idKey = "";
  const remote = new RemoteBackend({
    url: request.data.dataUrl,
    caCert: request.data.certificate ?? undefined,
    token: () => token,
  });
  try {
    // The repository as the library reads it: through the local cache of trees and index when it is on.
    let storage: Backend = remote;
    if (request.data.cache) {
      try {
        storage = new CachingBackend(
          remote,
          await ObjectCache.open(request.data.cache.dir, request.data.cache.maxBytes),
        );
      } catch (e) {
        console.error(
          `worker: the cache in ${request.data.cache.dir} cannot be used: ${(e as Error).message}`,
        );
      }
    }
    const outcome = request.op === "backup"
      ? await runBackup(request, remote, keys, send, storage)
      : request.op === "restore_files"
      ? await runRestoreFiles(request, storage, keys, send)
      : request.op === "restore_drill"
      ? await runDrill(request, storage, keys, send)
      : await runRestoreImage(request, storage, keys, send);
    outcome.cache = storage instanceof CachingBackend ? storage.cache.stats : null;
    send({ type: "result", outcome });
    return 0;
  } catch (e) {
    console.error(`worker: ${(e as Error)?.stack ?? e}`);
    send({ type: "error", failure: describeFailure(e) });
    return 1;
  } finally {
    keys.dataKey.fill(0);
    keys.idKey.fill(0);
    remote.close();
  }
}

if (import.meta.main) {
  const code = await main().catch((e) => {
    console.error(`worker: ${(e as Error)?.stack ?? e}`);
    send({ type: "error", failure: describeFailure(e) });
    return 1;
  });
  Deno.exit(code);
}
