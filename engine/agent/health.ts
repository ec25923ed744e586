/**
 * A relay agent's `health_check` of a storage target (payload `target`: {id, type, config}, connection
 * settings only): the target's endpoint is probed from this host — an HTTP request to an S3 endpoint (any
 * HTTP answer means reachable), a TCP connection to an SMB (445), NFS (2049) or iSCSI (3260) server — and
 * the latency measured. A Local target is a folder on its BES, which this agent cannot see: it is not
 * probed (the BES reports its capacity).
 */

/** The result's `probe`. */
export interface Probe {
  reachable: boolean | null;
  latencyMs: number | null;
  error: string | null;
  endpoint: string | null;
}

/** Where to probe a target, or why it is not probed. */
export function probeEndpoint(
  target: { type?: unknown; config?: unknown },
): { kind: "http"; url: string } | { kind: "tcp"; host: string; port: number } | {
  kind: "none";
  why: string;
} {
  const config = (target.config ?? {}) as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" && v.trim() ? v.trim() : null);
  switch (target.type) {
    case "s3":
    case "s3_compatible": {
      const endpoint = str(config.endpoint) ??
        (str(config.region) ? `https://s3.${str(config.region)}.amazonaws.com` : "https://s3.amazonaws.com");
      return { kind: "http", url: endpoint };
    }
    case "smb":
      return str(config.server)
        ? { kind: "tcp", host: str(config.server)!, port: 445 }
        : { kind: "none", why: "no server" };
    case "nfs":
      return str(config.server)
        ? { kind: "tcp", host: str(config.server)!, port: 2049 }
        : { kind: "none", why: "no server" };
    case "iscsi": {
      const portal = str(config.portal);
      if (!portal) return { kind: "none", why: "no portal" };
      const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(portal);
      return { kind: "tcp", host: m?.[1] ?? portal, port: Number(m?.[2] ?? 3260) };
    }
    case "local":
      return {
        kind: "none",
        why: "a Local target is a folder on its BES: an agent cannot probe it (the BES reports its capacity)",
      };
    default:
      return { kind: "none", why: `unknown target type ${String(target.type)}` };
  }
}

/** Probes `target` within `timeoutMs`. */
export async function probeTarget(
  target: { type?: unknown; config?: unknown },
  timeoutMs = 10_000,
): Promise<Probe> {
  const where = probeEndpoint(target);
  if (where.kind === "none") return { reachable: null, latencyMs: null, error: where.why, endpoint: null };
  const t0 = performance.now();
  const ms = () => Math.round((performance.now() - t0) * 10) / 10;
  if (where.kind === "http") {
    try {
      const res = await fetch(where.url, { method: "HEAD", signal: AbortSignal.timeout(timeoutMs) });
      await res.body?.cancel();
      return { reachable: true, latencyMs: ms(), error: null, endpoint: where.url };
    } catch (e) {
      return { reachable: false, latencyMs: null, error: errorText(e), endpoint: where.url };
    }
  }
  const endpoint = `${where.host}:${where.port}`;
  const connecting = Deno.connect({ hostname: where.host, port: where.port });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const conn = await Promise.race([
      connecting,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    const latencyMs = ms();
    conn.close();
    return { reachable: true, latencyMs, error: null, endpoint };
  } catch (e) {
    // A connection that completes after the timeout is closed at once.
    connecting.then((c) => c.close(), () => {});
    return { reachable: false, latencyMs: null, error: errorText(e), endpoint };
  } finally {
    clearTimeout(timer);
  }
}

function errorText(e: unknown): string {
  const err = e as Error & { cause?: { message?: string } };
  return err?.cause?.message ? `${err.message} (${err.cause.message})` : String(err?.message ?? e);
}
