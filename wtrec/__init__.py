"""wtrec: record the plaintext a process writes to the kernel, study it offline.

As a library: `cap = wtrec.open("run.wtrace")`, then `cap.header`,
`cap.events(pid=..., comm=..., fd=..., direction=...)`, `cap.records()`,
`cap.to_arrow()`, `cap.to_pandas()` (see wtrec.api). Importing wtrec loads
neither the command line nor bcc.
"""

__version__ = "0.1.0"

from wtrec.api import Capture, Event, TruncatedCaptureWarning, open

__all__ = ["Capture", "Event", "TruncatedCaptureWarning", "__version__", "open"]
