-- hot-key.lua: every connection hits one product, the worst case for a
-- cache (the thundering herd on one key) and for the database row behind it.
--
--   wrk -t2 -c64 -d30s --latency -s loadtest/wrk/hot-key.lua \
--       http://127.0.0.1:8080 -- id=42 put=0
--
-- Options (key=value after "--" or HSWRK_KEY in the environment):
--   id=1     the product id everyone reads
--   put=0    share of requests that are a PUT to that product instead
--            (e.g. put=0.01 keeps invalidating the hot key under load)
--   seed=1
--   count=1  (see read-mix.lua)
-- Prints a summary and one "HSJSON {...}" line at the end.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local hs = dofile(dir .. "hslib.lua")

local defaults = { id = 1, put = 0, seed = 1 }
local o, get_req, path
local json_headers = { ["Content-Type"] = "application/json" }
local seq = 0

setup = hs.setup
response = hs.response

function init(args)
	o = hs.options(args, defaults)
	hs.seed_random(o.seed)
	path = string.format("/products/%d", o.id)
	get_req = wrk.format("GET", path)
end

function request()
	if o.put > 0 and math.random() < o.put then
		hs.count_kind("put")
		seq = seq + 1
		return wrk.format("PUT", path, json_headers,
				  string.format('{"stock":%d}', seq % 1000))
	end
	hs.count_kind("product")
	return get_req
end

done = hs.done("hot-key")
