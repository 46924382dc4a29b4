"""The root side: loads the BPF program and turns kernel records into events.

probe.py is the only importer of bcc; preflight says what the machine
lacks; kernel_records decodes what the BPF program emits; fd_table,
proc_fds and sockaddr name descriptors; ordering restores time order;
launch holds a `-- CMD` until it is traced; compat32 spots 32-bit programs.
wtrec/record.py is the session that drives these.
"""
