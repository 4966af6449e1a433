#!/usr/bin/env python3
"""Overlord firehose consumer (docs/FIREHOSE.md) with nats-py.

    pip install nats-py
    python3 examples/firehose_consumer.py --url nats://127.0.0.1:4222 --stream OVERLORD \
        --subject 'overlord.findings.screenshot'

Prints one line per finding: `<job>:<cursor> <subject> <finding JSON>`. A durable pull consumer
(one per subject filter) acknowledges each finding after handling it, so a restarted consumer
goes on where it stopped. JetStream delivers at least once to consumers: use the message id
`<job>:<cursor>` as the finding's key where you store it.
"""
import argparse
import asyncio
import json
import sys

import nats
from nats.errors import TimeoutError as NatsTimeout


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="nats://127.0.0.1:4222")
    p.add_argument("--stream", required=True)
    p.add_argument("--subject", default="overlord.findings.>")
    p.add_argument("--max", type=int, default=0, help="stop after N findings (0 = never)")
    p.add_argument("--idle", type=float, default=5.0, help="stop after this many idle seconds")
    a = p.parse_args()
    nc = await nats.connect(a.url)
    js = nc.jetstream()
    durable = "py-" + a.subject.replace(".", "_").replace("*", "_").replace(">", "_")
    sub = await js.pull_subscribe(a.subject, durable=durable, stream=a.stream)
    n = 0
    try:
        while a.max == 0 or n < a.max:
            want = 256 if a.max == 0 else min(256, a.max - n)
            try:
                msgs = await sub.fetch(want, timeout=a.idle)
            except NatsTimeout:
                break
            for m in msgs:
                finding = json.loads(m.data)
                msg_id = (m.headers or {}).get("Nats-Msg-Id", "")
                print(msg_id, m.subject, json.dumps(finding, separators=(",", ":")), flush=True)
                await m.ack()
                n += 1
    finally:
        await nc.close()
    print(f"{n} findings", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
