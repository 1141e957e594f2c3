#!/usr/bin/env python3
"""Write the intake seed corpus (fuzz/corpus/intake/seed-*).

An intake input is what `arbitrary` reads, in field order (fuzz_targets/intake.rs):
  subject        u32 enum tag (6 variants)
  headers        3 x (bool byte; if set: name u32 tag (7), value u32 tag (8) [+ 2 bytes])
  max_payload    u32 tag (2) [+ 1 byte for Tiny]
  min_payload    u8
  allowlist      u32 tag (3)
  payload        every byte that is left
An enum tag t selects variant (t * n) >> 32; integers are little-endian. Run from fuzz/:
  python3 make_seeds.py
Not written here: corpus/intake/seed-found-* and corpus/router/seed-found-*, inputs the
fuzzer found, kept after `cargo fuzz cmin` (docs/FUZZING.md says how they were chosen).
"""
import os
import struct

def tag(i, n):
    t = -(-(i << 32) // n)  # ceil(i * 2^32 / n)
    assert (t * n) >> 32 == i
    return struct.pack("<I", t)

SUBJECTS = ["Decide", "DecideV2", "NoVersion", "Result", "VersionOnly", "Empty"]
NAMES = ["Version", "TenantId", "TraceId", "VersionUpper", "TenantIdMixed", "ReplyTo", "Other"]
VALUES = ["One", "Two", "Empty", "Acme", "W3cTrace", "BadTrace", "Long", "Slice"]
ALLOW = ["None", "Acme", "Empty"]

def prefix(subject="Decide", headers=(), tiny=None, min_payload=0, allow="None"):
    out = tag(SUBJECTS.index(subject), len(SUBJECTS))
    headers = list(headers) + [None] * (3 - len(headers))
    for h in headers:
        if h is None:
            out += b"\x00"
            continue
        name, value = h
        out += b"\x01" + tag(NAMES.index(name), len(NAMES))
        if isinstance(value, tuple):
            out += tag(VALUES.index("Slice"), len(VALUES)) + bytes(value)
        else:
            out += tag(VALUES.index(value), len(VALUES))
    out += tag(0, 2) if tiny is None else tag(1, 2) + bytes([tiny])
    out += bytes([min_payload])
    out += tag(ALLOW.index(allow), len(ALLOW))
    return out

DECIDE = (b'{"version":"1","request_id":"r-1","tenant_id":"acme","trace_id":"tr-1",'
          b'"task":{"type":"text.generate","payload":{"text":"hello world"}}}')
FULL = (b'{"version":"1","request_id":"r-2","tenant_id":"acme",'
        b'"run_id":"e3b0c442-98fc-4c14-9afb-4c8996fb9242","flow_id":"01ARZ3NDEKTSV4RRFFQ69G5FAV",'
        b'"step_id":"01ARZ3NDEKTSV4RRFFQ69G5FAW","idempotency_key":"k-1","policy_id":"default",'
        b'"constraints":{"region":"eu"},"metadata":{"policy_id":"p.2"},"push_assignment":"true",'
        b'"assignment_subject":"caf.exec.assign.v1.eu","options":{"priority":5},'
        b'"task":{"type":"t","payload_ref":"s3://b/k","payload":{"n":1.5e3,"u":"\\u00e9"}}}')
NO_VERSION = (b'{"request_id":"r-3","task":{"type":"t","payload_ref":"ref"},'
              b'"metadata":{"policy_id":"gold"},"push_assignment":1}')
RESULT = (b'{"version":"1","assignment_id":"a-1","request_id":"r-1","status":"error",'
          b'"provider_id":"openai","job":{"type":"t"},"latency_ms":12,"cost":0.5,'
          b'"tenant_id":"acme","error_code":"HTTP_5XX","timestamp":1764200000000}')
NUMBERS = (b'{"version":1,"request_id":"r-4","tenant_id":"acme","idempotency_key":"k",'
           b'"task":{"type":"t","payload":{"a":1.7976931348623157e308,"b":5e-324,"c":0.1,'
           b'"d":-0.0,"e":18446744073709551615,"f":-9223372036854775808,"g":2.2250738585072014e-308}},'
           b'"constraints":{"deadline":123},"options":{}}')
RUN_FLOW = (b'{"version":"1","request_id":"r-5","tenant_id":"acme",'
            b'"run_id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","flow_id":"01ARZ3NDEKTSV4RRFFQ69G5FAW",'
            b'"task":{"type":"t","payload_ref":"ref"}}')
STEP_ONLY = (b'{"version":"1","request_id":"r-6","tenant_id":"acme",'
             b'"step_id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","task":{"type":"t","payload_ref":"ref"}}')
LONG_KEY = (b'{"version":"1","request_id":"r-7","tenant_id":"acme","idempotency_key":"'
            + b"k" * 257 + b'","task":{"type":"t","payload_ref":"ref"}}')
ACK = b'{"version":"1","assignment_id":"a-1","status":"rejected","tenant_id":"acme","message":"busy"}'

SEEDS = {
    "seed-decide-min": prefix() + DECIDE,
    "seed-decide-full": prefix(min_payload=10) + FULL,
    "seed-decide-headers": prefix(
        subject="NoVersion",
        headers=[("VersionUpper", "One"), ("TenantIdMixed", (20, 6)), ("TraceId", "W3cTrace")],
        allow="Acme") + NO_VERSION,
    "seed-decide-subject-version": prefix(headers=[("TenantId", "Acme")]) + NO_VERSION,
    "seed-decide-too-large": prefix(tiny=64) + DECIDE,
    "seed-decide-v2": prefix(subject="DecideV2", headers=[("TenantId", "Long")]) + NO_VERSION,
    "seed-decide-numbers": prefix(min_payload=10) + NUMBERS,
    "seed-decide-run-flow": prefix() + RUN_FLOW,
    "seed-decide-step-only": prefix() + STEP_ONLY,
    "seed-decide-long-key": prefix() + LONG_KEY,
    "seed-result": prefix(subject="Result") + RESULT,
    "seed-ack": prefix(allow="Empty") + ACK,
    "seed-not-object": prefix() + b'[1,"x",null]',
    "seed-bad-json": prefix() + b'{"version":"1","tenant_id":',
}

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "intake")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")
