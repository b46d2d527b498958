"""The ``sandq`` command line.

Commands:

- ``sandq run FILE|-``: run one program through the queue, print its output, exit with its code
  (or with a code that names how it ended: ``sandq run --help``); ``--dry-run --backend kubernetes``
  prints the manifests instead.
- ``sandq batch IN.jsonl -o OUT.jsonl``: run every line of a JSONL file; rerun it to resume.
- ``sandq status``: queue depth, parked and in-flight executions by tenant, and the workers.
- ``sandq worker``: start a worker (Celery node ``sandq-<pid>@<host>``), with Prometheus metrics.
- ``sandq healthcheck``: exit 0 if a worker of this host answers a ping (Kubernetes probes).
- ``sandq janitor``: delete the Kubernetes Jobs that crashed workers left past their deadline.
- ``sandq doctor``: check Redis, runsc, the sandbox environment (local and the image's) and the
  Kubernetes configuration, and say how to fix each.
- ``sandq serve``: the multi-tenant HTTP gateway (API keys, live output as Server-Sent Events,
  signed webhooks; ``docs/gateway.md``).
- ``sandq keys create|list|revoke``: the gateway's API keys, one tenant each.

``sandq --debug COMMAND`` (or ``SANDQ_DEBUG=1``) shows the traceback of any failure.

Exit codes (besides ``sandq run``'s status codes: 65, 70, 124, 125, 130, 137):

==== ==========================================================================================
0    success (``sandq run``: the program's own exit code)
1    ``doctor``: a required check failed; ``healthcheck``: no worker answered; a bug (traceback)
2    bad command line
66   an input file is missing or unreadable
69   Redis is unreachable (the URL is shown without its password)
71   the sandbox environment cannot be built or does not fit the settings (``SANDQ_BACKEND=gvisor``)
72   no Kubernetes configuration (``SANDQ_BACKEND=kubernetes``, ``janitor``)
73   an output file cannot be written
77   Redis refused the user or password
78   a ``SANDQ_`` setting is invalid, e.g. a malformed ``SANDQ_REDIS_URL`` (variable and rule named)
==== ==========================================================================================

Each of 66-78 prints two lines on stderr, the problem and the fix, without a traceback
(``sandq.cli.failures`` says how an expected failure is told from a bug).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from sandq.cli.batch import batch
from sandq.cli.errors import EXIT_CODES, stderr
from sandq.cli.failures import expected_failure
from sandq.cli.run import EPILOG, run
from sandq.cli.status import doctor, status
from sandq.cli.worker import healthcheck, janitor, worker
from sandq.gateway.cli import keys_app, serve


class CleanErrors(TyperGroup):
    """The one place where expected failures are caught: shown without a traceback unless ``--debug``."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        """Run the command; print an expected failure as its problem and fix, and exit with its code."""
        try:
            return super().invoke(ctx)
        except Exception as error:
            failure = expected_failure(error)
            if failure is None:
                raise  # a bug: its traceback
            if ctx.params.get("debug"):
                stderr.print_exception()
            else:
                failure.show()
            raise typer.Exit(failure.code) from None


app = typer.Typer(
    cls=CleanErrors,
    help="Run untrusted code in gVisor sandboxes through a Redis queue.",
    epilog="\n".join(["Exit codes:", *(f"{code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())]),
    no_args_is_help=True,
)


@app.callback()
def options(
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="SANDQ_DEBUG", help="Show the traceback of every failure."),
    ] = False,
) -> None:
    """The options of ``sandq`` itself, given before the command (``CleanErrors`` reads ``--debug``)."""


app.command(epilog=EPILOG)(run)
app.command()(batch)
app.command()(status)
app.command()(worker)
app.command()(healthcheck)
app.command()(janitor)
app.command()(doctor)
app.command()(serve)  # the gateway's (sandq.gateway.cli)
app.add_typer(keys_app, name="keys")

__all__ = ["app"]
