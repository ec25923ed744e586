/**
 * The filtered list pages (Backup > Engines, Hosts, Storage; Admin > Users, Organizations): one helper for what they share — the query
 * read with the list's lenient filter schema (a bad value falls back, never an error), the filters kept in
 * the sort and page links, and the page's body: the GET filter form (search box, the list's own selects,
 * Filter, Clear), the empty state or the table with sortable headers, and the pager.
 */
import type { ComponentChildren } from "preact";
import { DataTable, EmptyState, Pager, SortHeader } from "../components/ui.tsx";

/** What every list filter has besides its own fields. */
interface ListFilter {
  q: string;
  sort: string;
  offset: number;
  limit: number;
}

/** A list page's query: the filter, the query its sort and page links keep, and whether a filter is set. */
export interface ListQuery<F extends ListFilter> {
  filter: F;
  keep: Record<string, string>;
  filtered: boolean;
}

/**
 * Reads a list page's query with `schema` (a lenient filter: `.catch` on every field). `fields` are the
 * filter fields besides `q`, in the order their links carry them.
 */
export function listQuery<F extends ListFilter>(
  schema: { parse(input: unknown): F },
  query: Record<string, string>,
  fields: readonly (keyof F & string)[],
): ListQuery<F> {
  const filter = schema.parse(query);
  const keep: Record<string, string> = { q: filter.q };
  for (const f of fields) keep[f] = String(filter[f]);
  keep.sort = filter.sort;
  const filtered = Boolean(filter.q || fields.some((f) => filter[f]));
  return { filter, keep, filtered };
}

/** A column: a sortable one names its sort field. */
export interface ListColumn {
  label: string;
  sort?: string;
}

/** The body of a filtered list page, below its header. */
export function FilteredList<F extends ListFilter>(props: {
  list: ListQuery<F>;
  /** The page's own path (the Clear link). */
  path: string;
  searchPlaceholder: string;
  /** The list's own filter controls, between the search box and the Filter button. */
  filters?: ComponentChildren;
  /** Whether a filtered list offers a Clear link beside Filter (the admin lists do not). */
  clear?: boolean;
  /** The empty state's title and body (shown when `count` is 0). */
  empty: { title: string; children?: ComponentChildren };
  columns: ListColumn[];
  /** The rows on this page (`<tr>` each), and how many. */
  rows: ComponentChildren;
  count: number;
  total: number;
}) {
  const { filter, keep, filtered } = props.list;
  return (
    <>
      <form method="get" class="filters">
        <input
          type="search"
          name="q"
          value={filter.q}
          placeholder={props.searchPlaceholder}
          aria-label="Search"
        />
        {props.filters}
        <button type="submit" class="btn">Filter</button>
        {filtered && props.clear !== false && <a href={props.path}>Clear</a>}
      </form>
      {props.count === 0
        ? <EmptyState title={props.empty.title}>{props.empty.children}</EmptyState>
        : (
          <DataTable
            class="table table--cards"
            heads={props.columns.map((col) =>
              col.sort
                ? (
                  <SortHeader
                    key={col.label}
                    label={col.label}
                    field={col.sort}
                    sort={filter.sort}
                    query={keep}
                  />
                )
                : col.label
            )}
          >
            {props.rows}
          </DataTable>
        )}
      <Pager total={props.total} offset={filter.offset} limit={filter.limit} query={keep} />
    </>
  );
}
