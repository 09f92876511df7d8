#!/usr/bin/python3
"""The guest's gcqsub, gcqstat, gcqdel, gcqhold, gcqrls, gcqalter, gcqpeek, gcqexec and gc: thin clients of gcd.

/usr/local/bin/<tool> is a symlink to this file; the tool is the name it was called by.
Exit status: the command's, 3 if gcd cannot be reached, 2 for a local usage problem.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import copper  # noqa: E402


def _write(out, err):
    # As it comes: gcqpeek -f prints a running job's output round by round.
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()


def main():
    tool = os.path.basename(sys.argv[0])
    if tool.endswith(".py"):
        print("%s: call it as gcqsub, gcqstat, ... (a symlink to this file)" % tool, file=sys.stderr)
        return 2
    try:
        result = copper.call(tool, sys.argv[1:], on_output=_write, terminal=copper.terminal_size())
    except copper.Unreachable as e:
        reason = " ".join(str(e).split()) or type(e).__name__  # always one line
        print("%s: cannot reach gcd at %s:%d: %s" % (tool, copper.API_HOST, copper.API_PORT, reason), file=sys.stderr)
        return 3
    except copper.CopperError as e:
        print("%s: %s" % (tool, e), file=sys.stderr)
        status = e.status or 0
        return 3 if status == 503 else 2 if 400 <= status < 500 else 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
