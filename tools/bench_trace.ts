/**
 * Measuring aids of `deno task bench:engine --trace` (the end-to-end row): timing spans per kind of request
 * or storage call — count, bytes, summed and wall time with at least one in flight, most in flight at once —
 * and the process's peak memory (RSS, JS heap, external buffers) sampled every 20 ms. Used by
 * tools/bench_e2e_agent.ts (the agent's storage calls) and tools/bench_engine.ts (the BES's requests and
 * target writes); prints one summary line per kind.
 */
import process from "node:process";
import type { Backend, ByteRange, ObjectInfo, StagedObject } from "../engine/repo/backend.ts";

interface Kind {
  count: number;
  bytes: number;
  sumMs: number;
  maxMs: number;
  busyMs: number;
  inFlight: number;
  maxInFlight: number;
  busySince: number;
}

/** Spans by kind, and the time with at least one of that kind in flight. */
export class Spans {
  #kinds = new Map<string, Kind>();
  readonly t0 = performance.now();

  /** Starts a span of `kind` carrying `bytes`; returns its end. */
  start(kind: string, bytes = 0): () => void {
    let k = this.#kinds.get(kind);
    if (!k) {
      this.#kinds.set(
        kind,
        k = { count: 0, bytes: 0, sumMs: 0, maxMs: 0, busyMs: 0, inFlight: 0, maxInFlight: 0, busySince: 0 },
      );
    }
    const t = performance.now();
    if (k.inFlight++ === 0) k.busySince = t;
    k.maxInFlight = Math.max(k.maxInFlight, k.inFlight);
    k.count++;
    k.bytes += bytes;
    const kk = k;
    return () => {
      const e = performance.now();
      kk.sumMs += e - t;
      kk.maxMs = Math.max(kk.maxMs, e - t);
      if (--kk.inFlight === 0) kk.busyMs += e - kk.busySince;
    };
  }

  async time<T>(kind: string, bytes: number, fn: () => Promise<T>): Promise<T> {
    const end = this.start(kind, bytes);
    try {
      return await fn();
    } finally {
      end();
    }
  }

  /** One line per kind, sorted by summed time. */
  report(label: string): string[] {
    const total = performance.now() - this.t0;
    const lines = [`${label}: ${(total / 1000).toFixed(2)} s traced`];
    for (const [name, k] of [...this.#kinds].sort((a, b) => b[1].sumMs - a[1].sumMs)) {
      lines.push(
        `  ${name.padEnd(22)} n=${String(k.count).padStart(5)} ${
          (k.bytes / 2 ** 20).toFixed(0).padStart(5)
        } MiB ` +
          `sum ${(k.sumMs / 1000).toFixed(2)} s, busy ${(k.busyMs / 1000).toFixed(2)} s ` +
          `(${(100 * k.busyMs / total).toFixed(0)} %), mean ${(k.sumMs / k.count).toFixed(1)} ms, ` +
          `max ${k.maxMs.toFixed(0)} ms, most in flight ${k.maxInFlight}`,
      );
    }
    return lines;
  }
}

/** CPU time (user, system; seconds) this process used since `since` (from `cpuNow()`). */
export function cpuSince(since: { user: number; system: number }): string {
  const u = process.cpuUsage(since);
  return `user ${(u.user / 1e6).toFixed(2)} s, system ${(u.system / 1e6).toFixed(2)} s`;
}

/** This process's CPU time so far, for `cpuSince`. */
export function cpuNow(): { user: number; system: number } {
  return process.cpuUsage();
}

/** Samples `Deno.memoryUsage()` every `everyMs`; `stop()` gives the peaks in MiB. */
export function sampleMemory(everyMs = 20): () => { rss: number; heapUsed: number; external: number } {
  const peak = { rss: 0, heapUsed: 0, external: 0 };
  const take = () => {
    const m = Deno.memoryUsage();
    peak.rss = Math.max(peak.rss, m.rss);
    peak.heapUsed = Math.max(peak.heapUsed, m.heapUsed);
    peak.external = Math.max(peak.external, m.external);
  };
  const timer = setInterval(take, everyMs);
  return () => {
    take();
    clearInterval(timer);
    const mib = (n: number) => Math.round(n / 2 ** 20);
    return { rss: mib(peak.rss), heapUsed: mib(peak.heapUsed), external: mib(peak.external) };
  };
}

/** The kind of a repository object name for spans ("data", "index", …). */
export function objectKind(name: string): string {
  return name.split("/")[0];
}

/** `inner` with every call timed in `spans` ("put data", "get index", …). */
export class TracingBackend implements Backend {
  readonly location: string;
  putParts?: (name: string, parts: Uint8Array[]) => Promise<void>;
  stage?: (name: string) => Promise<StagedObject>;
  constructor(readonly inner: Backend, readonly spans: Spans) {
    this.location = inner.location;
    if (inner.stage) {
      this.stage = async (name) => {
        const staged = await inner.stage!(name);
        const kind = objectKind(name);
        let bytes = 0;
        const write = spans.start(`staged ${kind} (open)`);
        return {
          write: (data) => {
            bytes += data.length;
            return spans.time(`staged ${kind} write`, data.length, () => staged.write(data));
          },
          read: (offset, length) => staged.read(offset, length),
          commit: () => {
            write();
            return spans.time(`staged ${kind} commit`, bytes, () => staged.commit());
          },
          abort: () => {
            write();
            return staged.abort();
          },
        };
      };
    }
    if (inner.putParts) {
      this.putParts = (name, parts) =>
        spans.time(
          `put ${objectKind(name)}`,
          parts.reduce((a, p) => a + p.length, 0),
          () => inner.putParts!(name, parts),
        );
    }
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  async get(name: string, range?: ByteRange): Promise<Uint8Array<ArrayBuffer>> {
    const end = this.spans.start(`get ${objectKind(name)}`);
    try {
      return await this.inner.get(name, range);
    } finally {
      end();
    }
  }
  put(name: string, data: Uint8Array): Promise<void> {
    return this.spans.time(`put ${objectKind(name)}`, data.length, () => this.inner.put(name, data));
  }
  delete(name: string): Promise<void> {
    return this.spans.time(`delete ${objectKind(name)}`, 0, () => this.inner.delete(name));
  }
  exists(name: string): Promise<boolean> {
    return this.spans.time(`exists ${objectKind(name)}`, 0, () => this.inner.exists(name));
  }
}
