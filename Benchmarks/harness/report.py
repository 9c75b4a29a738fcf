"""Markdown report of a Benchmarks/compare run: one table per scenario and the issue's targets.

Every figure is a median over rounds, with the range in brackets; ratios compare medians of the
same run, so drift between runs on a shared machine cancels out.
"""

import statistics

BASELINE = "c-liburing"
# The C servers speak no TLS: TLS scenarios compare with the incumbent Swift server instead.
TLS_BASELINE = "swiftnio"

# What each mode reports: (key, column title, decimals).
THROUGHPUT = {
    "pingpong": ("rps", "req/s", 0),
    "stream": ("gbps", "Gbit/s", 2),
    "flood": ("gbps", "Gbit/s", 2),
}
PER_CPU = {
    "pingpong": ("rps_per_server_cpu_s", "req/s per server CPU-s", 0),
    "stream": ("gbps_per_server_cpu_s", "Gbit/s per server CPU-s", 2),
    "flood": ("gbps_per_server_cpu_s", "Gbit/s per server CPU-s", 2),
}
# The server's memory in the stream and flood modes (Benchmarks/compare adds it to each result):
# (key, column title, divisor from KiB, decimals); flood shows all, stream the peak only.
MEMORY = (("peak_rss_kib", "peak RSS MiB", 1024, 1),
          ("peak_rss_per_connection_kib", "peak RSS per connection MiB", 1024, 2),
          ("rss_growth_kib", "RSS growth in window MiB", 1024, 1))
# Issue 9's flood targets: a bounded server holds tens of MiB for this load, stops growing once
# warm, and echoes what it takes in.
FLOOD_PEAK_MIB = 64
FLOOD_GROWTH_MIB = 4
FLOOD_ECHOED_PER_SENT = 0.95
LATENCIES = (("p50_us", "p50 µs"), ("p99_us", "p99 µs"), ("p999_us", "p99.9 µs"))

SCENARIO_TITLES = {
    "pingpong-1x64": "Ping-pong, 1 connection × 64 B",
    "pingpong-64x128": "Ping-pong, 64 connections × 128 B",
    "pingpong-64x4k": "Ping-pong, 64 connections × 4 KiB",
    "stream-8x64k": "Stream, 8 connections × 64 KiB chunks",
    "flood-8x64k": "Flood, 8 connections × 64 KiB chunks (writes never wait for the echo)",
    "idle-1000": "Idle, 1,000 connections",
    "tls-pingpong-64x4k": "TLS ping-pong, 64 connections × 4 KiB",
    "tls-stream-8x64k": "TLS stream, 8 connections × 64 KiB chunks",
}


def samples(results, scenario, server, key, divisor=1):
    """The values of `key` over the rounds of one server in one scenario (failed runs left out),
    divided by `divisor` (1024: KiB to MiB)."""
    values = []
    for run in results["runs"]:
        if run["scenario"] == scenario and run["server"] == server and "result" in run:
            value = run["result"].get(key)
            if isinstance(value, (int, float)):
                values.append(float(value) / divisor)
    return values


def median(results, scenario, server, key):
    values = samples(results, scenario, server, key)
    return statistics.median(values) if values else None


def cell(values, decimals):
    """`median (min–max)`, or just the value for one sample, or `–` for none."""
    if not values:
        return "–"
    m = statistics.median(values)
    if len(values) == 1:
        return f"{m:,.{decimals}f}"
    return f"{m:,.{decimals}f} ({min(values):,.{decimals}f}–{max(values):,.{decimals}f})"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt_ratio(value):
    return "–" if value is None else f"{value:.2f}×"


def scenarios_in(results):
    seen = []
    for run in results["runs"]:
        if run["scenario"] not in seen:
            seen.append(run["scenario"])
    return seen


def servers_in(results):
    seen = []
    for run in results["runs"]:
        if run["server"] not in seen:
            seen.append(run["server"])
    return seen


def is_tls(results, scenario):
    return any(r.get("tls") for r in results["runs"] if r["scenario"] == scenario)


