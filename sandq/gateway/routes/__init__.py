"""The gateway's HTTP routes: executions, batches, webhooks' secret, and the service's own."""
