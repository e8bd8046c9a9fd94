"""Keyed pseudonyms of dialogue ids and speakers, so a store never holds the names it was given.

A pseudonym is an HMAC-SHA256 with a secret kept in the store itself: the same name
always maps to the same pseudonym in one store (so corrections find their dialogue and
the model still sees who spoke when), but without the secret nobody can test a guessed
name against it, and two stores' pseudonyms cannot be linked. Applying a pseudonym twice
changes nothing, so callers may pass an id as given or as the store returned it.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_DIALOGUE = re.compile(r"p-[0-9a-f]{24}")
_SPEAKER = re.compile(r"s-[0-9a-f]{12}")


def is_pseudonym(dialogue_id: str) -> bool:
    """Is ``dialogue_id`` already a dialogue pseudonym (``p-`` and 24 hex digits)?"""
    return isinstance(dialogue_id, str) and _DIALOGUE.fullmatch(dialogue_id) is not None


class Pseudonyms:
    """The pseudonyms of one store: with its secret, or the names themselves when it does not pseudonymise."""

    def __init__(self, secret: bytes | None) -> None:
        self._secret = secret

    @property
    def active(self) -> bool:
        return self._secret is not None

    def dialogue(self, dialogue_id: str) -> str:
        """``p-`` and 24 hex digits of HMAC(secret, "dialogue\\0" + id); a pseudonym is returned unchanged."""
        if self._secret is None or is_pseudonym(dialogue_id):
            return dialogue_id
        return "p-" + self._mac("dialogue", dialogue_id)[:24]

    def speaker(self, name: str) -> str:
        """``s-`` and 12 hex digits of HMAC(secret, "speaker\\0" + name); a speaker pseudonym is returned unchanged."""
        if self._secret is None or _SPEAKER.fullmatch(name) is not None:
            return name
        return "s-" + self._mac("speaker", name)[:12]

    def _mac(self, kind: str, value: str) -> str:
        return hmac.new(self._secret, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()


__all__ = ["Pseudonyms", "is_pseudonym"]
