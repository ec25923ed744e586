import assert from "node:assert/strict";
import { loadMasterKey, parseConfig, testConfig } from "../../domain/config.ts";

/** Parses `env` expecting a refusal; returns the error line. */
function refusal(env: Record<string, string | undefined>): string {
  const result = parseConfig(env);
  if (result.ok) throw new Error(`expected a refusal for ${JSON.stringify(env)}`);
  return result.error;
}

/** Asserts a refusal is exactly one line that names `variable`. */
function assertOneLineNaming(error: string, variable: string) {
  assert.equal(error.split(/\r?\n/).length, 1, `not one line: ${JSON.stringify(error)}`);
  assert.match(error, new RegExp(`\\b${variable}\\b`));
}

Deno.test("parseConfig() applies the documented defaults to an empty environment", () => {
  const result = parseConfig({});
  assert.ok(result.ok);
  assert.deepEqual(result.config, {
    port: 8000,
    dataDir: "./data",
    kvLocation: "./data/cadres.kv",
    masterKey: null,
    baseUrl: "http://localhost:8000",
    secureCookies: false,
    logLevel: "info",
    metricsEnabled: true,
    shutdownSeconds: 25,
    shutdownDrainSeconds: 2,
    faults: [],
  });
});

Deno.test("parseConfig() reads CADRES_METRICS and CADRES_SHUTDOWN_SECONDS", () => {
  const result = parseConfig({ CADRES_METRICS: "off", CADRES_SHUTDOWN_SECONDS: "40" });
  assert.ok(result.ok);
  assert.equal(result.config.metricsEnabled, false);
  assert.equal(result.config.shutdownSeconds, 40);
  assertOneLineNaming(refusal({ CADRES_METRICS: "maybe" }), "CADRES_METRICS");
  assertOneLineNaming(refusal({ CADRES_SHUTDOWN_SECONDS: "0" }), "CADRES_SHUTDOWN_SECONDS");
});

Deno.test("parseConfig() reads CADRES_SHUTDOWN_DRAIN_SECONDS (0 to 60)", () => {
  const result = parseConfig({ CADRES_SHUTDOWN_DRAIN_SECONDS: "0" });
  assert.ok(result.ok);
  assert.equal(result.config.shutdownDrainSeconds, 0);
  assertOneLineNaming(refusal({ CADRES_SHUTDOWN_DRAIN_SECONDS: "61" }), "CADRES_SHUTDOWN_DRAIN_SECONDS");
  assertOneLineNaming(refusal({ CADRES_SHUTDOWN_DRAIN_SECONDS: "-1" }), "CADRES_SHUTDOWN_DRAIN_SECONDS");
});

Deno.test("parseConfig() treats empty variables as unset", () => {
  const result = parseConfig({ PORT: "", CADRES_DATA_DIR: "", CADRES_LOG_LEVEL: "", CADRES_BASE_URL: "" });
  assert.ok(result.ok);
  assert.equal(result.config.port, 8000);
  assert.equal(result.config.dataDir, "./data");
  assert.equal(result.config.logLevel, "info");
});

Deno.test("parseConfig() derives the KV file and default base URL from CADRES_DATA_DIR and PORT", () => {
  const result = parseConfig({ PORT: "9123", CADRES_DATA_DIR: "/var/lib/cadres/" });
  assert.ok(result.ok);
  assert.equal(result.config.port, 9123);
  assert.equal(result.config.dataDir, "/var/lib/cadres");
  assert.equal(result.config.kvLocation, "/var/lib/cadres/cadres.kv");
  assert.equal(result.config.baseUrl, "http://localhost:9123");
});

Deno.test("parseConfig() accepts CADRES_KV=:memory:", () => {
  const result = parseConfig({ CADRES_KV: ":memory:" });
  assert.ok(result.ok);
  assert.equal(result.config.kvLocation, ":memory:");
});

Deno.test("parseConfig() accepts an https:// remote KV URL", () => {
  const url = "https://api.deno.com/databases/5e7e0a7f-0000-4000-8000-000000000000/connect";
  const result = parseConfig({ CADRES_KV: url });
  assert.ok(result.ok);
  assert.equal(result.config.kvLocation, url);
});

Deno.test("parseConfig() refuses a KV URL of another scheme naming CADRES_KV", () => {
  assertOneLineNaming(refusal({ CADRES_KV: "ftp://example.com/db" }), "CADRES_KV");
});

