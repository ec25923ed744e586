/** Re-exports keys/policies.ts, where these keys live (issue 19 item 1). */
export * from "./keys/policies.ts";
