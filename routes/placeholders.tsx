/**
 * Pages of the guide's navigation that later issues fill (engines, storage, policies, …). Each states
 * honestly that it is not built yet, and already enforces the permission the finished page needs.
 */
import { Hono } from "hono";
import { EmptyState, PageHeader } from "../components/ui.tsx";
import type { Permission } from "../domain/types.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { render } from "./render.tsx";

interface Placeholder {
  path: string;
  title: string;
  permission: Permission;
  what: string;
}

// Every page of the guide's navigation is built now (Platforms: routes/platforms.tsx).
const PLACEHOLDERS: Placeholder[] = [];

export const placeholderRoutes = new Hono<AppEnv>();

for (const p of PLACEHOLDERS) {
  placeholderRoutes.get(p.path, requires(p.permission), (c) =>
    render(
      c,
      p.title,
      (
        <>
          <PageHeader title={p.title} subtitle={p.what} />
          <EmptyState title="Not available yet">
            This part of Cadres Backup has not been built in this version. Nothing is hidden here: there is no
            data behind this page yet.
          </EmptyState>
        </>
      ),
    ));
}
