"""The question commands: compare, sweep, capacity, cheapest — tables printed, CSV and Parquet
and PNGs written, mistakes reported without a traceback."""

import pandas as pd
import pytest

from _tiny import write_tiny
from simcluster.cli import main


@pytest.fixture
def tiny(tmp_path):
    return write_tiny(tmp_path)


def test_compare_vary_writes_csv_parquet_and_figures(tiny, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(tiny), "--vary", "router.policy=round_robin,join_shortest_queue",
                 "--vary", "instances.0.count=1,2", "--set", "trace.synthetic.n=40",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    for heading in ("[latency]", "[throughput]", "[slo]", "[cost]"):
        assert heading in text
    assert "router.policy=join_shortest_queue, instances.0.count=2" in text
    csv = pd.read_csv(out / "compare.csv")
    assert len(csv) == 4 and "latency.ttft_p90_ms" in csv and "cost.usd_per_m_tokens" in csv
    pd.testing.assert_frame_equal(csv, pd.read_parquet(out / "compare.parquet"),
                                  check_dtype=False)
    assert {"latency_cdf.png", "cost_per_m_tokens.png", "timeline_0.png"} <= \
        {p.name for p in out.iterdir()}


def test_compare_two_files(tiny, tmp_path, capsys):
    other = write_tiny(tmp_path, tiny.read_text().replace("count = 2", "count = 1"), "one.toml")
    assert main(["compare", str(tiny), str(other), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()[0]
    assert "tiny" in out and "one" in out


def test_sweep_command_runs_caches_and_plots(tiny, tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text('experiment = "tiny.toml"\n[set]\n"trace.synthetic.n" = 40\n[grid]\n'
                     '"trace.rate_per_s" = [2, 8]\n"instances.0.count" = [1, 2]\n')
    out, figs = tmp_path / "out", tmp_path / "figs"
    assert main(["sweep", str(sweep), "--jobs", "2", "--out", str(out), "--plots", str(figs),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "4 points: 4 run, 0 read from disk, 0 failed" in text
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 4 and {"trace.rate_per_s", "instances.0.count", "slo_attainment"} <= \
        set(df.columns)
    assert {"latency_percentiles.png", "slo_attainment.png", "throughput_latency.png",
            "cost_per_m_tokens.png"} <= {p.name for p in figs.iterdir()}
    assert main(["sweep", str(sweep), "--jobs", "1", "--out", str(out), "--quiet",
                 "--set", "seed=4"]) == 0
    assert "4 points: 4 run, 0 read from disk" in capsys.readouterr().out   # a new seed
    assert main(["sweep", str(sweep), "--jobs", "1", "--out", str(out), "--quiet"]) == 0
    assert "4 points: 0 run, 4 read from disk" in capsys.readouterr().out


def test_capacity_and_cheapest_commands(tiny, tmp_path, capsys):
    figs = tmp_path / "figs"
    assert main(["capacity", str(tiny), "--ttft-slo", "0.1", "--tpot-slo", "0.012",
                 "--set", "instances.0.count=1", "--set", "trace.synthetic.n=60",
                 "--rel-tol", "0.1", "--plots", str(figs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "capacity " in out and "req/s does not" in out and "rate_per_s" in out
    assert (figs / "capacity.png").exists()
    assert main(["cheapest", str(tiny), "--rate", "6", "--devices", "H100-SXM,L4",
                 "--max-count", "2", "--set", "trace.synthetic.n=40", "--plots", str(figs),
                 "--out", str(tmp_path / "c"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "cheapest at 6 req/s" in out and "usd_per_hour" in out
    assert (figs / "cheapest.png").exists() and (tmp_path / "c" / "candidates.csv").exists()


def test_a_failed_point_shows_its_error_kind_in_the_table_and_its_message_on_stderr(
        tiny, tmp_path, capsys):
    """A message in the printed table made it unreadable (hundreds of characters a row):
    the table names the kind, stderr carries the message, which names the override as an
    override (a sweep's grid is not --set)."""
    sweep = tmp_path / "s.toml"
    sweep.write_text('experiment = "tiny.toml"\n[set]\n"trace.synthetic.n" = 20\n[grid]\n'
                     '"instances.0.count" = [1, 0]\n')
    assert main(["sweep", str(sweep), "--jobs", "1", "--quiet"]) == 0      # one point ran
    out, err = capsys.readouterr()
    row = [line for line in out.splitlines() if line.split()[:1] == ["0"]]
    assert row and row[0].split()[-1] == "InputError" and "out of range" not in out
    assert "point 1 failed: InputError:" in err and "out of range" in err
    assert "(set by override instances.0.count=0)" in err and "--set" not in err


def test_sweep_help_shows_a_sweep_file_that_runs(tmp_path, capsys):
    """sweep -h pointed to a Python module for the file's format; it shows the example of
    simcluster.experiment.study's docstring, which is a valid sweep file."""
    from simcluster.cli.search import SWEEP_EXAMPLE
    from simcluster.experiment import study
    from simcluster.experiment.study import read_sweep
    body = SWEEP_EXAMPLE.split("\n\n")[1]
    assert body in study.__doc__.replace("\n    ", "\n  ")
    with pytest.raises(SystemExit):
        main(["sweep", "-h"])
    assert body in capsys.readouterr().out
    path = tmp_path / "sweep.toml"
    path.write_text("\n".join(line[2:] for line in body.splitlines()) + "\n")
    spec = read_sweep(path)
    assert len(spec["grid"]) == 3 and len(spec["points"]) == 2


def test_points_that_fail_alike_are_one_line(tiny, tmp_path, capsys):
    """A misspelt grid key fails every point with the same message but for the value: one
    line naming the points, not one a point; points failing otherwise keep their own."""
    from simcluster.cli.search import _numbers
    sweep = tmp_path / "s.toml"
    sweep.write_text('experiment = "tiny.toml"\n[set]\n"trace.synthetic.n" = 20\n[grid]\n'
                     '"instances.0.cuont" = [1, 2, 3]\n"seed" = [1, 2]\n')
    assert main(["sweep", str(sweep), "--jobs", "1", "--quiet"]) == 2      # nothing ran
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "failed" in line]
    assert len(lines) == 1 and "points 0-5 failed alike (6 points); point 0: InputError:" \
        in lines[0] and "did you mean 'count'?" in lines[0]
    assert "(set by override instances.0.cuont=1)" in lines[0]
    sweep.write_text('experiment = "tiny.toml"\n[set]\n"trace.synthetic.n" = 20\n[grid]\n'
                     '"instances.0.count" = [0, 1, -1]\n')
    assert main(["sweep", str(sweep), "--jobs", "1", "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "failed" in line]
    assert [line.split(":")[1] for line in lines] == [" point 0 failed", " point 2 failed"]
    assert _numbers([0, 1, 2, 3, 7, 9, 10]) == "0-3, 7, 9-10" and _numbers([4]) == "4"


@pytest.mark.parametrize("argv, msg", [
    (["compare", "{tiny}", "--vary", "router.policy"], "--vary"),
    (["compare", "{tiny}", "--set", "instances.0.count=0"], "instances[0].count"),
    (["capacity", "{tiny}", "--set", "slo={{}}"], "needs an SLO"),
    (["cheapest", "{tiny}", "--rate", "3"], "--devices"),
    (["cheapest", "{tiny}", "--rate", "3", "--devices", "H100-SXM", "--set", "seed=1",
      "--set", "disaggregation.kv_link=PCIe4"], "colocated"),
    (["sweep", "{tiny}.missing"], "no such sweep file"),
])
def test_mistakes_name_the_problem_without_a_traceback(tiny, capsys, argv, msg):
    rc = main([a.format(tiny=tiny) for a in argv] + ["--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and msg in err and "Traceback" not in err
