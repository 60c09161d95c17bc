#!/usr/bin/env python3
"""An EXAMON user's client against exawatch's KairosDB API, as ExamonQL talks to KairosDB.

Python 3 standard library only. The HTTP side follows ExamonQL's ``KairosDb`` client
(``examon/kairosdb.py``): urllib with an ``HTTPBasicAuthHandler``, ``Accept-Encoding: gzip``
and zlib decompression of the answer. Queries are built as ``Examon.query_tojson`` builds them
(``cache_time``, ``time_zone``, one entry per metric with ``tags``, ``group_by``,
``aggregators`` and ``limit``), and answers are turned into the rows a pandas dataframe is made
from as ``Examon.to_dict`` does (``timestamp``, ``value``, ``name`` and the group's tags).
Writes go through ``POST /api/v1/datapoints`` as examon-common's ``KairosDB.put_metrics``
sends them: gzipped JSON with ``Content-Type: application/gzip``.

Usage: examon_client.py URL USER PASSWORD T0_MS T1_MS
Prints one JSON object: case name -> rows (or answer), for the Rust test to check.
"""

import gzip
import json
import sys
import urllib.error
import urllib.request
import zlib


class KairosDb:
    """Minimal KairosDB REST client with basic auth and gzip, like ExamonQL's."""

    def __init__(self, url, user=None, password=None):
        self.url = url.rstrip("/")
        handlers = []
        if user is not None:
            manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            manager.add_password(None, self.url, user, password)
            handlers.append(urllib.request.HTTPBasicAuthHandler(manager))
        self.opener = urllib.request.build_opener(*handlers)

    def send(self, api, body=None, headers=None):
        """Returns (status, decoded JSON or None); HTTP errors are answers too."""
        request = urllib.request.Request(self.url + "/api/v1/" + api, data=body)
        request.add_header("Accept-Encoding", "gzip, deflate")
        request.add_header("Connection", "close")
        if body is not None and not (headers and "Content-Type" in headers):
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            handler = self.opener.open(request)
        except urllib.error.HTTPError as error:
            handler = error
        status = handler.getcode()
        data = handler.read()
        if handler.headers.get("Content-Encoding") == "gzip":
            data = zlib.decompress(data, 16 + zlib.MAX_WBITS)
        return status, (json.loads(data) if data else None)

    def query_metrics(self, query):
        status, answer = self.send("datapoints/query", json.dumps(query).encode("utf-8"))
        if status != 200:
            raise RuntimeError("query failed with %d: %r" % (status, answer))
        return answer

    def query_metricstags(self, metric, tag=None, filt=None):
        """Tag names of a metric, or the values of one tag (ExamonQL's query_metricstags)."""
        query = {"start_absolute": 0, "cache_time": 0, "metrics": [{"name": metric}]}
        if filt is not None:
            query["metrics"][0]["tags"] = filt
        status, result = self.send("datapoints/query/tags", json.dumps(query).encode("utf-8"))
        assert status == 200, (status, result)
        tags = result["queries"][0]["results"][0]["tags"]
        return tags.get(tag, []) if tag is not None else sorted(tags.keys())

    def put_metrics(self, metrics):
        payload = gzip.compress(json.dumps(metrics).encode("utf-8"))
        return self.send("datapoints", payload, {"Content-Type": "application/gzip"})


def query_tojson(tstart, tstop, metric_names, tags=None, groupby=None, aggrby=None,
                 limit=None, time_zone="Europe/Rome"):
    """The query JSON, as ExamonQL's Examon.query_tojson builds it."""
    query = {"cache_time": 0, "time_zone": time_zone, "metrics": []}
    for name in metric_names:
        metric = {"name": name, "tags": tags if tags is not None else {}}
        if limit is not None:
            metric["limit"] = int(limit)
        if groupby is not None:
            metric["group_by"] = groupby if isinstance(groupby, list) else [groupby]
        if aggrby is not None:
            metric["aggregators"] = aggrby if isinstance(aggrby, list) else [aggrby]
        if isinstance(tstart, list):
            query["start_relative"] = {"value": tstart[0], "unit": tstart[1]}
        else:
            query["start_absolute"] = tstart
        if isinstance(tstop, list):
            query["end_relative"] = {"value": tstop[0], "unit": tstop[1]}
        elif tstop is not None:
            query["end_absolute"] = tstop
        query["metrics"].append(metric)
    return query


