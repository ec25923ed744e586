/**
 * The agent side of `deno task bench:engine`'s end-to-end row: one first backup of a folder through a BES's
 * data API over HTTPS (`engine/protocol/remote_backend.ts`, the certificate pinned, a job's write token),
 * as the agent's worker does it: the repository created with the data API's `init` if absent, opened with the
 * namespace keys, `backupFiles`. Run as a subprocess by tools/bench_engine.ts (timed with its start-up like
 * the library-only row); prints the backup's result as JSON.
 *
 *   deno run --allow-net --allow-read --allow-env --allow-sys tools/bench_e2e_agent.ts --url URL --cert FILE SRC
 *   (token in BENCH_DATA_TOKEN; keys in BENCH_KEYS: JSON {namespace, dataKey, idKey} with base64 keys)
 *
 * With `--trace`, every storage call is timed by kind and the process's peak memory sampled
 * (tools/bench_trace.ts); the summary goes to stderr.
 */
import { parseArgs } from "node:util";
import { RemoteBackend } from "../engine/protocol/remote_backend.ts";
import { backupFiles } from "../engine/repo/backup.ts";
import { encodeConfig, newConfig } from "../engine/repo/config.ts";
import { Repository } from "../engine/repo/repository.ts";
import { cpuNow, cpuSince, sampleMemory, Spans, TracingBackend } from "./bench_trace.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    url: { type: "string" },
    cert: { type: "string" },
    trace: { type: "boolean", default: false },
    "packs-in-flight": { type: "string" },
  },
  allowPositionals: true,
});
const token = Deno.env.get("BENCH_DATA_TOKEN");
const keysJson = Deno.env.get("BENCH_KEYS");
if (!values.url || !values.cert || positionals.length !== 1 || !token || !keysJson) {
  console.error("usage: bench_e2e_agent.ts --url URL --cert FILE SRC (BENCH_DATA_TOKEN, BENCH_KEYS set)");
  Deno.exit(2);
}
const k = JSON.parse(keysJson) as { namespace: string; dataKey: string; idKey: string };
const keys = {
  namespace: k.namespace,
  dataKey: Uint8Array.fromBase64(k.dataKey),
  idKey: Uint8Array.fromBase64(k.idKey),
};
const remote = new RemoteBackend({
  url: values.url,
  token: () => token,
  caCert: await Deno.readTextFile(values.cert),
});
const cpu0 = cpuNow();
const spans = values.trace ? new Spans() : null;
const memory = values.trace ? sampleMemory() : null;
try {
  await remote.initRepository(encodeConfig(newConfig({}, new Date())));
  const repo = await Repository.openNamespace(spans ? new TracingBackend(remote, spans) : remote, keys);
  const result = await backupFiles(repo.namespace(keys.namespace), {
    paths: [positionals[0]],
    packsInFlight: values["packs-in-flight"] ? Number(values["packs-in-flight"]) : undefined,
  });
  console.log(JSON.stringify(result));
  if (spans && memory) {
    for (const l of spans.report("agent storage calls")) console.error(`TRACE ${l}`);
    console.error(`TRACE agent CPU: ${cpuSince(cpu0)}`);
    console.error(`TRACE agent peak memory (MiB, sampled): ${JSON.stringify(memory())}`);
  }
  if (result.errors.length > 0) {
    console.error(`${result.errors.length} files could not be backed up, e.g. ${result.errors[0].path}`);
    Deno.exit(1);
  }
} finally {
  remote.close();
}
