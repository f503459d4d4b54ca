"""Where the hub and the labs live: the hub on its own name, every lab on a registrable domain apart.

Browsers let a page set cookies for its own registrable domain only. With
labs under a domain of their own (``alice.labs.example.net`` beside the hub's
``jupyter.example.org``), a page served from a lab can neither set nor read
any of the hub's cookies (the login cookie, ``_xsrf``,
``jupyterhub-session-id``, OAuthenticator's state): the cookie tossing that a
shared parent domain allows is gone. JupyterHub builds each user's host with
its ``subdomain_hook``; this one puts it under the labs' domain.
"""

from __future__ import annotations

from collections.abc import Callable

from jupyterhub.utils import subdomain_hook_idna


def labs_subdomain_hook(labs_domain: str) -> Callable[[str, str, str], str]:
    """A JupyterHub ``subdomain_hook`` giving ``<name>.<labs_domain>`` (IDNA-safe, as JupyterHub's own)."""
    labs_domain = labs_domain.strip(".").lower()
    if not labs_domain or "." not in labs_domain:
        raise ValueError(f"the labs' domain {labs_domain!r} must be a DNS domain such as labs.example.net")

    def hook(name: str, domain: str, kind: str) -> str:
        return subdomain_hook_idna(name, labs_domain, kind)

    return hook
