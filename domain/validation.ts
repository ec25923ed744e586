/** Small zod building blocks shared by several domain schemas. */
import { z } from "zod";

/** A display name: trimmed, 1–100 characters, no angle brackets or control characters. */
export const DisplayName = z.string().trim().min(1, "is required").max(100, "must be at most 100 characters")
  .regex(/^[^<>\p{Cc}]+$/u, "must not contain < > or control characters");
