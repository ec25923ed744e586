/**
 * The heartbeat's health metrics, measured: CPU busy percent since the previous sample (from /proc/stat,
 * or the 1-minute load average per CPU where there is no /proc), memory in use (total − available, as
 * `free` reports it), and disk usage of the data folder's file system (as `df` computes it: used over
 * used + available to unprivileged users).
 */
import os from "node:os";
import { statfs } from "node:fs/promises";

/** The idle and total jiffies of the aggregate "cpu" line of /proc/stat, or null if absent. */
export function parseProcStat(text: string): { idle: number; total: number } | null {
  const line = text.split("\n").find((l) => /^cpu\s/.test(l));
  if (!line) return null;
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  if (fields.length < 4 || fields.some((n) => !Number.isFinite(n))) return null;
  // user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user and nice]
  const counted = fields.slice(0, 8);
  const idle = counted[3] + (counted[4] ?? 0);
  const total = counted.reduce((a, b) => a + b, 0);
  return { idle, total };
}

/** A percentage rounded to one decimal and clamped to 0–100. */
export function percent(part: number, whole: number): number {
  if (!(whole > 0)) return 0;
  return Math.min(100, Math.max(0, Math.round((part / whole) * 1000) / 10));
}

/** CPU busy percent between successive `sample()` calls. */
export class CpuSampler {
  #prev: { idle: number; total: number } | null;
  constructor(readonly readStat: () => string | null = readProcStat) {
    this.#prev = this.#read();
  }

  #read(): { idle: number; total: number } | null {
    const text = this.readStat();
    return text === null ? null : parseProcStat(text);
  }

  /** Busy percent since the previous call (or since construction). */
  sample(): number {
    const now = this.#read();
    const prev = this.#prev;
    this.#prev = now;
    if (now && prev && now.total > prev.total) {
      const total = now.total - prev.total;
      return percent(total - (now.idle - prev.idle), total);
    }
    // No /proc/stat (or no time passed): the load average per CPU, an approximation.
    const cpus = Math.max(1, os.cpus().length);
    return percent(os.loadavg()[0], cpus);
  }
}

function readProcStat(): string | null {
  try {
    return Deno.readTextFileSync("/proc/stat");
  } catch {
    return null;
  }
}

/** Memory in use, percent: (total − available) / total. */
export function memoryPercent(info = Deno.systemMemoryInfo()): number {
  return percent(info.total - info.available, info.total);
}

/** Total, used and free bytes of the file system holding `path` (free = available to unprivileged users). */
export async function fileSystemUsage(
  path: string,
): Promise<{ totalBytes: number; usedBytes: number; freeBytes: number }> {
  const s = await statfs(path);
  const unit = s.bsize;
  const totalBytes = s.blocks * unit;
  const usedBytes = Math.max(0, (s.blocks - s.bfree) * unit);
  const freeBytes = Math.max(0, s.bavail * unit);
  return { totalBytes, usedBytes: Math.min(usedBytes, totalBytes), freeBytes };
}

/** Disk usage percent of the file system of `path`, as df shows it: used / (used + available). */
export async function diskPercent(path: string): Promise<number> {
  const u = await fileSystemUsage(path);
  return percent(u.usedBytes, u.usedBytes + u.freeBytes);
}

/** The metrics of one heartbeat. */
export interface HeartbeatMetrics {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  activeJobs: number;
  uptimeSeconds: number;
}

/** Measures the heartbeat metrics of a BES whose data folder is `dataDir`, started at `startedAt`. */
export class SystemMetrics {
  readonly #cpu: CpuSampler;
  constructor(readonly dataDir: string, readonly startedAt = Date.now(), cpu = new CpuSampler()) {
    this.#cpu = cpu;
  }

  async sample(activeJobs: number, now = Date.now()): Promise<HeartbeatMetrics> {
    return {
      cpuPercent: this.#cpu.sample(),
      memoryPercent: memoryPercent(),
      diskPercent: await diskPercent(this.dataDir),
      activeJobs,
      uptimeSeconds: Math.max(0, Math.floor((now - this.startedAt) / 1000)),
    };
  }
}
