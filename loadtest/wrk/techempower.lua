-- techempower.lua: the TechEmpower benchmark test types, one parameterised
-- script (db.lua, queries.lua, updates.lua, cached-queries.lua, json.lua and
-- plaintext.lua are short wrappers that pick the test).
--
--   wrk -t2 -c64 -d15s --latency -s loadtest/wrk/techempower.lua \
--       http://127.0.0.1:8081 -- test=queries queries=20
--   wrk -t2 -c256 -d15s --latency -s loadtest/wrk/plaintext.lua \
--       http://127.0.0.1:8081 -- pipeline=16
--
-- Options (key=value after "--" or HSWRK_KEY in the environment):
--   test=db       json | plaintext | db | queries | updates | cached-queries
--   queries=20    N for queries / updates / cached-queries (the server
--                 clamps it to 1..500, as the spec says)
--   pipeline=1    requests written back to back per round trip (the
--                 TechEmpower plaintext test uses 16)
--   seed=1
--   count=1       (see read-mix.lua)
-- Prints a summary and one "HSJSON {...}" line at the end.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local hs = dofile(dir .. "hslib.lua")

local defaults = { test = hs_te_default or "db", queries = 20, pipeline = 1,
		   seed = 1 }
local paths = {
	json = "/json",
	plaintext = "/plaintext",
	db = "/db",
	queries = "/queries?queries=%d",
	updates = "/updates?queries=%d",
	["cached-queries"] = "/cached-queries?count=%d",
}
local req

setup = hs.setup
response = hs.response

function init(args)
	local o = hs.options(args, defaults)
	local p = paths[o.test]
	if p == nil then
		error("unknown test '" .. tostring(o.test) ..
		      "' (json, plaintext, db, queries, updates, cached-queries)")
	end
	local one = wrk.format("GET", string.format(p, o.queries))
	local n = math.max(1, math.floor(o.pipeline))
	req = string.rep(one, n)
	hs.seed_random(o.seed)
end

-- The request is fixed (the server draws the random ids), so it is built
-- once; wrk counts the pipelined requests in it itself.
function request()
	return req
end

done = hs.done(hs_te_default or "techempower")
