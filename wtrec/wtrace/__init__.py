"""The .wtrace format's internals; import the public names from wtrec.format."""
