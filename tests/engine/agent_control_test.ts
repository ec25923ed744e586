/**
 * The agent's control-plane link re-sends a result the control plane could not take now — 503 `busy` (a
 * commit lost its races), another 5xx, a network failure — newly signed each time, with jittered backoff
 * that honours Retry-After, logging each retry with the job id; a 409 is final. Against a fake control plane.
 */
import assert from "node:assert/strict";
import { ControlPlane, type JobResultBody } from "../../engine/agent/control.ts";
import { ControlPlaneError } from "../../engine/agent/failure.ts";
import { generateKeyPair } from "../../engine/protocol/signing.ts";

const JOB_ID = "01KJOB00000000000000000000";
const RESULT: JobResultBody = {
  status: "success",
  startedAt: "2026-12-06T10:00:00.000Z",
  endedAt: "2026-12-06T10:05:00.000Z",
  bytesTransferred: 10,
  protectedBytes: 10,
  error: null,
  retryable: false,
  output: null,
};

/** A fake control plane answering the result endpoint from `script`, then 200 `{ applied }`. */
function fake(
  script: Array<{ status: number; code: string; retryAfter?: string; record?: boolean } | "network">,
) {
  const sends: { nonce: string; body: unknown }[] = [];
  const lines: string[] = [];
  const waits: number[] = [];
  let recorded = 0;
  let clock = 0;
  const control = new ControlPlane("http://cp.test", {
    fetcher: (url, init) => {
      assert.equal(new URL(url).pathname, `/api/agent/v1/jobs/${JOB_ID}/result`);
      const headers = init.headers as Record<string, string>;
      sends.push({ nonce: headers["x-cadres-nonce"], body: JSON.parse(String(init.body)) });
      const step = script.shift();
      if (step === "network") throw new TypeError("error sending request: connection reset");
      if (step) {
        if (step.record) recorded++;
        return Response.json({ error: { code: step.code, message: "try again" } }, {
          status: step.status,
          headers: step.retryAfter ? { "retry-after": step.retryAfter } : {},
        });
      }
      recorded++;
      return Response.json({ applied: recorded === 1 });
    },
    log: (level, message) => lines.push(`${level} ${message}`),
    retry: {
      sleep: (ms) => {
        waits.push(ms);
        clock += ms;
        return Promise.resolve();
      },
      now: () => clock,
    },
  });
  control.useIdentity({ id: "01KAGENT000000000000000000", ...generateKeyPair() });
  return { control, sends, lines, waits, recorded: () => recorded };
}

Deno.test("agent result: 503 busy twice then 200: delivered once, a fresh nonce each send, each retry logged with the job id", async () => {
  const f = fake([
    { status: 503, code: "busy", retryAfter: "2" },
    { status: 503, code: "busy", retryAfter: "2" },
  ]);
  assert.equal(await f.control.result(JOB_ID, RESULT), true);
  assert.equal(f.sends.length, 3);
  assert.equal(f.recorded(), 1, "recorded exactly once");
  assert.equal(new Set(f.sends.map((s) => s.nonce)).size, 3, "newly signed each time");
  assert.ok(f.sends.every((s) => JSON.stringify(s.body) === JSON.stringify(RESULT)));
  assert.equal(f.lines.length, 2);
  for (const [i, line] of f.lines.entries()) {
    assert.match(
      line,
      new RegExp(`^warn Cannot post the result of job ${JOB_ID}: 503 busy: .*; retry ${i + 1} in \\d+ ms$`),
    );
  }
  assert.ok(f.waits.every((w) => w >= 2000), `Retry-After honoured: ${f.waits}`);
});

Deno.test("agent result: recorded but the answer lost: the re-send is answered already applied (false), not applied again", async () => {
  const f = fake([{ status: 502, code: "bad_gateway", record: true }, "network"]);
  assert.equal(await f.control.result(JOB_ID, RESULT), false, "applied: false — the first send was recorded");
  assert.equal(f.sends.length, 3);
  assert.equal(f.lines.length, 2);
  assert.match(f.lines[1], /unreachable .*connection reset.*; retry 2 in/);
  // Jittered exponential backoff from 1 s: within [½, 1] of 1 s · 2^(retry − 1).
  assert.ok(
    f.waits[0] >= 500 && f.waits[0] <= 1000 && f.waits[1] >= 1000 && f.waits[1] <= 2000,
    `${f.waits}`,
  );
});

Deno.test("agent result: a 409 (the job is no longer this agent's) is final: thrown at once, not re-sent", async () => {
  const f = fake([{ status: 409, code: "conflict" }]);
  const error = await f.control.result(JOB_ID, RESULT).then(() => null, (e) => e);
  assert.ok(error instanceof ControlPlaneError && error.status === 409, String(error));
  assert.equal(f.sends.length, 1);
  assert.deepEqual(f.lines, []);
});

