/** Re-exports keys/restore.ts, where these keys live (issue 19 item 1). */
export * from "./keys/restore.ts";
