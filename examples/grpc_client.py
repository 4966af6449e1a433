#!/usr/bin/env python3
"""Overlord gRPC client in Python: stubs generated from proto/ at start, no generated code kept.

    pip install grpcio grpcio-tools
    python3 examples/grpc_client.py --coordinator 127.0.0.1:50051 --target 127.0.0.1 --ports 22,80

Submits a job (JobService.SubmitJob), watches it (WatchJob) until the first finding, hangs up and
resumes the watch after that finding's cursor (what a client does after a disconnect), pages the
stored results (ListResults) and searches the query index for the job (QueryService.Search,
`job:<id>`). Exits non-zero when the watch and the results disagree (a finding lost or repeated).
With a coordinator that requires tokens, set OVERLORD_TOKEN; it is sent as
`authorization: Bearer <token>`.
"""
import argparse
import importlib
import os
import pathlib
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parent.parent / "proto"
FILES = ["overlord/v1/common.proto", "overlord/v1/job.proto", "overlord/v1/query.proto"]


def generate(out: str):
    """Runs protoc (grpcio-tools) on proto/ into `out` and imports the modules."""
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}",
            f"--python_out={out}", f"--grpc_python_out={out}"] + FILES
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO_ROOT}")
    sys.path.insert(0, out)
    job = importlib.import_module("overlord.v1.job_pb2")
    job_grpc = importlib.import_module("overlord.v1.job_pb2_grpc")
    query = importlib.import_module("overlord.v1.query_pb2")
    query_grpc = importlib.import_module("overlord.v1.query_pb2_grpc")
    return job, job_grpc, query, query_grpc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--coordinator", default=os.environ.get("OVERLORD_COORDINATOR", "127.0.0.1:50051"),
                   help="host:port (an http:// prefix is accepted)")
    p.add_argument("--target", action="append", dest="targets")
    p.add_argument("--ports", default="22,80,443")
    p.add_argument("--modules", default="portscan")
    p.add_argument("--page", type=int, default=2, help="findings per ListResults / rows per Search page")
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()
    addr = a.coordinator.removeprefix("http://")
    token = os.environ.get("OVERLORD_TOKEN", "").strip()
    meta = [("authorization", f"Bearer {token}")] if token else []
    deadline = time.monotonic() + a.timeout

    with tempfile.TemporaryDirectory(prefix="overlord-stubs-") as out:
        job, job_grpc, query, query_grpc = generate(out)
        ch = grpc.insecure_channel(addr)
        jobs = job_grpc.JobServiceStub(ch)
        search = query_grpc.QueryServiceStub(ch)

        # 1. Submit (the request id makes a retried submission return the same job).
        spec = job.JobSpec(name="python grpc client example", targets=a.targets or ["127.0.0.1"],
                           ports=a.ports, modules=a.modules.split(","))
        r = jobs.SubmitJob(job.SubmitJobRequest(spec=spec, request_id=f"py-{os.getpid()}-{time.time_ns()}"),
                           metadata=meta, timeout=30)
        job_id = r.job_id
        print(f"submitted job {job_id}", flush=True)

        def left():
            return max(0.1, deadline - time.monotonic())

        # 2. Watch until the first finding, then hang up.
        watched, final = [], None
        call = jobs.WatchJob(job.WatchJobRequest(job_id=job_id, after_cursor=0), metadata=meta, timeout=left())
        for ev in call:
            kind = ev.WhichOneof("event")
            if kind == "finding":
                f = ev.finding
                print(f"watch: cursor {f.cursor} {f.kind} {f.target}:{f.port}", flush=True)
                watched.append(f.cursor)
                break
            if kind == "finished":
                final = ev.finished
                break
        call.cancel()
        resumed_after = watched[-1] if watched else 0

        # 3. Resume from the last cursor seen.
        if final is None:
            print(f"disconnected; resuming the watch after cursor {resumed_after}", flush=True)
            for ev in jobs.WatchJob(job.WatchJobRequest(job_id=job_id, after_cursor=resumed_after),
                                    metadata=meta, timeout=left()):
                kind = ev.WhichOneof("event")
                if kind == "finding":
                    f = ev.finding
                    print(f"watch: cursor {f.cursor} {f.kind} {f.target}:{f.port}", flush=True)
                    if watched and f.cursor <= watched[-1]:
                        print(f"cursor {f.cursor} came again after the resume", file=sys.stderr)
                        return 1
                    watched.append(f.cursor)
                elif kind == "finished":
                    final = ev.finished
                    break
        if final is None:
            print("the watch ended without the job's final status", file=sys.stderr)
            return 1
        state = job.JobState.Name(final.state).removeprefix("JOB_STATE_").lower()
        print(f"finished: {state} tasks {final.tasks_done}/{final.tasks_total} done, "
              f"{final.tasks_failed} failed, findings {final.findings}", flush=True)

        # 4. Page the stored results.
        results, pages, after = [], 0, 0
        while True:
            page = jobs.ListResults(job.ListResultsRequest(job_id=job_id, after_cursor=after, limit=a.page),
                                    metadata=meta, timeout=30)
            pages += 1
            results += [f.cursor for f in page.findings]
            if page.next_cursor == 0:
                break
            after = page.next_cursor
        print(f"results: {len(results)} findings in {pages} pages of {a.page}", flush=True)
        if results != watched:
            print(f"the watch saw cursors {watched}, the results hold {results}", file=sys.stderr)
            return 1

        # 5. Search the index (it follows the store with a small, reported lag).
        q = f"job:{job_id}"
        while True:
            rows, spages, after, lag = [], 0, "", 0
            while True:
                sr = search.Search(query.SearchRequest(query=q, view=query.SEARCH_VIEW_SERVICES,
                                                       limit=a.page, after=after),
                                   metadata=meta, timeout=30)
                spages += 1
                lag = sr.lag.findings
                rows += [f"{s.ip}:{s.port}" for s in sr.services]
                if not sr.next_after:
                    break
                after = sr.next_after
            if lag == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        print(f"search {q}: {len(rows)} services in {spages} pages: {' '.join(rows)}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