Deno.test("parseConfig() refuses PORT=0 naming the variable", () => {
  const error = refusal({ PORT: "0" });
  assertOneLineNaming(error, "PORT");
  assert.ok(error.includes('"0"'), error);
});

for (const port of ["65536", "80a", "-1", "8000.5"]) {
  Deno.test(`parseConfig() refuses PORT=${port} naming the variable`, () => {
    assertOneLineNaming(refusal({ PORT: port }), "PORT");
  });
}

Deno.test("parseConfig() refuses an unknown log level naming CADRES_LOG_LEVEL", () => {
  const error = refusal({ CADRES_LOG_LEVEL: "verbose" });
  assertOneLineNaming(error, "CADRES_LOG_LEVEL");
  assert.ok(error.includes("debug, info, warn, error"), error);
});

Deno.test("parseConfig() accepts every documented log level", () => {
  for (const level of ["debug", "info", "warn", "error"]) {
    const result = parseConfig({ CADRES_LOG_LEVEL: level });
    assert.ok(result.ok, level);
    assert.equal(result.config.logLevel, level);
  }
});

Deno.test("parseConfig() refuses a master key that is not 32 bytes, without echoing it", () => {
  const short = btoa("sixteen-byte-key");
  const error = refusal({ CADRES_MASTER_KEY: short });
  assertOneLineNaming(error, "CADRES_MASTER_KEY");
  assert.ok(!error.includes(short), "the refused master key must not be echoed");
});

Deno.test("parseConfig() refuses a master key that is not base64 naming CADRES_MASTER_KEY", () => {
  assertOneLineNaming(refusal({ CADRES_MASTER_KEY: "not base64 at all!!" }), "CADRES_MASTER_KEY");
});

Deno.test("parseConfig() decodes a base64 master key of 32 bytes", () => {
  const bytes = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
  const result = parseConfig({ CADRES_MASTER_KEY: btoa(String.fromCharCode(...bytes)) });
  assert.ok(result.ok);
  assert.deepEqual(result.config.masterKey, bytes);
});

for (const url of ["localhost:8000", "ftp://cadres.example", "not a url"]) {
  Deno.test(`parseConfig() refuses CADRES_BASE_URL=${url} naming the variable`, () => {
    assertOneLineNaming(refusal({ CADRES_BASE_URL: url }), "CADRES_BASE_URL");
  });
}

Deno.test("parseConfig() strips the trailing slash of an https base URL and enables secure cookies", () => {
  const result = parseConfig({ CADRES_BASE_URL: "https://backup.example.com/" });
  assert.ok(result.ok);
  assert.equal(result.config.baseUrl, "https://backup.example.com");
  assert.equal(result.config.secureCookies, true);
});

Deno.test("parseConfig() keeps the refusal on one line when the value contains a newline", () => {
  const error = refusal({ CADRES_LOG_LEVEL: "info\nInvalid configuration: forged second line" });
  assertOneLineNaming(error, "CADRES_LOG_LEVEL");
});

Deno.test("loadMasterKey() creates master.key with mode 0600 and reuses it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-key-" });
  try {
    const dataDir = `${dir}/nested/data`;
    const config = testConfig({ masterKey: null, dataDir });
    const key = await loadMasterKey(config);
    assert.equal(key.length, 32);
    const info = await Deno.stat(`${dataDir}/master.key`);
    assert.equal(info.mode! & 0o777, 0o600);
    assert.deepEqual(await loadMasterKey(config), key);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadMasterKey() refuses a key file readable by other users", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-key-" });
  try {
    const config = testConfig({ masterKey: null, dataDir: dir });
    await loadMasterKey(config);
    await Deno.chmod(`${dir}/master.key`, 0o644);
    await assert.rejects(() => loadMasterKey(config), /readable by other users/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadMasterKey() prefers the configured key and writes no file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-key-" });
  try {
    const configured = new Uint8Array(32).fill(9);
    assert.deepEqual(await loadMasterKey(testConfig({ masterKey: configured, dataDir: dir })), configured);
    assert.equal([...Deno.readDirSync(dir)].length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseConfig() accepts CADRES_KV=deploy (Deno Deploy's database), which is no local file", async () => {
  const result = parseConfig({ CADRES_KV: "deploy" });
  assert.ok(result.ok);
  assert.equal(result.config.kvLocation, "deploy");
  const { isLocalKvPath } = await import("../../domain/kv.ts");
  assert.equal(isLocalKvPath("deploy"), false);
  assert.equal(isLocalKvPath("./data/cadres.kv"), true);
});
