"""Command line (arraygen.cli): every bad argument of every subcommand ends in one
argparse-style line naming the argument and exit status 2, never a traceback (issue 13); the
``arraygen`` logger's INFO messages reach stderr in CLI use (issue 15).

Runs ``arraygen.cli.main`` in-process; argparse's own errors arrive as ``SystemExit(2)``.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from arraygen import cli


def _run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse (usage + one line)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _assert_usage_error(code, err, flag):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "no message"
    last = lines[-1]
    assert "error:" in last, err
    assert flag.lower() in last.lower().replace("_", "-"), (flag, last)
    assert not any(ln.startswith("  File ") for ln in lines)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not an archive")
    (tmp_path / "empty_dir").mkdir()
    not_binary = tmp_path / "not_binary.npz"
    np.savez(not_binary, images=np.full((10, 4, 4), 3))
    too_few = tmp_path / "too_few.npz"
    np.savez(too_few, images=np.zeros((3, 4, 4), np.uint8))
    bad_ckpt = tmp_path / "bad_ckpt.npz"
    np.savez(bad_ckpt, biases=np.zeros(3))
    return tmp_path


def _gpu_backend_missing():
    from arraygen.backends import available

    return available().get("cupy") is not None


TRAIN = "train-dtm"
BAD = [
    # demo
    (["demo", "--sections", "nope"], "--sections"),
    (["demo", "--sections"], "--sections"),
    (["demo", "--out", "a_file.txt"], "--out"),
    (["demo", "--out", "a_file.txt/sub"], "--out"),
    (["demo", "--out", ""], "--out"),
    (["demo", "--bogus"], "--bogus"),
    (["demo", "--full=3"], "--full"),
    # info
    (["info", "--json=1"], "--json"),
    (["info", "--nope"], "--nope"),
    # top level
    (["nope"], "command"),
    # train-dtm: values
    ([TRAIN, "--size", "20"], "--size"),
    ([TRAIN, "--size", "x"], "--size"),
    ([TRAIN, "--steps", "0"], "--steps"),
    ([TRAIN, "--steps", "2.5"], "--steps"),
    ([TRAIN, "-T", "-1"], "--steps"),
    ([TRAIN, "--iters", "0"], "--iters"),
    ([TRAIN, "--iters", "ten"], "--iters"),
    ([TRAIN, "--epochs", "0"], "--epochs"),
    ([TRAIN, "--epochs", "-1"], "--epochs"),
    ([TRAIN, "--epochs", "nan"], "--epochs"),
    ([TRAIN, "--epochs", "inf"], "--epochs"),
    ([TRAIN, "--iters", "5", "--epochs", "1"], "--epochs"),
    ([TRAIN, "--chains", "0"], "--chains"),
    ([TRAIN, "--pcd-k", "0"], "--pcd-k"),
    ([TRAIN, "--sweeps", "0"], "--sweeps"),
    ([TRAIN, "--lr", "0"], "--lr"),
    ([TRAIN, "--lr", "-0.1"], "--lr"),
    ([TRAIN, "--lr", "nan"], "--lr"),
    ([TRAIN, "--samples", "0"], "--samples"),
    ([TRAIN, "--seed", "-1"], "--seed"),
    ([TRAIN, "--schedule", "sqrt"], "--schedule"),
    ([TRAIN, "--coupling", "dense"], "--coupling"),
    ([TRAIN, "--backend", "fortran"], "--backend"),
    # train-dtm: paths
    ([TRAIN, "--data", "missing.npz"], "--data"),
    ([TRAIN, "--data", "empty_dir"], "--data"),
    ([TRAIN, "--data", "a_file.txt"], "--data"),
    ([TRAIN, "--data", "not_binary.npz"], "--data"),
    ([TRAIN, "--data", "too_few.npz"], "--data"),
    ([TRAIN, "--resume", "missing.npz"], "--resume"),
    ([TRAIN, "--resume", "empty_dir"], "--resume"),
    ([TRAIN, "--resume", "bad_ckpt.npz"], "--resume"),
    ([TRAIN, "--resume", "a_file.txt"], "--resume"),
    ([TRAIN, "--out", "a_file.txt"], "--out"),
    ([TRAIN, "--out", "a_file.txt/run"], "--out"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_exits_2_naming_it(argv, flag, files, capsys):
    code, _, err = _run(argv, capsys)
    _assert_usage_error(code, err, flag)


@pytest.mark.skipif(not _gpu_backend_missing(), reason="cupy runs here")
def test_unusable_backend_is_a_usage_error(files, capsys):
    code, _, err = _run([TRAIN, "--backend", "cupy"], capsys)
    _assert_usage_error(code, err, "--backend")
    assert "usable" in err


def test_device_check_names_the_argument():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(cli.UsageError, match="argument --device: 'cuda'"):
        cli.check_device("cuda")
    with pytest.raises(cli.UsageError, match="--device"):
        cli.check_device("cuda:3")
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(cli.UsageError, match="'cupy' cannot run here"):
            cli.check_device("cupy")
    cli.check_device("cpu")
    cli.check_device(None)


EVAL = [
    (["eval-samplers", "--samplers", "foo"], "samplers"),
    (["eval-samplers", "--num-samples", "0"], "num-samples"),
    (["eval-samplers", "--resolutions", "x"], "resolutions"),
]


@pytest.mark.parametrize(("argv", "flag"), EVAL, ids=[" ".join(a) for a, _ in EVAL])
def test_eval_samplers_bad_settings_exit_2(argv, flag, files, capsys):
    """eval-samplers' settings errors go through the same plumbing (exit 2, one line)."""
    code, _, err = _run(argv, capsys)
    _assert_usage_error(code, err, flag)


