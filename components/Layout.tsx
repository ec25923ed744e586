/** The page shell: navigation of the operator guide, header with the signed-in user, flash notice. */
import type { ComponentChildren } from "preact";
import type { Actor } from "../domain/rbac.ts";
import type { Permission } from "../domain/types.ts";
import { ROLE_LABELS } from "../domain/types.ts";

interface NavItem {
  href: string;
  label: string;
  permission: Permission;
  /** Only for administrators of the operator account (the control plane's own backups). */
  platform?: boolean;
}

/** The navigation of the guide: Backup, Health, Admin. */
export const NAV: Array<{ title: string; items: NavItem[] }> = [
  {
    title: "Backup",
    items: [
      { href: "/backup/dashboard", label: "Dashboard", permission: "backup.view" },
      { href: "/backup/alerts", label: "Alerts", permission: "backup.view" },
      { href: "/backup/notifications", label: "Notifications", permission: "backup.view" },
      { href: "/backup/engines", label: "Engines", permission: "backup.view" },
      { href: "/backup/storage", label: "Storage", permission: "backup.view" },
      { href: "/backup/policies", label: "Policies", permission: "backup.view" },
      { href: "/backup/hosts", label: "Hosts", permission: "backup.view" },
      { href: "/backup/replicas", label: "Replicas", permission: "backup.view" },
      { href: "/backup/scripts", label: "Scripts", permission: "backup.view" },
      { href: "/backup/jobs", label: "Jobs", permission: "backup.view" },
      { href: "/backup/restore", label: "Restore", permission: "backup.restore" },
      { href: "/backup/drills", label: "Restore drills", permission: "backup.view" },
      { href: "/backup/protected", label: "Protected Objects", permission: "backup.view" },
      { href: "/backup/platforms", label: "Platforms", permission: "backup.view" },
      { href: "/backup/approvals", label: "Approvals", permission: "backup.view" },
      { href: "/backup/holds", label: "Legal holds", permission: "backup.view" },
    ],
  },
  {
    title: "Health",
    items: [
      { platform: true, href: "/health/overview", label: "Overview", permission: "admin" },
      { platform: true, href: "/health/backup", label: "Backup", permission: "admin" },
      { platform: true, href: "/health/database", label: "Database", permission: "admin" },
    ],
  },
  {
    title: "Admin",
    items: [
      { href: "/admin/users", label: "Users", permission: "admin" },
      { href: "/admin/orgs", label: "Organizations", permission: "admin" },
      { href: "/admin/tokens", label: "API tokens", permission: "backup.view" },
      { href: "/admin/audit", label: "Audit", permission: "admin" },
      { href: "/admin/four-eyes", label: "Four-eyes", permission: "admin" },
      { platform: true, href: "/admin/backups", label: "Backups", permission: "admin" },
      { platform: true, href: "/admin/maintenance", label: "Maintenance", permission: "admin" },
    ],
  },
];

export interface LayoutProps {
  title: string;
  path: string;
  actor: Actor | null;
  csrfToken: string;
  notice?: string;
  /** Open alerts the actor can see, shown beside Alerts in the nav. */
  openAlerts?: number;
  /** Whether the actor administers the platform (sees Health, Backups, Maintenance). */
  platformAdmin?: boolean;
  children: ComponentChildren;
}

/** The whole HTML document. */
export function Layout(props: LayoutProps) {
  const { actor } = props;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="light dark" />
        <meta name="csrf-token" content={props.csrfToken} />
        <title>{`${props.title} · Cadres Backup`}</title>
        <link rel="stylesheet" href="/static/app.css" />
        <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
        <script type="module" src="/static/islands.js" defer></script>
      </head>
      <body>
        <a class="skip" href="#main">Skip to content</a>
        <div class={actor ? "shell" : "shell shell--bare"}>
          {actor && (
            <nav class="sidebar" aria-label="Main">
              <a class="brand" href="/">
                <img src="/static/favicon.svg" alt="" width="22" height="22" /> Cadres Backup
              </a>
              <input type="checkbox" id="nav-toggle" class="nav-toggle-input" aria-label="Show menu" />
              <label for="nav-toggle" class="nav-toggle-label">Menu</label>
              <div class="nav-sections">
                {NAV.map((section) => {
                  const items = section.items.filter((i) =>
                    actor.permissions.has(i.permission) && (!i.platform || props.platformAdmin)
                  );
                  if (!items.length) return null;
                  return (
                    <div class="nav-section" key={section.title}>
                      <h2>{section.title}</h2>
                      <ul>
                        {items.map((item) => (
                          <li key={item.href}>
                            <a
                              href={item.href}
                              aria-current={props.path.startsWith(item.href) ? "page" : undefined}
                            >
                              {item.label}
                              {item.href === "/backup/alerts" && props.openAlerts
                                ? <span class="nav-count" data-testid="alert-count">{props.openAlerts}</span>
                                : null}
                            </a>
                          </li>
                        ))}
                      </ul>
                    </div>
                  );
                })}
                <div class="nav-section">
                  <h2>Reference</h2>
                  <ul>
                    <li>
                      <a
                        href="/api/docs"
                        aria-current={props.path.startsWith("/api/docs") ? "page" : undefined}
                      >
                        API reference
                      </a>
                    </li>
                  </ul>
                </div>
              </div>
            </nav>
          )}
          <div class="main-col">
            {actor && (
              <header class="topbar">
                <span class="who">
                  {actor.label}
                  {actor.role && <span class="badge badge--muted">{ROLE_LABELS[actor.role]}</span>}
                </span>
                <form method="post" action="/logout">
                  <input type="hidden" name="_csrf" value={props.csrfToken} />
                  <button type="submit" class="btn btn--ghost">Sign out</button>
                </form>
              </header>
            )}
            <main id="main">
              {props.notice && <p class="notice" role="status">{props.notice}</p>}
              {props.children}
            </main>
          </div>
        </div>
      </body>
    </html>
  );
}
