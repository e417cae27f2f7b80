"""The command line: parse -> load config -> set up logging -> run -> exit code.

Every failure ends as one line on stderr naming its cause, and the contract's
exit code; never a bare traceback. The commands live beside this group by what
they work on: `running` (passes), `archive` (what is archived), `cloud66` (Cloud
66's side); `base` holds what they share.
"""

from __future__ import annotations

import click

from archiver import __version__
from archiver.cli import archive, cloud66, running
from archiver.cli.base import CONTEXT, Commands, Setup
from archiver.core.malloc_tuning import tame_malloc


@click.group(
    cls=Commands,
    invoke_without_command=True,
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  c66-archiver demo                          # try it: embedded simulator -> ./c66-demo
  c66-archiver --config /etc/c66-archiver/config.toml check-config
  c66-archiver --sync-now                    # one pass, e.g. from cron
  c66-archiver                               # the daemon: a pass now, then on schedule
  c66-archiver status --json
  c66-archiver health                        # exit 0 when a pass succeeded recently

\b
--config, -v, -q and --log-format work before or after the subcommand.
Shell completion, e.g. in ~/.bashrc (zsh_source, fish_source for those shells):
  eval "$(_C66_ARCHIVER_COMPLETE=bash_source c66-archiver)"

Exit codes: 0 all archived, 1 some backups failed, 2 usage or config error,
3 another instance holds the state lock, 4 the API refused the token,
143/130 a pass stopped by SIGTERM/SIGINT with work left for the next one.""",
)
@click.option("--sync-now", is_flag=True, help="Run one pass and exit instead of the daemon.")
@click.version_option(__version__, prog_name="c66-archiver")
@click.pass_context
def main(ctx: click.Context, sync_now: bool) -> None:
    """Archive Cloud 66 database backups into storage you own.

    Polls the Cloud 66 API for the backups of your stacks, downloads every new
    Ok backup (joining multi-part ones), checks it, and stores it with a
    manifest. Without a subcommand it runs as a daemon; with --sync-now (or
    `sync`) it runs one pass and exits.
    """
    tame_malloc()
    ctx.ensure_object(Setup)
    if ctx.invoked_subcommand is None:
        if sync_now:
            ctx.invoke(running.sync)
        else:
            running.run_daemon(ctx.obj)


for command in (
    running.sync, running.demo,
    archive.status, archive.health, archive.check_config, archive.prune, archive.verify,
    archive.restore,
    cloud66.import_, cloud66.backup_task, cloud66.watch,
):
    main.add_command(command)
