// A frontend's journey through the API, written as an SPA would write it: openapi-fetch over
// the types openapi-typescript generates from /api/schema (src/api.d.ts). No casts, no
// hand-written types, no parsing of URLs. Run by tests/test_spa_client.py against a live server:
//   API_BASE_URL=http://127.0.0.1:8000 node build/journey.js
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./api.js";

type Problem = components["schemas"]["Problem"];
type TokenPair = components["schemas"]["TokenPair"];
type EventPage = components["schemas"]["EventPage"];

const baseUrl = process.env.API_BASE_URL ?? "http://127.0.0.1:8000";
const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const password = "Journey-Pass-2026!";

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`journey failed: ${message}`);
}

// --- Tokens, and refresh-and-retry on `invalid_token` (never on `invalid_credentials`) ------

// Module state behind functions: TypeScript would keep a narrowing across awaits otherwise.
const session: { tokens: TokenPair | undefined; refreshes: number } = {
  tokens: undefined,
  refreshes: 0,
};
const currentTokens = (): TokenPair | undefined => session.tokens;
const refreshCount = (): number => session.refreshes;

const client = createClient<paths>({ baseUrl });

// One refresh at a time: a refresh token works once, so concurrent 401s share it.
let pendingRefresh: Promise<boolean> | undefined;
function refreshTokens(): Promise<boolean> {
  pendingRefresh ??= exchangeRefreshToken().finally(() => {
    pendingRefresh = undefined;
  });
  return pendingRefresh;
}

async function exchangeRefreshToken(): Promise<boolean> {
  const tokens = currentTokens();
  if (!tokens) return false;
  const { data } = await client.POST("/api/auth/token/refresh/", {
    body: { refresh: tokens.refresh },
  });
  session.refreshes += 1;
  session.tokens = data;
  return data !== undefined;
}

// The token endpoints authenticate by their body: an expired access token sent along would
// be refused there like anywhere else (401 invalid_token), so it is not sent to them.
const tokenEndpoints = new Set(["/api/auth/login/", "/api/auth/token/refresh/", "/api/auth/logout/"]);

const auth: Middleware = {
  onRequest({ request, schemaPath }) {
    const tokens = currentTokens();
    if (tokens && !tokenEndpoints.has(schemaPath) && !request.headers.has("Authorization")) {
      request.headers.set("Authorization", `Bearer ${tokens.access}`);
    }
    return request;
  },
  async onResponse({ request, response, schemaPath }) {
    if (response.status !== 401 || schemaPath === "/api/auth/token/refresh/") return response;
    const problem: Problem = await response.clone().json();
    // `invalid_token`: the access token expired or was revoked; a new pair may fix it.
    if (problem.code !== "invalid_token" || !(await refreshTokens())) return response;
    const retry = new Request(request, { headers: new Headers(request.headers) });
    retry.headers.set("Authorization", `Bearer ${currentTokens()?.access ?? ""}`);
    return fetch(retry);
  },
};
client.use(auth);

// Follow an absolute `next` link with the typing of the list operation it belongs to.
const at = (url: string) => ({ fetch: (request: Request) => fetch(new Request(url, request)) });

// --- The journey ---------------------------------------------------------------------------

async function register(role: "attendee" | "organizer"): Promise<string> {
  const username = `${role}_${run}`;
  const email = `${username}@example.com`;
  // `role` defaults to attendee on the server: the request type lets it out.
  const body = role === "organizer" ? { username, email, password, role } : { username, email, password };
  const { data, error, response } = await client.POST("/api/auth/register/", { body });
  if (error) throw new Error(`register: ${error.code} ${error.detail}`);
  check(data.role === role, "the role registered");
  check(response.headers.get("Location")?.startsWith("http") === true, "register Location");
  return username;
}

async function login(username: string, secret: string): Promise<void> {
  const { data, error } = await client.POST("/api/auth/login/", {
    body: { username, password: secret },
  });
  if (error) {
    switch (error.code) {
      case "invalid_credentials":
        throw new Error("wrong username or password");
      case "invalid_token":
        throw new Error("a stale access token was sent to login");
      case "rate_limited":
      case "validation_error":
      case "payload_too_large":
      case "service_unavailable":
        throw new Error(`login refused: ${error.code}`);
    }
  }
  if (data) {
    const tokenType: "bearer" = data.token_type;
    check(tokenType === "bearer", "token type");
  }
  session.tokens = data;
}

