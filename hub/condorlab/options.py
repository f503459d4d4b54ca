"""JupyterHub's hooks for a session's options: the form, the form's data, and the check of a start's options.

The spawner's options_form, options_from_form and apply_user_options are
these functions; the rules they apply are profiles.py's and the contract's.
A refused start answers 400 with the reason, and its options are not kept as
the server's defaults.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import object_session
from tornado import web

from .contract import choices
from .profiles import OPTION_KEYS, OptionsError, check_bounds, form_html, last_end_notice, resolve
from .session import Session


def options_from_form(formdata: dict) -> dict:
    """The form's (or the /hub/spawn query's) options, refused (400) before JupyterHub stores them if too long."""
    options = {}
    for key in OPTION_KEYS:
        value = (formdata.get(key) or [""])[0].strip()
        if value:
            options[key] = value
    try:
        return check_bounds(options)
    except OptionsError as exc:
        raise web.HTTPError(400, f"Cannot start this session: {exc}") from None


def apply_user_options(spawner, user_options: dict) -> None:
    """Take the session the user asked for (spawner.session), or refuse it (400) and forget the options."""
    try:
        values = resolve(spawner.groups(), spawner.unix_groups(), dict(user_options or {}))
    except OptionsError as exc:
        forget_options(spawner)
        raise web.HTTPError(400, f"Cannot start this session: {exc}") from None
    spawner.session = Session.from_dict(values)


def forget_options(spawner) -> None:
    """Drop refused start options: JupyterHub stored them as the server's defaults before they were checked."""
    spawner.user_options = {}
    orm = spawner.orm_spawner
    if orm is not None and orm.user_options:
        orm.user_options = {}
        db = object_session(orm)
        if db is not None:
            db.commit()


async def options_form(spawner) -> str:
    """The options form: the user's profiles, and which of them could start now.

    The share's state is this cycle's; a schedd or collector that does not
    answer within the spawner's form_status_timeout does not hold the form up
    (the query goes on for the next page).
    """
    available = choices(spawner.groups(), spawner.unix_groups())
    notice = last_end_notice(spawner.last_end)
    try:
        await asyncio.wait_for(asyncio.shield(spawner.status_cache.refresh()), timeout=spawner.form_status_timeout)
    except TimeoutError:
        spawner.log.info("The share's state is not known within %s s; the form shows none", spawner.form_status_timeout)
        return notice + form_html(available, None)
    return notice + form_html(available, spawner.status_cache.share)
