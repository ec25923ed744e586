/**
 * The gc race across processes (issue 15): a backup reuses chunks of its parent while ANOTHER PROCESS forgets
 * that parent and runs gc twice past the grace period (0 here); the backup's snapshot still restores
 * byte-identical. Two worker processes (gc_race_driver.ts) share nothing but the repository folder: one backs
 * up, the other forgets and collects. Each iteration starts from a fresh repository holding the parent and a
 * kept snapshot that shares a file with it — so gc both condemns the parent's packs and rewrites one of them
 * (pack rewriting, its live share under half); a few such repositories are built once and each iteration
 * works on a fresh copy of one. Orders, many iterations each:
 *
 * - gc first: the backup has taken its lock and loaded its parent, and waits before it looks at any file while
 *   the other process forgets and collects; then it reuses the parent's chunks and commits;
 * - gc midway: the same, the backup waiting at its last file (it has reused the others already);
 * - backup first: the backup commits, then the other process forgets and collects;
 * - interleaved: both start at once; the other process waits for the backup's lock and a random 0–30 ms.
 *
 * Then gc runs twice more with no writer, and the repository must verify (`--all`) and both snapshots restore
 * byte-identical. A backup may fail only when its parent was gone before it could read it, with an error
 * naming that snapshot, and then it must have written no snapshot.
 */
import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { toBase64 } from "../../engine/repo/bytes.ts";
import { garbageCollect } from "../../engine/repo/gc.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { listSnapshots } from "../../engine/repo/snapshot.ts";
import { assertIntact, copyTree, digests } from "./gc_helpers.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const DRIVER = new URL("./gc_race_driver.ts", import.meta.url).pathname;
const PARAMS = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };
const ITERATIONS = 20;
/** Repositories with their own data (and so their own pack layout) that the iterations take turns copying. */
const TEMPLATES = 4;
/** Backups date themselves this far ahead, so files just written are not racy and are reused unread. */
const AHEAD_MS = 10_000;
/** gc's allowance for coarse object times; the test waits longer than this before the racing backup. */
const MARGIN_MS = 20;

// deno-lint-ignore no-explicit-any
type Answer = Record<string, any>;

/** One driver process, spoken to in JSON lines. */
class DriverProcess implements AsyncDisposable {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #waiting = new Map<string, (a: Answer) => void>();
  #early = new Map<string, Answer>();
  #reading: Promise<void>;
  #next = 0;

  constructor() {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", DRIVER],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reading = this.#read();
  }

  async #read() {
    let rest = "";
    for await (const piece of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      rest += piece;
      const lines = rest.split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        const a: Answer = JSON.parse(line);
        const key = `${a.id}/${a.event ?? "done"}`;
        const w = this.#waiting.get(key);
        if (w) {
          this.#waiting.delete(key);
          w(a);
        } else this.#early.set(key, a);
      }
    }
  }

  /** Sends `command` with a fresh id; returns the id. */
  async send(command: Answer): Promise<number> {
    const id = this.#next++;
    await this.#write({ ...command, id });
    return id;
  }

  /** Lets the paused command `id` go on. */
  async resume(id: number): Promise<void> {
    await this.#write({ op: "resume", id });
  }

  async #write(command: Answer) {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
  }

  /** The answer `event` ("done": the final one) to command `id`. */
  answer(id: number, event = "done"): Promise<Answer> {
    const key = `${id}/${event}`;
    const early = this.#early.get(key);
    if (early) {
      this.#early.delete(key);
      return Promise.resolve(early);
    }
    return new Promise((r) => this.#waiting.set(key, r));
  }

  async [Symbol.asyncDispose]() {
    await this.#writer.close();
    await this.#reading;
    await this.#child.status;
  }
}

type Order = "gc first" | "gc midway" | "backup first" | "interleaved";

interface Outcome {
  /** The backup failed (its parent was gone before it read it). */
  failed: boolean;
  /** The other process forgot the parent while the backup's lock was live. */
  forgotWhileLive: boolean;
  /** Both gcs of the other process finished while the backup's lock was live. */
  gcWhileLive: boolean;
  /** Packs of the first gc's condemnations and rewrites. */
  condemned: number;
  repacked: number;
}

