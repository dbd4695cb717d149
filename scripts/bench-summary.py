#!/usr/bin/env python3
"""Prints the one table of `make bench` from criterion's estimates and the perf tool's JSON."""
import io
import json
import math
import os
import platform
import sys
import zipfile

ROOT = os.path.join(os.path.dirname(__file__), "..")
CRIT = os.path.join(ROOT, "target", "criterion")
BENCH = os.path.join(ROOT, "target", "bench")

# List prices, us-east-1, from the AWS pricing pages as of 2025 (not re-checked from the
# build machine, which has no internet access): see docs/PERFORMANCE.md.
PRICE = {
    "api_gw_http_per_m": 1.00,          # HTTP API, per million requests
    "lambda_req_per_m": 0.20,           # per million invocations
    "lambda_arm_gb_s": 0.0000133334,    # arm64, per GB-second
    "kinesis_od_gb_in": 0.08,           # on-demand, per GB written (records rounded up to 1 KB)
    "kinesis_od_gb_out": 0.04,          # on-demand, per GB read (two consumers: store, forward)
    "ddb_od_wru_per_m": 0.625,          # on-demand, per million write request units
    "sqs_std_per_m": 0.40,              # standard queue, per million requests (64 KB chunks)
    "cw_logs_gb": 0.50,                 # log ingestion per GB
}


def estimate(group, bench):
    # criterion keeps "name/param" as nested folders, or with "_" when the name held the slash.
    for name in (bench, bench.replace("/", "_")):
        path = os.path.join(CRIT, group, name, "new", "estimates.json")
        try:
            with open(path) as f:
                return json.load(f)["median"]["point_estimate"] / 1000.0  # ns -> us
        except OSError:
            continue
    return None


def load(name):
    try:
        with open(os.path.join(BENCH, name)) as f:
            return json.load(f)
    except OSError:
        return {}


def zipped_bytes(function):
    """Size of the function's deployment zip (the binary as `bootstrap`, deflated, as `make build`)."""
    path = os.path.join(ROOT, "target", "release", function)
    try:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            z.write(path, "bootstrap")
        return len(buf.getvalue())
    except OSError:
        return 0


def line(*cols):
    print("  ".join(str(c) for c in cols))


print(f"Telemetry Services benchmarks on {platform.node()} ({os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()})")
print()
print("1. CPU per batch, beside its floor (criterion medians; ratio = floor time / code time, >= 1.00 means no slower than the floor)")
rows = [
    ("ingest 100 x 1 KiB (token+parse+validate+enrich+encode)", "ingest", "core", "floor_value_parse", 1.0),
    ("store 100 records -> write requests", "store", "core/100", "floor_value_parse/100", None),
    ("store 1000 records -> write requests", "store", "core/1000", "floor_value_parse/1000", None),
    ("forward 100 records, 50 routes -> batches", "forward", "core/100", "floor_value_parse/100", None),
    ("forward 1000 records, 50 routes -> batches", "forward", "core/1000", "floor_value_parse/1000", None),
    ("post-process 1000 stream records -> updates", "post-process", "core/1000", "floor_decode_event/1000", None),
]
print(f"   {'what':<56} {'code us':>9} {'floor us':>9} {'ratio':>6}  target")
for what, group, code, floor, target in rows:
    c, f = estimate(group, code), estimate(group, floor)
    if c is None or f is None:
        print(f"   {what:<56} (not measured)")
        continue
    ratio = f / c
    verdict = "" if target is None else ("met" if ratio >= target else f"MISSED (needs >= {target:.2f})")
    print(f"   {what:<56} {c:>9.1f} {f:>9.1f} {ratio:>6.2f}  {verdict}")

cold = load("lambda.json").get("cold_start", [])
print()
print("2. Cold start under a fake Runtime API against the emulator (medians; floor = hello-world lambda_runtime, same profile)")
floor = next((r for r in cold if r["function"] == "hello-lambda"), None)
if cold and floor:
    print(f"   {'function':<13} {'init ms':>8} {'x floor':>8} {'1st resp':>9} {'warm':>7} {'cold ovh':>9} {'x floor init':>13} {'peak RSS':>10} {'binary':>10} {'zipped':>9}")
    for r in cold:
        init_ratio = r["init_ms"] / floor["init_ms"]
        ovh_ratio = r["cold_overhead_ms"] / floor["init_ms"]
        rss = r.get("peak_rss_kib_largest_input") or 0
        flags = []
        if r["function"] != "hello-lambda":
            flags.append("init " + ("met" if init_ratio <= 1.5 else "MISSED"))
            if r["cold_overhead_ms"] < 0:
                # The warm answer took longer than the cold one: both are the emulator's time.
                flags.append("cold n/a (emulator-bound)")
            else:
                flags.append("cold " + ("met" if ovh_ratio <= 1.5 else "MISSED"))
            flags.append("RSS " + ("met" if rss < 64 * 1024 else "MISSED"))
        print(f"   {r['function']:<13} {r['init_ms']:>8.2f} {init_ratio:>8.2f} {r['first_response_ms']:>9.2f} {r['warm_ms']:>7.2f} {r['cold_overhead_ms']:>9.2f} {ovh_ratio:>13.2f} {rss/1024:>8.1f}MB {r['binary_bytes']/1e6:>8.1f}MB {zipped_bytes(r['function'])/1e6:>7.1f}MB  {' '.join(flags)}")
