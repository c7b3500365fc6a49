"""Starting a room of machines from one: ``python -m launcher up|status|down``.

From one machine and a cluster file, the launcher logs in to every host the file
names over SSH (key authentication only, host keys checked against known_hosts, as
the scp transfer does), starts the introducer and then every node detached, each
with a log file and a pid file named after it, waits until each node answers and is
a member, and reports which came up; ``status`` says which run, ``down`` stops them.

* :mod:`launcher.plan` - pure: which process runs where with which command line,
  the remote paths, and the reports (tables and JSON).
* :mod:`launcher.remote` - a small standard-library script that each host's Python
  runs (sent over the SSH channel): start, look at and stop processes by pid file.
* :mod:`launcher.ssh` - the paramiko shell: log in, upload, run the remote script.
* :mod:`launcher.__main__` - the command line and the waiting.
"""