def baseline(results, scenario):
    return TLS_BASELINE if is_tls(results, scenario) else BASELINE


def tls_line(results, scenario):
    """What the load generator negotiated with each server, e.g. `TLSv1.3 TLS_AES_128_GCM_SHA256`."""
    seen = {}
    for run in results["runs"]:
        if run["scenario"] == scenario and "result" in run and run["result"].get("tls_cipher"):
            seen.setdefault(f"{run['result'].get('tls_version')} {run['result']['tls_cipher']}", []).append(
                run["server"])
    if not seen:
        return "No TLS run of this scenario succeeded."
    if len(seen) == 1:
        return f"Negotiated by every server: `{next(iter(seen))}`."
    return "Negotiated: " + "; ".join(f"`{what}` by {', '.join(dict.fromkeys(servers))}"
                                      for what, servers in seen.items()) + "."


def throughput_table(results, scenario, mode):
    key, title, decimals = THROUGHPUT[mode]
    cpu_key, cpu_title, _ = PER_CPU[mode]
    base_name = baseline(results, scenario)
    # Over TLS the load generator does as much cryptography as the server; its CPU time shows when
    # it, not the server, was the limit (close to the measured seconds, on its own CPU).
    client_cpu = is_tls(results, scenario)
    header = ["server", title, cpu_title, "server CPU-s"] + (["load generator CPU-s"] if client_cpu else [])
    if mode == "pingpong":
        header += [t for _, t in LATENCIES]
    memory = MEMORY if mode == "flood" else MEMORY[:1] if mode == "stream" else ()
    if mode == "flood":
        header.append("echoed/sent")
    header += [title for _, title, _, _ in memory]
    header += [f"vs {base_name}", f"per CPU vs {base_name}"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = median(results, scenario, base_name, key)
    base_cpu = median(results, scenario, base_name, cpu_key)
    for server in servers_in(results):
        values = samples(results, scenario, server, key)
        if not values and not any(r["scenario"] == scenario and r["server"] == server for r in results["runs"]):
            continue
        row = [server, cell(values, decimals), cell(samples(results, scenario, server, cpu_key), decimals),
               cell(samples(results, scenario, server, "server_cpu_s"), 2)]
        if client_cpu:
            row.append(cell(samples(results, scenario, server, "client_cpu_s"), 2))
        if mode == "pingpong":
            row += [cell(samples(results, scenario, server, k), 1) for k, _ in LATENCIES]
        if mode == "flood":
            row.append(cell(samples(results, scenario, server, "echoed_per_sent"), 3))
        row += [cell(samples(results, scenario, server, k, divisor), decimals)
                for k, _, divisor, decimals in memory]
        row += [fmt_ratio(ratio(median(results, scenario, server, key), base)),
                fmt_ratio(ratio(median(results, scenario, server, cpu_key), base_cpu))]
        rows.append("| " + " | ".join(row) + " |")
    return rows


def idle_table(results, scenario):
    rows = ["| server | RSS before (KiB) | RSS with the connections (KiB) | KiB per connection "
            "| KiB per connection past the first tenth |", "|---|---|---|---|---|"]
    for server in servers_in(results):
        per_conn = samples(results, scenario, server, "kib_per_conn")
        if not any(r["scenario"] == scenario and r["server"] == server for r in results["runs"]):
            continue
        rows.append(f"| {server} | {cell(samples(results, scenario, server, 'rss_before_kib'), 0)} | "
                    f"{cell(samples(results, scenario, server, 'rss_after_kib'), 0)} | {cell(per_conn, 2)} | "
                    f"{cell(samples(results, scenario, server, 'marginal_kib_per_conn'), 2)} |")
    return rows


def targets(results):
    """Issues 10 and 11's targets, computed from this run: (text, value, wanted, passed). The
    protocol echo (createServer) is held to the C server; the streams echo to a little less, and
    to SwiftNIO; the streams echo on the epoll backend to SwiftNIO."""
    checks = []

    def per_cpu_vs(server, scenario, peer, minimum, unit="rps_per_server_cpu_s"):
        v = ratio(median(results, scenario, server, unit), median(results, scenario, peer, unit))
        title = SCENARIO_TITLES.get(scenario, scenario)
        what = "Gbit/s" if unit.startswith("gbps") else "req/s"
        checks.append((f"{server} · {title}: {what} per server CPU vs {peer}", fmt_ratio(v), f"≥ {minimum:.2f}×",
                       None if v is None else v >= minimum))

    def idle(server, maximum):
        v = median(results, "idle-1000", server, "kib_per_conn")
        checks.append((f"{server} · Idle: RSS per connection", "–" if v is None else f"{v:.2f} KiB",
                       f"≤ {maximum:g} KiB", None if v is None else v <= maximum))

    protocol, streams = "uringstreams-protocol", "uringstreams"
    for scenario in ("pingpong-64x128", "pingpong-64x4k"):
        per_cpu_vs(protocol, scenario, BASELINE, 0.95)
    per_cpu_vs(protocol, "stream-8x64k", BASELINE, 0.95, "gbps_per_server_cpu_s")
    v = ratio(median(results, "pingpong-1x64", protocol, "p99_us"),
              median(results, "pingpong-1x64", BASELINE, "p99_us"))
    checks.append((f"{protocol} · Ping-pong 1 × 64 B: p99 latency vs c-liburing", fmt_ratio(v), "≤ 1.00×",
                   None if v is None else v <= 1.0))
    idle(protocol, 1.0)
    for scenario in ("pingpong-64x128", "pingpong-64x4k"):
        per_cpu_vs(streams, scenario, BASELINE, 0.90)
        per_cpu_vs(streams, scenario, "swiftnio", 1.3)
    idle(streams, 2.0)
    # Issue 11: the epoll fallback (the streams echo with --backend epoll) holds SwiftNIO's pace,
    # also epoll, per server CPU on every scenario.
    epoll = "uringstreams-epoll"
    for scenario in ("pingpong-1x64", "pingpong-64x128", "pingpong-64x4k"):
        per_cpu_vs(epoll, scenario, "swiftnio", 1.0)
    per_cpu_vs(epoll, "stream-8x64k", "swiftnio", 1.0, "gbps_per_server_cpu_s")
    return checks


def flood_targets(results, scenario="flood-8x64k", stream="stream-8x64k"):
    """Issue 9's flood targets for every server of this run: (server, [(text, value, wanted,
    passed)]). Throughput is compared with the lock-step stream scenario of the same run."""
    out = []
    for server in servers_in(results):
        if not samples(results, scenario, server, "gbps"):
            continue
        checks = []
        peak = median(results, scenario, server, "peak_rss_kib")
        checks.append(("peak RSS", "–" if peak is None else f"{peak / 1024:.1f} MiB", f"≤ {FLOOD_PEAK_MIB} MiB",
                       None if peak is None else peak / 1024 <= FLOOD_PEAK_MIB))
        growth = median(results, scenario, server, "rss_growth_kib")
        checks.append(("RSS growth over the measured window", "–" if growth is None else f"{growth / 1024:.1f} MiB",
                       f"≤ {FLOOD_GROWTH_MIB} MiB", None if growth is None else growth / 1024 <= FLOOD_GROWTH_MIB))
        echoed = median(results, scenario, server, "echoed_per_sent")
        checks.append(("echoed/sent", "–" if echoed is None else f"{echoed:.3f}", f"≥ {FLOOD_ECHOED_PER_SENT}",
                       None if echoed is None else echoed >= FLOOD_ECHOED_PER_SENT))
        v = ratio(median(results, scenario, server, "gbps"), median(results, stream, server, "gbps"))
        # No threshold: "the same range" is read from the figure, next to the other servers'.
        checks.append(("Gbit/s vs the stream scenario", fmt_ratio(v), None, None))
        out.append((server, checks))
    return out


def machine_line(results):
    m = results["machine"]
    s = results["settings"]
    load = [r["machine_load"]["busy_cpus"] for r in results["runs"] if "machine_load" in r]
    busy = sum(1 for r in results["runs"] if not r.get("machine_load", {}).get("quiet", True))
    quiet = (f"all {len(load)} runs started on a quiet machine" if busy == 0 else
             f"{busy} of {len(load)} runs started while the machine was busy "
             f"(up to {max(load):.1f} CPUs used by others): treat those numbers as noise")
    commit = m["git_commit"][:12] + ("-dirty" if m["git_commit"].endswith("-dirty") else "")
    tls = ""
    if any(r.get("tls") for r in results["runs"]):
        def short(version):  # "OpenSSL 3.0.19 27 Jan 2026 (Library: …)" -> "OpenSSL 3.0.19"
            return " ".join(version.split()[:2]) if version else "?"
        tls = (f", {short(m.get('openssl'))} (Python's ssl: {short(m.get('python_ssl'))}), "
               f"swift-nio-ssl {m.get('swift_nio_ssl') or '?'}")
    return (f"Run {m['date_utc']} at commit `{commit}` on {m['cpu_model']}, {m['cpus']} CPUs, "
            f"{m.get('memory_gib')} GiB, Linux {m['kernel']}, {m.get('swift') or 'Swift ?'}, "
            f"liburing {m.get('liburing') or '?'}{tls}. {s['rounds']} interleaved round(s) × "
            f"{s['duration']} s measured (after {s['warmup']} s warm-up) per server and scenario, "
            f"CPU layout `{s['pin']}` (server on CPU 1, load generator on CPU 0 when split); {quiet}. "
            f"Medians, (min–max) over rounds.")


def markdown(results, image_prefix="images/", heading_level=2):
    h = "#" * heading_level
    lines = [machine_line(results), ""]
    for scenario in scenarios_in(results):
        mode = next(r["mode"] for r in results["runs"] if r["scenario"] == scenario)
        lines += [f"{h} {SCENARIO_TITLES.get(scenario, scenario)}", ""]
        lines += idle_table(results, scenario) if mode == "idle" else throughput_table(results, scenario, mode)
        if is_tls(results, scenario):
            lines += ["", tls_line(results, scenario)]
        lines += ["", f"![{scenario}]({image_prefix}{scenario}.svg)"]
        if mode == "pingpong":
            lines += [f"![{scenario} latency]({image_prefix}{scenario}-latency.svg)"]
        if mode == "flood":
            lines += [f"![{scenario} memory]({image_prefix}{scenario}-memory.svg)"]
        lines.append("")
    checks = targets(results)
    # A run of other scenarios only (the TLS ones, say) has nothing to say about the targets.
    if any(passed is not None for *_, passed in checks):
        lines += [f"{h} Targets (issue 10)", "", "| target | UringStreams | wanted | |",
                  "|---|---|---|---|"]
        for text, value, wanted, passed in checks:
            mark = "n/a" if passed is None else ("**PASS**" if passed else "**MISS**")
            lines.append(f"| {text} | {value} | {wanted} | {mark} |")
        lines += ["", "Zero allocations per echoed message is checked by the package-benchmark "
                  "`LoopbackEcho` thresholds (`mallocCountTotal`), not here."]
    flood = flood_targets(results)
    if flood:
        names = [text for text, *_ in flood[0][1]]
        lines += ["", f"{h} Flood client targets (issue 9)", "",
                  "| server | " + " | ".join(f"{n} ({wanted})" if wanted else n for n, (_, _, wanted, _) in
                                             zip(names, flood[0][1])) + " |",
                  "|---|" + "---|" * len(names)]
        for server, checks in flood:
            marks = [value + ("" if passed is None else " **PASS**" if passed else " **MISS**")
                     for _, value, _, passed in checks]
            lines.append(f"| {server} | " + " | ".join(marks) + " |")
    failed = [r for r in results["runs"] if "error" in r]
    if failed:
        lines += ["", f"{len(failed)} run(s) failed:"]
        lines += [f"- {r['scenario']} · {r['server']} · round {r['round']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"