else:
    print("   (not measured)")

req = load("requests.json").get("requests")
print()
print("3. AWS requests for events through the local stack, beside the minimum for the batches as delivered")
if req:
    print(f"   {req['events']} events in {req['http_requests']} requests; {req['batches']['store']} store, {req['batches']['forward']} forward, {req['batches']['post_process']} post-process invocations")
    for r in req["rows"]:
        verdict = "met" if math.isclose(r["ratio"], 1.0) else "MISSED"
        print(f"   {r['function']:<13} {r['operation']:<26} actual {r['actual']:>7} minimum {r['minimum']:>7} ratio {r['ratio']:.2f}  {verdict}")
    pm = req["per_million_events"]
    kb = 2  # stored event ~1.3 KiB: 2 KB units for Kinesis and 2 WRU per item
    cost = {
        "API Gateway": pm["ingest_invocations"] * PRICE["api_gw_http_per_m"] / 1e6,
        "Lambda invocations": (pm["ingest_invocations"] + pm["store_invocations"] + pm["forward_invocations"] + pm["post_process_invocations"]) * PRICE["lambda_req_per_m"] / 1e6,
        "Kinesis in+out": 1e6 * kb / 1024 / 1024 * (PRICE["kinesis_od_gb_in"] + 2 * PRICE["kinesis_od_gb_out"]),
        "DynamoDB events (table+index)": 1e6 * 2 * kb * PRICE["ddb_od_wru_per_m"] / 1e6,
        "DynamoDB counts": (pm["UpdateItem"] + pm["GetItem"]) * PRICE["ddb_od_wru_per_m"] / 1e6,
        "SQS": pm["SendMessageBatch"] * PRICE["sqs_std_per_m"] / 1e6,
    }
    warm = {r["function"]: r["warm_ms"] for r in cold}
    if warm:
        gb_s = 0.25 * (
            pm["ingest_invocations"] * warm.get("ingest", 0)
            + pm["store_invocations"] * warm.get("store", 0)
            + pm["forward_invocations"] * warm.get("forward", 0)
            + pm["post_process_invocations"] * warm.get("post-process", 0)
        ) / 1000
        cost["Lambda compute (256 MB arm64, warm times above)"] = gb_s * PRICE["lambda_arm_gb_s"]
    print("   cost per million events at list prices (us-east-1, 2025), excluding fixed stream-hours and logs:")
    for k, v in cost.items():
        print(f"     {k:<50} ${v:8.3f}")
    print(f"     {'total':<50} ${sum(cost.values()):8.3f}")
else:
    print("   (not measured)")

units = load("units.json").get("units")
print()
print(f"4. DynamoDB units per event and post-process's ceiling per shard (simulated: real handlers, in-memory table, {units['rtt_ms'] if units else '?'} ms per call; docs/PERFORMANCE.md)")
if units:
    print(f"   {'scenario':<50} {'events':>8} {'per batch':>9} {'store':>6} {'counters':>8} {'markers':>8} {'metrics':>8} {'WRU/ev':>7} {'ms/batch':>9} {'rec/s/shard':>11} {'$/day at 100M':>13}")
    for s in units["scenarios"]:
        f = s["figures"]
        per_day = s["total_wru"] * 100e6 * PRICE["ddb_od_wru_per_m"] / 1e6
        ms = f["round_trip_ms_per_batch"] + f["cpu_ms_per_batch"]
        print(f"   {f['name']:<50} {f['events']:>8} {f['records_per_batch']:>9.1f} {f['store_wru']:>6.2f} {f['counter_wru']:>8.2f} {f['marker_wru']:>8.2f} {f['metric_wru']:>8.3f} {s['total_wru']:>7.2f} {ms:>9.1f} {f['ceiling_per_shard']:>11.0f} {per_day:>13.2f}")
    print("   reads: definitions scan per event " + ", ".join(f"{s['figures']['definition_rru']:.5f}" for s in units["scenarios"]) + " RRU; the API's reads are per request, not per event")
else:
    print("   (not measured)")
