/**
 * A quick count of the files a file backup will visit (metadata only: the same excludes and file-system
 * boundary as the backup), run beside the backup so its progress can be given in percent.
 */
import { compileExcludes, SYSTEM_EXCLUDES } from "../repo/exclude.ts";
import { type FileSystem, joinPath } from "../repo/fs.ts";

/** A running count; `done` once every path was walked. */
export interface ScanState {
  files: number;
  bytes: number;
  done: boolean;
}

/** Starts counting the files below `paths`; the returned state fills in as the walk proceeds. */
export function startScan(
  fs: FileSystem,
  paths: string[],
  excludePaths: string[],
  excludePatterns: string[],
): ScanState {
  const state: ScanState = { files: 0, bytes: 0, done: false };
  const excluded = compileExcludes(excludePaths, excludePatterns);
  const walk = async (path: string, rootDev: number): Promise<void> => {
    let info: Deno.FileInfo;
    try {
      info = await fs.lstat(path);
    } catch {
      return;
    }
    if (info.isFile) {
      state.files++;
      state.bytes += info.size;
      return;
    }
    if (!info.isDirectory || info.dev !== rootDev) return;
    let names: string[];
    try {
      names = await fs.readDir(path);
    } catch {
      return;
    }
    for (const name of names) {
      const child = joinPath(path, name);
      if (SYSTEM_EXCLUDES.includes(child) || excluded(child)) continue;
      await walk(child, rootDev);
    }
  };
  (async () => {
    for (const p of paths) {
      try {
        await walk(p, (await fs.lstat(p)).dev);
      } catch {
        // counted as far as it could
      }
    }
  })().finally(() => state.done = true);
  return state;
}

/** A percentage of `done` files out of what the scan found (kept below 100 until the job ends). */
export function percentOf(done: number, scan: ScanState, previousFiles: number | null): number {
  const total = scan.done ? scan.files : Math.max(scan.files, previousFiles ?? 0);
  if (total <= 0) return 0;
  return Math.min(99, Math.round(done / total * 1000) / 10);
}
