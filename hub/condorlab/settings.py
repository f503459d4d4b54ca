"""What a site sets: the hub's JupyterHub configuration from the settings file, and the spawner's settings.

The jupyterhub role writes the site's settings as JSON (SETTINGS_FILE, from
the inventory); the hub's jupyterhub_config.py is a static file that calls
configure() with it. configure() is also the one place the hub package is set
up: it installs the API handlers (handlers.install), exports the queue view's
metrics and gives the shared queue view its timing. Nothing is patched when a
module is imported.

SpawnerSettings declares what CondorlabSpawner can be told (c.CondorlabSpawner.*),
with the defaults the role's documentation states.
"""

from __future__ import annotations

import json
import sys

from batchspawner import CondorSpawner
from traitlets import Dict, Float, Integer, List, Unicode, default

from . import contract, handlers, jobs, metrics, options
from .accounting import SESSION_RECORDS

SETTINGS_FILE = contract.HUB_SETTINGS_FILE
# The settings file's sections; anything else is refused by name.
SECTIONS = {"network", "state", "login", "spawner", "queue", "services", "overrides"}
# How often activity must reach the hub, bounded by the shortest idle timeout (seconds).
ACTIVITY_EVERY_BOUNDS = (15, 300)


class SettingsError(ValueError):
    """A settings file the hub cannot start with; the message names the field."""


class SpawnerSettings(CondorSpawner):
    """CondorlabSpawner's settings (timing ones from the role's jupyterhub_timing) and its options form's hooks."""

    job_helper = Unicode(
        "/opt/condorlab/hub/bin/condorlab-job", help="The job helper (helper.py), run as the user through sudo."
    ).tag(config=True)
    job_seal = Unicode(
        "/opt/condorlab/hub/bin/condorlab-seal", help="The seal (seal.py), run as root through sudo."
    ).tag(config=True)
    job_tunnel = Unicode(
        "/opt/condorlab/hub/bin/condorlab-tunnel", help="The tunnel command (tunnel.py), run as root through sudo."
    ).tag(config=True)
    user_groups_file = Unicode(
        contract.USER_GROUPS_FILE, help="The user groups as the inventory's filter wrote them; read when it changes."
    ).tag(config=True)
    user_groups = List(Dict(), help="The user groups, given here instead of user_groups_file (tests).").tag(config=True)
    accounting_records = Unicode(SESSION_RECORDS, help="Where session starts and stops are recorded.").tag(config=True)
    lab_token_lifetime = Integer(
        300, help="Seconds a lab's HTCondor token is valid (renewed by the lab while it runs); 0: labs get none."
    ).tag(config=True)
    proxy_alt_names = List(
        Unicode(), help="Names a lab's certificate carries for the proxy when users share the hub's origin."
    ).tag(config=True)
    poll_interval = Integer(
        3, help="Seconds between polls of a running session: a lost node is seen within lost_after plus this."
    ).tag(config=True)
    queue_refresh_every = Float(30, help="Seconds between queue reads on a hub without sessions (metrics).").tag(
        config=True
    )
    stop_grace = Integer(30, help="Seconds a stopping session gets to end by itself before it is removed.").tag(
        config=True
    )
    stop_transfer_timeout = Integer(
        600, help="Seconds a stopping session may spend sending its work directory back before it is removed."
    ).tag(config=True)
    cert_margin = Integer(
        900, help="Seconds a session certificate outlives the start timeout plus the profile's walltime."
    ).tag(config=True)
    form_status_timeout = Float(
        3.0, help="Seconds the options form waits for the share's state; it is shown without it after that."
    ).tag(config=True)
    lost_after = Integer(
        12, help="Seconds a running lab may not answer the health check before its node is taken as lost."
    ).tag(config=True)
    health_timeout = Float(
        2, help="Seconds a health check of a running lab may take; a slower answer counts as none."
    ).tag(config=True)
    lab_exit_grace = Integer(
        8, help="Seconds nothing may listen on a running lab's port before the session ends as 'lab died'."
    ).tag(config=True)

    @default("options_form")
    def _options_form_default(self):
        return options.options_form

    @default("options_from_form")
    def _options_from_form_default(self):
        return options.options_from_form

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return options.apply_user_options


