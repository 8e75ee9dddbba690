"""The status page as one self-contained HTML document: inline CSS and JS, no external asset, works offline.

Why server-rendered with a little JS on top: the page must be readable without JS (a locked-down browser, a
saved copy), while filtering the links, replaying dead letters and auto-refresh are what JS adds. Every value
that comes from data (deal names, notes, messages: user text with HTML, unicode and emoji) is escaped with
`html.escape`; the Content-Security-Policy allows only this page's own script and style (by nonce), so text
that escaped escaping still could not run.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

from shared.status.report import ERROR, OK, UNKNOWN, WARNING, ago

HEALTH_TITLES = {
    "salesforce_poll": "Salesforce poll",
    "salesforce_push": "Salesforce push",
    "partner_center_reconcile": "Partner Center reconcile",
    "partner_center_token": "Partner Center token",
    "webhook": "Webhook registration",
    "salesforce_budget": "Salesforce API budget",
    "salesforce_login": "Salesforce login",
}
STATE_WORDS = {OK: "OK", WARNING: "Attention", ERROR: "Error", UNKNOWN: "No data"}
DIRECTIONS = {"partner_center_to_salesforce": ("PC → SF", "Partner Center to Salesforce"),
              "salesforce_to_partner_center": ("SF → PC", "Salesforce to Partner Center"),
              "both": ("PC ⇄ SF", "both ways")}
SIDES = {"salesforce": "to SF", "partner_center": "to PC"}
OUTCOME_ORDER = ("created", "updated", "conflict", "failed", "skipped", "no_change")
AUTO_REFRESH_SECONDS = 15


def e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute; None is an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


def content_security_policy(nonce: str) -> str:
    """Only this page's inline style and script (by nonce); fetch only to this origin; no framing."""
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
            "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def field_label(key: str) -> str:
    """A field key in a seller's words: "dealValue" -> "deal value"."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).replace("_", " ").lower()


def _time(value: str | None, now: dt.datetime) -> str:
    """A relative time with the exact UTC time on hover."""
    if not value:
        return '<span class="muted">never</span>'
    exact = value.replace("T", " ")[:19] + " UTC"
    return f'<time datetime="{e(value)}" title="{e(exact)}">{e(ago(value, now))}</time>'


def _value(value: Any, kind: str = "") -> str:
    if value is None or value == "":
        return '<span class="empty">empty</span>'
    return f'<span class="val {kind}">{e(value)}</span>'


def _pill(state: str) -> str:
    return f'<span class="pill {e(state)}">{e(STATE_WORDS.get(state, state))}</span>'


# Sections -----------------------------------------------------------------------------------------------

def _health_card(key: str, item: dict[str, Any], now: dt.datetime) -> str:
    state = item.get("state", UNKNOWN)
    facts: list[tuple[str, str]] = []
    if key == "webhook":
        if item.get("url"):
            facts.append(("URL", f"<code>{e(item['url'])}</code>"))
        if item.get("events"):
            facts.append(("Events", " ".join(f'<span class="chip">{e(ev)}</span>' for ev in item["events"])))
        if item.get("receiver_url") and not item.get("points_here"):
            facts.append(("This app", f"<code>{e(item['receiver_url'])}</code>"))
    elif key == "salesforce_budget" and isinstance(item.get("used"), int) and item.get("limit"):
        facts.append(("Used", f'<span class="bar"><span class="fill budget {e(state)}"></span></span>'))
    rows = "".join(f"<dt>{e(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return (f'<article class="card {e(state)}" data-health="{e(key)}"><header><h3>{e(HEALTH_TITLES.get(key, key))}'
            f"</h3>{_pill(state)}</header><p>{e(item.get('summary'))}</p>"
            + (f"<dl>{rows}</dl>" if rows else "") + "</article>")


def _overall(report: dict[str, Any]) -> tuple[str, str]:
    states = [item.get("state") for item in report["health"].values()]
    dead = report["counts"]["dead_letters"]
    problems = [HEALTH_TITLES.get(k, k) for k, item in report["health"].items() if item.get("state") in (ERROR, WARNING)]
    if dead:
        problems.append(f"{dead} dead letter{'s' if dead != 1 else ''}")
    if ERROR in states:
        return ERROR, "Needs attention: " + ", ".join(problems)
    if problems:
        return WARNING, "Worth a look: " + ", ".join(problems)
    if all(state == UNKNOWN for state in states):
        return UNKNOWN, "No activity recorded yet"
    return OK, "All systems normal"


def _tiles(report: dict[str, Any]) -> str:
    counts = report["counts"]
    links = f"{counts['links']}{'+' if counts['links_more'] else ''}"
    dead = f"{counts['dead_letters']}{'+' if counts['dead_letters_more'] else ''}"
    outcomes = counts["sync_log_outcomes"]
    legend = "".join(f'<li><span class="dot o-{e(name)}"></span>{e(name.replace("_", " "))} <b>{outcomes[name]}</b></li>'
                     for name in OUTCOME_ORDER if outcomes.get(name))
    segments = "".join(f'<span class="seg o-{e(name)} grow-{e(name)}" title="{e(name)}: {outcomes[name]}"></span>'
                       for name in OUTCOME_ORDER if outcomes.get(name))
    window = counts["sync_log_window"]
    return f"""<section class="tiles">
