"""The ``switchd`` command line: every click command, on top of ``switch/`` and ``ledger/``.

The root group and the one place every command group is registered is
:mod:`cli.main`; the exit-code rule is :mod:`cli.exits`. Nothing in the
project imports this package (tests may): the daemon's request path runs
without click.
"""
