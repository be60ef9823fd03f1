#!/usr/bin/env python3
"""Write the Grafana dashboards deploy/grafana/overview.json and deploy/grafana/node.json.

The JSON files are what compose provisions and the Helm chart ships; this script is their
source, so panels stay consistent (ids, grid positions, datasource, units) and a change to a
query is one line here:

    .venv/bin/python scripts/grafana_dashboards.py          # rewrite the JSON files
    .venv/bin/python scripts/grafana_dashboards.py --check  # exit 1 if they are out of date

Rules every query follows (tests/packaging/test_observability.py checks them against a real
Prometheus scraping a real cluster):

* select by metric name, never by ``job``: compose calls its jobs ``gateway``/``gameserver``,
  kube-prometheus-stack names them after the Service. Process metrics (``process_*``), which
  every exporter has, are joined ``on(job, instance)`` with ``gateway_ready`` /
  ``gameserver_ready`` to keep only our services.
* a breakdown of a labelled counter that may have no series yet (nothing dropped, no Redis
  error so far) falls back to one zero series (label value ``none``), so the panel shows 0
  instead of "No data".
* the datasource is the ``${datasource}`` template variable (type prometheus).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "deploy" / "grafana"

SCHEMA_VERSION = 39
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
TAGS = ["game-backbone"]

#: GameServer results that are the server's fault (the HighErrorRate alert counts these).
SERVER_ERRORS = "INTERNAL_ERROR|SERVER_BUSY|SERVER_UNAVAILABLE"

Panel = dict[str, Any]


# --- PromQL helpers ---------------------------------------------------------------------------


def rate(selector: str) -> str:
    return f"rate({selector}[{RATE}])"


def zero_fallback(expr: str, *labels: str) -> str:
    """``expr``, or a single 0 series with each of ``labels`` = "none" when it is empty."""
    fallback = "vector(0)"
    for label in labels:
        fallback = f'label_replace({fallback}, "{label}", "none", "", "")'
    return f"{expr} or on() {fallback}"


def sum_by_rate(labels: str, selector: str, *, fallback: bool = True) -> str:
    """``sum by (labels) (rate(selector))``, with a zero fallback unless told otherwise."""
    expr = f"sum by ({labels}) ({rate(selector)})"
    if not fallback:
        return expr
    return zero_fallback(expr, *[label.strip() for label in labels.split(",")])


def quantile(q: float, metric: str, by: str = "", matchers: str = "") -> str:
    """``histogram_quantile(q, sum by (le, by) (rate(metric_bucket{matchers})))``."""
    group = f"le, {by}" if by else "le"
    selector = f"{metric}_bucket" + (f"{{{matchers}}}" if matchers else "")
    return f"histogram_quantile({q}, sum by ({group}) ({rate(selector)}))"


def ours(expr: str, readiness: str) -> str:
    """Keep only series of our own processes (``readiness`` is gateway_ready or
    gameserver_ready, optionally with matchers)."""
    return f"{expr} and on(job, instance) {readiness}"


def server_error_ratio() -> str:
    """Share of client requests failing for a server-side reason (as HighErrorRate)."""
    drops = f"(sum({rate('gateway_dropped_frames_total')}) or vector(0))"
    failed = (f"(sum({rate(f'gameserver_requests_total{{result=~\"{SERVER_ERRORS}\"}}')})"
              " or vector(0))")
    total = f"(sum({rate('gameserver_requests_total')}) or vector(0))"
    return f"({failed} + {drops}) / ({total} + {drops})"


# --- panel builders ---------------------------------------------------------------------------


class Layout:
    """Hands out panel ids and grid positions, row by row (24 columns wide)."""

    def __init__(self) -> None:
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.panels: list[Panel] = []

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def _id(self) -> int:
        panel_id = self.next_id
        self.next_id += 1
        return panel_id

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0
        self.panels.append({
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "id": self._id(),
            "panels": [],
            "title": title,
            "type": "row",
        })
        self.y += 1

    def add(self, panel: Panel, w: int, h: int) -> None:
        panel["id"] = self._id()
        panel["gridPos"] = self._place(w, h)
        self.panels.append(panel)


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
           fmt: str = "time_series") -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if fmt != "time_series":
        t["format"] = fmt
    return t


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(title: str, description: str, tgts: list[dict[str, Any]], unit: str = "short",
               *, stack: bool = False, min_zero: bool = True) -> Panel:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "fillOpacity": 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
    }
    if stack:
        custom["stacking"] = {"group": "A", "mode": "normal"}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if min_zero:
        defaults["min"] = 0
    return {
        "datasource": DS,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom",
                       "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
        "title": title,
        "type": "timeseries",
    }


def stat(title: str, description: str, expr: str, unit: str = "short", *,
         steps: list[tuple[str, float | None]] | None = None, legend: str = "",
         text_mode: str = "auto", mappings: list[dict[str, Any]] | None = None,
         decimals: int | None = None) -> Panel:
    steps = steps or [("green", None)]
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"},
        "mappings": mappings or [],
        "thresholds": {"mode": "absolute",
                       "steps": [{"color": color, "value": value} for color, value in steps]},
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": DS,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": text_mode,
        },
        "targets": [target(expr, legend)],
        "title": title,
        "type": "stat",
    }


def table(title: str, description: str, expr: str) -> Panel:
    return {
        "datasource": DS,
        "description": description,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"cellHeight": "sm", "showHeader": True},
        "targets": [target(expr, "", instant=True, fmt="table")],
        "transformations": [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}},
        ],
        "title": title,
        "type": "table",
    }


def heatmap(title: str, description: str, expr: str) -> Panel:
    return {
        "datasource": DS,
        "description": description,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5, "steps": 64},
            "yAxis": {"unit": "s"},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": False},
            "legend": {"show": True},
        },
        "targets": [target(expr, "{{le}}", fmt="heatmap")],
        "title": title,
        "type": "heatmap",
    }


def datasource_variable() -> dict[str, Any]:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = False,
                   include_all: bool = False) -> dict[str, Any]:
    variable: dict[str, Any] = {
        "current": {},
        "datasource": DS,
        "definition": query,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": {"qryType": 1, "query": query,
                  "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if include_all:
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


def dashboard(uid: str, title: str, description: str, panels: list[Panel],
              variables: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{
            "asDropdown": False,
            "icon": "external link",
            "includeVars": False,
            "keepTime": True,
            "tags": TAGS,
            "targetBlank": False,
            "title": "Game backbone",
            "tooltip": "",
            "type": "dashboards",
            "url": "",
        }],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --- the overview -----------------------------------------------------------------------------


def overview() -> dict[str, Any]:
    lay = Layout()
    gw_ready = "gateway_ready"
    gs_ready = "gameserver_ready"

    lay.row("Cluster")
    lay.add(stat("Connected clients", "Client TCP connections open on all Gateways.",
                 "sum(gateway_connected_clients)"), 3, 4)
    lay.add(stat("Client frames in", "Frames received from clients per second, all Gateways.",
                 f"sum({rate('gateway_frames_total{direction=\"in\"}')})", "reqps"), 3, 4)
    lay.add(stat("Requests handled", "Requests that reached a GameServer handler, per second.",
                 f"sum({rate('gameserver_requests_total')})", "reqps"), 3, 4)
    lay.add(stat("p99 handling time", "99th percentile of the GameServers' handling time, all "
                 "message types.", quantile(0.99, "gameserver_handler_duration_seconds"), "s",
                 steps=[("green", None), ("orange", 0.05), ("red", 0.25)]), 3, 4)
    lay.add(stat("Server error ratio", "Requests answered INTERNAL_ERROR, SERVER_BUSY or "
                 "SERVER_UNAVAILABLE, plus frames a Gateway dropped, over all requests (as the "
                 "HighErrorRate alert).", server_error_ratio(), "percentunit",
                 steps=[("green", None), ("orange", 0.01), ("red", 0.05)]), 3, 4)
    lay.add(stat("Active sessions", "Sessions held by all GameServers.",
                 "sum(gameserver_sessions_active)"), 3, 4)
    lay.add(stat("Live GameServers", "GameServers answering HELLO, as seen by the Gateway that "
                 "sees the fewest (0: clients get SERVER_UNAVAILABLE).",
                 "min(gateway_gameservers_live)", steps=[("red", None), ("green", 1)]), 3, 4)
    lay.add(stat("Ready GameServers", "GameServers whose /readyz answers ready, of those "
                 "Prometheus scrapes.", f"sum({gs_ready})",
                 steps=[("red", None), ("green", 1)]), 3, 4)

    lay.row("Traffic")
    lay.add(timeseries(
        "Connected clients", "Client connections open per Gateway and transport (tcp, tls, "
        "ws, wss), and pinned to a session.",
        targets(("sum by (instance, transport) (gateway_connected_clients)",
                 "{{instance}} {{transport}}"),
                ("sum(gateway_pinned_sockets)", "pinned to a session (all)"))), 8, 8)
    lay.add(timeseries(
        "Messages per second", "Gateway frames by direction and transport, and GameServer "
        "requests by message type.",
        targets((f"sum by (direction, transport) ({rate('gateway_frames_total')})",
                 "frames {{direction}} {{transport}}"),
                (f"sum by (msg_type) ({rate('gameserver_requests_total')})", "{{msg_type}}")),
        "reqps"), 8, 8)
    lay.add(timeseries(
        "Client bytes", "Bytes received from / written to clients by transport, all Gateways.",
        targets((f"sum by (direction, transport) ({rate('gateway_bytes_total')})",
                 "{{direction}} {{transport}}")),
        "Bps"), 8, 8)

    lay.row("Latency")
    lay.add(timeseries(
        "p50 handling time by message type", "Median GameServer handling time (router and "
        "handler, after the idempotency check).",
        targets((quantile(0.5, "gameserver_handler_duration_seconds", "msg_type"),
                 "{{msg_type}}")), "s"), 12, 8)
    lay.add(timeseries(
        "p99 handling time by message type", "99th percentile of GameServer handling time "
        "(HighP99Latency fires above 250 ms).",
        targets((quantile(0.99, "gameserver_handler_duration_seconds", "msg_type"),
                 "{{msg_type}}")), "s"), 12, 8)
    lay.add(timeseries(
        "Redis p99 by operation", "99th percentile latency of the session scripts.",
        targets((quantile(0.99, "gameserver_redis_operation_duration_seconds", "operation"),
                 "{{operation}}")), "s"), 12, 8)
    lay.add(timeseries(
        "Mesh call p99 by method", "99th percentile latency of GameServer-to-GameServer calls, "
        "failures included.",
        targets((quantile(0.99, "gameserver_mesh_call_duration_seconds", "method"),
                 "{{method}}")), "s"), 12, 8)

    lay.row("Errors")
    lay.add(timeseries(
        "Failed requests by type and result", "GameServer requests not answered ok (client "
        "mistakes included), per second.",
        targets((sum_by_rate("msg_type, result", 'gameserver_requests_total{result!="ok"}'),
                 "{{msg_type}} {{result}}")), "reqps"), 8, 8)
    lay.add(timeseries(
        "Server error ratio", "As the HighErrorRate alert (fires above 5 % for 5 minutes).",
        targets((server_error_ratio(), "server errors")), "percentunit"), 8, 8)
    lay.add(timeseries(
        "Gateway: dropped, refused, unroutable", "Client frames not delivered to a GameServer "
        "(each answered SERVER_UNAVAILABLE), frames over the per-connection rate limit "
        "(answered RATE_LIMITED), records for sockets already gone, framing violations, "
        "backpressure disconnects and socket reads paused by the in-flight window, per "
        "second.",
        targets(
            (sum_by_rate("reason", "gateway_dropped_frames_total"), "dropped {{reason}}"),
            (f"sum({rate('gateway_rate_limited_frames_total')})", "rate limited"),
            (sum_by_rate("kind", "gateway_unroutable_records_total"), "unroutable {{kind}}"),
            (f"sum({rate('gateway_protocol_errors_total')})", "protocol errors"),
            (f"sum({rate('gateway_backpressure_disconnects_total')})",
             "backpressure disconnects"),
            (f"sum({rate('gateway_reading_pauses_total')})", "reads paused")), "cps"), 8, 8)
    lay.add(timeseries(
        "Gateway disconnects by reason", "Client connections closed, by cause.",
        targets((sum_by_rate("reason", "gateway_disconnects_total"), "{{reason}}")), "cps",
        stack=True), 6, 8)
    lay.add(timeseries(
        "Duplicate requests", "Retried sequence ids answered from the response cache / "
        "rejected with DUPLICATE_SEQUENCE.",
        targets((sum_by_rate("outcome", "gameserver_duplicate_requests_total"), "{{outcome}}")),
        "cps"), 6, 8)
    lay.add(timeseries(
        "Redis errors by operation", "Failed session script calls (RedisErrors fires above 5 "
        "in 5 minutes on one GameServer).",
        targets((sum_by_rate("operation", "gameserver_redis_errors_total"), "{{operation}}")),
        "cps"), 6, 8)
    lay.add(timeseries(
        "Mesh and data-plane failures", "Mesh calls that did not succeed, by method and outcome; "
        "data-plane batches to Gateways that could not be sent.",
        targets(
            (sum_by_rate("method, outcome", 'gameserver_mesh_calls_total{outcome!="ok"}'),
             "mesh {{method}} {{outcome}}"),
            (sum_by_rate("reason", "gameserver_p2p_dropped_messages_total"),
             "p2p dropped {{reason}}")), "cps"), 6, 8)

    lay.row("Sessions")
    lay.add(timeseries(
        "Active sessions", "Sessions held per GameServer.",
        targets(("sum by (instance) (gameserver_sessions_active)", "{{instance}}"),
                ("sum(gameserver_sessions_active)", "total"))), 8, 8)
    lay.add(timeseries(
        "Session lifecycle", "Sessions created by LOGIN, detached (socket gone, in reconnect "
        "grace), expired (not resumed in time), logged out, fenced (taken over elsewhere).",
        targets(
            (f"sum({rate('gameserver_sessions_created_total')})", "created"),
            (f"sum({rate('gameserver_sessions_detached_total')})", "detached"),
            (f"sum({rate('gameserver_sessions_expired_total')})", "expired"),
            (f"sum({rate('gameserver_sessions_logged_out_total')})", "logged out"),
            (f"sum({rate('gameserver_sessions_fenced_total')})", "fenced")), "cps"), 8, 8)
    lay.add(timeseries(
        "Sessions resumed and kicked", "Sessions taken on (reconnect, adopt, handover) and "
        "sockets kicked, by reason; drain handovers by outcome.",
        targets(
            (sum_by_rate("how", "gameserver_sessions_resumed_total"), "resumed {{how}}"),
            (sum_by_rate("reason", "gameserver_sessions_kicked_total"), "kicked {{reason}}"),
            (sum_by_rate("outcome", "gameserver_session_handovers_total"),
             "handover {{outcome}}")), "cps"), 8, 8)

    lay.row("Nodes")
    lay.add(timeseries(
        "Live GameServers", "GameServers each Gateway sees answering HELLO; listed in the "
        "registry; ready and scraped by Prometheus.",
        targets(
            ("max by (instance) (gateway_gameservers_live)", "live, seen by {{instance}}"),
            ("max(gateway_service_discovery_count_servers)", "in the registry"),
            (f"sum({gs_ready})", "ready"),
            (f"count({gs_ready})", "scraped")), "short"), 8, 8)
    lay.add(timeseries(
        "Gateways connected per GameServer", "Gateways that said HELLO to each GameServer in "
        "the last 10 s; ready Gateways.",
        targets(("max by (instance) (gameserver_gateways_connected)", "{{instance}}"),
                (f"sum({gw_ready})", "ready Gateways")), "short"), 8, 8)
    lay.add(table(
        "GameServer nodes", "Node id of every scraped GameServer (instance = scrape address).",
        "max by (instance, node_id) (gameserver_node_info)"), 8, 8)

    lay.row("Processes")
    for title, metric, unit, is_rate in (
        ("CPU", "process_cpu_seconds_total", "percentunit", True),
        ("Resident memory", "process_resident_memory_bytes", "bytes", False),
        ("Open file descriptors", "process_open_fds", "short", False),
    ):
        selector = rate(metric) if is_rate else metric
        lay.add(timeseries(
            title, f"{metric} of every Gateway and GameServer process.",
            targets((ours(selector, gw_ready), "gateway {{instance}}"),
                    (ours(selector, gs_ready), "gameserver {{instance}}")), unit), 8, 8)

    return dashboard(
        "gb-overview", "Game backbone / Overview",
        "Gateways and GameServers: clients, traffic, latency by message type, errors, sessions, "
        "live nodes. Metrics: docs/OPERATIONS.md §3.",
        lay.panels, [datasource_variable()])


# --- the per-node drill-down ------------------------------------------------------------------


def node() -> dict[str, Any]:
    lay = Layout()
    inst = 'instance="$instance"'
    sel = f'{inst}, msg_type=~"$msg_type"'

    def m(metric: str, extra: str = "") -> str:
        return f"{metric}{{{inst}{', ' + extra if extra else ''}}}"

    lay.row("Node")
    lay.add(stat("Ready", "/readyz of this GameServer.", f"max({m('gameserver_ready')})",
                 steps=[("red", None), ("green", 1)],
                 mappings=[{"type": "value", "options": {
                     "0": {"index": 0, "text": "not ready", "color": "red"},
                     "1": {"index": 1, "text": "ready", "color": "green"}}}]), 3, 4)
    lay.add(stat("Node id", "GAMESERVER_NODE_ID of the process behind this instance.",
                 f"max by (node_id) ({m('gameserver_node_info')})", legend="{{node_id}}",
                 text_mode="name"), 3, 4)
    lay.add(stat("Uptime", "Since the process started.",
                 f"time() - max({m('process_start_time_seconds')})", "s"), 3, 4)
    lay.add(stat("Active sessions", "Sessions held by this GameServer.",
                 f"sum({m('gameserver_sessions_active')})"), 3, 4)
    lay.add(stat("Gateways connected", "Gateways that said HELLO in the last 10 s.",
                 f"max({m('gameserver_gateways_connected')})",
                 steps=[("red", None), ("green", 1)]), 3, 4)
    lay.add(stat("Commits pending", "Sessions with state changes not yet in Redis.",
                 f"sum({m('gameserver_commits_pending')})",
                 steps=[("green", None), ("orange", 1000), ("red", 5000)]), 3, 4)
    lay.add(stat("Requests", "Requests handled per second (selected message types).",
                 f"sum({rate(f'gameserver_requests_total{{{sel}}}')})", "reqps"), 3, 4)
    lay.add(stat("p99 handling time", "Selected message types together.",
                 quantile(0.99, "gameserver_handler_duration_seconds", "", sel), "s",
                 steps=[("green", None), ("orange", 0.05), ("red", 0.25)]), 3, 4)

    lay.row("Requests ($msg_type)")
    lay.add(timeseries(
        "Requests by type and result", "Requests that reached the handler stage, per second.",
        targets((f"sum by (msg_type, result) ({rate(f'gameserver_requests_total{{{sel}}}')})",
                 "{{msg_type}} {{result}}")), "reqps"), 12, 8)
    lay.add(timeseries(
        "Handling time percentiles", "p50 / p90 / p99 per message type.",
        targets(*[(quantile(q, "gameserver_handler_duration_seconds", "msg_type", sel),
                   f"p{round(q * 100)} {{{{msg_type}}}}") for q in (0.5, 0.9, 0.99)]), "s"),
        12, 8)
    lay.add(heatmap(
        "Handling time distribution", "Requests per histogram bucket (selected types).",
        f"sum by (le) ({rate(f'gameserver_handler_duration_seconds_bucket{{{sel}}}')})"), 12, 8)
    lay.add(timeseries(
        "Mean handling time", "Sum over count of the handling-time histogram.",
        targets((f"sum by (msg_type) ({rate(f'gameserver_handler_duration_seconds_sum{{{sel}}}')})"
                 f" / sum by (msg_type) "
                 f"({rate(f'gameserver_handler_duration_seconds_count{{{sel}}}')})",
                 "{{msg_type}}")), "s"), 12, 8)
    all_requests = f"sum by (msg_type) ({rate(f'gameserver_requests_total{{{sel}}}')})"
    failed_requests = (f"sum by (msg_type) "
                       f"({rate(f'gameserver_requests_total{{{sel}, result!=\"ok\"}}')})")
    lay.add(timeseries(
        "Failed requests by type and result", "Requests not answered ok, per second.",
        targets((sum_by_rate("msg_type, result",
                             f'gameserver_requests_total{{{sel}, result!="ok"}}'),
                 "{{msg_type}} {{result}}")), "reqps"), 8, 8)
    lay.add(timeseries(
        "Failure ratio by type", "Share of requests not answered ok (client mistakes included).",
        targets((f"({failed_requests} or {all_requests} * 0) / {all_requests}",
                 "{{msg_type}}")), "percentunit"), 8, 8)
    lay.add(timeseries(
        "Duplicate requests", "Retried sequence ids answered from the cache / rejected.",
        targets((sum_by_rate("outcome", m("gameserver_duplicate_requests_total")),
                 "{{outcome}}")), "cps"), 8, 8)

    lay.row("Sessions")
    lay.add(timeseries(
        "Active sessions", "Sessions held by this GameServer.",
        targets((f"sum({m('gameserver_sessions_active')})", "active"))), 8, 8)
    lay.add(timeseries(
        "Session lifecycle", "Created, detached, expired, logged out, fenced, per second.",
        targets(*[(f"sum({rate(m(f'gameserver_sessions_{name}_total'))})",
                   name.replace("_", " "))
                  for name in ("created", "detached", "expired", "logged_out", "fenced")]),
        "cps"), 8, 8)
    lay.add(timeseries(
        "Sessions resumed and kicked", "Sessions taken on by how; sockets kicked by reason; "
        "drain handovers by outcome.",
        targets(
            (sum_by_rate("how", m("gameserver_sessions_resumed_total")), "resumed {{how}}"),
            (sum_by_rate("reason", m("gameserver_sessions_kicked_total")),
             "kicked {{reason}}"),
            (sum_by_rate("outcome", m("gameserver_session_handovers_total")),
             "handover {{outcome}}")), "cps"), 8, 8)

    lay.row("Redis and commits")
    lay.add(timeseries(
        "Redis latency by operation", "p50 and p99 of the session scripts.",
        targets(*[(quantile(q, "gameserver_redis_operation_duration_seconds", "operation",
                            inst), f"p{round(q * 100)} {{{{operation}}}}")
                  for q in (0.5, 0.99)]), "s"), 8, 8)
    lay.add(timeseries(
        "Redis operations and errors", "Session script calls and failures per second.",
        targets(
            (f"sum by (operation) "
             f"({rate(m('gameserver_redis_operation_duration_seconds_count'))})",
             "{{operation}}"),
            (sum_by_rate("operation", m("gameserver_redis_errors_total")),
             "errors {{operation}}")), "cps"), 8, 8)
    lay.add(timeseries(
        "Group commits", "Sessions with changes not yet in Redis; mean sessions per commit.",
        targets(
            (f"sum({m('gameserver_commits_pending')})", "pending"),
            (f"sum({rate(m('gameserver_commit_batch_sessions_sum'))}) / "
             f"sum({rate(m('gameserver_commit_batch_sessions_count'))})",
             "sessions per commit")), "short"), 8, 8)

    lay.row("Mesh and data plane")
    lay.add(timeseries(
        "Mesh calls made", "Calls to other GameServers by method and outcome, per second.",
        targets((sum_by_rate("method, outcome", m("gameserver_mesh_calls_total")),
                 "{{method}} {{outcome}}")), "cps"), 6, 8)
    lay.add(timeseries(
        "Mesh call latency", "p50 and p99 by method, failures included.",
        targets(*[(quantile(q, "gameserver_mesh_call_duration_seconds", "method", inst),
                   f"p{round(q * 100)} {{{{method}}}}") for q in (0.5, 0.99)]), "s"), 6, 8)
    lay.add(timeseries(
        "Mesh calls served", "Calls this GameServer answered, by method and result.",
        targets((sum_by_rate("method, result", m("gameserver_mesh_requests_served_total")),
                 "{{method}} {{result}}")), "cps"), 6, 8)
    lay.add(timeseries(
        "Data plane", "Records exchanged with Gateways; batches that could not be sent.",
        targets(
            (f"sum by (direction) ({rate(m('gameserver_p2p_records_total'))})",
             "records {{direction}}"),
            (sum_by_rate("reason", m("gameserver_p2p_dropped_messages_total")),
             "dropped {{reason}}")), "cps"), 6, 8)

    lay.row("Process")
    lay.add(timeseries("CPU", "CPU time used per second (1 = one core).",
                       targets((f"sum({rate(m('process_cpu_seconds_total'))})", "cpu")),
                       "percentunit"), 6, 8)
    lay.add(timeseries("Resident memory", "",
                       targets((f"sum({m('process_resident_memory_bytes')})", "rss")),
                       "bytes"), 6, 8)
    lay.add(timeseries("Open file descriptors", "",
                       targets((f"sum({m('process_open_fds')})", "open"),
                               (f"max({m('process_max_fds')})", "limit"))), 6, 8)
    lay.add(timeseries("Python GC collections", "Garbage collections per second, by "
                       "generation.",
                       targets((f"sum by (generation) "
                                f"({rate(m('python_gc_collections_total'))})",
                                "gen {{generation}}")), "cps"), 6, 8)

    return dashboard(
        "gb-node", "Game backbone / GameServer node",
        "One GameServer (instance = its metrics scrape address) and a choice of message types. "
        "Metrics: docs/OPERATIONS.md §3.",
        lay.panels,
        [datasource_variable(),
         query_variable("instance", "GameServer", "label_values(gameserver_ready, instance)"),
         query_variable("msg_type", "Message type",
                        'label_values(gameserver_requests_total{instance="$instance"}, msg_type)',
                        multi=True, include_all=True)])


# --- output -----------------------------------------------------------------------------------


DASHBOARDS = {"overview.json": overview, "node.json": node}


def rendered() -> Iterator[tuple[Path, str]]:
    for name, build in DASHBOARDS.items():
        yield OUT_DIR / name, json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a JSON file differs from what this script writes")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.relative_to(REPO_ROOT))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    if stale:
        print("out of date (run scripts/grafana_dashboards.py): "
              + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
