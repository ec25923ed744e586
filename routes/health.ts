/** Liveness and readiness probes. */
import { Hono } from "hono";
import { readinessProbe } from "../domain/db_health.ts";
import { publicAccess } from "./access.ts";
import type { AppEnv } from "./env.ts";

export const healthRoutes = new Hono<AppEnv>();

healthRoutes.get("/healthz", publicAccess(), (c) => c.json({ status: "ok" }));

/** Ready when KV answers a read and a write. */
healthRoutes.get("/readyz", publicAccess(), async (c) => {
  const { kv, clock } = c.get("deps");
  try {
    const started = performance.now();
    await readinessProbe(kv, clock());
    return c.json({ status: "ready", kvLatencyMs: Math.round((performance.now() - started) * 100) / 100 });
  } catch {
    return c.json({
      status: "unavailable",
      error: { code: "kv_unreachable", message: "KV is not reachable" },
    }, 503);
  }
});