Deno.test("agent result: busy past its patience: the last refusal is thrown (the caller logs it), within the patience", async () => {
  const f = fake(Array.from({ length: 40 }, () => ({ status: 503, code: "busy" })));
  const error = await f.control.result(JOB_ID, RESULT, 5_000).then(() => null, (e) => e);
  assert.ok(
    error instanceof ControlPlaneError && error.status === 503 && error.code === "busy",
    String(error),
  );
  assert.ok(f.waits.reduce((a, b) => a + b, 0) <= 5_000, `within the patience: ${f.waits}`);
  assert.ok(f.sends.length >= 3, `${f.sends.length} sends`);
});

/** A fake control plane answering `…/jobs/{id}/key` from `script`, then the keys. */
function fakeKeys(script: Array<{ status: number; code: string; retryAfter?: string } | "network">) {
  const nonces: string[] = [];
  const lines: string[] = [];
  const waits: number[] = [];
  let clock = 0;
  const key = (n: number) => new Uint8Array(32).fill(n).toBase64();
  const control = new ControlPlane("http://cp.test", {
    fetcher: (url, init) => {
      assert.equal(new URL(url).pathname, `/api/agent/v1/jobs/${JOB_ID}/key`);
      nonces.push((init.headers as Record<string, string>)["x-cadres-nonce"]);
      const step = script.shift();
      if (step === "network") throw new TypeError("error sending request: connection reset");
      if (step) {
        return Response.json({ error: { code: step.code, message: "every commit lost its race" } }, {
          status: step.status,
          headers: step.retryAfter ? { "retry-after": step.retryAfter } : {},
        });
      }
      return Response.json({ namespace: "ns1", repository: null, dataKey: key(1), idKey: key(2) });
    },
    log: (level, message) => lines.push(`${level} ${message}`),
    retry: {
      sleep: (ms) => {
        waits.push(ms);
        clock += ms;
        return Promise.resolve();
      },
      now: () => clock,
    },
  });
  control.useIdentity({ id: "01KAGENT000000000000000000", ...generateKeyPair() });
  return { control, nonces, lines, waits };
}

Deno.test("agent job keys: 503 busy twice (and a network failure) then the keys: asked again with the results' backoff, newly signed, logged with the job id", async () => {
  const f = fakeKeys([{ status: 503, code: "busy", retryAfter: "1" }, "network", {
    status: 503,
    code: "busy",
  }]);
  const keys = await f.control.keys(JOB_ID);
  assert.equal(keys.namespace, "ns1");
  assert.deepEqual(keys.dataKey, new Uint8Array(32).fill(1));
  assert.equal(f.nonces.length, 4);
  assert.equal(new Set(f.nonces).size, 4, "each send newly signed");
  assert.equal(f.lines.length, 3);
  assert.match(
    f.lines[0],
    new RegExp(`^warn Cannot fetch the keys of job ${JOB_ID}: 503 busy: .*; retry 1 in \\d+ ms$`),
  );
  assert.ok(f.lines.every((l) => !/dataKey|AQEB/.test(l)), "no key in the log");
  // The same jittered exponential backoff as a result: within [½, 1] of 1 s · 2^(retry − 1), Retry-After honoured.
  assert.ok(f.waits[0] >= 1000 && f.waits[0] <= 1000, `${f.waits}`);
  assert.ok(f.waits[1] >= 1000 && f.waits[1] <= 2000, `${f.waits}`);
  assert.ok(f.waits[2] >= 2000 && f.waits[2] <= 4000, `${f.waits}`);
});

Deno.test("agent job keys: a 409 is final (asked once); busy past the patience throws the last 503 within it", async () => {
  const refused = fakeKeys([{ status: 409, code: "job_not_running" }]);
  const e409 = await refused.control.keys(JOB_ID).then(() => null, (e) => e);
  assert.ok(e409 instanceof ControlPlaneError && e409.status === 409, String(e409));
  assert.equal(refused.nonces.length, 1);
  assert.deepEqual(refused.lines, []);

  const busy = fakeKeys(Array.from({ length: 100 }, () => ({ status: 503, code: "busy" })));
  const e503 = await busy.control.keys(JOB_ID).then(() => null, (e) => e);
  assert.ok(e503 instanceof ControlPlaneError && e503.status === 503 && e503.code === "busy", String(e503));
  assert.ok(busy.waits.reduce((a, b) => a + b, 0) <= 60_000, "within KEY_RETRY_BUDGET_MS");
  assert.ok(busy.nonces.length >= 4, `${busy.nonces.length} sends`);
});
