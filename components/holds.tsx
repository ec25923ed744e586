/**
 * The legal hold panel of a restore point's or a host's page: a badge per active hold covering it (case
 * reference, reason, link to the hold on Backup > Legal holds) and, for users with `backup.hold`, a
 * "Place legal hold" link to the holds page's form with the subject chosen.
 */
import type { LegalHold } from "../domain/holds.ts";
import { Badge } from "./ui.tsx";

export function HoldPanel(props: {
  holds: LegalHold[];
  /** The holds page's form, prefilled (`/backup/holds?…#place`); null without `backup.hold`. */
  placeHref: string | null;
  /** "restore point" or "host": what the text names. */
  noun: string;
}) {
  if (props.holds.length === 0 && !props.placeHref) return null;
  return (
    <section class="panel" id="legal-holds" data-testid="legal-holds">
      <h2>Legal holds</h2>
      {props.holds.length === 0 ? <p class="muted">No legal hold covers this {props.noun}.</p> : (
        <>
          <p>
            Held restore points are never pruned or expired until every hold covering them is released.
          </p>
          <ul>
            {props.holds.map((h) => (
              <li key={h.id} data-testid="hold-badge">
                <Badge tone="warn">Legal hold {h.caseReference}</Badge>{" "}
                <a href={`/backup/holds#hold-${h.id}`}>on {h.scope} {h.subjectLabel}</a>: {h.reason}
              </li>
            ))}
          </ul>
        </>
      )}
      {props.placeHref && (
        <p>
          <a class="btn" href={props.placeHref}>Place legal hold</a>
        </p>
      )}
    </section>
  );
}
