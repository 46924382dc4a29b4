"""The rootless tools: pipelines over the records a capture holds, free of typer.

selection chooses records, fd_names names descriptors, render/grep/info
print, streams/pcapng/parquet/merge/redaction/provenance transform and
write; conversations (with conversation_views) pairs and follows
connections, and protocols/ decodes HTTP/1, HTTP/2, Redis and Postgres.
"""
