import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Actor } from '../scheduler/actor.js';

/** One request as a route sees it: the actor is the socket's, never the request's. */
export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  actor: Actor;
  url: URL;
  /** The route pattern's capture groups, URI-decoded. */
  params: string[];
}

/**
 * One entry of the API's route table. `path` is matched against the whole pathname; the
 * handler writes the answer (sendJson, or its own content type) or throws a typed error,
 * which the server maps to a status (error-map.ts).
 */
export interface Route {
  method: 'GET' | 'POST' | 'DELETE' | 'PUT';
  path: RegExp;
  handle(c: RouteContext): Promise<void>;
}
