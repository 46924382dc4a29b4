"""The rootless tools: pipelines over the records a capture holds, free of typer.

selection chooses records, fd_names names descriptors, render/grep/info
print, streams/pcapng/merge/redaction/provenance transform and write.
"""