/** A repository holding a parent and a kept snapshot, copied afresh for each iteration. */
interface Template {
  repoPath: string;
  kek: Uint8Array;
  src: string;
  shared: string;
  parent: string;
  kept: string;
  keptFiles: Map<string, string>;
}

/**
 * Template `t` under `dir`: the parent backs up four files of `src`; the kept snapshot a copy of f0 in
 * `shared`, so one pack of the parent stays partly live, mostly dead, once the parent is forgotten.
 */
async function template(dir: string, t: number): Promise<Template> {
  const repoPath = `${dir}/template-${t}`;
  const src = `${dir}/src-${t}`;
  const shared = `${dir}/shared-${t}`;
  const kek = crypto.getRandomValues(new Uint8Array(32));
  const repo = await Repository.init(new LocalBackend(repoPath), kek, { namespace: "h", ...PARAMS });
  await Deno.mkdir(src);
  await Deno.mkdir(shared);
  for (let i = 0; i < 4; i++) {
    await Deno.writeFile(`${src}/f${i}.bin`, deterministicBytes(`race-${t}-${i}`, 20_000 + 7_000 * i));
  }
  const now = () => new Date(Date.now() + AHEAD_MS);
  const parent = await backupFiles(repo.namespace("h"), { paths: [src], now });
  await Deno.copyFile(`${src}/f0.bin`, `${shared}/f0.bin`);
  const kept = await backupFiles(repo.namespace("h"), { paths: [shared], now });
  return {
    repoPath,
    kek,
    src,
    shared,
    parent: parent.snapshotId,
    kept: kept.snapshotId,
    keptFiles: await digests(shared),
  };
}

/**
 * One iteration of `order` in a fresh copy of template `tpl` under `dir` (the copies share the source
 * folders: unchanged files keep the inode and times the parent recorded, so the backup reuses them).
 */
