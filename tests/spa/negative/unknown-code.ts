// Must NOT compile: `sold_out` is not a code that cancelling a booking can answer.
// tests/test_spa_client.py checks that tsc rejects this file (error TS2678).
import createClient from "openapi-fetch";
import type { paths } from "../src/api.js";

const client = createClient<paths>({ baseUrl: "http://127.0.0.1:8000" });

export async function cancel(reference: string): Promise<string> {
  const { error } = await client.PUT("/api/bookings/{booking_reference}/cancel/", {
    params: { path: { booking_reference: reference } },
  });
  if (!error) return "cancelled";
  switch (error.code) {
    case "already_cancelled":
      return "already";
    case "sold_out":
      return "impossible";
    default:
      return error.code;
  }
}
