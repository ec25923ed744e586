/**
 * Minute job: routes new alert events to channels (the outbox → the delivery job table), sends the
 * deliveries that are due, and purges old finished ones from the log.
 */
import {
  deliverDue,
  dispatchAlertEvents,
  type NotificationTransports,
  purgeDeliveries,
} from "../domain/notification_delivery.ts";

/** Idempotent for the same `now`: handled events are gone, and each due delivery is sent under a lease. */
export async function deliverNotifications(
  kv: Deno.Kv,
  now: Date,
  options: { masterKey: Uint8Array; baseUrl?: string; transports?: Partial<NotificationTransports> },
) {
  const dispatched = await dispatchAlertEvents(kv, now);
  const sent = await deliverDue(kv, now, options);
  const purged = await purgeDeliveries(kv, now);
  return { events: dispatched.events, queued: dispatched.deliveries, ...sent, purged };
}
