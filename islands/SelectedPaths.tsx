/**
 * The paths field of the Restore Files form: one path per line, filled by the checkboxes of Browse and
 * Search and still editable by hand. Without JavaScript it is a plain textarea (and the checkboxes
 * submit themselves), so the form works either way; the server validates and deduplicates.
 */
import { useSignal, useSignalEffect } from "@preact/signals";
import { useState } from "preact/hooks";
import { selection } from "./restore_client.ts";

export interface Props {
  /** Paths typed before a failed submit, to show again. */
  initial: string[];
  error?: string;
}

function lines(text: string): string[] {
  return [...new Set(text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean))];
}

// The server's precompiled JSX would print `value` as an attribute, which a textarea ignores: there the
// text goes in as its content; in the browser Preact keeps the `value` property in sync.
const SERVER = typeof document === "undefined";

export default function SelectedPaths(props: Props) {
  // Client only: seed the shared selection before the first render, so hydration matches the server.
  useState(() => {
    if (typeof document !== "undefined") selection.value = props.initial;
  });
  const text = useSignal(props.initial.join("\n"));
  useSignalEffect(() => {
    const picked = selection.value;
    const current = lines(text.peek());
    if (picked.length !== current.length || picked.some((p, i) => p !== current[i])) {
      text.value = picked.join("\n");
    }
  });
  const count = selection.value.length || lines(text.value).length;
  return (
    <div class={props.error ? "field field--error" : "field"}>
      <label for="f-paths">Files and folders to restore</label>
      <textarea
        id="f-paths"
        name="paths"
        rows={Math.min(10, Math.max(3, count + 1))}
        aria-invalid={props.error ? "true" : undefined}
        aria-describedby="f-paths-hint"
        data-testid="selected-paths"
        value={SERVER ? undefined : text.value}
        onInput={(e) => {
          text.value = (e.target as HTMLTextAreaElement).value;
          selection.value = lines(text.value);
        }}
      >
        {SERVER ? text.value : undefined}
      </textarea>
      <p class="hint" id="f-paths-hint">
        {count}{" "}
        selected. Tick files and folders in Browse or Search, or type absolute paths, one per line (at most
        10,000; a folder restores everything in it). {count > 0 && (
          <button
            type="button"
            class="btn btn--small btn--ghost"
            onClick={() => selection.value = []}
          >
            Clear
          </button>
        )}
      </p>
      {props.error && <p class="field-error" role="alert">{props.error}</p>}
    </div>
  );
}
