"""`wtrec doctor`: each check with its fix; exit 0 only when record would work here."""

import json
from typing import Annotated

import typer

from wtrec.capture.doctor import FAIL, WARN, record_would_work, run_checks
from wtrec.cli.exits import reported_errors

EXIT_PROBLEMS = 1  # record would not work here; each problem was printed with its fix

_LABELS = {"ok": "ok  ", WARN: "warn", FAIL: "FAIL"}


def doctor(
    json_view: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Check that `wtrec record` can work here, each problem with its fix. Exit 0 if it can, 1 if not."""
    with reported_errors():
        checks = run_checks()
        works = record_would_work(checks)
        if json_view:
            print(json.dumps({"record_would_work": works,
                              "checks": [check.as_dict() for check in checks]},
                             ensure_ascii=True))
        else:
            for check in checks:
                print(f"{_LABELS.get(check.status, check.status)}  {check.name:<11} {check.detail}")
                if check.fix and check.status != "ok":
                    print(f"{'':17}fix: {check.fix}")
            problems = sum(check.status == FAIL for check in checks)
            print("record would work here" if works else
                  f"record would not work here: {problems} problem{'s' * (problems > 1)} "
                  "to fix (commands above)")
    if not works:
        raise typer.Exit(EXIT_PROBLEMS)
