"""The shell scripts run for real: run-docker.sh takes the chain's port from CHAIN_RPC_URL and
refuses what it cannot serve; run-demo.sh, when its server dies under it, says so with the log to
read, writes every log line once, and tears down the chain it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.devchain import GanacheProcess, free_port, rpc_answers
from common.settings import ROOT, Settings


def script_env(tmp_path: Path, port: int | None = None, **extra: str) -> dict[str, str]:
    """The environment of a script run: no .env, data under ``tmp_path``, the chain at ``port``."""
    env = {k: v for k, v in os.environ.items() if k not in ("GANACHE_PORT", "CHAIN_RPC_URL", "CHAIN_WS_URL")}
    env.update(SMARTMETER_ENV_FILE=str(tmp_path / "none.env"), DATA_DIR=str(tmp_path / "data"),
               DEPLOYMENTS_DIR=str(tmp_path / "deployments"))
    if port is not None:
        env.update(CHAIN_RPC_URL=f"http://127.0.0.1:{port}", CHAIN_WS_URL=f"ws://127.0.0.1:{port}")
    env.update(extra)
    return env


def run_docker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["./run-docker.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def stop_chain_after(tmp_path: Path) -> Iterator[list[dict[str, str]]]:
    """Environments of chains a test may have started: each is stopped with ``run-docker.sh --stop``."""
    started: list[dict[str, str]] = []
    yield started
    for env in started:
        run_docker(env, "--stop")


# ---------------------------------------------------------------- run-docker.sh


def test_run_docker_status_looks_at_the_port_of_chain_rpc_url_from_the_environment_or_the_env_file(
    tmp_path: Path, ganache: GanacheProcess
) -> None:
    port = free_port()
    from_env = run_docker(script_env(tmp_path, port), "--status")
    assert (from_env.returncode, from_env.stdout) == (1, f"run-docker: no chain answers at http://127.0.0.1:{port}\n")

    env_file = tmp_path / "settings.env"
    env_file.write_text(f"CHAIN_RPC_URL={ganache.rpc_url}\nCHAIN_WS_URL={ganache.ws_url}\n")
    from_file = run_docker(script_env(tmp_path, SMARTMETER_ENV_FILE=str(env_file)), "--status")
    assert (from_file.returncode, from_file.stdout) == (0, f"run-docker: the chain answers at {ganache.rpc_url}\n")


@pytest.mark.parametrize(("settings", "refusal"), [
    ({"CHAIN_RPC_URL": "http://10.1.2.3:8545", "CHAIN_WS_URL": "ws://10.1.2.3:8545"},
     "CHAIN_RPC_URL=http://10.1.2.3:8545 points to 10.1.2.3, another machine; run-docker.sh starts a chain on "
     "this machine only"),
    ({"CHAIN_RPC_URL": "http://127.0.0.1:{port}", "CHAIN_WS_URL": "ws://127.0.0.1:{port}", "GANACHE_PORT": "{other}"},
     "GANACHE_PORT={other} and CHAIN_RPC_URL=http://127.0.0.1:{port} disagree"),
    ({"CHAIN_RPC_URL": "http://127.0.0.1:{port}", "CHAIN_WS_URL": "ws://127.0.0.1:{other}"},
     "CHAIN_WS_URL=ws://127.0.0.1:{other} and CHAIN_RPC_URL=http://127.0.0.1:{port} use different ports"),
    ({"CHAIN_RPC_URL": "127.0.0.1:{port}"}, "CHAIN_RPC_URL=127.0.0.1:{port} is not an http://HOST:PORT address"),
])
def test_run_docker_refuses_a_chain_it_cannot_start_where_the_settings_say_and_starts_nothing(
    tmp_path: Path, stop_chain_after: list[dict[str, str]], settings: dict[str, str], refusal: str
) -> None:
    port, other = free_port(), free_port()
    env = script_env(tmp_path, **{k: v.format(port=port, other=other) for k, v in settings.items()})
    stop_chain_after.append(env)
    result = run_docker(env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("run-docker: " + refusal.format(port=port, other=other))
    assert not (tmp_path / "data" / "ganache.pid").exists()
    assert "Ganache" not in result.stdout and not rpc_answers(f"http://127.0.0.1:{port}")


def test_run_docker_starts_the_chain_at_the_port_of_chain_rpc_url_and_stops_it(
    tmp_path: Path, stop_chain_after: list[dict[str, str]]
) -> None:
    port = free_port()
    env = script_env(tmp_path, port)
    stop_chain_after.append(env)
    started = run_docker(env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"Ganache answers at http://127.0.0.1:{port} (chain id 1337" in started.stdout
    assert rpc_answers(f"http://127.0.0.1:{port}", 5)
    stopped = run_docker(env, "--stop")
    assert stopped.returncode == 0 and "run-docker: stopped the chain (pid " in stopped.stdout
    assert not rpc_answers(f"http://127.0.0.1:{port}")


# ---------------------------------------------------------------- run-demo.sh


class Output:
    """A child's combined output, read by a thread so the child never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        assert proc.stdout is not None
        self._pipe = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._pipe:
            self.text += line

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s; output:\n{self.text}"
            time.sleep(0.2)

    def wait_closed(self, timeout: float) -> str:
        """The whole output, once every writer has closed the pipe: the child's exit does not mean its last
        lines were read yet (under load this reader thread lags behind)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the output is still open {timeout} s on; so far:\n{self.text}"
        return self.text


def children(pid: int) -> list[tuple[int, list[str]]]:
    """Every descendant of ``pid`` with its command line."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except (OSError, IndexError, ValueError):
            continue
        table[int(entry.name)] = (ppid, argv)
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, argv) in table.items():
            if ppid == parent:
                found.append((child, argv))
                todo.append(child)
    return found


