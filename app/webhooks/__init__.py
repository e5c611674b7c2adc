"""Webhook endpoints of organizers: subscriptions, signing, the deliveries log."""
