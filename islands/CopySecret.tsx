/** A secret shown once, with a Copy button (server fallback: the text, selectable). */
import { useSignal } from "@preact/signals";

export interface Props {
  label: string;
  secret: string;
}

export default function CopySecret(props: Props) {
  const state = useSignal<"idle" | "copied" | "failed">("idle");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.secret);
      state.value = "copied";
    } catch {
      state.value = "failed";
    }
  };
  return (
    <div class="secret-box">
      <span class="secret-label">{props.label}</span>
      <code class="secret" data-testid="secret">{props.secret}</code>
      <button type="button" class="btn btn--small" onClick={copy}>Copy</button>
      {state.value === "copied" && <span class="hint" role="status">Copied to the clipboard</span>}
      {state.value === "failed" && (
        <span class="hint" role="status">Copy failed: select the text instead</span>
      )}
    </div>
  );
}
