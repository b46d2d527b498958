"""Who is calling: the API key of ``Authorization: Bearer``, then its rate limit.

A missing, malformed, unknown, wrong or revoked key all answer the same 401; a key over its
rate limit answers 429 with ``Retry-After``. Keys are read from the header only, never from the
query string (which access logs print), and never logged.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandq.gateway.credentials import ApiKey
from sandq.gateway.rate_limit import retry_after_header
from sandq.gateway.state import Gateway, gateway

bearer = HTTPBearer(auto_error=False, description="An API key made by `sandq keys create`.")


async def caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    state: Annotated[Gateway, Depends(gateway)],
) -> ApiKey:
    """The caller's API key, once it is valid and within its rate limit."""
    key = await state.api_keys.authenticate(credentials.credentials) if credentials else None
    if key is None:
        raise HTTPException(401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"})
    wait = await state.limiter.acquire(key.key_id)
    if wait is not None:
        raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": retry_after_header(wait)})
    return key


Caller = Annotated[ApiKey, Depends(caller)]
State = Annotated[Gateway, Depends(gateway)]
