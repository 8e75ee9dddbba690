"""The status report: gathered once (`report`), shown as a page (`page`), as JSON, or in a terminal (`text`)."""

from shared.status.page import content_security_policy, render_page
from shared.status.report import collect, collect_for, redact
from shared.status.text import render_text

__all__ = ["collect", "collect_for", "content_security_policy", "redact", "render_page", "render_text"]
