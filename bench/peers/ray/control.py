"""Ray Serve on a running cluster, for bench/coldstart.py's scale-from-zero runs.

Connects to the cluster (`ray start --head` by the benchmark), starts Serve's HTTP proxy on
127.0.0.1:<http-port> and deploys `echo` and `embed` with autoscaling from 0 to 1 replica, then
answers commands on stdin, one reply line each on stdout:

  ping          ok
  zero <app>    ok, once the app has zero replicas ("ok redeployed" if the autoscaler did not
                get there in time and the app was deployed again at zero, ray#59076)
  quit          ok, after serve.shutdown()
"""

import argparse
import sys
import time

import ray
from app import Echo, Embed
from ray import serve

# min_replicas 0 as Ray's autoscaling guide shows for scale to zero; quick scale-down so the
# benchmark does not wait 10 minutes (downscale_delay_s defaults to 600 s) between runs.
AUTOSCALING = {
    "min_replicas": 0,
    "initial_replicas": 0,
    "max_replicas": 1,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0,
    "downscale_delay_s": 1,
    "downscale_to_zero_delay_s": 1,
    "look_back_period_s": 2,
}
APPS = {"echo": Echo, "embed": Embed}
ZERO_TIMEOUT_S = 90


def deploy(name: str) -> None:
    app = APPS[name].options(autoscaling_config=AUTOSCALING).bind()
    serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)


def replicas(name: str) -> int | None:
    status = serve.status().applications.get(name)
    if status is None or status.status != "RUNNING":
        return None
    return sum(sum(d.replica_states.values()) for d in status.deployments.values())


def wait_zero(name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replicas(name) == 0:
            return True
        time.sleep(0.1)
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    ray.init(address=args.address, namespace="bench", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.http_port})
    for name in APPS:
        deploy(name)
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        try:
            if command == "ping":
                reply = "ok"
            elif command == "zero":
                reply = "ok"
                if not wait_zero(name, ZERO_TIMEOUT_S):
                    serve.delete(name)
                    deploy(name)
                    if not wait_zero(name, ZERO_TIMEOUT_S):
                        raise RuntimeError(f"{name} not at zero replicas after redeploying")
                    reply = "ok redeployed"
            elif command == "quit":
                serve.shutdown()
                print("ok", flush=True)
                return
            else:
                reply = f"error: unknown command {command!r}"
        except Exception as exc:
            reply = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
        print(reply, flush=True)


if __name__ == "__main__":
    main()
