/**
 * The 3-2-1 rule of the guide ("Replication Rules (3-2-1 Strategy)"): 3 copies of the data (the
 * primary plus 2 replicas), on 2 different media types, with 1 copy offsite. Pure: no database.
 *
 * Media of the storage target types:
 * - `s3`, `s3_compatible` → "object" (object storage)
 * - `smb`, `nfs` → "nas" (network file shares)
 * - `iscsi` → "block" (block storage)
 * - `local` → "disk" (a disk of the BES)
 *
 * Offsite: only replica rules an operator marked `isOffsite` count. The primary never counts, and a
 * target's type says nothing about where it is (an S3 Compatible bucket may sit in the same rack; an
 * NFS export may be in another city), so the rule's flag is the single source of truth.
 */
import type { TargetType } from "./storage.ts";

/** The media types a copy can live on. */
export const MEDIA_TYPES = ["disk", "nas", "block", "object"] as const;
export type MediaType = (typeof MEDIA_TYPES)[number];

/** The media of each storage target type (see the module comment). */
export const TARGET_MEDIA: Record<TargetType, MediaType> = {
  s3: "object",
  s3_compatible: "object",
  smb: "nas",
  nfs: "nas",
  iscsi: "block",
  local: "disk",
};

/** Operator-facing names of the media types. */
export const MEDIA_LABELS: Record<MediaType, string> = {
  disk: "Local disk",
  nas: "Network share",
  block: "Block storage",
  object: "Object storage",
};

/** What the rule needs: the primary target's type and each replica's target type and offsite flag. */
export interface ThreeTwoOneInput {
  primary: { type: TargetType };
  replicas: ReadonlyArray<{ targetType: TargetType; isOffsite: boolean }>;
}

/** The 3-2-1 verdict; `missing` is empty exactly when `met`. */
export interface ThreeTwoOne {
  /** Copies of the data: the primary plus one per replica rule. */
  copies: number;
  /** Distinct media of the primary and the replicas, primary's first, then in rule order. */
  mediaTypes: MediaType[];
  /** Replica rules marked offsite. */
  offsite: number;
  met: boolean;
  /** What is still needed, e.g. ["1 more copy", "a second media type", "an offsite copy"]. */
  missing: string[];
}

/** Copies, media types and offsite copies the rule asks for. */
export const REQUIRED = { copies: 3, mediaTypes: 2, offsite: 1 } as const;

/** Evaluates the 3-2-1 rule for a primary target and its replicas. */
export function evaluate321(input: ThreeTwoOneInput): ThreeTwoOne {
  const copies = 1 + input.replicas.length;
  const mediaTypes = [
    ...new Set([TARGET_MEDIA[input.primary.type], ...input.replicas.map((r) => TARGET_MEDIA[r.targetType])]),
  ];
  const offsite = input.replicas.filter((r) => r.isOffsite).length;
  const missing: string[] = [];
  const moreCopies = REQUIRED.copies - copies;
  if (moreCopies > 0) missing.push(moreCopies === 1 ? "1 more copy" : `${moreCopies} more copies`);
  if (mediaTypes.length < REQUIRED.mediaTypes) missing.push("a second media type");
  if (offsite < REQUIRED.offsite) missing.push("an offsite copy");
  return { copies, mediaTypes, offsite, met: missing.length === 0, missing };
}
