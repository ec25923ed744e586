/**
 * Server side of an island: renders the component to HTML inside a marker carrying its name and
 * JSON props; `islands/client.ts` hydrates the marker in the browser.
 */
import type { ComponentType } from "preact";

export function Island<P extends object>(props: { name: string; component: ComponentType<P>; props: P }) {
  const Component = props.component;
  return (
    <div class="island" data-island={props.name} data-props={JSON.stringify(props.props)}>
      <Component {...props.props} />
    </div>
  );
}
