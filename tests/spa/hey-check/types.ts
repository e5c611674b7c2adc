// The same schema read by @hey-api/openapi-ts: the generators agree on what is optional in
// requests, required in responses, and which codes an operation answers.
// tests/test_spa_client.py generates hey/ and type-checks this file with it.
import type { BookingsCancelErrors, EventCreate, TokenPair, UserRegister } from "../hey/types.gen.js";

export const register: UserRegister = { username: "ana", email: "ana@example.com", password: "Pass-word-42" };
export const event: EventCreate = {
  name: "Gala",
  location: "Oslo",
  start_time: "2031-01-01T19:00:00+01:00",
  total_capacity: 5,
};
export const tokenType = (pair: TokenPair): "bearer" => pair.token_type;

type CancelConflict = BookingsCancelErrors[409]["code"];
export const known: CancelConflict = "already_cancelled";
// @ts-expect-error cancelling a booking never answers sold_out
export const unknown: CancelConflict = "sold_out";
export const fields = (problem: BookingsCancelErrors[422]): string[] =>
  problem.errors.map((error) => error.field);
