"""The transactional outbox: messages (emails, webhooks) stored with the change they report."""
