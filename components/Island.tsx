/**
 * Server side of an island: renders the component to HTML inside a marker carrying its name and
 * JSON props; `islands/client.ts` hydrates the marker in the browser. `serverProps` join the props for
 * the server render only and are not serialized (e.g. a fragment of HTML the island's first render
 * shows and hydration keeps, which would otherwise travel twice).
 */
import type { ComponentType } from "preact";

export function Island<P extends object>(
  props: { name: string; component: ComponentType<P>; props: P; serverProps?: Partial<P> },
) {
  const Component = props.component;
  return (
    <div class="island" data-island={props.name} data-props={JSON.stringify(props.props)}>
      <Component {...props.props} {...props.serverProps} />
    </div>
  );
}
