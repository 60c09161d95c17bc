"""Sends metrics of known values to exawatch with the OpenTelemetry Python SDK and its
OTLP/HTTP exporter (PyPI: opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http), for
tests/otlp.rs.

Usage: otlp_send.py BASE_URL

Instruments, all under one resource (service shop/checkout, instance pod-7, host cn42):
- counter `requests` ({request}): 5 then 2 with http.method=GET, cumulative
- up-down counter `queue.length` ({item}): +10 then -3, cumulative
- gauge `cpu.temperature` (Cel): 51.5 with cpu=0
- histogram `request.duration` (s): 0.3, 7, 42, 42, default explicit buckets
- histogram `payload.size` (By) as an exponential histogram: 1.5, 3, 6, 12
- counter `jobs.done`: 5, exported, then 2, exported again, with DELTA temporality and gzip

Prints a JSON object: the export results ("SUCCESS"/"FAILURE") in order.
"""

import json
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource


def main():
    endpoint = sys.argv[1].rstrip("/") + "/v1/metrics"
    resource = Resource.create(
        {
            "service.name": "checkout",
            "service.namespace": "shop",
            "service.instance.id": "pod-7",
            "host.name": "cn42",
            "deployment.environment": "test",
        }
    )
    results = []

    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[
            View(
                instrument_name="payload.size",
                aggregation=ExponentialBucketHistogramAggregation(),
            ),
        ],
    )
    meter = provider.get_meter("exawatch.test")
    requests = meter.create_counter("requests", unit="{request}")
    requests.add(5, {"http.method": "GET"})
    requests.add(2, {"http.method": "GET"})
    queue = meter.create_up_down_counter("queue.length", unit="{item}")
    queue.add(10)
    queue.add(-3)
    meter.create_gauge("cpu.temperature", unit="Cel").set(51.5, {"cpu": "0"})
    duration = meter.create_histogram("request.duration", unit="s")
    for value in (0.3, 7, 42, 42):
        duration.record(value)
    size = meter.create_histogram("payload.size", unit="By")
    for value in (1.5, 3, 6, 12):
        size.record(value)
    exporter = OTLPMetricExporter(endpoint=endpoint)
    results.append(exporter.export(reader.get_metrics_data()).name)

    delta_reader = InMemoryMetricReader(
        preferred_temporality={
            Counter: AggregationTemporality.DELTA,
            Histogram: AggregationTemporality.DELTA,
        }
    )
    delta_provider = MeterProvider(resource=resource, metric_readers=[delta_reader])
    jobs = delta_provider.get_meter("exawatch.test").create_counter("jobs.done")
    gzip_exporter = OTLPMetricExporter(endpoint=endpoint, compression=Compression.Gzip)
    jobs.add(5)
    results.append(gzip_exporter.export(delta_reader.get_metrics_data()).name)
    jobs.add(2)
    results.append(gzip_exporter.export(delta_reader.get_metrics_data()).name)

    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
