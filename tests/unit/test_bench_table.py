"""`make bench`'s combined table: every script's figures reach it, with ratio, goal and verdict
(the machinery only, on made-up figures: no timing runs here)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bench import run_all
from bench.common import ROOT, Figure, combined_table


def test_a_throughput_must_reach_its_goal_and_a_latency_stay_under_it():
    replay = Figure("replay", 270_000, 540_000, "events/s", goal=0.5)
    assert replay.ratio == 0.5 and replay.met is True and replay.goal_text == "≥ 0.5"
    slow_get = Figure("get p50", 0.9, 0.4, "ms", 1, goal=2.0)
    assert slow_get.lower_is_better and slow_get.met is False and slow_get.goal_text == "≤ 2×"
    assert Figure("seal", 1, 2, "events/s").met is None


def test_the_table_has_a_row_per_figure_with_every_column():
    table = combined_table([Figure("GetRider p50", 0.61, 0.34, "ms", 8,
                                   baseline_name="bare grpcio echo", goal=2.0)])
    header, _rule, row = table.splitlines()
    assert header == ("| benchmark | concurrency | Qiji figure | raw baseline | ratio | goal "
                      "| met? |")
    assert row == ("| GetRider p50 | 8 | 0.61 ms | 0.34 ms (bare grpcio echo) | 1.79 | ≤ 2× "
                   "| yes |")


def test_run_all_gathers_every_scripts_figures_into_one_table(tmp_path: Path, capfd,
                                                              monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (tmp_path / "bench_a.py").write_text(textwrap.dedent("""
        from bench.common import print_table
        print_table("writes", [("Register, 8 client(s)", 150.0, 600.0)], goal=1.0)
    """))
    (tmp_path / "bench_b.py").write_text(textwrap.dedent("""
        from bench.common import Figure, print_figures
        print_figures("reads", [Figure("GetRider p50", 0.5, 0.4, "ms", 1, "echo", 2.0)])
    """))
    (tmp_path / "bench_c.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "not_a_bench.py").write_text("raise SystemExit('must not run')\n")

    assert run_all.main(["--quick"], scripts_dir=tmp_path) == 1
    out = capfd.readouterr().out
    table = out[out.index("## All figures"):]
    assert "| Register, 8 client(s) | 8 | 150 ops/s | 600 ops/s (raw) | 0.25 | ≥ 1 | no |" in table
    assert "| GetRider p50 | 1 | 0.50 ms | 0.40 ms (echo) | 1.25 | ≤ 2× | yes |" in table
    assert "FAILED: bench_c.py" in out and "must not run" not in out


def test_quick_mode_sizes_every_script_small_unless_told_otherwise(tmp_path, capfd,
                                                                   monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("BENCH_OPS", "7")
    (tmp_path / "bench_env.py").write_text(
        "import os; print('sizes', os.environ['BENCH_OPS'], os.environ['BENCH_AUDIT_EVENTS'])\n")
    assert run_all.main(["--quick"], scripts_dir=tmp_path) == 0
    assert "sizes 7 20000" in capfd.readouterr().out


def test_run_all_prints_every_command_beside_its_crud_twin(tmp_path: Path, capfd, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (tmp_path / "bench_cmd.py").write_text(textwrap.dedent("""
        from bench.common import print_twin_table
        print_twin_table("commands", [("ClaimPerk, 1 client(s)", 300.0, 900.0, 4000.0),
                                      ("ClaimPerk, 8 client(s)", 500.0, 1000.0, 6000.0)])
    """))
    assert run_all.main(["--quick"], scripts_dir=tmp_path) == 0
    out = capfd.readouterr().out
    table = out[out.index("## Commands beside their CRUD twin"):]
    # Qiji, twin, Qiji ÷ twin, raw, Qiji ÷ raw; the goal of half the twin at 8 clients.
    assert "| ClaimPerk, 1 client(s) | 1 | 300 | 900 | 0.33 | 4,000 | 0.07 | — | — |" in table
    assert "| ClaimPerk, 8 client(s) | 8 | 500 | 1,000 | 0.50 | 6,000 | 0.08 | ≥ 0.5 | yes |" \
        in table
    # Both baselines reach the combined table too.
    combined = out[out.index("## All figures"):]
    assert "| ClaimPerk, 8 client(s) | 8 | 500 ops/s | 6,000 ops/s (raw) | 0.08 | ≥ 1 | no |" \
        in combined
    assert ("| ClaimPerk, 8 client(s) | 8 | 500 ops/s | 1,000 ops/s (CRUD twin) | 0.50 | ≥ 0.5 "
            "| yes |") in combined


def test_a_figure_recorded_twice_fails_the_run(tmp_path: Path, capfd, monkeypatch):
    """A script that hands in its figures twice (print_figures records them already) would
    print every row twice in the combined table: the run names it and fails."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (tmp_path / "bench_twice.py").write_text(textwrap.dedent("""
        from bench.common import Figure, print_figures, record
        figures = [Figure("follower", 5000.0, 1000.0, "events/s", goal=5.0)]
        print_figures("followers", figures)
        record(figures)
    """))
    (tmp_path / "bench_once.py").write_text(textwrap.dedent("""
        from bench.common import print_twin_table
        print_twin_table("commands", [("ClaimPerk, 8 client(s)", 500.0, 1000.0, 6000.0)])
    """))
    assert run_all.main(["--quick"], scripts_dir=tmp_path) == 1
    out = capfd.readouterr().out
    assert "RECORDED TWICE: follower" in out and "ClaimPerk" not in out.split("RECORDED")[1]
