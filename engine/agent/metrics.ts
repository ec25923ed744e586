/**
 * The heartbeat's metrics, measured: CPU from /proc/stat between two samples (the load average per core where
 * /proc is missing), memory from the system's available memory, disk from statfs of the first default root,
 * the agent's uptime and its running jobs.
 */
import { statfsSync } from "node:fs";
import os from "node:os";

/** What a heartbeat carries. */
export interface HeartbeatMetrics {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  activeJobs: number;
  uptimeSeconds: number;
}

const round1 = (n: number) => Math.round(Math.min(100, Math.max(0, n)) * 10) / 10;

function readCpuTimes(): { idle: number; total: number } | null {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
    const parts = line.trim().split(/\s+/).slice(1).map(Number);
    if (parts.length < 4 || parts.some((n) => !Number.isFinite(n))) return null;
    // user nice system idle iowait irq softirq steal …: idle time is idle + iowait.
    const idle = parts[3] + (parts[4] ?? 0);
    return { idle, total: parts.slice(0, 8).reduce((a, b) => a + b, 0) };
  } catch {
    return null;
  }
}

/** Samples the host's metrics; the CPU figure covers the time since the previous sample. */
export class MetricsSampler {
  #last = readCpuTimes();
  readonly #started = performance.now();

  constructor(readonly diskPath: string) {}

  cpuPercent(): number {
    const now = readCpuTimes();
    const last = this.#last;
    this.#last = now;
    if (now && last && now.total > last.total) {
      return round1((1 - (now.idle - last.idle) / (now.total - last.total)) * 100);
    }
    const cores = Math.max(1, os.cpus().length);
    return round1(Deno.loadavg()[0] / cores * 100);
  }

  memoryPercent(): number {
    const m = Deno.systemMemoryInfo();
    return m.total > 0 ? round1((m.total - m.available) / m.total * 100) : 0;
  }

  diskPercent(): number {
    try {
      const s = statfsSync(this.diskPath);
      const used = s.blocks - s.bfree;
      const usable = used + s.bavail;
      return usable > 0 ? round1(used / usable * 100) : 0;
    } catch {
      return 0;
    }
  }

  sample(activeJobs: number): HeartbeatMetrics {
    return {
      cpuPercent: this.cpuPercent(),
      memoryPercent: this.memoryPercent(),
      diskPercent: this.diskPercent(),
      activeJobs,
      uptimeSeconds: Math.floor((performance.now() - this.#started) / 1000),
    };
  }
}
