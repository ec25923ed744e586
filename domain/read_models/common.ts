/** What the read models share: the type of a read model's data, and organization names by id. */

/** The data a read model (or any async reader) returns: what a page receives as props. */
export type Data<F extends (...args: never[]) => unknown> = Awaited<ReturnType<F>>;

/** Organization names by id, for the pages that show an object's organization. */
export function orgNamesById(orgs: ReadonlyArray<{ id: string; name: string }>): Map<string, string> {
  return new Map(orgs.map((o) => [o.id, o.name]));
}
