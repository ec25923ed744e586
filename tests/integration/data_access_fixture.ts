/**
 * The world of the data-token and key-delivery tests: an app on an in-memory KV, a tenant, a BES that
 * registered (over HTTP, signed) with its data URL and certificate and heartbeats, a Local target, a
 * file policy, and two agents of the same org enrolled over HTTP, the first assigned to the policy.
 */
import assert from "node:assert/strict";
import { testConfig } from "../../domain/config.ts";
import { assignHost } from "../../domain/assignments.ts";
import { type Job } from "../../domain/job_queue.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import type { EngineClient, EngineIdentity } from "../../tools/engine_client.ts";
import { BES_CERT } from "../fixtures/certificates.ts";
import { createTenant, engineClient, engineMetrics, targetInput, testApp, TestClock } from "../helpers.ts";

export const MASTER_KEY = testConfig().masterKey!;
export const system = systemActor("test");
export const DATA_URL = "https://bes-1.acme.example:8443";

/** A registration reply, or its refusal. */
export interface RegistrationReply {
  id: string;
  tokenPublicKey: string;
  error: { code: string; message: string; fields: Record<string, string> };
}

/** Registers a BES over HTTP with a data API (or the given fields) and sends a heartbeat. */
export async function registerBesWithDataApi(
  client: EngineClient,
  secret: string,
  fields: Record<string, unknown> = { dataUrl: DATA_URL, certificate: BES_CERT },
  name = "bes-1",
): Promise<{ identity: EngineIdentity; body: RegistrationReply; status: number }> {
  const keys = generateKeyPair();
  const res = await client.sendRegistration("bes", secret, keys.privateKey, {
    name,
    deploymentModel: "on_premise",
    publicKey: keys.publicKey,
    hostname: `${name}.acme.example`,
    ipAddress: "10.0.0.10",
    port: 8443,
    version: "1.0.0",
    ...fields,
  });
  const body = await res.json();
  const identity: EngineIdentity = { kind: "bes", id: body.id, ...keys };
  if (res.status < 300) assert.equal((await client.heartbeat(identity, engineMetrics())).status, 200);
  return { identity, body, status: res.status };
}

export async function dataWorld() {
  const kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const t = testApp(kv, clock);
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], clock.now());
  const secret = tenant.secrets[0];
  const client = engineClient(t.app, clock);
  const registered = await registerBesWithDataApi(client, secret);
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  const bes = registered.identity;
  const target = await createTarget(kv, system, targetInput(bes.id), {
    now: clock.now(),
    masterKey: MASTER_KEY,
  });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: bes.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, clock.now());
  const enroll = async (hostname: string) => {
    const { identity, response } = await client.enrollAgent(secret, { hostname, ipAddress: "10.1.0.5" });
    assert.equal(response.status, 201);
    assert.equal((await client.heartbeat(identity, engineMetrics())).status, 200);
    return identity;
  };
  const agent = await enroll("web01.acme.example");
  const otherAgent = await enroll("web02.acme.example");
  await assignHost(kv, system, { policyId: policy.id, hostId: agent.id }, clock.now());
  return {
    kv,
    ...t,
    clock,
    tenant,
    client,
    bes,
    tokenPublicKey: String(registered.body.tokenPublicKey),
    target,
    policy,
    agent,
    otherAgent,
    [Symbol.asyncDispose]() {
      kv.close();
      return Promise.resolve();
    },
  };
}
export type DataWorld = Awaited<ReturnType<typeof dataWorld>>;

/** POSTs a signed engine request and returns status and parsed body. */
export async function call(w: DataWorld, who: EngineIdentity, path: string, payload: unknown = {}) {
  const res = await w.client.post(who, path, payload);
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null, text };
}

/** Claims jobs as `who`; returns the claim reply's jobs. */
export async function claim(w: DataWorld, who: EngineIdentity, max = 10) {
  const res = await call(w, who, `/api/${who.kind}/v1/jobs/claim`, { max });
  assert.equal(res.status, 200, res.text);
  return res.body.jobs as Array<
    Pick<Job, "id" | "kind" | "payload"> & {
      dataToken: string | null;
      dataTokenExpiresAt: string | null;
      replicaDataToken: string | null;
    }
  >;
}

/** Runs the policy now for the first agent and claims its backup job as that agent. */
export async function claimedBackup(w: DataWorld) {
  await runPolicyNow(w.kv, system, w.policy.id, { kind: "full" }, w.clock.now());
  const jobs = await claim(w, w.agent);
  assert.equal(jobs.length, 1);
  assert.equal(jobs[0].kind, "backup");
  return jobs[0];
}

/** Posts a successful backup result with a restore point; returns our restore point id. */
export async function finishBackup(w: DataWorld, jobId: string, engineId = "rp-1"): Promise<string> {
  const now = w.clock.now().toISOString();
  const res = await call(w, w.agent, `/api/agent/v1/jobs/${jobId}/result`, {
    status: "success",
    startedAt: now,
    endedAt: now,
    bytesTransferred: 10,
    protectedBytes: 10,
    output: { restorePoint: { id: engineId, chainId: "c1", type: "full", sizeBytes: 10, fileCount: 1 } },
  });
  assert.equal(res.status, 200, res.text);
  for await (const e of w.kv.list<{ id: string; runId: string }>({ prefix: ["restore_points"] })) {
    if ((e.value as { engineRestorePointId?: string }).engineRestorePointId === engineId) return e.value.id;
  }
  throw new Error("no restore point was recorded");
}
