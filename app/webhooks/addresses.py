"""Where a webhook may be sent: public addresses only, unless private networks are allowed.

Checked when an endpoint is saved and again before every delivery, which then connects
to the very address that was checked (a name that resolves elsewhere the second time
cannot reach an internal service).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The URL's host is (or resolves to) an address webhooks may not be sent to."""


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host`` (an IP literal is its own address)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
    )
    seen: dict[IPAddress, None] = {}
    for _, _, _, _, sockaddr in infos:
        seen[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return list(seen)


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


async def allowed_address(url: str, *, allow_private: bool) -> IPAddress:
    """The address to connect to for ``url``; AddressRefused when it is not allowed.

    Raises OSError or TimeoutError when the name does not resolve.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    addresses = await resolve(host, parts.port or default_port(parts.scheme))
    if not addresses:
        raise OSError(f"{host} has no address")
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise AddressRefused(
                f"{host} resolves to {refused[0]}, a loopback, private or link-local address."
            )
    return addresses[0]


async def check_url(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` is refused for a webhook endpoint, or None when it is acceptable.

    A name that does not resolve now is accepted: it is checked again at each delivery.
    """
    try:
        await allowed_address(url, allow_private=allow_private)
    except AddressRefused as exc:
        return str(exc)
    except (OSError, TimeoutError, UnicodeError):
        return None
    return None