def aggrby(name, align_sampling=True, align_start_time=False, sampling_value=1,
           sampling_unit="minutes", **kwargs):
    """One aggregator, as ExamonQL's AGGRBY builds it (same defaults)."""
    aggregator = {
        "name": name,
        "align_sampling": align_sampling,
        "align_start_time": align_start_time,
        "sampling": {"value": sampling_value, "unit": sampling_unit},
    }
    aggregator.update(kwargs)
    return aggregator


def to_rows(json_data):
    """The dataframe rows, as ExamonQL's Examon.to_dict makes them."""
    rows = []
    for queries in json_data["queries"]:
        if int(queries["sample_size"]) > 0:
            for results in queries["results"]:
                row = {}
                for group in results.get("group_by", []):
                    if group["name"] == "tag":
                        row = dict(group["group"])
                        break
                if len(row) == 0:
                    row = {k: v[0] for k, v in results["tags"].items()}
                for timestamp, value in results["values"]:
                    point = {"timestamp": timestamp, "value": value, "name": results["name"]}
                    point.update(row)
                    rows.append(point)
    return rows


def main():
    url, user, password, t0, t1 = sys.argv[1:6]
    t0, t1 = int(t0), int(t1)
    db = KairosDb(url, user, password)
    out = {}

    def run(name, query):
        out[name] = to_rows(db.query_metrics(query))

    by_node_core = {"name": "tag", "tags": ["node", "core"]}
    by_node = {"name": "tag", "tags": ["node"]}
    # SELECT node, core FROM temp WHERE node IN (n01, n02)
    run("raw", query_tojson(t0, t1, ["temp"], tags={"node": ["n01", "n02"]},
                            groupby=by_node_core))
    # The same with a relative start (the data is from the last hour).
    run("raw_relative", query_tojson([1, "hours"], None, ["temp"],
                                     tags={"node": ["n01", "n02"]}, groupby=by_node_core))
    # Every aggregator with ExamonQL's AGGRBY defaults (1 minute, align_sampling), by node.
    for name in ["avg", "min", "max", "sum", "count", "first", "last", "dev"]:
        run(name, query_tojson(t0, t1, ["temp"], groupby=by_node, aggrby=aggrby(name)))
    run("percentile", query_tojson(t0, t1, ["temp"], groupby=by_node,
                                   aggrby=aggrby("percentile", align_start_time=True,
                                                 percentile=0.9)))
    run("avg_end", query_tojson(t0, t1, ["temp"], groupby=by_node,
                                aggrby=aggrby("avg", align_start_time=False,
                                              align_end_time=True)))
    run("rate", query_tojson(t0, t1, ["energy"], groupby=by_node,
                             aggrby=aggrby("rate", sampling_unit="seconds")))
    run("diff", query_tojson(t0, t1, ["energy"], groupby=by_node, aggrby=aggrby("diff")))
    # Without group_by, the row takes the first value of each tag.
    run("state", query_tojson(t0, t1, ["state"]))
    run("limit", query_tojson(t0, t1, ["temp"], tags={"node": ["n03"], "core": ["1"]},
                              limit=5))
    # Write with examon-common's put_metrics, then read back.
    written = [
        {"name": "kairos_written", "timestamp": t0 + 500, "value": 12.5,
         "tags": {"org": "acme", "node": "n09", "plugin": "examon_pub"}},
        {"name": "kairos_written", "datapoints": [[t0 + 1500, 13], [t0 + 2500, "13.75"]],
         "tags": {"org": "acme", "node": "n09", "plugin": "examon_pub"}},
    ]
    out["write_status"] = db.put_metrics(written)[0]
    run("written", query_tojson(t0, t1, ["kairos_written"]))
    # Metadata, as ExamonQL's DESCRIBE gathers it.
    out["metricnames"] = db.send("metricnames")[1]["results"]
    out["tagnames"] = db.send("tagnames")[1]["results"]
    out["tagvalues"] = db.send("tagvalues")[1]["results"]
    out["temp_tag_keys"] = db.query_metricstags("temp")
    out["temp_cores_of_n02"] = db.query_metricstags("temp", "core", {"node": ["n02"]})
    # Errors: KairosDB's shape, and 401 without credentials.
    bad = query_tojson(t0, t1, ["temp"], aggrby={"name": "median"})
    out["bad_query"] = list(db.send("datapoints/query", json.dumps(bad).encode("utf-8")))
    out["no_credentials_status"] = KairosDb(url).send("metricnames")[0]
    out["health_check_status"] = KairosDb(url).send("health/check")[0]
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
