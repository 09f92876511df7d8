#!/usr/bin/python3
"""The guest's gcqsub, gcqstat, gcqdel, gcqselect, gcqhold, gcqrls, gcqalter, gctracejob, gcseff, gcqpeek, gcqexec and gc: thin clients of gcd.

Also installed as the PBS names qsub, qstat, qdel, qselect, qhold, qrls, qalter, qsig, qrerun
and qmove (same tools).

/usr/local/bin/<tool> is a symlink to this file; the tool is the name it was called by.
Exit status: the command's, 3 if gcd cannot be reached, 2 for a local usage problem.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import copper  # noqa: E402

PBS_NAMES = {"qsub": "gcqsub", "qstat": "gcqstat", "qdel": "gcqdel", "qselect": "gcqselect",
             "qhold": "gcqhold", "qrls": "gcqrls", "qalter": "gcqalter", "qsig": "gcqsig",
             "qrerun": "gcqrerun", "qmove": "gcqmove", "pbsnodes": "gcpbsnodes"}


def _renamed(stderr, called, tool):
    """Messages start with the name called (qstat: ...) when a PBS name ran the tool."""
    if called == tool:
        return stderr
    return "".join(called + line[len(tool):] if line.startswith(tool + ":") else line
                   for line in stderr.splitlines(True))


def main():
    called = os.path.basename(sys.argv[0])
    # The PBS names (qsub, qstat, ...) run Copper's tools of the same name with "gc" in front;
    # their messages then start with the name called ("qstat: Unknown Job Id ..."), as PBS's do.
    tool = PBS_NAMES.get(called, called)
    if tool.endswith(".py"):
        print("%s: call it as gcqsub, gcqstat, ... (a symlink to this file)" % tool, file=sys.stderr)
        return 2

    def write(out, err):
        # As it comes: gcqpeek -f prints a running job's output round by round.
        if out:
            sys.stdout.write(out)
            sys.stdout.flush()
        if err:
            sys.stderr.write(_renamed(err, called, tool))
            sys.stderr.flush()

    try:
        result = copper.call(tool, sys.argv[1:], on_output=write, terminal=copper.terminal_size())
    except copper.Unreachable as e:
        reason = " ".join(str(e).split()) or type(e).__name__  # always one line
        print("%s: cannot reach gcd at %s:%d: %s" % (called, copper.API_HOST, copper.API_PORT, reason), file=sys.stderr)
        return 3
    except copper.CopperError as e:
        print("%s: %s" % (called, e), file=sys.stderr)
        status = e.status or 0
        return 3 if status == 503 else 2 if 400 <= status < 500 else 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(_renamed(result.stderr, called, tool))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
