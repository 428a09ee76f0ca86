"""Text that anyone can choose (usernames, journal file names) is shown as text: no Markdown
link out of a table cell, no terminal escape sequence (issue 33, 6)."""

from __future__ import annotations

from competition_pipeline.defs.standings import markdown_text
from competition_pipeline.tools.admin import printable


def test_a_username_cannot_become_a_link_or_break_the_table() -> None:
    shown = markdown_text("x](javascript:alert(1))|y\nz")
    assert "](" not in shown.replace("\\]\\(", "") and "|" not in shown.replace("\\|", "")
    assert "\n" not in shown


def test_terminal_escapes_are_shown_never_sent() -> None:
    shown = printable("evil\x1b]0;owned\x07\x1b[2Jname\u200b")
    assert "\x1b" not in shown and "\x07" not in shown
    assert shown.startswith("evil\\x1b]0;owned\\x07")
