/** Structured JSON logging: the one implementation lives engine-side (engine/log.ts; engine imports no domain/). */
export * from "../engine/log.ts";
