/** Structured JSON logging: one line per event, secrets redacted by key name. */
import type { LogLevel } from "./config.ts";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_KEYS = /pass(word)?|secret|token|authorization|cookie|key|signature|csrf/i;

/** A logger writing JSON lines; `fields` never carry secrets (keys matching SECRET_KEYS are masked). */
export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

/** Masks values whose key looks secret, recursively. */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, SECRET_KEYS.test(k) ? "[redacted]" : redact(v)]),
    );
  }
  return value;
}

/** A logger that writes lines at or above `level` through `write` (stdout by default). */
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
