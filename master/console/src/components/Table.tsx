import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";

export interface Column<R> {
  key: string;
  label: ComponentChildren;
  render: (row: R) => ComponentChildren;
  /** Makes the column sortable on the client; return null for "no value" (sorted last). */
  sortValue?: (row: R) => number | string | null | undefined;
  /** Right-aligned numbers etc. */
  numeric?: boolean;
  title?: string;
}

export interface Sort {
  key: string;
  desc: boolean;
}

interface Props<R> {
  /** `<table data-testid="<testid>">`, e.g. "experiments-table". */
  testid: string;
  columns: Column<R>[];
  rows: R[];
  /** Each row's data-testid, e.g. (r) => `experiment-row-${r.id}`. */
  rowTestId: (row: R) => string;
  rowKey?: (row: R) => string | number;
  caption?: ComponentChildren;
  empty?: ComponentChildren;
  initialSort?: Sort;
  /** Controlled sorting (server-side): the table only reports clicks. */
  sort?: Sort;
  onSort?: (sort: Sort) => void;
  rowClass?: (row: R) => string | undefined;
}

function compare(a: unknown, b: unknown): number {
  const aMissing = a === null || a === undefined || a === "";
  const bMissing = b === null || b === undefined || b === "";
  if (aMissing || bMissing) return aMissing === bMissing ? 0 : aMissing ? 1 : -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

/** A table that scrolls sideways on narrow screens; headers with sortValue sort on click. */
export function Table<R>(props: Props<R>) {
  const [ownSort, setOwnSort] = useState<Sort | undefined>(props.initialSort);
  const sort = props.sort ?? ownSort;
  let rows = props.rows;
  const sortColumn = props.columns.find((c) => c.key === sort?.key);
  if (!props.onSort && sort && sortColumn?.sortValue) {
    const value = sortColumn.sortValue;
    rows = [...rows].sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      const missing = va === null || va === undefined || vb === null || vb === undefined;
      const order = compare(va, vb);
      return sort.desc && !missing ? -order : order;
    });
  }
  const clickSort = (key: string) => {
    const next = { key, desc: sort?.key === key ? !sort.desc : false };
    if (props.onSort) props.onSort(next);
    else setOwnSort(next);
  };
  return (
    <div class="table-scroll">
      <table data-testid={props.testid}>
        {props.caption && <caption>{props.caption}</caption>}
        <thead>
          <tr>
            {props.columns.map((c) => {
              const active = sort?.key === c.key;
              const ariaSort = active ? (sort.desc ? "descending" : "ascending") : undefined;
              return (
                <th
                  key={c.key}
                  scope="col"
                  class={c.numeric ? "num" : undefined}
                  aria-sort={ariaSort}
                  title={c.title}
                >
                  {c.sortValue ? (
                    <button type="button" class="sort" onClick={() => clickSort(c.key)}>
                      {c.label}
                      <span aria-hidden="true" class="sort-mark">
                        {active ? (sort.desc ? " ▼" : " ▲") : ""}
                      </span>
                    </button>
                  ) : (
                    c.label
                  )}
                </th>
              );
            })}
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 ? (
            <tr>
              <td class="empty" colSpan={props.columns.length}>
                {props.empty ?? "Nothing here yet."}
              </td>
            </tr>
          ) : (
            rows.map((row) => (
              <tr
                key={props.rowKey ? props.rowKey(row) : props.rowTestId(row)}
                data-testid={props.rowTestId(row)}
                class={props.rowClass?.(row)}
              >
                {props.columns.map((c) => (
                  <td key={c.key} class={c.numeric ? "num" : undefined}>
                    {c.render(row)}
                  </td>
                ))}
              </tr>
            ))
          )}
        </tbody>
      </table>
    </div>
  );
}
