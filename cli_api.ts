/**
 * The CLI's automation verbs: `deno task cli hosts list`, `policies list|get|create|run`, `assign`,
 * `restore files`, `runs list` — a thin client of the JSON API `/api/v1` with an API token, so a script
 * does what an operator does in the browser, under the same permissions, scope, validation and audit.
 * It never opens the database: the server may be remote, and it stays running.
 *
 * Output: a human table by default; with `--json`, exactly one JSON object on stdout. A refusal prints the
 * API's error message (and, with `--json`, `{"error":{"status","code","message","fields"?}}`) and exits 1.
 */
import { parseArgs } from "node:util";

export const API_USAGE = `Automation (over the JSON API with an API token; the server keeps running):
  hosts list [--status S] [--q TEXT] [--org ID]         list managed hosts (every page)
  hosts get HOST                                        a host with its policy assignments
  policies list                                         list policies (every page)
  policies get POLICY                                   one policy with its next full runs
  policies create --file policy.json                    create a policy from a JSON body (--file - reads stdin)
  policies run POLICY [--kind full|incremental|synthetic_full] [--host H]...
                                                        run a policy now (default: full, on every active host)
  assign --policy POLICY --host H [--host H]...         assign hosts to a policy (each result reported)
  restore files --point R --path P [--path P]... --target-path T [--target-host H] [--overwrite] [--wait]
                                                        restore files; --wait follows it to the end
  runs list [--status S] [--policy P] [--host H] [--limit N]
                                                        runs, newest first (default 50, at most 200)

  POLICY is a policy id or its exact name; HOST an id or its hostname.
  --url URL (or CADRES_URL) is the server, e.g. https://cadres.example.com; --token T (or CADRES_TOKEN) an
  API token (create-token, or Admin > API tokens). Prefer CADRES_TOKEN: a --token shows in the process list.`;

const API_COMMANDS = new Set(["hosts", "policies", "assign", "restore", "runs"]);

const OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", default: false },
  file: { type: "string" },
  policy: { type: "string" },
  host: { type: "string", multiple: true },
  point: { type: "string" },
  path: { type: "string", multiple: true },
  "target-path": { type: "string" },
  "target-host": { type: "string" },
  overwrite: { type: "boolean", default: false },
  wait: { type: "boolean", default: false },
  timeout: { type: "string" },
  kind: { type: "string" },
  status: { type: "string" },
  q: { type: "string" },
  org: { type: "string" },
  limit: { type: "string" },
} as const;

/** The automation verb `args` name, or null when they are one of the database commands. */
export function apiCommandOf(args: string[]): string | null {
  const { positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: false });
  const first = positionals[0];
  return typeof first === "string" && API_COMMANDS.has(first) ? first : null;
}

/** A refusal of the CLI itself (bad arguments, nothing found): exit 1 with its message. */
class UsageError extends Error {}

/** An error answer of the API, in its shape `{error: {code, message, fields?}}`. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields?: Record<string, string>,
  ) {
    super(message);
  }
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** The API client: base URL and token, JSON in and out, the error shape turned into ApiError. */
class Api {
  constructor(readonly base: string, readonly token: string) {}

  async call(method: string, path: string, body?: unknown): Promise<Json> {
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new UsageError(`Cannot reach ${this.base}: ${(e as Error).message}`);
    }
    const text = await res.text();
    let parsed: Json = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: reported below
    }
    if (!res.ok) {
      const error = parsed?.error;
      if (error && typeof error.message === "string") {
        throw new ApiError(res.status, String(error.code ?? "error"), error.message, error.fields);
      }
      throw new ApiError(res.status, "http_error", `${method} ${path} answered HTTP ${res.status}`);
    }
    if (text && parsed === null) {
      throw new ApiError(
        res.status,
        "bad_answer",
        `${method} ${path} did not answer JSON (is --url the server?)`,
      );
    }
    return parsed;
  }

  /**
   * Every page of a list. A `{values, cursor}` list is followed by passing `cursor` back (`"cursor"`: hosts,
   * runs, assignments…) or, for the offset-paged lists whose cursor is the next offset (policies), as `offset`.
   */
  async all(
    path: string,
    query: Record<string, string | undefined> = {},
    paging: "cursor" | "offset" = "cursor",
  ): Promise<Json[]> {
    const values: Json[] = [];
    let cursor = "";
    for (let pages = 0; pages < 10_000; pages++) {
      const at = paging === "offset" ? { offset: cursor || "0" } : { cursor };
      const page = await this.call("GET", `${path}?${params({ ...query, ...at, limit: "200" })}`);
      values.push(...page.values);
      if (!page.cursor) return values;
      cursor = page.cursor;
    }
    throw new UsageError(`${path}: too many pages`);
  }
}