<div class="tile"><span class="num" id="count-links">{e(links)}</span><span class="lbl">links</span></div>
<div class="tile"><span class="num" id="count-intents">{counts['open_intents']}</span><span class="lbl">open create intents</span></div>
<div class="tile{' alert' if counts['dead_letters'] else ''}"><span class="num" id="count-dead">{e(dead)}</span><span class="lbl">dead letters</span></div>
<div class="tile wide"><span class="lbl">last {window} sync{'s' if window != 1 else ''}</span>
<div class="stack">{segments or '<span class="seg none"></span>'}</div><ul class="legend">{legend or '<li class="muted">nothing synced yet</li>'}</ul></div>
</section>"""


def _dead_letters(report: dict[str, Any], now: dt.datetime) -> str:
    letters = report["dead_letters"]
    count = report["counts"]["dead_letters"]
    if not letters:
        body = '<p class="empty-state">No dead letters: nothing is waiting for a person.</p>'
        button = ""
    else:
        rows = []
        for letter in letters:
            action = (f'<button type="button" class="btn" data-replay-key="{e(letter["key"])}">Replay</button>'
                      if letter["replayable"] else '<span class="muted">cannot be replayed</span>')
            rows.append(
                f'<tr data-key="{e(letter["key"])}"><td class="about"><div>{e(letter["subject"])}</div>'
                f'<div class="muted small"><code>{e(letter["key"])}</code> · {e(letter["kind"])}</div></td>'
                f'<td class="reason">{e(letter["reason"])}</td><td class="num">{e(letter["attempts"])}</td>'
                f'<td class="nowrap">{_time(letter["last_failed_at"], now)}</td>'
                f'<td class="act">{action}<div class="result" role="status"></div></td></tr>')
        body = ("<table><thead><tr><th>About</th><th>Reason</th><th>Tries</th><th>Last failed</th>"
                f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
        if report["counts"]["dead_letters_more"] or count > len(letters):
            body += f'<p class="note">Showing the newest {len(letters)} of {e(count)}.</p>'
        button = '<button type="button" class="btn primary" id="replay-all">Replay all</button>'
    return (f'<section id="dead-letters" class="panel"><header><h2>Dead letters</h2>{button}</header>'
            f'<p class="hint">Work that kept failing, kept with its reason. Replay puts it back on its queue once '
            f"the cause is fixed.</p>{body}</section>")


def _changes(entry: dict[str, Any]) -> str:
    items = [f'<li><span class="fld">{e(field_label(c["field"]))}</span> {_value(c["before"], "old")} <span class="arr">→</span> '
             f'{_value(c["after"], "new")}' + (f' <span class="side">{e(SIDES.get(c["to"], c["to"]))}</span>' if c["to"] else "")
             + "</li>" for c in entry["changes"]]
    items += [f'<li class="conflict"><span class="fld">{e(field_label(c["field"]))}</span> both changed: PC '
              f'{_value(c["partner_center"])}, SF {_value(c["salesforce"])}; kept '
              f'{e(str(c["winner"]).replace("_", " ").title())}</li>' for c in entry["conflicts"]]
    if entry["account_candidates"]:
        names = ", ".join(f'{e(c["name"])} <code>{e(c["id"])}</code>' for c in entry["account_candidates"])
        items.append(f'<li class="conflict">accounts to choose from: {names}</li>')
    return f'<ul class="changes">{"".join(items)}</ul>' if items else '<span class="muted">no field changes</span>'


def _sync_log(report: dict[str, Any], now: dt.datetime) -> str:
    entries = report["sync_log"]
    if not entries:
        return ('<section id="sync-log" class="panel"><header><h2>Sync log</h2></header>'
                '<p class="empty-state">Nothing synced yet.</p></section>')
    rows = []
    for entry in entries:
        short, long = DIRECTIONS.get(entry["direction"], (entry["direction"], entry["direction"]))
        records = "".join(f'<div><span class="muted">{label}</span> <code>{e(value)}</code></div>'
                          for label, value in (("referral", entry["referral_id"]), ("opportunity", entry["opportunity_id"]))
                          if value)
        extra = []
        if entry["duration_ms"] is not None:
            extra.append(f"{float(entry['duration_ms']):.0f} ms")
        if entry["request_ids"]:
            extra.append("request-id " + ", ".join(e(r) for r in entry["request_ids"][:3]))
        message = f'<div class="msg">{e(entry["message"])}</div>' if entry["message"] else ""
        rows.append(
            f'<tr class="o-row-{e(entry["outcome"])}"><td class="when">{_time(entry["at"], now)}</td>'
            f'<td><span class="dir" title="{e(long)}">{e(short)}</span></td>'
            f'<td><span class="outcome o-{e(entry["outcome"])}">{e(entry["outcome"].replace("_", " "))}</span></td>'
            f'<td class="ids">{records}</td><td>{_changes(entry)}{message}'
            + (f'<div class="muted small">{" · ".join(extra)}</div>' if extra else "") + "</td></tr>")
    return (f'<section id="sync-log" class="panel"><header><h2>Sync log</h2><span class="muted">newest first, last '
            f'{len(entries)}</span></header><table><thead><tr><th>When</th><th>Direction</th><th>Outcome</th>'
            f'<th>Records</th><th>What changed</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _links(report: dict[str, Any], now: dt.datetime) -> str:
    links = report["links"]
    counts = report["counts"]
    rows = []
    for link in links:
        search = " ".join(str(v) for v in (link["name"], link["referral_id"], link["opportunity_id"],
                                           link["engagement_id"]) if v).lower()
        error = f'<span class="err-text">{e(link["last_error"])}</span>' if link["last_error"] else ""
        rows.append(
            f'<tr data-search="{e(search)}"><td>{e(link["name"]) or "<span class=muted>unnamed</span>"}</td>'
            f'<td class="id"><code>{e(link["referral_id"])}</code></td><td class="id"><code>{e(link["opportunity_id"])}'
            f'</code></td><td class="nowrap">{e(link["stage"])}</td><td class="nowrap">{_time(link["created_at"], now)}</td>'
            f'<td><span class="nowrap">{_time(link["synced_at"], now)}</span>{error}</td></tr>')
    total = f"{counts['links']}{'+' if counts['links_more'] else ''}"
    note = ""
    if counts["links"] > len(links) or counts["links_more"]:
        note = (f'<p class="note">Listing {len(links)} of {e(total)} links. Press Enter in the search box to look an '
                "exact referral or opportunity id up among all of them.</p>")
    table = ("<table><thead><tr><th>Name</th><th>Referral</th><th>Opportunity</th><th>Stage</th><th>Linked</th>"
             f'<th>Last synced</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
             '<p class="empty-state" id="link-none" hidden>No link matches.</p>') if links else \
        '<p class="empty-state">No links yet.</p>'
    return (f'<section id="links" class="panel"><header><h2>Links</h2><div class="search">'
            f'<input id="link-filter" type="search" placeholder="Filter by name, referral or opportunity id" '
            f'aria-label="Filter links" autocomplete="off" value="{e(report.get("search"))}">'
            f'<span class="muted"><span id="link-shown">{len(links)}</span> shown</span></div></header>'
            f"{note}{table}</section>")


def _dynamic_css(report: dict[str, Any]) -> str:
    """Sizes that depend on the data (bar widths), as rules in the nonce'd style block: the CSP allows no
    inline `style` attribute. Only numbers go in."""
    rules = [f".grow-{name}{{flex-grow:{int(count)}}}" for name, count in report["counts"]["sync_log_outcomes"].items()
             if re.fullmatch(r"[a-z_]+", name)]
    budget = report["health"]["salesforce_budget"]
    if isinstance(budget.get("used"), int) and isinstance(budget.get("limit"), int) and budget["limit"] > 0:
        rules.append(f".fill.budget{{width:{min(100.0, 100.0 * budget['used'] / budget['limit']):.2f}%}}")
    return "\n".join(rules)


def render_page(report: dict[str, Any], *, nonce: str, replay_path: str = "status/replay") -> str:
    """The status page for `report` (from `collect`).

    Args:
        report: the gathered data.
        nonce: a fresh random value per response; send `content_security_policy(nonce)` with the page.
        replay_path: where the Replay buttons POST (the route's path, e.g. "/api/status/replay").
    """
    now = dt.datetime.fromisoformat(report["generated_at"])
    overall, headline = _overall(report)
    cards = "".join(_health_card(key, item, now) for key, item in report["health"].items())
    dry = '<span class="badge">DRY RUN: nothing is written</span>' if report["dry_run"] else ""
    dead = report["counts"]["dead_letters"]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Co-sell connector · status</title>
<style nonce="{e(nonce)}">{_CSS}
{_dynamic_css(report)}</style>
</head>
<body data-replay="{e(replay_path)}" data-refresh="{AUTO_REFRESH_SECONDS}">
<header class="top">
<div class="brand"><span class="logo" aria-hidden="true">⇄</span><div><h1>Co-sell connector</h1>
<span class="sub">Microsoft Partner Center ⇄ Salesforce</span></div></div>
<div class="meta">{dry}<span>Updated {_time(report["generated_at"], now)}</span>
<label class="toggle"><input type="checkbox" id="auto-refresh"> auto-refresh</label>
<a href="status.json" data-keep-code>JSON</a></div>
</header>
<nav class="tabs"><a href="#health">Health</a><a href="#dead-letters">Dead letters <span class="count" id="nav-dead">{dead}</span></a>
<a href="#sync-log">Sync log</a><a href="#links">Links</a></nav>
<main>
<section id="health">
<div class="banner {e(overall)}"><span class="big-dot"></span><span>{e(headline)}</span></div>
<div class="cards">{cards}</div>
</section>
{_tiles(report)}
{_dead_letters(report, now)}
{_sync_log(report, now)}
{_links(report, now)}
</main>
<div id="toast" role="status" aria-live="polite" hidden></div>
<footer>Generated {e(report["generated_at"][:19].replace("T", " "))} UTC · function keys and signatures are masked on this page</footer>
<script nonce="{e(nonce)}">{_JS}</script>
</body>
</html>
"""


_CSS = """
:root{--bg:#f4f6fa;--panel:#fff;--text:#1b2233;--muted:#69728a;--line:#e3e7ef;--head:#0f1729;--accent:#3461d1;
--ok:#139a5b;--ok-bg:#e5f6ed;--warn:#b86e00;--warn-bg:#fff3dc;--err:#d33a2c;--err-bg:#fdeceb;--unk:#7b8499;
--unk-bg:#eef0f4;--code:#f1f3f8;--created:#3461d1;--updated:#139a5b;--conflict:#d98a00;--failed:#d33a2c;
--skipped:#9aa3b5;--no_change:#c9cfdb}
@media (prefers-color-scheme:dark){:root{--bg:#0d1220;--panel:#151c2e;--text:#e4e8f1;--muted:#939cb3;
--line:#26304a;--code:#1d2640;--ok-bg:#10301f;--warn-bg:#33270d;--err-bg:#3a1715;--unk-bg:#222a3d}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Color Emoji",sans-serif}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:1px 5px;
border-radius:4px;word-break:break-all}
h1,h2,h3{margin:0}
.top{display:flex;justify-content:space-between;align-items:center;gap:16px;padding:14px 28px;background:var(--head);
color:#fff;flex-wrap:wrap}
.brand{display:flex;align-items:center;gap:12px}
.logo{display:grid;place-items:center;width:38px;height:38px;border-radius:10px;background:linear-gradient(135deg,#3461d1,#13a38a);
font-size:20px;font-weight:700}
.top h1{font-size:18px;font-weight:650;letter-spacing:.2px}
.sub{color:#aab3c8;font-size:12.5px}
.meta{display:flex;align-items:center;gap:16px;color:#cdd3e1;font-size:13px}
.meta a{color:#fff;text-decoration:none;border:1px solid #3a4560;border-radius:6px;padding:3px 10px}
.meta a:hover{background:#1e2940}
.toggle{display:flex;gap:6px;align-items:center;cursor:pointer}
.badge{background:#ffd166;color:#3b2a00;font-weight:650;font-size:12px;padding:3px 8px;border-radius:6px}
.tabs{display:flex;gap:4px;padding:0 28px;background:var(--panel);border-bottom:1px solid var(--line);position:sticky;
top:0;z-index:2}
.tabs a{padding:10px 14px;color:var(--muted);text-decoration:none;font-weight:550;border-bottom:2px solid transparent}
.tabs a:hover{color:var(--text);border-bottom-color:var(--accent)}
.count{background:var(--unk-bg);border-radius:10px;padding:0 7px;font-size:12px;margin-left:4px}
main{max-width:1360px;margin:0 auto;padding:22px 28px 8px}
section{margin-bottom:22px}
.banner{display:flex;align-items:center;gap:10px;padding:11px 16px;border-radius:10px;font-weight:600;margin-bottom:14px}
.banner.ok{background:var(--ok-bg);color:var(--ok)}.banner.warning{background:var(--warn-bg);color:var(--warn)}
.banner.error{background:var(--err-bg);color:var(--err)}.banner.unknown{background:var(--unk-bg);color:var(--unk)}
.big-dot{width:10px;height:10px;border-radius:50%;background:currentColor;box-shadow:0 0 0 4px color-mix(in srgb,currentColor 20%,transparent)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(235px,1fr));gap:14px}
.card{background:var(--panel);border:1px solid var(--line);border-top:3px solid var(--unk);border-radius:10px;padding:13px 15px}
.card.ok{border-top-color:var(--ok)}.card.warning{border-top-color:var(--warn)}.card.error{border-top-color:var(--err)}
.card header{display:flex;justify-content:space-between;align-items:center;gap:8px;margin-bottom:6px}
.card h3{font-size:13.5px;font-weight:650}
.card p{margin:0 0 6px;color:var(--text);overflow-wrap:anywhere}
.card dl{margin:6px 0 0;display:grid;grid-template-columns:auto 1fr;gap:4px 10px;font-size:12.5px;color:var(--muted)}
.card dd{margin:0;overflow-wrap:anywhere}
.pill{font-size:11.5px;font-weight:650;padding:2px 8px;border-radius:10px;white-space:nowrap}
.pill.ok{background:var(--ok-bg);color:var(--ok)}.pill.warning{background:var(--warn-bg);color:var(--warn)}
.pill.error{background:var(--err-bg);color:var(--err)}.pill.unknown{background:var(--unk-bg);color:var(--unk)}
.chip{display:inline-block;background:var(--code);border-radius:4px;padding:0 5px;margin:1px 2px 1px 0;font-size:11.5px}
.bar{display:block;height:8px;background:var(--code);border-radius:4px;overflow:hidden;margin-top:5px}
.fill{display:block;height:100%;background:var(--ok)}.fill.warning{background:var(--warn)}.fill.error{background:var(--err)}
.tiles{display:grid;grid-template-columns:repeat(3,minmax(150px,1fr)) minmax(320px,2.2fr);gap:14px}
.tile{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:13px 16px;display:flex;
flex-direction:column;gap:2px}
.tile .num{font-size:28px;font-weight:700;letter-spacing:-.5px}
.tile .lbl{color:var(--muted);font-size:12.5px;text-transform:uppercase;letter-spacing:.5px;font-weight:600}
.tile.alert .num{color:var(--err)}
.stack{display:flex;height:12px;border-radius:6px;overflow:hidden;margin:9px 0 8px;background:var(--code);gap:2px}
.seg{flex-grow:1;min-width:6px}.seg.none{background:var(--code)}
.legend{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12.5px;color:var(--muted)}
.legend b{color:var(--text)}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px}
.o-created{background:var(--created)}.o-updated{background:var(--updated)}.o-conflict{background:var(--conflict)}
.o-failed{background:var(--failed)}.o-skipped{background:var(--skipped)}.o-no_change{background:var(--no_change)}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:16px 18px}
.panel>header{display:flex;justify-content:space-between;align-items:center;gap:12px;margin-bottom:8px;flex-wrap:wrap}
.panel h2{font-size:16px;font-weight:650}
.hint,.note{color:var(--muted);margin:0 0 10px;font-size:13px}
.note{margin-top:10px}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-size:11.5px;text-transform:uppercase;letter-spacing:.5px;color:var(--muted);font-weight:650;
padding:8px 10px;border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:9px 10px;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:color-mix(in srgb,var(--accent) 4%,transparent)}
td.num{text-align:right}
td.when{white-space:nowrap;color:var(--muted)}
td.ids{font-size:12.5px}
td.ids div{margin-bottom:3px;white-space:nowrap}
td.ids code,td.id code{word-break:normal;white-space:nowrap;font-size:11.5px}
td.about{min-width:240px;max-width:380px}
.nowrap,td.nowrap{white-space:nowrap}
td.reason{color:var(--err);max-width:520px}
.outcome{color:#fff;font-size:11.5px;font-weight:650;padding:2px 8px;border-radius:10px;white-space:nowrap}
.dir{font-size:12px;font-weight:650;white-space:nowrap;color:var(--muted);border:1px solid var(--line);border-radius:6px;padding:1px 6px}
.changes{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:3px}
.changes li{font-size:13px}
.fld{font-weight:600;margin-right:4px}
.val{background:var(--code);border-radius:4px;padding:0 5px;white-space:pre-wrap}
.val.old{color:var(--muted)}
.empty{color:var(--muted);font-style:italic;font-size:12px}
.arr{color:var(--muted);margin:0 2px}
.side{font-size:11px;color:var(--accent);font-weight:650;margin-left:4px;text-transform:uppercase}
.conflict{color:var(--warn)}
.msg{margin-top:5px;color:var(--text);white-space:pre-wrap}
.o-row-failed .msg{color:var(--err)}
.small{font-size:12px;margin-top:3px}
.muted{color:var(--muted)}
.err-text{display:block;color:var(--err);font-size:12px}
.empty-state{color:var(--muted);text-align:center;padding:20px;margin:0}
.search{display:flex;align-items:center;gap:12px}
.search input{width:360px;max-width:60vw;padding:8px 12px;border:1px solid var(--line);border-radius:8px;
background:var(--bg);color:var(--text);font:inherit}
.search input:focus{outline:2px solid var(--accent);outline-offset:-1px}
.btn{font:inherit;font-weight:600;font-size:13px;border:1px solid var(--line);background:var(--panel);color:var(--text);
border-radius:7px;padding:5px 14px;cursor:pointer}
.btn:hover{border-color:var(--accent);color:var(--accent)}
.btn.primary{background:var(--accent);border-color:var(--accent);color:#fff}
.btn:disabled{opacity:.55;cursor:default}
td.act{white-space:nowrap;text-align:right}
.result{font-size:12px;margin-top:4px;white-space:normal}
.result.ok{color:var(--ok)}.result.error{color:var(--err)}
tr.done{opacity:.55}
#toast{position:fixed;right:24px;bottom:24px;background:var(--head);color:#fff;padding:11px 16px;border-radius:9px;
box-shadow:0 6px 24px rgba(0,0,0,.25);max-width:440px;z-index:5}
#toast.error{background:var(--err)}
footer{color:var(--muted);font-size:12px;text-align:center;padding:8px 0 26px}
@media (max-width:900px){.tiles{grid-template-columns:1fr 1fr}.top,.tabs,main{padding-left:14px;padding-right:14px}}
"""

_JS = """
(function () {
  'use strict';
  var params = new URLSearchParams(location.search);
  var key = params.get('code');
  var toast = document.getElementById('toast');
  var toastTimer = null;

  function say(text, isError) {
    toast.textContent = text;
    toast.className = isError ? 'error' : '';
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { toast.hidden = true; }, 6000);
  }

  // The function key stays in the address bar only: links of the page carry it on, no HTML holds it.
  document.querySelectorAll('a[data-keep-code]').forEach(function (a) {
    if (!key) return;
    var url = new URL(a.getAttribute('href'), location.href);
    url.searchParams.set('code', key);
    a.setAttribute('href', url.pathname + url.search);
  });

  // Links: filter as you type (all words must match); Enter looks an exact id up among all links.
  var box = document.getElementById('link-filter');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#links tbody tr[data-search]'));
  var shown = document.getElementById('link-shown');
  var none = document.getElementById('link-none');
  function filter() {
    var terms = box.value.trim().toLowerCase().split(/\\s+/).filter(Boolean);
    var count = 0;
    rows.forEach(function (row) {
      var hit = terms.every(function (t) { return row.dataset.search.indexOf(t) !== -1; });
      row.hidden = !hit;
      if (hit) count += 1;
    });
    shown.textContent = String(count);
    if (none) none.hidden = count > 0;
  }
  if (box) {
    box.addEventListener('input', filter);
    box.addEventListener('keydown', function (event) {
      if (event.key !== 'Enter') return;
      var url = new URL(location.href);
      if (box.value.trim()) url.searchParams.set('q', box.value.trim()); else url.searchParams.delete('q');
      location.assign(url.pathname + url.search);
    });
    filter();
  }

  // Dead letters: replay one or all through POST <replay path>.
  var replayPath = document.body.dataset.replay;
  var deadCount = document.getElementById('count-dead');
  var navDead = document.getElementById('nav-dead');
  function replay(body) {
    var headers = {'Content-Type': 'application/json'};
    if (key) headers['x-functions-key'] = key;
    return fetch(replayPath, {method: 'POST', headers: headers, body: JSON.stringify(body)})
      .then(function (response) {
        return response.json().catch(function () { return {error: 'HTTP ' + response.status}; })
          .then(function (data) {
            if (!response.ok) throw new Error(data.error || ('HTTP ' + response.status));
            return data;
          });
      });
  }
  function markDone(keyName) {
    var row = document.querySelector('#dead-letters tr[data-key="' + CSS.escape(keyName) + '"]');
    if (!row || row.classList.contains('done')) return;
    row.classList.add('done');
    var button = row.querySelector('button');
    if (button) button.remove();
    var result = row.querySelector('.result');
    result.className = 'result ok';
    result.textContent = 'Re-queued ' + new Date().toLocaleTimeString();
    var left = Math.max(0, (parseInt(deadCount.textContent, 10) || 1) - 1);
    deadCount.textContent = String(left);
    navDead.textContent = String(left);
  }
  document.querySelectorAll('button[data-replay-key]').forEach(function (button) {
    button.addEventListener('click', function () {
      var name = button.dataset.replayKey;
      button.disabled = true;
      button.textContent = 'Replaying…';
      replay({key: name}).then(function () {
        markDone(name);
        say('Re-queued ' + name + '.', false);
      }).catch(function (error) {
        button.disabled = false;
        button.textContent = 'Replay';
        var result = button.parentNode.querySelector('.result');
        result.className = 'result error';
        result.textContent = error.message;
        say('Replay of ' + name + ' failed: ' + error.message, true);
      });
    });
  });
  var all = document.getElementById('replay-all');
  if (all) {
    all.addEventListener('click', function () {
      if (!window.confirm('Put every dead letter back on its queue?')) return;
      all.disabled = true;
      replay({all: true}).then(function (data) {
        data.replayed.forEach(function (item) { markDone(item.key); });
        say('Re-queued ' + data.count + ' dead letter(s)' + (data.remaining ? '; more remain: press again.' : '.'),
            false);
        all.disabled = !data.remaining;
      }).catch(function (error) {
        all.disabled = false;
        say('Replay failed: ' + error.message, true);
      });
    });
  }

  // Auto-refresh, remembered per browser; paused while a filter is typed or the tab is hidden.
  var auto = document.getElementById('auto-refresh');
  var seconds = parseInt(document.body.dataset.refresh, 10) || 15;
  try { auto.checked = localStorage.getItem('cosell-status-auto-refresh') === '1'; } catch (e) { auto.checked = false; }
  auto.addEventListener('change', function () {
    try { localStorage.setItem('cosell-status-auto-refresh', auto.checked ? '1' : '0'); } catch (e) { /* private mode */ }
  });
  setInterval(function () {
    if (auto.checked && !document.hidden && !(box && box.value.trim()) && document.activeElement !== box) {
      location.reload();
    }
  }, seconds * 1000);
})();
"""


__all__ = ["content_security_policy", "field_label", "render_page"]
