#!/usr/bin/env python3
"""Checks OTLP/HTTP JSON log payloads against OpenTelemetry's own protobuf schema
(`opentelemetry-proto`, read with protobuf's `json_format`), for the audit-log e2e test.

Reads payloads on stdin, one JSON document per line, as the filter POSTed them to
`/v1/logs`. Each must parse as an `ExportLogsServiceRequest` with no unknown field, and each
log record must carry its audit record as a string body.

OTLP/JSON differs from protobuf's canonical JSON mapping in one place that matters here:
`traceId` and `spanId` are written as lower-case hex (the OTLP specification), where
`json_format` expects base64. So those two fields are checked in hex form first (32 and 16
hex digits, not all zero), then converted to base64 for the schema check.

Prints one line per fault and exits 1 if there is any; prints how many payloads and records
were checked and exits 0 otherwise.
"""

import base64
import json
import re
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

HEX_IDS = {"traceId": 32, "spanId": 16}


def hex_ids_to_base64(log_record, where, faults):
    for field, digits in HEX_IDS.items():
        if field not in log_record:
            continue
        value = log_record[field]
        if not isinstance(value, str) or not re.fullmatch(f"[0-9a-f]{{{digits}}}", value):
            faults.append(f"{where}: {field} is not {digits} lower-case hex digits: {value!r}")
            continue
        if set(value) == {"0"}:
            faults.append(f"{where}: {field} is all zeros")
            continue
        log_record[field] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def check(payload_text, number, faults):
    where = f"payload {number}"
    try:
        payload = json.loads(payload_text)
    except ValueError as e:
        faults.append(f"{where}: not JSON: {e}")
        return 0
    records = 0
    for i, resource_logs in enumerate(payload.get("resourceLogs", [])):
        for j, scope_logs in enumerate(resource_logs.get("scopeLogs", [])):
            for k, log_record in enumerate(scope_logs.get("logRecords", [])):
                at = f"{where} resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]"
                hex_ids_to_base64(log_record, at, faults)
                body = log_record.get("body", {}).get("stringValue")
                if not isinstance(body, str) or not body.startswith("{"):
                    faults.append(f"{at}: the body is not an audit record as a string")
                records += 1
    if records == 0:
        faults.append(f"{where}: no log records")
    try:
        json_format.ParseDict(payload, ExportLogsServiceRequest(), ignore_unknown_fields=False)
    except json_format.ParseError as e:
        faults.append(f"{where}: not an ExportLogsServiceRequest: {e}")
    return records


def main():
    faults = []
    payloads = records = 0
    for line in sys.stdin:
        if line.strip():
            payloads += 1
            records += check(line, payloads, faults)
    for fault in faults:
        print(fault)
    if faults or payloads == 0:
        print(f"{len(faults)} faults in {payloads} payloads")
        sys.exit(1)
    print(f"ok: {payloads} payloads, {records} log records")


if __name__ == "__main__":
    main()
