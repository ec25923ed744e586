/**
 * Org scope chooser for the user form: "All organizations" or a list. Without JavaScript both the
 * radio and every checkbox show; with it the list appears only for "Selected organizations" and a
 * live summary says what the user will see.
 */
import { useComputed, useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";

export interface Props {
  orgs: Array<{ id: string; name: string }>;
  mode: "all" | "selected";
  selected: string[];
  error?: string;
}

export default function OrgScopePicker(props: Props) {
  const mode = useSignal(props.mode);
  const selected = useSignal(new Set(props.selected));
  // First client render must match the server's HTML; only then switch to the interactive view.
  const hydrated = useSignal(false);
  useEffect(() => {
    hydrated.value = true;
  }, []);
  const summary = useComputed(() => {
    if (mode.value === "all") return "Sees every organization of the account, including future ones.";
    const n = selected.value.size;
    return n === 0
      ? "Select at least one organization."
      : `Sees ${n} organization${n === 1 ? "" : "s"} only.`;
  });
  const toggle = (id: string, on: boolean) => {
    const next = new Set(selected.value);
    if (on) next.add(id);
    else next.delete(id);
    selected.value = next;
  };
  return (
    <fieldset class={props.error ? "field field--error scope-picker" : "field scope-picker"}>
      <legend>Organization scope</legend>
      <label class="choice">
        <input
          type="radio"
          name="scopeMode"
          value="all"
          checked={mode.value === "all"}
          onChange={() => (mode.value = "all")}
        />{" "}
        All organizations
      </label>
      <label class="choice">
        <input
          type="radio"
          name="scopeMode"
          value="selected"
          checked={mode.value === "selected"}
          onChange={() => (mode.value = "selected")}
        />{" "}
        Selected organizations
      </label>
      {(!hydrated.value || mode.value === "selected") && (
        <div class="scope-list" data-testid="scope-list">
          {props.orgs.length === 0 && <p class="hint">No organizations yet.</p>}
          {props.orgs.map((org) => (
            <label class="choice" key={org.id}>
              <input
                type="checkbox"
                name="orgIds"
                value={org.id}
                checked={selected.value.has(org.id)}
                onChange={(e) => toggle(org.id, (e.target as HTMLInputElement).checked)}
              />{" "}
              {org.name}
            </label>
          ))}
        </div>
      )}
      {hydrated.value && <p class="hint" data-testid="scope-summary">{summary}</p>}
      {props.error && <p class="field-error">{props.error}</p>}
    </fieldset>
  );
}
