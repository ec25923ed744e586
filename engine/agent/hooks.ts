/**
 * A backup's application hooks (the payload's `hooks`, already in execution order: pre_backup,
 * pre_snapshot, post_snapshot, post_backup; then sequence): each script is written to a private temporary
 * file and run by its interpreter (bash, sh, python3, pwsh) with a timeout, its standard output and error
 * captured together. A hook that times out is stopped with its whole process group (SIGTERM, SIGKILL 5 s
 * later) when `setsid` is available, else the interpreter alone.
 */
import { findExecutable, tail } from "./files.ts";

/** One hook as a backup payload carries it. */
export interface HookSpec {
  id: string;
  type: string;
  timeoutSeconds: number;
  failOnError: boolean;
  interpreter: string;
  body: string;
}

/** What one hook did (the result's `hookOutput` entry, plus what the agent decides by). */
export interface HookOutcome {
  hookId: string;
  type: string;
  /** The exit code; -1 when it timed out or could not be started. */
  exitCode: number;
  /** The tail of its output (at most 4000 characters), with a line saying why it failed when it did. */
  output: string;
  ok: boolean;
  failOnError: boolean;
}

/** Most characters of a hook's output a result carries (docs/engine-protocol.md). */
export const HOOK_OUTPUT_MAX = 4000;
/** Output kept while a hook runs (its tail). */
const KEEP_CHARS = 64 * 1024;

/** Parses the payload's `hooks`; entries that are not hooks are refused with a message naming them. */
export function parseHooks(raw: unknown): HookSpec[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new Error("The payload's hooks are not a list");
  return raw.map((h, i) => {
    const o = h as Record<string, unknown>;
    if (typeof o?.id !== "string" || typeof o.type !== "string" || typeof o.body !== "string") {
      throw new Error(`Hook ${i + 1} of the payload has no id, type or body`);
    }
    return {
      id: o.id,
      type: o.type,
      timeoutSeconds: Number(o.timeoutSeconds) > 0 ? Number(o.timeoutSeconds) : 300,
      failOnError: o.failOnError !== false,
      interpreter: typeof o.interpreter === "string" ? o.interpreter : "bash",
      body: o.body,
    };
  });
}

function interpreterCommand(interpreter: string, file: string): string[] {
  switch (interpreter) {
    case "sh":
      return ["sh", file];
    case "python":
      return [findExecutable("python3") ? "python3" : "python", file];
    case "powershell":
      return ["pwsh", "-NoProfile", "-NonInteractive", "-File", file];
    default:
      return ["bash", file];
  }
}

/** Runs one hook in `workDir` (its script is written there, then removed) with `env` added. */
export async function runHook(
  hook: HookSpec,
  options: { workDir: string; env?: Record<string, string>; killGraceMs?: number },
): Promise<HookOutcome> {
  const base = { hookId: hook.id, type: hook.type, failOnError: hook.failOnError };
  await Deno.mkdir(options.workDir, { recursive: true, mode: 0o700 });
  const file = `${options.workDir}/hook-${crypto.randomUUID()}`;
  await Deno.writeTextFile(file, hook.body, { mode: 0o700 });
  try {
    const [cmd, ...args] = interpreterCommand(hook.interpreter, file);
    const setsid = findExecutable("setsid");
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(setsid ?? cmd, {
        args: setsid ? [cmd, ...args] : args,
        cwd: options.workDir,
        env: {
          ...options.env,
          CADRES_HOOK_ID: hook.id,
          CADRES_HOOK_TYPE: hook.type,
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      const why = e instanceof Deno.errors.NotFound
        ? `its interpreter ${cmd} is not installed on this host`
        : (e as Error).message;
      return { ...base, exitCode: -1, output: `The ${hook.type} hook could not start: ${why}`, ok: false };
    }
    let out = "";
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) {
        out += decoder.decode(chunk, { stream: true });
        if (out.length > 2 * KEEP_CHARS) out = out.slice(out.length - KEEP_CHARS);
      }
    };
    const streams = Promise.all([collect(child.stdout), collect(child.stderr)]).catch(() => {});
    let timedOut = false;
    const kill = (signal: Deno.Signal) => {
      try {
        // With setsid the hook leads its own process group: stop everything it started.
        if (setsid) Deno.kill(-child.pid, signal);
        else child.kill(signal);
      } catch {
        // already gone
      }
    };
    let hardKill: ReturnType<typeof setTimeout> | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      kill("SIGTERM");
      hardKill = setTimeout(() => kill("SIGKILL"), options.killGraceMs ?? 5000);
    }, hook.timeoutSeconds * 1000);
    const status = await child.status;
    clearTimeout(timer);
    // Output pipes held open by a process the hook left behind must not hold the backup up.
    await Promise.race([streams, new Promise((r) => setTimeout(r, 2000))]);
    if (hardKill !== undefined) clearTimeout(hardKill);
    let output = out;
    if (timedOut) {
      output += `\n[cadres] the ${hook.type} hook timed out after ${hook.timeoutSeconds} s and was stopped`;
    } else if (!status.success) {
      output += `\n[cadres] the ${hook.type} hook exited with ${
        status.signal ? `signal ${status.signal}` : status.code
      }`;
    }
    return {
      ...base,
      exitCode: timedOut ? -1 : Math.max(-255, Math.min(255, status.code)),
      output: tail(output.trim(), HOOK_OUTPUT_MAX),
      ok: status.success && !timedOut,
    };
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

/** The result's `hookOutput` entries. */
export function hookOutputOf(outcomes: HookOutcome[]) {
  return outcomes.slice(0, 20).map((o) => ({
    hookId: o.hookId.slice(0, 64),
    type: o.type.slice(0, 32),
    exitCode: o.exitCode,
    output: o.output,
  }));
}
