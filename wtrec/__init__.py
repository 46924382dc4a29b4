"""wtrec: record the plaintext a process writes to the kernel, study it offline."""

__version__ = "0.1.0"
