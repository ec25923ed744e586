/** The BES's log: the one structured JSON logger of engine/log.ts (secrets masked by field name). */
export * from "../log.ts";
