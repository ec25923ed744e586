/**
 * "VSS" on Linux: a file-system snapshot taken for the backup through a snapshot hook — an executable the
 * operator names with `--snapshot-hook` (engine/agent/snapshot-hook.sh does it for LVM and btrfs). The agent
 * calls it per include path:
 *
 * - `HOOK create PATH` — take a read-only snapshot holding PATH and print, as the last line of its output,
 *   the folder where PATH's content can be read in it; exit 0. Exit 3 when PATH is on a file system it
 *   cannot snapshot (the path is then read live); any other exit is a failure (read live too, said so).
 * - `HOOK remove PATH SNAPSHOT` — after the backup, remove what `create` made (unmount, delete).
 *
 * The backup then reads each snapshotted path from its snapshot folder while recording the original paths
 * (`snapshotFileSystem`), so restores put files where they were. Without a hook, or when the policy turns
 * VSS off, nothing is snapshotted and the result says "not applied".
 */
import { denoFileSystem, type FileSystem } from "../repo/fs.ts";

/** One include path and where it is read from. */
export interface SnapshotMapping {
  path: string;
  snapshot: string;
}

/** The per-path outcome the result reports. */
export interface SnapshotReport {
  path: string;
  snapshot: string | null;
  detail: string;
}

/** What was snapshotted; `release` removes the snapshots (always call it). */
export interface SnapshotSet {
  /** "applied" (every path), "partial", "not applied", or "off" (the policy has VSS off). */
  status: "applied" | "partial" | "not applied" | "off";
  detail: string;
  paths: SnapshotReport[];
  mappings: SnapshotMapping[];
  /** True when the hook failed on some path (not merely unsupported there): the backup ends as a warning. */
  failed: boolean;
  release(): Promise<string[]>;
}

/** Exit code of `create` meaning "this path's file system cannot be snapshotted". */
export const SNAPSHOT_UNSUPPORTED = 3;

async function runSnapshotHook(hook: string, args: string[], timeoutMs: number) {
  const child = new Deno.Command(hook, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
  }, timeoutMs);
  try {
    const out = await child.output();
    const decode = (b: Uint8Array) => new TextDecoder().decode(b).trim();
    return { code: out.code, signal: out.signal, stdout: decode(out.stdout), stderr: decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

const lastLine = (text: string) => text.split("\n").map((l) => l.trim()).filter(Boolean).pop() ?? "";

/** Takes a snapshot of each of `paths` with `hook` (when VSS is on and a hook is configured). */
export async function takeSnapshots(
  hook: string | null,
  paths: string[],
  options: { enabled: boolean; timeoutMs?: number },
): Promise<SnapshotSet> {
  const none = (status: SnapshotSet["status"], detail: string): SnapshotSet => ({
    status,
    detail,
    paths: [],
    mappings: [],
    failed: false,
    release: () => Promise.resolve([]),
  });
  if (!options.enabled) return none("off", "VSS is off in the policy: files were read live");
  if (!hook) {
    return none(
      "not applied",
      "no snapshot hook is configured on this agent (--snapshot-hook; LVM/btrfs): files were read live",
    );
  }
  const timeoutMs = options.timeoutMs ?? 300_000;
  const reports: SnapshotReport[] = [];
  const mappings: SnapshotMapping[] = [];
  let failed = false;
  for (const path of paths) {
    let r;
    try {
      r = await runSnapshotHook(hook, ["create", path], timeoutMs);
    } catch (e) {
      failed = true;
      reports.push({
        path,
        snapshot: null,
        detail: `the snapshot hook ${hook} could not run: ${(e as Error).message}`,
      });
      continue;
    }
    const snapshot = lastLine(r.stdout);
    if (r.code === 0 && snapshot.startsWith("/")) {
      try {
        await Deno.lstat(snapshot);
        mappings.push({ path, snapshot });
        reports.push({ path, snapshot, detail: "snapshot taken" });
        continue;
      } catch (e) {
        failed = true;
        reports.push({
          path,
          snapshot: null,
          detail: `the hook printed ${snapshot}, which cannot be read: ${(e as Error).message}`,
        });
        // What the hook made is removed at once: it is not used.
        await runSnapshotHook(hook, ["remove", path, snapshot], timeoutMs).catch(() => {});
        continue;
      }
    }
    const why = (r.stderr || r.stdout).split("\n").slice(-3).join(" ").slice(0, 500);
    if (r.code === SNAPSHOT_UNSUPPORTED) {
      reports.push({
        path,
        snapshot: null,
        detail: `not applied: ${why || "its file system cannot be snapshotted"}`,
      });
    } else {
      failed = true;
      reports.push({
        path,
        snapshot: null,
        detail: `the snapshot hook failed (${r.signal ? `signal ${r.signal}` : `exit ${r.code}`}): ${why}`,
      });
    }
  }
  const status = mappings.length === paths.length
    ? "applied"
    : mappings.length > 0
    ? "partial"
    : "not applied";
  const detail = status === "applied"
    ? `read from snapshots taken by ${hook}`
    : reports.filter((r) => !r.snapshot).map((r) => `${r.path}: ${r.detail}`).join("; ");
  return {
    status,
    detail,
    paths: reports,
    mappings,
    failed,
    async release() {
      const problems: string[] = [];
      for (const m of mappings) {
        try {
          const r = await runSnapshotHook(hook, ["remove", m.path, m.snapshot], timeoutMs);
          if (r.code !== 0) {
            problems.push(`${m.snapshot}: remove exited with ${r.code}: ${lastLine(r.stderr)}`);
          }
        } catch (e) {
          problems.push(`${m.snapshot}: ${(e as Error).message}`);
        }
      }
      return problems;
    },
  };
}

/**
 * A file system that reads each mapped path (and everything below it) from its snapshot folder, and any
 * other path live. The backup records the original paths.
 */
export function snapshotFileSystem(
  mappings: SnapshotMapping[],
  base: FileSystem = denoFileSystem,
): FileSystem {
  if (mappings.length === 0) return base;
  const sorted = [...mappings].sort((a, b) => b.path.length - a.path.length);
  const translate = (path: string): string => {
    for (const m of sorted) {
      const root = m.path.replace(/\/+$/, "") || "/";
      if (path === root) return m.snapshot;
      const prefix = root === "/" ? "/" : root + "/";
      if (path.startsWith(prefix)) return `${m.snapshot.replace(/\/+$/, "")}/${path.slice(prefix.length)}`;
    }
    return path;
  };
  return {
    lstat: (path) => base.lstat(translate(path)),
    readDir: (path) => base.readDir(translate(path)),
    readLink: (path) => base.readLink(translate(path)),
    open: (path) => base.open(translate(path)),
  };
}
