/** Engine protocol v1 request signatures: the one implementation lives with the engines' protocol. */
export * from "../engine/protocol/signing.ts";
