"""A newcomer's first hour: the demo's config to try every command on, options where people
type them, help that names --config, shell completion."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from archiver.cli import main
from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import TOKEN, Workspace, cli_env, run_cli

SCRIPT = Path(sys.executable).with_name("c66-archiver")


async def test_the_demo_leaves_a_config_every_command_works_with(tmp_path: Path) -> None:
    """After `demo --dir D`: status, verify, restore and prune run with --config D/config.toml,
    also once D has moved (its paths are relative to it), and the demo says how."""
    demo = tmp_path / "demo"
    result = await run_cli("demo", "--dir", str(demo), timeout=120)
    assert result.code == 0, result.stderr
    config = demo / "config.toml"
    assert f"c66-archiver --config {config} status" in result.stderr
    assert f"--config {config} prune --dry-run" in result.stderr
    moved = tmp_path / "moved"
    shutil.move(demo, moved)
    config = moved / "config.toml"
    status = await run_cli("--config", str(config), "status", "--json")
    assert status.code == 0, status.stderr
    assert len(json.loads(status.stdout)["archived"]) == 9
    verify = await run_cli("--config", str(config), "verify", "--deep")
    assert verify.code == 0, verify.stderr
    restores = tmp_path / "restores"
    restores.mkdir()
    restore = await run_cli("--config", str(config), "restore", "7", "-o", str(restores))
    assert restore.code == 0, restore.stderr
    assert (restores / "events.tar").stat().st_size > 0
    preview = await run_cli("--config", str(config), "prune", "-n")
    assert preview.code == 0, preview.stderr
    assert "would remove 5" in preview.stdout  # keep_last 1: 4 of the shop's 5, 1 of 2 events
    pruned = await run_cli("--config", str(config), "prune")
    assert pruned.code == 0, pruned.stderr
    assert len(list((moved / "archive").rglob("manifest.json"))) == 4


async def test_global_options_work_after_the_subcommand(
    sim: Simulator, server: SimulatorServer, workspace: Workspace
) -> None:
    """--config, -q and --log-format after the subcommand; -q leaves stderr silent on success."""
    sim.add_stack("stack-a")
    sim.add_backup("stack-a", size=100)
    config = str(workspace.write_config(server.base_url, [{"uid": "stack-a"}]))
    quiet = await run_cli("sync", "--config", config, "-q")
    assert quiet.code == 0, quiet.stderr
    assert quiet.stderr == ""
    status = await run_cli("status", "--json", "--config", config)
    assert status.code == 0, status.stderr
    assert len(json.loads(status.stdout)["archived"]) == 1
    logged = await run_cli("sync", "--log-format", "console", "--config", config, "-v")
    assert logged.code == 0, logged.stderr
    assert "pass finished: archived 0, already had 1" in logged.stderr
    both = await run_cli("status", "-v", "-q", "--config", config)
    assert both.code == 2
    assert "cannot be combined" in both.stderr


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*path, name)))
        else:
            found.append((*path, name))
    return found


def test_every_command_takes_and_names_the_global_options() -> None:
    """Every command's help (nested ones too) lists --config, -v, -q and --log-format."""
    runner = CliRunner()
    commands = _commands(main)
    assert ("backup-task", "create") in commands
    for path in commands:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        for option in ("--config PATH", "-v, --verbose", "-q, --quiet", "--log-format"):
            assert option in result.output, (path, option)


def test_prune_takes_n_for_dry_run() -> None:
    """`-n` is `--dry-run`, as restic, rclone and borgmatic users type it."""
    result = CliRunner().invoke(main, ["prune", "--help"])
    assert "-n, --dry-run" in result.output
    assert "--wait" in result.output


async def test_shell_completion_completes_commands_and_options() -> None:
    """click's completion: the bash script, and `c66-archiver pr<TAB>` -> prune."""
    env = cli_env(_C66_ARCHIVER_COMPLETE="bash_source")
    source = await _script(env)
    assert "complete -o nosort -F" in source
    env = cli_env(_C66_ARCHIVER_COMPLETE="bash_complete", COMP_WORDS="c66-archiver pr",
                  COMP_CWORD="1")
    assert "plain,prune" in (await _script(env)).splitlines()
    env = cli_env(_C66_ARCHIVER_COMPLETE="bash_complete",
                  COMP_WORDS="c66-archiver status --con", COMP_CWORD="2")
    assert "plain,--config" in (await _script(env)).splitlines()


async def _script(env: dict[str, str]) -> str:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr
    return stdout.decode()


EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


async def test_the_example_config_works_as_copied_outside_systemd(
    sim: Simulator, server: SimulatorServer, tmp_path: Path
) -> None:
    """config.example.toml copied, only the API and the two paths pointed elsewhere: a pass
    runs with the token from C66_API_TOKEN (no systemd credential), or from a token_file
    beside it; without either, the error says where a token can come from."""
    for uid in ("5999b763474b0eafa5fafb64bff0ba80", "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"):
        sim.add_stack(uid)
        sim.add_backup(uid, db_type="mysql", size=500)
    text = EXAMPLE.read_text()
    assert "come with their issue" not in text
    text = text.replace("https://app.cloud66.com/api/3", server.base_url)
    text = text.replace('"/var/lib/c66-archiver/archive"', '"archive"', 1)
    text = text.replace('path = "/var/lib/c66-archiver/state"', 'path = "state"')
    config = tmp_path / "config.toml"
    config.write_text(text)
    env = cli_env()
    env.pop("CREDENTIALS_DIRECTORY", None)
    missing = await run_cli("--config", str(config), "sync", env=env)
    assert missing.code == 2
    assert "C66_API_TOKEN" in missing.stderr
    assert "/run/credentials" not in missing.stderr
    with_env = await run_cli("--config", str(config), "sync", env={**env, "C66_API_TOKEN": TOKEN})
    assert with_env.code == 0, with_env.stderr
    assert len(list((tmp_path / "archive").rglob("manifest.json"))) == 2
    (tmp_path / "api-token").write_text(TOKEN + "\n")
    config.write_text(text.replace('# token_file = "api-token"', 'token_file = "api-token"'))
    with_file = await run_cli("--config", str(config), "sync", env=env, cwd=Path("/"))
    assert with_file.code == 0, with_file.stderr
