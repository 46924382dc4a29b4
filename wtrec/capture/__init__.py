"""The root side: loads the BPF program and turns kernel records into events.

probe.py is the only importer of bcc; preflight says what the machine
lacks (doctor checks it all and names each fix); kernel_records decodes
what the BPF program emits; fd_table, proc_fds and sockaddr name
descriptors; ordering restores time order; launch holds a `-- CMD` until
it is traced; compat32 spots 32-bit programs; output_file creates the
capture as the invoking user. tls_libraries (with elf_symbols) finds the
TLS entry points a process maps and tls_connections names the socket under
a TLS call: the groundwork of `record --tls`, not yet attached.
wtrec/record.py is the session that drives these.
"""