def test_eval_samplers_cuda_without_cuda(files, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    code, _, err = _run(["eval-samplers", "--device", "cuda"], capsys)
    _assert_usage_error(code, err, "--device")


def test_debug_shows_the_traceback(files):
    with pytest.raises(cli.UsageError, match="--data"):
        cli.main([TRAIN, "--data", "not_binary.npz", "--debug"])


def test_other_errors_one_line_exit_1(files, capsys, monkeypatch):
    from arraygen.commands import info

    def broken():
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(info, "collect", broken)
    code, _, err = _run(["info"], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(
        "error: RuntimeError: boom second line (run again with --debug for the traceback)")


def test_no_command_prints_help_and_exits_2(capsys):
    code, _, err = _run([], capsys)
    assert code == 2 and "COMMAND" in err


def test_info_runs(capsys):
    code, out, _ = _run(["info", "--json"], capsys)
    assert code == 0 and '"backends"' in out


def test_arraygen_logger_info_reaches_stderr_during_a_command(files, capsys, monkeypatch):
    """What the numba backends log while compiling ("compiling kernels (first run only) ...
    done in X s") is shown in CLI use; the logger is restored afterwards."""
    from arraygen.commands import info

    def noisy():
        logging.getLogger("arraygen").info("compiling kernels (first run only) ... done in 2.0 s")
        logging.getLogger("arraygen").debug("hidden unless --verbose")
        return real()

    real = info.collect
    monkeypatch.setattr(info, "collect", noisy)
    logger = logging.getLogger("arraygen")
    before = (logger.level, logger.propagate, list(logger.handlers))
    code, _, err = _run(["info"], capsys)
    assert code == 0
    assert "[arraygen] compiling kernels (first run only) ... done in 2.0 s" in err
    assert "hidden unless --verbose" not in err
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    code, _, err = _run(["info", "--verbose"], capsys)
    assert code == 0 and "hidden unless --verbose" in err


def _stub_sections(monkeypatch, fail=False):
    from arraygen.commands import demo

    ran = []

    def make(name, order):
        class Stub:
            TITLE, ORDER = f"section {name}", order

            @staticmethod
            def run(ctx):
                ran.append(name)
                if fail:
                    raise RuntimeError("section broke")
                return f"{name} body"

        Stub.__name__ = f"arraygen.demos.{name}"  # a module's name: what demo reads
        return Stub

    stubs = [make("first", 1), make("second", 2)]
    monkeypatch.setattr(demo, "sections", lambda: stubs)
    monkeypatch.setattr(demo, "section_names", lambda: ["first", "second"])
    return ran


def test_demo_runs_only_the_named_section(files, capsys, monkeypatch):
    ran = _stub_sections(monkeypatch)
    code, out, _ = _run(["demo", "--sections", "second", "--out", "d"], capsys)
    assert code == 0 and ran == ["second"]
    report = (files / "d" / "report.md").read_text()
    assert "second body" in report and "first body" not in report


def test_demo_section_failure_is_one_line(files, capsys, monkeypatch):
    _stub_sections(monkeypatch, fail=True)
    code, _, err = _run(["demo", "--sections", "first", "--out", "d"], capsys)
    assert code == 1 and "Traceback" not in err and "section broke" in err
    assert "Traceback" in (files / "d" / "report.md").read_text()