async function main(): Promise<void> {
  // An organizer puts two events on sale.
  const organizer = await register("organizer");
  await login(organizer, password);
  const city = `Journeytown ${run}`;
  let ticketTypeId = 0;
  let eventId = 0;
  for (const name of [`Opening night ${run}`, `Closing night ${run}`]) {
    const { data: event, error, response } = await client.POST("/api/events/", {
      body: {
        name,
        location: city,
        start_time: new Date(Date.now() + 30 * 86_400_000).toISOString(),
        total_capacity: 50,
      },
    });
    if (error) throw new Error(`create event: ${error.code}`);
    check(response.headers.get("Location") === `${baseUrl}/api/events/${event.id}/`, "Location");
    // Server-defaulted fields are optional in the request and always there in the response.
    const description: string = event.description;
    check(description === "", "description is defaulted by the server");
    const { data: ticketType, error: ttError } = await client.POST(
      "/api/events/{event_id}/ticket-types/",
      { params: { path: { event_id: event.id } }, body: { name: "Standard", price: "12.50", quantity_available: 20 } },
    );
    if (ttError) throw new Error(`create ticket type: ${ttError.code}`);
    check(ticketType.price === "12.50", "money is a string with two places");
    if (!eventId) [eventId, ticketTypeId] = [event.id, ticketType.id];
  }
  session.tokens = undefined;

  // An attendee signs up; a wrong password is `invalid_credentials`, and no refresh fires.
  const attendee = await register("attendee");
  session.tokens = undefined;
  const wrong = await client.POST("/api/auth/login/", {
    body: { username: attendee, password: "not-the-password" },
  });
  check(wrong.error?.code === "invalid_credentials", "a wrong password is invalid_credentials");
  check(refreshCount() === 0, "no refresh on a failed login");
  await login(attendee, password);

  // Events with filters, one per page, following `next` as given.
  const seen: number[] = [];
  let page: EventPage | undefined;
  let listError: Problem | undefined;
  ({ data: page, error: listError } = await client.GET("/api/events/", {
    params: { query: { location: city, ordering: "-start_time", page_size: 1 } },
  }));
  if (listError) throw new Error(`list events: ${listError.code}`);
  while (page) {
    seen.push(...page.results.map((event) => event.id));
    if (!page.next) break;
    check(page.next.startsWith(`${baseUrl}/api/events/?`), `absolute next link: ${page.next}`);
    ({ data: page } = await client.GET("/api/events/", at(page.next)));
  }
  check(seen.length === 2 && seen.includes(eventId), `both events listed: ${seen.join(",")}`);

  // Book with an Idempotency-Key; the retry returns the same booking.
  const key = `journey-${run}`;
  const bookingBody = { event_id: eventId, items: [{ ticket_type_id: ticketTypeId, quantity: 2 }] };
  const first = await client.POST("/api/bookings/", {
    params: { header: { "Idempotency-Key": key } },
    body: bookingBody,
  });
  if (first.error) throw new Error(`book: ${first.error.code}`);
  const retried = await client.POST("/api/bookings/", {
    params: { header: { "Idempotency-Key": key } },
    body: bookingBody,
  });
  const reference = first.data.booking_reference;
  check(retried.data?.booking_reference === reference, "an idempotent retry is the same booking");
  check(first.data.total_price === "25.00", `total price ${first.data.total_price}`);
  const location = first.response.headers.get("Location");
  check(location === `${baseUrl}/api/bookings/${reference}/`, `booking Location ${location}`);

  // A stale access token is refreshed once and the request retried.
  const before = currentTokens();
  if (before) session.tokens = { ...before, access: `${before.access}x` };
  const mine = await client.GET("/api/users/me/bookings/", { params: { query: { status: "confirmed" } } });
  check(mine.data?.count === 1 && refreshCount() === 1, "refreshed on invalid_token, then listed");
  // Public reads take a token optionally, and check one that is sent like any other route.
  const stale = currentTokens();
  if (stale) session.tokens = { ...stale, access: `${stale.access}x` };
  const detail = await client.GET("/api/events/{event_id}/", {
    params: { path: { event_id: eventId } },
  });
  check(detail.data?.id === eventId && refreshCount() === 2, "a public read checks a sent token");

  // Cancel twice: the second answer is a code the operation declares.
  const path = { booking_reference: reference };
  const cancelled = await client.PUT("/api/bookings/{booking_reference}/cancel/", { params: { path } });
  check(cancelled.data?.status === "cancelled", "cancelled");
  const again = await client.PUT("/api/bookings/{booking_reference}/cancel/", { params: { path } });
  let outcome = "cancelled twice";
  if (again.error) {
    switch (again.error.code) {
      case "already_cancelled":
        outcome = "already cancelled";
        break;
      case "event_not_bookable":
        outcome = "too late to cancel";
        break;
      case "not_found":
      case "not_authenticated":
      case "invalid_token":
      case "validation_error":
      case "busy":
      case "service_unavailable":
        outcome = `unexpected: ${again.error.code}`;
        break;
    }
  }
  check(outcome === "already cancelled", outcome);

  // A validation problem names its fields; other problems have no `errors`.
  const invalid = await client.POST("/api/bookings/", { body: { event_id: eventId, items: [] } });
  if (invalid.error?.code === "validation_error") {
    check(invalid.error.errors.some((e) => e.field.startsWith("body.items")), "errors name the field");
  } else {
    throw new Error("an empty booking is a validation error");
  }

  // Refresh explicitly, then log out: the refresh token's session is over.
  check(await refreshTokens(), "refresh");
  const refreshToken = currentTokens()?.refresh ?? "";
  const out = await client.POST("/api/auth/logout/", { body: { refresh: refreshToken } });
  check(out.response.status === 204, "logged out");
  session.tokens = undefined;
  const dead = await client.POST("/api/auth/token/refresh/", { body: { refresh: refreshToken } });
  check(dead.error?.code === "invalid_token", "a logged-out refresh token is refused");

  console.log(`journey ok: ${seen.length} events, booking ${reference}, ${refreshCount()} refreshes`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