async function iteration(
  order: Order,
  n: number,
  dir: string,
  tpl: Template,
  backupper: DriverProcess,
  collector: DriverProcess,
) {
  const repoPath = `${dir}/repo-${n}`;
  await copyTree(tpl.repoPath, repoPath);
  const { kek, src, shared, kept } = tpl;
  const parent = { snapshotId: tpl.parent };
  // A file changes, so the racing backup uploads something of its own besides what it reuses.
  await Deno.writeFile(`${src}/f3.bin`, deterministicBytes(`race-${n}-changed`, 9_000));
  const expected = new Map([[kept, tpl.keptFiles]]);
  const expectedSrc = await digests(src);
  // Past gc's margin, so the parent's packs (copied just now) are old enough to be condemned while the
  // backup runs.
  await new Promise((r) => setTimeout(r, MARGIN_MS + 10));

  const backupCommand = {
    op: "backup",
    repo: repoPath,
    kek: toBase64(kek),
    src,
    parent: parent.snapshotId,
    nowOffsetMs: AHEAD_MS,
    // "gc first": the second look at `src` (the first checks it exists, before the lock) comes after the
    // lock, the parent and the dead-pack refresh, before any file; "gc midway": the last file, while the
    // others (looked at together with it) are reused.
    pauseAt: order === "gc first" ? src : order === "gc midway" ? `${src}/f3.bin` : null,
    pauseOccurrence: order === "gc first" ? 2 : 1,
  };
  const gcCommand = {
    op: "forgetAndGc",
    repo: repoPath,
    snapshot: parent.snapshotId,
    graceMs: 0,
    clockMarginMs: MARGIN_MS,
  };
  let backupAnswer: Answer;
  let gcAnswer: Answer;
  if (order === "gc first" || order === "gc midway") {
    const b = await backupper.send(backupCommand);
    const paused = await Promise.race([backupper.answer(b, "paused"), backupper.answer(b)]);
    assert.equal(paused.event, "paused", `${order} #${n}: the backup paused (${JSON.stringify(paused)})`);
    gcAnswer = await collector.answer(await collector.send(gcCommand));
    await backupper.resume(b);
    backupAnswer = await backupper.answer(b);
  } else if (order === "backup first") {
    backupAnswer = await backupper.answer(await backupper.send(backupCommand));
    gcAnswer = await collector.answer(await collector.send(gcCommand));
  } else {
    const b = await backupper.send(backupCommand);
    const g = await collector.send({ ...gcCommand, waitForLockMs: 2_000, delayMs: Math.random() * 30 });
    [backupAnswer, gcAnswer] = await Promise.all([backupper.answer(b), collector.answer(g)]);
  }
  const what = `${order} #${n}`;
  assert.ok(gcAnswer.ok, `${what}: forget and gc: ${gcAnswer.error}`);
  const [gc1, gc2] = gcAnswer.gcs;
  if (order === "gc first" || order === "gc midway") {
    assert.ok(
      gc1.condemned.length + gc1.repacked.length > 0,
      `${what}: the parent's packs were condemned while the backup ran`,
    );
    assert.deepEqual(gc2.deleted, [], `${what}: the live backup held their deletion back`);
    assert.ok(backupAnswer.ok, `${what}: backup: ${backupAnswer.error}`);
    const r = backupAnswer.result;
    // Its commit check refused the chunks it had reused from the condemned packs, and it read those files
    // again (more than the changed file's 9,000 bytes); f0, which the kept snapshot shares, it found again.
    assert.ok(
      r.bytesRead > 9_000,
      `${what}: files read again after the refused commit (${r.bytesRead} bytes)`,
    );
    assert.ok(r.reusedFiles >= 1, `${what}: f0 reused from where gc keeps it`);
    assert.ok(gcAnswer.lockLiveAfter);
  }
  if (order === "backup first") assert.ok(backupAnswer.ok, `${what}: backup: ${backupAnswer.error}`);

  // Twice more, now that no writer is live: whatever the backup did not commit to goes.
  const be = new LocalBackend(repoPath);
  await garbageCollect(be, { graceMs: 0 });
  await garbageCollect(be, { graceMs: 0 });
  const snapshots = (await listSnapshots(be)).map((s) => s.id).sort();
  if (backupAnswer.ok) {
    const id = backupAnswer.result.snapshotId;
    assert.deepEqual(snapshots, [kept, id].sort(), `${what}: the snapshots`);
    expected.set(id, expectedSrc);
  } else {
    // Only the interleaved order can delete the parent before the backup reads it.
    assert.equal(order, "interleaved", `${what}: backup failed: ${backupAnswer.error}`);
    assert.match(
      backupAnswer.error,
      new RegExp(`snapshot ${parent.snapshotId}`),
      `${what}: names its parent`,
    );
    assert.deepEqual(snapshots, [kept], `${what}: a failed backup writes no snapshot`);
  }
  // Both snapshots restore: `src` for the new one (restores keep the full path), `shared` for the kept one.
  const folders = new Map([...expected.keys()].map((id) => [id, id === kept ? shared : src]));
  await assertIntact(repoPath, kek, expected, folders, what);
  return {
    failed: !backupAnswer.ok,
    forgotWhileLive: gcAnswer.lockLiveAtForget,
    gcWhileLive: gcAnswer.lockLiveAfter,
    condemned: gc1.condemned.length,
    repacked: gc1.repacked.length,
  } satisfies Outcome;
}

for (const order of ["gc first", "gc midway", "backup first", "interleaved"] as Order[]) {
  Deno.test(`gc race across processes (${order}, ${ITERATIONS} iterations): the backup's snapshot restores byte-identical`, async () => {
    await using dir = await tempDir("cadres-gc-race-");
    await using backupper = new DriverProcess();
    await using collector = new DriverProcess();
    const outcomes: Outcome[] = [];
    const templates: Template[] = [];
    for (let t = 0; t < TEMPLATES; t++) templates.push(await template(dir.path, t));
    for (let n = 0; n < ITERATIONS; n++) {
      outcomes.push(await iteration(order, n, dir.path, templates[n % TEMPLATES], backupper, collector));
    }
    if (order !== "backup first") {
      const rewrote = outcomes.filter((o) => o.repacked > 0).length;
      assert.ok(
        rewrote >= ITERATIONS / 2,
        `the parent's partly live pack was rewritten in ${rewrote} iterations`,
      );
    }
    if (order === "interleaved") {
      // The random delays must have produced real races, not only one side finishing first.
      // The random delays must have produced real races: the parent forgotten while the backup ran, and
      // (which side finished first varies with the machine's load) a backup that committed.
      const raced = outcomes.filter((o) => o.forgotWhileLive && !o.failed).length;
      assert.ok(
        raced >= ITERATIONS / 4,
        `the parent was forgotten while the backup ran in ${raced} iterations`,
      );
    }
  });
}