function params(query: Record<string, string | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== "") p.set(k, v);
  return p.toString();
}

const ID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** A policy by id or exact name (one, or a clear error). */
async function resolvePolicy(api: Api, ref: string): Promise<Json> {
  if (ID.test(ref)) return await api.call("GET", `/api/v1/policies/${ref}`);
  const matches = (await api.all("/api/v1/policies", {}, "offset")).filter((p) => p.name === ref);
  if (matches.length === 0) throw new UsageError(`No policy named "${ref}" in your scope`);
  if (matches.length > 1) {
    throw new UsageError(
      `Several policies are named "${ref}" (${matches.map((p) => p.id).join(", ")}): give the id`,
    );
  }
  return matches[0];
}

/**
 * Host ids for ids or hostnames (case-insensitive), every reference resolved or one error naming those that
 * are not; `hostnames` (when given) learns the hostname of each host found by name.
 */
async function resolveHosts(api: Api, refs: string[], hostnames?: Map<string, string>): Promise<string[]> {
  const names = refs.filter((r) => !ID.test(r));
  const byName = new Map<string, Json[]>();
  if (names.length) {
    for (const h of await api.all("/api/v1/hosts")) {
      const key = String(h.hostname).toLowerCase();
      byName.set(key, [...(byName.get(key) ?? []), h]);
    }
  }
  const problems: string[] = [];
  const ids = refs.map((ref) => {
    if (ID.test(ref)) return ref;
    const found = byName.get(ref.toLowerCase()) ?? [];
    if (found.length === 0) problems.push(`no host named "${ref}" in your scope`);
    if (found.length > 1) {
      problems.push(`several hosts are named "${ref}" (${found.map((h) => h.id).join(", ")}): give the id`);
    }
    if (found.length === 1) hostnames?.set(found[0].id, found[0].hostname);
    return found[0]?.id ?? ref;
  });
  if (problems.length) throw new UsageError(problems.join("; "));
  return [...new Set(ids)];
}

