/** Re-exports keys/runs.ts, where these keys live (issue 19 item 1). */
export * from "./keys/runs.ts";
