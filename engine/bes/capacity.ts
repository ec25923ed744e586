/**
 * The capacity of each storage target, for the heartbeat's `storage` reports.
 *
 * - Folder targets (Local, and SMB/NFS/iSCSI mounted at `<mounts>/<id>`): statfs of the folder — the file
 *   system's total, used and available bytes, as `df` shows them — measured at every heartbeat.
 * - S3 targets: used bytes are the sum of the sizes of every object under the target's prefix (listed,
 *   cached, refreshed in the background every `s3RefreshMs`, 5 minutes by default). A bucket has no size
 *   of its own: total is the target's quota, `config.quotaBytes`. The control plane's S3 target schema
 *   has no such field yet, so without it the target is not reported at all (the protocol has no
 *   "used only" report, and total = used would read as 100 % full and pause its policies); the used bytes
 *   are logged instead.
 *
 * A target that cannot be measured (unmounted, unreachable) is left out of the report and logged once per
 * change of its state; the control plane keeps its last capacity.
 */
import { fileSystemUsage } from "./metrics.ts";
import { type Logger, messageOf } from "./log.ts";
import { type OpenOptions, openTargetStorage, targetFolder, type TargetInfo } from "./storage.ts";
import { S3Backend } from "../repo/s3_backend.ts";
import { s3Options } from "./storage.ts";

/** One heartbeat capacity report. */
export interface CapacityReport {
  targetId: string;
  totalBytes: number;
  usedBytes: number;
  freeBytes: number;
}

export const S3_REFRESH_MS = 5 * 60_000;

/** The quota of an S3 target in bytes, or null when its config sets none. */
export function s3Quota(target: TargetInfo): number | null {
  const raw = target.config.quotaBytes;
  const n = typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

interface S3Usage {
  usedBytes: number;
  measuredAt: number;
}

export class CapacityMonitor {
  #s3 = new Map<string, S3Usage>();
  #s3InFlight = new Map<string, Promise<void>>();
  /** Last logged problem per target, so a lasting one is logged once. */
  #problems = new Map<string, string>();

  constructor(
    readonly log: Logger,
    readonly open: OpenOptions,
    readonly s3RefreshMs = S3_REFRESH_MS,
  ) {}

  #problem(target: TargetInfo, problem: string | null) {
    const before = this.#problems.get(target.id) ?? null;
    if (before === problem) return;
    if (problem === null) {
      this.#problems.delete(target.id);
      this.log.log("info", "storage target measurable again", { targetId: target.id, name: target.name });
    } else {
      this.#problems.set(target.id, problem);
      this.log.log("warn", "storage target capacity not reported", {
        targetId: target.id,
        name: target.name,
        reason: problem,
      });
    }
  }

  /** The reports of `targets` measurable now (S3 ones from the cache; a stale entry starts a refresh). */
  async reports(targets: TargetInfo[], now = Date.now()): Promise<CapacityReport[]> {
    const out: CapacityReport[] = [];
    for (const target of targets) {
      if (target.type === "s3" || target.type === "s3_compatible") {
        const r = this.#s3Report(target, now);
        if (r) out.push(r);
        continue;
      }
      try {
        // Opening checks that the folder exists (and is mounted, for SMB/NFS/iSCSI).
        await openTargetStorage(target, this.open);
        const usage = await fileSystemUsage(targetFolder(target, this.open.mounts));
        out.push({ targetId: target.id, ...usage });
        this.#problem(target, null);
      } catch (e) {
        this.#problem(target, messageOf(e));
      }
    }
    return out;
  }

  #s3Report(target: TargetInfo, now: number): CapacityReport | null {
    const cached = this.#s3.get(target.id);
    if (!cached || now - cached.measuredAt >= this.s3RefreshMs) this.refreshS3(target).catch(() => {});
    if (!cached) return null;
    const quota = s3Quota(target);
    if (quota === null) {
      this.#problem(
        target,
        `no quota configured (config.quotaBytes): used ${cached.usedBytes} bytes under the prefix; ` +
          `a bucket has no total of its own`,
      );
      return null;
    }
    this.#problem(target, null);
    const used = Math.min(cached.usedBytes, quota);
    return { targetId: target.id, totalBytes: quota, usedBytes: used, freeBytes: quota - used };
  }

  /** Sums the sizes of every object under the S3 target's prefix (one measurement at a time per target). */
  refreshS3(target: TargetInfo): Promise<void> {
    let running = this.#s3InFlight.get(target.id);
    if (!running) {
      running = (async () => {
        try {
          const backend = new S3Backend(s3Options(target, this.open.s3));
          let used = 0;
          for await (const obj of backend.list("")) used += obj.size;
          this.#s3.set(target.id, { usedBytes: used, measuredAt: Date.now() });
        } catch (e) {
          this.#problem(target, messageOf(e));
          throw e;
        } finally {
          this.#s3InFlight.delete(target.id);
        }
      })();
      this.#s3InFlight.set(target.id, running);
    }
    return running;
  }

  /** The cached used bytes of an S3 target (tests, logs). */
  s3Used(targetId: string): number | null {
    return this.#s3.get(targetId)?.usedBytes ?? null;
  }
}
