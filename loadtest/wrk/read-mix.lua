-- read-mix.lua: the read mix of hammerstack, product details and category
-- top lists with Zipf-distributed ids.
--
--   wrk -t2 -c64 -d30s --latency -s loadtest/wrk/read-mix.lua \
--       http://127.0.0.1:8080 -- top=0.1
--
-- Each request is GET /categories/{id}/top with probability `top`, else
-- GET /products/{id}.  Ids follow Zipf(s) over 1..products and
-- 1..categories (rank 1 the hottest; scatter=1 spreads the hot ids over the
-- id range).  Options, as key=value after "--" or as HSWRK_KEY in the
-- environment.  products and categories default to the server's own
-- counts, read once from its /catalog with curl before the load starts; a
-- server that cannot say (not hs-server) gets the scale-1.0 counts below,
-- with a warning:
--   products=100000  categories=100  top=0.1  s=1.0  seed=1  scatter=1
--   count=1 (count=0: no response() hook, so wrk runs faster; only
--            statuses >= 400 are counted then)
-- Every thread draws from its own random stream, seeded from seed and the
-- thread number, so a run is reproducible for a given -t.
-- Prints a summary and one "HSJSON {...}" line (requests, rps, p50/p90/p99
-- in us, socket errors, non2xx...) at the end.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
local hs = dofile(dir .. "hslib.lua")

local defaults = { products = 100000, categories = 100, top = 0.1, s = 1.0,
		   seed = 1, scatter = 1 }
local o, zp, zc
local get_product = hs.get_memo("/products/")
local get_top = hs.get_memo("/categories/", "/top")

setup = hs.setup_counts
response = hs.response

function init(args)
	o = hs.options(args, hs.counts_defaults(defaults))
	hs.counts_check("read-mix", o)
	hs.seed_random(o.seed)
	zp = hs.zipf(o.products, o.s, o.scatter ~= 0)
	zc = hs.zipf(o.categories, o.s, o.scatter ~= 0)
end

function request()
	if math.random() < o.top then
		hs.count_kind("top")
		return get_top(zc.id())
	end
	hs.count_kind("product")
	return get_product(zp.id())
end

done = hs.done("read-mix")