# The signals a terminal delivers to its foreground job, and those Python ignores (a child inherits that).
TERMINAL_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ)
# Exec the command with those signals at their default action and unblocked, as a shell starts a foreground
# job. Without it the demo inherits the test run's: under ``nohup`` (or ``cmd &`` in a script, for SIGINT) the
# signal is ignored, a shell cannot trap a signal ignored when it started, and nothing in the demo reacts to it.
_AS_FROM_A_TERMINAL = (
    "import os, signal, sys; sigs = [signal.Signals[n] for n in sys.argv[1].split(',')]; "
    "[signal.signal(s, signal.SIG_DFL) for s in sigs]; signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def start_demo(env: dict[str, str]) -> subprocess.Popen[str]:
    """``run-demo.sh --count 1 --plain`` in a session of its own, started as from a terminal, its output piped."""
    argv = [sys.executable, "-c", _AS_FROM_A_TERMINAL, ",".join(s.name for s in TERMINAL_SIGNALS),
            str(ROOT / "run-demo.sh"), "--count", "1", "--plain"]
    return subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def signal_set(pid: int, field: str) -> set[signal.Signals]:
    """The signals of a ``/proc/PID/status`` mask field (``SigIgn``, ``SigBlk``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            mask = int(line.split()[1], 16)
            return {s for s in signal.Signals if mask >> (s - 1) & 1}
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_run_demo_says_at_once_that_its_server_died_names_the_log_and_tears_everything_down(
    tmp_path: Path, base_settings: Settings, deployment: object, stop_chain_after: list[dict[str, str]]
) -> None:
    chain_port = free_port()
    env = script_env(tmp_path, chain_port, SERVER_PORT=str(free_port()), HTTP_PORT=str(free_port()),
                     METER_COUNT="1", HISTORY_DAYS="0", TIME_SCALE="10",
                     BUILD_DIR=str(base_settings.build_dir))  # compiled by the session's deployment
    stop_chain_after.append(env)
    demo = start_demo(env)
    out = Output(demo)
    try:
        out.wait_for("run-clients: started 1 meter;", 180)
        out.wait_for("state='connected'", 60)
        servers = [pid for pid, argv in children(demo.pid) if argv[-2:] == ["-m", "server"]]
        assert len(servers) == 1, children(demo.pid)
        os.kill(servers[0], signal.SIGKILL)
        assert demo.wait(60) == 1
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    out.wait_closed(60)
    logs = tmp_path / "data" / "logs"
    assert (f"run-demo: the server side (run-server.sh) stopped while the demo was running, so the demo stops too; "
            f"see {logs / 'run-server.log'}. Its last lines:") in out.text
    assert f"run-server: the server (python -m server) stopped by itself (killed by SIGKILL); its log is " \
           f"{logs / 'server.log'}; its last lines:" in out.text
    assert "event=" in out.text.split("stopped by itself")[1], "the server log's last lines are shown"
    # The message comes after the meters have stopped (their screen would hide it), then the teardown.
    assert out.text.index("run-clients: stopping meters") < out.text.index("stopped while the demo was running")
    assert out.text.rstrip().endswith("run-demo: done; run ./run-demo.sh again to resume where it stopped")
    assert not rpc_answers(f"http://127.0.0.1:{chain_port}"), "the demo stopped the chain it started"
    assert not [argv for _, argv in children(demo.pid)]

    # Every log line is written once: one log per process, no stderr copies beside them.
    assert sorted(p.name for p in logs.iterdir()) == ["emitter.log", "ganache.log", "run-server.log", "server.log"]
    # No log holds the operator's key (run-server.log gives the dashboard's address and where the key is).
    operator_key = (tmp_path / "data" / "api" / "operator.key").read_text().strip()
    assert not [log.name for log in logs.iterdir() if operator_key in log.read_text(errors="replace")]
    assert f"(sign in with the operator's key: {tmp_path / 'data' / 'api' / 'operator.key'})" in \
        (logs / "run-server.log").read_text()
    server_log = (logs / "server.log").read_text().splitlines()
    assert sum("event=gateway_listening" in line for line in server_log) == 1
    assert len(server_log) == len(set(server_log))
    meter = tmp_path / "data" / "meters" / "meter-01"
    assert "event=meter_started" in (meter / "meter.log").read_text()
    assert "event=" not in (meter / "console.log").read_text()


@pytest.mark.parametrize(("first", "second"), [(signal.SIGINT, signal.SIGHUP), (signal.SIGHUP, signal.SIGINT)],
                         ids=["ctrl-c-then-terminal-closed", "terminal-closed-then-ctrl-c"])
def test_run_demo_tears_down_on_sighup_as_on_ctrl_c_and_a_second_signal_does_not_cut_the_teardown_short(
    tmp_path: Path, base_settings: Settings, deployment: object, stop_chain_after: list[dict[str, str]],
    first: signal.Signals, second: signal.Signals,
) -> None:
    chain_port = free_port()
    env = script_env(tmp_path, chain_port, SERVER_PORT=str(free_port()), HTTP_PORT=str(free_port()),
                     METER_COUNT="1", HISTORY_DAYS="0", TIME_SCALE="10", BUILD_DIR=str(base_settings.build_dir))
    stop_chain_after.append(env)
    demo = start_demo(env)
    out = Output(demo)
    try:
        out.wait_for("run-clients: started 1 meter;", 180)
        assert rpc_answers(f"http://127.0.0.1:{chain_port}")
        # Whatever this test run inherited (nohup ignores SIGHUP), the demo can receive both signals.
        assert not {first, second} & (signal_set(demo.pid, "SigIgn") | signal_set(demo.pid, "SigBlk"))
        # As a terminal does: the signal goes to the whole foreground process group (the chain runs in
        # a session of its own, so only the demo's teardown can stop it).
        os.killpg(demo.pid, first)
        out.wait_for("run-demo: tearing down", 60)
        os.killpg(demo.pid, second)
        assert demo.wait(120) == {signal.SIGINT: 130, signal.SIGHUP: 129}[first]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    out.wait_closed(60)
    assert out.text.count("run-demo: tearing down") == 1
    assert out.text.rstrip().endswith("run-demo: done; run ./run-demo.sh again to resume where it stopped")
    assert not rpc_answers(f"http://127.0.0.1:{chain_port}"), "the demo stopped the chain it started"
    assert not [argv for _, argv in children(demo.pid)]
