-- db.lua: the TechEmpower "db" test; see techempower.lua for the options.
--
--   wrk -t2 -c64 -d15s --latency -s loadtest/wrk/db.lua http://127.0.0.1:8081
--
-- Prints a summary and one "HSJSON {...}" line at the end.

hs_te_default = "db"
local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(dir .. "techempower.lua")
