"""boto3 against obstore (a Rust-backed client) on the real S3 server, for what ferry's S3 view does most:
many small GETs (links, manifests, small blobs) and listings.  ``FERRY_BENCH_ONLY=s3clients make bench``."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.s3 import s3_server

N = 3000
JOBS = 32


def run() -> dict[str, float]:
    import boto3
    import botocore.config

    out: dict[str, float] = {"objects": N, "object_bytes": 1500, "concurrency": JOBS}
    with s3_server() as s3:
        c = s3.client()
        c.create_bucket(Bucket="micro")
        data = os.urandom(1500)
        with ThreadPoolExecutor(JOBS) as p:
            list(p.map(lambda i: c.put_object(Bucket="micro", Key=f"k/{i}", Body=data), range(N)))
        cl = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name=s3.region,
            config=botocore.config.Config(max_pool_connections=JOBS),
        )
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            with ThreadPoolExecutor(JOBS) as p:
                list(p.map(lambda i: cl.get_object(Bucket="micro", Key=f"k/{i}")["Body"].read(), range(N)))
            best = max(best, N / (time.perf_counter() - t))
        out["boto3_get_per_s"] = round(best)
        t = time.perf_counter()
        pages = cl.get_paginator("list_objects_v2").paginate(Bucket="micro", Prefix="k/")
        assert sum(len(pg.get("Contents", [])) for pg in pages) == N
        out["boto3_list_s"] = round(time.perf_counter() - t, 3)
        try:
            import obstore as obs
            from obstore.store import S3Store
        except ImportError:
            return out
        st = S3Store(
            "micro",
            endpoint=s3.endpoint,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
            region=s3.region,
            client_options={"allow_http": True},
            virtual_hosted_style_request=False,
        )

        async def all_gets() -> None:
            sem = asyncio.Semaphore(JOBS)

            async def one(i: int) -> bytes:
                async with sem:
                    r = await obs.get_async(st, f"k/{i}")
                    return bytes(await r.bytes_async())

            await asyncio.gather(*(one(i) for i in range(N)))

        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            asyncio.run(all_gets())
            best = max(best, N / (time.perf_counter() - t))
        out["obstore_get_per_s"] = round(best)
        t = time.perf_counter()
        assert sum(len(batch) for batch in obs.list(st, prefix="k/")) == N
        out["obstore_list_s"] = round(time.perf_counter() - t, 3)
    return out


if __name__ == "__main__":
    print(run())
