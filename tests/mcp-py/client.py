"""An MCP host made with the official Python SDK, set up as a real host is: an OAuth client
provider (in-memory storage, redirect and callback handlers that only record being called) on
the HTTP client, and the Latchkey client token in `X-Latchkey-Client`. It connects over
Streamable HTTP, initialises, lists the tools and calls `whoami`, then prints one JSON line:
what worked, the error that reached it (type, message, MCP code and data), and whether the OAuth
flow ever asked for a browser.

    .venv/bin/python client.py --url http://127.0.0.1:PORT/mcp/mcp --token lk_... [--timeout 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
from mcp import ClientSession, MCPError
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)


class MemoryStorage:
    """The SDK's `TokenStorage` protocol, in memory: a host that has never signed in."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def describe(error: BaseException) -> dict[str, Any]:
    described: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, MCPError):
        described["code"] = error.code
        described["data"] = error.data
    return described


async def run(args: argparse.Namespace) -> dict[str, Any]:
    calls = {"redirect": 0, "callback": 0}

    async def redirect_handler(url: str) -> None:
        calls["redirect"] += 1

    async def callback_handler() -> AuthorizationCodeResult:
        calls["callback"] += 1
        raise RuntimeError("this test host has no browser to finish an OAuth login")

    provider = OAuthClientProvider(
        server_url=args.url,
        client_metadata=OAuthClientMetadata(
            client_name="latchkey-test-host (python)",
            redirect_uris=["http://127.0.0.1:9/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=MemoryStorage(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    outcome: dict[str, Any] = {"initialized": False, "errors": []}
    try:
        with anyio.fail_after(args.timeout):
            http = create_mcp_http_client(headers={"X-Latchkey-Client": args.token}, auth=provider)
            async with http, streamable_http_client(args.url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    outcome["initialized"] = True
                    tools = await session.list_tools()
                    outcome["tools"] = sorted(tool.name for tool in tools.tools)
                    who = await session.call_tool("whoami", {})
                    outcome["whoami"] = next(
                        (json.loads(c.text) for c in who.content if getattr(c, "type", "") == "text"),
                        None,
                    )
    except BaseException as error:  # noqa: BLE001 - everything that reached the host is the answer
        if isinstance(error, KeyboardInterrupt):
            raise
        outcome["errors"] = [describe(leaf) for leaf in leaves(error)]
    outcome["redirect_called"] = calls["redirect"]
    outcome["callback_called"] = calls["callback"]
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--timeout", type=float, default=20.0)
    outcome = anyio.run(run, parser.parse_args())
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
