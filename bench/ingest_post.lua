-- wrk script for bench/ingest_load.py: POST one prepared body, over and over, to the ingest gateway.
--   wrk -s bench/ingest_post.lua URL -- BODY_FILE API_KEY
-- At the end it prints one line, RESULT followed by JSON, which ingest_load.py parses (wrk's own summary
-- rounds latencies for display).

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.body = file:read("*a")
   file:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. args[2]
end

function done(summary, latency, requests)
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
