/**
 * Typed errors of the repository library. Every integrity failure names the object it concerns, so a
 * restore or verify can say exactly what is damaged.
 */

/** What kind of repository object an error concerns. */
export type ObjectKind =
  | "blob"
  | "pack"
  | "index"
  | "tree"
  | "snapshot"
  | "refs"
  | "key"
  | "config"
  | "lock"
  | "condemned"
  | "file";

/** Base class of every error the repository library throws on purpose. */
export class RepoError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An object failed a checksum, authentication or structural check. Throws never write bytes. */
export class IntegrityError extends RepoError {
  constructor(
    readonly kind: ObjectKind,
    readonly id: string,
    readonly detail: string,
    options?: ErrorOptions,
  ) {
    super(`Damaged ${kind} ${id}: ${detail}`, options);
  }
}

/** An object the repository should hold is missing. */
export class MissingObjectError extends RepoError {
  constructor(readonly kind: ObjectKind, readonly id: string, detail = "not found") {
    super(`Missing ${kind} ${id}: ${detail}`);
  }
}

/** The repository (or one of its objects) was written by a newer, unknown format version. */
export class FormatVersionError extends RepoError {
  constructor(readonly what: string, readonly found: number, readonly supported: number) {
    super(
      `Cannot read ${what}: format version ${found} is newer than this program supports (${supported}); upgrade Cadres`,
    );
  }
}

/** The key given opens nothing in this repository. */
export class WrongKeyError extends RepoError {}

/** The location is not a repository, or a repository option is invalid. */
export class RepoConfigError extends RepoError {}
