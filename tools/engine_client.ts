/** The engine-protocol client lives with the engines' protocol; the simulator and tests import it from here. */
export * from "../engine/protocol/client.ts";
