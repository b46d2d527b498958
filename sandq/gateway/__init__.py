"""The multi-tenant HTTP gateway: API keys, rate limits, signed webhooks (``sandq serve``)."""