def check(settings) -> dict:
    """The settings if the hub can start with them, else SettingsError naming the field."""
    if not isinstance(settings, dict):
        raise SettingsError("the settings must be a JSON object")
    unknown = sorted(set(settings) - SECTIONS)
    if unknown:
        raise SettingsError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(SECTIONS))}")
    missing = sorted(SECTIONS - {"queue", "overrides"} - set(settings))
    if missing:
        raise SettingsError(f"missing section(s) {', '.join(missing)}")
    unknown = sorted(set(settings["spawner"]) - set(SpawnerSettings.class_trait_names(config=True)))
    if unknown:
        raise SettingsError(f"spawner: unknown setting(s) {', '.join(unknown)}")
    if settings["login"].get("authenticator") not in ("pam", "oidc"):
        raise SettingsError(f"login.authenticator is {settings['login'].get('authenticator')!r}; use pam or oidc")
    return settings


def load(path: str = SETTINGS_FILE) -> dict:
    """The settings file, checked."""
    with open(path) as handle:
        try:
            return check(json.load(handle))
        except (ValueError, SettingsError) as exc:
            raise SettingsError(f"{path}: {exc}") from None


def activity_every(idle_timeouts: dict) -> int:
    """How often activity must reach the hub: well within the shortest idle timeout (JupyterHub's 5 min is too late)."""
    low, high = ACTIVITY_EVERY_BOUNDS
    return max(low, min(high, min([t for t in idle_timeouts.values() if t] or [900]) // 3))


def configure(c, path_or_settings: str | dict = SETTINGS_FILE) -> dict:
    """Configure JupyterHub (the config object c) for condorlab from the settings; set the package up."""
    settings = load(path_or_settings) if isinstance(path_or_settings, str) else check(path_or_settings)
    _network(c, settings["network"])
    _state(c, settings["state"])
    _login(c, settings["login"])
    _spawner(c, settings["spawner"])
    _services(c, settings["services"])
    for key, value in settings.get("overrides", {}).items():
        section, trait = key.rsplit(".", 1)
        setattr(getattr(c, section), trait, value)
    queue = settings.get("queue", {})
    jobs.shared_cache.max_age = float(queue.get("max_age", jobs.shared_cache.max_age))
    jobs.shared_cache.reschedule_after = float(queue.get("reschedule_after", jobs.shared_cache.reschedule_after))
    jobs.shared_cache.avoid_for = float(queue.get("avoid_lost_nodes_for", jobs.shared_cache.avoid_for))
    handlers.install()
    metrics.register(jobs.shared_cache)
    return settings


def _network(c, net: dict) -> None:
    # Users reach the proxy over HTTPS; the proxy, the hub and every session
    # talk mutual TLS with certificates of JupyterHub's internal CAs.
    c.JupyterHub.bind_url = f"https://:{int(net['public_port'])}"
    c.JupyterHub.hub_bind_url = f"https://0.0.0.0:{int(net['hub_port'])}"
    c.JupyterHub.hub_connect_url = net["hub_connect_url"]
    c.JupyterHub.internal_ssl = True
    c.JupyterHub.internal_certs_location = net["internal_certs"]
    # The names the sessions call the hub by, and the public names: the proxy
    # checks the hub's certificate against the name the browser used.
    c.JupyterHub.trusted_alt_names = list(net["hub_alt_names"])
    # The proxy is a service of its own (condorlab-proxy): sessions stay
    # reachable while the hub restarts.
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = f"https://127.0.0.1:{int(net['proxy_api_port'])}"
    # The hub looks up execute nodes' names as the system does, each time: a
    # node back on a new address is reached at once (resolver.py).
    from .resolver import SystemResolver

    c.JupyterHubHTTPClient.connector_options = {"resolver": SystemResolver()}
    if net.get("subdomain_host"):
        # The hub on its own name, each user's lab on an origin of its own under
        # the labs' domain, a registrable domain apart from the hub's: a lab's
        # pages can neither set nor read the hub's cookies (origins.py). The
        # login cookies are host-only (__Host-), which is safe on the path /
        # only because every lab has a host of its own.
        from .origins import labs_subdomain_hook

        host = net["subdomain_host"].rstrip("/")
        c.JupyterHub.public_url = host + "/"
        c.JupyterHub.subdomain_host = host
        c.JupyterHub.subdomain_hook = labs_subdomain_hook(net["labs_domain"])
        c.JupyterHub.cookie_host_prefix_enabled = True
    # Cookies (the login cookie, _xsrf) only over HTTPS.
    c.JupyterHub.tornado_settings = {"cookie_options": {"secure": True}}


def _state(c, state: dict) -> None:
    # The cookie secret comes from JPY_COOKIE_SECRET (systemd EnvironmentFile).
    c.JupyterHub.db_url = f"sqlite:///{state['dir']}/jupyterhub.sqlite"
    # A hub restart must not end anybody's session.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.cleanup_proxy = False


def _login(c, login: dict) -> None:
    allowed = set(login["allowed_groups"])
    if login["authenticator"] == "pam":
        # The hub is not root: it checks passwords through the shadow group, with a
        # PAM service of its own, and opens no PAM sessions. Account checks need
        # pam_unix's setuid helper, which an unprivileged service cannot use; a
        # locked account still fails the password check.
        c.JupyterHub.authenticator_class = "pam"
        c.PAMAuthenticator.service = "condorlab-hub"
        c.PAMAuthenticator.open_sessions = False
        c.PAMAuthenticator.check_account = False
        c.PAMAuthenticator.allowed_groups = allowed
        return
    oidc = login["oidc"]
    auth = c.GenericOAuthenticator
    c.JupyterHub.authenticator_class = "generic-oauth"
    # The client secret is in the hub's environment (OAUTH_CLIENT_SECRET).
    auth.client_id = oidc["client_id"]
    auth.authorize_url = oidc["authorize_url"]
    auth.token_url = oidc["token_url"]
    auth.userdata_url = oidc["userdata_url"]
    auth.validate_server_cert = True
    if oidc.get("ca"):
        auth.http_request_kwargs = {"ca_certs": oidc["ca"]}
    auth.username_claim = oidc["username_claim"]
    auth.scope = list(oidc["scope"])
    auth.oauth_callback_url = oidc["callback_url"]
    # Sessions run as the Unix user of the same name, so only members of the
    # allowed groups (in the provider's groups claim) may log in, and the name
    # must be a Unix user name. OAuthenticator takes the groups claim only when
    # it manages JupyterHub groups; the spawner sets the session's user group
    # again at each start (keep_session_groups).
    auth.allow_all = False
    auth.manage_groups = True
    auth.custom_403_message = (
        f"Your account is not in any of the groups that may use this service ({', '.join(login['allowed_groups'])}). "
        "Ask your group's administrator to add you."
    )
    auth.auth_state_groups_key = f"oauth_user.{oidc['groups_claim']}"
    auth.allowed_groups = allowed
    auth.username_pattern = contract.USER_NAME.pattern
    auth.post_auth_hook = keep_session_groups


def keep_session_groups(authenticator, handler, auth_model):
    """After the allowed-groups check: leave the user's JupyterHub groups as the spawner set them.

    A login would otherwise set them to every group of the claim, taking a
    running session away from its own user group's idle culler.
    """
    auth_model["groups"] = None
    return auth_model


def _spawner(c, spawner: dict) -> None:
    # Where the lab opens and what the job runs are the job helper's settings
    # (contract.HELPER_CONFIG), not the hub's.
    c.JupyterHub.spawner_class = "condorlab.spawner.CondorlabSpawner"
    for name, value in spawner.items():
        # poll_interval is JupyterHub's Spawner setting: set there, a site's
        # override of Spawner.poll_interval still replaces it.
        section = c.Spawner if name == "poll_interval" else c.CondorlabSpawner
        setattr(section, name, value)
    c.Spawner.default_url = "/lab"
    # Logging in shows the home page; a session starts when the user asks for one.
    c.JupyterHub.redirect_to_server = False
    # The home page says how long a running session may still run (its walltime).
    from .messages import session_ends_notice

    c.JupyterHub.template_vars = {"announcement_home": session_ends_notice}


def _services(c, services: dict) -> None:
    bin_dir = services["bin_dir"]
    # Session jobs no server of the hub owns are removed after a grace period,
    # at the hub's start and every few minutes; the hub's own sessions never
    # (sweep.py). It reads the servers' job ids and removes as the job's owner.
    c.JupyterHub.services = [
        {
            "name": "condorlab-sweep",
            "command": [
                f"{bin_dir}/condorlab-sweep",
                "--helper",
                services["job_helper"],
                "--every",
                str(int(services["sweep_every"])),
                "--grace",
                str(int(services["orphan_grace"])),
            ],
        }
    ]
    roles = [
        {
            "name": "condorlab-sweep",
            "description": "List the servers and their job ids",
            "scopes": ["list:users", "read:servers", "admin:server_state"],
            "services": ["condorlab-sweep"],
        }
    ]
    # Prometheus reads /hub/metrics as the service "prometheus", whose token
    # (made on this host) may do nothing else.
    with open(services["metrics_token_file"]) as handle:
        c.JupyterHub.services.append({"name": "prometheus", "api_token": handle.read().strip()})
    roles.append(
        {
            "name": "metrics-reader",
            "description": "Read the hub's metrics",
            "scopes": ["read:metrics"],
            "services": ["prometheus"],
        }
    )
    # Idle sessions: one jupyterhub-idle-culler per user group with an idle
    # timeout, allowed to see and stop the servers of that group's members
    # only (a user is a member of the JupyterHub group of the session they
    # started: CondorlabSpawner.join_cull_group). A culled session ends like a
    # stop and is recorded as "idle". Activity must reach the hub well within
    # the shortest timeout.
    timeouts = services.get("idle_timeouts", {})
    every = activity_every(timeouts)
    c.JupyterHub.last_activity_interval = every
    c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(every)}
    for group, timeout in timeouts.items():
        if not timeout:
            continue
        name = f"idle-culler-{group}"
        c.JupyterHub.services.append(
            {
                "name": name,
                "command": [
                    f"{bin_dir}/jupyterhub-idle-culler",
                    f"--timeout={int(timeout)}",
                    f"--cull-every={max(15, min(300, int(timeout) // 4))}",
                    "--ssl-enabled=True",
                    f"--internal-certs-location={services['internal_certs']}",
                ],
            }
        )
        roles.append(
            {
                "name": name,
                "description": f"End idle sessions of user group {group}",
                "scopes": [
                    f"{scope}!group={group}"
                    for scope in ("list:users", "read:users:activity", "read:servers", "delete:servers")
                ],
                "services": [name],
            }
        )
    c.JupyterHub.load_roles = roles


def main(argv: list[str] | None = None) -> int:
    """python -m condorlab.settings FILE: check a settings file (the role validates it so before it is installed)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        load(args[0] if args else SETTINGS_FILE)
    except (OSError, SettingsError) as exc:
        print(f"condorlab settings: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["SETTINGS_FILE", "SettingsError", "SpawnerSettings", "activity_every", "check", "configure", "load", "main"]