/** Left-aligned columns; "—" for empty cells. */
function table(headers: string[], rows: unknown[][]): string {
  const cells = rows.map((r) => r.map((v) => (v === null || v === undefined || v === "" ? "—" : String(v))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((v, i) => v.padEnd(widths[i])).join("  ").trimEnd();
  return [line(headers), ...cells.map(line)].join("\n");
}

function facts(pairs: Array<[string, unknown]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v === null || v === undefined || v === "" ? "—" : v}`)
    .join("\n");
}

async function readBody(file: string): Promise<Json> {
  const text = file === "-"
    ? await new Response(Deno.stdin.readable).text()
    : await Deno.readTextFile(file).catch((e) => {
      throw new UsageError(`Cannot read ${file}: ${(e as Error).message}`);
    });
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** The result of a verb: its JSON object, its human text, and its exit code. */
interface Outcome {
  json: Record<string, unknown>;
  text: string;
  code?: number;
}

const TERMINAL_RESTORE = new Set(["success", "warning", "failed"]);

async function run(
  api: Api,
  args: string[],
  v: Json,
  sleep: (ms: number) => Promise<void>,
): Promise<Outcome> {
  const [command, sub, target] = args;
  const need = (name: string): string => {
    const value = v[name];
    if (typeof value !== "string" || !value) throw new UsageError(`Missing --${name}`);
    return value;
  };
  const verb = `${command}${sub ? ` ${sub}` : ""}`;
  switch (command === "assign" ? "assign" : verb) {
    case "hosts list": {
      const hosts = await api.all("/api/v1/hosts", { status: v.status, q: v.q, orgId: v.org });
      return {
        json: { values: hosts, total: hosts.length },
        text: hosts.length === 0 ? "No hosts." : table(
          ["HOSTNAME", "ID", "STATUS", "OS", "IP", "LAST HEARTBEAT"],
          hosts.map((h) => [h.hostname, h.id, h.status, h.os, h.ipAddress, h.lastHeartbeatAt]),
        ),
      };
    }
    case "hosts get": {
      if (!target) throw new UsageError("Usage: hosts get HOST");
      const [id] = await resolveHosts(api, [target]);
      const host = await api.call("GET", `/api/v1/hosts/${id}`);
      const assignments: Json[] = host.assignments ?? [];
      return {
        json: host,
        text: facts([
          ["Hostname", host.hostname],
          ["Id", host.id],
          ["Status", host.status],
          ["OS", host.os],
          ["IP address", host.ipAddress],
          ["Last heartbeat", host.lastHeartbeatAt],
        ]) + "\n\n" + (assignments.length === 0 ? "No policy assignments." : table(
          ["POLICY", "POLICY ID", "STATE"],
          assignments.map((a) => [a.policyName, a.policyId, a.state]),
        )),
      };
    }
    case "policies list": {
      const policies = await api.all("/api/v1/policies", {}, "offset");
      return {
        json: { values: policies, total: policies.length },
        text: policies.length === 0 ? "No policies." : table(
          ["NAME", "ID", "TYPE", "ENABLED", "FULL", "INCREMENTAL", "RPO (H)"],
          policies.map((p) => [
            p.name,
            p.id,
            p.backupType,
            p.pausedReason ? `paused (${p.pausedReason})` : p.enabled ? "yes" : "no",
            p.fullSchedule,
            p.incrementalSchedule,
            p.rpoHours,
          ]),
        ),
      };
    }
    case "policies get": {
      if (!target) throw new UsageError("Usage: policies get POLICY");
      const found = await resolvePolicy(api, target);
      const p = await api.call("GET", `/api/v1/policies/${found.id}`);
      return {
        json: p,
        text: facts([
          ["Name", p.name],
          ["Id", p.id],
          ["Type", p.backupType],
          ["Enabled", p.enabled ? "yes" : "no"],
          ["Paused", p.pausedReason],
          ["BES", p.besId],
          ["Storage target", p.targetId],
          ["Time zone", p.timeZone],
          ["Full", p.fullSchedule],
          ["Incremental", p.incrementalSchedule],
          ["Synthetic full", p.syntheticFullSchedule],
          [
            "Retention",
            `${p.retentionDaily} daily, ${p.retentionWeekly} weekly, ${p.retentionMonthly} monthly`,
          ],
          ["RPO", `${p.rpoHours} h${p.rpoDerived ? " (from the schedules)" : ""}`],
          ["Next full runs", (p.nextFullRuns ?? []).join(", ")],
        ]),
      };
    }
    case "policies create": {
      const body = await readBody(need("file"));
      const p = await api.call("POST", "/api/v1/policies", body);
      return { json: p, text: `Created policy ${p.name} (${p.id}).` };
    }
    case "policies run": {
      if (!target) throw new UsageError("Usage: policies run POLICY [--kind K] [--host H]...");
      const policy = await resolvePolicy(api, target);
      const hosts: string[] = v.host ?? [];
      const body: Record<string, unknown> = { kind: v.kind ?? "full" };
      if (hosts.length) body.hostIds = await resolveHosts(api, hosts);
      const { runs } = await api.call("POST", `/api/v1/policies/${policy.id}/run`, body);
      return {
        json: { policyId: policy.id, runs },
        text: `Started ${runs.length} run${runs.length === 1 ? "" : "s"} of ${policy.name}:\n` + table(
          ["RUN", "KIND", "HOST", "STATUS", "JOB"],
          runs.map((r: Json) => [r.id, r.kind, r.hostname ?? "BES", r.status, r.jobId]),
        ),
      };
    }
    case "assign": {
      if (sub) throw new UsageError(`assign takes no argument "${sub}": use --policy and --host`);
      const policy = await resolvePolicy(api, need("policy"));
      const refs: string[] = v.host ?? [];
      if (refs.length === 0) throw new UsageError("Missing --host (repeat it for several hosts)");
      const hostnames = new Map<string, string>();
      const hostIds = await resolveHosts(api, refs, hostnames);
      // POST /api/v1/policies/{id}/assignments: one result per host, in the order of hostIds — `ok`, the
      // `status` that host got (201 assigned, 200 reassigned, or its error's) and `error` when refused.
      const answer = await api.call("POST", `/api/v1/policies/${policy.id}/assignments`, { hostIds });
      const results: Json[] = answer.results;
      return {
        json: { policyId: policy.id, results, assigned: answer.assigned, failed: answer.failed },
        text: table(
          ["HOST", "HOST ID", "RESULT", "ERROR"],
          results.map((r) => [
            hostnames.get(r.hostId),
            r.hostId,
            r.ok
              ? (r.status === 201 ? "assigned" : "reassigned")
              : `refused (HTTP ${r.status} ${r.error?.code})`,
            r.error?.message,
          ]),
        ) + `\n${answer.assigned} of ${results.length} assigned to ${policy.name}.`,
        code: answer.failed ? 1 : 0,
      };
    }
    case "restore files": {
      const paths: string[] = v.path ?? [];
      if (paths.length === 0) throw new UsageError("Missing --path (repeat it for several paths)");
      const body: Record<string, unknown> = {
        restorePointId: need("point"),
        paths,
        targetPath: need("target-path"),
        overwrite: v.overwrite,
      };
      if (v["target-host"]) [body.targetHostId] = await resolveHosts(api, [v["target-host"]]);
      let restore = await api.call("POST", "/api/v1/restores", body);
      if (v.wait) {
        const timeoutS = v.timeout === undefined ? 3600 : Number(v.timeout);
        if (!Number.isFinite(timeoutS) || timeoutS <= 0) {
          throw new UsageError("--timeout must be seconds > 0");
        }
        const deadline = Date.now() + timeoutS * 1000;
        while (!TERMINAL_RESTORE.has(restore.status)) {
          if (Date.now() > deadline) {
            throw new UsageError(`Restore ${restore.id} is still ${restore.status} after ${timeoutS} s`);
          }
          await sleep(2000);
          restore = await api.call("GET", `/api/v1/restores/${restore.id}`);
        }
      }
      const errors: Json[] = restore.result?.errors ?? [];
      const text = `Restore ${restore.id}: ${restore.status}` +
        (restore.progress ? ` (${restore.progress.percent}%)` : "") +
        (restore.result ? `, ${restore.result.files} files, ${restore.result.bytes} bytes` : "") +
        (restore.error ? `\n${restore.error}` : "") +
        (errors.length ? "\n" + errors.map((e) => `  ${e.path}: ${e.message}`).join("\n") : "") +
        (restore.result?.errorCount > errors.length
          ? `\n  … ${restore.result.errorCount - errors.length} more files failed`
          : "");
      return { json: restore, text, code: restore.status === "failed" ? 1 : 0 };
    }
    case "runs list": {
      const query: Record<string, string | undefined> = { status: v.status, limit: v.limit ?? "50" };
      if (v.policy) query.policyId = (await resolvePolicy(api, v.policy)).id;
      const hosts: string[] = v.host ?? [];
      if (hosts.length > 1) throw new UsageError("runs list takes one --host");
      if (hosts.length) [query.hostId] = await resolveHosts(api, hosts);
      const page = await api.call("GET", `/api/v1/runs?${params(query)}`);
      return {
        json: page,
        text: page.values.length === 0 ? "No runs." : table(
          ["RUN", "POLICY", "HOST", "KIND", "TRIGGER", "STATUS", "SCHEDULED", "ERROR"],
          page.values.map((r: Json) => [
            r.id,
            r.policyId,
            r.hostId,
            r.kind,
            r.trigger,
            r.status,
            r.scheduledFor,
            r.errorLine ?? r.error?.message,
          ]),
        ) + (page.cursor ? `\nMore: --limit, or GET /api/v1/runs?cursor=${page.cursor}` : ""),
      };
    }
    default:
      throw new UsageError(`Unknown command "${verb}"\n\n${API_USAGE}`);
  }
}

/**
 * Runs one automation verb; returns the exit code. `env` gives CADRES_URL and CADRES_TOKEN; `print`
 * and `printError` are stdout and stderr.
 */
export async function runApiCommand(
  args: string[],
  io: {
    env: Record<string, string | undefined>;
    print: (line: string) => void;
    printError: (line: string) => void;
    sleep?: (ms: number) => Promise<void>;
  },
): Promise<number> {
  const json = args.includes("--json");
  try {
    const { values, positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true });
    if (values.help) {
      io.print(API_USAGE);
      return 0;
    }
    const url = (values.url ?? io.env.CADRES_URL ?? "").replace(/\/+$/, "");
    if (!url) throw new UsageError("Set --url or CADRES_URL to the server, e.g. https://cadres.example.com");
    if (!/^https?:\/\/[^\s/]+/.test(url)) throw new UsageError(`--url must be an http(s) URL, got "${url}"`);
    const token = values.token ?? io.env.CADRES_TOKEN ?? "";
    if (!token) {
      throw new UsageError(
        "Set CADRES_TOKEN (or --token) to an API token: deno task cli create-token, or Admin > API tokens",
      );
    }
    const sleep = io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    const outcome = await run(new Api(url, token), positionals, values, sleep);
    io.print(json ? JSON.stringify(outcome.json) : outcome.text);
    return outcome.code ?? 0;
  } catch (error) {
    if (error instanceof ApiError) {
      if (json) {
        io.print(JSON.stringify({
          error: {
            status: error.status,
            code: error.code,
            message: error.message,
            ...(error.fields ? { fields: error.fields } : {}),
          },
        }));
      } else {
        const fields = Object.entries(error.fields ?? {}).map(([k, m]) => `\n  ${k}: ${m}`).join("");
        io.printError(`Error: ${error.message} (HTTP ${error.status} ${error.code})${fields}`);
      }
      return 1;
    }
    const message = error instanceof Error ? error.message : String(error);
    if (json) io.print(JSON.stringify({ error: { message } }));
    else io.printError(`Error: ${message}`);
    return 1;
  }
}
