"""Load test and benchmarks of event-booking-api."""
