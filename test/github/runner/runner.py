"""Stand-in for the GitHub Actions runner, JIT mode: ./run.sh --jitconfig <base64>.

Like the real runner (actions/runner Runner.cs, jitconfig branch) it decodes the config, a base64 JSON map of
file name to base64 content, writes those files (.runner, .credentials, ...) beside itself and connects. It
then claims ONE job from the GitHub stand-in with the credential in it, prints the job's steps, reports the
job done and exits, removing its local config (ephemeral). The claim protocol is the stand-in's own.
"""
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

args = sys.argv[1:]
cfg = args[args.index("--jitconfig") + 1] if "--jitconfig" in args else os.environ.pop("ACTIONS_RUNNER_INPUT_JITCONFIG", "")
if not cfg:
    print("An error occurred: this runner stand-in only runs with --jitconfig")
    sys.exit(1)
files = json.loads(base64.b64decode(cfg))
old = os.umask(0o077)
for name, content in files.items():
    with open(name, "wb") as f:
        f.write(base64.b64decode(content))
os.umask(old)
runner = json.loads(base64.b64decode(files[".runner"]))
token = json.loads(base64.b64decode(files[".credentials"]))["Data"]["token"]
server = runner["ServerUrl"]


def call(path, body=None):
    req = urllib.request.Request(
        server + path,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def stamp():
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())


print(f"Runner {runner['AgentName']} (id {runner['AgentId']}), ephemeral")
print(f"√ Connected to GitHub\n{stamp()}: Listening for Jobs")
while True:
    try:
        status, data = call("/_runner/acquire")
    except urllib.error.HTTPError as e:
        print(f"{stamp()}: the runner registration is gone ({e.code}); exiting")
        sys.exit(1)
    if status == 200:
        break
    time.sleep(0.3)
job = json.loads(data)
print(f"{stamp()}: Running job: {job['name']} ({job['repository']}, job {job['id']})")
for i, step in enumerate(job["steps"], 1):
    print(f"  step {i}: {step}")
call("/_runner/complete", {"job": job["id"], "conclusion": "success"})
print(f"{stamp()}: Job {job['name']} completed with result: Succeeded")
for name in files:
    os.remove(name)
