"""Starts `wss.train` on several hosts with MultiWorkerMirroredStrategy and a TF_CONFIG each.

Run the same command on every host, each with its own `--index` (0 is the chief, which writes
the checkpoints, the config and the evaluation):

    python launch/multi_worker.py --hosts=h0:12345,h1:12345 --index=0 -- \\
        --gin_file=voc_semi.gin --logdir=gs://bucket/voc_1_16
    python launch/multi_worker.py --hosts=h0:12345,h1:12345 --index=1 -- \\
        --gin_file=voc_semi.gin --logdir=gs://bucket/voc_1_16

Everything after `--` is passed to `python -m wss.train`; `--strategy=multi_worker` is added.
The process replaces itself with the training process (`exec`), so a scheduler's signals
(SIGTERM: save a checkpoint and stop) reach the trainer directly. `--print_commands` prints one
shell command per host instead (for ssh, a cluster scheduler or a notebook), with its
`TF_CONFIG`. The log directory must be shared by all hosts (GCS, NFS): non-chief workers write
their temporary checkpoints under `LOGDIR/.worker_worker_<i>` and remove them at the end.

This script imports nothing but the standard library.
"""

import argparse
import json
import os
import shlex
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_hosts(text):
    """Parses `--hosts=h0:port,h1:port` into a list of `host:port` strings.

    Raises:
      ValueError: naming `--hosts` when an entry is not `host:port` with a numeric port, or a
        host:port appears twice.
    """
    hosts = [h.strip() for h in (text or "").split(",")]
    if not text or not all(hosts):
        raise ValueError(f"--hosts={text!r}: expected a comma-separated list of host:port, "
                         "e.g. --hosts=10.0.0.1:12345,10.0.0.2:12345")
    for host in hosts:
        name, sep, port = host.rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--hosts: {host!r} is not host:port with a port in 1..65535")
    duplicates = sorted({h for h in hosts if hosts.count(h) > 1})
    if duplicates:
        raise ValueError(f"--hosts lists {', '.join(duplicates)} more than once")
    return hosts


def tf_config(hosts, index):
    """The `TF_CONFIG` JSON string of worker `index` in a cluster of `hosts` (worker 0 = chief).

    Raises:
      ValueError: naming `--index` when it is outside `0..len(hosts)-1`.
    """
    if not 0 <= index < len(hosts):
        raise ValueError(f"--index={index} is outside 0..{len(hosts) - 1} for {len(hosts)} "
                         "--hosts")
    return json.dumps({"cluster": {"worker": list(hosts)},
                       "task": {"type": "worker", "index": index}}, separators=(",", ":"))


def train_command(python, train_args):
    """The `python -m wss.train ... --strategy=multi_worker` argument list.

    Raises:
      ValueError: when the training arguments name another `--strategy`.
    """
    args = list(train_args)
    for arg in args:
        if arg.startswith("--strategy") and arg not in ("--strategy=multi_worker",):
            raise ValueError(f"training argument {arg!r}: launch/multi_worker.py always uses "
                             "--strategy=multi_worker; remove it")
    if "--strategy=multi_worker" not in args:
        args.append("--strategy=multi_worker")
    return [python, "-m", "wss.train", *args]


def worker_environment(config, base=None):
    """`base` (default `os.environ`) with `TF_CONFIG` set and the repository importable."""
    env = dict(os.environ if base is None else base)
    env["TF_CONFIG"] = config
    if os.path.isdir(os.path.join(REPO, "wss")):
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if REPO not in paths:
            env["PYTHONPATH"] = os.pathsep.join([REPO, *paths])
    return env


def shell_command(config, command):
    """One shell line: `TF_CONFIG='...' python -m wss.train ...`."""
    return f"TF_CONFIG={shlex.quote(config)} " + " ".join(shlex.quote(c) for c in command)


def parse_args(argv):
    """Splits `argv` at `--` and parses this launcher's own flags."""
    argv = list(argv)
    train_args = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s --hosts=H0:PORT,H1:PORT,... (--index=I | --print_commands) "
              "-- WSS_TRAIN_ARGS...")
    parser.add_argument("--hosts", required=True,
                        help="Comma-separated host:port of every worker, the chief first.")
    parser.add_argument("--index", type=int, default=None,
                        help="This host's position in --hosts (0 = chief).")
    parser.add_argument("--print_commands", action="store_true",
                        help="Print the command of every worker instead of starting one.")
    parser.add_argument("--python", default=sys.executable,
                        help="Python interpreter that runs wss.train (default: this one).")
    args = parser.parse_args(argv)
    if args.index is None and not args.print_commands:
        parser.error("give --index=I (this host's position in --hosts) or --print_commands")
    if not train_args:
        parser.error("no training arguments: add `-- --gin_file=NAME.gin --logdir=DIR ...`")
    try:
        args.hosts = parse_hosts(args.hosts)
        if args.index is not None:
            tf_config(args.hosts, args.index)
        args.command = train_command(args.python, train_args)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.print_commands:
        for index, host in enumerate(args.hosts):
            print(f"# worker {index}{' (chief)' if index == 0 else ''} on {host}")
            print(shell_command(tf_config(args.hosts, index), args.command))
        return 0
    config = tf_config(args.hosts, args.index)
    print(f"worker {args.index} of {len(args.hosts)}: TF_CONFIG={config}", flush=True)
    os.execvpe(args.command[0], args.command, worker_environment(config))
    return 1  # Not reached.


if __name__ == "__main__":
    sys.exit(main())
