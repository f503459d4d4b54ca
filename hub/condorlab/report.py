"""The usage report (`condorlab-accounting`): a table, CSV, a plot, or a self-contained HTML page.

The plot (PNG or SVG, matplotlib) has two panels over the period's UTC days:
core hours per user group (one line each; a session's hours are split at
midnight), and sessions per day (bars stacked by group; a session counts on
the day it ended). Each group's line carries the SVG id ``series-<group>``.
The HTML page holds the table (accounting.rows) and the plot as inline SVG:
one file, no external resources.
"""

from __future__ import annotations

import argparse
import html
import io
import sys
from datetime import UTC, datetime, timedelta

from .accounting import (
    COLUMNS,
    HEADINGS,
    SESSION_RECORDS,
    Daily,
    checked_ads,
    checked_lab_jobs,
    daily,
    period_bounds,
    query_history,
    recorded_sessions,
    recorded_tokens,
    render_csv,
    render_table,
    rows,
    summarise,
)

SERIES_ID = "series-{group}"


def _period(since: float, until: float) -> str:
    start, end = period_bounds(since, until)
    return f"{start} to {end} UTC"


def figure(usage: Daily, since: float, until: float):
    """The report's matplotlib figure (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), layout="constrained")
    hours_ax, sessions_ax = fig.subplots(2, 1, sharex=True)
    positions = list(range(len(usage.days)))
    for group, hours in usage.core_hours.items():
        (line,) = hours_ax.plot(positions, hours, marker="o", label=group)
        line.set_gid(SERIES_ID.format(group=group))
    hours_ax.set_ylabel("core hours")
    hours_ax.set_title(f"condorlab sessions, {_period(since, until)}")
    bottom = [0] * len(positions)
    for group, counts in usage.sessions.items():
        sessions_ax.bar(positions, counts, bottom=bottom, label=group)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    sessions_ax.set_ylabel("sessions ended")
    sessions_ax.yaxis.get_major_locator().set_params(integer=True)
    step = max(1, len(positions) // 15)
    sessions_ax.set_xticks(positions[::step], usage.days[::step], rotation=45, ha="right")
    if usage.core_hours:
        hours_ax.legend(title="user group", loc="upper left")
    else:
        hours_ax.text(0.5, 0.5, "no session ended in this period", transform=hours_ax.transAxes, ha="center")
    return fig


def plot(usage: Daily, since: float, until: float, fmt: str) -> bytes:
    """The plot as PNG or SVG bytes."""
    out = io.BytesIO()
    figure(usage, since, until).savefig(out, format=fmt, dpi=100, metadata={"Date": None} if fmt == "svg" else {})
    return out.getvalue()


def page(rows: list[dict], usage: Daily, since: float, until: float) -> str:
    """A self-contained HTML page: the table and the plot (inline SVG)."""
    svg = plot(usage, since, until, "svg").decode()
    svg = svg[svg.index("<svg") :]  # inline: without the XML declaration and doctype
    head = "".join(f"<th>{html.escape(HEADINGS[c])}</th>" for c in COLUMNS if c != "level")
    body = []
    for row in rows:
        cells = "".join(
            f"<td>{html.escape(str(row[c]))}</td>" if c in ("group", "user") else f"<td class=n>{row[c]}</td>"
            for c in COLUMNS
            if c != "level"
        )
        body.append(f'<tr class="{row["level"]}">{cells}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(COLUMNS) - 1}">No session ended in this period.</td></tr>')
    title = f"condorlab usage, {_period(since, until)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.group td {{ font-weight: bold; background: #f4f4f4; }}
svg {{ max-width: 100%; height: auto; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Sessions that ended in the period, from HTCondor's history (jobs the hub recorded as sessions).
Core hours are wall hours times the CPUs the session asked for; the plot splits a session's hours at
midnight and shows only the hours within the period. Jobs from labs are the batch jobs that ended in the
period and were submitted from a lab (with a pool token the hub gave it), under the group the access
point gave them; their core hours are their wall hours times the CPUs they asked for.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
{svg}
</body></html>
"""


def parse_time(text: str) -> float:
    """YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC), or a number of seconds since the epoch."""
    if text.replace(".", "", 1).isdigit():
        return float(text)
    for pattern in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")


def main(argv: list[str] | None = None, schedd=None) -> int:
    parser = argparse.ArgumentParser(
        prog="condorlab-accounting",
        description="Usage of condorlab sessions per accounting group and per user, from HTCondor's history.",
    )
    now = datetime.now(UTC)
    parser.add_argument(
        "--since",
        type=parse_time,
        default=(now - timedelta(days=30)).timestamp(),
        help="start of the period (UTC date; default: 30 days ago)",
    )
    parser.add_argument(
        "--until", type=parse_time, default=now.timestamp() + 1, help="end of the period (UTC date; default: now)"
    )
    parser.add_argument(
        "--format",
        choices=["table", "csv", "html", "png", "svg"],
        default="table",
        help="html: the table and the plot in one page; png, svg: the plot (core hours and sessions per day)",
    )
    parser.add_argument("--output", help="write the report to this file instead of standard output")
    parser.add_argument(
        "--records", default=SESSION_RECORDS, help=f"the hub's session records (default: {SESSION_RECORDS})"
    )
    args = parser.parse_args(argv)
    if args.until <= args.since:
        parser.error("--until must be after --since")
    try:
        ads = query_history(args.since, args.until, schedd)
        from_labs = query_history(args.since, args.until, schedd, labs=True)
    except Exception as exc:  # the schedd is down or refuses the query
        print(f"condorlab-accounting: cannot read HTCondor's history: {exc}", file=sys.stderr)
        return 1
    counted = checked_ads(ads, recorded_sessions(args.records))
    report = rows(*summarise(counted, checked_lab_jobs(from_labs, recorded_tokens(args.records))))
    if args.format in ("html", "png", "svg"):
        usage = daily(counted, args.since, args.until)
        if args.format == "html":
            data = page(report, usage, args.since, args.until).encode()
        else:
            data = plot(usage, args.since, args.until, args.format)
    else:
        text = render_csv(report) if args.format == "csv" else render_table(report, args.since, args.until)
        data = text.encode()
    if args.output:
        with open(args.output, "wb") as handle:
            handle.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
