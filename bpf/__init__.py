"""The BPF C sources, shipped as package data (wtrec.bpf) so installs find them."""
