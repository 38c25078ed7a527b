"""Secrets (activation keys, proxy and sudo passwords): environment, keyring, or one prompt.

They never come from files in the repo, and Masker hides them from every output.
"""
from __future__ import annotations

import os
import re
import shlex
import urllib.parse
from typing import Callable

import keyring
import keyring.errors

from fleetctl.errors import UsageError

SERVICE = "fleetctl"
MASK = "********"


def env_name(name: str) -> str:
    return "FLEETCTL_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise UsageError(f"secret name {name!r}: use letters, digits, '_', '.', '-' (e.g. activation_id)")
    return name


class Secrets:
    """Looks each secret up once: $FLEETCTL_<NAME>, then the keyring (service 'fleetctl'), then a prompt."""

    def __init__(self, prompt: Callable[[str], str] | None = None):
        self.prompt = prompt
        self.values: dict[str, str] = {}

    def get(self, name: str, purpose: str) -> str:
        if name in self.values:
            return self.values[name]
        value = os.environ.get(env_name(name))
        if not value:
            try:
                value = keyring.get_password(SERVICE, name)
            except keyring.errors.KeyringError:
                value = None
        if not value and self.prompt:
            value = self.prompt(f"{purpose} (secret {name})")
        if not value:
            raise UsageError(f"secret {name!r} ({purpose}) is not set: run `fleetctl secrets set {name}` "
                             f"or export {env_name(name)}")
        self.values[name] = value
        return value

    def masker(self) -> "Masker":
        return Masker(self.values.values())


class Masker:
    """Replaces every secret, in any form a script or URL may carry it, with ********."""

    def __init__(self, values):
        forms: set[str] = set()
        for v in values:
            if len(v) >= 4:
                forms |= {v, urllib.parse.quote(v, safe=""), shlex.quote(v).strip("'"),
                          v.replace("'", "'\"'\"'")}
        self.forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self.forms:
            text = text.replace(form, MASK)
        return text


def store(name: str, value: str) -> None:
    keyring.set_password(SERVICE, check_name(name), value)


def fetch(name: str) -> str | None:
    return keyring.get_password(SERVICE, check_name(name))


def delete(name: str) -> bool:
    try:
        keyring.delete_password(SERVICE, check_name(name))
        return True
    except keyring.errors.PasswordDeleteError:
        return False
