/** The one hydration entry: finds `[data-island]` markers and hydrates each with its props. */
import { h, hydrate } from "preact";
import { ISLANDS } from "./registry.ts";

for (const el of document.querySelectorAll<HTMLElement>("[data-island]")) {
  const component = ISLANDS[el.dataset.island ?? ""];
  if (!component) continue;
  const props = JSON.parse(el.dataset.props ?? "{}");
  hydrate(h(component, props), el);
  el.dataset.hydrated = "true";
}
