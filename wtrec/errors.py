"""The one exception tree of wtrec; each error knows its exit code and message.

The CLI turns any WtrecError into a one-line `wtrec: ...` message on stderr
and exits with `exit_code`; the codes are documented in README.md.
"""


class WtrecError(Exception):
    """Root of every error wtrec reports to a user."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(WtrecError):
    """An option value or combination the command cannot accept."""

    exit_code = 2


class SetupError(WtrecError):
    """This machine lacks something recording needs; `wtrec doctor` checks it all."""

    def __init__(self, message: str):
        super().__init__(f"{message} (`wtrec doctor` checks the whole set-up)")


class NotPrivilegedError(SetupError):
    """Recording needs root or CAP_BPF+CAP_PERFMON."""

    exit_code = 3


class BccMissingError(SetupError):
    """The bcc Python module cannot be imported."""

    exit_code = 4


class KernelHeadersMissingError(SetupError):
    """bcc needs kernel headers at /lib/modules/RELEASE/build."""

    exit_code = 5


class TracefsUnavailableError(SetupError):
    """The syscall tracepoints cannot be found or mounted."""

    exit_code = 6


class OutputError(WtrecError):
    """The output cannot be created or written."""

    exit_code = 7


class ProbeError(WtrecError):
    """Compiling, loading or attaching the BPF program failed."""

    exit_code = 8


class InputError(WtrecError):
    """An input file cannot be opened or read."""

    exit_code = 9


class FormatError(WtrecError):
    """A capture is damaged or is not a wtrace capture at all."""

    exit_code = 10

    def __init__(self, reason: str, offset: int | None = None):
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"not a valid capture{where}: {reason}")
        self.reason = reason
        self.offset = offset


class NewerFormatError(WtrecError):
    """A capture written by a newer, incompatible wtrec."""

    exit_code = 11

    def __init__(self, major: int, minor: int, supported_major: int):
        super().__init__(
            f"this capture is format {major}.{minor}; this wtrec reads format "
            f"{supported_major}.x only, a newer wtrec is needed to read it"
        )
        self.major = major
        self.minor = minor


class MissingExtraError(WtrecError, ImportError):
    """An optional library (pyarrow, pandas) is needed and not installed."""

    exit_code = 12

    def __init__(self, module: str, extra: str):
        WtrecError.__init__(self, f"this needs {module}, which is not installed: "
                                  f"pip install 'wtrec[{extra}]'")
        self.module = module
        self.extra = extra
