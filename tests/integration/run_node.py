"""Runs the official OpenAI Node client against semgate: starts the mock
upstream and semgate, then `node SCRIPT` with SEMGATE_URL=http://HOST:PORT/v1.

Usage: run_node.py [tests/node/openai_client.test.mjs]
Needs `npm install` in tests/node (the project's setup script does it).
Exits with node's status (1 if anything else fails)."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SCRIPT = os.path.join(HERE, "..", "node", "openai_client.test.mjs")


def main():
    script = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SCRIPT)
    node_dir = os.path.dirname(script)
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "openai")):
        print("FAIL openai_npm_client: the openai package is not installed; run\n"
              "  cd %s && npm install --no-audit --no-fund" % node_dir)
        return 1
    rc = 1
    try:
        mock, sg = h.start("--quiet", "--stream-chunks", "6", "--embed-dim", "8")
        env = dict(os.environ)
        env["SEMGATE_URL"] = "http://%s:%d/v1" % (sg.host, sg.port)
        env["SEMGATE_MODEL"] = h.MODEL
        p = subprocess.run(["node", script], cwd=node_dir, env=env, timeout=240)
        rc = p.returncode
        if rc != 0:
            print("node exited with %d; semgate log:\n%s" % (rc, sg.log()))
        elif sg.proc.poll() is not None:
            print("semgate died during the node test; log:\n%s" % sg.log())
            rc = 1
    except Exception as e:
        print("FAIL openai_npm_client: %r" % (e,))
        rc = 1
    finally:
        h.cleanup_all()
    print("%s openai_npm_client" % ("PASS" if rc == 0 else "FAIL"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
