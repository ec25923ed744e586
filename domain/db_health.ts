/** Health > Database: per logical database, entry counts and size per area, last write, probe latency. */
import { probeKey } from "./keys/health.ts";
import { alertsPrefix } from "./keys/alerts.ts";
import { auditPrefix } from "./keys/audit.ts";
import { capacitySamplesPrefix } from "./keys/storage.ts";
import { decodeTime } from "ulid";
import { DATABASE_PREFIXES, type DatabaseName } from "./self_backup.ts";

export interface DatabaseStats {
  database: DatabaseName;
  entries: number;
  approxBytes: number;
  areas: Array<{ prefix: string; entries: number; approxBytes: number }>;
  lastWriteAt: string | null;
}

const CONFIG_OBJECTS = new Set([
  "account",
  "org",
  "user",
  "api_token",
  "engine",
  "storage_target",
  "host",
  "policy",
  "self_backup",
]);

function sizeOf(value: unknown): number {
  try {
    return JSON.stringify(value, (_k, v) => typeof v === "bigint" ? String(v) : v)?.length ?? 0;
  } catch {
    return 0;
  }
}

/** Scans one database (O(entries): an admin page, not a hot path). */
export async function databaseStats(kv: Deno.Kv, db: DatabaseName): Promise<DatabaseStats> {
  const areas = [];
  for (const prefix of DATABASE_PREFIXES[db]) {
    let entries = 0;
    let approxBytes = 0;
    for await (const e of kv.list({ prefix: [prefix] }, { batchSize: 500 })) {
      entries++;
      approxBytes += sizeOf(e.key) + sizeOf(e.value);
    }
    if (entries) areas.push({ prefix, entries, approxBytes });
  }
  // Every mutation writes an audit entry (ULID: time-ordered): the newest one about this database's
  // objects dates its last write. The Results DB also takes engine reports, dated by their keys.
  let lastWrite = 0;
  for await (
    const e of kv.list<{ objectType: string }>({ prefix: auditPrefix() }, { reverse: true, limit: 500 })
  ) {
    if (CONFIG_OBJECTS.has(e.value.objectType) === (db === "config")) {
      lastWrite = Math.max(lastWrite, decodeTime(String(e.key[2])));
      break;
    }
  }
  if (db === "results") {
    for await (const e of kv.list({ prefix: alertsPrefix() }, { reverse: true, limit: 1 })) {
      lastWrite = Math.max(lastWrite, decodeTime(String(e.key[1])));
    }
    for await (const e of kv.list({ prefix: capacitySamplesPrefix() }, { limit: 2000 })) {
      lastWrite = Math.max(lastWrite, Number(e.key[2]));
    }
  }
  return {
    database: db,
    entries: areas.reduce((n, a) => n + a.entries, 0),
    approxBytes: areas.reduce((n, a) => n + a.approxBytes, 0),
    areas,
    lastWriteAt: lastWrite ? new Date(lastWrite).toISOString() : null,
  };
}

/** Readiness: KV answers a write then a read of the readiness probe key (throws when it does not). */
export async function readinessProbe(kv: Deno.Kv, now: Date): Promise<void> {
  await kv.set(probeKey("readyz"), now.toISOString());
  await kv.get(probeKey("readyz"));
}

/** Write-then-read round trip of a probe key, in milliseconds. */
export async function probeLatency(kv: Deno.Kv, now: Date): Promise<{ writeMs: number; readMs: number }> {
  const key = probeKey("health_database");
  const t0 = performance.now();
  await kv.set(key, now.toISOString());
  const t1 = performance.now();
  await kv.get(key);
  const t2 = performance.now();
  return { writeMs: Math.round((t1 - t0) * 100) / 100, readMs: Math.round((t2 - t1) * 100) / 100 };
}
