/**
 * Structured JSON logging shared by the control plane and the engines (BES, agent): one JSON object per line
 * on stdout (journald keeps them), secrets masked by field name. Callers never put a registration secret, a
 * storage credential, a key, a cookie or a CSRF token in a message; fields that could carry one (by name) are
 * masked. domain/log.ts re-exports this module (the engine imports nothing from domain/).
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_KEYS = /pass(word)?|secret|token|authorization|credential|cookie|key|signature|csrf/i;

/** A logger writing JSON lines; `fields` never carry secrets (keys matching SECRET_KEYS are masked). */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

/** Masks values whose field name looks secret, recursively. */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, SECRET_KEYS.test(k) ? "[redacted]" : redact(v)]),
    );
  }
  return value;
}

/** A logger writing JSON lines at `level` and above through `write` (stdout by default). */
export function createLogger(
  level: LogLevel,
  write: (line: string) => void = (line) => console.log(line),
): Logger {
  return {
    log(at, msg, fields = {}) {
      if (ORDER[at] < ORDER[level]) return;
      write(
        JSON.stringify({ time: new Date().toISOString(), level: at, msg, ...(redact(fields) as object) }),
      );
    },
  };
}

/** An error's message, for a log field or a result (never its stack). */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
