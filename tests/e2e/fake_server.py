"""A stand-in for ``vllm serve`` for the lifecycle tests: ``/health``, children, faults.

    python fake_server.py --port P [--delay S] [--exit-after S] [--ignore-sigterm] [--escape]

It logs a vLLM-style engine-config line, starts a child that starts a grandchild
(like vLLM's EngineCore and Worker), and answers ``GET /health`` with 200 once
``--delay`` seconds have passed. ``--ignore-sigterm``: every process of it
ignores SIGTERM (teardown must escalate to SIGKILL). ``--escape``: one more
child calls ``setsid`` and so leaves the process group.
"""

import argparse
import http.server
import signal
import subprocess
import sys
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--delay", type=float, default=0.0)
p.add_argument("--exit-after", type=float, default=None)
p.add_argument("--ignore-sigterm", action="store_true")
p.add_argument("--escape", action="store_true")
args = p.parse_args()

if args.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("fake server starting", flush=True)
print(
    "(EngineCore pid=1) INFO [core.py:133] Initializing a V1 LLM engine (v0.0.0) with config: model='fake', "
    "compilation_config={'mode': <CompilationMode.NONE: 0>, 'custom_ops': ['+rms_norm', 'none'], "
    "'pass_config': {'fuse_norm_quant': True}, 'dynamic_shapes_config': {'type': <DynamicShapesType.BACKED: 'backed'>}}, "
    "kernel_config=KernelConfig(x=1)",
    flush=True,
)
ign = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if args.ignore_sigterm else ""
grandchild = f"{ign}import time; time.sleep(3600)"
child = (f"{ign}import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); "
         "time.sleep(3600)")
subprocess.Popen([sys.executable, "-c", child])
if args.escape:
    subprocess.Popen([sys.executable, "-c", grandchild], start_new_session=True)

t0 = time.monotonic()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        ok = self.path == "/health" and time.monotonic() - t0 >= args.delay
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *a):
        pass


server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
if args.exit_after is not None:
    time.sleep(args.exit_after)
    print("fake server: exiting on purpose", flush=True)
    sys.exit(3)
while True:
    time.sleep(1)
