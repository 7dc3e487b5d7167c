"""Results of the serving benchmark, and the Markdown tables and JSON that present them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from benchkit.ceiling import Ceiling
from benchkit.wrk import LoadResult


@dataclasses.dataclass(frozen=True)
class Scenario:
    concurrency: int
    batch: int  # texts per request
    protocol: str = "rest"  # or "grpc": ModelInfer with raw contents, loaded by ghz

    @property
    def label(self) -> str:
        label = f"c={self.concurrency}, {self.batch} text{'s' if self.batch > 1 else ''}/req"
        return label + (", gRPC" if self.protocol == "grpc" else "")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One server under one scenario."""

    scenario: Scenario
    load: LoadResult
    rss_total_mb: float
    rss_single_mb: float
    cpu_us_per_request: float = 0.0  # the server's CPU time (all its processes) over its requests
    # The load generator's (wrk's, ghz's) CPU time over the requests: on a machine it shares with
    # the server, what it spends the server does not have.
    generator_cpu_us_per_request: float = 0.0

    @property
    def texts_per_second(self) -> float:
        return self.load.requests_per_second * self.scenario.batch


@dataclasses.dataclass
class ServerRun:
    name: str
    description: str
    is_ours: bool
    ready_seconds: float | None = None
    idle_rss_mb: float | None = None
    failure: str | None = None
    cells: list[Cell] = dataclasses.field(default_factory=list)

    def cell(self, scenario: Scenario) -> Cell | None:
        return next((cell for cell in self.cells if cell.scenario == scenario), None)


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def results_table(runs: Sequence[ServerRun], scenarios: Sequence[Scenario]) -> list[str]:
    rows = []
    for scenario in scenarios:
        for run in runs:
            cell = run.cell(scenario)
            if cell is None:
                continue
            load = cell.load
            rows.append(
                [
                    scenario.label,
                    run.name,
                    number(load.requests_per_second),
                    number(cell.texts_per_second),
                    number(load.p50_ms),
                    number(load.p99_ms),
                    str(load.errors),
                    f"{cell.cpu_us_per_request:.0f}",
                    f"{cell.rss_total_mb:.0f}",
                    f"{cell.rss_single_mb:.0f}",
                ]
            )
    header = [
        "scenario",
        "server",
        "req/s",
        "texts/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "server CPU µs/req",
        "peak RSS MB (tree)",
        "peak RSS MB (largest process)",
    ]
    return table(header, rows)


def startup_table(runs: Sequence[ServerRun]) -> list[str]:
    rows = []
    for run in runs:
        ready = "-" if run.ready_seconds is None else f"{run.ready_seconds:.2f}"
        idle = "-" if run.idle_rss_mb is None else f"{run.idle_rss_mb:.0f}"
        rows.append([run.name, run.description, ready, idle, run.failure or "ok"])
    return table(["server", "what", "ready after s", "idle RSS MB (tree)", "outcome"], rows)


def ratio_table(runs: Sequence[ServerRun], scenarios: Sequence[Scenario]) -> list[str]:
    """For each of our variants: its throughput over each alternative's, and its p99 over theirs."""
    ours = [run for run in runs if run.is_ours and run.cells]
    others = [run for run in runs if not run.is_ours and run.cells]
    if not ours or not others:
        return []
    rows = []
    for scenario in scenarios:
        for mine in ours:
            my_cell = mine.cell(scenario)
            if my_cell is None:
                continue
            row = [scenario.label, mine.name]
            for other in others:
                their = other.cell(scenario)
                if their is None or their.load.requests_per_second == 0:
                    row.append("-")
                    continue
                speed = my_cell.load.requests_per_second / their.load.requests_per_second
                tail = (
                    my_cell.load.p99_ms / their.load.p99_ms if their.load.p99_ms else float("nan")
                )
                row.append(f"{speed:.2f}x req/s, {tail:.2f}x p99")
            rows.append(row)
    return table(["scenario", "ours", *(f"vs {other.name}" for other in others)], rows)


def ceiling_table(
    ceilings: Sequence[Ceiling], runs: Sequence[ServerRun], scenarios: Sequence[Scenario]
) -> list[str]:
    """The model alone, and the best of our variants as a fraction of the model's best batch throughput."""
    lines = table(
        ["model.predict in process", "texts/s"],
        [[f"batches of {c.batch_size}", number(c.texts_per_second)] for c in ceilings],
    )
    if not ceilings:
        return lines
    best = max(c.texts_per_second for c in ceilings)
    rows = []
    for scenario in scenarios:
        cells = [(run.name, run.cell(scenario)) for run in runs if run.is_ours]
        cells = [(name, cell) for name, cell in cells if cell is not None]
        if not cells:
            continue
        name, cell = max(cells, key=lambda item: item[1].texts_per_second)
        rows.append(
            [
                scenario.label,
                name,
                number(cell.texts_per_second),
                f"{cell.texts_per_second / best:.0%}",
            ]
        )
    if rows:
        lines += [
            "",
            *table(
                ["scenario", "best of ours", "texts/s", "of the model's best in-process rate"], rows
            ),
        ]
    return lines


def to_json(
    runs: Sequence[ServerRun],
    ceilings: Sequence[Ceiling],
    meta: dict[str, Any],
    transports: Sequence[Any] = (),
) -> dict[str, Any]:
    def cell(c: Cell) -> dict[str, Any]:
        return {
            "concurrency": c.scenario.concurrency,
            "texts_per_request": c.scenario.batch,
            "protocol": c.scenario.protocol,
            "requests_per_second": c.load.requests_per_second,
            "texts_per_second": c.texts_per_second,
            **dataclasses.asdict(c.load),
            "errors": c.load.errors,
            "rss_total_mb": c.rss_total_mb,
            "rss_single_mb": c.rss_single_mb,
            "server_cpu_us_per_request": c.cpu_us_per_request,
            "generator_cpu_us_per_request": c.generator_cpu_us_per_request,
        }

    return {
        "meta": meta,
        "ceilings": [dataclasses.asdict(c) for c in ceilings],
        "servers": [
            {
                "name": run.name,
                "description": run.description,
                "ours": run.is_ours,
                "ready_seconds": run.ready_seconds,
                "idle_rss_mb": run.idle_rss_mb,
                "failure": run.failure,
                "cells": [cell(c) for c in run.cells],
            }
            for run in runs
        ],
        "transports": [
            {
                "transport": t.transport,
                "concurrency": t.load_concurrency,
                "requests_per_second": t.load.requests_per_second,
                **dataclasses.asdict(t.load),
                "errors": t.load.errors,
                "server_cpu_us_per_request": t.cpu_us_per_request,
            }
            for t in transports
        ],
    }
