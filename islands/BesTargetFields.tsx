/**
 * The BES and storage target fields of a new policy. On the server (and without JavaScript) the targets
 * are grouped by BES in <optgroup>s, and a target of another BES is refused with a field error; once
 * hydrated, the target list offers only the chosen BES's targets and forgets a choice the BES change
 * made impossible.
 */
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";

export interface Props {
  engines: Array<{ id: string; name: string }>;
  targets: Array<{ id: string; name: string; besId: string }>;
  besId: string;
  targetId: string;
  errors?: { besId?: string; targetId?: string };
}

export default function BesTargetFields(props: Props) {
  const besId = useSignal(props.besId);
  const targetId = useSignal(props.targetId);
  const live = useSignal(false);
  useEffect(() => {
    live.value = true;
  }, []);
  const errors = props.errors ?? {};
  const groups = props.engines
    .map((e) => ({ engine: e, targets: props.targets.filter((t) => t.besId === e.id) }))
    .filter((g) => g.targets.length > 0 && (!live.value || !besId.value || g.engine.id === besId.value));
  const chosenHasNone = live.value && besId.value !== "" && groups.length === 0;
  const onBes = (event: Event) => {
    besId.value = (event.currentTarget as HTMLSelectElement).value;
    const target = props.targets.find((t) => t.id === targetId.value);
    if (target && besId.value && target.besId !== besId.value) targetId.value = "";
  };
  return (
    <>
      <div class={errors.besId ? "field field--error" : "field"}>
        <label for="f-besId">BES</label>
        <select
          id="f-besId"
          name="besId"
          aria-invalid={errors.besId ? "true" : undefined}
          aria-describedby={errors.besId ? "f-besId-error" : undefined}
          onChange={onBes}
        >
          <option value="">Choose an engine…</option>
          {props.engines.map((e) => (
            <option key={e.id} value={e.id} selected={e.id === besId.value}>{e.name}</option>
          ))}
        </select>
        {errors.besId && <p class="field-error" id="f-besId-error">{errors.besId}</p>}
      </div>
      <div class={errors.targetId ? "field field--error" : "field"}>
        <label for="f-targetId">Storage target (on the chosen BES)</label>
        <select
          id="f-targetId"
          name="targetId"
          aria-invalid={errors.targetId ? "true" : undefined}
          aria-describedby={errors.targetId ? "f-targetId-error" : "f-targetId-hint"}
          onChange={(event) => targetId.value = (event.currentTarget as HTMLSelectElement).value}
        >
          <option value="">
            {chosenHasNone ? "This BES has no storage target yet" : "Choose a storage target…"}
          </option>
          {groups.map((g) => (
            <optgroup key={g.engine.id} label={`On ${g.engine.name}`}>
              {g.targets.map((t) => (
                <option key={t.id} value={t.id} selected={t.id === targetId.value}>{t.name}</option>
              ))}
            </optgroup>
          ))}
        </select>
        {errors.targetId
          ? <p class="field-error" id="f-targetId-error">{errors.targetId}</p>
          : (
            <p class="hint" id="f-targetId-hint">
              A policy writes to a target of its own BES; the targets are grouped by the BES that holds them.
            </p>
          )}
      </div>
    </>
  );
}
