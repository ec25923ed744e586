/**
 * The BES's bare-metal restore service (engine/bes/bmr.ts) on its own: a token that is never redeemed ends
 * the job with the instructions; guessing tokens is answered 404, then 429; a redeemed session that goes
 * silent ends the job; a point of a file backup is refused; the control plane's refusal is passed on.
 */
import assert from "node:assert/strict";
import { BmrService } from "../../engine/bes/bmr.ts";
import type { JobKeyProvider } from "../../engine/bes/job_keys.ts";
import type { ClaimedJob, JobContext, JobOutcome } from "../../engine/bes/jobs.ts";
import { createLogger } from "../../engine/bes/log.ts";
import type { TargetInfo } from "../../engine/bes/storage.ts";
import { EngineClient } from "../../engine/protocol/client.ts";
import { generateKeyPair } from "../../engine/protocol/signing.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { sha256Hex } from "../../engine/repo/chunk_id.ts";
import { backupImage } from "../../engine/repo/image.ts";
import { namespaceKeysOpener } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const NS = "01KHOST0000000000000000000";
const T = "01KTARGET0000000000000000A";
const REPO = { target: T, path: "cadres/POL1/g1", generation: 1 };

async function fixture(root: string) {
  const keys = {
    namespace: NS,
    dataKey: crypto.getRandomValues(new Uint8Array(32)),
    idKey: crypto.getRandomValues(new Uint8Array(32)),
  };
  const repo = await Repository.init(
    new LocalBackend(`${root}/target/${REPO.path}`),
    namespaceKeysOpener(keys),
    { namespace: NS, packTargetBytes: 64 * 1024 },
  );
  await Deno.writeFile(`${root}/disk.img`, deterministicBytes("disk", 100_000));
  const image = (await backupImage(repo.namespace(NS), { path: `${root}/disk.img` })).snapshotId;
  await Deno.mkdir(`${root}/files`);
  await Deno.writeFile(`${root}/files/a`, new Uint8Array([1]));
  const files = (await backupFiles(repo.namespace(NS), { paths: [`${root}/files`] })).snapshotId;
  return { keys, image, files };
}

function service(root: string, now: () => number, redeem: (body: unknown) => Response) {
  const t: TargetInfo = {
    id: T,
    name: "local",
    type: "local",
    config: { path: `${root}/target` },
    credentials: null,
    updatedAt: "1",
  };
  const keys: JobKeyProvider = () => Promise.reject(new Error("no keys in this test"));
  const client = new EngineClient(
    "http://cp.test",
    (_url, init) => redeem(JSON.parse(String(init.body))),
  );
  return new BmrService({
    client,
    identity: () => ({ kind: "bes", id: "01KBES00000000000000000000", ...generateKeyPair() }),
    keys,
    services: {
      targets: { find: (id) => Promise.resolve(id === T ? t : null), all: () => [t] },
      open: { mounts: "/nonexistent" },
    },
    dataUrl: () => "https://10.0.0.5:8443",
    certFile: "/var/lib/cadres-bes/tls/cert.pem",
    log: createLogger("error"),
    now,
    pollMs: 5,
  });
}

function ctx(payload: Record<string, unknown>): JobContext & { messages: string[] } {
  const messages: string[] = [];
  const job: ClaimedJob = {
    id: "01KJOB00000000000000000000",
    kind: "bmr",
    priority: "critical",
    payload,
    leaseExpiresAt: "",
    dataToken: "cdt1.read-token",
  };
  return {
    job,
    signal: new AbortController().signal,
    lastProgressReply: null,
    progress: (u) => void (u.message && messages.push(u.message)),
    reportNow: () => Promise.resolve(null),
    uploadParts: () => Promise.reject(new Error("no parts")),
    log: createLogger("error"),
    messages,
  };
}

const redeem = (bmr: BmrService, token: string, address = "10.9.9.9") =>
  bmr.fetch(
    new Request("https://bes/api/bmr/v1/redeem", { method: "POST", body: JSON.stringify({ token }) }),
    address,
  );

Deno.test("bmr: the job waits with the instructions; a token never redeemed ends it BMR_TOKEN_EXPIRED; guesses are 404, then 429", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  let clock = Date.parse("2026-12-01T10:00:00Z");
  const bmr = service(dir.path, () => clock, () => Response.json({}, { status: 500 }));
  const token = crypto.randomUUID();
  const c = ctx({
    restoreId: "R1",
    restorePointId: "RP1",
    engineRestorePointId: f.image,
    policyId: "POL1",
    repository: REPO,
    tokenId: sha256Hex(new TextEncoder().encode(token)),
    tokenExpiresAt: "2026-12-01T14:00:00Z",
  });
  const running = bmr.handler()(c);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(bmr.waiting, 1);
  assert.match(c.messages[0], /^Waiting for the machine\. Boot any live environment/);
  assert.match(c.messages[0], /deno task agent recover --bes https:\/\/10\.0\.0\.5:8443 --bes-cert FILE/);
  // Wrong tokens: 404 each, and an address that keeps guessing is stopped.
  for (let i = 0; i < 20; i++) assert.equal((await redeem(bmr, crypto.randomUUID()))!.status, 404);
  assert.equal((await redeem(bmr, token))!.status, 429, "even the right token, from that address");
  assert.equal(
    await bmr.fetch(new Request("https://bes/api/data/v1/objects"), "10.9.9.9"),
    null,
    "other paths are not the service's",
  );
  clock = Date.parse("2026-12-01T14:00:01Z");
  const out: JobOutcome = await running;
  assert.equal(out.status, "failed");
  assert.equal(out.error?.reason, "BMR_TOKEN_EXPIRED");
  assert.match(out.error!.message, /start a new bare-metal restore\. Boot any live environment/);
  assert.equal(
    (out.output!.bmr as { command: string }).command,
    "deno task agent recover --bes https://10.0.0.5:8443 --bes-cert FILE --token TOKEN --disk PATH",
  );
  assert.equal(bmr.waiting, 0);
});

Deno.test("bmr: the control plane's refusal of a token is passed on and nothing is handed out; a file backup's point is refused", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  const seen: unknown[] = [];
  const bmr = service(dir.path, () => Date.now(), (body) => {
    seen.push(body);
    return Response.json({ error: { code: "conflict", message: "This token was already used" } }, {
      status: 409,
    });
  });
  const token = crypto.randomUUID();
  const payload = {
    restoreId: "R1",
    restorePointId: "RP1",
    engineRestorePointId: f.image,
    policyId: "POL1",
    repository: REPO,
    tokenId: sha256Hex(new TextEncoder().encode(token)),
    tokenExpiresAt: new Date(Date.now() + 60_000).toISOString(),
  };
  const controller = new AbortController();
  const c = { ...ctx(payload), signal: controller.signal };
  const running = bmr.handler()(c);
  await new Promise((r) => setTimeout(r, 30));
  const res = await redeem(bmr, token);
  assert.equal(res!.status, 409);
  const body = await res!.json();
  assert.equal(body.error.message, "This token was already used");
  assert.equal(body.dataKey, undefined);
  assert.deepEqual(seen, [{ token }]);
  controller.abort(new Error("cancelled"));
  await assert.rejects(running, /cancelled/);

  await assert.rejects(
    bmr.handler()(ctx({ ...payload, engineRestorePointId: f.files })),
    (e: unknown) =>
      (e as { reason?: string }).reason === "NOT_APPLICABLE" && /image backup/.test((e as Error).message),
  );
});
