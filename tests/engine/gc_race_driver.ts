/**
 * A worker process of gc_process_race_test.ts: it runs backups and forget + gc on a local repository as
 * the test asks, one JSON object a line on stdin, and answers one JSON object a line on stdout. The test
 * starts two of them — one backs up, the other forgets and collects — so the race is played between
 * processes that share nothing but the repository folder.
 *
 *   {"op":"backup","id","repo","kek":<base64>,"src","parent","pauseAt":<path or null>,"pauseOccurrence",
 *    "nowOffsetMs"}
 *       backs up `src` with `parent`; when it is about to look at `pauseAt` (for the `pauseOccurrence`-th
 *       time, default the first) it answers
 *       {"id","event":"paused"} and waits for {"op":"resume","id"}; then {"id","ok":true,"result"} or
 *       {"id","ok":false,"error"}.
 *   {"op":"forgetAndGc","id","repo","snapshot","graceMs","clockMarginMs","waitForLockMs","delayMs"}
 *       (optionally waits until a backup lock is live, at most `waitForLockMs`, then `delayMs`) deletes
 *       snapshot `snapshot` and runs gc twice; answers {"id","ok":true,"sawLock","lockLiveAtForget","lockLiveAfter","gcs"}
 *       (whether a backup lock was live just before the snapshot was deleted, and after the second gc).
 *
 * The snapshot object is deleted directly: `forgetSnapshots` refuses to forget the parent of a backup whose
 * lock is live, so this plays the forget whose lock check ran just before the backup wrote its lock.
 */
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { fromBase64 } from "../../engine/repo/bytes.ts";
import { denoFileSystem, type FileSystem } from "../../engine/repo/fs.ts";
import { garbageCollect } from "../../engine/repo/gc.ts";
import { listLiveLocks } from "../../engine/repo/lock.ts";
import { Repository } from "../../engine/repo/repository.ts";

// deno-lint-ignore no-explicit-any
type Command = Record<string, any>;

const resumes = new Map<number, () => void>();

function answer(msg: unknown) {
  console.log(JSON.stringify(msg));
}

async function backup(c: Command) {
  const repo = await Repository.open(new LocalBackend(c.repo), fromBase64(c.kek));
  let seen = 0;
  const fs: FileSystem = {
    ...denoFileSystem,
    lstat: async (p) => {
      if (p === c.pauseAt && ++seen === (c.pauseOccurrence ?? 1)) {
        const resumed = new Promise<void>((r) => resumes.set(c.id, r));
        answer({ id: c.id, event: "paused" });
        await resumed;
      }
      return await denoFileSystem.lstat(p);
    },
  };
  const result = await backupFiles(repo.namespace("h"), {
    paths: [c.src],
    parent: c.parent,
    now: () => new Date(Date.now() + (c.nowOffsetMs ?? 0)),
    fs,
  });
  return { result };
}

async function backupLockLive(backend: LocalBackend): Promise<boolean> {
  return (await listLiveLocks(backend)).some((l) => l.kind === "backup");
}

async function forgetAndGc(c: Command) {
  const backend = new LocalBackend(c.repo);
  let sawLock = false;
  if (c.waitForLockMs) {
    const until = Date.now() + c.waitForLockMs;
    while (!(sawLock = await backupLockLive(backend)) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  if (c.delayMs) await new Promise((r) => setTimeout(r, c.delayMs));
  const lockLiveAtForget = await backupLockLive(backend);
  await backend.delete(`snapshots/${c.snapshot}`);
  const gcs = [];
  for (let i = 0; i < 2; i++) {
    const r = await garbageCollect(backend, { graceMs: c.graceMs, clockMarginMs: c.clockMarginMs });
    gcs.push({ condemned: r.condemned, repacked: r.repacked, deleted: r.deleted, pending: r.pending });
  }
  return { sawLock, lockLiveAtForget, lockLiveAfter: await backupLockLive(backend), gcs };
}

async function run(c: Command) {
  try {
    const out = c.op === "backup" ? await backup(c) : await forgetAndGc(c);
    answer({ id: c.id, ok: true, ...out });
  } catch (e) {
    answer({ id: c.id, ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
  }
}

let rest = "";
for await (const piece of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  rest += piece;
  const lines = rest.split("\n");
  rest = lines.pop()!;
  for (const line of lines) {
    if (!line.trim()) continue;
    const c: Command = JSON.parse(line);
    if (c.op === "resume") {
      resumes.get(c.id)?.();
      resumes.delete(c.id);
    } else {
      run(c); // answered when done; several commands may run at once
    }
  }
}
