"""event-booking-api: async event booking service."""
