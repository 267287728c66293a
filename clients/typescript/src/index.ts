// A typed client of the Tenantry API: openapi-fetch over the types generated from
// docs/openapi.json (`npm run generate`), plus what every caller needs: the bearer token on
// each request, one refresh on a 401 (shared by concurrent requests, since each refresh token
// works once) and the request tried again, and problem+json errors as values.
import createClient, { type Client, type Middleware } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths };
export type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];

/** A signed-in session's tokens. */
export interface Session {
  accessToken: string;
  refreshToken: string;
}

export interface TenantryOptions {
  /** The API's origin, e.g. "http://127.0.0.1:8000". */
  baseUrl: string;
  /** A session kept from before (local storage, say). */
  session?: Session;
  /** Told of every new session, and of its end (undefined): store it there. */
  onSession?: (session: Session | undefined) => void;
  fetch?: typeof globalThis.fetch;
}

/** An error answer of the API, its problem+json body in `problem`. */
export class ProblemError extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.status} ${problem.title}: ${problem.detail}`);
    this.name = "ProblemError";
  }

  /** The problem's type URN, e.g. "urn:tenantry:problem:precondition-failed". */
  get type(): string {
    return this.problem.type;
  }
}

/** The body of an error answer, thrown as a ProblemError. */
export function problemOf(error: unknown): never {
  if (isProblem(error)) {
    throw new ProblemError(error);
  }
  throw new Error(`unexpected error answer: ${JSON.stringify(error)}`);
}

function isProblem(value: unknown): value is Problem {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as Problem).type === "string" &&
    typeof (value as Problem).status === "number"
  );
}

// Requests whose 401 is the answer, not a stale token.
const NO_REFRESH = ["/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout"];

export class Tenantry {
  /** Every operation of the API, typed: `tenantry.api.GET("/api/v1/projects", ...)`. */
  readonly api: Client<paths>;
  private current: Session | undefined;
  private refreshing: Promise<Session | undefined> | undefined;
  private readonly retries = new Map<string, Request>();
  private readonly fetcher: typeof globalThis.fetch;

  constructor(private readonly options: TenantryOptions) {
    this.current = options.session;
    this.fetcher = options.fetch ?? globalThis.fetch;
    this.api = createClient<paths>({ baseUrl: options.baseUrl, fetch: this.fetcher });
    this.api.use(this.middleware());
  }

  get session(): Session | undefined {
    return this.current;
  }

  /** Sign in; the session is kept and sent with every later request. */
  async signIn(tenant: string, login: string, password: string): Promise<Session> {
    const { data, error } = await this.api.POST("/api/v1/auth/login", {
      body: { tenant, login, password },
    });
    if (data === undefined) {
      problemOf(error);
    }
    return this.keep({ accessToken: data.access_token, refreshToken: data.refresh_token });
  }

  /** End the session here and on the server. */
  async signOut(): Promise<void> {
    const session = this.current;
    this.keep(undefined);
    if (session !== undefined) {
      await this.api.POST("/api/v1/auth/logout", {
        body: { refresh_token: session.refreshToken },
      });
    }
  }

  /** A new session from the refresh token, once however many requests ask at the same time. */
  refresh(): Promise<Session | undefined> {
    this.refreshing ??= this.renew().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async renew(): Promise<Session | undefined> {
    const session = this.current;
    if (session === undefined) {
      return undefined;
    }
    const { data } = await this.api.POST("/api/v1/auth/refresh", {
      body: { refresh_token: session.refreshToken },
    });
    // Refused (expired, revoked, used): the session is over; sign in again.
    return this.keep(
      data && { accessToken: data.access_token, refreshToken: data.refresh_token },
    );
  }

  private keep(session: Session): Session;
  private keep(session: Session | undefined): Session | undefined;
  private keep(session: Session | undefined): Session | undefined {
    this.current = session;
    this.options.onSession?.(session);
    return session;
  }

  private middleware(): Middleware {
    return {
      onRequest: ({ request, schemaPath, id }) => {
        if (this.current !== undefined && !request.headers.has("Authorization")) {
          request.headers.set("Authorization", `Bearer ${this.current.accessToken}`);
        }
        if (!NO_REFRESH.includes(schemaPath)) {
          // Kept unsent: a request's body can be read once, and a retry needs it again.
          this.retries.set(id, request.clone());
        }
        return request;
      },
      onResponse: async ({ response, id }) => {
        const original = this.retries.get(id);
        this.retries.delete(id);
        if (response.status !== 401 || original === undefined || this.current === undefined) {
          return response;
        }
        const sent = original.headers.get("Authorization");
        // Another request may have refreshed meanwhile: use its session, else refresh.
        const session =
          sent === `Bearer ${this.current.accessToken}` ? await this.refresh() : this.current;
        if (session === undefined) {
          return response;
        }
        original.headers.set("Authorization", `Bearer ${session.accessToken}`);
        return this.fetcher(original);
      },
    };
  }
}

const EVENT_END = /\r\n\r\n|\n\n|\r\r/;

/** Server-sent events of a task (`GET /api/v1/tasks/{id}/events`), each its task, until the
 * stream ends (when the task does). */
export async function* taskEvents(
  tenantry: Tenantry,
  taskId: string,
): AsyncGenerator<Schemas["TaskRead"]> {
  const { response } = await tenantry.api.GET("/api/v1/tasks/{task_id}/events", {
    params: { path: { task_id: taskId } },
    parseAs: "stream",
  });
  if (!response.ok || response.body === null) {
    problemOf(await response.json().catch(() => undefined));
  }
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true });
    // Lines end in CRLF, LF or CR (the server sends CRLF); a blank line ends an event.
    let end: RegExpExecArray | null;
    while ((end = EVENT_END.exec(buffered)) !== null) {
      const event = buffered.slice(0, end.index);
      buffered = buffered.slice(end.index + end[0].length);
      const data = event
        .split(/\r\n|\r|\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) {
        yield JSON.parse(data) as Schemas["TaskRead"];
      }
    }
  }
}
