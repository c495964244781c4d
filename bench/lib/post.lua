-- wrk script of bench/throughput: POSTs a small JSON event with the API key, and prints one
-- JSON line (prefixed with "WRKJSON ") with the summary and the latency percentiles in us.
-- Env: SAND_API_KEY, SAND_BENCH_PATH.
wrk.method = "POST"
wrk.path = os.getenv("SAND_BENCH_PATH")
wrk.body = '{"n": 1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SAND_API_KEY")

function done(summary, latency, requests)
    local ps = {}
    for _, p in ipairs({1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99}) do
        ps[#ps + 1] = string.format('"%s": %d', tostring(p), latency:percentile(p))
    end
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, ' ..
        '"read": %d, "write": %d, "status": %d, "timeout": %d}, "latency_us": {"min": %d, ' ..
        '"max": %d, "mean": %.1f, "stdev": %.1f, "percentiles": {%s}}}\n',
        summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
        e.timeout, latency.min, latency.max, latency.mean, latency.stdev, table.concat(ps, ", ")))
end
