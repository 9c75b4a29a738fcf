"""SVG charts of a Benchmarks/compare run, written by hand (standard library only).

Per scenario a horizontal bar chart (throughput per server CPU-second and raw throughput, or KiB
per idle connection) with min–max whiskers over rounds; per ping-pong scenario a latency chart
with p50, p99 and p99.9; per flood scenario a chart of the server's peak RSS.
"""

import os
import statistics
from xml.sax.saxutils import escape

import report

WIDTH = 760
LABEL_WIDTH = 150
VALUE_WIDTH = 150
BAR_HEIGHT = 14
BAR_GAP = 3
GROUP_GAP = 12
TOP = 58
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""
HIGHLIGHT = "uringstreams"


def nice_max(value):
    """A round axis end a little above `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 0.1
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return value


def fmt(value, decimals):
    return f"{value:,.{decimals}f}"


def hbar_chart(title, subtitle, groups, series, decimals):
    """groups: [(label, [values per series: (median, lo, hi) or None])];
    series: [(name, colour, highlight colour)]."""
    per_group = len(series) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP
    height = TOP + len(groups) * (per_group + GROUP_GAP) + 30
    plot = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    top_value = max((v[2] for _, values in groups for v in values if v), default=1.0)
    axis_max = nice_max(top_value)
    scale = plot / axis_max
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" {FONT} font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="10" y="38" fill="#555">{escape(subtitle)}</text>']
    # Legend, right-aligned on the title line.
    x = WIDTH - 10
    for name, colour, _ in reversed(series):
        x -= 8 + 7 * len(name)
        out.append(f'<rect x="{x}" y="10" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="19">{escape(name)}</text>')
        x -= 14
    # Grid lines at fifths of the axis.
    bottom = height - 26
    for i in range(6):
        gx = LABEL_WIDTH + plot * i / 5
        out.append(f'<line x1="{gx:.1f}" y1="{TOP - 6}" x2="{gx:.1f}" y2="{bottom}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{gx:.1f}" y="{bottom + 14}" text-anchor="middle" fill="#777">'
                   f'{fmt(axis_max * i / 5, decimals if axis_max < 10 else 0)}</text>')
    y = TOP
    for label, values in groups:
        weight = ' font-weight="bold"' if label.startswith(HIGHLIGHT) else ""
        out.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + per_group / 2 + 4:.1f}" text-anchor="end"{weight}>'
                   f'{escape(label)}</text>')
        for (name, colour, strong), value in zip(series, values):
            if value is not None:
                m, lo, hi = value
                fill = strong if label.startswith(HIGHLIGHT) else colour
                out.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="{max(1.0, m * scale):.1f}" '
                           f'height="{BAR_HEIGHT}" fill="{fill}"><title>{escape(name)}: {fmt(m, decimals)}'
                           f'</title></rect>')
                if hi > lo:
                    cy = y + BAR_HEIGHT / 2
                    out.append(f'<line x1="{LABEL_WIDTH + lo * scale:.1f}" y1="{cy}" '
                               f'x2="{LABEL_WIDTH + hi * scale:.1f}" y2="{cy}" stroke="#222" stroke-width="1"/>')
                out.append(f'<text x="{LABEL_WIDTH + max(m, hi) * scale + 6:.1f}" y="{y + BAR_HEIGHT - 3}" '
                           f'fill="#333">{fmt(m, decimals)}</text>')
            y += BAR_HEIGHT + BAR_GAP
        y += GROUP_GAP - BAR_GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"


def summary(values):
    return (statistics.median(values), min(values), max(values)) if values else None


def write_charts(results, directory):
    """Writes every chart of `results` into `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    settings = results["settings"]
    when = f"{results['machine']['date_utc']}, {settings['rounds']} round(s) × {settings['duration']} s"
    paths = []

    def save(name, svg):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(svg)
        paths.append(path)

    for scenario in report.scenarios_in(results):
        mode = next(r["mode"] for r in results["runs"] if r["scenario"] == scenario)
        title = report.SCENARIO_TITLES.get(scenario, scenario)
        servers = [s for s in report.servers_in(results)
                   if any(r["scenario"] == scenario and r["server"] == s for r in results["runs"])]
        if mode == "idle":
            groups = [(s, [summary(report.samples(results, scenario, s, "kib_per_conn"))]) for s in servers]
            save(f"{scenario}.svg", hbar_chart(title, f"Server RSS added per idle connection, KiB (less is better); "
                                                      f"{when}", groups, [("KiB per connection", "#8da0cb", "#e8743b")],
                                               2))
            continue
        key, unit, decimals = report.THROUGHPUT[mode]
        cpu_key, cpu_unit, _ = report.PER_CPU[mode]
        groups = [(s, [summary(report.samples(results, scenario, s, cpu_key)),
                       summary(report.samples(results, scenario, s, key))]) for s in servers]
        series = [(f"{unit} per server CPU-s", "#4c72b0", "#e8743b"), (unit, "#b7c7e3", "#f4bd9c")]
        save(f"{scenario}.svg", hbar_chart(title, f"{unit} per server CPU-second and {unit} (more is better); {when}",
                                           groups, series, decimals))
        if mode == "flood":
            groups = [(s, [summary(report.samples(results, scenario, s, "peak_rss_kib", 1024))]) for s in servers]
            save(f"{scenario}-memory.svg", hbar_chart(f"{title}: memory", f"Server peak RSS (VmHWM), MiB, "
                                                      f"whole process (less is better); {when}",
                                                      groups, [("peak RSS MiB", "#8da0cb", "#e8743b")], 1))
        if mode == "pingpong":
            groups = [(s, [summary(report.samples(results, scenario, s, k)) for k, _ in report.LATENCIES])
                      for s in servers]
            series = [("p50", "#9ecae1", "#fdae6b"), ("p99", "#4292c6", "#e8743b"), ("p99.9", "#084594", "#a63603")]
            save(f"{scenario}-latency.svg", hbar_chart(f"{title}: latency", f"Round-trip µs (less is better); {when}",
                                                       groups, series, 1))
    return paths
