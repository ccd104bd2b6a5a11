#!/usr/bin/env python3
"""Streams a completion from a bitrack server and prints it as it arrives.

    python3 example.py --addr 127.0.0.1:5555 --max-tokens 64 "The capital of France is"
"""

import argparse
import sys

from bitrack_client import BitrackError, Client


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prompt")
    ap.add_argument("--addr", default="127.0.0.1:5555")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, help="default: the protocol's (0, greedy)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    options = {}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.seed is not None:
        options["seed"] = args.seed
    with Client(args.addr, timeout=args.timeout) as client:
        try:
            print("server:", client.health(), file=sys.stderr)
            for ev in client.generate(prompt=args.prompt, max_tokens=args.max_tokens, **options):
                if ev["type"] == "token":
                    sys.stdout.write(ev["text"])
                    sys.stdout.flush()
                else:
                    t = ev["timings"]
                    print(
                        "\n[%s: %d prompt + %d completion tokens, first token %.0f ms, %.1f tok/s]"
                        % (
                            ev["finish_reason"],
                            ev["usage"]["prompt_tokens"],
                            ev["usage"]["completion_tokens"],
                            t["ttft_ms"],
                            t["tokens_per_s"],
                        ),
                        file=sys.stderr,
                    )
        except BitrackError as e:
            print("error:", e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
