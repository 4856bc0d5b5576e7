"""Refusals that a page shows to a person, in the person's language.

A domain function of the portal (promotions, feedback, mail) refuses with a message
marked for the catalogs and its parameters apart: ``str()`` is the English text (logs,
the API), :meth:`Refusal.translated` the text in the request's language (pages).

>>> r = Refusal("a title has 1 to %(n)s characters", n=120)
>>> str(r), r.translated()
('a title has 1 to 120 characters', 'a title has 1 to 120 characters')
"""

from __future__ import annotations

from portal import i18n


class Refusal(ValueError):
    """A request refused; ``str()`` in English, ``translated()`` in the request's language."""

    def __init__(self, template: str, **params: object) -> None:
        super().__init__(template % params if params else template)
        self.template = template
        self.params = params

    def translated(self) -> str:
        """The message in the request's language."""
        text = i18n.gettext(self.template)
        return text % self.params if self.params else text


def said(exc: Exception) -> str:
    """What a page shows for a refusal: translated when it is one of ours, else its own words."""
    return exc.translated() if isinstance(exc, Refusal) else str(exc)
